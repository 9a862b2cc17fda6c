// Input quality measurements and verdicts (see media_checks.h for the definitions and thresholds).
#include "liveavatar/io/media_checks.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <ATen/ATen.h>

#include "liveavatar/io/audio_reader.h"
#include "liveavatar/io/image_reader.h"

namespace liveavatar::io {

namespace {

constexpr const char* kSection = "inputs";

std::string Fmt(const char* format, double a) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, a);
  return buf;
}

std::string SizeStr(const GenSize& s) { return std::to_string(s.width) + "x" + std::to_string(s.height); }

double Dbfs(double rms) { return rms > 0 ? 20.0 * std::log10(rms) : -1e9; }

CheckResult Result(CheckLevel level, std::string what, std::string fix = "") {
  return CheckResult{level, kSection, std::move(what), level == CheckLevel::kPass ? "" : std::move(fix)};
}

}  // namespace

double LaplacianVariance(const at::Tensor& image) {
  TORCH_CHECK(image.device().is_cpu(), "LaplacianVariance: expects a CPU tensor");
  at::Tensor gray;
  if (image.dim() == 3) {
    TORCH_CHECK(image.scalar_type() == at::kByte && image.size(2) == 3,
                "LaplacianVariance: expects uint8 [H, W, 3] or floating [H, W], got ", image.sizes());
    const at::Tensor f = image.to(at::kDouble);
    gray = f.select(2, 0) * 0.299 + f.select(2, 1) * 0.587 + f.select(2, 2) * 0.114;
  } else {
    TORCH_CHECK(image.dim() == 2 && at::isFloatingType(image.scalar_type()),
                "LaplacianVariance: expects uint8 [H, W, 3] or floating [H, W], got ", image.sizes());
    gray = image.to(at::kDouble);
  }
  const int64_t h = gray.size(0), w = gray.size(1);
  if (h < 3 || w < 3) return 0.0;
  auto inner = [&](int64_t dy, int64_t dx) { return gray.slice(0, 1 + dy, h - 1 + dy).slice(1, 1 + dx, w - 1 + dx); };
  const at::Tensor lap = inner(-1, 0) + inner(1, 0) + inner(0, -1) + inner(0, 1) - 4.0 * inner(0, 0);
  return lap.var(/*unbiased=*/false).item<double>();
}

StatusOr<ImageStats> MeasureImage(const at::Tensor& rgb, const std::string& size) {
  if (rgb.dim() != 3 || rgb.size(2) != 3 || rgb.scalar_type() != at::kByte || rgb.size(0) < 1 || rgb.size(1) < 1) {
    return Status::InvalidArgument("MeasureImage: expects a uint8 [H, W, 3] image");
  }
  ImageStats s;
  s.source = GenSize{rgb.size(0), rgb.size(1)};
  LA_ASSIGN_OR_RETURN(s.target, ResolveGenSize(s.source.height, s.source.width, size));
  LA_ASSIGN_OR_RETURN(s.requested_area, MaxAreaForSize(size));
  s.resolution_ratio = std::sqrt(static_cast<double>(s.source.height * s.source.width) /
                                 static_cast<double>(s.requested_area));
  const int64_t short_target = std::min(s.target.height, s.target.width);
  s.upscale = static_cast<double>(short_target) / static_cast<double>(std::min(s.source.height, s.source.width));
  // The model's scale: PreprocessImage's Resize(min(H, W)); the center crop (and any zero padding) is left out.
  const GenSize resized = ShorterSideResize(s.source.height, s.source.width, short_target);
  const at::Tensor scaled = (resized.height == s.source.height && resized.width == s.source.width)
                                ? rgb.cpu()
                                : ResizeBilinearPil(rgb.cpu().contiguous(), resized.height, resized.width);
  s.laplacian_variance = LaplacianVariance(scaled);
  return s;
}

std::vector<CheckResult> ImageChecks(const ImageStats& s, const std::string& path) {
  std::vector<CheckResult> out;
  const std::string res = "image " + path + ": " + SizeStr(s.source) + " -> generation size " + SizeStr(s.target) +
                          " for a target area of " + std::to_string(s.requested_area) + " px" +
                          Fmt(" (%.2fx the target's linear resolution", s.resolution_ratio) +
                          Fmt(", resized %.2fx)", s.upscale);
  const std::string res_fix = "use a source image of at least " + std::to_string(s.requested_area) +
                              " pixels (the output follows the image size), or pick a smaller --size";
  if (s.resolution_ratio < kResolutionFailRatio) {
    out.push_back(Result(CheckLevel::kFail, res + ": far below the target resolution", res_fix));
  } else if (s.resolution_ratio < 1.0 - 1e-9) {
    out.push_back(Result(CheckLevel::kWarn, res + ": below the target resolution", res_fix));
  } else {
    out.push_back(Result(CheckLevel::kPass, res));
  }
  const std::string blur = "image " + path + ": sharpness (Laplacian variance at the model's scale) " +
                           Fmt("%.1f", s.laplacian_variance);
  const std::string blur_fix = "use a sharper, in-focus photo (no motion blur, no heavy compression or upscaling)";
  if (s.laplacian_variance < kBlurFailVariance) {
    out.push_back(Result(CheckLevel::kFail, blur + Fmt(" < %.0f: blurred or featureless", kBlurFailVariance), blur_fix));
  } else if (s.laplacian_variance < kBlurWarnVariance) {
    out.push_back(Result(CheckLevel::kWarn, blur + Fmt(" < %.0f: looks blurry", kBlurWarnVariance), blur_fix));
  } else {
    out.push_back(Result(CheckLevel::kPass, blur));
  }
  return out;
}

std::vector<CheckResult> CheckImageFile(const std::string& path, const std::string& size, ImageStats* stats_out) {
  auto rgb = ReadImage(path);
  if (!rgb.ok()) {
    return {Result(CheckLevel::kFail, "image " + path + ": cannot be read: " + rgb.status().message(),
                   "pass a readable JPEG/PNG with --image")};
  }
  auto stats = MeasureImage(*rgb, size);
  if (!stats.ok()) {
    return {Result(CheckLevel::kFail, "image " + path + ": " + stats.status().message(), "fix --size")};
  }
  if (stats_out != nullptr) *stats_out = *stats;
  return ImageChecks(*stats, path);
}

AudioStats MeasureAudio(const at::Tensor& mono, int sample_rate) {
  TORCH_CHECK(sample_rate > 0, "MeasureAudio: sample_rate must be positive");
  const at::Tensor x = mono.reshape({-1}).to(at::kFloat).cpu().contiguous();
  const int64_t n = x.numel();
  AudioStats s;
  s.sample_rate = sample_rate;
  s.duration_s = static_cast<double>(n) / sample_rate;
  if (n == 0) {
    s.silent_fraction = 1.0;
    return s;
  }
  const float* p = x.data_ptr<float>();
  // Peak and clipped runs.
  int64_t clipped = 0, run = 0;
  int run_sign = 0;
  double peak = 0;
  for (int64_t i = 0; i <= n; ++i) {
    const float v = i < n ? p[i] : 0.0f;
    const double a = std::fabs(static_cast<double>(v));
    if (i < n) peak = std::max(peak, a);
    const int sign = (i < n && a >= kClipLevel) ? (v > 0 ? 1 : -1) : 0;
    if (sign != 0 && sign == run_sign) {
      ++run;
      continue;
    }
    if (run >= kClipMinRun) clipped += run;
    run = sign != 0 ? 1 : 0;
    run_sign = sign;
  }
  s.peak = peak;
  s.clipped_fraction = static_cast<double>(clipped) / static_cast<double>(n);
  // Frame RMS.
  const int64_t frame = std::max<int64_t>(1, static_cast<int64_t>(std::lround(kAudioFrameSeconds * sample_rate)));
  int64_t frames = 0, silent = 0;
  double active_sq = 0;
  int64_t active_n = 0;
  for (int64_t a = 0; a < n; a += frame) {
    const int64_t b = std::min(n, a + frame);
    double sq = 0;
    for (int64_t i = a; i < b; ++i) sq += static_cast<double>(p[i]) * p[i];
    ++frames;
    if (Dbfs(std::sqrt(sq / static_cast<double>(b - a))) < kSilenceDbfs) {
      ++silent;
    } else {
      active_sq += sq;
      active_n += b - a;
    }
  }
  s.silent_fraction = static_cast<double>(silent) / static_cast<double>(frames);
  if (active_n > 0) s.active_rms_dbfs = Dbfs(std::sqrt(active_sq / static_cast<double>(active_n)));
  return s;
}

std::vector<CheckResult> AudioChecks(const AudioStats& s, const std::string& path) {
  std::vector<CheckResult> out;
  const std::string a = "audio " + path + ": ";
  // Sample rate.
  {
    std::string what = a + std::to_string(s.sample_rate) + " Hz";
    if (s.channels > 0) what += ", " + std::to_string(s.channels) + " channel(s)";
    what += Fmt(", %.2f s", s.duration_s);
    const std::string fix = "record or export the speech at 16 kHz or more (upsampling cannot restore the band)";
    if (s.sample_rate < kAudioFailRate) {
      out.push_back(Result(CheckLevel::kFail, what + " (below 8 kHz: speech is unintelligible to wav2vec2)", fix));
    } else if (s.sample_rate < kAudioModelRate) {
      out.push_back(Result(CheckLevel::kWarn, what + " (below wav2vec2's 16 kHz: band-limited, lip sync suffers)", fix));
    } else {
      out.push_back(Result(CheckLevel::kPass, what));
    }
  }
  // Clipping.
  {
    const std::string what = a + Fmt("peak %.3f, ", s.peak) + Fmt("%.3f%% of samples clipped", 100.0 * s.clipped_fraction);
    const std::string fix = "re-record or re-export with lower gain (peaks below -1 dBFS); clipped speech distorts "
                            "the audio features";
    if (s.clipped_fraction > kClipFailFraction) {
      out.push_back(Result(CheckLevel::kFail, what + " (heavily clipped)", fix));
    } else if (s.clipped_fraction > kClipWarnFraction) {
      out.push_back(Result(CheckLevel::kWarn, what + " (clipping)", fix));
    } else {
      out.push_back(Result(CheckLevel::kPass, what));
    }
  }
  // Silence.
  const bool all_silent = s.peak == 0.0 || s.silent_fraction >= 1.0;
  {
    const std::string what = a + Fmt("%.1f%% of 20 ms frames silent", 100.0 * s.silent_fraction) +
                             Fmt(" (below %.0f dBFS)", kSilenceDbfs);
    if (all_silent) {
      out.push_back(Result(CheckLevel::kFail, what + ": the file is silent",
                           "pass the speech file with --audio (this one holds no audible signal)"));
    } else if (s.silent_fraction > kSilenceWarnFraction) {
      out.push_back(Result(CheckLevel::kWarn, what + ": mostly silence, the avatar will mostly idle",
                           "trim leading/trailing silence or check the recording"));
    } else {
      out.push_back(Result(CheckLevel::kPass, what));
    }
  }
  // Level of the speech.
  if (!all_silent) {
    const std::string what = a + Fmt("speech level %.1f dBFS RMS", s.active_rms_dbfs);
    if (s.active_rms_dbfs < kLowLevelDbfs) {
      out.push_back(Result(CheckLevel::kWarn, what + Fmt(" (below %.0f dBFS: very quiet)", kLowLevelDbfs),
                           "normalise the speech to about -20 dBFS RMS (e.g. ffmpeg -af loudnorm)"));
    } else {
      out.push_back(Result(CheckLevel::kPass, what));
    }
  }
  return out;
}

std::vector<CheckResult> CheckAudioFile(const std::string& path, AudioStats* stats_out) {
  auto clip = ReadAudio(path, kAudioModelRate);
  if (clip.ok() && clip->source_rate > 0 && clip->source_rate != kAudioModelRate) {
    clip = ReadAudio(path, clip->source_rate);  // measure at the file's own rate, without resampling
  }
  if (!clip.ok()) {
    return {Result(CheckLevel::kFail, "audio " + path + ": cannot be read: " + clip.status().message(),
                   "pass a readable WAV/FLAC/MP3 with --audio")};
  }
  AudioStats s = MeasureAudio(clip->samples, clip->sample_rate);
  s.channels = clip->source_channels;
  if (stats_out != nullptr) *stats_out = s;
  return AudioChecks(s, path);
}

}  // namespace liveavatar::io
