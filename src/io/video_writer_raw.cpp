// VideoWriter backend without libraries: <stem>.y4m (YUV4MPEG2, C420jpeg, BT.601 limited range) and
// <stem>.wav (16-bit PCM mono), both written as .partial files and renamed by Finish().
#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "video_writer_internal.h"

namespace liveavatar::io::video_internal {
namespace {

// BT.601 limited-range integer RGB -> YCbCr (the usual 8-bit approximation).
inline int LumaOf(int r, int g, int b) { return ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16; }
inline int CbOf(int r, int g, int b) { return ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128; }
inline int CrOf(int r, int g, int b) { return ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128; }

class RawWriter : public VideoWriter::Impl {
 public:
  ~RawWriter() override { Abort(); }

  Status Init(const std::string& path, int width, int height, const VideoWriterOptions& options,
              const at::Tensor& pcm, int sample_rate) {
    raw = true;
    encoder_name = "y4m";
    width_ = width;
    height_ = height;
    fps_ = options.fps;
    pcm_ = pcm;
    sample_rate_ = sample_rate;
    const std::string stem = PathStem(path);
    video_path_ = stem + ".y4m";
    LA_RETURN_IF_ERROR(OpenPartial(video_path_, &video_file_));
    output_paths.push_back(video_path_);
    const std::string header = "YUV4MPEG2 W" + std::to_string(width) + " H" + std::to_string(height) + " F" +
                               std::to_string(fps_) + ":1 Ip A1:1 C420jpeg XYSCSS=420JPEG\n";
    LA_RETURN_IF_ERROR(Write(video_file_, header.data(), header.size(), video_path_));
    if (pcm_.defined()) {
      audio_path_ = stem + ".wav";
      LA_RETURN_IF_ERROR(OpenPartial(audio_path_, &audio_file_));
      output_paths.push_back(audio_path_);
      const auto h = WavHeader(0);
      LA_RETURN_IF_ERROR(Write(audio_file_, h.data(), h.size(), audio_path_));
    }
    yuv_.resize(static_cast<size_t>(width) * height * 3 / 2);
    return Status::Ok();
  }

  Status WriteFrame(const uint8_t* rgb) override {
    if (pcm_.defined() && frames_written * sample_rate_ >= pcm_.numel() * fps_) {
      ++frames_dropped;  // starts at or after the end of the audio (-shortest)
      return Status::Ok();
    }
    ToYuv420(rgb);
    static const char kFrame[] = "FRAME\n";
    LA_RETURN_IF_ERROR(Write(video_file_, kFrame, sizeof(kFrame) - 1, video_path_));
    LA_RETURN_IF_ERROR(Write(video_file_, yuv_.data(), yuv_.size(), video_path_));
    ++frames_written;
    if (pcm_.defined()) {
      LA_RETURN_IF_ERROR(WriteAudioUntil(SamplesForFrames(frames_written, sample_rate_, fps_)));
    }
    return Status::Ok();
  }

  Status Finish() override {
    if (pcm_.defined()) {
      LA_RETURN_IF_ERROR(WriteAudioUntil(SamplesForFrames(frames_written, sample_rate_, fps_)));
      const auto h = WavHeader(static_cast<uint32_t>(audio_samples_ * 2));
      if (std::fseek(audio_file_, 0, SEEK_SET) != 0) return Status::IOError("seek failed on '" + audio_path_ + "'");
      LA_RETURN_IF_ERROR(Write(audio_file_, h.data(), h.size(), audio_path_));
    }
    LA_RETURN_IF_ERROR(CloseFile(&video_file_, video_path_));
    LA_RETURN_IF_ERROR(CloseFile(&audio_file_, audio_path_));
    LA_RETURN_IF_ERROR(RenameInto(video_path_));
    if (pcm_.defined()) LA_RETURN_IF_ERROR(RenameInto(audio_path_));
    finished_ = true;
    return Status::Ok();
  }

  void Abort() override {
    if (video_file_ != nullptr) std::fclose(video_file_);
    if (audio_file_ != nullptr) std::fclose(audio_file_);
    video_file_ = audio_file_ = nullptr;
    if (!finished_) {
      if (!video_path_.empty()) std::remove((video_path_ + ".partial").c_str());
      if (!audio_path_.empty()) std::remove((audio_path_ + ".partial").c_str());
    }
  }

 private:
  static Status OpenPartial(const std::string& path, std::FILE** f) {
    *f = std::fopen((path + ".partial").c_str(), "wb");
    if (*f == nullptr) return Status::IOError("cannot create '" + path + ".partial': " + std::strerror(errno));
    return Status::Ok();
  }
  static Status Write(std::FILE* f, const void* data, size_t n, const std::string& path) {
    if (std::fwrite(data, 1, n, f) != n) return Status::IOError("write to '" + path + ".partial' failed");
    return Status::Ok();
  }
  static Status CloseFile(std::FILE** f, const std::string& path) {
    if (*f == nullptr) return Status::Ok();
    const int rc = std::fclose(*f);
    *f = nullptr;
    if (rc != 0) return Status::IOError("closing '" + path + ".partial' failed: " + std::strerror(errno));
    return Status::Ok();
  }
  static Status RenameInto(const std::string& path) {
    if (std::rename((path + ".partial").c_str(), path.c_str()) != 0) {
      return Status::IOError("cannot rename '" + path + ".partial' to '" + path + "': " + std::strerror(errno));
    }
    return Status::Ok();
  }

  // The 44-byte RIFF/WAVE header of 16-bit mono PCM.
  std::array<uint8_t, 44> WavHeader(uint32_t data_bytes) const {
    std::array<uint8_t, 44> b{};
    auto tag = [&](size_t at, const char* t) { std::memcpy(b.data() + at, t, 4); };
    auto le = [&](size_t at, uint32_t v, int bytes) {
      for (int i = 0; i < bytes; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
    };
    const uint32_t rate = static_cast<uint32_t>(sample_rate_);
    tag(0, "RIFF");
    le(4, 36 + data_bytes, 4);
    tag(8, "WAVE");
    tag(12, "fmt ");
    le(16, 16, 4);        // fmt chunk size
    le(20, 1, 2);         // PCM
    le(22, 1, 2);         // mono
    le(24, rate, 4);      // sample rate
    le(28, rate * 2, 4);  // byte rate
    le(32, 2, 2);         // block align
    le(34, 16, 2);        // bits per sample
    tag(36, "data");
    le(40, data_bytes, 4);
    return b;
  }

  Status WriteAudioUntil(int64_t limit) {
    limit = std::min<int64_t>(limit, pcm_.numel());
    if (limit <= audio_samples_) return Status::Ok();
    const float* s = pcm_.data_ptr<float>();
    std::vector<uint8_t> buf(static_cast<size_t>(limit - audio_samples_) * 2);
    for (int64_t i = audio_samples_; i < limit; ++i) {
      const float v = std::clamp(s[i], -1.0f, 1.0f);
      const auto q = static_cast<uint16_t>(static_cast<int16_t>(std::lrint(v * 32767.0f)));
      buf[static_cast<size_t>(i - audio_samples_) * 2] = static_cast<uint8_t>(q & 0xFF);
      buf[static_cast<size_t>(i - audio_samples_) * 2 + 1] = static_cast<uint8_t>(q >> 8);
    }
    LA_RETURN_IF_ERROR(Write(audio_file_, buf.data(), buf.size(), audio_path_));
    audio_samples_ = limit;
    return Status::Ok();
  }

  void ToYuv420(const uint8_t* rgb) {
    const int w = width_, h = height_;
    uint8_t* y_plane = yuv_.data();
    uint8_t* u_plane = y_plane + static_cast<size_t>(w) * h;
    uint8_t* v_plane = u_plane + static_cast<size_t>(w / 2) * (h / 2);
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        const uint8_t* p = rgb + (static_cast<size_t>(y) * w + x) * 3;
        y_plane[static_cast<size_t>(y) * w + x] = static_cast<uint8_t>(LumaOf(p[0], p[1], p[2]));
      }
    }
    for (int y = 0; y < h / 2; ++y) {
      for (int x = 0; x < w / 2; ++x) {
        int cb = 0, cr = 0;
        for (int dy = 0; dy < 2; ++dy) {
          for (int dx = 0; dx < 2; ++dx) {
            const uint8_t* p = rgb + (static_cast<size_t>(2 * y + dy) * w + 2 * x + dx) * 3;
            cb += CbOf(p[0], p[1], p[2]);
            cr += CrOf(p[0], p[1], p[2]);
          }
        }
        u_plane[static_cast<size_t>(y) * (w / 2) + x] = static_cast<uint8_t>((cb + 2) / 4);
        v_plane[static_cast<size_t>(y) * (w / 2) + x] = static_cast<uint8_t>((cr + 2) / 4);
      }
    }
  }

  int width_ = 0, height_ = 0, fps_ = 25;
  at::Tensor pcm_;
  int sample_rate_ = 16000;
  int64_t audio_samples_ = 0;
  std::string video_path_, audio_path_;
  std::FILE* video_file_ = nullptr;
  std::FILE* audio_file_ = nullptr;
  std::vector<uint8_t> yuv_;
  bool finished_ = false;
};

}  // namespace

StatusOr<std::unique_ptr<VideoWriter::Impl>> OpenRaw(const std::string& path, int width, int height,
                                                     const VideoWriterOptions& options, const at::Tensor& pcm,
                                                     int sample_rate) {
  auto w = std::make_unique<RawWriter>();
  Status s = w->Init(path, width, height, options, pcm, sample_rate);
  if (!s.ok()) {
    w->Abort();
    return s;
  }
  return std::unique_ptr<VideoWriter::Impl>(std::move(w));
}

}  // namespace liveavatar::io::video_internal
