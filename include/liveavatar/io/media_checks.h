// Input quality checks behind `liveavatar doctor` (the "inputs" section): measurements of the reference image
// and the driving audio that predict blurry or degraded output, and their verdicts as io::CheckResult lines.
//
// Image (measured on what the model sees: the image resized like PreprocessImage, shorter side to the
// generation size's shorter side, before the center crop):
//   * resolution: the image's linear resolution relative to the --size target, sqrt(image H·W / area(--size)).
//     The generation size follows the image (ResolveGenSize never enlarges beyond the next multiple of 64), so a
//     smaller image gives a smaller, softer video: < 1 WARN, < kResolutionFailRatio FAIL.
//   * blur: variance of the 4-neighbour Laplacian [0 1 0; 1 -4 1; 0 1 0] of the grey image (0.299 R + 0.587 G +
//     0.114 B, values 0..255) over the interior pixels (cv2.Laplacian(gray, CV_64F).var() without its border).
//     Sharp photographs at 384..720 px score in the hundreds to thousands; < kBlurWarnVariance WARN,
//     < kBlurFailVariance FAIL (nearly featureless: heavy blur, or a flat image).
// Audio (measured on the mono mix at the file's own rate, before any resampling):
//   * sample rate: < kAudioModelRate (16 kHz, wav2vec2's rate) WARN (band-limited), < kAudioFailRate FAIL.
//   * clipping: a sample is clipped when |x| >= kClipLevel and it lies in a run of >= kClipMinRun consecutive
//     such samples of one sign (a flat-topped waveform; single full-scale peaks of normalised audio are not
//     clipping). Clipped fraction > kClipWarnFraction WARN, > kClipFailFraction FAIL.
//   * silence: 20 ms frames whose RMS is below kSilenceDbfs. Every frame silent (or all samples zero) FAIL;
//     more than kSilenceWarnFraction of the frames silent WARN (the avatar will mostly idle).
//   * level: RMS of the non-silent frames in dBFS (20·log10(rms), full-scale square wave = 0 dBFS, full-scale
//     sine = -3 dBFS); below kLowLevelDbfs WARN (noise and quantisation dominate quiet speech).
//
// All functions are pure CPU computations (the *File variants read the file); safe to call concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"
#include "liveavatar/io/check_result.h"
#include "liveavatar/io/image_preprocess.h"

namespace liveavatar::io {

// ---- thresholds (documented above) ----
inline constexpr double kResolutionFailRatio = 0.5;
inline constexpr double kBlurWarnVariance = 100.0;
inline constexpr double kBlurFailVariance = 10.0;
inline constexpr int kAudioModelRate = 16000;
inline constexpr int kAudioFailRate = 8000;
inline constexpr double kClipLevel = 0.999;
inline constexpr int kClipMinRun = 3;
inline constexpr double kClipWarnFraction = 0.001;
inline constexpr double kClipFailFraction = 0.01;
inline constexpr double kSilenceDbfs = -60.0;
inline constexpr double kSilenceWarnFraction = 0.5;
inline constexpr double kLowLevelDbfs = -35.0;
inline constexpr double kAudioFrameSeconds = 0.02;

// Variance of the 4-neighbour Laplacian over the interior of a grey image. `image`: uint8 [H, W, 3] (RGB,
// converted to grey as above) or a floating [H, W] grey image on the 0..255 scale. Images smaller than 3x3 give 0.
// REQUIRES: one of those layouts on CPU (TORCH_CHECK).
double LaplacianVariance(const at::Tensor& image);

struct ImageStats {
  GenSize source;               // decoded image size
  GenSize target;               // generation size (ResolveGenSize)
  int64_t requested_area = 0;   // MaxAreaForSize(--size)
  double resolution_ratio = 1.0;  // sqrt(source H·W / requested_area); < 1: fewer pixels than requested
  double upscale = 1.0;         // min(target) / min(source): the resize factor PreprocessImage applies
  double laplacian_variance = 0;  // blur score at the model's scale (higher = sharper)
};

// Measures an RGB uint8 [H, W, 3] image for generation size `size` ("W*H", one of SizeOptions()).
// InvalidArgument for a bad --size or a tensor of another layout.
StatusOr<ImageStats> MeasureImage(const at::Tensor& rgb, const std::string& size);

// Verdicts (section "inputs"): one line for the resolution, one for the blur. `path` names the image.
std::vector<CheckResult> ImageChecks(const ImageStats& stats, const std::string& path);

// Reads and measures `path`; a file that cannot be decoded (or a bad --size) gives one FAIL line. When `stats` is
// given it receives the measurements (untouched on failure).
std::vector<CheckResult> CheckImageFile(const std::string& path, const std::string& size,
                                        ImageStats* stats = nullptr);

struct AudioStats {
  int sample_rate = 0;           // rate the statistics were measured at (the file's rate)
  int channels = 0;              // channels of the file (0 when measured on a raw tensor)
  double duration_s = 0;
  double peak = 0;               // max |x|
  double clipped_fraction = 0;   // clipped samples / all samples
  double silent_fraction = 0;    // silent 20 ms frames / all frames
  double active_rms_dbfs = -1e9; // RMS of the non-silent frames, dBFS; -1e9 when every frame is silent
};

// Measures a mono float signal [N] (CPU, nominal range [-1, 1]) at `sample_rate` Hz (> 0).
AudioStats MeasureAudio(const at::Tensor& mono, int sample_rate);

// Verdicts (section "inputs"): sample rate, clipping, silence and level lines. `path` names the audio.
std::vector<CheckResult> AudioChecks(const AudioStats& stats, const std::string& path);

// Reads `path` at its own rate (mono mix, no resampling) and measures it; an unreadable file gives one FAIL line.
// When `stats` is given it receives the measurements (untouched on failure).
std::vector<CheckResult> CheckAudioFile(const std::string& path, AudioStats* stats = nullptr);

}  // namespace liveavatar::io
