// The one attention entry point of every model (style.md habit 8). Layout [B, L, H, D] for q, k, v (the
// reference's layout); no mask, scale 1/sqrt(D) unless given. Parallel strategies (Ulysses) wrap the caller,
// not this function. Computes in the inputs' dtype with fp32 softmax.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

namespace liveavatar::models {

// q: [B, Lq, H, D], k/v: [B, Lk, H, D] -> [B, Lq, H, D].
at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     std::optional<double> scale = std::nullopt);

// Same, with an additive logit bias (relative position bias, key masks) broadcastable to [B, H, Lq, Lk]; it is
// added after scaling and before the fp32 softmax, in the inputs' dtype (cast to it if needed).
at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias,
                     std::optional<double> scale = std::nullopt);

}  // namespace liveavatar::models
