#include "liveavatar/models/dit/fused_ops.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <string>

#include <ATen/ATen.h>

#include "liveavatar/models/dit/modules.h"
#include "liveavatar/models/ops.h"
#if defined(LIVEAVATAR_HAVE_FUSED_KERNELS)
#include "models/dit/fused_ops_cuda.h"
#endif

namespace liveavatar::models::dit {

namespace {

constexpr int kNoOverride = -1;
std::atomic<int> g_enabled_override{kNoOverride};

bool EnabledByEnvironment() {
  static const bool enabled = [] {
    const char* v = std::getenv("LIVEAVATAR_FUSED_KERNELS");
    if (v == nullptr) return true;
    std::string s(v);
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return std::tolower(ch); });
    return !(s == "0" || s == "false" || s == "off" || s == "no");
  }();
  return enabled;
}

[[maybe_unused]] bool UseFused(const at::Tensor& x) { return x.is_cuda() && FusedKernelsAvailable(); }

}  // namespace

bool FusedKernelsCompiled() {
#if defined(LIVEAVATAR_HAVE_FUSED_KERNELS)
  return true;
#else
  return false;
#endif
}

bool FusedKernelsAvailable() {
  if (!FusedKernelsCompiled()) return false;
  const int o = g_enabled_override.load(std::memory_order_relaxed);
  return o == kNoOverride ? EnabledByEnvironment() : o != 0;
}

void SetFusedKernelsEnabled(bool enabled) { g_enabled_override.store(enabled ? 1 : 0, std::memory_order_relaxed); }

at::Tensor FusedModulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, double eps,
                         c10::ScalarType out_dtype) {
  TORCH_CHECK(x.dim() == 3 && shift.dim() == 2 && scale.sizes() == shift.sizes() && shift.size(0) == x.size(0) &&
                  shift.size(1) == x.size(2),
              "FusedModulate: x ", x.sizes(), " shift ", shift.sizes(), " scale ", scale.sizes(),
              " must be [F, fs, dim], [F, dim], [F, dim]");
#if defined(LIVEAVATAR_HAVE_FUSED_KERNELS)
  if (UseFused(x)) {
    auto out = fused_cuda::Modulate(x, shift, scale, eps, out_dtype);
    if (out.defined()) return out;
  }
#endif
  return Modulate(x, shift, scale, eps).to(out_dtype);
}

at::Tensor FusedRmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
#if defined(LIVEAVATAR_HAVE_FUSED_KERNELS)
  if (UseFused(x)) {
    auto out = fused_cuda::RmsNorm(x, weight, eps);
    if (out.defined()) return out;
  }
#endif
  return models::RmsNorm(x, weight, eps);
}

at::Tensor FusedRmsNormRope(const at::Tensor& x, const at::Tensor& weight, double eps, int64_t num_heads,
                            const RopeFactors& f) {
  TORCH_CHECK(x.dim() == 3 && num_heads > 0 && x.size(2) % num_heads == 0, "FusedRmsNormRope: x ", x.sizes(),
              " must be [B, L, dim] with dim divisible by ", num_heads, " heads");
#if defined(LIVEAVATAR_HAVE_FUSED_KERNELS)
  if (UseFused(x)) {
    auto out = fused_cuda::RmsNormRope(x, weight, eps, num_heads, f);
    if (out.defined()) return out;
  }
#endif
  auto y = models::RmsNorm(x, weight, eps);
  return dit::ApplyRope(y.view({x.size(0), x.size(1), num_heads, x.size(2) / num_heads}), f);
}

at::Tensor FusedApplyRope(const at::Tensor& x, const RopeFactors& f) {
#if defined(LIVEAVATAR_HAVE_FUSED_KERNELS)
  if (UseFused(x)) {
    auto out = fused_cuda::ApplyRope(x, f);
    if (out.defined()) return out;
  }
#endif
  return dit::ApplyRope(x, f);
}

at::Tensor FusedGatedResidual(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate) {
  TORCH_CHECK(gate.dim() == 2 && gate.size(0) > 0 && gate.size(1) > 0 && x.numel() == y.numel() &&
                  x.numel() % (gate.size(0) * gate.size(1)) == 0 && x.size(-1) == gate.size(1),
              "FusedGatedResidual: x ", x.sizes(), " y ", y.sizes(), " gate ", gate.sizes(),
              " must hold F·fs·dim elements with gate [F, dim]");
#if defined(LIVEAVATAR_HAVE_FUSED_KERNELS)
  if (UseFused(x)) {
    auto out = fused_cuda::GatedResidual(x, y, gate);
    if (out.defined()) return out;
  }
#endif
  const int64_t frames = gate.size(0), dim = gate.size(1);
  auto g = y.to(at::kFloat).reshape({frames, -1, dim}) * gate.to(at::kFloat).unsqueeze(1);
  return x.to(at::kFloat) + g.view(x.sizes());
}

}  // namespace liveavatar::models::dit
