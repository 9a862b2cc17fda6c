// Parity with the golden audio fixtures (golden README §5): kinds `audio_features` and `wav2vec2`, every case of
// <golden>/audio discovered, weights/config read from the fixture's wav2vec2-large-xlsr-53-english folder.
// Tolerance: fp32 rel. L2 <= 1e-4 for every out.* tensor, integers exact.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/models/audio/audio_features.h"
#include "liveavatar/models/audio/speech_features.h"
#include "liveavatar/models/audio/wav2vec2.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar::models::audio {
namespace {

using liveavatar::testing::GoldenCase;
using liveavatar::testing::GoldenDir;
using liveavatar::testing::RelL2;
using liveavatar::testing::RelL2Within;

constexpr double kTol = 1e-4;

double MetaOr(const GoldenCase& c, const std::string& key, double fallback) {
  return c.HasMeta(key) ? c.MetaDouble(key) : fallback;
}

int64_t InferFrames(const GoldenCase& c) {
  if (c.Has("in.infer_frames")) return c.Get("in.infer_frames").item<int64_t>();
  return c.MetaInt("infer_frames");
}

// Checks features_30fps / audio_emb / num_clips / block slices of `c` computed from `hidden` [25, T50, C].
void CheckFeatures(const GoldenCase& c, const at::Tensor& hidden) {
  const int64_t frames = InferFrames(c);
  const double fps = MetaOr(c, "fps", 25.0);
  const int64_t m = c.HasMeta("m") ? c.MetaInt("m") : 0;
  const at::Tensor f30 = LinearInterpolateFps(hidden, 50.0, 30.0);
  if (c.Has("out.features_30fps")) {
    EXPECT_TRUE(RelL2Within(f30, c.Get("out.features_30fps"), kTol, "out.features_30fps"));
  }
  const AudioBuckets b = BucketAudioFeatures(f30, frames, fps, m, 30.0);
  const at::Tensor emb = AudioEmbedLayout(b.buckets);
  if (c.Has("out.audio_emb")) {
    EXPECT_TRUE(RelL2Within(emb, c.Get("out.audio_emb"), kTol, "out.audio_emb"));
    std::printf("[measured] %s features_30fps rel L2 %.3g, audio_emb rel L2 %.3g\n", c.name().c_str(),
                c.Has("out.features_30fps") ? RelL2(f30, c.Get("out.features_30fps")) : -1.0,
                RelL2(emb, c.Get("out.audio_emb")));
  }
  if (c.Has("out.num_clips")) {
    EXPECT_EQ(b.num_clips, c.Get("out.num_clips").item<int64_t>()) << "out.num_clips";
  }
  for (const auto& key : c.Keys("out.block_slice.r")) {
    // out.block_slice.r<clip>b<block>
    const std::string tag = key.substr(std::string("out.block_slice.r").size());
    const auto bpos = tag.find('b');
    ASSERT_NE(bpos, std::string::npos) << key;
    const int64_t clip = std::stoll(tag.substr(0, bpos)), block = std::stoll(tag.substr(bpos + 1));
    EXPECT_TRUE(RelL2Within(AudioBlockSlice(emb, clip, block, frames, 12), c.Get(key), kTol, key));
  }
  if (m == 0 && fps == 25.0) {  // the convenience path the pipeline uses
    const AudioEmbedding e = ComputeAudioEmbedding(hidden, frames, fps);
    EXPECT_TRUE(at::equal(e.audio_emb, emb));
    EXPECT_EQ(e.num_clips, b.num_clips);
  }
}

class GoldenAudioFeatures : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenAudioFeatures, MatchesFixture) {
  GoldenCase c(GetParam());
  CheckFeatures(c, c.Get("in.hidden_states"));
}

LA_GOLDEN_CASES(GoldenAudioFeatures, "audio", {"audio_features"});

class GoldenWav2Vec2 : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenWav2Vec2, MatchesFixture) {
  GoldenCase c(GetParam());
  const std::string dir = (std::filesystem::path(GoldenDir("audio")) / "wav2vec2-large-xlsr-53-english").string();
  auto model = Wav2Vec2::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status().ToString();

  // Preprocessing: in.wav -> in.input_values.
  at::Tensor input_values = c.Get("in.input_values");
  if (c.Has("in.wav")) {
    const at::Tensor mine = model->config().do_normalize ? NormalizeWaveform(c.Get("in.wav"))
                                                         : c.Get("in.wav").reshape({1, -1});
    EXPECT_TRUE(RelL2Within(mine, input_values, kTol, "in.input_values (from in.wav)"));
    std::printf("[measured] %s input_values rel L2 %.3g\n", c.name().c_str(), RelL2(mine, input_values));
    input_values = mine;  // run the model on our own preprocessing
  }
  Wav2Vec2RunOptions run;
  run.compute_logits = c.Has("out.logits") && model->has_lm_head();
  const Wav2Vec2Output out = model->Forward(input_values, run);
  const at::Tensor ref = c.Get("out.hidden_states");
  EXPECT_TRUE(RelL2Within(out.hidden_states, ref, kTol, "out.hidden_states"));
  std::printf("[measured] %s hidden_states rel L2 %.3g (last state %.3g)\n", c.name().c_str(),
              RelL2(out.hidden_states, ref), RelL2(out.hidden_states[-1], ref[-1]));
  if (c.Has("out.logits")) {
    ASSERT_TRUE(model->has_lm_head()) << "fixture has out.logits but the checkpoint has no lm_head";
    EXPECT_TRUE(RelL2Within(out.logits, c.Get("out.logits"), kTol, "out.logits"));
    std::printf("[measured] %s logits rel L2 %.3g\n", c.name().c_str(), RelL2(out.logits, c.Get("out.logits")));
  }
  if (c.Has("dbg.layer23_output_before_final_layer_norm")) {
    // transformers 5.x's last element: the last layer's output before the final LayerNorm (must differ from ours).
    const at::Tensor pre = c.Get("dbg.layer23_output_before_final_layer_norm");
    EXPECT_GT(RelL2(out.hidden_states[-1], pre), 1e-2) << "last hidden state should be post-final-LayerNorm";
  }
  // The exact long-audio machinery (chunked conv features + query-chunked attention) gives the same numbers.
  Wav2Vec2RunOptions chunked = run;
  chunked.feature_chunk_frames = 7;
  chunked.attention_query_chunk = 5;
  const Wav2Vec2Output out2 = model->Forward(input_values, chunked);
  EXPECT_TRUE(RelL2Within(out2.hidden_states, ref, kTol, "out.hidden_states (chunked evaluation)"));
  // End-to-end from the waveform through Encode().
  if (c.Has("in.wav")) {
    auto enc = model->Encode(c.Get("in.wav"), {}, run);
    ASSERT_TRUE(enc.ok()) << enc.status().ToString();
    EXPECT_TRUE(RelL2Within(enc->hidden_states, ref, kTol, "out.hidden_states (Encode)"));
  }
  CheckFeatures(c, out.hidden_states);
}

// Writes `wav` [N] as a mono 32-bit float WAV at `rate`.
void WriteFloatWav(const std::string& path, const at::Tensor& wav, int rate) {
  const at::Tensor x = wav.reshape({-1}).to(at::kFloat).contiguous();
  const uint32_t bytes = static_cast<uint32_t>(x.numel() * 4);
  std::ofstream o(path, std::ios::binary);
  auto u32 = [&o](uint32_t v) { o.write(reinterpret_cast<const char*>(&v), 4); };  // little-endian host
  auto u16 = [&o](uint16_t v) { o.write(reinterpret_cast<const char*>(&v), 2); };
  o.write("RIFF", 4);
  u32(36 + bytes);
  o.write("WAVEfmt ", 8);
  u32(16);
  u16(3);
  u16(1);
  u32(static_cast<uint32_t>(rate));
  u32(static_cast<uint32_t>(rate) * 4);
  u16(4);
  u16(32);
  o.write("data", 4);
  u32(bytes);
  o.write(reinterpret_cast<const char*>(x.data_ptr<float>()), bytes);
}

// The full conditioning path from an audio file: ReadAudio (16 kHz float WAV: no resampling) -> wav2vec2 ->
// features -> audio_emb.
TEST_P(GoldenWav2Vec2, FromAudioFile) {
  GoldenCase c(GetParam());
  if (!c.Has("in.wav")) GTEST_SKIP() << "case has no in.wav";
  const std::string dir = (std::filesystem::path(GoldenDir("audio")) / "wav2vec2-large-xlsr-53-english").string();
  auto model = Wav2Vec2::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const std::string wav_path = ::testing::TempDir() + "la_golden_" + c.name() + "_" + std::to_string(::getpid()) + ".wav";
  WriteFloatWav(wav_path, c.Get("in.wav"), static_cast<int>(model->config().sampling_rate));
  SpeechEmbeddingOptions opt;
  opt.infer_frames = InferFrames(c);
  opt.fps = MetaOr(c, "fps", 25.0);
  auto e = ComputeSpeechEmbeddingFromFile(*model, wav_path, opt);
  std::remove(wav_path.c_str());
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_TRUE(RelL2Within(e->hidden_states, c.Get("out.hidden_states"), kTol, "out.hidden_states (from file)"));
  EXPECT_TRUE(RelL2Within(e->embedding.features_30fps, c.Get("out.features_30fps"), kTol, "out.features_30fps"));
  EXPECT_TRUE(RelL2Within(e->embedding.audio_emb, c.Get("out.audio_emb"), kTol, "out.audio_emb (from file)"));
  std::printf("[measured] %s from file: audio_emb rel L2 %.3g\n", c.name().c_str(),
              RelL2(e->embedding.audio_emb, c.Get("out.audio_emb")));
  EXPECT_EQ(e->embedding.num_clips, c.Get("out.num_clips").item<int64_t>());
}

LA_GOLDEN_CASES(GoldenWav2Vec2, "audio", {"wav2vec2"});

}  // namespace
}  // namespace liveavatar::models::audio
