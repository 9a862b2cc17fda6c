// Block hooks and the pluggable attention of CausalWanS2V (fixture weights, no parity).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/models/attention.h"
#include "liveavatar/models/dit/model.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar::models::dit {
namespace {

TEST(DitModel, HooksWrapEveryBlockAndAttentionIsPluggable) {
  auto ckpt = LoadDitCheckpoint(testing::GoldenDir("dit"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  auto model = CausalWanS2V::Create(ckpt->config, ckpt->weights, at::kFloat, c10::Device(c10::kCPU));
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const auto& c = model->config();
  const int64_t h = 8, w = 8;
  const auto geometry = model->CacheGeometry(h, w, 12);
  EXPECT_EQ(geometry.cond_capacity, runtime::SinkTokenCount(h, w, 2, 2));
  runtime::DitStepCache cache_a(geometry, at::TensorOptions().dtype(at::kFloat));
  runtime::DitStepCache cache_b(geometry, at::TensorOptions().dtype(at::kFloat));
  at::manual_seed(0);
  SinkInputs sink{at::randn({1, c.in_dim, 1, h, w}), at::randn({1, c.in_dim, 19, h, w}), at::randn({5, c.text_dim})};
  StreamInputs in;
  in.x = at::randn({c.in_dim, 3, h, w});
  in.timestep = at::full({1, 3}, 500.0);
  in.context = sink.context;
  in.audio_input = at::randn({1, 25, c.audio_dim, 12});
  in.current_start = 0;
  in.relative_dist = 10;
  model->SinkPrefill(sink, cache_a);
  EXPECT_EQ(cache_a.layer(0).cond_end, geometry.cond_capacity);
  auto ref = model->StreamBlock(in, cache_a);

  std::vector<int64_t> order;
  int attention_calls = 0;
  model->set_block_hooks({[&](int64_t i) { order.push_back(i); }, [&](int64_t i) { order.push_back(-1 - i); }});
  model->set_attention([&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    ++attention_calls;
    return Attention(q, k, v);
  });
  model->SinkPrefill(sink, cache_b);
  order.clear();
  attention_calls = 0;
  auto out = model->StreamBlock(in, cache_b);
  ASSERT_EQ(static_cast<int64_t>(order.size()), 2 * c.num_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    EXPECT_EQ(order[2 * i], i);
    EXPECT_EQ(order[2 * i + 1], -1 - i);
  }
  // self + text cross attention per block, plus one per audio injector.
  EXPECT_EQ(attention_calls, 2 * c.num_layers + c.num_audio_injectors());
  EXPECT_TRUE(at::equal(out, ref));
  EXPECT_TRUE(at::equal(cache_a.layer(c.num_layers - 1).k, cache_b.layer(c.num_layers - 1).k));
}

TEST(DitModel, CreateRejectsIncompleteWeights) {
  auto ckpt = LoadDitCheckpoint(testing::GoldenDir("dit"));
  ASSERT_TRUE(ckpt.ok());
  auto weights = ckpt->weights;
  weights.erase("head.modulation");
  auto model = CausalWanS2V::Create(ckpt->config, weights, at::kFloat, c10::Device(c10::kCPU));
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("head.modulation"), std::string::npos);
}

}  // namespace
}  // namespace liveavatar::models::dit
