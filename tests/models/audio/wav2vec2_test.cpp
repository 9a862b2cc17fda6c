// wav2vec2 unit tests (non-parity): config parsing/rendering, weight specs vs the real key layout, strict
// loading errors, exactness of the chunked evaluation, input validation. Random weights are generated here from
// Wav2Vec2WeightSpecs (what make-tiny does), so these tests do not depend on fixture values.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/io/pth.h"
#include "liveavatar/io/safetensors.h"
#include "liveavatar/models/audio/wav2vec2.h"
#include "liveavatar/testing/golden.h"
#include "wav2vec2_test_util.h"

namespace liveavatar::models::audio {
namespace {

using liveavatar::testing::RelL2;

TEST(Wav2Vec2Config, GeometryOfTheXlsrFeatureEncoder) {
  Wav2Vec2Config cfg;  // xlsr-53 defaults
  EXPECT_EQ(cfg.FrameHop(), 320);
  EXPECT_EQ(cfg.ReceptiveField(), 400);
  EXPECT_EQ(cfg.NumFrames(399), 0);
  EXPECT_EQ(cfg.NumFrames(400), 1);
  EXPECT_EQ(cfg.NumFrames(20800), 64);   // golden case_wav2vec2: 1.3 s -> 64 frames
  EXPECT_EQ(cfg.NumFrames(16000), 49);   // 1 s -> 49 frames (HF)
  EXPECT_EQ(cfg.NumFrames(16000 * 60), 2999);
  EXPECT_TRUE(cfg.Validate().ok());
}

TEST(Wav2Vec2Config, HfJsonRoundTripAndValidation) {
  const Wav2Vec2Config tiny = Wav2Vec2TinyConfig();
  const auto cfg_json = Wav2Vec2ConfigToHfJson(tiny);
  const auto pre_json = Wav2Vec2PreprocessorToHfJson(tiny);
  EXPECT_EQ(cfg_json["architectures"][0], "Wav2Vec2ForCTC");
  EXPECT_EQ(cfg_json["model_type"], "wav2vec2");
  EXPECT_EQ(pre_json["sampling_rate"], 16000);
  auto back = Wav2Vec2ConfigFromJson(cfg_json, pre_json, "round trip");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->hidden_size, 32);
  EXPECT_EQ(back->num_attention_heads, 2);
  EXPECT_EQ(back->conv_dim, tiny.conv_dim);
  EXPECT_EQ(back->num_conv_pos_embeddings, 16);
  EXPECT_EQ(back->num_conv_pos_embedding_groups, 4);
  EXPECT_EQ(back->vocab_size, 33);
  EXPECT_TRUE(back->do_normalize);

  auto bad = cfg_json;
  bad["num_attention_heads"] = 5;
  auto r = Wav2Vec2ConfigFromJson(bad, pre_json, "my/config.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("my/config.json"), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find("num_attention_heads"), std::string::npos) << r.status().ToString();
  bad = cfg_json;
  bad["feat_extract_norm"] = "batch";
  EXPECT_EQ(Wav2Vec2ConfigFromJson(bad, pre_json, "x").status().code(), Status::Code::kNotSupported);
  bad = cfg_json;
  bad["hidden_size"] = "big";
  EXPECT_FALSE(Wav2Vec2ConfigFromJson(bad, pre_json, "x").ok());
}

TEST(Wav2Vec2Config, ReadsTheFixtureFolder) {
  const std::string dir = WeightsDirOfFixture();
  if (dir.empty()) GTEST_SKIP() << "no golden wav2vec2 folder";
  auto cfg = LoadWav2Vec2Config(dir);
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_GT(cfg->hidden_size, 0);
  EXPECT_EQ(cfg->sampling_rate, 16000);
  auto missing = LoadWav2Vec2Config(dir + "/no_such_subdir");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("config.json"), std::string::npos);
}

TEST(Wav2Vec2Specs, MatchTheRealCheckpointKeyLayout) {
  const std::string dir = WeightsDirOfFixture();
  if (dir.empty()) GTEST_SKIP() << "no golden wav2vec2 folder";
  auto cfg = LoadWav2Vec2Config(dir);
  ASSERT_TRUE(cfg.ok());
  auto store = io::OpenTensorStore(dir + "/model.safetensors");
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  std::set<std::string> spec_keys;
  for (const auto& s : Wav2Vec2WeightSpecs(*cfg)) {
    spec_keys.insert(s.key);
    if (!(*store)->Contains(s.key)) {
      EXPECT_TRUE(s.optional) << s.key;
      continue;
    }
    auto meta = (*store)->Meta(s.key);
    ASSERT_TRUE(meta.ok());
    EXPECT_EQ(meta->shape, s.shape) << s.key;
  }
  for (const auto& k : (*store)->Keys()) EXPECT_TRUE(spec_keys.count(k)) << "checkpoint key without a spec: " << k;
}

TEST(Wav2Vec2Load, StrictErrorsNameTheKeys) {
  const Wav2Vec2Config cfg = Wav2Vec2TinyConfig();
  auto tensors = RandomWeights(cfg, 7);
  tensors.erase("wav2vec2.encoder.layers.3.attention.k_proj.weight");
  tensors["wav2vec2.encoder.layers.0.feed_forward.output_dense.bias"] = at::zeros({31});
  tensors["wav2vec2.quantizer.codevectors"] = at::zeros({1, 640, 128});
  auto model = Wav2Vec2::FromStore(cfg, *io::MakeMemoryStore(tensors, "mem://w2v"));
  ASSERT_FALSE(model.ok());
  const std::string msg = model.status().message();
  EXPECT_NE(msg.find("mem://w2v"), std::string::npos) << msg;
  EXPECT_NE(msg.find("layers.3.attention.k_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("layers.0.feed_forward.output_dense.bias"), std::string::npos) << msg;
  EXPECT_NE(msg.find("quantizer.codevectors"), std::string::npos) << msg;

  // lm_head / masked_spec_embed are optional.
  auto minimal = RandomWeights(cfg, 7);
  minimal.erase("lm_head.weight");
  minimal.erase("lm_head.bias");
  minimal.erase("wav2vec2.masked_spec_embed");
  auto m2 = Wav2Vec2::FromStore(cfg, *io::MakeMemoryStore(minimal, "mem"));
  ASSERT_TRUE(m2.ok()) << m2.status().ToString();
  EXPECT_FALSE(m2->has_lm_head());
  EXPECT_EQ(m2->weights().count("wav2vec2.encoder.pos_conv_embed.conv.weight"), 1u);
}

TEST(Wav2Vec2Load, WeightNormIsCombinedPerKernelTapAndParametrizedKeysWork) {
  const Wav2Vec2Config cfg = Wav2Vec2TinyConfig();
  auto tensors = RandomWeights(cfg, 11);
  const std::string p = "wav2vec2.encoder.pos_conv_embed.conv.";
  tensors[p + "weight_g"] = at::rand({1, 1, cfg.num_conv_pos_embeddings}) + 0.5;
  auto model = Wav2Vec2::FromStore(cfg, *io::MakeMemoryStore(tensors, "mem"));
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const at::Tensor w = model->weights().at(p + "weight");
  const at::Tensor g = tensors[p + "weight_g"], v = tensors[p + "weight_v"];
  for (int64_t tap = 0; tap < cfg.num_conv_pos_embeddings; ++tap) {
    const at::Tensor vt = v.select(2, tap);
    const at::Tensor expect = g[0][0][tap] * vt / vt.norm();
    EXPECT_LT((w.select(2, tap) - expect).abs().max().item<double>(), 1e-6) << "tap " << tap;
  }
  // transformers >= 4.46 parametrization spelling.
  auto param = tensors;
  param[p + "parametrizations.weight.original0"] = param[p + "weight_g"];
  param[p + "parametrizations.weight.original1"] = param[p + "weight_v"];
  param.erase(p + "weight_g");
  param.erase(p + "weight_v");
  auto model2 = Wav2Vec2::FromStore(cfg, *io::MakeMemoryStore(param, "mem"));
  ASSERT_TRUE(model2.ok()) << model2.status().ToString();
  EXPECT_TRUE(at::equal(model2->weights().at(p + "weight"), w));
}

TEST(Wav2Vec2Forward, NormalizeWaveformIsZeroMeanUnitVariance) {
  const at::Tensor x = at::randn({5000}) * 0.3 + 0.1;
  const at::Tensor y = NormalizeWaveform(x);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{1, 5000}));
  EXPECT_NEAR(y.mean().item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(y.to(at::kDouble).pow(2).mean().item<double>(), 1.0, 1e-5);
  // Silence stays finite (the 1e-7 guard).
  EXPECT_TRUE(at::isfinite(NormalizeWaveform(at::zeros({800}))).all().item<bool>());
}

TEST(Wav2Vec2Forward, ChunkedEvaluationIsExact) {
  const Wav2Vec2Config cfg = Wav2Vec2TinyConfig();
  auto model = Wav2Vec2::FromStore(cfg, *io::MakeMemoryStore(RandomWeights(cfg, 3), "mem"));
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  at::manual_seed(5);
  const at::Tensor x = NormalizeWaveform(at::randn({16000 * 3 + 123}));
  const int64_t t = cfg.NumFrames(x.numel());
  const at::Tensor feats = model->FeatureEncoder(x);
  ASSERT_EQ(feats.size(1), t);
  for (int64_t chunk : {1, 7, 64, 1000}) {
    EXPECT_LT(RelL2(model->FeatureEncoder(x, chunk), feats), 1e-6) << "chunk " << chunk;  // fp32 rounding only
  }
  Wav2Vec2RunOptions run;
  run.compute_logits = true;
  const Wav2Vec2Output ref = model->Forward(x, run);
  ASSERT_EQ(ref.hidden_states.sizes(), (std::vector<int64_t>{25, t, 32}));
  ASSERT_EQ(ref.logits.sizes(), (std::vector<int64_t>{1, t, 33}));
  run.attention_query_chunk = 17;
  run.feature_chunk_frames = 40;
  const Wav2Vec2Output chunked = model->Forward(x, run);
  EXPECT_LT(RelL2(chunked.hidden_states, ref.hidden_states), 1e-6);
  EXPECT_LT(RelL2(chunked.logits, ref.logits), 1e-6);
}

TEST(Wav2Vec2Forward, Bf16WeightsStayCloseToFp32) {
  // The pipeline runs wav2vec2 in bf16 (upstream casts the model); LayerNorms compute in fp32 either way.
  const Wav2Vec2Config cfg = Wav2Vec2TinyConfig();
  const auto store = io::MakeMemoryStore(RandomWeights(cfg, 3), "mem");
  auto fp32 = Wav2Vec2::FromStore(cfg, *store);
  LoadOptions bf16_opts;
  bf16_opts.dtype = at::kBFloat16;
  auto bf16 = Wav2Vec2::FromStore(cfg, *store, bf16_opts);
  ASSERT_TRUE(fp32.ok() && bf16.ok());
  at::manual_seed(8);
  const at::Tensor x = NormalizeWaveform(at::randn({16000}));
  const at::Tensor a = fp32->Forward(x).hidden_states;
  const at::Tensor b = bf16->Forward(x).hidden_states;
  EXPECT_EQ(b.scalar_type(), at::kBFloat16);
  const double err = RelL2(b.to(at::kFloat), a);
  std::printf("[measured] bf16 vs fp32 hidden states rel L2 %.3g\n", err);
  EXPECT_LT(err, 5e-2);
}

TEST(Wav2Vec2Forward, EncodeRejectsTooShortAudio) {
  const Wav2Vec2Config cfg = Wav2Vec2TinyConfig();
  auto model = Wav2Vec2::FromStore(cfg, *io::MakeMemoryStore(RandomWeights(cfg, 3), "mem"));
  ASSERT_TRUE(model.ok());
  auto r = model->Encode(at::randn({399}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(model->Encode(at::randn({400})).ok());
  EXPECT_FALSE(model->Encode(at::randn({2, 1000})).ok());
}

TEST(Wav2Vec2Forward, SavedTinyCheckpointLoadsFromADirectory) {
  // What make-tiny writes: model.safetensors + config.json + preprocessor_config.json.
  const Wav2Vec2Config cfg = Wav2Vec2TinyConfig();
  const std::string dir = ::testing::TempDir() + "la_w2v_dir_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << Wav2Vec2ConfigToHfJson(cfg).dump(2);
  std::ofstream(dir + "/preprocessor_config.json") << Wav2Vec2PreprocessorToHfJson(cfg).dump(2);
  const auto tensors = RandomWeights(cfg, 9);
  ASSERT_TRUE(io::WriteSafetensors(dir + "/model.safetensors", AsList(tensors)).ok());
  auto model = Wav2Vec2::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_TRUE(model->has_lm_head());
  // The same weights as a torch.save pytorch_model.bin (the other file the HF repo ships).
  const std::string bin_dir = dir + "_bin";
  std::filesystem::create_directories(bin_dir);
  std::filesystem::copy_file(dir + "/config.json", bin_dir + "/config.json",
                             std::filesystem::copy_options::overwrite_existing);
  ASSERT_TRUE(io::WritePth(bin_dir + "/pytorch_model.bin", AsList(tensors)).ok());
  auto from_bin = Wav2Vec2::Load(bin_dir);  // no preprocessor_config.json: defaults
  ASSERT_TRUE(from_bin.ok()) << from_bin.status().ToString();
  const at::Tensor x = NormalizeWaveform(at::randn({4000}));
  EXPECT_TRUE(at::equal(model->Forward(x).hidden_states, from_bin->Forward(x).hidden_states));
  auto empty_dir = Wav2Vec2::Load(::testing::TempDir());
  ASSERT_FALSE(empty_dir.ok());
  EXPECT_NE(empty_dir.status().message().find("config.json"), std::string::npos) << empty_dir.status().ToString();
}

}  // namespace
}  // namespace liveavatar::models::audio
