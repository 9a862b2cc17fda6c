// Audio file input: decoders, mono mix, resampling, error messages.
//
// Test signal: 2.5 s stereo at 44.1 kHz, left = 0.5·c(t), right = 0.3·c(t) + 0.2·sin(2π·1000t) with the chirp
// c(t) = sin(2π(200t + 200t²)) (200 -> 1200 Hz), so the mono mix 0.4·c(t) + 0.1·sin(2π·1000t) is known
// analytically at 16 kHz. The WAV is written here;
// FLAC/OGG/Opus/MP3/M4A copies are encoded with the `ffmpeg` command (those cases skip without it).
// Tolerances (measured values in comments):
//   * WAV/FLAC (lossless) vs the analytic 16 kHz signal, ignoring the first/last 0.1 s (resampler edge
//     transients): max abs error <= 2e-3 (16-bit quantisation + libswresample's default filter).
//   * lossy codecs: after aligning by the cross-correlation peak (MP3 encoder delay), Pearson correlation
//     >= 0.99 and RMS within 5% of the analytic RMS.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/io/audio_reader.h"

namespace liveavatar::io {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr int kSrcRate = 44100;
constexpr double kSeconds = 2.5;

// A chirp (200 Hz rising to 1200 Hz) so the lossy-codec alignment has a unique cross-correlation peak.
double Chirp(double t) { return std::sin(2 * kPi * (200 * t + 200 * t * t)); }
double Left(double t) { return 0.5 * Chirp(t); }
double Right(double t) { return 0.3 * Chirp(t) + 0.2 * std::sin(2 * kPi * 1000 * t); }
double Mono(double t) { return 0.5 * (Left(t) + Right(t)); }

std::string TempPath(const std::string& name) {
  static const std::string dir = [] {
    std::string d = ::testing::TempDir() + "la_audio_reader_" + std::to_string(::getpid());
    ::mkdir(d.c_str(), 0700);
    return d;
  }();
  return dir + "/" + name;
}

void Put16(std::ofstream& o, uint16_t v) { o.put(static_cast<char>(v & 0xff)).put(static_cast<char>(v >> 8)); }
void Put32(std::ofstream& o, uint32_t v) {
  for (int i = 0; i < 4; ++i) o.put(static_cast<char>((v >> (8 * i)) & 0xff));
}

// Writes the stereo test tone as PCM16 (format 1) or float32 (format 3) WAV.
std::string WriteToneWav(const std::string& name, bool as_float, int rate = kSrcRate) {
  const std::string path = TempPath(name);
  const int frames = static_cast<int>(kSeconds * rate);
  const int bps = as_float ? 4 : 2;
  std::ofstream o(path, std::ios::binary);
  o.write("RIFF", 4);
  Put32(o, 36 + frames * 2 * bps);
  o.write("WAVE", 4);
  o.write("fmt ", 4);
  Put32(o, 16);
  Put16(o, as_float ? 3 : 1);
  Put16(o, 2);
  Put32(o, rate);
  Put32(o, rate * 2 * bps);
  Put16(o, 2 * bps);
  Put16(o, 8 * bps);
  o.write("data", 4);
  Put32(o, frames * 2 * bps);
  for (int i = 0; i < frames; ++i) {
    const double t = static_cast<double>(i) / rate;
    for (double v : {Left(t), Right(t)}) {
      if (as_float) {
        float f = static_cast<float>(v);
        o.write(reinterpret_cast<const char*>(&f), 4);
      } else {
        Put16(o, static_cast<uint16_t>(static_cast<int16_t>(std::lround(v * 32767.0))));
      }
    }
  }
  return path;
}

at::Tensor Analytic(int rate, int64_t n) {
  at::Tensor t = at::empty({n}, at::kFloat);
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<float>(Mono(static_cast<double>(i) / rate));
  return t;
}

bool HaveFfmpegTool() { return std::system("command -v ffmpeg >/dev/null 2>&1") == 0; }

// Encodes `wav` to `name` with the ffmpeg command; returns "" on failure.
std::string Encode(const std::string& wav, const std::string& name, const std::string& codec_args) {
  const std::string out = TempPath(name);
  const std::string cmd = "ffmpeg -nostdin -hide_banner -loglevel error -y -i '" + wav + "' " + codec_args + " '" +
                          out + "' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0 ? out : "";
}

// Max abs error against the analytic signal, skipping `skip` samples at each end.
double InteriorMaxErr(const at::Tensor& x, int rate, int64_t skip) {
  at::Tensor ref = Analytic(rate, x.numel());
  return (x - ref).slice(0, skip, x.numel() - skip).abs().max().item<double>();
}

// Aligns x to the analytic signal by the cross-correlation peak within +-max_lag, then reports the Pearson
// correlation and the RMS ratio over the overlapping interior.
void CompareLossy(const at::Tensor& x, int rate, double* corr, double* rms_ratio, int64_t* lag_out) {
  const int64_t n = x.numel();
  at::Tensor ref = Analytic(rate, n + 4000);
  const int64_t skip = rate / 10, max_lag = 3000;
  double best = -2;
  int64_t best_lag = 0;
  for (int64_t lag = -max_lag; lag <= max_lag; ++lag) {
    // x[i] ~ ref[i - lag]
    const int64_t a = std::max<int64_t>(skip, skip + lag), b = n - skip;
    if (b - a < rate / 2) continue;
    at::Tensor xs = x.slice(0, a, b), rs = ref.slice(0, a - lag, b - lag);
    const double c = (xs * rs).sum().item<double>() / std::sqrt((xs * xs).sum().item<double>() * (rs * rs).sum().item<double>());
    if (c > best) {
      best = c;
      best_lag = lag;
    }
  }
  const int64_t a = std::max<int64_t>(skip, skip + best_lag), b = n - skip;
  at::Tensor xs = x.slice(0, a, b), rs = ref.slice(0, a - best_lag, b - best_lag);
  *corr = best;
  *rms_ratio = std::sqrt((xs * xs).mean().item<double>() / (rs * rs).mean().item<double>());
  *lag_out = best_lag;
}

TEST(AudioReader, Pcm16WavMixesToMonoAndResamplesTo16k) {
  const std::string wav = WriteToneWav("tone16.wav", /*as_float=*/false);
  auto clip = ReadAudio(wav);
  ASSERT_TRUE(clip.ok()) << clip.status().ToString();
  EXPECT_EQ(clip->sample_rate, 16000);
  EXPECT_EQ(clip->source_rate, kSrcRate);
  EXPECT_EQ(clip->source_channels, 2);
  EXPECT_EQ(clip->num_samples(), static_cast<int64_t>(std::ceil(kSeconds * kSrcRate * 16000.0 / kSrcRate)));
  const double err = InteriorMaxErr(clip->samples, 16000, 1600);
  EXPECT_LT(err, 2e-3) << "decoder " << clip->decoder;
  std::printf("[measured] PCM16 WAV via %s: interior max abs err vs analytic = %.3g\n", clip->decoder.c_str(), err);
}

TEST(AudioReader, BuiltinWavParserReadsPcm16AndFloat) {
  for (bool as_float : {false, true}) {
    const std::string wav = WriteToneWav(as_float ? "tone_f32.wav" : "tone_i16.wav", as_float);
    AudioReadOptions opt;
    opt.decoder = AudioDecoder::kBuiltinWav;
    opt.target_rate = kSrcRate;  // no resampling: exact mix check
    auto clip = ReadAudio(wav, opt);
    ASSERT_TRUE(clip.ok()) << clip.status().ToString();
    EXPECT_EQ(clip->decoder, "wav");
    EXPECT_EQ(clip->num_samples(), static_cast<int64_t>(kSeconds * kSrcRate));
    const double err = InteriorMaxErr(clip->samples, kSrcRate, 0);
    EXPECT_LT(err, as_float ? 1e-6 : 2.0 / 32767.0) << (as_float ? "float32" : "pcm16");
  }
}

TEST(AudioReader, LinearAndSwresampleResamplersTrackTheSignal) {
  // 44.1 kHz -> 16 kHz: a non-integer ratio, so the linear resampler really interpolates.
  const int64_t n = static_cast<int64_t>(kSeconds * 44100);
  at::Tensor x = Analytic(44100, n);
  for (Resampler r : {Resampler::kLinear, Resampler::kSwresample}) {
    if (!ResamplerAvailable(r)) continue;
    auto y = ResampleAudio(x, 44100, 16000, r);
    ASSERT_TRUE(y.ok()) << y.status().ToString();
    EXPECT_EQ(y->numel(), static_cast<int64_t>(std::ceil(n * 16000.0 / 44100)));
    const double err = InteriorMaxErr(*y, 16000, 1600);
    // Linear: the interpolation error bound A·(2πf/fs)²/8 is ~1.6e-3 for this signal (0.4 at <= 1.2 kHz plus
    // 0.1 at 1 kHz, fs = 44.1 kHz); libswresample is far below it.
    EXPECT_LT(err, 3e-3) << (r == Resampler::kLinear ? "linear" : "swresample");
    std::printf("[measured] %s 44.1k->16k: interior max abs err %.3g\n", r == Resampler::kLinear ? "linear" : "swresample", err);
  }
  auto same = ResampleAudio(x, 16000, 16000);
  ASSERT_TRUE(same.ok());
  EXPECT_TRUE(at::equal(*same, x));
  EXPECT_FALSE(ResampleAudio(x, 0, 16000).ok());
}

struct CodecCase {
  const char* file;
  const char* args;
  bool lossless;
};

TEST(AudioReader, CompressedFormatsDecodeToTheSameSignal) {
  if (!HaveFfmpegTool()) GTEST_SKIP() << "the `ffmpeg` command is not on PATH: cannot encode FLAC/OGG/Opus/MP3/M4A";
  if (!AudioDecoderAvailable(AudioDecoder::kSndfile) && !AudioDecoderAvailable(AudioDecoder::kFfmpeg)) {
    GTEST_SKIP() << "built without libsndfile and FFmpeg: only WAV is decodable";
  }
  const std::string wav = WriteToneWav("tone_src.wav", false);
  auto ref = ReadAudio(wav);
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();
  const CodecCase cases[] = {
      {"tone.flac", "-c:a flac", true},
      {"tone.ogg", "-c:a libvorbis -q:a 6", false},
      {"tone.opus", "-c:a libopus -b:a 96k", false},
      {"tone.mp3", "-c:a libmp3lame -b:a 192k", false},
      {"tone.m4a", "-c:a aac -b:a 192k", false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.file);
    const std::string path = Encode(wav, c.file, c.args);
    if (path.empty()) {
      std::printf("[skipped] ffmpeg could not encode %s (%s)\n", c.file, c.args);
      continue;
    }
    auto clip = ReadAudio(path);
    const bool needs_ffmpeg = std::string(c.file).find(".m4a") != std::string::npos;
    if (needs_ffmpeg && !AudioDecoderAvailable(AudioDecoder::kFfmpeg)) {
      EXPECT_FALSE(clip.ok());
      continue;
    }
    ASSERT_TRUE(clip.ok()) << clip.status().ToString();
    EXPECT_EQ(clip->sample_rate, 16000);
    if (c.lossless) {
      ASSERT_EQ(clip->num_samples(), ref->num_samples());
      const double diff = (clip->samples - ref->samples).abs().max().item<double>();
      EXPECT_LT(diff, 1e-6);
      std::printf("[measured] %s via %s: max abs diff vs WAV decode = %.3g\n", c.file, clip->decoder.c_str(), diff);
    } else {
      double corr = 0, rms = 0;
      int64_t lag = 0;
      CompareLossy(clip->samples, 16000, &corr, &rms, &lag);
      EXPECT_GE(corr, 0.99);
      EXPECT_NEAR(rms, 1.0, 0.05);
      // The decoded length may differ by the encoder delay/padding (a few frames), not by more.
      EXPECT_NEAR(static_cast<double>(clip->num_samples()), static_cast<double>(ref->num_samples()), 0.1 * 16000);
      std::printf("[measured] %s via %s: lag %lld samples, correlation %.5f, RMS ratio %.4f, length %lld vs %lld\n",
                  c.file, clip->decoder.c_str(), static_cast<long long>(lag), corr, rms,
                  static_cast<long long>(clip->num_samples()), static_cast<long long>(ref->num_samples()));
    }
  }
}

TEST(AudioReader, MissingEmptyAndNonAudioFilesGiveClearErrors) {
  const std::string missing = TempPath("does_not_exist.wav");
  auto r1 = ReadAudio(missing);
  ASSERT_FALSE(r1.ok());
  EXPECT_EQ(r1.status().code(), Status::Code::kNotFound);
  EXPECT_NE(r1.status().message().find(missing), std::string::npos) << r1.status().ToString();

  const std::string empty = TempPath("empty.wav");
  { std::ofstream o(empty, std::ios::binary); }
  auto r2 = ReadAudio(empty);
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(r2.status().message().find(empty), std::string::npos);
  EXPECT_NE(r2.status().message().find("empty"), std::string::npos) << r2.status().ToString();

  const std::string text = TempPath("notes.wav");
  {
    std::ofstream o(text);
    for (int i = 0; i < 200; ++i) o << "this is not audio, line " << i << "\n";
  }
  auto r3 = ReadAudio(text);
  ASSERT_FALSE(r3.ok());
  EXPECT_NE(r3.status().message().find(text), std::string::npos) << r3.status().ToString();
  std::printf("[message] %s\n", r3.status().ToString().c_str());

  // A WAV header with no samples.
  const std::string header_only = TempPath("header_only.wav");
  {
    std::ofstream o(header_only, std::ios::binary);
    o.write("RIFF", 4);
    Put32(o, 36);
    o.write("WAVE", 4);
    o.write("fmt ", 4);
    Put32(o, 16);
    Put16(o, 1);
    Put16(o, 1);
    Put32(o, 16000);
    Put32(o, 32000);
    Put16(o, 2);
    Put16(o, 16);
    o.write("data", 4);
    Put32(o, 0);
  }
  AudioReadOptions builtin;
  builtin.decoder = AudioDecoder::kBuiltinWav;
  for (const auto& opt : {AudioReadOptions{}, builtin}) {
    auto r4 = ReadAudio(header_only, opt);
    ASSERT_FALSE(r4.ok());
    EXPECT_NE(r4.status().message().find(header_only), std::string::npos) << r4.status().ToString();
  }
  EXPECT_FALSE(ReadAudio(TempPath("tone16.wav"), 0).ok());
}


// A WAV whose header claims an absurd rate would be resampled to ~10^9 samples; header values are checked first.
TEST(AudioReader, HeaderRateChannelsDurationAndNonFiniteSamplesAreRefused) {
  auto write = [](const std::string& name, int channels, int rate, int frames, float value) {
    const std::string path = TempPath(name);
    std::ofstream o(path, std::ios::binary);
    o.write("RIFF", 4);
    Put32(o, 36 + frames * channels * 4);
    o.write("WAVE", 4);
    o.write("fmt ", 4);
    Put32(o, 16);
    Put16(o, 3);  // float32
    Put16(o, static_cast<uint16_t>(channels));
    Put32(o, rate);
    Put32(o, rate * channels * 4);
    Put16(o, static_cast<uint16_t>(channels * 4));
    Put16(o, 32);
    o.write("data", 4);
    Put32(o, frames * channels * 4);
    for (int i = 0; i < frames * channels; ++i) {
      const float v = i == frames * channels / 2 ? value : 0.1f;
      o.write(reinterpret_cast<const char*>(&v), 4);
    }
    return path;
  };
  struct Case {
    std::string file, needle;
    int channels, rate, frames;
    float value;
    double max_seconds;
  };
  const Case cases[] = {
      {"rate1.wav", "sample rate 1 Hz", 1, 1, 30000, 0.1f, 3600},
      {"rate1m.wav", "sample rate 1000000 Hz", 1, 1000000, 3000, 0.1f, 3600},
      {"ch40.wav", "40 channels", 40, 16000, 100, 0.1f, 3600},
      {"long.wav", "exceeds the 1 s limit", 1, 8000, 16000, 0.1f, 1.0},
      {"nan.wav", "is NaN", 1, 16000, 1000, std::nanf(""), 3600},
      {"inf.wav", "is infinite", 1, 16000, 1000, std::numeric_limits<float>::infinity(), 3600},
  };
  for (const auto& c : cases) {
    const std::string path = write(c.file, c.channels, c.rate, c.frames, c.value);
    AudioReadOptions o;
    o.max_seconds = c.max_seconds;
    auto r = ReadAudio(path, o);
    ASSERT_FALSE(r.ok()) << c.file;
    EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument) << r.status().ToString();
    EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(c.needle), std::string::npos) << r.status().message();
  }
  // Within the limits the same writer gives a readable file.
  auto fine = ReadAudio(write("fine.wav", 2, 16000, 1600, 0.2f), AudioReadOptions{});
  ASSERT_TRUE(fine.ok()) << fine.status().ToString();
  EXPECT_EQ(fine->num_samples(), 1600);
}

}  // namespace
}  // namespace liveavatar::io
