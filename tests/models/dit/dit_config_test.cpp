// DitConfig parsing and the checkpoint key list (no parity; suites must not be named Golden*).
#include <filesystem>
#include <fstream>
#include <set>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/dit/weights.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar::models::dit {
namespace {

std::string FixtureConfigPath() {
  return (std::filesystem::path(testing::GoldenDir("dit")) / "config.json").string();
}

nlohmann::json Config14B() {
  DitConfig c;  // defaults = Wan2.2-S2V-14B
  return c.ToJson();
}

TEST(DitConfig, ParsesFixtureConfigAndDerives) {
  auto c = LoadDitConfig(FixtureConfigPath());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->head_dim(), c->dim / c->num_heads);
  EXPECT_EQ(c->num_audio_injectors(), static_cast<int64_t>(c->audio_inject_layers.size()));
  EXPECT_EQ(c->class_name, "CausalWanModel_S2V");
  for (size_t j = 0; j < c->audio_inject_layers.size(); ++j) {
    EXPECT_EQ(c->InjectorIndex(c->audio_inject_layers[j]), static_cast<int64_t>(j));
  }
}

TEST(DitConfig, RoundTripsThroughJson) {
  auto c = LoadDitConfig(FixtureConfigPath());
  ASSERT_TRUE(c.ok());
  auto again = DitConfigFromJson(c->ToJson(), "roundtrip");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->ToJson(), c->ToJson());
}

TEST(DitConfig, ErrorsNameFileAndField) {
  auto j = Config14B();
  j.erase("num_heads");
  auto missing = DitConfigFromJson(j, "/x/config.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/x/config.json"), std::string::npos);
  EXPECT_NE(missing.status().message().find("num_heads"), std::string::npos);
  j = Config14B();
  j["dim"] = "big";
  auto wrong_type = DitConfigFromJson(j, "/x/config.json");
  ASSERT_FALSE(wrong_type.ok());
  EXPECT_NE(wrong_type.status().message().find("\"dim\""), std::string::npos);
  j = Config14B();
  j["audio_inject_layers"] = {0, 40};
  auto out_of_range = DitConfigFromJson(j, "/x/config.json");
  ASSERT_FALSE(out_of_range.ok());
  EXPECT_NE(out_of_range.status().message().find("audio_inject_layers"), std::string::npos);
  auto absent = LoadDitConfig("/nonexistent/config.json");
  ASSERT_FALSE(absent.ok());
  EXPECT_NE(absent.status().message().find("/nonexistent/config.json"), std::string::npos);
}

TEST(DitWeights, Real14BCheckpointHas1260Tensors) {
  auto c = DitConfigFromJson(Config14B(), "14B");
  ASSERT_TRUE(c.ok());
  const auto specs = DitWeightSpecs(*c);
  EXPECT_EQ(specs.size(), 1260u);
  EXPECT_EQ(DitWeightCount(*c), 1260);
  std::set<std::string> keys;
  for (const auto& s : specs) keys.insert(s.key);
  EXPECT_EQ(keys.size(), specs.size()) << "duplicate keys";
  // Spot checks of the documented 14B shapes (upstream spec §4.1).
  auto shape = [&](const std::string& key) {
    for (const auto& s : specs)
      if (s.key == key) return s.shape;
    return std::vector<int64_t>{};
  };
  EXPECT_EQ(shape("casual_audio_encoder.encoder.conv1_local.conv.weight"), (std::vector<int64_t>{5120, 1024, 3}));
  EXPECT_EQ(shape("casual_audio_encoder.encoder.conv1_global.conv.weight"), (std::vector<int64_t>{1280, 1024, 3}));
  EXPECT_EQ(shape("casual_audio_encoder.encoder.conv2.conv.weight"), (std::vector<int64_t>{2560, 1280, 3}));
  EXPECT_EQ(shape("audio_injector.injector_adain_layers.11.linear.weight"), (std::vector<int64_t>{10240, 5120}));
  EXPECT_EQ(shape("time_projection.1.weight"), (std::vector<int64_t>{30720, 5120}));
  EXPECT_EQ(shape("blocks.39.ffn.2.weight"), (std::vector<int64_t>{5120, 13824}));
  EXPECT_EQ(shape("head.head.weight"), (std::vector<int64_t>{64, 5120}));
  EXPECT_EQ(shape("frame_packer.proj_4x.weight"), (std::vector<int64_t>{5120, 16, 4, 8, 8}));
}

// Fixture weights bound strictly; an absent or extra key fails with the key named.
class DitStrictLoad : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = LoadDitConfig(FixtureConfigPath());
    ASSERT_TRUE(c.ok());
    config_ = *c;
    auto store = io::OpenTensorStore(
        (std::filesystem::path(testing::GoldenDir("dit")) / "diffusion_pytorch_model.safetensors").string());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = *store;
    for (const auto& k : store_->Keys()) tensors_[k] = store_->Get(k).value();
  }
  DitConfig config_;
  std::shared_ptr<io::TensorStore> store_;
  std::map<std::string, at::Tensor> tensors_;
};

TEST_F(DitStrictLoad, FixtureWeightsBindKeyForKey) {
  EXPECT_EQ(static_cast<int64_t>(tensors_.size()), DitWeightCount(config_));
  auto w = LoadWeights(*store_, DitWeightSpecs(config_), LoadOptions());
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(static_cast<int64_t>(w->size()), DitWeightCount(config_));
}

TEST_F(DitStrictLoad, MissingKeyIsNamed) {
  auto t = tensors_;
  t.erase("blocks.1.cross_attn.norm_k.weight");
  t.erase("casual_audio_encoder.encoder.padding_tokens");
  auto w = LoadWeights(*io::MakeMemoryStore(t, "mem:dit"), DitWeightSpecs(config_), LoadOptions());
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("blocks.1.cross_attn.norm_k.weight"), std::string::npos);
  EXPECT_NE(w.status().message().find("casual_audio_encoder.encoder.padding_tokens"), std::string::npos);
  EXPECT_NE(w.status().message().find("mem:dit"), std::string::npos);
}

TEST_F(DitStrictLoad, ExtraKeyIsNamed) {
  auto t = tensors_;
  t["blocks.0.self_attn.extra.weight"] = at::zeros({2});
  auto w = LoadWeights(*io::MakeMemoryStore(t, "mem:dit"), DitWeightSpecs(config_), LoadOptions());
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("blocks.0.self_attn.extra.weight"), std::string::npos);
}

TEST_F(DitStrictLoad, ShapeMismatchIsNamed) {
  auto t = tensors_;
  t["head.modulation"] = at::zeros({1, 3, config_.dim});
  auto w = LoadWeights(*io::MakeMemoryStore(t, "mem:dit"), DitWeightSpecs(config_), LoadOptions());
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("head.modulation"), std::string::npos);
}

}  // namespace
}  // namespace liveavatar::models::dit
