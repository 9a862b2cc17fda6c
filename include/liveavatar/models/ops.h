// Small tensor ops shared by the model families (Wan DiT, T5, VAE, wav2vec2). Pure functions on tensors; they
// run on whatever device/dtype their inputs live on. Normalisations compute in fp32 (like the reference's
// `.float()` wrappers) and return fp32; callers cast where the reference casts.
//
// Thread safety: stateless; safe to call concurrently.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

#include "liveavatar/models/weights.h"

namespace liveavatar::models {

// y = x·Wᵀ + b with W = weights[prefix + ".weight"], b = weights[prefix + ".bias"] (when present). x is cast to
// the weight's dtype first; the result has the weight's dtype.
at::Tensor Linear(const at::Tensor& x, const WeightMap& weights, const std::string& prefix);

// y = x·Wᵀ + b with explicit tensors (b may be undefined); x is cast to w's dtype.
at::Tensor LinearWith(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);

// LayerNorm over the last dimension without affine parameters, computed in fp32; returns fp32.
at::Tensor LayerNormNoAffine(const at::Tensor& x, double eps);

// LayerNorm over the last dimension with weight/bias, computed in fp32; returns fp32.
at::Tensor LayerNormAffine(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps);

// RMSNorm over the last dimension: (fp32(x)·rsqrt(mean(x²) + eps)) cast back to x's dtype, times `weight`
// (Wan's WanRMSNorm order). Returns the dtype of x·weight.
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);

// GELU with the tanh approximation (torch "tanh" mode).
at::Tensor GeluTanh(const at::Tensor& x);

}  // namespace liveavatar::models
