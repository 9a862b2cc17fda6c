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
#include "liveavatar/runtime/block_offload.h"
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

// Ring residency (--offload_kv_cache, or chosen by the memory planner; docs/offload.md): the owned step caches
// live in host memory (pinned in CUDA builds) and only `device_slots` step caches live on the device. Before a
// step runs, its cache is brought into a slot (only what the slot lacks: the cond rows and cond_end when the slot
// changes step, and ring rows [0, active_end) not yet loaded); after the call only the ring rows this block wrote
// (PlanRing's [write_pos, write_pos + F·fs)) go back to the host, and after a sink prefill only the cond rows.
// With two or more slots the next owned step (cyclically: the first step of the next block after the last) is
// copied in on a side stream while the current step runs (CUDA; synchronous copies on a CPU device). With as
// many slots as owned steps nothing is ever evicted and only the write-backs move.
// Results are bit-identical to the resident mode (the attended rows are the same bytes).
struct RingResidency {
  bool enabled = false;
  int device_slots = 2;   // device step caches, >= 1 (capped at the owned step count)
  bool pin_memory = true;  // page-lock the host caches (CUDA builds only)
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
  // Bytes held by the owned caches (on the host under ring residency).
  int64_t cache_bytes() const;

  // Switches ring residency on or off (see RingResidency); the caches' contents move with them, so it may be
  // called at any time between calls. Throws c10::Error for device_slots < 1.
  void set_ring_residency(const RingResidency& residency);
  const RingResidency& ring_residency() const { return ring_; }
  // Step-cache bytes on the cache device: every owned cache (resident) or the slots (ring residency; one step
  // each, runtime::DitCacheBytes).
  int64_t device_cache_bytes() const;
  // Step-cache bytes kept in host memory under ring residency (0 when resident).
  int64_t host_cache_bytes() const;
  // Host <-> device bytes copied for ring residency so far (in, out).
  int64_t ring_bytes_in() const { return ring_bytes_in_; }
  int64_t ring_bytes_out() const { return ring_bytes_out_; }
  // The authoritative cache of an owned step (the host copy under ring residency, after waiting for pending
  // write-backs). For inspection and tests.
  const runtime::DitStepCache& StepCache(int64_t step);

 private:
  // A device step cache of ring residency.
  struct Slot {
    runtime::DitStepCache cache;
    int64_t step = -1;          // owned step it holds, -1 = none
    int64_t ring_valid = 0;     // ring rows [0, ring_valid) hold the step's data
    int64_t last_use = 0;
    runtime::TransferEvent ready;
  };

  runtime::DitStepCache& CacheOf(int64_t step);
  void SinkAll();
  // Ring residency: the slot holding `step` with ring rows [0, ring_end) loaded (copies issued, not waited);
  // evicts the least recently used slot not holding `keep_step`; nullptr when none may be evicted.
  Slot* Acquire(int64_t step, int64_t ring_end, int64_t keep_step);
  // Ring residency: copies ring rows [begin, end) of the slot back into its step's host cache.
  void WriteBackRing(Slot& slot, int64_t begin, int64_t end);

  const models::dit::CausalWanS2V* dit_;
  const FlowMatchEulerScheduler* scheduler_;
  StreamGeometry geometry_;
  RelativeDistSource relative_dist_;
  int64_t first_step_;
  std::vector<runtime::DitStepCache> caches_;  // the owned steps' caches (host copies under ring residency)
  at::Tensor context_, ref_latents_, motion_latents_;
  FlowTap flow_tap_;
  c10::TensorOptions cache_options_;
  RingResidency ring_;
  runtime::HostAllocation host_alloc_;  // backs caches_ under ring residency
  std::vector<Slot> slots_;
  std::unique_ptr<runtime::TransferStream> transfer_;
  int64_t use_clock_ = 0;
  int64_t ring_bytes_in_ = 0, ring_bytes_out_ = 0;
};

}  // namespace liveavatar::pipeline
