// CausalAudioEncoder of the S2V DiT (checkpoint prefix "casual_audio_encoder", upstream spelling): a learned
// mix of the 25 wav2vec2 hidden layers followed by MotionEncoder_tc (causal replicate-padded Conv1d stack with a
// 4-group local branch and a global branch sharing conv2/conv3). Golden README §1.2.
//
// Runs in fp32 whatever the model dtype (an fp32 island upstream). Thread safety: pure functions.
#pragma once

#include <ATen/core/Tensor.h>

#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/weights.h"

namespace liveavatar::models::dit {

struct AudioTokens {
  at::Tensor global;  // [1, T, 1, dim]
  at::Tensor local;   // [1, T, num_audio_token + 1, dim] (last token = padding_tokens)
};

// CausalConv1d: left-pads time by kernel−1 with replicate padding, then Conv1d. x: [B, C, T].
at::Tensor CausalConv1d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t stride);

// features: [1, 25, audio_dim, T_in] -> tokens over T = ceil(ceil(T_in / 2) / 2) time steps.
AudioTokens CausalAudioEncoder(const WeightMap& weights, const DitConfig& config, const at::Tensor& features);

// Streaming use: prepends `prefix_frames` (73) copies of the first frame of `audio_input` [1, 25, audio_dim, T],
// encodes, and keeps the last `num_latent_frames` time steps: global [F, dim], local [F, num_audio_token+1, dim].
struct BlockAudio {
  at::Tensor global;  // [F, dim]
  at::Tensor local;   // [F, n + 1, dim]
  AudioTokens all;    // every time step (debugging)
};
BlockAudio EncodeBlockAudio(const WeightMap& weights, const DitConfig& config, const at::Tensor& audio_input,
                            int64_t prefix_frames, int64_t num_latent_frames);

}  // namespace liveavatar::models::dit
