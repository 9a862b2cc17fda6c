// wav2vec2 speech encoder (HF `Wav2Vec2ForCTC`, xlsr-53 layout) as used by LiveAvatar's audio encoder
// (golden README §5.2, upstream spec §2.3): per-utterance normalisation, 7-layer conv feature encoder, feature
// projection, weight-normed grouped positional conv, 24 Transformer layers, and the 25 stacked hidden states
// under transformers <= 4.51.3 semantics (the LAST one is the final encoder LayerNorm output).
//
// Weights are data (style.md habit 6): a Wav2Vec2 holds its config and a WeightMap keyed by the HF checkpoint
// names; `encoder.pos_conv_embed.conv.weight` is materialised at load from weight_g/weight_v
// (weight = g·v/‖v‖, norm over dims (0, 1) for each kernel tap, i.e. torch weight_norm with dim=2).
//
// Device/dtype: the forward runs on the weights' device and dtype (LoadOptions); inputs are moved there.
// LayerNorms compute in fp32. The model keeps no state between calls; const methods are thread-safe.
//
// Long audio. The conv feature encoder is local (receptive field 400 samples, hop 320 for xlsr), so it is
// evaluated in chunks with EXACTLY the one-shot result. The positional conv (kernel 128) is local too, but the
// 24 self-attention layers are global: every output frame depends on every input frame, so no windowing of the
// input can reproduce the one-shot result exactly. Two paths:
//   * one-shot (default, exact): the whole utterance at once, like upstream; attention runs in query chunks
//     (exact, memory O(chunk·T) instead of O(T²)); cost O(T²) per layer.
//   * windowed (approximate, opt-in or beyond Wav2Vec2LongAudioOptions::one_shot_max_frames): the conv features
//     are computed exactly for the whole clip, then the positional conv + Transformer run on overlapping frame
//     windows and the centre part of each window is kept. Measured on the tiny golden model, 60 s of speech-like
//     audio (rel. L2 over all 25 states vs one-shot): window 1500 / overlap 250 (the defaults) 2.1e-2,
//     1000 / 200 3.8e-2, 500 / 100 5.7e-2 — far from 1e-4, because random tiny attention is close to uniform
//     over the whole clip (real xlsr attention is more local, but not provably so). Hence one-shot is the default
//     for every clip up to 30 min. See tests/models/audio/wav2vec2_long_test.cpp.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/audio/wav2vec2_config.h"
#include "liveavatar/models/weights.h"

namespace liveavatar::models::audio {

// Checkpoint tensors of Wav2Vec2ForCTC for `cfg` under the real HF names ("wav2vec2.feature_extractor...",
// "lm_head.*"). Optional: lm_head.{weight,bias} (only for logits) and wav2vec2.masked_spec_embed (training only,
// ignored). The positional conv is listed as weight_g [1, 1, K] / weight_v [H, H/G, K] (what the xlsr
// checkpoints and make-tiny store).
std::vector<WeightSpec> Wav2Vec2WeightSpecs(const Wav2Vec2Config& cfg);

// Zero-mean / unit-variance normalisation of one utterance (HF Wav2Vec2FeatureExtractor, do_normalize):
// (x - mean) / sqrt(var + 1e-7), population variance, statistics in float64. wav: [N] or [1, N] -> [1, N] fp32.
at::Tensor NormalizeWaveform(const at::Tensor& wav);

struct Wav2Vec2RunOptions {
  // Conv feature encoder chunk, in output frames (exact for any value). 0 = auto (3000 frames = 60 s).
  int64_t feature_chunk_frames = 0;
  // Self-attention query chunk (exact for any value). 0 = auto: keeps one chunk's fp32 logits <= 256 MiB.
  int64_t attention_query_chunk = 0;
  // Also compute lm_head logits (REQUIRES: has_lm_head()).
  bool compute_logits = false;
};

struct Wav2Vec2LongAudioOptions {
  // Utterances up to this many frames (50 per second) take the exact one-shot path; longer ones the windowed
  // approximation. Default 90000 frames = 30 min: one-shot attention costs O(T²) time but only
  // O(attention_query_chunk·T) memory, so exactness is kept for any realistic clip. 0 = always windowed.
  int64_t one_shot_max_frames = 90000;
  // Windowed path: each window covers `window_frames` frames, of which `overlap_frames` on each side are
  // context only (dropped when stitching; the first/last window keep their outer edge).
  int64_t window_frames = 1500;  // 30 s
  int64_t overlap_frames = 250;  // 5 s each side
};

struct Wav2Vec2Output {
  at::Tensor hidden_states;  // [num_hidden_layers + 1, T, hidden] (batch 1 squeezed): inputs of layers 0..L-1,
                             // then the final encoder LayerNorm output (stable layer norm) / last layer output
  at::Tensor logits;         // [1, T, vocab] when requested, else undefined
};

class Wav2Vec2 {
 public:
  // Loads <dir>/config.json (+ preprocessor_config.json) and <dir>/model.safetensors (else
  // model.safetensors.index.json, else pytorch_model.bin). Errors name the file and keys.
  static StatusOr<Wav2Vec2> Load(const std::string& dir, const LoadOptions& options = {});
  // Binds `store` strictly against Wav2Vec2WeightSpecs(cfg). Also accepts the parametrized weight-norm spelling
  // of newer transformers (pos_conv_embed.conv.parametrizations.weight.original0/original1).
  static StatusOr<Wav2Vec2> FromStore(const Wav2Vec2Config& cfg, const io::TensorStore& store,
                                      const LoadOptions& options = {});

  const Wav2Vec2Config& config() const { return config_; }
  const WeightMap& weights() const { return weights_; }
  bool has_lm_head() const;

  // input_values: [1, N] (or [N]) already normalised (see NormalizeWaveform). One-shot, exact.
  // REQUIRES: N >= ReceptiveField().
  Wav2Vec2Output Forward(const at::Tensor& input_values, const Wav2Vec2RunOptions& run = {}) const;

  // Waveform at config().sampling_rate -> hidden states: normalises (when config().do_normalize), then the
  // one-shot path up to long.one_shot_max_frames, the windowed path beyond. InvalidArgument when the clip is
  // shorter than one frame's receptive field.
  StatusOr<Wav2Vec2Output> Encode(const at::Tensor& waveform, const Wav2Vec2LongAudioOptions& long_opts = {},
                                  const Wav2Vec2RunOptions& run = {}) const;

  // The windowed approximation on normalised input (exact conv features, windowed encoder), whatever the
  // length. REQUIRES: window_frames > 2·overlap_frames >= 0.
  Wav2Vec2Output ForwardWindowed(const at::Tensor& input_values, const Wav2Vec2LongAudioOptions& long_opts,
                                 const Wav2Vec2RunOptions& run = {}) const;

  // Stages (exposed for tests and debugging).
  // input_values [1, N] -> conv features [1, T, conv_dim[-1]] (chunked, exact).
  at::Tensor FeatureEncoder(const at::Tensor& input_values, int64_t chunk_frames = 0) const;
  // conv features -> projected hidden [1, T, H].
  at::Tensor FeatureProjection(const at::Tensor& features) const;
  // projected hidden [1, T, H] -> stacked hidden states [L + 1, T, H].
  at::Tensor EncoderStack(const at::Tensor& hidden, int64_t attention_query_chunk = 0) const;
  // final hidden state [T, H] or [1, T, H] -> logits [1, T, vocab]. REQUIRES: has_lm_head().
  at::Tensor LmHead(const at::Tensor& last_hidden) const;

 private:
  Wav2Vec2(Wav2Vec2Config cfg, WeightMap weights) : config_(std::move(cfg)), weights_(std::move(weights)) {}
  Wav2Vec2Config config_;
  WeightMap weights_;
};

}  // namespace liveavatar::models::audio
