// StreamingDenoiser: the DiT side of Live Avatar's streaming loop (golden README §1.8, upstream
// causal_s2v_pipeline_tpp.py): one KV cache per denoising step ("timestep forcing"), a sink prefill into each,
// then every block of 3 latent frames goes through the steps in order, each step writing its own ring, with
// the Euler update between steps. The rolling-sink offset d of every call comes from a pluggable source.
//
// A denoiser may own all steps (one process) or a contiguous subset (a TPP stage owns the steps of its rank):
// RunStep() is the unit the TPP driver calls; DenoiseBlock() runs every owned step in order.
//
// Device/dtype: caches live where `cache_options` says (normally the DiT's device and dtype); latents are fp32.
// Thread safety: none; one owner.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

#include "liveavatar/models/dit/model.h"
#include "liveavatar/pipeline/scheduler.h"
#include "liveavatar/runtime/kv_cache.h"

namespace liveavatar::pipeline {

// d for the call of (clip, block, step); the reference draws random.randint(4, 30) per call.
using RelativeDistSource = std::function<int64_t(int64_t clip, int64_t block, int64_t step)>;
// Deterministic in (seed, clip, block, step), uniform on [4, 30].
RelativeDistSource SeededRelativeDist(uint64_t seed);
// Always `d`.
RelativeDistSource FixedRelativeDist(int64_t d);

struct StreamGeometry {
  int64_t latent_h = 0;             // latent grid (pixels / 8)
  int64_t latent_w = 0;
  int64_t infer_frames = 48;        // video frames per clip
  int64_t frames_per_block = 3;     // latent frames per block
  int64_t motion_frames = 73;       // pixel motion frames of the reference (FramePack history)
  int64_t latent_motion_frames = 19;
  int64_t latent_frames_per_clip() const {
    return runtime::LatentFramesPerClip(infer_frames, motion_frames, latent_motion_frames);
  }
  int64_t blocks_per_clip() const { return latent_frames_per_clip() / frames_per_block; }
  int64_t video_frames_per_block() const { return infer_frames / blocks_per_clip(); }
};

class StreamingDenoiser {
 public:
  // Owns the caches of steps [first_step, first_step + num_steps) of `scheduler` (num_steps < 0: all).
  // `dit` and `scheduler` must outlive the denoiser.
  StreamingDenoiser(const models::dit::CausalWanS2V* dit, const FlowMatchEulerScheduler* scheduler,
                    const StreamGeometry& geometry, const c10::TensorOptions& cache_options,
                    RelativeDistSource relative_dist, int64_t first_step = 0, int64_t num_steps = -1);

  // Sink prefill of every owned step cache with the reference latent [1, C, 1, h, w], the FramePack motion
  // latents [1, C, Fm, h, w] and the text context [L, text_dim] (kept for the block calls).
  void Prefill(const at::Tensor& context, const at::Tensor& ref_latents, const at::Tensor& motion_latents);

  // Re-runs the sink with a new reference latent (TPP semantics before clip 1); rings are kept.
  void RefreshSink(const at::Tensor& ref_latents);

  // One denoising step `step` (an owned step) of block (clip, block): x [C, F, h, w] at σ[step] -> x at
  // σ[step + 1] (fp32). `audio_block`: [1, 25, audio_dim, 4·F] wav2vec2 features of the block.
  at::Tensor RunStep(int64_t step, int64_t clip, int64_t block, const at::Tensor& x, const at::Tensor& audio_block);

  // Every owned step in order.
  at::Tensor DenoiseBlock(int64_t clip, int64_t block, const at::Tensor& x, const at::Tensor& audio_block);

  // Optional observer of each flow prediction (tests compare them with dbg.* tensors).
  using FlowTap = std::function<void(int64_t clip, int64_t block, int64_t step, const at::Tensor& flow)>;
  void set_flow_tap(FlowTap tap) { flow_tap_ = std::move(tap); }

  // Zeroes every cache (a new generation).
  void Reset();

  const StreamGeometry& geometry() const { return geometry_; }
  int64_t first_step() const { return first_step_; }
  int64_t num_steps() const { return static_cast<int64_t>(caches_.size()); }
  // Bytes held by the owned caches.
  int64_t cache_bytes() const;

 private:
  runtime::DitStepCache& CacheOf(int64_t step);
  void SinkAll();

  const models::dit::CausalWanS2V* dit_;
  const FlowMatchEulerScheduler* scheduler_;
  StreamGeometry geometry_;
  RelativeDistSource relative_dist_;
  int64_t first_step_;
  std::vector<runtime::DitStepCache> caches_;
  at::Tensor context_, ref_latents_, motion_latents_;
  FlowTap flow_tap_;
};

}  // namespace liveavatar::pipeline
