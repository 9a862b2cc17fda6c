// Input quality checks (io/media_checks.h): the Laplacian blur score on known values, sharp vs blurred and
// low-resolution images, and clipped, silent, quiet, mostly silent and low-rate audio, through the measuring
// functions and through files.
#include "liveavatar/io/media_checks.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>

#include <ATen/ATen.h>

#include "io_test_util.h"
#include "liveavatar/io/image_reader.h"
#include "liveavatar/testing/synthetic.h"

namespace liveavatar::io {
namespace {

using testing::WriteWav16;

constexpr double kPi = 3.14159265358979323846;

// A sharp test card: 16 px checkerboard (levels 50 / 200) with a thin diagonal line, uint8 [h, w, 3].
at::Tensor SharpImage(int64_t h, int64_t w) {
  auto y = at::arange(h).view({h, 1}), x = at::arange(w).view({1, w});
  at::Tensor board = ((y / 16 + x / 16) % 2).to(at::kFloat) * 150 + 50;
  board = at::where(at::abs(y - x) < 2, at::full({}, 255.0f), board);
  return board.unsqueeze(2).expand({h, w, 3}).clamp(0, 255).to(at::kByte).contiguous();
}

// Box blur of `rgb` with a k x k kernel (k odd).
at::Tensor Blur(const at::Tensor& rgb, int64_t k) {
  at::Tensor f = rgb.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat);
  f = at::avg_pool2d(f, {k, k}, {1, 1}, {k / 2, k / 2}, /*ceil_mode=*/false, /*count_include_pad=*/false);
  return f.squeeze(0).permute({1, 2, 0}).round().clamp(0, 255).to(at::kByte).contiguous();
}

at::Tensor Sine(double seconds, int rate, double amplitude, double hz = 440.0) {
  const int64_t n = static_cast<int64_t>(seconds * rate);
  return (at::arange(n, at::kDouble) * (2 * kPi * hz / rate)).sin().mul(amplitude).to(at::kFloat);
}

const CheckResult* Find(const std::vector<CheckResult>& v, const std::string& needle) {
  for (const auto& r : v) {
    if (r.what.find(needle) != std::string::npos) return &r;
  }
  return nullptr;
}

CheckLevel LevelOf(const std::vector<CheckResult>& v, const std::string& needle) {
  const CheckResult* r = Find(v, needle);
  EXPECT_NE(r, nullptr) << "no line with '" << needle << "'";
  return r != nullptr ? r->level : CheckLevel::kSkip;
}

TEST(LaplacianVarianceTest, KnownValues) {
  // One unit impulse in a 5x5 image: the interior Laplacian is [0 1 0; 1 -4 1; 0 1 0], variance 20/9.
  at::Tensor g = at::zeros({5, 5}, at::kDouble);
  g[2][2] = 1.0;
  EXPECT_NEAR(LaplacianVariance(g), 20.0 / 9.0, 1e-12);
  // Flat and linear-ramp images have a zero Laplacian.
  EXPECT_EQ(LaplacianVariance(at::full({8, 9}, 7.0, at::kFloat)), 0.0);
  EXPECT_NEAR(LaplacianVariance(at::arange(40, at::kFloat).view({5, 8}) * 3), 0.0, 1e-9);
  EXPECT_EQ(LaplacianVariance(at::zeros({2, 9}, at::kFloat)), 0.0);
  // RGB uses the 0.299/0.587/0.114 grey: a pure-red impulse scores 0.299^2 of the grey one.
  at::Tensor rgb = at::zeros({5, 5, 3}, at::kByte);
  rgb[2][2][0] = 100;
  EXPECT_NEAR(LaplacianVariance(rgb), 20.0 / 9.0 * std::pow(29.9, 2), 1e-6);
}

TEST(ImageChecksTest, SharpPassesBlurredFails) {
  const at::Tensor sharp = SharpImage(384, 704);
  auto s = MeasureImage(sharp, "704*384");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->target.height, 384);
  EXPECT_EQ(s->target.width, 704);
  EXPECT_NEAR(s->upscale, 1.0, 1e-12);
  EXPECT_GT(s->laplacian_variance, kBlurWarnVariance);
  auto v = ImageChecks(*s, "sharp.png");
  EXPECT_EQ(LevelOf(v, "sharpness"), CheckLevel::kPass);
  EXPECT_EQ(LevelOf(v, "generation size 704x384"), CheckLevel::kPass);

  // A mild blur lands between the thresholds, a heavy one below the FAIL threshold; the score falls monotonically.
  auto mild = MeasureImage(Blur(sharp, 3), "704*384");
  auto heavy = MeasureImage(Blur(sharp, 21), "704*384");
  ASSERT_TRUE(mild.ok() && heavy.ok());
  EXPECT_LT(mild->laplacian_variance, s->laplacian_variance);
  EXPECT_LT(heavy->laplacian_variance, mild->laplacian_variance);
  EXPECT_LT(heavy->laplacian_variance, kBlurFailVariance);
  auto hv = ImageChecks(*heavy, "blurred.png");
  const CheckResult* blur = Find(hv, "sharpness");
  ASSERT_NE(blur, nullptr);
  EXPECT_EQ(blur->level, CheckLevel::kFail);
  EXPECT_NE(blur->what.find("blurred.png"), std::string::npos);
  EXPECT_FALSE(blur->fix.empty());
  EXPECT_EQ(blur->section, "inputs");

  // A flat image has no detail at all.
  auto flat = MeasureImage(at::full({384, 704, 3}, 128, at::kByte), "704*384");
  ASSERT_TRUE(flat.ok());
  EXPECT_EQ(LevelOf(ImageChecks(*flat, "flat.png"), "sharpness"), CheckLevel::kFail);
}

TEST(ImageChecksTest, ResolutionBelowTarget) {
  // The generation size follows the image: a smaller image is generated smaller than --size asks.
  auto big = MeasureImage(SharpImage(768, 1408), "704*384");
  auto small = MeasureImage(SharpImage(288, 528), "704*384");
  auto tiny = MeasureImage(SharpImage(96, 176), "704*384");
  ASSERT_TRUE(big.ok() && small.ok() && tiny.ok());
  EXPECT_EQ(big->requested_area, 704 * 384);
  EXPECT_NEAR(big->resolution_ratio, 2.0, 1e-12);
  EXPECT_NEAR(small->resolution_ratio, 0.75, 1e-12);
  EXPECT_NEAR(tiny->resolution_ratio, 0.25, 1e-12);
  EXPECT_NEAR(big->upscale, 0.5, 1e-12);
  EXPECT_LT(small->target.height * small->target.width, 704 * 384);
  EXPECT_EQ(LevelOf(ImageChecks(*big, "big.png"), "generation size"), CheckLevel::kPass);
  EXPECT_EQ(LevelOf(ImageChecks(*small, "small.png"), "generation size"), CheckLevel::kWarn);
  const auto tiny_checks = ImageChecks(*tiny, "tiny.png");
  const CheckResult* t = Find(tiny_checks, "generation size");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->level, CheckLevel::kFail);
  EXPECT_NE(t->what.find("176x96"), std::string::npos) << t->what;
  // Bad --size and bad layouts are errors, not crashes.
  EXPECT_FALSE(MeasureImage(SharpImage(64, 64), "1*1").ok());
  EXPECT_FALSE(MeasureImage(at::zeros({4, 4}, at::kByte), "704*384").ok());
}

TEST(ImageChecksTest, FromFile) {
  testutil::TempDir dir;
  const std::string blurred = dir / "blurred.ppm";
  ASSERT_TRUE(WritePpm(blurred, Blur(SharpImage(384, 704), 21)).ok());
  auto v = CheckImageFile(blurred, "704*384");
  EXPECT_EQ(LevelOf(v, "sharpness"), CheckLevel::kFail);
  auto missing = CheckImageFile(dir / "missing.png", "704*384");
  ASSERT_EQ(missing.size(), 1u);
  EXPECT_EQ(missing[0].level, CheckLevel::kFail);
  EXPECT_NE(missing[0].what.find("missing.png"), std::string::npos);
}

TEST(AudioChecksTest, CleanSpeechLevelPasses) {
  const AudioStats s = MeasureAudio(Sine(2.0, 16000, 0.5), 16000);
  EXPECT_NEAR(s.duration_s, 2.0, 1e-12);
  EXPECT_NEAR(s.peak, 0.5, 1e-3);
  EXPECT_EQ(s.clipped_fraction, 0.0);
  EXPECT_EQ(s.silent_fraction, 0.0);
  EXPECT_NEAR(s.active_rms_dbfs, 20 * std::log10(0.5 / std::sqrt(2.0)), 0.05);
  for (const auto& r : AudioChecks(s, "speech.wav")) EXPECT_EQ(r.level, CheckLevel::kPass) << r.what;
  // A normalised sine touches full scale once per period: single peaks are not clipping.
  EXPECT_EQ(MeasureAudio(Sine(1.0, 16000, 1.0), 16000).clipped_fraction, 0.0);
}

TEST(AudioChecksTest, ClippedFails) {
  const AudioStats s = MeasureAudio((Sine(2.0, 16000, 3.0)).clamp(-1, 1), 16000);
  EXPECT_GT(s.clipped_fraction, 0.5);
  EXPECT_EQ(LevelOf(AudioChecks(s, "clipped.wav"), "of samples clipped"), CheckLevel::kFail);
  // Light clipping (a few flat tops) warns.
  at::Tensor light = Sine(2.0, 16000, 0.5);
  light.slice(0, 1000, 1040).fill_(1.0f);
  const AudioStats l = MeasureAudio(light, 16000);
  EXPECT_NEAR(l.clipped_fraction, 40.0 / 32000.0, 1e-12);
  EXPECT_EQ(LevelOf(AudioChecks(l, "light.wav"), "of samples clipped"), CheckLevel::kWarn);
}

TEST(AudioChecksTest, SilentQuietAndMostlySilent) {
  const AudioStats silent = MeasureAudio(at::zeros({32000}), 16000);
  EXPECT_EQ(silent.silent_fraction, 1.0);
  auto sv = AudioChecks(silent, "silent.wav");
  EXPECT_EQ(LevelOf(sv, "frames silent"), CheckLevel::kFail);
  EXPECT_EQ(Find(sv, "speech level"), nullptr);  // no level line for a silent file

  const AudioStats quiet = MeasureAudio(Sine(2.0, 16000, 0.01), 16000);
  EXPECT_EQ(quiet.silent_fraction, 0.0);
  EXPECT_NEAR(quiet.active_rms_dbfs, 20 * std::log10(0.01 / std::sqrt(2.0)), 0.05);
  EXPECT_EQ(LevelOf(AudioChecks(quiet, "quiet.wav"), "speech level"), CheckLevel::kWarn);

  // 1 s of speech then 3 s of silence: 75% of the frames are silent; the level is that of the speech alone.
  const at::Tensor mostly = at::cat({Sine(1.0, 16000, 0.5), at::zeros({48000})});
  const AudioStats m = MeasureAudio(mostly, 16000);
  EXPECT_NEAR(m.silent_fraction, 0.75, 1e-12);
  EXPECT_NEAR(m.active_rms_dbfs, 20 * std::log10(0.5 / std::sqrt(2.0)), 0.05);
  auto mv = AudioChecks(m, "mostly.wav");
  EXPECT_EQ(LevelOf(mv, "frames silent"), CheckLevel::kWarn);
  EXPECT_EQ(LevelOf(mv, "speech level"), CheckLevel::kPass);
}

TEST(AudioChecksTest, SampleRate) {
  EXPECT_EQ(LevelOf(AudioChecks(MeasureAudio(Sine(1.0, 11025, 0.5, 300), 11025), "a.wav"), "Hz"), CheckLevel::kWarn);
  EXPECT_EQ(LevelOf(AudioChecks(MeasureAudio(Sine(1.0, 6000, 0.5, 300), 6000), "a.wav"), "Hz"), CheckLevel::kFail);
  EXPECT_EQ(LevelOf(AudioChecks(MeasureAudio(Sine(1.0, 48000, 0.5), 48000), "a.wav"), "Hz"), CheckLevel::kPass);
}

TEST(AudioChecksTest, FromFile) {
  testutil::TempDir dir;
  // An 8 kHz file is measured at its own rate (not resampled to 16 kHz first).
  const std::string low = dir / "low.wav";
  WriteWav16(low, Sine(1.0, 8000, 0.5, 300), 8000);
  auto lv = CheckAudioFile(low);
  const CheckResult* rate = Find(lv, "8000 Hz");
  ASSERT_NE(rate, nullptr);
  EXPECT_EQ(rate->level, CheckLevel::kWarn);
  EXPECT_NE(rate->what.find("1 channel"), std::string::npos);

  const std::string clipped = dir / "clipped.wav";
  WriteWav16(clipped, Sine(2.0, 16000, 4.0).clamp(-1, 1), 16000);
  EXPECT_EQ(LevelOf(CheckAudioFile(clipped), "of samples clipped"), CheckLevel::kFail);

  const std::string silent = dir / "silent.wav";
  WriteWav16(silent, at::zeros({16000}), 16000);
  EXPECT_EQ(LevelOf(CheckAudioFile(silent), "frames silent"), CheckLevel::kFail);

  auto missing = CheckAudioFile(dir / "none.wav");
  ASSERT_EQ(missing.size(), 1u);
  EXPECT_EQ(missing[0].level, CheckLevel::kFail);
}

}  // namespace
}  // namespace liveavatar::io
