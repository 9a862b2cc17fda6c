// Dispatch layer of the fused DiT ops (models/dit/fused_ops.h) on the CPU: every entry point must return exactly
// what the eager modules return (the fallback path), and the eager compositions must have the documented
// semantics. The CUDA kernels themselves are tested in fused_ops_cuda_test.cpp (CUDA builds only).
#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/models/dit/fused_ops.h"
#include "liveavatar/models/dit/modules.h"
#include "liveavatar/models/dit/rope.h"
#include "liveavatar/models/ops.h"

namespace liveavatar::models::dit {
namespace {

constexpr double kEps = 1e-6;

// Restores the runtime switch after each test.
class DitFusedOps : public ::testing::Test {
 protected:
  void TearDown() override { SetFusedKernelsEnabled(true); }
};

void ExpectSame(const at::Tensor& a, const at::Tensor& b) {
  ASSERT_EQ(a.scalar_type(), b.scalar_type());
  ASSERT_EQ(a.sizes(), b.sizes());
  EXPECT_TRUE(at::equal(a, b));
}

TEST_F(DitFusedOps, SwitchFollowsTheBuild) {
  SetFusedKernelsEnabled(false);
  EXPECT_FALSE(FusedKernelsAvailable());
  SetFusedKernelsEnabled(true);
  EXPECT_EQ(FusedKernelsAvailable(), FusedKernelsCompiled());
}

TEST_F(DitFusedOps, ModulateEqualsEagerWithStridedPerFrameRows) {
  at::manual_seed(1);
  const int64_t frames = 3, fs = 5, dim = 48;
  auto x = at::randn({frames, fs, dim});
  auto m = at::randn({frames, 6, dim});  // the Block's modulation rows; chunks are strided views
  auto shift = m.select(1, 0), scale = m.select(1, 1);
  for (auto out_dtype : {at::kFloat, at::kBFloat16}) {
    ExpectSame(FusedModulate(x, shift, scale, kEps, out_dtype), Modulate(x, shift, scale, kEps).to(out_dtype));
    ExpectSame(FusedModulate(x.to(at::kBFloat16), shift, scale, kEps, out_dtype),
               Modulate(x.to(at::kBFloat16), shift, scale, kEps).to(out_dtype));
  }
  // Semantics: frame f uses row f of shift/scale; LN is biased-variance, no affine.
  auto y = FusedModulate(x, shift, scale, kEps, at::kFloat).to(at::kDouble);
  auto xd = x.to(at::kDouble);
  auto mean = xd.mean({-1}, true);
  auto var = (xd - mean).pow(2).mean({-1}, true);
  auto expect = (xd - mean) / at::sqrt(var + kEps) * (1 + scale.to(at::kDouble).unsqueeze(1)) +
                shift.to(at::kDouble).unsqueeze(1);
  EXPECT_LT((y - expect).abs().max().item<double>(), 1e-4);
}

TEST_F(DitFusedOps, RmsNormEqualsEagerAndKeepsItsDtypeRule) {
  at::manual_seed(2);
  auto x = at::randn({2, 7, 64});
  auto w = at::randn({64});
  ExpectSame(FusedRmsNorm(x, w, kEps), models::RmsNorm(x, w, kEps));
  auto xb = x.to(at::kBFloat16), wb = w.to(at::kBFloat16);
  auto yb = FusedRmsNorm(xb, wb, kEps);
  EXPECT_EQ(yb.scalar_type(), at::kBFloat16);
  ExpectSame(yb, models::RmsNorm(xb, wb, kEps));
  EXPECT_EQ(FusedRmsNorm(xb, w, kEps).scalar_type(), at::kFloat);  // promote(x, weight)
}

TEST_F(DitFusedOps, RmsNormRopeEqualsRopeOfRmsNorm) {
  at::manual_seed(3);
  const int64_t heads = 4, head_dim = 24;  // 12 pairs: 4 frame, 4 row, 4 column
  const auto f = ComputeRopeFactors({BlockRopeGroup(5, 2, 3, 2)}, head_dim, at::kCPU);
  const int64_t len = f.size();
  auto x = at::randn({1, len, heads * head_dim});
  auto w = at::randn({heads * head_dim});
  auto y = FusedRmsNormRope(x, w, kEps, heads, f);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{1, len, heads, head_dim}));
  ExpectSame(y, ApplyRope(models::RmsNorm(x, w, kEps).view({1, len, heads, head_dim}), f));
  // A rotation keeps each pair's norm: |rope(y)| per pair == |RmsNorm(x)| per pair, up to the fp16 rounding of
  // the factors (cos² + sin² = 1 within ~1e-3).
  auto n = models::RmsNorm(x, w, kEps).view({1, len, heads, head_dim / 2, 2}).pow(2).sum(-1);
  auto r = y.view({1, len, heads, head_dim / 2, 2}).pow(2).sum(-1);
  EXPECT_TRUE(at::allclose(n, r, 3e-3, 1e-6));
}

TEST_F(DitFusedOps, ApplyRopeEqualsEagerOnSinkGroups) {
  at::manual_seed(4);
  const int64_t heads = 2, head_dim = 12;
  const auto f = ComputeRopeFactors(SinkRopeGroups(30, 4, 4, 2, 2, 1, 1), head_dim, at::kCPU);
  auto k = at::randn({1, f.size(), heads, head_dim});
  ExpectSame(FusedApplyRope(k, f), ApplyRope(k, f));
  ExpectSame(FusedApplyRope(k.to(at::kBFloat16), f), ApplyRope(k.to(at::kBFloat16), f));
}

TEST_F(DitFusedOps, GatedResidualPerFrameAndPerToken) {
  at::manual_seed(5);
  const int64_t frames = 3, fs = 4, dim = 16, n = frames * fs;
  auto x = at::randn({1, n, dim});
  const auto x_before = x.clone();
  auto y = at::randn({1, n, dim}).to(at::kBFloat16);
  auto m = at::randn({frames, 6, dim});
  auto gate = m.select(1, 2);
  auto out = FusedGatedResidual(x, y, gate);
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  ExpectSame(out, x + (y.to(at::kFloat).view({frames, fs, dim}) * gate.unsqueeze(1)).view({1, n, dim}));
  EXPECT_TRUE(at::equal(x, x_before));  // never in place
  // Token t of frame f: x + y·gate[f].
  const int64_t t = 6, fr = t / fs;
  auto expect_row = x[0][t] + y.to(at::kFloat)[0][t] * gate[fr];
  EXPECT_TRUE(at::equal(out[0][t], expect_row));
  // Per-token gate rows (sequence-parallel chunk): F = n, one row per token.
  auto rows = at::randn({n, dim});
  ExpectSame(FusedGatedResidual(x, y, rows), x + y.to(at::kFloat) * rows.unsqueeze(0));
}

TEST_F(DitFusedOps, DisabledSwitchGivesTheSameResults) {
  at::manual_seed(6);
  auto x = at::randn({2, 3, 32});
  auto s = at::randn({2, 32}), c = at::randn({2, 32});
  auto a = FusedModulate(x, s, c, kEps, at::kBFloat16);
  SetFusedKernelsEnabled(false);
  ExpectSame(FusedModulate(x, s, c, kEps, at::kBFloat16), a);
}

TEST_F(DitFusedOps, BadShapesThrow) {
  auto x = at::randn({2, 3, 32});
  EXPECT_THROW(FusedModulate(x, at::randn({3, 32}), at::randn({3, 32}), kEps, at::kFloat), c10::Error);
  EXPECT_THROW(FusedModulate(x.view({6, 32}), at::randn({2, 32}), at::randn({2, 32}), kEps, at::kFloat), c10::Error);
  EXPECT_THROW(FusedGatedResidual(x, at::randn({2, 3, 32}), at::randn({4, 32})), c10::Error);
  EXPECT_THROW(FusedRmsNormRope(x, at::randn({32}), kEps, 5, RopeFactors{}), c10::Error);
}

}  // namespace
}  // namespace liveavatar::models::dit
