// Audio feature bucketing for the S2V DiT (golden README §5.1; upstream spec §2.3 steps 4-6): stacked wav2vec2
// hidden states at 50 Hz -> 30 fps linear interpolation -> per-video-frame buckets at 25 fps -> the pipeline's
// [1, layers, C, frames] layout, sliced per clip and block.
//
// Pure functions on tensors (any device/dtype the inputs have; indices are computed on the host). Thread-safe.
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>

namespace liveavatar::models::audio {

// Upstream `linear_interpolation(x, input_fps, output_fps)`: x [L, T_in, C] -> [L, T_out, C] with
// T_out = int(T_in / input_fps * output_fps) (Python float arithmetic) and F.interpolate(mode="linear",
// align_corners=True) along time. REQUIRES: T_in >= 1; T_out may be 0 (empty result).
at::Tensor LinearInterpolateFps(const at::Tensor& x, double input_fps = 50.0, double output_fps = 30.0);

// Number of clips: nr = int(T30 / (batch_frames · video_rate / fps)) + 1.
int64_t NumAudioClips(int64_t t30, int64_t batch_frames, double fps = 25.0, double video_rate = 30.0);

// 30-fps source index of each of the nr·batch_frames output frames: round(i-th point of
// linspace(0, N/fps, N, endpoint=False) · video_rate) with numpy rounding (half to even), clipped to the padded
// length. Indices >= T30 denote zero frames.
std::vector<int64_t> AudioBucketIndices(int64_t t30, int64_t batch_frames, double fps = 25.0,
                                        double video_rate = 30.0);

struct AudioBuckets {
  at::Tensor buckets;     // [N, L, C·(2m+1)] (upstream `get_audio_embed_bucket_fps` output)
  int64_t num_clips = 0;  // nr
};

// Upstream `get_audio_embed_bucket_fps(features30, fps, batch_frames, m, video_rate=30)` for stacked layers
// features30 [L, T30, C] (L > 1): frame i takes source indices idx_i + j·stride, j in [-m, m], stride =
// int(video_rate / fps), clamped to [0, T30-1] and concatenated along C; frames with idx_i >= T30 are zero.
AudioBuckets BucketAudioFeatures(const at::Tensor& features30, int64_t batch_frames, double fps = 25.0,
                                 int64_t m = 0, double video_rate = 30.0);

// Pipeline layout: buckets [N, L, C'] -> audio_emb [1, L, C', N] (unsqueeze(0).permute(0, 2, 3, 1)).
at::Tensor AudioEmbedLayout(const at::Tensor& buckets);

// Slice of audio_emb [1, L, C, N] for block `block` of clip `clip`: frames
// [clip·frames_per_clip + block·block_frames, + block_frames) -> [1, L, C, block_frames].
// REQUIRES: the range lies inside N.
at::Tensor AudioBlockSlice(const at::Tensor& audio_emb, int64_t clip, int64_t block, int64_t frames_per_clip,
                           int64_t block_frames = 12);

// Everything from stacked 50 Hz hidden states [L, T50, C] to audio_emb [1, L, C, nr·F] (fps 25, m = 0).
struct AudioEmbedding {
  at::Tensor features_30fps;  // [L, T30, C]
  at::Tensor audio_emb;       // [1, L, C, nr·F]
  int64_t num_clips = 0;
};
AudioEmbedding ComputeAudioEmbedding(const at::Tensor& hidden_states_50hz, int64_t infer_frames, double fps = 25.0);

}  // namespace liveavatar::models::audio
