// Internal: ATen adapters over the fused CUDA kernels (fused_ops_cuda.cpp, compiled only when
// LIVEAVATAR_HAVE_FUSED_KERNELS). Each returns an undefined tensor when the inputs are not supported (wrong device,
// dtype, layout or size) so that models/dit/fused_ops.cpp falls back to the eager composition; kernel launch
// failures raise c10::Error. Semantics are those of the same-named functions in liveavatar/models/dit/fused_ops.h.
#pragma once

#include <ATen/core/Tensor.h>

#include "liveavatar/models/dit/rope.h"

namespace liveavatar::models::dit::fused_cuda {

at::Tensor Modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, double eps,
                    c10::ScalarType out_dtype);
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);
at::Tensor RmsNormRope(const at::Tensor& x, const at::Tensor& weight, double eps, int64_t num_heads,
                       const RopeFactors& f);
at::Tensor ApplyRope(const at::Tensor& x, const RopeFactors& f);
at::Tensor GatedResidual(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate);

}  // namespace liveavatar::models::dit::fused_cuda
