// CausalWanS2V: the streaming S2V DiT of Live Avatar (upstream CausalWanModel_S2V, inference path) over a
// WeightMap. Two entry points, both taking every input explicitly and writing into a caller-owned per-step
// cache (runtime::DitStepCache):
//   * SinkPrefill: reference + FramePack motion tokens at t = 0; writes the un-rotated cond k/v of every layer.
//   * StreamBlock: one block of latent frames at one denoising step; writes the block's rotated k/v into the
//     ring and returns the flow prediction.
// The rolling-sink offset d (upstream's unseeded random.randint(4, 30)) is an explicit argument.
//
// Dtypes: fp32, or bf16 with fp32 islands (time embedding, modulation arithmetic, gated residual adds, head and
// audio encoder run in fp32). Device: wherever the weights live; inputs are moved there. Models never call
// collectives; block boundaries are exposed through BlockHooks (FSDP/offload gather weights in `before`) and the
// attention kernel is pluggable; Ulysses sequence parallelism goes through models::dit::SequenceParallel.
// Thread safety: const methods may run concurrently on different caches unless hooks say otherwise.
#pragma once

#include <functional>
#include <map>
#include <vector>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "liveavatar/core/status.h"
#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/lora.h"
#include "liveavatar/models/dit/modules.h"
#include "liveavatar/models/dit/parallel.h"
#include "liveavatar/models/weights.h"
#include "liveavatar/runtime/kv_cache.h"

namespace liveavatar::models::dit {

// Pipeline constants of Live Avatar's streaming S2V.
constexpr int64_t kAudioPrefixFrames = 73;  // motion_frames[0]: audio frames prepended before encoding
constexpr int64_t kSinkRefFrame = 30;       // RoPE frame of the reference tokens (before the rolling shift)

struct StreamInputs {
  at::Tensor x;            // [in_dim, F, H, W] noisy latents of the block (F = 3)
  at::Tensor timestep;     // [1, F] or [F] (float) timestep of each frame
  at::Tensor context;      // [L, text_dim], L <= text_len (umT5 output)
  at::Tensor cond_states;  // [1, cond_dim, F, H, W]; undefined = zeros (no pose video)
  at::Tensor audio_input;  // [1, 25, audio_dim, 4·F] wav2vec2 layers of this block
  int64_t current_start = 0;  // absolute token offset of the block ((12·clip + 3·block)·fs)
  int64_t relative_dist = 0;  // rolling-sink offset d of this call
};

struct SinkInputs {
  at::Tensor ref_latents;     // [1, in_dim, 1, H, W]
  at::Tensor motion_latents;  // [1, in_dim, Fm, H, W] (last 19 frames used; zero-padded at the front)
  at::Tensor context;         // [L, text_dim]
};

// Called around every transformer block (layer index), e.g. to gather/offload that block's weights.
struct BlockHooks {
  std::function<void(int64_t layer)> before;
  std::function<void(int64_t layer)> after;
};

// Receives named intermediates (the fixtures' dbg.* names without the prefix) when set.
using DebugTap = std::function<void(const std::string& name, const at::Tensor& value)>;

class CausalWanS2V {
 public:
  // Takes `weights` (checkpoint keys, any float dtype, LoRA already merged) and converts them for `dtype` on
  // `device`: fp32 islands stay fp32, everything else becomes `dtype`. Errors name the missing keys.
  static StatusOr<CausalWanS2V> Create(const DitConfig& config, WeightMap weights, c10::ScalarType dtype,
                                       const c10::Device& device);

  // Block weights supplied at run time: `weights` holds every non-block key ("blocks.<i>." keys may be absent),
  // and the caller's BlockHooks::before(i) must put layer i's weights (in their final dtype and device) into
  // mutable_weights() before the block runs; `after(i)` may remove them again (FSDP unshard, offload).
  static StatusOr<CausalWanS2V> CreateWithExternalBlocks(const DitConfig& config, WeightMap weights,
                                                         c10::ScalarType dtype, const c10::Device& device);
  // The dtype a weight `key` has inside a model of `dtype` (fp32 for the upstream fp32 islands).
  static c10::ScalarType WeightDtype(const std::string& key, c10::ScalarType dtype);

  const DitConfig& config() const { return config_; }
  const WeightMap& weights() const { return weights_; }
  // For block hooks that swap a layer's weights in and out (see CreateWithExternalBlocks).
  WeightMap* mutable_weights() { return &weights_; }
  c10::ScalarType dtype() const { return dtype_; }
  const c10::Device& device() const { return device_; }

  void set_attention(AttentionFn fn) { attention_ = std::move(fn); }
  void set_block_hooks(BlockHooks hooks) { hooks_ = std::move(hooks); }
  void set_debug_tap(DebugTap tap) { tap_ = std::move(tap); }

  // Ulysses sequence parallelism (include/liveavatar/models/dit/parallel.h); nullptr = none (the default).
  // With one installed, SinkPrefill/StreamBlock are collectives of its group: the blocks run on this rank's
  // chunk of the tokens (per-token modulation rows), self-attention goes through sp->Attention (RoPE, ring/cond
  // writes and the softmax on this rank's heads over the whole sequence), and the audio injectors and the head
  // see the gathered sequence (re-scattered after each injector). The caches then hold only the local heads
  // (CacheGeometry reports LocalHeads), and StreamBlock returns the full flow prediction on every rank.
  // Debug taps of the block outputs ("block<i>.out") are not emitted under sequence parallelism.
  // InvalidArgument when the group has more ranks than the model has heads.
  Status set_sequence_parallel(std::shared_ptr<SequenceParallel> sp);
  const std::shared_ptr<SequenceParallel>& sequence_parallel() const { return sp_; }

  // Cache geometry for latent grid H x W and `latent_frames_per_clip` (12) latent frames per ring;
  // cond capacity = the sink token count unless `cond_capacity` > 0. num_heads = this rank's heads under
  // sequence parallelism (so per-rank cache bytes divide by P), config().num_heads otherwise.
  runtime::DitCacheGeometry CacheGeometry(int64_t latent_h, int64_t latent_w, int64_t latent_frames_per_clip,
                                          int64_t cond_capacity = 0) const;

  // Sink prefill into `cache` (every layer's cond_k/cond_v[:n], cond_end = max(cond_end, n)).
  // REQUIRES: cache geometry matches the model and the latent grid.
  void SinkPrefill(const SinkInputs& in, runtime::DitStepCache& cache) const;

  // One streaming call: returns the flow prediction [out_dim, F, H, W] (fp32) and writes the block's k/v into
  // ring rows PlanRing(current_start, F·fs, ring).
  at::Tensor StreamBlock(const StreamInputs& in, runtime::DitStepCache& cache) const;

  // Timestep conditioning: t [N] -> e [N, dim], e0 [N, 6, dim] (fp32).
  void TimeConditioning(const at::Tensor& t, at::Tensor* e, at::Tensor* e0) const;

 private:
  CausalWanS2V(DitConfig config, WeightMap weights, c10::ScalarType dtype, c10::Device device);
  static StatusOr<CausalWanS2V> CreateImpl(const DitConfig& config, WeightMap weights, c10::ScalarType dtype,
                                           const c10::Device& device, bool external_blocks);
  // Self-attention + cross-attention + FFN of layer i on the residual x [1, N, dim] (fp32) with per-frame
  // modulation rows mod_rows [F, 6, dim] (F frames of rows_per_frame tokens), or, when `token_rows` [N] (int64)
  // is defined, token j modulated by row token_rows[j] (a sequence-parallel chunk that need not start or end
  // on a frame boundary). `self_attn` receives q, k (RMSNormed, not rotated) and v [1, N, heads, head_dim]; it
  // applies RoPE, updates the cache and attends. Returns the new residual (fp32).
  at::Tensor Block(int64_t i, const at::Tensor& x, const at::Tensor& mod_rows, int64_t rows_per_frame,
                   const at::Tensor& token_rows, const at::Tensor& text,
                   const std::function<at::Tensor(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v)>&
                       self_attn) const;
  // Modulation row of every token of this rank's sequence-parallel chunk of n tokens (rows_per_frame tokens
  // per row; padding tokens take the last row).
  at::Tensor ChunkTokenRows(int64_t n, int64_t rows_per_frame) const;
  // Start of a SinkPrefill/StreamBlock (`who`) over n tokens: checks that `cache` holds this rank's heads; under
  // sequence parallelism scatters *x to this rank's chunk and returns its token rows (ChunkTokenRows), otherwise
  // returns an undefined tensor.
  at::Tensor EnterSequenceParallel(const char* who, const runtime::DitStepCache& cache, int64_t n,
                                   int64_t rows_per_frame, at::Tensor* x) const;
  void Tap(const std::string& name, const at::Tensor& t) const {
    if (tap_) tap_(name, t);
  }

  DitConfig config_;
  WeightMap weights_;
  c10::ScalarType dtype_;
  c10::Device device_;
  AttentionFn attention_;
  BlockHooks hooks_;
  DebugTap tap_;
  std::shared_ptr<SequenceParallel> sp_;
};

// Loads config.json + diffusion_pytorch_model.safetensors (or a sharded index) from `dir` with strict key
// checking. Streaming (models::LoadWeights): each tensor goes from the memory-mapped file to its final dtype
// (CausalWanS2V::WeightDtype: `dtype` with the fp32 islands) on `device`, the LoRA delta added on the way in fp32
// on `device`; no full-model copy exists besides the result. The defaults (fp32, CPU, no LoRA) give the raw
// checkpoint weights.
struct DitCheckpoint {
  DitConfig config;
  WeightMap weights;
};
struct DitLoadOptions {
  c10::ScalarType dtype = c10::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
  const LoraApplier* lora = nullptr;  // resolved against DitWeightSpecs (DitBaseShapes) of the same config
};
StatusOr<DitCheckpoint> LoadDitCheckpoint(const std::string& dir, const DitLoadOptions& options = {});
// key -> shape of every DiT weight of `config` (what a LoraApplier is resolved against).
std::map<std::string, std::vector<int64_t>> DitBaseShapes(const DitConfig& config);

}  // namespace liveavatar::models::dit
