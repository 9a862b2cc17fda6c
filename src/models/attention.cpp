#include "liveavatar/models/attention.h"

#include <cmath>

#include <ATen/ATen.h>

#include "liveavatar/core/compat.h"

namespace liveavatar::models {

at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, std::optional<double> scale) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "Attention expects [B, L, H, D] tensors");
  const double s = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  // [B, H, L, D]
  auto qh = q.transpose(1, 2);
  auto kh = k.transpose(1, 2);
  auto vh = v.transpose(1, 2);
  at::Tensor out;
#if LIVEAVATAR_HAS_SDPA
  if (q.is_cuda()) {
    out = at::scaled_dot_product_attention(qh, kh, vh, {}, 0.0, false, s);
    return out.transpose(1, 2);
  }
#endif
  auto logits = at::matmul(qh, kh.transpose(-2, -1)).mul_(s);
  auto probs = at::softmax(logits, -1, at::kFloat).to(v.scalar_type());
  out = at::matmul(probs, vh);
  return out.transpose(1, 2);
}

at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias,
                     std::optional<double> scale) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "Attention expects [B, L, H, D] tensors");
  TORCH_CHECK(bias.dim() <= 4, "Attention bias must broadcast to [B, H, Lq, Lk], got ", bias.sizes());
  const double s = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  // [B, H, L, D]
  auto qh = q.transpose(1, 2);
  auto kh = k.transpose(1, 2);
  auto vh = v.transpose(1, 2);
  const auto b = bias.to(q.scalar_type());
#if LIVEAVATAR_HAS_SDPA
  if (q.is_cuda()) {
    const auto mask = b.expand({q.size(0), q.size(2), q.size(1), k.size(1)});
    return at::scaled_dot_product_attention(qh, kh, vh, mask, 0.0, false, s).transpose(1, 2);
  }
#endif
  auto logits = at::matmul(qh, kh.transpose(-2, -1));
  if (s != 1.0) logits.mul_(s);
  logits.add_(b);
  auto probs = at::softmax(logits, -1, at::kFloat).to(v.scalar_type());
  return at::matmul(probs, vh).transpose(1, 2);
}

}  // namespace liveavatar::models
