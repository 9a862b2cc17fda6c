// The Wan2.1 VAE as used by LiveAvatar (upstream `WanVAE_` / `WanVAE` in vae2_1.py and vae_streaming.py):
// normalised latents [1, z_dim, 1 + (T−1)/4, H/8, W/8] <-> videos [1, 3, T, H, W] in [−1, 1].
//
// Evaluation is chunked exactly as upstream (golden README §2.1): Encode feeds frame 0 alone, then chunks of 4
// frames; decoding feeds one latent at a time. Only one chunk's activations are alive at a time, plus the
// causal feature cache (two frames per 3-tap conv) and the outputs already produced.
//
// Dtype: the weights' dtype (fp32 or bf16, see LoadWanVae) is the compute dtype; inputs are cast to it. Encode
// and decode results are returned in fp32 (the upstream wrapper's `.float()`).
// Device: whatever device the weights live on; inputs are moved there.
// Parallel decode: with a SpatialParallel (spatial_parallel.h; dist::MakeSpatialParallel gives one over a
// communicator group), every rank of the group passes the same latents, computes the output rows of its latent-row
// slab and, in Decode(), receives the full frames; the result equals the single-rank decode (~1e-7 relative).
// Thread safety: WanVae is immutable after loading and may be shared; a StreamingDecoder is single-threaded.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/vae/config.h"
#include "liveavatar/models/vae/feature_cache.h"
#include "liveavatar/models/vae/spatial_parallel.h"
#include "liveavatar/models/weights.h"

namespace liveavatar::models::vae {

// Config + weights of one VAE. Value type; the weight tensors are shared on copy.
struct WanVae {
  VaeConfig config;
  WeightMap weights;
};

// Loads the weights of `config` from `store` (Wan2.1_VAE.safetensors or .pth) with `options.dtype` (kFloat or
// kBFloat16). Errors name the file and the offending keys.
StatusOr<WanVae> LoadWanVae(const io::TensorStore& store, const VaeConfig& config, const LoadOptions& options);
// Opens `checkpoint_path` (any format OpenTensorStore reads) and reads `config_path` (config.json).
StatusOr<WanVae> LoadWanVae(const std::string& checkpoint_path, const std::string& config_path,
                            const LoadOptions& options);

// video: [1, 3, T, H, W] in [−1, 1] -> normalised latent mu: [1, z_dim, 1 + (T−1)/4, H/8, W/8], fp32
// ((mu − mean) / std; the log-variance half is dropped; every spatial ÷2 rounds down).
// REQUIRES: T = 1 + 4k (k >= 0). (Throws c10::Error otherwise.)
at::Tensor Encode(const WanVae& vae, const at::Tensor& video);

// latent: [1, z_dim, n, h, w] (normalised) -> raw video [1, 3, 1 + 4(n−1), 8h, 8w], fp32, NOT clamped
// (upstream WanVAE_.decode). A fresh StreamingDecoder fed all latents at once. REQUIRES: n >= 1.
// With `parallel`: collective over its group (every rank passes the same latent and gets the same full video).
// REQUIRES then: CheckSpatialSplit(vae.config, h, parallel->world()) is OK (throws c10::Error with its message).
at::Tensor Decode(const WanVae& vae, const at::Tensor& latent, std::shared_ptr<SpatialParallel> parallel = nullptr);

// The wrapper's post-processing: raw [1, 3, T, H, W] -> fp32 clamp to [−1, 1] -> [3, T, H, W].
at::Tensor ClampVideo(const at::Tensor& video_raw);

// Streaming decoder (upstream `WanVAE.stream_decode`): owns the decoder's causal feature cache (one per spatial
// tile when config.tile_decode is on) and keeps it across calls, so decoding latents in consecutive chunks of
// any size returns exactly the frames of one full Decode() of their concatenation. Unlike upstream, the state
// is reset explicitly with Reset() (upstream never resets between generations).
//
// With a SpatialParallel the decoder is one rank of a spatial-parallel decode (spatial_parallel.h): every rank of
// the group makes the same calls with the same latents; each keeps the causal cache of its own rows only.
//
// Holds a pointer to `vae`, which must outlive the decoder. Not thread-safe. Not copyable.
class StreamingDecoder {
 public:
  // `parallel` (may be null: the whole frame on this process) is shared with the caller. A SpatialParallel of
  // world 1 behaves exactly as none (tiling included).
  explicit StreamingDecoder(const WanVae* vae, std::shared_ptr<SpatialParallel> parallel = nullptr);
  StreamingDecoder(const StreamingDecoder&) = delete;
  StreamingDecoder& operator=(const StreamingDecoder&) = delete;

  // latents: [1, z_dim, n, h, w] normalised, n >= 0 -> raw video [1, 3, F, 8h, 8w] fp32 (not clamped), where
  // F = 4n, or 1 + 4(n−1) when this call holds the first latent since construction / Reset().
  // REQUIRES: the same h, w as the previous calls since Reset().
  // Parallel: collective; every rank gets the full frames (its own rows plus the gathered rows of the others).
  // REQUIRES then: CheckSpatialSplit(config, h, world) is OK (throws c10::Error with its message otherwise).
  at::Tensor Decode(const at::Tensor& latents);

  // Like Decode(), but returns only this rank's output rows, [1, 3, F, LocalOutputRows(h).second, 8w]; no gather
  // of the result (the caller collects the slabs where it needs them). Without a SpatialParallel: == Decode().
  at::Tensor DecodeLocal(const at::Tensor& latents);
  // {first output row, row count} of this rank's slab for latents of height h ({0, 8h} without a split).
  std::pair<int64_t, int64_t> LocalOutputRows(int64_t latent_h) const;
  const std::shared_ptr<SpatialParallel>& spatial_parallel() const { return parallel_; }

  // Forgets the causal state: the next call behaves like the first call of a fresh decoder.
  void Reset();

  // Latent frames decoded since construction / Reset().
  int64_t latents_seen() const { return latents_seen_; }
  // Bytes held by the feature cache(s).
  int64_t cache_bytes() const;

 private:
  // Whether rows are split over several ranks (a SpatialParallel of world 1 is the whole-frame path, tiling too).
  bool Split() const { return parallel_ != nullptr && parallel_->world() > 1; }
  // One latent frame (after conv2, [1, z_dim, 1, h, w] in the compute dtype) -> raw frames, fp32.
  at::Tensor DecodeFrame(const at::Tensor& x);

  const WanVae* vae_;
  std::shared_ptr<SpatialParallel> parallel_;  // null: whole frame
  SpatialSplit split_;                         // valid while parallel_ && latent_h_ >= 0
  std::vector<VaeFeatureCache> caches_;        // one per spatial tile (one when tiling is off)
  int64_t latent_h_ = -1;
  int64_t latent_w_ = -1;
  int64_t latents_seen_ = 0;
};

}  // namespace liveavatar::models::vae
