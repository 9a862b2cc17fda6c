// Audio file input for the speech-conditioning path: decode a file, mix it to mono, resample it to the model's
// rate (16 kHz for wav2vec2). This replaces upstream's `librosa.load(path, sr=16000)` (mono = mean of the
// channels, output length ceil(N * target / source) like librosa's soxr path).
//
// Decoders, tried in this order by AudioDecoder::kAuto (each one only when it was built in):
//   1. libsndfile (LIVEAVATAR_HAVE_SNDFILE): WAV/AIFF/FLAC/OGG-Vorbis/Opus and, with libsndfile >= 1.1 built
//      with mpg123, MP3.
//   2. FFmpeg / libavformat + libavcodec (LIVEAVATAR_HAVE_FFMPEG): everything else FFmpeg decodes (M4A/AAC,
//      video containers with an audio track, ...). Its first audio stream is used.
//   3. A small built-in RIFF/WAVE parser, always available: PCM 8/16/24/32-bit integer and 32/64-bit IEEE
//      float, plain or WAVE_FORMAT_EXTENSIBLE. With neither library built in, this is the only decoder.
// Resampling: libswresample (FFmpeg's windowed-sinc resampler, default quality) when FFmpeg is built in;
// otherwise (or with Resampler::kLinear) linear interpolation between neighbouring samples. The linear fallback
// has no anti-aliasing filter: downsampling 44.1/48 kHz material folds content above 8 kHz back into the band.
// That is audible but matters little to wav2vec2 features; prefer a 16 kHz file or an FFmpeg build when exactness
// against librosa matters.
//
// Thread safety: the functions are reentrant (no shared state); safe to call concurrently on different files.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"

namespace liveavatar::io {

enum class AudioDecoder { kAuto, kSndfile, kFfmpeg, kBuiltinWav };
enum class Resampler { kAuto, kSwresample, kLinear };

struct AudioReadOptions {
  int target_rate = 16000;                    // output rate in Hz (> 0)
  AudioDecoder decoder = AudioDecoder::kAuto;  // kAuto: the order in the file comment
  Resampler resampler = Resampler::kAuto;      // kAuto: libswresample when built in, else linear
  // Limits checked on the decoded header values before any resampling (a 120 KB file claiming 1 Hz would
  // otherwise resample to 10^9 samples): the file's rate within [kMinSourceRate, kMaxSourceRate], at most
  // kMaxChannels channels, and at most `max_seconds` of audio.
  double max_seconds = 3600.0;
};
inline constexpr int kMinSourceRate = 8000;
inline constexpr int kMaxSourceRate = 384000;
inline constexpr int kMaxChannels = 32;

struct AudioClip {
  at::Tensor samples;       // [N] float32 CPU, mono, nominal range [-1, 1]
  int sample_rate = 0;      // rate of `samples` (== the requested target rate)
  int source_rate = 0;      // rate of the file
  int source_channels = 0;  // channels of the file before the mono mix
  std::string decoder;      // "sndfile", "ffmpeg" or "wav" (built-in)
  int64_t num_samples() const;
  double duration_seconds() const;
};

// Reads `path` as described above. Errors (the message always names the path):
//   NotFound        the file does not exist / cannot be opened;
//   InvalidArgument the file is empty, holds no audio samples, or target_rate <= 0; its rate, channel count or
//                   duration is outside the limits of AudioReadOptions; a sample is NaN or infinite;
//   NotSupported    no built-in decoder understands the file (the message lists what each one said);
//   Corruption      a decoder accepted the header but failed mid-stream.
StatusOr<AudioClip> ReadAudio(const std::string& path, int target_rate = 16000);
StatusOr<AudioClip> ReadAudio(const std::string& path, const AudioReadOptions& options);

// Resamples a mono signal [N] (float32 CPU) from `from_rate` to `to_rate`; the result has
// ceil(N * to_rate / from_rate) samples. Equal rates return the input unchanged. kSwresample without FFmpeg
// built in is NotSupported.
StatusOr<at::Tensor> ResampleAudio(const at::Tensor& mono, int from_rate, int to_rate,
                                   Resampler resampler = Resampler::kAuto);

// Whether the decoder / resampler was built in (kAuto and kBuiltinWav / kLinear: always true).
bool AudioDecoderAvailable(AudioDecoder decoder);
bool ResamplerAvailable(Resampler resampler);

}  // namespace liveavatar::io
