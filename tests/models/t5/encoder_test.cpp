// umT5 encoder: golden parity over every t5_encoder case, plus config/spec/mask/dtype behaviour.
#include "liveavatar/models/t5/encoder.h"

#include <fstream>
#include <iostream>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/attention.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar::models::t5 {
namespace {

using liveavatar::testing::GoldenCase;
using liveavatar::testing::GoldenDir;
using liveavatar::testing::RelL2Within;

constexpr double kTol = 1e-4;

std::string FixtureConfig() { return GoldenDir("t5") + "/config.json"; }
std::string FixtureWeights(const std::string& ext) { return GoldenDir("t5") + "/models_t5_umt5-xxl-enc-bf16." + ext; }

T5Encoder LoadFixtureEncoder(const std::string& ext, c10::ScalarType dtype = at::kFloat) {
  auto config = T5Config::FromJsonFile(FixtureConfig());
  if (!config.ok()) throw StatusError(config.status());
  LoadOptions options;
  options.dtype = dtype;
  auto enc = T5Encoder::Load(FixtureWeights(ext), config.value(), options);
  if (!enc.ok()) throw StatusError(enc.status());
  return std::move(enc).value();
}

void CheckCase(const GoldenCase& c, const T5Encoder& enc) {
  const auto ids = c.Get("in.ids");
  const auto mask = c.Get("in.mask");
  if (c.Has("dbg.rel_pos_bucket")) {
    const auto ref = c.Get("dbg.rel_pos_bucket");
    const auto got = RelativePositionBuckets(ref.size(0), ref.size(1), enc.config().num_buckets,
                                             enc.config().max_dist);
    EXPECT_TRUE(at::equal(got, ref)) << c.name() << ": dbg.rel_pos_bucket differs";
  }
  const auto hidden = enc.Encode(ids, mask);
  EXPECT_TRUE(RelL2Within(hidden, c.Get("out.hidden"), kTol, c.name() + " out.hidden"));
  std::cout << c.name() << " out.hidden rel L2 " << liveavatar::testing::RelL2(hidden, c.Get("out.hidden")) << "\n";
  // Every expected output is checked below.
  for (const auto& key : c.Keys("out.")) {
    EXPECT_TRUE(key == "out.hidden" || key.rfind("out.context.", 0) == 0) << c.name() << ": unhandled " << key;
  }
  EXPECT_EQ(static_cast<int64_t>(c.Keys("out.context.").size()), ids.size(0));
  const auto contexts = enc.EncodeTrimmed(ids, mask);
  ASSERT_EQ(static_cast<int64_t>(contexts.size()), ids.size(0));
  for (size_t b = 0; b < contexts.size(); ++b) {
    const std::string key = "out.context." + std::to_string(b);
    ASSERT_TRUE(c.Has(key)) << c.name() << " lacks " << key;
    EXPECT_TRUE(RelL2Within(contexts[b], c.Get(key), kTol, c.name() + " " + key));
    if (contexts[b].sizes() == c.Get(key).sizes()) {
      std::cout << c.name() << " " << key << " rel L2 " << liveavatar::testing::RelL2(contexts[b], c.Get(key)) << "\n";
    }
  }
}

class GoldenT5 : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenT5, Encoder) {
  GoldenCase c(GetParam());
  ASSERT_EQ(c.kind(), "t5_encoder");
  CheckCase(c, LoadFixtureEncoder("safetensors"));
}

// The production checkpoint format: the bf16 torch.save state dict (values equal to the F32 copy).
TEST_P(GoldenT5, EncoderFromPth) {
  GoldenCase c(GetParam());
  auto store = io::OpenTensorStore(FixtureWeights("pth"));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  CheckCase(c, LoadFixtureEncoder("pth"));
}

LA_GOLDEN_CASES(GoldenT5, "t5", {"t5_encoder"});

TEST(T5Config, DefaultsAreUmt5Xxl) {
  T5Config c;
  EXPECT_EQ(c.vocab, 256384);
  EXPECT_EQ(c.dim, 4096);
  EXPECT_EQ(c.dim_attn, 4096);
  EXPECT_EQ(c.dim_ffn, 10240);
  EXPECT_EQ(c.num_heads, 64);
  EXPECT_EQ(c.num_layers, 24);
  EXPECT_EQ(c.num_buckets, 32);
  EXPECT_FALSE(c.shared_pos);
  EXPECT_EQ(c.head_dim(), 64);
  auto parsed = T5Config::FromJsonText("{}", "empty");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->dim_ffn, 10240);
}

TEST(T5Config, ParsesFixtureConfig) {
  auto c = T5Config::FromJsonFile(FixtureConfig());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_GT(c->vocab, 0);
  EXPECT_EQ(c->dim_attn % c->num_heads, 0);
}

TEST(T5Config, RejectsBadValuesNamingSourceAndKey) {
  auto bad_type = T5Config::FromJsonText(R"({"dim": "big"})", "cfg.json");
  ASSERT_FALSE(bad_type.ok());
  EXPECT_NE(bad_type.status().message().find("cfg.json"), std::string::npos);
  EXPECT_NE(bad_type.status().message().find("\"dim\""), std::string::npos);
  auto bad_heads = T5Config::FromJsonText(R"({"dim_attn": 30, "num_heads": 4})", "cfg.json");
  ASSERT_FALSE(bad_heads.ok());
  EXPECT_NE(bad_heads.status().message().find("num_heads"), std::string::npos);
  EXPECT_FALSE(T5Config::FromJsonText("not json", "cfg.json").ok());
  auto missing = T5Config::FromJsonFile("/nonexistent/t5_config.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/t5_config.json"), std::string::npos);
}

TEST(T5WeightSpecs, RealKeysAndShapes) {
  const auto specs = T5WeightSpecs(T5Config{});
  EXPECT_EQ(specs.size(), 1u + 24u * 10u + 1u);
  std::map<std::string, std::vector<int64_t>> by_key;
  for (const auto& s : specs) by_key[s.key] = s.shape;
  EXPECT_EQ(by_key.at("token_embedding.weight"), (std::vector<int64_t>{256384, 4096}));
  EXPECT_EQ(by_key.at("norm.weight"), (std::vector<int64_t>{4096}));
  EXPECT_EQ(by_key.at("blocks.23.attn.o.weight"), (std::vector<int64_t>{4096, 4096}));
  EXPECT_EQ(by_key.at("blocks.0.ffn.gate.0.weight"), (std::vector<int64_t>{10240, 4096}));
  EXPECT_EQ(by_key.at("blocks.0.ffn.fc2.weight"), (std::vector<int64_t>{4096, 10240}));
  EXPECT_EQ(by_key.at("blocks.7.pos_embedding.embedding.weight"), (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(by_key.at("blocks.7.norm2.weight"), (std::vector<int64_t>{4096}));
}

TEST(T5WeightSpecs, MatchFixtureCheckpointExactly) {
  // Strict loading: every key of the fixture file is consumed and nothing is missing.
  auto config = T5Config::FromJsonFile(FixtureConfig()).value();
  auto store = io::OpenTensorStore(FixtureWeights("safetensors")).value();
  auto weights = LoadWeights(*store, T5WeightSpecs(config), {});
  ASSERT_TRUE(weights.ok()) << weights.status().ToString();
  // A config that disagrees with the file is rejected, naming a key.
  config.dim_ffn += 1;
  auto wrong = T5Encoder::Load(FixtureWeights("safetensors"), config);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("ffn"), std::string::npos) << wrong.status().ToString();
}

TEST(T5RelativePositionBuckets, SymmetryAndRange) {
  const auto b = RelativePositionBuckets(300, 300, 32, 128);
  EXPECT_EQ(b.min().item<int64_t>(), 0);
  EXPECT_EQ(b.max().item<int64_t>(), 31);
  EXPECT_EQ(b[5][5].item<int64_t>(), 0);
  EXPECT_EQ(b[5][6].item<int64_t>(), 17);  // r = +1: upper half
  EXPECT_EQ(b[6][5].item<int64_t>(), 1);   // r = -1
  EXPECT_EQ(b[0][7].item<int64_t>(), 16 + 7);
  EXPECT_EQ(b[0][299].item<int64_t>(), 31);  // far: saturates
  EXPECT_EQ(b[299][0].item<int64_t>(), 15);
  // Depends only on key - query.
  EXPECT_TRUE(at::equal(b.narrow(0, 1, 299).narrow(1, 1, 299), b.narrow(0, 0, 299).narrow(1, 0, 299)));
}

class T5EncoderBehaviour : public ::testing::Test {
 protected:
  void SetUp() override {
    enc_ = std::make_unique<T5Encoder>(LoadFixtureEncoder("safetensors"));
    const auto& c = enc_->config();
    at::manual_seed(7);
    ids_ = at::randint(3, c.vocab, {2, 20}, at::kLong);
    mask_ = at::ones({2, 20}, at::kLong);
    mask_[0].narrow(0, 9, 11).zero_();
    ids_[0].narrow(0, 9, 11).zero_();
  }
  std::unique_ptr<T5Encoder> enc_;
  at::Tensor ids_, mask_;
};

TEST_F(T5EncoderBehaviour, PaddedKeysDoNotChangeValidRows) {
  const auto base = enc_->Encode(ids_, mask_);
  auto ids2 = ids_.clone();
  ids2[0].narrow(0, 9, 11).fill_(5);  // different tokens behind the mask
  const auto other = enc_->Encode(ids2, mask_);
  EXPECT_TRUE(at::allclose(base[0].narrow(0, 0, 9), other[0].narrow(0, 0, 9), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(base[1], other[1], 1e-6, 1e-7));
  // Trimming keeps the mask length.
  const auto trimmed = enc_->EncodeTrimmed(ids_, mask_);
  ASSERT_EQ(trimmed.size(), 2u);
  EXPECT_EQ(trimmed[0].size(0), 9);
  EXPECT_EQ(trimmed[1].size(0), 20);
  EXPECT_TRUE(at::equal(trimmed[0], base[0].narrow(0, 0, 9)));
  // A batch of one gives the same rows as inside the batch.
  const auto single = enc_->Encode(ids_.narrow(0, 1, 1), mask_.narrow(0, 1, 1));
  EXPECT_TRUE(at::allclose(single[0], base[1], 1e-5, 1e-6));
}

TEST_F(T5EncoderBehaviour, Bfloat16TracksFloat32) {
  const auto ref = enc_->Encode(ids_, mask_);
  const auto bf16 = LoadFixtureEncoder("safetensors", at::kBFloat16);
  const auto out = bf16.Encode(ids_, mask_);
  EXPECT_EQ(out.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(RelL2Within(out.to(at::kFloat), ref, 3e-2, "bf16 vs fp32 hidden"));
}

TEST(T5EncoderFromWeights, MissingOrMisshapenWeightIsAnError) {
  T5Config c;
  c.vocab = 10, c.dim = 8, c.dim_attn = 8, c.dim_ffn = 12, c.num_heads = 2, c.num_layers = 1;
  WeightMap w;
  for (const auto& s : T5WeightSpecs(c)) w[s.key] = at::randn(s.shape);
  EXPECT_TRUE(T5Encoder::FromWeights(w, c).ok());
  auto missing = w;
  missing.erase("blocks.0.attn.k.weight");
  auto st = T5Encoder::FromWeights(missing, c);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.status().message().find("blocks.0.attn.k.weight"), std::string::npos);
  auto misshapen = w;
  misshapen["norm.weight"] = at::ones({9});
  st = T5Encoder::FromWeights(misshapen, c);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.status().message().find("norm.weight"), std::string::npos);
}

TEST(T5AttentionBias, MatchesExplicitSoftmax) {
  at::manual_seed(3);
  auto q = at::randn({2, 5, 3, 4}), k = at::randn({2, 6, 3, 4}), v = at::randn({2, 6, 3, 4});
  auto bias = at::randn({1, 3, 5, 6});
  auto out = models::Attention(q, k, v, bias, 1.0);
  auto logits = at::matmul(q.transpose(1, 2), k.transpose(1, 2).transpose(-2, -1)) + bias;
  auto ref = at::matmul(at::softmax(logits, -1), v.transpose(1, 2)).transpose(1, 2);
  EXPECT_TRUE(at::allclose(out, ref, 1e-5, 1e-6));
  // Default scale 1/sqrt(D), and a zero bias equals the bias-free entry point.
  EXPECT_TRUE(at::allclose(models::Attention(q, k, v, at::zeros({1}), std::nullopt), models::Attention(q, k, v),
                           1e-6, 1e-7));
}

}  // namespace
}  // namespace liveavatar::models::t5
