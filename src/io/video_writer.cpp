// VideoWriter front end (see video_writer.h): argument checks, backend choice, the reference's float -> uint8
// frame conversion and the Close()/Abort() state machine. Backends: video_writer_ffmpeg.cpp, video_writer_raw.cpp.
#include "liveavatar/io/video_writer.h"

#include <unistd.h>

#include <filesystem>

#include <ATen/ATen.h>

#include "liveavatar/core/logging.h"
#include "video_writer_internal.h"

namespace liveavatar::io {
namespace video_internal {

StatusOr<at::Tensor> PreparePcm(const AudioTrack& audio) {
  if (!audio.samples.defined()) return at::Tensor();
  const at::Tensor& s = audio.samples;
  if (!at::isFloatingType(s.scalar_type())) {
    return Status::InvalidArgument("video audio: PCM samples must be floating point in [-1, 1], got " +
                                   std::string(c10::toString(s.scalar_type())));
  }
  if (s.dim() != 1 && !(s.dim() == 2 && s.size(0) == 1)) {
    return Status::InvalidArgument("video audio: PCM samples must be mono [N] (or [1, N])");
  }
  if (audio.sample_rate <= 0) {
    return Status::InvalidArgument("video audio: sample rate must be positive, got " +
                                   std::to_string(audio.sample_rate));
  }
  return s.reshape({-1}).to(at::kCPU, at::kFloat).contiguous();
}

std::string PathStem(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  const size_t dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash) ||
      dot == (slash == std::string::npos ? 0 : slash + 1)) {
    return path;
  }
  return path.substr(0, dot);
}

int64_t SamplesForFrames(int64_t frames, int64_t sample_rate, int fps) {
  return frames * sample_rate / fps;
}

}  // namespace video_internal

namespace {

bool IsStreamTarget(const std::string& path) {
  return path == "-" || path.find("://") != std::string::npos || path.rfind("pipe:", 0) == 0;
}

}  // namespace

Status CheckVideoOutput(const std::string& path, bool raw) {
  if (path.empty()) return Status::InvalidArgument("--save_file: the output path is empty");
  if (IsStreamTarget(path)) return Status::Ok();
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    return Status::InvalidArgument("--save_file " + path + ": is a folder; name the video file (e.g. " +
                                   (fs::path(path) / "out.mp4").string() + ")");
  }
  if (!raw && VideoWriterHasFfmpeg() && !video_internal::KnowsContainer(path)) {
    return Status::InvalidArgument("--save_file " + path +
                                   ": cannot tell the container from the name; use .mp4, .mkv, .mov or .ts");
  }
  // The nearest existing folder above the file must be a writable folder (missing ones are created).
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  while (!fs::exists(dir, ec) && dir.has_parent_path() && dir.parent_path() != dir) dir = dir.parent_path();
  if (!fs::is_directory(dir, ec)) {
    return Status::InvalidArgument("--save_file " + path + ": " + dir.string() + " is not a folder");
  }
  if (::access(dir.c_str(), W_OK) != 0) {
    return Status::InvalidArgument("--save_file " + path + ": the folder " + dir.string() + " is not writable");
  }
  return Status::Ok();
}

bool VideoWriterHasFfmpeg() {
#ifdef LIVEAVATAR_HAVE_FFMPEG
  return true;
#else
  return false;
#endif
}

VideoWriter::VideoWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

VideoWriter::~VideoWriter() { Abort(); }

StatusOr<std::unique_ptr<VideoWriter>> VideoWriter::Open(const std::string& path, int width, int height,
                                                         const VideoWriterOptions& options,
                                                         const AudioTrack& audio) {
  if (path.empty()) return Status::InvalidArgument("video output path is empty");
  if (width <= 0 || height <= 0 || width % 2 != 0 || height % 2 != 0) {
    return Status::InvalidArgument("video '" + path + "': frame size " + std::to_string(width) + "x" +
                                   std::to_string(height) + " must be positive and even (4:2:0 chroma)");
  }
  if (options.fps <= 0) {
    return Status::InvalidArgument("video '" + path + "': fps must be positive, got " + std::to_string(options.fps));
  }
  if (audio.samples.defined() && !audio.path.empty()) {
    return Status::InvalidArgument("video '" + path + "': give either audio samples or an audio file, not both");
  }
  LA_ASSIGN_OR_RETURN(at::Tensor pcm, video_internal::PreparePcm(audio));
  const bool use_raw = options.raw || !VideoWriterHasFfmpeg();
  StatusOr<std::unique_ptr<Impl>> impl = Status::Internal("unset");
  if (use_raw) {
    if (IsStreamTarget(path)) {
      return Status::NotSupported("video '" + path +
                                  "': streaming to stdout/URLs needs FFmpeg; this build writes only .y4m/.wav files");
    }
    if (!audio.path.empty()) {
      return Status::NotSupported("video '" + path + "': muxing the audio file '" + audio.path +
                                  "' needs FFmpeg; pass the decoded PCM samples instead");
    }
    if (!VideoWriterHasFfmpeg() && !options.raw) {
      LA_LOG_WARN("built without FFmpeg: writing '{}.y4m'{} instead of '{}'", video_internal::PathStem(path),
                  pcm.defined() ? " + .wav" : "", path);
    }
    impl = video_internal::OpenRaw(path, width, height, options, pcm, audio.sample_rate);
  } else {
    impl = video_internal::OpenFfmpeg(path, width, height, options, pcm, audio.sample_rate, audio.path);
  }
  if (!impl.ok()) return impl.status();
  std::unique_ptr<Impl> i = std::move(impl).value();
  i->width = width;
  i->height = height;
  return std::unique_ptr<VideoWriter>(new VideoWriter(std::move(i)));
}

Status VideoWriter::AddFrame(const at::Tensor& frame) {
  if (done_) return Status::InvalidArgument("VideoWriter::AddFrame after Close()/Abort()");
  const int64_t h = impl_->height, w = impl_->width;
  at::Tensor rgb;
  if (frame.defined() && frame.scalar_type() == at::kByte && frame.dim() == 3 && frame.size(0) == h &&
      frame.size(1) == w && frame.size(2) == 3) {
    rgb = frame.to(at::kCPU).contiguous();
  } else if (frame.defined() && at::isFloatingType(frame.scalar_type()) && frame.dim() == 3 && frame.size(0) == 3 &&
             frame.size(1) == h && frame.size(2) == w) {
    // save_video: clamp, make_grid(normalize=True, value_range=(-1, 1)) = (x - (-1)) / 2, then
    // (x * 255).type(uint8), which truncates. Done in float32 like the reference's .float() video.
    at::Tensor x = frame.to(at::kCPU, at::kFloat).clamp(-1.0, 1.0);
    x = x.add(1.0f).div(2.0f).mul(255.0f).to(at::kByte);
    rgb = x.permute({1, 2, 0}).contiguous();
  } else {
    std::string got = frame.defined() ? std::string(c10::toString(frame.scalar_type())) + " [" : "undefined [";
    if (frame.defined()) {
      for (int64_t d = 0; d < frame.dim(); ++d) got += (d ? ", " : "") + std::to_string(frame.size(d));
    }
    got += "]";
    return Status::InvalidArgument("VideoWriter::AddFrame: expected uint8 [" + std::to_string(h) + ", " +
                                   std::to_string(w) + ", 3] or float [3, " + std::to_string(h) + ", " +
                                   std::to_string(w) + "], got " + got);
  }
  Status s = impl_->WriteFrame(rgb.data_ptr<uint8_t>());
  if (!s.ok()) Abort();
  return s;
}

Status VideoWriter::AddFrames(const at::Tensor& video) {
  if (!video.defined() || video.dim() != 4) {
    return Status::InvalidArgument("VideoWriter::AddFrames: expected float [3, T, H, W] or uint8 [T, H, W, 3]");
  }
  const bool u8 = video.scalar_type() == at::kByte;
  const int64_t t = u8 ? video.size(0) : video.size(1);
  for (int64_t i = 0; i < t; ++i) {
    LA_RETURN_IF_ERROR(AddFrame(u8 ? video.select(0, i) : video.select(1, i)));
  }
  return Status::Ok();
}

Status VideoWriter::Close() {
  if (done_) return Status::InvalidArgument("VideoWriter::Close called twice or after Abort()");
  done_ = true;
  Status s = impl_->Finish();
  if (!s.ok()) impl_->Abort();
  return s;
}

void VideoWriter::Abort() {
  if (done_ || !impl_) return;
  done_ = true;
  impl_->Abort();
}

int64_t VideoWriter::frames_written() const { return impl_->frames_written; }
int64_t VideoWriter::frames_dropped() const { return impl_->frames_dropped; }
const std::vector<std::string>& VideoWriter::output_paths() const { return impl_->output_paths; }
bool VideoWriter::raw() const { return impl_->raw; }
const std::string& VideoWriter::encoder_name() const { return impl_->encoder_name; }

}  // namespace liveavatar::io
