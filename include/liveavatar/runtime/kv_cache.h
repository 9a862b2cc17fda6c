// Per-denoising-step caches of the streaming S2V DiT ("timestep forcing": one DitStepCache per sampling step).
//
// Per layer: a KV ring {k, v: [1, ring_tokens, heads, head_dim]} holding RoPE-rotated keys of the most recent
// blocks, and a cond cache {cond_k, cond_v: [1, cond_capacity, heads, head_dim], cond_end} written by the sink
// prefill (un-rotated keys of the reference + motion tokens). Sizes come from the resolution and the clip
// length (DitCacheGeometry), never from constants.
//
// Device/dtype: whatever TensorOptions the cache is created with; the model writes into it with index copies.
// Thread safety: none; one caller (the rank running that step) owns a cache.
#pragma once

#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/core/TensorOptions.h>

namespace liveavatar::runtime {

// Shape of one step cache.
struct DitCacheGeometry {
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t head_dim = 0;
  int64_t frame_seqlen = 0;   // tokens per latent frame (h' · w')
  int64_t ring_tokens = 0;    // ring length = latent frames per clip · frame_seqlen
  int64_t cond_capacity = 0;  // rows of the cond cache (>= the sink's token count)
};

// Bytes of one DitStepCache of `geometry` with elements of `dtype`: per layer k + v rings and cond_k + cond_v
// (4 · rows · heads · head_dim elements). The one formula for the memory planner and the accounting.
int64_t DitCacheBytes(const DitCacheGeometry& geometry, c10::ScalarType dtype);

// Latent frames of one clip: (infer_frames + 3 + motion_frames) / 4 − latent_motion_frames (upstream
// lat_target_frames; 48, 73, 19 → 12).
int64_t LatentFramesPerClip(int64_t infer_frames, int64_t motion_frames, int64_t latent_motion_frames);

// Number of sink tokens for a latent grid H x W with patch (1, ph, pw) and a 19-frame FramePack:
// reference (fs) + post (fs) + 2x ((H/4)(W/4)) + 4x (4·(H/8)(W/8)).
int64_t SinkTokenCount(int64_t latent_h, int64_t latent_w, int64_t patch_h, int64_t patch_w);

// Where a streaming call writes its tokens and which ring rows it attends.
struct RingPlan {
  int64_t write_pos = 0;   // first ring row written
  int64_t active_end = 0;  // rows [0, active_end) are attended (after the write)
  bool wrapped = false;    // current_start >= ring: the whole ring is active
};
// REQUIRES: current_start >= 0, num_tokens > 0, write_pos + num_tokens <= ring_tokens (block-aligned ring).
// write_pos = current_start if current_start < ring_tokens else current_start mod ring_tokens; active range
// [0, current_start + num_tokens) before the first wrap, the whole ring afterwards.
RingPlan PlanRing(int64_t current_start, int64_t num_tokens, int64_t ring_tokens);

struct LayerKvCache {
  at::Tensor k, v;            // [1, ring_tokens, heads, head_dim], rotated keys
  at::Tensor cond_k, cond_v;  // [1, cond_capacity, heads, head_dim], un-rotated keys
  int64_t cond_end = 0;       // rows [0, cond_end) of cond_k/cond_v are valid
};

class DitStepCache {
 public:
  DitStepCache() = default;  // empty (no layers); assign a real cache before use
  // Zero-filled cache of `geometry` with `options` (dtype/device).
  DitStepCache(const DitCacheGeometry& geometry, const c10::TensorOptions& options);
  // A cache over caller-allocated tensors (e.g. views into pinned host slabs), used as they are (not zeroed).
  // REQUIRES: one LayerKvCache per layer, every tensor of the geometry's shape, one dtype and device.
  static DitStepCache FromTensors(const DitCacheGeometry& geometry, std::vector<LayerKvCache> layers);

  DitStepCache(const DitStepCache&) = delete;
  DitStepCache& operator=(const DitStepCache&) = delete;
  DitStepCache(DitStepCache&&) = default;
  DitStepCache& operator=(DitStepCache&&) = default;

  const DitCacheGeometry& geometry() const { return geometry_; }
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  LayerKvCache& layer(int64_t i);
  const LayerKvCache& layer(int64_t i) const;

  // Bytes of the four tensors of every layer (== DitCacheBytes(geometry(), dtype)).
  int64_t bytes() const;

  // Performs dst.copy_(src) (e.g. runtime::TransferStream::Copy for an asynchronous copy); null = copy_.
  using CopyFn = std::function<void(const at::Tensor& dst, const at::Tensor& src)>;
  // Copies ring rows [begin, end) of every layer's k and v from `src` (same geometry; any device/dtype).
  void CopyRingRowsFrom(const DitStepCache& src, int64_t begin, int64_t end, const CopyFn& copy = nullptr);
  // Copies cond rows [0, src cond_end) and cond_end of every layer from `src`.
  void CopyCondFrom(const DitStepCache& src, const CopyFn& copy = nullptr);

  // Zeroes rings and cond caches and resets cond_end (a new generation).
  void Reset();
  // Zeroes only the cond caches (before a sink re-prefill that should not see stale rows).
  void ResetCond();

  // Writes `k`/`v` [1, n, heads, head_dim] into ring rows [plan.write_pos, +n) of layer `i`.
  void WriteRing(int64_t i, const RingPlan& plan, const at::Tensor& k, const at::Tensor& v);
  // Writes `k`/`v` [1, n, heads, head_dim] into cond rows [0, n) of layer `i`; cond_end = max(cond_end, n).
  // REQUIRES: n <= cond_capacity.
  void WriteCond(int64_t i, const at::Tensor& k, const at::Tensor& v);

 private:
  DitCacheGeometry geometry_;
  std::vector<LayerKvCache> layers_;
};

}  // namespace liveavatar::runtime
