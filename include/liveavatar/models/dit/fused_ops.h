// One API for the DiT block pieces that have fused CUDA kernels (src/kernels/fused_dit.cu, docs/performance.md
// "Fused kernels"): modulated LayerNorm, q/k RMSNorm (+ RoPE), RoPE alone and the gated residual add.
//
// Every function returns what the named eager composition returns (same shape, dtype and device). It runs the
// fused kernel when FusedKernelsAvailable() and the inputs are supported (CUDA tensors, fp32/bf16, dense rows,
// row width <= kernels::kFusedMaxRowDim); otherwise it runs the eager composition itself, so callers need no
// device or build checks. Fused results match eager within bf16 rounding (fp32 reductions in another order).
//
// Runtime switch: env LIVEAVATAR_FUSED_KERNELS=0 (or "false"/"off") disables the kernels for the process;
// SetFusedKernelsEnabled overrides the environment (tests, benchmarks).
// Thread safety: the switch is an atomic; the functions are pure.
#pragma once

#include <ATen/core/Tensor.h>

#include "liveavatar/models/dit/rope.h"

namespace liveavatar::models::dit {

// True when this build links the CUDA kernels (a CUDA LibTorch build).
bool FusedKernelsCompiled();

// True when the kernels are compiled in and not disabled (environment or SetFusedKernelsEnabled).
bool FusedKernelsAvailable();

// Enables/disables the kernels for this process, overriding LIVEAVATAR_FUSED_KERNELS.
void SetFusedKernelsEnabled(bool enabled);

// == Modulate(x, shift, scale, eps).to(out_dtype): x [F, fs, dim] (fp32/bf16), shift/scale [F, dim] (rows may be
// strided views such as modulation.select(1, k)) -> [F, fs, dim] in out_dtype.
at::Tensor FusedModulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, double eps,
                         c10::ScalarType out_dtype);

// == models::RmsNorm(x, weight, eps): x [.., dim], weight [dim].
at::Tensor FusedRmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);

// == ApplyRope(RmsNorm(x, weight, eps).view({B, L, heads, dim / heads}), f): x [B, L, dim] -> [B, L, heads, hd].
at::Tensor FusedRmsNormRope(const at::Tensor& x, const at::Tensor& weight, double eps, int64_t num_heads,
                            const RopeFactors& f);

// == ApplyRope(x, f): x [B, L, H, D].
at::Tensor FusedApplyRope(const at::Tensor& x, const RopeFactors& f);

// == x.to(fp32) + (y.to(fp32).view({F, -1, dim}) * gate.to(fp32).unsqueeze(1)).view(x.sizes()) with F =
// gate.size(0), dim = gate.size(1): the Block's gated residual (y the branch output, gate [F, dim] per frame or
// per token). Returns fp32 in x's shape; never writes x.
at::Tensor FusedGatedResidual(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate);

}  // namespace liveavatar::models::dit
