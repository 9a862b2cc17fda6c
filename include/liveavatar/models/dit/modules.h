// Forward functions of the CausalWanModel_S2V sub-modules, one per reference module, over a WeightMap whose keys
// are the checkpoint keys (module tree == key tree). Shapes are given per function; `dim` = config.dim.
//
// Dtypes: Linear/conv weights may be bf16 or fp32; functions cast activations to the weight dtype at each
// projection. Functions documented "fp32" compute and return fp32 (upstream autocast-fp32 islands).
// Thread safety: pure functions.
#pragma once

#include <functional>
#include <string>

#include <ATen/core/Tensor.h>

#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/weights.h"

namespace liveavatar::models::dit {

// Softmax attention over [B, L, H, D] tensors (models::Attention by default; Ulysses wraps it later).
using AttentionFn = std::function<at::Tensor(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v)>;

// Sinusoidal embedding (float64, cast to fp32): positions [N] -> [N, freq_dim], cos half first.
at::Tensor SinusoidalEmbedding(const at::Tensor& positions, int64_t freq_dim);

// time_embedding: Linear(freq_dim→dim) → SiLU → Linear(dim→dim). fp32. sinusoid [N, freq_dim] -> e [N, dim].
at::Tensor TimeEmbedding(const WeightMap& w, const at::Tensor& sinusoid);
// time_projection: SiLU → Linear(dim→6·dim). fp32. e [N, dim] -> e0 [N, 6, dim].
at::Tensor TimeProjection(const WeightMap& w, const at::Tensor& e);

// text_embedding: zero-pads context [L, text_dim] to text_len rows, Linear → GELU(tanh) → Linear -> [1, text_len, dim].
at::Tensor TextEmbedding(const WeightMap& w, const DitConfig& c, const at::Tensor& context);

// Conv3d with kernel = stride (patch_embedding, cond_encoder, frame_packer.proj*): x [1, C, T, H, W] ->
// [1, dim, T', H', W'] in the weight dtype.
at::Tensor PatchConv(const WeightMap& w, const std::string& prefix, const at::Tensor& x);
// [1, dim, T, H, W] -> [1, T·H·W, dim] (frame-major tokens).
at::Tensor FlattenTokens(const at::Tensor& x);

// FramePack motioner: motion_latents [1, 16, Fm, H, W] (front zero-padded / cropped to the last 19 frames) ->
// tokens [1, N, dim] in the order [post (proj), 2x (proj_2x), 4x (proj_4x)]. `sizes_2x/4x` receive the
// (h, w) token-grid sizes of the 2x/4x groups (for RoPE).
at::Tensor FramePack(const WeightMap& w, const at::Tensor& motion_latents, int64_t* h2, int64_t* w2, int64_t* h4,
                     int64_t* w4);

// WanCrossAttention with q/k RMSNorm (text cross-attn of a block, or an audio injector): x [B, Lq, dim],
// context [B, Lk, dim] -> [B, Lq, dim].
at::Tensor CrossAttention(const WeightMap& w, const DitConfig& c, const std::string& prefix, const at::Tensor& x,
                          const at::Tensor& context, const AttentionFn& attention);

// ffn: Linear(dim→ffn_dim) → GELU(tanh) (ffn.1) → Linear(ffn_dim→dim). x [.., dim].
at::Tensor Ffn(const WeightMap& w, const std::string& prefix, const at::Tensor& x);

// Modulated LayerNorm: LN(x, eps, no affine)·(1 + scale) + shift in fp32 over frames: x [F, fs, dim] (any
// dtype), shift/scale [F, dim] -> fp32 [F, fs, dim].
at::Tensor Modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, double eps);

// Audio injector j after a block: x [F, fs, dim] (fp32 residual), audio_global [F, dim], audio_local
// [F, n+1, dim] -> x + CrossAttn_j(AdaLN_j(x, global), local), fp32.
at::Tensor AudioInjector(const WeightMap& w, const DitConfig& c, int64_t injector, const at::Tensor& x,
                         const at::Tensor& audio_global, const at::Tensor& audio_local, const AttentionFn& attention,
                         c10::ScalarType compute_dtype);

// CausalHead_S2V: x [1, F·fs, dim], e [F, dim] -> [1, F·fs, out_dim·prod(patch)], fp32.
at::Tensor Head(const WeightMap& w, const DitConfig& c, const at::Tensor& x, const at::Tensor& e);

// Unpatchify: [1, F·hp·wp, out_dim·prod(patch)] -> [out_dim, F, hp·ph, wp·pw].
at::Tensor Unpatchify(const DitConfig& c, const at::Tensor& x, int64_t frames, int64_t hp, int64_t wp);

}  // namespace liveavatar::models::dit
