// LoRA merge (PEFT layout) on the fixture weights; parity of a merged model is in dit_golden_test.cpp.
#include <filesystem>

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

}  // namespace
}  // namespace liveavatar::models
