#include "liveavatar/models/ops.h"

#include <ATen/ATen.h>

namespace liveavatar::models {

at::Tensor LinearWith(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const auto xin = x.scalar_type() == w.scalar_type() ? x : x.to(w.scalar_type());
  if (b.defined()) return at::linear(xin, w, b.scalar_type() == w.scalar_type() ? b : b.to(w.scalar_type()));
  return at::linear(xin, w);
}

at::Tensor Linear(const at::Tensor& x, const WeightMap& weights, const std::string& prefix) {
  const auto& w = W(weights, prefix + ".weight");
  auto it = weights.find(prefix + ".bias");
  return LinearWith(x, w, it == weights.end() ? at::Tensor() : it->second);
}

at::Tensor LayerNormNoAffine(const at::Tensor& x, double eps) {
  return at::layer_norm(x.to(at::kFloat), {x.size(-1)}, {}, {}, eps);
}

at::Tensor LayerNormAffine(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps) {
  return at::layer_norm(x.to(at::kFloat), {x.size(-1)}, weight.to(at::kFloat), bias.to(at::kFloat), eps);
}

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const auto xf = x.to(at::kFloat);
  const auto normed = xf * at::rsqrt(xf.pow(2).mean({-1}, /*keepdim=*/true) + eps);
  return normed.to(x.scalar_type()) * weight;
}

at::Tensor GeluTanh(const at::Tensor& x) { return at::gelu(x, "tanh"); }

}  // namespace liveavatar::models
