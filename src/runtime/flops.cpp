#include "liveavatar/runtime/flops.h"

namespace liveavatar::runtime {

namespace {

double D(int64_t v) { return static_cast<double>(v); }

// Work common to both calls: text embedding, time conditioning over `time_tokens` positions.
FlopCount Conditioning(const DitFlopShape& s, int64_t time_tokens) {
  FlopCount f;
  f.linear += LinearFlops(s.text_len, s.text_dim, s.dim) + LinearFlops(s.text_len, s.dim, s.dim);
  f.linear += LinearFlops(time_tokens, s.freq_dim, s.dim) + LinearFlops(time_tokens, s.dim, s.dim) +
              LinearFlops(time_tokens, s.dim, 6 * s.dim);
  return f;
}

// One transformer block (self-attention, text cross-attention, FFN) on n tokens with `self_keys` keys.
FlopCount Block(const DitFlopShape& s, int64_t n, int64_t self_keys) {
  FlopCount f;
  f.linear += 4 * LinearFlops(n, s.dim, s.dim);                                         // self q, k, v, o
  f.attention += AttentionFlops(n, self_keys, s.dim);
  f.linear += 2 * LinearFlops(n, s.dim, s.dim) + 2 * LinearFlops(s.text_len, s.dim, s.dim);  // cross q, o; k, v
  f.attention += AttentionFlops(n, s.text_len, s.dim);
  f.linear += LinearFlops(n, s.dim, s.ffn_dim) + LinearFlops(n, s.ffn_dim, s.dim);
  return f;
}

}  // namespace

double LinearFlops(int64_t tokens, int64_t in, int64_t out) { return 2.0 * D(tokens) * D(in) * D(out); }

double AttentionFlops(int64_t queries, int64_t keys, int64_t dim) { return 4.0 * D(queries) * D(keys) * D(dim); }

double ConvFlops(int64_t output_positions, int64_t in_channels, int64_t kernel_volume, int64_t out_channels) {
  return 2.0 * D(output_positions) * D(in_channels) * D(kernel_volume) * D(out_channels);
}

int64_t DitSinkTokens(const DitFlopShape& s, int64_t latent_h, int64_t latent_w) {
  const int64_t fs = (latent_h / s.patch_h) * (latent_w / s.patch_w);
  return fs + fs + (latent_h / 4) * (latent_w / 4) + 4 * (latent_h / 8) * (latent_w / 8);
}

FlopCount DitStreamCallFlops(const DitFlopShape& s, int64_t frames, int64_t latent_h, int64_t latent_w,
                             int64_t self_keys) {
  const int64_t fs = (latent_h / s.patch_h) * (latent_w / s.patch_w);
  const int64_t n = (frames / s.patch_t) * fs;
  const int64_t patch_volume = s.patch_t * s.patch_h * s.patch_w;
  FlopCount f = Conditioning(s, 2 * frames);  // timesteps of the frames + as many zeros
  f.conv += ConvFlops(n, s.in_dim, patch_volume, s.dim) + ConvFlops(n, s.cond_dim, patch_volume, s.dim);
  for (int64_t i = 0; i < s.num_layers; ++i) f += Block(s, n, self_keys);
  // Audio injectors: AdaLN linear on one global token per frame; cross-attention of every token to the
  // num_audio_token + 1 audio tokens of its frame.
  const int64_t audio_keys = s.num_audio_token + 1;
  FlopCount inj;
  inj.linear += LinearFlops(frames, s.dim, 2 * s.dim);
  inj.linear += 2 * LinearFlops(n, s.dim, s.dim) + 2 * LinearFlops(frames * audio_keys, s.dim, s.dim);
  inj.attention += AttentionFlops(n, audio_keys, s.dim);
  for (int64_t j = 0; j < s.num_injected_layers; ++j) f += inj;
  f.linear += LinearFlops(n, s.dim, s.out_dim * patch_volume);  // head
  return f;
}

FlopCount DitSinkPrefillFlops(const DitFlopShape& s, int64_t latent_h, int64_t latent_w) {
  const int64_t fs = (latent_h / s.patch_h) * (latent_w / s.patch_w);
  const int64_t n = DitSinkTokens(s, latent_h, latent_w);
  FlopCount f = Conditioning(s, 1);  // t = 0
  f.conv += ConvFlops(fs, s.in_dim, s.patch_t * s.patch_h * s.patch_w, s.dim);            // reference latent
  f.conv += ConvFlops(fs, s.in_dim, 1 * 2 * 2, s.dim);                                     // proj: last frame
  f.conv += ConvFlops((latent_h / 4) * (latent_w / 4), s.in_dim, 2 * 4 * 4, s.dim);        // proj_2x: 2 frames
  f.conv += ConvFlops(4 * (latent_h / 8) * (latent_w / 8), s.in_dim, 4 * 8 * 8, s.dim);    // proj_4x: 16 frames
  for (int64_t i = 0; i < s.num_layers; ++i) f += Block(s, n, n);
  return f;
}

}  // namespace liveavatar::runtime
