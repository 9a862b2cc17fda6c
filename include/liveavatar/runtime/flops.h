// Analytic FLOP counts of the DiT calls `liveavatar bench` times (docs/performance.md). A multiply-add is 2
// FLOPs; element-wise work (norms, RoPE, softmax, activations, modulation) is not counted, so achieved TFLOP/s
// compare directly with a GEMM peak. What is counted, for one call as this engine runs it:
//   linears   every GEMM: blocks (self q/k/v/o on the queries; cross q/o on the queries, k/v on text_len text
//             tokens), FFN, audio injectors (q/o on the queries, k/v on the audio tokens, AdaLN linear), text
//             embedding (text_len tokens), time embedding/projection, head;
//   attention QKᵀ and PV over the actual key count: 4·queries·keys·dim per attention (dim = heads·head_dim);
//   convs     patch embedding, cond encoder, FramePack projections (2·outputs·C_in·kernel volume·C_out).
// Not counted: the causal audio encoder (a few small 1-D convs over <100 steps, < 0.01% of a 14B call).
//
// Depends on plain numbers only (runtime sits below the models); callers fill DitFlopShape from a DitConfig.
// Thread safety: pure functions.
#pragma once

#include <cstdint>

namespace liveavatar::runtime {

struct FlopCount {
  double linear = 0;
  double attention = 0;
  double conv = 0;
  double total() const { return linear + attention + conv; }
  FlopCount& operator+=(const FlopCount& o) {
    linear += o.linear;
    attention += o.attention;
    conv += o.conv;
    return *this;
  }
};

// 2·tokens·in·out.
double LinearFlops(int64_t tokens, int64_t in, int64_t out);
// QKᵀ + PV for `queries` queries over `keys` keys with heads·head_dim = `dim`: 4·queries·keys·dim.
double AttentionFlops(int64_t queries, int64_t keys, int64_t dim);
// Dense convolution: 2·output_positions·in_channels·kernel_volume·out_channels.
double ConvFlops(int64_t output_positions, int64_t in_channels, int64_t kernel_volume, int64_t out_channels);

// The DiT dimensions the count needs (models::dit::DitConfig fields of the same names).
struct DitFlopShape {
  int64_t dim = 5120;
  int64_t ffn_dim = 13824;
  int64_t num_layers = 40;
  int64_t num_injected_layers = 12;  // audio_inject_layers.size()
  int64_t in_dim = 16;
  int64_t cond_dim = 16;
  int64_t out_dim = 16;
  int64_t patch_t = 1, patch_h = 2, patch_w = 2;
  int64_t text_len = 512;
  int64_t text_dim = 4096;
  int64_t freq_dim = 256;
  int64_t num_audio_token = 4;  // per frame the injector attends to num_audio_token + 1 audio tokens
};

// One streaming call (StreamBlock) over `frames` latent frames of a latent grid latent_h × latent_w whose
// self-attention attends to `self_keys` keys (ring rows in use + cond rows; the block's own rows included).
FlopCount DitStreamCallFlops(const DitFlopShape& s, int64_t frames, int64_t latent_h, int64_t latent_w,
                             int64_t self_keys);

// One sink prefill (SinkPrefill) for a latent grid latent_h × latent_w: reference + FramePack tokens
// (2.5 frames' worth at patch 1×2×2), self-attention among them, no injectors, no head.
FlopCount DitSinkPrefillFlops(const DitFlopShape& s, int64_t latent_h, int64_t latent_w);

// Sink token count for the grid (what DitSinkPrefillFlops attends over): fs + fs + (h/4)(w/4) + 4(h/8)(w/8) with
// fs = (h/patch_h)(w/patch_w); the FramePack kernels are (1,2,2), (2,4,4) and (4,8,8).
int64_t DitSinkTokens(const DitFlopShape& s, int64_t latent_h, int64_t latent_w);

}  // namespace liveavatar::runtime
