// DitStepCache and ring planning (golden README §1.7 semantics, no fixtures).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/runtime/kv_cache.h"

namespace liveavatar::runtime {
namespace {

TEST(KvCacheRing, WritePositionAndActiveRangeBeforeWrap) {
  const int64_t fs = 16, block = 3 * fs, ring = 12 * fs;
  for (int64_t b = 0; b < 4; ++b) {
    const auto plan = PlanRing(b * block, block, ring);
    EXPECT_EQ(plan.write_pos, b * block);
    EXPECT_EQ(plan.active_end, (b + 1) * block);  // block b sees blocks 0..b
    EXPECT_FALSE(plan.wrapped);
  }
}

TEST(KvCacheRing, WrappedRingIsFullyActive) {
  const int64_t fs = 16, block = 3 * fs, ring = 12 * fs;
  for (int64_t clip = 1; clip < 4; ++clip) {
    for (int64_t b = 0; b < 4; ++b) {
      const int64_t start = (12 * clip + 3 * b) * fs;
      const auto plan = PlanRing(start, block, ring);
      EXPECT_EQ(plan.write_pos, b * block);
      EXPECT_EQ(plan.active_end, ring);
      EXPECT_TRUE(plan.wrapped);
    }
  }
}

TEST(KvCacheRing, RejectsMisalignedBlock) {
  EXPECT_THROW(PlanRing(40, 48, 64), c10::Error);
  EXPECT_THROW(PlanRing(-1, 48, 192), c10::Error);
}

TEST(KvCacheSizes, ComputedFromResolutionAndFrames) {
  EXPECT_EQ(LatentFramesPerClip(48, 73, 19), 12);
  // 8x8 latent, patch 2: fs 16, post 16, 2x 4, 4x 4 -> 40 = 2.5 fs.
  EXPECT_EQ(SinkTokenCount(8, 8, 2, 2), 40);
  // 384x704 video -> 48x88 latent: fs 1056, sink 2640 (upstream's 2.5·fs).
  EXPECT_EQ(SinkTokenCount(48, 88, 2, 2), 2640);
}

TEST(KvCacheStep, WritesRingAndCond) {
  DitCacheGeometry g;
  g.num_layers = 2;
  g.num_heads = 2;
  g.head_dim = 4;
  g.frame_seqlen = 2;
  g.ring_tokens = 8;
  g.cond_capacity = 6;
  DitStepCache cache(g, at::TensorOptions().dtype(at::kFloat));
  EXPECT_EQ(cache.layer(1).k.sizes(), (std::vector<int64_t>{1, 8, 2, 4}));
  EXPECT_EQ(cache.layer(1).cond_k.sizes(), (std::vector<int64_t>{1, 6, 2, 4}));
  auto k = at::ones({1, 4, 2, 4});
  auto plan = PlanRing(12, 4, 8);  // wrapped: rows [4, 8)
  cache.WriteRing(1, plan, k, 2 * k);
  EXPECT_EQ(cache.layer(1).k.narrow(1, 0, 4).abs().sum().item<float>(), 0.f);
  EXPECT_EQ(cache.layer(1).k.narrow(1, 4, 4).sum().item<float>(), 32.f);
  EXPECT_EQ(cache.layer(1).v.narrow(1, 4, 4).sum().item<float>(), 64.f);
  EXPECT_EQ(cache.layer(0).k.abs().sum().item<float>(), 0.f);
  cache.WriteCond(0, at::ones({1, 5, 2, 4}), at::ones({1, 5, 2, 4}));
  EXPECT_EQ(cache.layer(0).cond_end, 5);
  cache.WriteCond(0, at::ones({1, 3, 2, 4}), at::ones({1, 3, 2, 4}));
  EXPECT_EQ(cache.layer(0).cond_end, 5);  // max(cond_end, n)
  EXPECT_THROW(cache.WriteCond(0, at::ones({1, 7, 2, 4}), at::ones({1, 7, 2, 4})), c10::Error);
  cache.Reset();
  EXPECT_EQ(cache.layer(0).cond_end, 0);
  EXPECT_EQ(cache.layer(1).k.abs().sum().item<float>(), 0.f);
}

}  // namespace
}  // namespace liveavatar::runtime
