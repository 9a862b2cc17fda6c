// models::MatchLora, the dry run of the LoRA merge (`liveavatar doctor`): pairs keys against base-weight shapes
// alone, and names every key that matches nothing, unpaired tensors and rank/shape mismatches.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/lora.h"

namespace liveavatar::models {
namespace {

TEST(LoraMatch, PairsFromShapesAloneAndNamesUnmatchedKeys) {
  const std::map<std::string, std::vector<int64_t>> base = {{"blocks.0.self_attn.q.weight", {8, 6}},
                                                            {"blocks.0.ffn.0.weight", {12, 6}}};
  std::map<std::string, at::Tensor> t;
  t["base_model.model.blocks.0.self_attn.q.lora_A.default.weight"] = at::zeros({2, 6});
  t["base_model.model.blocks.0.self_attn.q.lora_B.default.weight"] = at::zeros({8, 2});
  t["blocks.0.ffn.0.lora_A.weight"] = at::zeros({2, 6});
  t["blocks.0.ffn.0.lora_B.weight"] = at::zeros({12, 2});
  auto good = MatchLora(*io::MakeMemoryStore(t, "good"), base, /*rank=*/2);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  EXPECT_TRUE(good->errors.empty());
  ASSERT_EQ(good->pairs.size(), 2u);
  EXPECT_EQ(good->pairs.at("blocks.0.self_attn.q").first, "base_model.model.blocks.0.self_attn.q.lora_A.default.weight");
  EXPECT_EQ(good->pairs.at("blocks.0.ffn.0").second, "blocks.0.ffn.0.lora_B.weight");

  t["blocks.0.self_attn.nonexistent.lora_A.default.weight"] = at::zeros({2, 6});  // not a target
  t["blocks.9.self_attn.k.lora_A.default.weight"] = at::zeros({2, 6});            // no base weight
  t["blocks.0.self_attn.q.scale"] = at::zeros({1});                               // not a LoRA tensor
  auto bad = MatchLora(*io::MakeMemoryStore(t, "bad"), base, 2);
  ASSERT_TRUE(bad.ok());
  ASSERT_EQ(bad->errors.size(), 3u);
  std::string all;
  for (const auto& e : bad->errors) all += e + "\n";
  EXPECT_NE(all.find("blocks.0.self_attn.nonexistent.lora_A.default.weight (module \"blocks.0.self_attn.nonexistent\" "
                     "is not a LoRA target)"), std::string::npos) << all;
  EXPECT_NE(all.find("blocks.9.self_attn.k.lora_A.default.weight (no base weight"), std::string::npos) << all;
  EXPECT_NE(all.find("blocks.0.self_attn.q.scale (not a lora_A/lora_B weight)"), std::string::npos) << all;

  // Wrong rank: every pair is a shape mismatch.
  const std::map<std::string, at::Tensor> rank2 = {{"blocks.0.ffn.0.lora_A.weight", at::zeros({2, 6})},
                                                   {"blocks.0.ffn.0.lora_B.weight", at::zeros({12, 2})}};
  auto rank = MatchLora(*io::MakeMemoryStore(rank2, "r"), base, /*rank=*/4);
  ASSERT_TRUE(rank.ok());
  ASSERT_EQ(rank->errors.size(), 1u);
  EXPECT_NE(rank->errors[0].find("shape mismatch"), std::string::npos) << rank->errors[0];
}

}  // namespace
}  // namespace liveavatar::models
