// LoRA merge (PEFT layout) on the fixture weights; parity of a merged model is in dit_golden_test.cpp.
#include <cmath>
#include <filesystem>
#include <limits>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/dit/model.h"
#include "liveavatar/models/lora.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar::models {
namespace {

std::string LoraDir() { return (std::filesystem::path(testing::GoldenDir("dit")) / "lora").string(); }
std::string LoraFile() { return LoraDir() + "/liveavatar_lora_tiny.safetensors"; }

WeightMap FixtureWeights(dit::DitConfig* config) {
  auto ckpt = dit::LoadDitCheckpoint(testing::GoldenDir("dit"));
  if (!ckpt.ok()) throw StatusError(ckpt.status());
  *config = ckpt->config;
  return ckpt->weights;
}

TEST(DitLora, ReadsTrainingConfig) {
  auto c = LoadLoraTrainingConfig(LoraDir() + "/training_config_lora.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_GT(c->rank, 0);
  EXPECT_GT(c->alpha, 0);
  EXPECT_EQ(c->targets, DefaultLoraTargets());
  auto absent = LoadLoraTrainingConfig("/nonexistent/training_config_lora.json");
  ASSERT_FALSE(absent.ok());
  EXPECT_NE(absent.status().message().find("/nonexistent/training_config_lora.json"), std::string::npos);
}

TEST(DitLora, MergesEveryTargetModuleWithScaledProduct) {
  dit::DitConfig config;
  auto weights = FixtureWeights(&config);
  const auto before = weights;
  auto cfg = LoadLoraTrainingConfig(LoraDir() + "/training_config_lora.json");
  ASSERT_TRUE(cfg.ok());
  auto merged = MergeLoraFile(weights, LoraFile(), std::nullopt, std::nullopt);
  ASSERT_TRUE(merged.ok()) << merged.status().ToString();
  // q/k/v/o of self- and cross-attention, ffn.0, ffn.2 per block; q/k/v/o per audio injector.
  EXPECT_EQ(merged.value(), 10 * config.num_layers + 4 * config.num_audio_injectors());
  auto store = io::OpenTensorStore(LoraFile());
  ASSERT_TRUE(store.ok());
  const std::string m = "blocks.1.ffn.0";
  // The PEFT prefix is optional in the file.
  const std::string prefix = (*store)->Contains(m + ".lora_A.default.weight") ? "" : "base_model.model.";
  const std::string a_key = prefix + m + ".lora_A.default.weight";
  const std::string b_key = prefix + m + ".lora_B.default.weight";
  ASSERT_TRUE((*store)->Contains(a_key));
  auto a = (*store)->Get(a_key).value();
  auto b = (*store)->Get(b_key).value();
  auto expected = before.at(m + ".weight") + (cfg->alpha / cfg->rank) * at::matmul(b, a);
  EXPECT_TRUE(at::allclose(weights.at(m + ".weight"), expected, 1e-6, 1e-6));
  EXPECT_TRUE(at::equal(weights.at(m + ".bias"), before.at(m + ".bias")));        // biases unchanged
  EXPECT_TRUE(at::equal(weights.at("blocks.0.norm3.weight"), before.at("blocks.0.norm3.weight")));
}

TEST(DitLora, AcceptsKeysWithoutPrefixOrAdapterName) {
  WeightMap w{{"blocks.0.self_attn.q.weight", at::zeros({4, 3})}};
  auto a = at::ones({2, 3});
  auto b = at::ones({4, 2});
  auto store = io::MakeMemoryStore({{"blocks.0.self_attn.q.lora_A.weight", a},
                                    {"blocks.0.self_attn.q.lora_B.weight", b}}, "mem:lora");
  auto merged = MergeLora(w, *store, /*alpha=*/1.0, /*rank=*/2);
  ASSERT_TRUE(merged.ok()) << merged.status().ToString();
  EXPECT_EQ(merged.value(), 1);
  EXPECT_TRUE(at::allclose(w.at("blocks.0.self_attn.q.weight"), at::full({4, 3}, 1.0)));  // 0.5 · 2
}

TEST(DitLora, UnmatchedKeysAreListed) {
  WeightMap w{{"blocks.0.self_attn.q.weight", at::zeros({4, 3})}, {"blocks.0.norm3.weight", at::zeros({3})}};
  auto store = io::MakeMemoryStore(
      {{"base_model.model.blocks.0.self_attn.q.lora_A.default.weight", at::ones({2, 3})},
       {"base_model.model.blocks.0.self_attn.q.lora_B.default.weight", at::ones({4, 2})},
       {"base_model.model.blocks.0.norm3.lora_A.default.weight", at::ones({2, 3})},
       {"base_model.model.blocks.9.self_attn.k.lora_A.default.weight", at::ones({2, 3})},
       {"base_model.model.blocks.0.self_attn.q.magnitude", at::ones({4})}},
      "mem:lora");
  const auto before = w.at("blocks.0.self_attn.q.weight").clone();
  auto merged = MergeLora(w, *store, 1.0, 2);
  ASSERT_FALSE(merged.ok());
  const auto& msg = merged.status().message();
  EXPECT_NE(msg.find("blocks.0.norm3.lora_A.default.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("blocks.9.self_attn.k.lora_A.default.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("blocks.0.self_attn.q.magnitude"), std::string::npos) << msg;
  EXPECT_TRUE(at::equal(w.at("blocks.0.self_attn.q.weight"), before));  // nothing merged on error
}

TEST(DitLora, RankMismatchAndUnpairedAreErrors) {
  WeightMap w{{"x.q.weight", at::zeros({4, 3})}, {"x.k.weight", at::zeros({4, 3})}};
  auto store = io::MakeMemoryStore({{"x.q.lora_A.default.weight", at::ones({2, 3})},
                                    {"x.q.lora_B.default.weight", at::ones({4, 2})},
                                    {"x.k.lora_A.default.weight", at::ones({2, 3})}},
                                   "mem:lora");
  auto wrong_rank = MergeLora(w, *store, 1.0, 4);
  ASSERT_FALSE(wrong_rank.ok());
  EXPECT_NE(wrong_rank.status().message().find("x.q"), std::string::npos);
  EXPECT_NE(wrong_rank.status().message().find("x.k.lora_A.default.weight"), std::string::npos);
}


// The streaming load (LoraApplier applied to each weight as it leaves the file) gives the weights that loading
// the raw checkpoint and merging the LoRA afterwards gives, with each key in its model dtype.
TEST(DitLora, StreamingLoadMergesAsTheTwoStepPath) {
  dit::DitConfig config;
  WeightMap merged = FixtureWeights(&config);
  ASSERT_TRUE(MergeLoraFile(merged, LoraFile(), std::nullopt, std::nullopt).ok());
  auto applier = LoraApplier::Open(LoraFile(), dit::DitBaseShapes(config), std::nullopt, std::nullopt);
  ASSERT_TRUE(applier.ok()) << applier.status().ToString();
  EXPECT_EQ(applier->pairs(), 10 * config.num_layers + 4 * config.num_audio_injectors());
  for (c10::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    dit::DitLoadOptions o;
    o.dtype = dtype;
    o.lora = &*applier;
    auto streamed = dit::LoadDitCheckpoint(testing::GoldenDir("dit"), o);
    ASSERT_TRUE(streamed.ok()) << streamed.status().ToString();
    ASSERT_EQ(streamed->weights.size(), merged.size());
    for (const auto& [key, w] : merged) {
      const at::Tensor& got = streamed->weights.at(key);
      ASSERT_EQ(got.scalar_type(), dit::CausalWanS2V::WeightDtype(key, dtype)) << key;
      const at::Tensor want = w.to(got.scalar_type()).to(at::kFloat);
      // fp32: the same fp32 sum up to GEMM summation order; bf16: that sum rounded once (a last-bit tie at most).
      const double tol = got.scalar_type() == at::kFloat ? 1e-6 : 1e-2;
      EXPECT_LE((got.to(at::kFloat) - want).abs().max().item<double>(), tol * (want.abs().max().item<double>() + 1e-12))
          << key;
    }
  }
}

TEST(DitLora, RefusesANonFiniteOrAbsurdAlpha) {
  dit::DitConfig config;
  FixtureWeights(&config);
  auto store = io::OpenTensorStore(LoraFile());
  ASSERT_TRUE(store.ok());
  for (double alpha : {1e300, -1.0, std::nan("")}) {
    auto a = LoraApplier::Create(*store, dit::DitBaseShapes(config), alpha, 4);
    ASSERT_FALSE(a.ok()) << alpha;
    EXPECT_NE(a.status().message().find("alpha"), std::string::npos) << a.status().message();
  }
}

// A weight with a NaN or an Inf stops the load, naming the file and the key.
TEST(LoadWeightsFinite, NonFiniteTensorIsRefusedNamingTheKey) {
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    at::Tensor t = at::ones({3, 4});
    t[1][2] = bad;
    auto store = io::MakeMemoryStore({{"ok.weight", at::ones({2})}, {"bad.weight", t}}, "mem-ckpt.safetensors");
    std::vector<WeightSpec> specs = {{"ok.weight", {2}}, {"bad.weight", {3, 4}}};
    auto w = LoadWeights(*store, specs, LoadOptions{});
    ASSERT_FALSE(w.ok());
    EXPECT_NE(w.status().message().find("mem-ckpt.safetensors"), std::string::npos) << w.status().message();
    EXPECT_NE(w.status().message().find("'bad.weight'"), std::string::npos) << w.status().message();
    EXPECT_NE(w.status().message().find(std::isnan(bad) ? "NaN" : "infinite"), std::string::npos);
  }
  auto fine = io::MakeMemoryStore({{"ok.weight", at::ones({2})}}, "mem");
  EXPECT_TRUE(LoadWeights(*fine, {{"ok.weight", {2}}}, LoadOptions{}).ok());
}

}  // namespace
}  // namespace liveavatar::models
