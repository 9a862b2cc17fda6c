#include "liveavatar/models/dit/audio_encoder.h"

#include <ATen/ATen.h>

#include "liveavatar/models/ops.h"

namespace liveavatar::models::dit {

namespace {

constexpr double kMotionEncoderEps = 1e-6;

const at::Tensor& F32(const WeightMap& w, const std::string& key) { return W(w, key); }

// LN over channels of x [B, C, T] (no affine), then SiLU; returns [B, C, T].
at::Tensor NormAct(const at::Tensor& x) {
  auto y = LayerNormNoAffine(x.transpose(1, 2), kMotionEncoderEps);
  return at::silu(y).transpose(1, 2);
}

at::Tensor Conv(const WeightMap& w, const std::string& prefix, const at::Tensor& x, int64_t stride) {
  return CausalConv1d(x, F32(w, prefix + ".conv.weight"), F32(w, prefix + ".conv.bias"), stride);
}

}  // namespace

at::Tensor CausalConv1d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t stride) {
  const int64_t pad = weight.size(2) - 1;
  auto xin = x.to(weight.scalar_type());
  if (pad > 0) xin = at::cat({xin.narrow(2, 0, 1).expand({x.size(0), x.size(1), pad}), xin}, 2);
  return at::conv1d(xin, weight, bias.to(weight.scalar_type()), {stride});
}

AudioTokens CausalAudioEncoder(const WeightMap& w, const DitConfig& c, const at::Tensor& features) {
  TORCH_CHECK(features.dim() == 4 && features.size(2) == c.audio_dim, "CausalAudioEncoder: features ",
              features.sizes(), " must be [B, layers, ", c.audio_dim, ", T]");
  const std::string enc = "casual_audio_encoder.encoder";
  const auto f = features.to(at::kFloat);
  const int64_t b = f.size(0);
  // Layer mix: w = SiLU(weights) [1, L, 1, 1]; feat = Σ_l A_l·w_l / Σ_l w_l -> [B, C, T].
  const auto mix = at::silu(F32(w, "casual_audio_encoder.weights").to(at::kFloat));
  const auto mix_sum = mix.sum(1, /*keepdim=*/true);
  const auto feat = ((f * mix) / mix_sum).sum(1);
  const int64_t n = c.num_audio_token;
  // Local branch: conv1_local -> split dim into n contiguous groups -> LN/SiLU -> conv2 -> LN/SiLU -> conv3 -> LN/SiLU.
  auto x = Conv(w, enc + ".conv1_local", feat, 1);  // [B, dim, T]
  const int64_t t = x.size(2);
  x = x.view({b * n, c.dim / n, t});  // 'b (n c) t -> (b n) c t'
  x = NormAct(x);
  x = NormAct(Conv(w, enc + ".conv2", x, 2));
  x = NormAct(Conv(w, enc + ".conv3", x, 2));  // [(B n), dim, T']
  const int64_t t_out = x.size(2);
  auto local = x.transpose(1, 2).reshape({b, n, t_out, c.dim}).permute({0, 2, 1, 3});  // [B, T', n, dim]
  auto pad = F32(w, enc + ".padding_tokens").to(at::kFloat).expand({b, t_out, 1, c.dim});
  AudioTokens out;
  out.local = at::cat({local, pad}, 2).contiguous();
  // Global branch: conv1_global -> LN/SiLU -> (shared) conv2 -> LN/SiLU -> conv3 -> LN/SiLU -> final_linear.
  auto g = NormAct(Conv(w, enc + ".conv1_global", feat, 1));
  g = NormAct(Conv(w, enc + ".conv2", g, 2));
  g = NormAct(Conv(w, enc + ".conv3", g, 2));
  g = Linear(g.transpose(1, 2), w, enc + ".final_linear");  // [B, T', dim]
  out.global = g.unsqueeze(2).contiguous();
  return out;
}

BlockAudio EncodeBlockAudio(const WeightMap& w, const DitConfig& c, const at::Tensor& audio_input,
                            int64_t prefix_frames, int64_t num_latent_frames) {
  TORCH_CHECK(audio_input.dim() == 4 && audio_input.size(0) == 1, "EncodeBlockAudio: audio_input ",
              audio_input.sizes(), " must be [1, layers, C, T]");
  auto a = audio_input.to(at::kFloat);
  if (prefix_frames > 0) {
    auto first = a.narrow(3, 0, 1).expand({a.size(0), a.size(1), a.size(2), prefix_frames});
    a = at::cat({first, a}, 3);
  }
  BlockAudio out;
  out.all = CausalAudioEncoder(w, c, a);
  const int64_t t = out.all.global.size(1);
  TORCH_CHECK(t >= num_latent_frames, "EncodeBlockAudio: ", t, " audio steps < ", num_latent_frames, " frames");
  out.global = out.all.global.narrow(1, t - num_latent_frames, num_latent_frames)[0].squeeze(1);  // [F, dim]
  out.local = out.all.local.narrow(1, t - num_latent_frames, num_latent_frames)[0];              // [F, n+1, dim]
  return out;
}

}  // namespace liveavatar::models::dit
