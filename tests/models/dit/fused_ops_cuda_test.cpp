// The fused CUDA kernels (src/kernels/fused_dit.cu through models/dit/fused_ops.h) against the eager composition
// on random inputs of several shapes and dtypes, within bf16 (or fp32) rounding. Compiled only in CUDA LibTorch
// builds (LIVEAVATAR_HAVE_FUSED_KERNELS); skipped when no GPU is visible.
#if defined(LIVEAVATAR_HAVE_FUSED_KERNELS)

#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAFunctions.h>
#include <gtest/gtest.h>

#include "liveavatar/models/dit/fused_ops.h"
#include "liveavatar/models/dit/rope.h"

namespace liveavatar::models::dit {
namespace {

constexpr double kEps = 1e-6;

class DitFusedOpsCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (c10::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
    ASSERT_TRUE(FusedKernelsCompiled());
    SetFusedKernelsEnabled(true);
    ASSERT_TRUE(FusedKernelsAvailable());
  }
  void TearDown() override { SetFusedKernelsEnabled(true); }

  // Runs `op` with the kernels on and off and compares the results: same dtype/shape, elementwise within
  // atol + rtol·|eager|, relative L2 bounded. `bf16` (the op rounds through bf16 somewhere, input or output):
  // one bf16 rounding step may flip; otherwise fp32 reduction-order differences only.
  template <typename Op>
  void ExpectMatchesEager(const std::string& what, bool bf16, Op op) {
    SetFusedKernelsEnabled(true);
    const at::Tensor fused = op();
    SetFusedKernelsEnabled(false);
    const at::Tensor eager = op();
    SetFusedKernelsEnabled(true);
    ASSERT_TRUE(fused.is_cuda()) << what;
    ASSERT_EQ(fused.scalar_type(), eager.scalar_type()) << what;
    ASSERT_EQ(fused.sizes(), eager.sizes()) << what;
    const double rtol = bf16 ? 1.6e-2 : 1e-4, atol = bf16 ? 1e-2 : 1e-5, rel_l2_max = bf16 ? 4e-3 : 1e-5;
    const auto f = fused.to(at::kDouble), e = eager.to(at::kDouble);
    const auto excess = (f - e).abs() - (atol + rtol * e.abs());
    EXPECT_LE(excess.max().item<double>(), 0.0)
        << what << ": max |fused - eager| " << (f - e).abs().max().item<double>();
    const double rel_l2 = ((f - e).norm() / e.norm().clamp_min(1e-30)).item<double>();
    EXPECT_LE(rel_l2, rel_l2_max) << what;
    RecordProperty(what, std::to_string(rel_l2));
  }
};

at::TensorOptions Cuda(c10::ScalarType t) { return at::TensorOptions().device(at::kCUDA).dtype(t); }

TEST_F(DitFusedOpsCuda, ModulateMatchesEager) {
  at::manual_seed(11);
  struct Shape {
    int64_t frames, fs, dim;
  };
  for (const Shape s : {Shape{3, 7, 64}, Shape{2, 33, 5120}, Shape{1, 5, 1000}, Shape{50, 1, 384}}) {
    const auto m = at::randn({s.frames, 6, s.dim}, Cuda(at::kFloat)) * 0.5;
    const auto shift = m.select(1, 0), scale = m.select(1, 1);
    for (auto in : {at::kFloat, at::kBFloat16}) {
      const auto x = (at::randn({s.frames, s.fs, s.dim}, Cuda(at::kFloat)) * 3 + 1).to(in);
      for (auto out : {at::kFloat, at::kBFloat16}) {
        ExpectMatchesEager("modulate " + std::to_string(s.dim) + " " + c10::toString(in) + "->" + c10::toString(out),
                           in == at::kBFloat16 || out == at::kBFloat16,
                           [&] { return FusedModulate(x, shift, scale, kEps, out); });
      }
    }
  }
}

TEST_F(DitFusedOpsCuda, RmsNormAndRopeMatchEager) {
  at::manual_seed(12);
  struct Shape {
    int64_t heads, head_dim, frames, hp, wp;
  };
  for (const Shape s : {Shape{4, 24, 2, 3, 2}, Shape{40, 128, 2, 4, 6}, Shape{12, 64, 3, 5, 3}}) {
    const auto f = ComputeRopeFactors({BlockRopeGroup(7, s.frames, s.hp, s.wp)}, s.head_dim, at::kCUDA);
    const int64_t dim = s.heads * s.head_dim, len = f.size();
    for (auto xt : {at::kFloat, at::kBFloat16}) {
      for (auto wt : {at::kFloat, at::kBFloat16}) {
        const auto x = (at::randn({1, len, dim}, Cuda(at::kFloat)) * 2).to(xt);
        const auto w = (at::rand({dim}, Cuda(at::kFloat)) + 0.5).to(wt);
        const std::string tag = std::to_string(dim) + " " + c10::toString(xt) + "/" + c10::toString(wt);
        const bool bf16 = xt == at::kBFloat16 || wt == at::kBFloat16;
        ExpectMatchesEager("rmsnorm " + tag, bf16, [&] { return FusedRmsNorm(x, w, kEps); });
        ExpectMatchesEager("rmsnorm+rope " + tag, bf16, [&] { return FusedRmsNormRope(x, w, kEps, s.heads, f); });
      }
    }
  }
}

TEST_F(DitFusedOpsCuda, RopeMatchesEagerOnSinkAndBatchedInputs) {
  at::manual_seed(13);
  const int64_t heads = 8, head_dim = 48;
  const auto f = ComputeRopeFactors(SinkRopeGroups(30, 4, 4, 2, 2, 1, 1), head_dim, at::kCUDA);  // negative frames
  for (auto t : {at::kFloat, at::kBFloat16}) {
    for (int64_t batch : {1, 3}) {
      const auto k = at::randn({batch, f.size(), heads, head_dim}, Cuda(at::kFloat)).to(t);
      ExpectMatchesEager(std::string("rope ") + c10::toString(t) + " b" + std::to_string(batch),
                         t == at::kBFloat16, [&] { return FusedApplyRope(k, f); });
    }
  }
}

TEST_F(DitFusedOpsCuda, GatedResidualMatchesEager) {
  at::manual_seed(14);
  struct Shape {
    int64_t frames, fs, dim;
  };
  for (const Shape s : {Shape{3, 96, 5120}, Shape{2, 7, 64}, Shape{45, 1, 128}}) {
    const int64_t n = s.frames * s.fs;
    const auto x = at::randn({1, n, s.dim}, Cuda(at::kFloat));
    const auto gate = at::randn({s.frames, 6, s.dim}, Cuda(at::kFloat)).select(1, 2);
    for (auto yt : {at::kFloat, at::kBFloat16}) {
      const auto y = at::randn({1, n, s.dim}, Cuda(at::kFloat)).to(yt);
      ExpectMatchesEager("gated " + std::to_string(s.dim) + " " + c10::toString(yt), false,
                         [&] { return FusedGatedResidual(x, y, gate); });
    }
  }
}

TEST_F(DitFusedOpsCuda, UnsupportedInputsFallBackToEager) {
  at::manual_seed(15);
  // fp16 and rows wider than the shared-memory cache take the eager path and still give its result.
  const auto x = at::randn({2, 3, 64}, Cuda(at::kHalf));
  const auto s = at::randn({2, 64}, Cuda(at::kFloat));
  ExpectMatchesEager("modulate fp16", true, [&] { return FusedModulate(x, s, s, kEps, at::kHalf); });
  const auto wide = at::randn({1, 2, 16384}, Cuda(at::kFloat));
  const auto w = at::ones({16384}, Cuda(at::kFloat));
  ExpectMatchesEager("rmsnorm wide", false, [&] { return FusedRmsNorm(wide, w, kEps); });
}

}  // namespace
}  // namespace liveavatar::models::dit

#endif  // LIVEAVATAR_HAVE_FUSED_KERNELS
