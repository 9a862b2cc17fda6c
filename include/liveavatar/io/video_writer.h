// VideoWriter: streams generated frames (and the driving audio) into a video, one frame at a time.
//
// With FFmpeg (LIVEAVATAR_HAVE_FFMPEG) it encodes H.264 (libx264, yuv420p; the built-in mpeg4 encoder with a
// warning when libx264 is missing) plus AAC audio and muxes both in one pass with libavformat -- the
// reference's imageio(libx264, quality=8) write followed by `ffmpeg -c:v copy -c:a aac -b:a 192k -shortest`,
// without the second pass. Targets:
//   * a file path: the container follows the extension (.mp4, .mkv, .mov, .ts, ...); written to
//     "<path>.partial" and renamed to <path> only when Close() succeeds; Abort() (or destruction without
//     Close()) deletes the partial file.
//   * "-": MPEG-TS to stdout.
//   * a URL (rtmp://, udp://, tcp://, srt://, file:...): opened through avio; rtmp(s) defaults to FLV, the
//     other network schemes to MPEG-TS. No partial/rename for stdout and URLs.
// Without FFmpeg, or with options.raw = true, it writes "<stem>.y4m" (YUV4MPEG2, 4:2:0, BT.601 limited range)
// and, when audio is given, "<stem>.wav" (16-bit PCM), where <stem> is the path minus its extension; the same
// .partial/rename rule applies to both files. output_paths() lists what Close() produced.
//
// Audio and -shortest: the audio is encoded as frames arrive, never ahead of the video by more than one
// encoder frame. A video frame whose start time (i / fps) is at or past the end of the audio is dropped; at
// Close() the audio is cut at the end of the last video frame. Host memory stays flat: one frame in the
// encoder plus FFmpeg's interleaving queue; nothing is buffered per frame.
//
// Thread safety: none; use one writer from one thread at a time. Frames may live on any device (copied to CPU).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"

namespace liveavatar::io {

struct VideoWriterOptions {
  // Frame rate (reference: sample_fps = 25).
  int fps = 25;
  // libx264 constant rate factor. Default 10 = imageio's quality=8 mapping int((1 - 8/10) * 51); lower is
  // better and larger. With the mpeg4 fallback, qscale int((1 - 8/10) * 30) + 1 = 7 is used instead.
  int crf = 10;
  // libx264 preset. Default "medium", libx264's own default, which imageio leaves untouched; "veryfast" trades
  // size for ~3x encoder speed in live use.
  std::string preset = "medium";
  // AAC bit rate in bits/s (reference mux: -b:a 192k); capped at what the AAC encoder allows for the rate.
  int audio_bitrate = 192000;
  // Container override (an FFmpeg muxer name: "mp4", "matroska", "mpegts", "flv", ...); empty = from the
  // path/URL as described above.
  std::string format;
  // Write <stem>.y4m + <stem>.wav even when FFmpeg is available.
  bool raw = false;
};

// The audio track: nothing, PCM samples, or an audio file to decode (FFmpeg builds only).
struct AudioTrack {
  // Mono float PCM in [-1, 1], shape [N] (any float dtype/device; copied to CPU float32 once at Open).
  at::Tensor samples;
  int sample_rate = 16000;
  // Audio file to mux instead (its own rate and up to 2 channels are kept, like the reference's ffmpeg mux).
  // Requires FFmpeg; the raw (y4m/wav) writer needs `samples`.
  std::string path;

  bool empty() const { return !samples.defined() && path.empty(); }
};

// The checks Open() would fail on late, made before any work: `path` (the --save_file) is not empty, not a
// folder, names a container FFmpeg knows from its extension (unless `raw`), and its folder exists or can be created
// and is writable. stdout ("-") and URLs pass. InvalidArgument naming --save_file and the path.
Status CheckVideoOutput(const std::string& path, bool raw = false);

class VideoWriter {
 public:
  // Opens the target and writes the header. InvalidArgument for odd/non-positive sizes, fps <= 0 or bad
  // audio; NotFound/Corruption naming the audio file when it cannot be decoded; IOError naming the path when
  // it cannot be created; NotSupported for a URL/stdout/audio file in a build without FFmpeg.
  static StatusOr<std::unique_ptr<VideoWriter>> Open(const std::string& path, int width, int height,
                                                     const VideoWriterOptions& options = {},
                                                     const AudioTrack& audio = {});

  // Aborts (deletes partial output) if neither Close() nor Abort() was called.
  ~VideoWriter();
  VideoWriter(const VideoWriter&) = delete;
  VideoWriter& operator=(const VideoWriter&) = delete;

  // Appends one frame: uint8 [H, W, 3] RGB, or floating [3, H, W] in [-1, 1] converted like the reference's
  // save_video: clamp to [-1, 1], (x + 1) / 2 * 255 in float32, truncated to uint8.
  // InvalidArgument on a wrong shape/dtype; IOError on encoder/muxer failure (the writer is then aborted).
  Status AddFrame(const at::Tensor& frame);
  // Appends every frame of float [3, T, H, W] (the VAE's layout) or uint8 [T, H, W, 3].
  Status AddFrames(const at::Tensor& video);

  // Flushes the encoders, writes the trailer and renames the partial files into place. After a failure the
  // partial output is deleted. Close() after Close()/Abort() returns InvalidArgument.
  Status Close();
  // Drops everything written so far and deletes the partial output. Idempotent.
  void Abort();

  // Frames accepted into the video (excludes frames dropped after the audio ended).
  int64_t frames_written() const;
  // Frames dropped because they start after the end of the audio (-shortest).
  int64_t frames_dropped() const;
  // Final paths that Close() produces (or produced): the video file, and the .wav in raw mode with audio.
  const std::vector<std::string>& output_paths() const;
  // True when writing y4m/wav rather than through FFmpeg.
  bool raw() const;
  // Name of the video encoder in use ("libx264", "mpeg4", or "y4m").
  const std::string& encoder_name() const;

  class Impl;  // one per backend (video_writer_ffmpeg.cpp, video_writer_raw.cpp)

 private:
  explicit VideoWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  bool done_ = false;  // Close() or Abort() ran
};

// True when this build can write H.264/AAC through FFmpeg.
bool VideoWriterHasFfmpeg();

}  // namespace liveavatar::io
