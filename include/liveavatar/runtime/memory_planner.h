// MemoryPlanner: predicts, per rank and before anything is loaded, the peak device memory of a generation run by
// component and by phase, and decides whether it fits the device. Pure arithmetic over the model architecture
// (weight specs + configs), the resolution, the clip geometry, the process topology and the placement flags: no
// CUDA calls, no file access. Every formula is documented in docs/memory.md.
//
// Phases (the peak of a rank is the maximum over them), in run order with encoders_first:
//   encode  : the encoders (T5 unless --t5_cpu, wav2vec2, VAE) and the largest encoder workspace (umT5 over
//             text_len tokens, wav2vec2 over the whole audio, the VAE encode of the 73 motion frames), plus the
//             DiT when it is loaded first (encoders_first = false),
//   load    : the DiT weights or shard (+ the LoRA merge temporaries when the merge runs on the device), the VAE,
//             and the encoders that stay resident (or were loaded before),
//   denoise : resident weights + KV rings + cond caches + FSDP unshard buffers + the largest DiT block call
//             (attention workspace included) + communication buffers (+ the VAE decoder's causal cache on a
//             rank that decodes). T5 / wav2vec2 count here only when they stay resident.
//   decode  : (ranks that decode) what persists through the streaming loop + the decode workspace of one
//             latent frame + the block's frames; the DiT call's transients are gone by then.
// A constant per device kind (CUDA context + allocator slack) is added to every phase.
//
// Topology: world = dit_stages · ulysses_size (+ 1 with a dedicated VAE rank). Stage k runs denoising steps
// [k·steps/S, (k+1)·steps/S) (TPP); the ulysses_size ranks of a stage split the sequence / heads and, with
// --dit_fsdp, shard the DiT blocks among themselves (FSDP group = the ranks that run the same blocks in lockstep).
//
// Thread safety: value types and pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "liveavatar/models/audio/wav2vec2_config.h"
#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/t5/encoder.h"
#include "liveavatar/models/vae/config.h"
#include "liveavatar/models/weights.h"

namespace liveavatar::runtime {

enum class PlanDeviceKind { kCuda, kCpu };
enum class PlanDtype { kFloat32, kBFloat16 };

// Architecture of the four models: configs for the geometry, weight specs for the exact parameter counts
// (models::dit::DitWeightSpecs, models::t5::T5WeightSpecs, models::audio::Wav2Vec2WeightSpecs,
// models::vae::VaeWeightSpecs of the same configs; optional specs are not counted).
struct PlanModels {
  models::dit::DitConfig dit;
  models::t5::T5Config t5;
  models::audio::Wav2Vec2Config wav2vec2;
  models::vae::VaeConfig vae;
  std::vector<models::WeightSpec> dit_specs, t5_specs, wav2vec2_specs, vae_specs;
};

// What the engine running the plan implements; Alternatives()/AutoPlan() only propose available measures.
struct PlanFeatures {
  bool fp8 = true;
  bool offload_model = true;       // encoders released after encoding (the reference's --offload_model)
  bool offload_dit_blocks = true;  // DiT blocks streamed from host memory (this engine's --offload_model)
  bool offload_kv_cache = true;
  bool t5_cpu = true;
  bool multi_process = true;  // TPP stages, Ulysses, FSDP, a VAE rank
};

struct PlanInputs {
  PlanModels models;
  PlanFeatures features;
  // LoRA merged into the DiT (rank r: one A [r, in] and B [out, r] per target Linear).
  bool load_lora = true;
  int64_t lora_rank = 128;

  // ---- Work ----
  int64_t height = 384, width = 704;  // generated pixel size (multiples of 64)
  int64_t infer_frames = 48;          // video frames per clip
  int64_t sample_steps = 4;
  double audio_seconds = 10.0;  // wav2vec2 runs over the whole file at once
  int64_t motion_frames = 73;   // pixel frames of the FramePack history (VAE-encoded once)
  int64_t latent_motion_frames = 19;
  int64_t frames_per_block = 3;  // latent frames per streaming block

  // ---- Topology ----
  int64_t world_size = 1;
  int64_t ulysses_size = 1;
  bool vae_rank = false;  // a dedicated last rank decodes (--enable_vae_parallel, world > 1)
  int64_t vae_ranks = 1;  // with vae_rank: the last `vae_ranks` ranks decode together (each planned as a full one)
  bool dit_fsdp = false;  // shard DiT blocks across the ulysses group
  int64_t fsdp_prefetch = 1;

  // ---- Number formats ----
  PlanDtype dtype = PlanDtype::kBFloat16;  // DiT / T5 / VAE compute dtype (wav2vec2 runs in fp32)
  bool fp8 = false;                        // FP8 (e4m3 + per-tensor scale) DiT block / injector Linears

  // ---- Placement ----
  bool offload_model = false;     // T5 and wav2vec2 leave the device after the encode phase
  // DiT blocks live in (pinned) host memory and `offload_lookahead` + 1 of them are on the device at a time
  // (models/dit/block_offload.h); with dit_fsdp the rank's slices live there instead and fsdp_prefetch + 1
  // staging slices are on the device (dist::ShardOptions::offload_shards). Not with fp8 without dit_fsdp (the
  // engine refuses that combination).
  bool offload_dit_blocks = false;
  int64_t offload_lookahead = 1;
  bool offload_kv_cache = false;  // only the running step's cache (ring + cond) is on the device
  bool t5_cpu = false;            // T5 never on the device
  // Encoders run (and, when released, leave) before the DiT is loaded; false = everything is loaded first and
  // the encode phase also holds the DiT (this build's single-process Engine::Load).
  bool encoders_first = true;
  bool keep_wav2vec2 = true;      // wav2vec2 stays on the device after encoding (this engine; the reference
                                  // moves it to the CPU); --offload_model releases it either way
  int64_t cond_capacity = 0;      // rows of each cond cache; 0 = the sink token count (reference: 3000 / 2800)
  bool share_cond_cache = false;  // one cond cache for all steps of a rank (reference single-GPU layout)

  // ---- Device ----
  PlanDeviceKind device = PlanDeviceKind::kCuda;
  int64_t capacity_bytes = 0;  // per-device budget; 0 = unknown (verdict "fits" is then true)

  // ---- Host ----
  // Budget of one host's memory for all its ranks together (MemAvailable or --max_host_mem_gb); 0 = unknown.
  int64_t host_capacity_bytes = 0;
  int64_t ranks_per_host = 0;  // ranks sharing one host; 0 = all of them (one machine)
};

// One line of the per-rank table.
struct PlanComponent {
  std::string name;                                       // e.g. "dit_weights", "kv_rings"
  std::string detail;                                     // how it was computed, one line
  int64_t load = 0, encode = 0, denoise = 0, decode = 0;  // bytes present in each phase
};

// Host memory of one process (docs/memory.md, "Host memory"): private (anonymous) bytes and file pages mapped at
// the same time. The streaming load maps one tensor at a time and releases its pages once converted, so `mapped`
// is the largest stored tensor; what the checkpoint files leave in the kernel's page cache is shared by every
// process of the host and reclaimable, reported as `page_cache`.
struct HostComponent {
  std::string name;    // e.g. "runtime", "dit_blocks_offloaded", "t5_cpu", "device_mirror"
  std::string detail;  // how it was computed
  int64_t anon = 0;    // private bytes at the process's peak
  int64_t mapped = 0;  // file-backed bytes mapped at the peak
};
struct HostPlan {
  std::vector<HostComponent> components;
  int64_t anon_peak = 0, mapped_peak = 0;
  int64_t peak = 0;        // anon_peak + mapped_peak: the predicted peak RSS of the process
  int64_t page_cache = 0;  // bytes of checkpoint files this process reads (page cache, shared on the host)
};

struct RankPlan {
  std::string role;            // "dit" (stage k), "dit+decode", "vae"
  std::vector<int64_t> ranks;  // ranks with this role
  int64_t first_step = 0, num_steps = 0;
  bool decodes = false;
  std::vector<PlanComponent> components;
  int64_t load_peak = 0, encode_peak = 0, denoise_peak = 0, decode_peak = 0;  // decode: 0 when not decoding
  int64_t peak = 0;                                                           // max of the phase peaks
  std::string peak_phase;
  HostPlan host;  // the host memory of each rank of this role
};

struct MemoryPlan {
  std::string error;  // non-empty: the inputs describe no valid topology (the message says why)
  int64_t dit_stages = 1, ulysses_size = 1, world_size = 1;
  // Derived geometry (shown by `liveavatar plan`).
  int64_t latent_h = 0, latent_w = 0, frame_seqlen = 0, ring_tokens = 0, sink_tokens = 0, block_tokens = 0;
  int64_t dit_params = 0, t5_params = 0, wav2vec2_params = 0, vae_params = 0;
  std::vector<RankPlan> roles;
  int64_t peak_bytes = 0;  // max over roles
  int64_t capacity_bytes = 0;
  // Host: the largest sum of the ranks' HostPlan::peak over the hosts (ranks_per_host consecutive ranks each),
  // the page cache of the checkpoint files they read (each file once), and the budget.
  int64_t ranks_per_host = 1;
  int64_t host_peak_bytes = 0;
  int64_t host_anon_bytes = 0;  // the private part of host_peak_bytes
  int64_t host_page_cache_bytes = 0;
  int64_t host_capacity_bytes = 0;
  bool device_fits = true;  // peak <= capacity (or no capacity given)
  bool host_fits = true;    // host_peak <= host capacity (or none given)
  bool fits = true;         // error empty, device_fits and host_fits
};

// A change of flags and its predicted peak.
struct PlanAlternative {
  std::string flags;  // command-line flags to add/replace, e.g. "--dit_fsdp --ulysses_size 4"
  PlanInputs inputs;  // the modified inputs
  int64_t peak_bytes = 0;
  bool full_quality = true;  // false for FP8 weights or a smaller --size
  int speed_rank = 0;        // lower = faster (docs/memory.md, "fastest")
};

class MemoryPlanner {
 public:
  static MemoryPlan Plan(const PlanInputs& inputs);
  // Variations of `inputs` that fit (same or more GPUs up to `max_world`; placement, FSDP, Ulysses, FP8, sizes),
  // full-quality ones first, each group ordered fastest first. Empty when no capacity is given.
  static std::vector<PlanAlternative> Alternatives(const PlanInputs& inputs, int64_t max_world = 0);
  // The fastest full-quality plan that fits on `inputs.world_size` GPUs (inputs unchanged when they fit);
  // ok == false when none fits.
  struct Auto {
    bool ok = false;
    PlanAlternative choice;
  };
  static Auto AutoPlan(const PlanInputs& inputs);
};

// Constant per device kind (CUDA context + caching-allocator fragmentation / CPU: 0).
int64_t DeviceOverheadBytes(PlanDeviceKind kind);
// Resident bytes of a process before any model loads: the binary and LibTorch (+ the CUDA runtime and context's
// host side on CUDA), measured (docs/memory.md).
int64_t HostOverheadBytes(PlanDeviceKind kind);
// "12.34 GiB"
std::string FormatBytes(int64_t bytes);

}  // namespace liveavatar::runtime
