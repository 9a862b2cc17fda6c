// 3-D RoPE positions and factors (golden README §1.4 semantics; no fixtures).
#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/models/dit/rope.h"
#include "liveavatar/runtime/kv_cache.h"

namespace liveavatar::models::dit {
namespace {

using V = std::vector<int64_t>;

TEST(DitRope, LinspaceTruncatesLikeNumpy) {
  EXPECT_EQ(LinspaceInt(0, 3, 2), (V{0, 3}));
  EXPECT_EQ(LinspaceInt(0, 7, 4), (V{0, 2, 4, 7}));
  EXPECT_EQ(LinspaceInt(0, 3, 1), (V{0}));
  EXPECT_EQ(LinspaceInt(19, 4, 4), (V{19, 14, 9, 4}));
  EXPECT_TRUE(LinspaceInt(0, 3, 0).empty());
}

TEST(DitRope, NegativeStartsGiveNegativePositions) {
  EXPECT_EQ(RopeAxisPositions(-19, 4, 16), (V{-19, -14, -9, -4}));  // FramePack 4x frames
  EXPECT_EQ(RopeAxisPositions(-3, 1, 2), (V{-3}));                   // 2x frame
  EXPECT_EQ(RopeAxisPositions(-1, 1, 1), (V{-1}));                   // post frame
  EXPECT_EQ(RopeAxisPositions(5, 3, 3), (V{5, 6, 7}));
}

TEST(DitRope, SinkGroupsForA4x4Grid) {
  auto g = SinkRopeGroups(30, 4, 4, 2, 2, 1, 1);
  ASSERT_EQ(g.size(), 4u);
  EXPECT_EQ(g[0].frames, (V{30}));
  EXPECT_EQ(g[0].size(), 16);
  EXPECT_EQ(g[1].frames, (V{-1}));
  EXPECT_EQ(g[2].frames, (V{-3}));
  EXPECT_EQ(g[2].rows, (V{0, 3}));
  EXPECT_EQ(g[3].frames, (V{-19, -14, -9, -4}));
  EXPECT_EQ(g[3].rows, (V{0}));
  int64_t total = 0;
  for (const auto& x : g) total += x.size();
  EXPECT_EQ(total, runtime::SinkTokenCount(8, 8, 2, 2));
}

TEST(DitRope, NegativePositionIsConjugate) {
  RopeGroup pos{{7}, {2}, {3}};
  RopeGroup neg{{-7}, {2}, {3}};
  auto fp = ComputeRopeFactors({pos}, 32, c10::Device(c10::kCPU));
  auto fn = ComputeRopeFactors({neg}, 32, c10::Device(c10::kCPU));
  // Frame pairs [0, 6): conjugate; row/column pairs unchanged.
  EXPECT_TRUE(at::equal(fp.cos, fn.cos));
  EXPECT_TRUE(at::equal(fp.sin.narrow(1, 0, 6), -fn.sin.narrow(1, 0, 6)));
  EXPECT_TRUE(at::equal(fp.sin.narrow(1, 6, 10), fn.sin.narrow(1, 6, 10)));
}

TEST(DitRope, FactorsAreFp16RoundedAndSplitPerAxis) {
  RopeGroup g{{3}, {1}, {2}};
  auto f = ComputeRopeFactors({g}, 32, c10::Device(c10::kCPU));
  EXPECT_TRUE(at::equal(f.cos, f.cos.to(at::kHalf).to(at::kDouble)));
  EXPECT_TRUE(at::equal(f.sin, f.sin.to(at::kHalf).to(at::kDouble)));
  // Pair 1 of the frame axis (d_a = 12): angle 3 · 10000^(−2/12).
  const double angle = 3.0 * std::pow(10000.0, -2.0 / 12.0);
  EXPECT_NEAR(f.cos[0][1].item<double>(), std::cos(angle), 1e-3);
  // Pair 0 of the column axis (index 6 + 5 = 11): angle 2.
  EXPECT_NEAR(f.sin[0][11].item<double>(), std::sin(2.0), 1e-3);
}

TEST(DitRope, RotationMatchesComplexProduct) {
  RopeGroup g{{0, 1}, {0, 1}, {0, 1}};
  auto f = ComputeRopeFactors({g}, 8, c10::Device(c10::kCPU));
  auto x = at::randn({1, 8, 2, 8});
  auto y = ApplyRope(x, f);
  auto xc = at::view_as_complex(x.to(at::kDouble).reshape({1, 8, 2, 4, 2}));
  auto fc = at::view_as_complex(at::stack({f.cos, f.sin}, -1)).reshape({1, 8, 1, 4});
  auto ref = at::view_as_real(xc * fc).reshape({1, 8, 2, 8}).to(at::kFloat);
  EXPECT_TRUE(at::allclose(y, ref, 1e-6, 1e-6));
}

TEST(DitRope, WrappedRingKeepsAbsoluteFramePositions) {
  // Clip 1 block 0 of a 12-frame ring: written at ring row 0 but rotated at absolute frame 12.
  const int64_t fs = 16;
  const int64_t start = 12 * fs;
  const auto plan = runtime::PlanRing(start, 3 * fs, 12 * fs);
  EXPECT_EQ(plan.write_pos, 0);
  auto g = BlockRopeGroup(start / fs, 3, 4, 4);
  EXPECT_EQ(g.frames, (V{12, 13, 14}));
}

TEST(DitRope, RollingSinkShift) {
  EXPECT_EQ(RollingSinkShift(0, 17, 30), 0);
  EXPECT_EQ(RollingSinkShift(3, 28, 30), 1);   // F0 3, d 28
  EXPECT_EQ(RollingSinkShift(12, 25, 30), 7);  // F0 12, d 25
  EXPECT_EQ(RollingSinkShift(12, 4, 30), 0);
}

}  // namespace
}  // namespace liveavatar::models::dit
