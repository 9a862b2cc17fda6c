// Internals of VideoWriter shared by its backends (video_writer.cpp: front end and frame conversion;
// video_writer_ffmpeg.cpp: libavformat/libavcodec; video_writer_raw.cpp: y4m + wav).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"
#include "liveavatar/io/video_writer.h"

namespace liveavatar::io {

class VideoWriter::Impl {
 public:
  virtual ~Impl() = default;
  // Encodes one RGB24 frame (width * height * 3 bytes, row-major), or drops it after the audio's end.
  virtual Status WriteFrame(const uint8_t* rgb) = 0;
  // Flushes, finalises and renames partial files into place. Called once.
  virtual Status Finish() = 0;
  // Releases everything and removes partial files. Idempotent; also called after a failed Finish().
  virtual void Abort() = 0;

  int width = 0;
  int height = 0;
  int64_t frames_written = 0;
  int64_t frames_dropped = 0;
  std::vector<std::string> output_paths;
  std::string encoder_name;
  bool raw = false;
};

namespace video_internal {

// Mono float32 PCM on the CPU, contiguous; undefined when there is no PCM audio.
StatusOr<at::Tensor> PreparePcm(const AudioTrack& audio);

// The video file name without its last extension ("out/a.mp4" -> "out/a"; "out.d/a" -> "out.d/a").
std::string PathStem(const std::string& path);

// Samples of audio (at `sample_rate`) that lie before the end of video frame `frames` at `fps`:
// floor(frames * sample_rate / fps).
int64_t SamplesForFrames(int64_t frames, int64_t sample_rate, int fps);

StatusOr<std::unique_ptr<VideoWriter::Impl>> OpenRaw(const std::string& path, int width, int height,
                                                     const VideoWriterOptions& options, const at::Tensor& pcm,
                                                     int sample_rate);

// True when FFmpeg can tell the container from the file name (always true without FFmpeg: raw output).
bool KnowsContainer(const std::string& path);

// Returns NotSupported in builds without FFmpeg.
StatusOr<std::unique_ptr<VideoWriter::Impl>> OpenFfmpeg(const std::string& path, int width, int height,
                                                        const VideoWriterOptions& options, const at::Tensor& pcm,
                                                        int sample_rate, const std::string& audio_path);

}  // namespace video_internal
}  // namespace liveavatar::io
