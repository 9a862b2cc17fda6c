// ATen adapters over src/kernels/fused_dit.cu; compiled into la_dit only in CUDA LibTorch builds (the guard keeps
// the file empty elsewhere, so the folder's glob needs no exception).
#if defined(LIVEAVATAR_HAVE_FUSED_KERNELS)

#include "models/dit/fused_ops_cuda.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "liveavatar/kernels/fused_dit.h"

namespace liveavatar::models::dit::fused_cuda {

namespace {

using kernels::FusedDtype;

bool KernelDtype(c10::ScalarType t, FusedDtype* out) {
  if (t == at::kFloat) {
    *out = FusedDtype::kFloat32;
    return true;
  }
  if (t == at::kBFloat16) {
    *out = FusedDtype::kBFloat16;
    return true;
  }
  return false;
}

void* CurrentStream(const at::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }

bool SameDevice(const at::Tensor& a, const at::Tensor& b) { return b.defined() && b.device() == a.device(); }

// Launch result: true = launched, false = unsupported (fall back); errors raise.
bool Launched(int rc, const char* what) {
  if (rc == kernels::kFusedUnsupported) return false;
  TORCH_CHECK(rc == 0, what, ": CUDA kernel launch failed: ", kernels::FusedErrorString(rc));
  return true;
}

// fp32 [rows, dim] with unit last stride; any row stride (a strided select of the modulation, an expanded row).
bool FloatRows(const at::Tensor& t, const at::Tensor& like, int64_t rows, int64_t dim) {
  return SameDevice(like, t) && t.scalar_type() == at::kFloat && t.dim() == 2 && t.size(0) == rows &&
         t.size(1) == dim && t.stride(1) == 1;
}

bool TablesOk(const at::Tensor& x, const RopeFactors& f, int64_t seq_len, int64_t half_head) {
  const auto ok = [&](const at::Tensor& t) {
    return SameDevice(x, t) && t.scalar_type() == at::kDouble && t.is_contiguous() && t.dim() == 2 &&
           t.size(0) == seq_len && t.size(1) == half_head;
  };
  return ok(f.cos) && ok(f.sin);
}

}  // namespace

at::Tensor Modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, double eps,
                    c10::ScalarType out_dtype) {
  FusedDtype xd, od;
  if (!x.is_cuda() || x.dim() != 3 || !KernelDtype(x.scalar_type(), &xd) || !KernelDtype(out_dtype, &od)) return {};
  const int64_t frames = x.size(0), fs = x.size(1), dim = x.size(2);
  if (x.numel() == 0 || dim > kernels::kFusedMaxRowDim) return {};
  auto sh = shift.scalar_type() == at::kFloat ? shift : shift.to(at::kFloat);
  auto sc = scale.scalar_type() == at::kFloat ? scale : scale.to(at::kFloat);
  if (!FloatRows(sh, x, frames, dim) || !FloatRows(sc, x, frames, dim)) return {};
  if (sh.stride(0) != sc.stride(0)) {
    sh = sh.contiguous();
    sc = sc.contiguous();
  }
  c10::cuda::CUDAGuard guard(x.device());
  auto xc = x.contiguous();
  auto out = at::empty(x.sizes(), x.options().dtype(out_dtype));
  const int rc = kernels::LaunchModulateLayerNorm(xc.data_ptr(), xd, sh.data_ptr<float>(), sc.data_ptr<float>(),
                                                  sh.stride(0), out.data_ptr(), od, frames, fs, dim,
                                                  static_cast<float>(eps), CurrentStream(x));
  return Launched(rc, "FusedModulate") ? out : at::Tensor();
}

namespace {

at::Tensor RmsNormImpl(const at::Tensor& x, const at::Tensor& weight, double eps, int64_t num_heads,
                       const RopeFactors* f) {
  FusedDtype xd, wd;
  if (!x.is_cuda() || x.dim() < 1 || !SameDevice(x, weight) || !KernelDtype(x.scalar_type(), &xd) ||
      !KernelDtype(weight.scalar_type(), &wd)) {
    return {};
  }
  const int64_t dim = x.size(-1);
  if (x.numel() == 0 || weight.dim() != 1 || weight.size(0) != dim || dim % 2 != 0 ||
      dim > kernels::kFusedMaxRowDim) {
    return {};
  }
  const int64_t tokens = x.numel() / dim;
  int64_t seq_len = tokens, half_head = 1;
  if (f != nullptr) {
    if (x.dim() != 3 || num_heads <= 0 || dim % (2 * num_heads) != 0) return {};
    seq_len = x.size(1);
    half_head = dim / num_heads / 2;
    if (!TablesOk(x, *f, seq_len, half_head)) return {};
  }
  const auto out_dtype = at::promote_types(x.scalar_type(), weight.scalar_type());
  c10::cuda::CUDAGuard guard(x.device());
  auto xc = x.contiguous();
  auto wc = weight.contiguous();
  auto out = at::empty(x.sizes(), x.options().dtype(out_dtype));
  const int rc = kernels::LaunchRmsNormRope(
      xc.data_ptr(), xd, wc.data_ptr(), wd, out.data_ptr(), tokens, seq_len, dim, half_head, static_cast<float>(eps),
      f != nullptr ? f->cos.data_ptr<double>() : nullptr, f != nullptr ? f->sin.data_ptr<double>() : nullptr,
      CurrentStream(x));
  if (!Launched(rc, "FusedRmsNorm")) return {};
  return f != nullptr ? out.view({x.size(0), seq_len, num_heads, 2 * half_head}) : out;
}

}  // namespace

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return RmsNormImpl(x, weight, eps, 0, nullptr);
}

at::Tensor RmsNormRope(const at::Tensor& x, const at::Tensor& weight, double eps, int64_t num_heads,
                       const RopeFactors& f) {
  return RmsNormImpl(x, weight, eps, num_heads, &f);
}

at::Tensor ApplyRope(const at::Tensor& x, const RopeFactors& f) {
  FusedDtype xd;
  if (!x.is_cuda() || x.dim() != 4 || x.numel() == 0 || x.size(3) % 2 != 0 || !KernelDtype(x.scalar_type(), &xd)) {
    return {};
  }
  const int64_t half_head = x.size(3) / 2;
  if (!TablesOk(x, f, x.size(1), half_head)) return {};
  c10::cuda::CUDAGuard guard(x.device());
  auto xc = x.contiguous();
  auto out = at::empty(x.sizes(), x.options());
  const int rc = kernels::LaunchRope(xc.data_ptr(), out.data_ptr(), xd, x.size(0), x.size(1), x.size(2), half_head,
                                     f.cos.data_ptr<double>(), f.sin.data_ptr<double>(), CurrentStream(x));
  return Launched(rc, "FusedApplyRope") ? out : at::Tensor();
}

at::Tensor GatedResidual(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate) {
  FusedDtype yd;
  if (!x.is_cuda() || !SameDevice(x, y) || !KernelDtype(y.scalar_type(), &yd) || x.numel() == 0) return {};
  const int64_t frames = gate.size(0), dim = gate.size(1);
  auto g = gate.scalar_type() == at::kFloat ? gate : gate.to(at::kFloat);
  if (!FloatRows(g, x, frames, dim)) return {};
  c10::cuda::CUDAGuard guard(x.device());
  auto xc = x.to(at::kFloat).contiguous();
  auto yc = y.contiguous();
  auto out = at::empty(x.sizes(), x.options().dtype(at::kFloat));
  const int64_t rows_per_frame = x.numel() / (frames * dim);
  const int rc = kernels::LaunchGatedResidual(xc.data_ptr<float>(), yc.data_ptr(), yd, g.data_ptr<float>(),
                                              g.stride(0), out.data_ptr<float>(), frames, rows_per_frame, dim,
                                              CurrentStream(x));
  return Launched(rc, "FusedGatedResidual") ? out : at::Tensor();
}

}  // namespace liveavatar::models::dit::fused_cuda

#endif  // LIVEAVATAR_HAVE_FUSED_KERNELS
