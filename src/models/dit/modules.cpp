#include "liveavatar/models/dit/modules.h"

#include <ATen/ATen.h>

#include "liveavatar/models/ops.h"

namespace liveavatar::models::dit {

namespace {
constexpr double kAdaLnEps = 1e-5;  // diffusers AdaLayerNorm default (everything else uses config.eps)
constexpr int64_t kFramePackFrames = 19;  // buckets 16 + 2 + 1
}  // namespace

at::Tensor SinusoidalEmbedding(const at::Tensor& positions, int64_t freq_dim) {
  const int64_t half = freq_dim / 2;
  auto pos = positions.to(at::kDouble).reshape({-1});
  auto k = at::arange(half, pos.options());
  auto omega = at::pow(10000.0, -(k / static_cast<double>(half)));
  auto s = at::outer(pos, omega);
  return at::cat({at::cos(s), at::sin(s)}, 1).to(at::kFloat);
}

at::Tensor TimeEmbedding(const WeightMap& w, const at::Tensor& sinusoid) {
  auto h = Linear(sinusoid.to(at::kFloat), w, "time_embedding.0").to(at::kFloat);
  return Linear(at::silu(h), w, "time_embedding.2").to(at::kFloat);
}

at::Tensor TimeProjection(const WeightMap& w, const at::Tensor& e) {
  auto e0 = Linear(at::silu(e.to(at::kFloat)), w, "time_projection.1").to(at::kFloat);
  return e0.view({e.size(0), 6, e.size(1)});
}

at::Tensor TextEmbedding(const WeightMap& w, const DitConfig& c, const at::Tensor& context) {
  TORCH_CHECK(context.dim() == 2 && context.size(1) == c.text_dim && context.size(0) <= c.text_len,
              "TextEmbedding: context ", context.sizes(), " must be [L <= ", c.text_len, ", ", c.text_dim, "]");
  const auto& w0 = W(w, "text_embedding.0.weight");
  auto padded = at::zeros({c.text_len, c.text_dim}, context.options().dtype(at::kFloat));
  padded.narrow(0, 0, context.size(0)).copy_(context);
  auto h = GeluTanh(Linear(padded.to(w0.scalar_type()), w, "text_embedding.0"));
  return Linear(h, w, "text_embedding.2").unsqueeze(0);
}

at::Tensor PatchConv(const WeightMap& w, const std::string& prefix, const at::Tensor& x) {
  const auto& weight = W(w, prefix + ".weight");
  const auto& bias = W(w, prefix + ".bias");
  std::vector<int64_t> stride = {weight.size(2), weight.size(3), weight.size(4)};
  return at::conv3d(x.to(weight.scalar_type()), weight, bias, stride);
}

at::Tensor FlattenTokens(const at::Tensor& x) { return x.flatten(2).transpose(1, 2); }

at::Tensor FramePack(const WeightMap& w, const at::Tensor& motion_latents, int64_t* h2, int64_t* w2, int64_t* h4,
                     int64_t* w4) {
  TORCH_CHECK(motion_latents.dim() == 5 && motion_latents.size(0) == 1, "FramePack: motion_latents ",
              motion_latents.sizes(), " must be [1, 16, F, H, W]");
  const auto& m = motion_latents;
  auto padded = at::zeros({1, m.size(1), kFramePackFrames, m.size(3), m.size(4)}, m.options());
  const int64_t overlap = std::min<int64_t>(kFramePackFrames, m.size(2));
  if (overlap > 0) {
    padded.narrow(2, kFramePackFrames - overlap, overlap).copy_(m.narrow(2, m.size(2) - overlap, overlap));
  }
  auto lat_4x = padded.narrow(2, 0, 16);
  auto lat_2x = padded.narrow(2, 16, 2);
  auto lat_post = padded.narrow(2, 18, 1);
  auto post = PatchConv(w, "frame_packer.proj", lat_post);
  auto x2 = PatchConv(w, "frame_packer.proj_2x", lat_2x);
  auto x4 = PatchConv(w, "frame_packer.proj_4x", lat_4x);
  *h2 = x2.size(3);
  *w2 = x2.size(4);
  *h4 = x4.size(3);
  *w4 = x4.size(4);
  return at::cat({FlattenTokens(post), FlattenTokens(x2), FlattenTokens(x4)}, 1);
}

at::Tensor CrossAttention(const WeightMap& w, const DitConfig& c, const std::string& prefix, const at::Tensor& x,
                          const at::Tensor& context, const AttentionFn& attention) {
  const int64_t b = x.size(0);
  const int64_t heads = c.num_heads;
  const int64_t hd = c.head_dim();
  auto q = RmsNorm(Linear(x, w, prefix + ".q"), W(w, prefix + ".norm_q.weight"), c.eps);
  auto k = RmsNorm(Linear(context, w, prefix + ".k"), W(w, prefix + ".norm_k.weight"), c.eps);
  auto v = Linear(context, w, prefix + ".v");
  auto o = attention(q.view({b, -1, heads, hd}), k.view({b, -1, heads, hd}), v.view({b, -1, heads, hd}));
  return Linear(o.reshape({b, -1, c.dim}), w, prefix + ".o");
}

at::Tensor Ffn(const WeightMap& w, const std::string& prefix, const at::Tensor& x) {
  return Linear(GeluTanh(Linear(x, w, prefix + ".0")), w, prefix + ".2");
}

at::Tensor Modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, double eps) {
  return LayerNormNoAffine(x, eps) * (1 + scale.to(at::kFloat).unsqueeze(1)) + shift.to(at::kFloat).unsqueeze(1);
}

at::Tensor AudioInjector(const WeightMap& w, const DitConfig& c, int64_t injector, const at::Tensor& x,
                         const at::Tensor& audio_global, const at::Tensor& audio_local, const AttentionFn& attention,
                         c10::ScalarType compute_dtype) {
  const std::string j = std::to_string(injector);
  // AdaLayerNorm (chunk_dim 1): emb = Linear(SiLU(global)); shift = first half, scale = second half.
  auto emb = Linear(at::silu(audio_global), w, "audio_injector.injector_adain_layers." + j + ".linear").to(at::kFloat);
  auto shift = emb.narrow(1, 0, c.dim);
  auto scale = emb.narrow(1, c.dim, c.dim);
  auto h = Modulate(x, shift, scale, kAdaLnEps).to(compute_dtype);
  auto r = CrossAttention(w, c, "audio_injector.injector." + j, h, audio_local.to(compute_dtype), attention);
  return x.to(at::kFloat) + r.to(at::kFloat);
}

at::Tensor Head(const WeightMap& w, const DitConfig& c, const at::Tensor& x, const at::Tensor& e) {
  const int64_t frames = e.size(0);
  const auto mod = W(w, "head.modulation").to(at::kFloat);  // [1, 2, dim]
  auto shift = mod[0][0].unsqueeze(0) + e.to(at::kFloat);
  auto scale = mod[0][1].unsqueeze(0) + e.to(at::kFloat);
  auto y = Modulate(x.reshape({frames, -1, c.dim}), shift, scale, c.eps);
  return Linear(y, w, "head.head").to(at::kFloat).reshape({1, -1, W(w, "head.head.weight").size(0)});
}

at::Tensor Unpatchify(const DitConfig& c, const at::Tensor& x, int64_t frames, int64_t hp, int64_t wp) {
  const auto& p = c.patch_size;
  auto u = x.reshape({frames, hp, wp, p[0], p[1], p[2], c.out_dim});
  u = u.permute({6, 0, 3, 1, 4, 2, 5});  // 'fhwpqrc -> cfphqwr'
  return u.reshape({c.out_dim, frames * p[0], hp * p[1], wp * p[2]});
}

}  // namespace liveavatar::models::dit
