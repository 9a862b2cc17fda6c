// ShardManager: FSDP-style parameter sharding of the S2V DiT over a communicator group (issue 7).
//
// Layout. Each transformer block is one flat unit (dist/flat_param.h): its parameters in their final dtypes
// (CausalWanS2V::WeightDtype: fp32 islands stay fp32), each at an aligned byte offset, padded to a multiple of
// the group size. Every rank keeps only its slice of every block, read directly from the checkpoint's byte
// ranges (only the overlapping element ranges of the stored tensors are touched; LoRA is merged per slice for
// the covered rows). No rank ever holds a whole-model copy, on the host or the device.
// The non-block parameters (embeddings, head, audio encoder and injectors, frame packer: the "root" unit) are
// held in full on every rank. ShardOptions::shard_root picks how they are loaded:
//   false (default) replicated: each rank reads the root unit fully from the checkpoint (simplest; more disk
//         reads per rank, no load-time collective);
//   true  sharded: each rank reads only its slice, and one all-gather at load assembles the resident root buffer
//         (disk reads per rank = its share of the whole model).
// Either way the resident root is the same size; the choice only moves disk traffic.
//
// FP8 (ShardOptions::fp8, --fp8 with --dit_fsdp). The linears the reference quantises (models::dit::IsFp8LinearWeight)
// are stored in the units as per-tensor scaled e4m3fn codes, converted per slice at load: each rank converts its
// ranges (LoRA merged, rounded to the model dtype), one max all-reduce per unit gives every tensor's amax, and each
// rank encodes its ranges with the common scale, so the codes equal models::QuantizeFp8PerTensor of the whole
// merged tensor (and so the unsharded models::dit::Fp8DitWeights). Shards, all-gathers and unshard buffers carry
// the 1-byte codes; before(i) dequantises layer i's FP8 weights into the model dtype (at most one layer's dense
// FP8 weights exist at a time, ShardAccounting::dequant_bytes) and after(i) drops them. The injectors' FP8 weights
// sit in the root unit and are dequantised by the hooks of the layer they run in; between calls their keys hold
// empty placeholders, as with Fp8DitWeights.
//
// Running. Create() builds the model with CausalWanS2V::CreateWithExternalBlocks and installs BlockHooks:
//   before(i): all-gathers block i's slices into an unshard buffer taken from a pool of prefetch + 1 buffers
//              (unless a prefetch already issued it), issues the all-gathers of blocks i+1 .. i+prefetch, waits
//              for block i (Work::Synchronize: on NCCL the compute stream waits, the host does not), and puts
//              views of the buffer under the block's keys into model.mutable_weights();
//   after(i):  removes those keys and returns the buffer to the pool.
// On NCCL the prefetched all-gather runs on the communicator's stream while block i computes; on Gloo the
// collectives block, so prefetch only changes the issue order. Prefetch never crosses the end of a model call:
// after the last block nothing is pending, so every rank issues the identical collective sequence per call.
// If a call is abandoned mid-way (an exception between before(i) and after(i)), the next before() drains and
// releases whatever is pending first.
//
// Collective contract: every rank of `group` must make the same model calls (SinkPrefill / StreamBlock) in the
// same order; each block costs one all-gather of shard_bytes per rank. A rank that never joins makes the others'
// call fail after the communicator's timeout.
//
// Errors: Create() returns InvalidArgument naming the store path and the keys that are missing, have the wrong
// shape, or are not consumed (strict, as models::LoadWeights), LoRA resolution errors (dist/flat_param.h), and
// any communicator error of the root all-gather. A failed collective while the model runs (timeout, lost peer)
// is thrown from the model call as StatusError (core/status.h) carrying the communicator's Status, prefixed
// with the block index; the group is then broken and the process should exit.
//
// Ownership: the manager owns the model, the shards, the resident root and the buffer pool; model() and the
// hooks installed on it are valid while the manager lives (do not copy the model out and run it elsewhere, and
// do not replace its block hooks; other settings such as attention or sequence parallelism are free).
// It keeps `group` alive. It does not keep the store: every byte it needs is copied at Create().
// Thread safety: not thread-safe; run the model from one thread (the group's collectives require it anyway).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "liveavatar/core/status.h"
#include "liveavatar/dist/communicator.h"
#include "liveavatar/dist/flat_param.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/dit/model.h"
#include "liveavatar/runtime/block_offload.h"

namespace liveavatar::dist {

struct ShardOptions {
  // Number of blocks whose all-gather is issued ahead of the running one (--fsdp_prefetch). >= 0.
  int prefetch = 1;
  // Root (non-block) unit: sharded and gathered once at load (true) or read fully by every rank (false).
  bool shard_root = false;
  c10::ScalarType dtype = c10::kFloat;          // model dtype: kFloat or kBFloat16 (fp32 islands stay fp32)
  c10::Device device = c10::Device(c10::kCPU);  // where shards, root and unshard buffers live (the group's)
  // Optional LoRA, merged per slice at load (models::MergeLora semantics). alpha/rank left unset come from
  // training_config_lora.json beside the file (which also gives the targets); see dist::OpenSliceLora.
  std::string lora_path;
  std::optional<double> lora_alpha;
  std::optional<int> lora_rank;
  // Store the reference's FP8 linears as per-tensor scaled e4m3fn codes (see "FP8" above).
  bool fp8 = false;
  // --offload_model True with --dit_fsdp: this rank's block slices stay in host memory (page-locked in CUDA
  // builds) and each is copied to a device staging slice on a side stream (runtime::TransferStream) right before
  // its all-gather; the device holds no slices, only the unshard pool and prefetch + 1 staging slices.
  bool offload_shards = false;
};

// Per-rank memory and I/O figures (bytes). "Resident" = held between model calls.
struct ShardAccounting {
  int64_t total_param_bytes = 0;     // the whole model's parameters in their final dtypes (unpadded)
  int64_t block_bytes = 0;           // one block's unit (padded) = one unshard buffer
  int64_t resident_shard_bytes = 0;  // this rank's slices of every block on the device (0 with offload_shards)
  int64_t host_shard_bytes = 0;      // offload_shards: the same slices in host memory
  int64_t staging_bytes = 0;         // offload_shards: device staging slices allocated (<= prefetch + 1)
  int64_t root_bytes = 0;            // the resident root unit (padded when sharded)
  int64_t unshard_buffer_bytes = 0;  // pool buffers allocated now (at most prefetch + 1 blocks)
  int64_t unshard_in_use_bytes = 0;  // pool buffers holding or receiving a block now
  int64_t dequant_bytes = 0;         // fp8: the largest layer's dequantised FP8 weights (transient, per call)
  int64_t peak_unshard_in_use_bytes = 0;
  int64_t peak_unshard_buffer_bytes = 0;
  // Peak of resident_shard + root + unshard_buffer (+ dequant_bytes with fp8; + the root shard while it is
  // gathered at load).
  int64_t peak_bytes = 0;
  int64_t bytes_read = 0;       // checkpoint bytes read by this rank (stored dtype)
  int64_t lora_bytes_read = 0;  // LoRA bytes read by this rank
  int64_t gathers = 0;          // block all-gathers issued so far

  // Device bytes: resident_shard_bytes + root_bytes + unshard_buffer_bytes + staging_bytes.
  int64_t resident_bytes() const { return resident_shard_bytes + root_bytes + unshard_buffer_bytes + staging_bytes; }
};

class ShardManager {
 public:
  // Reads this rank's slices from `store` (checkpoint keys; any float dtype), builds the model and installs its
  // hooks. Collective over `group` when group->Size() > 1 and options.shard_root (the root all-gather) or
  // options.fp8 (one max all-reduce per sharded unit; a rank that fails to read its slice makes every rank fail
  // there, naming the unit, instead of leaving the others waiting). Non-finite values in an FP8 weight give
  // Corruption naming the key.
  static StatusOr<std::unique_ptr<ShardManager>> Create(const models::dit::DitConfig& config,
                                                        const io::TensorStore& store, CommunicatorPtr group,
                                                        const ShardOptions& options);

  // Create() over a checkpoint folder laid out as models::dit::LoadDitCheckpoint expects: config.json plus
  // diffusion_pytorch_model.safetensors (or its sharded .safetensors.index.json). Errors name the missing file.
  static StatusOr<std::unique_ptr<ShardManager>> Open(const std::string& ckpt_dir, CommunicatorPtr group,
                                                      const ShardOptions& options);

  // What Create() would hold per rank for a group of `group_size`, without reading anything (for the memory
  // planner): total, block, resident shard, root and pool (prefetch + 1 blocks) bytes; peaks = steady state.
  static ShardAccounting Plan(const models::dit::DitConfig& config, const ShardOptions& options, int group_size);

  ~ShardManager();
  ShardManager(const ShardManager&) = delete;
  ShardManager& operator=(const ShardManager&) = delete;

  models::dit::CausalWanS2V& model() { return *model_; }
  const models::dit::CausalWanS2V& model() const { return *model_; }
  const Communicator& group() const { return *group_; }
  const ShardOptions& options() const { return options_; }
  // Layout of a block's unit (block_layout(): block 0; all blocks have the same offsets) and of the root unit
  // (group_size 1 when the root is replicated).
  const FlatLayout& block_layout() const { return layouts_.front(); }
  const FlatLayout& block_layout(int64_t layer) const { return layouts_.at(layer); }
  const FlatLayout& root_layout() const { return root_layout_; }

  ShardAccounting accounting() const { return acct_; }
  // Restarts the peak figures from the current values.
  void ResetPeaks();
  // Most pool buffers in use at once since Create() / ResetPeaks().
  int peak_buffers_in_use() const { return peak_buffers_in_use_; }

 private:
  // Loads one unit's slice of `rank` into `dst` (CPU uint8), FP8 scales agreed over the group when `collective`.
  Status LoadUnit(const FlatLayout& layout, int rank, bool collective, const io::TensorStore& store,
                  const SliceLora* lora, const at::Tensor& dst, const std::string& unit);
  // Replaces the FP8 code views of `layer` in the model's weights by their dequantised values.
  void Dequantize(int64_t layer, const models::WeightMap& block_views);

  struct Pending {
    at::Tensor buffer;
    at::Tensor staging;  // offload_shards: the device copy of this rank's slice (the all-gather's input)
    WorkPtr work;
    bool installed = false;
  };

  ShardManager(CommunicatorPtr group, const ShardOptions& options);
  void Before(int64_t layer);
  void After(int64_t layer);
  // Takes a pool buffer and issues layer's all-gather into it.
  void Issue(int64_t layer);
  // Waits for every pending gather, removes installed views and returns every buffer (no-throw on errors when
  // `quiet`).
  void Drain(bool quiet);
  void Release(int64_t layer);
  void NoteUsage();

  CommunicatorPtr group_;
  ShardOptions options_;
  int64_t num_layers_ = 0;
  std::vector<FlatLayout> layouts_;  // per block (same sizes and offsets, keys "blocks.<i>.")
  FlatLayout root_layout_;           // group_size 1 when the root is replicated
  at::Tensor shards_;                                 // [num_layers, shard_bytes] uint8 on options.device
  std::vector<at::Tensor> host_shards_;               // offload_shards: per layer [shard_bytes] on the host
  std::vector<at::Tensor> free_staging_;              // offload_shards: device staging slices not in use
  int staging_allocated_ = 0;
  std::unique_ptr<runtime::TransferStream> transfer_;  // offload_shards: host -> device copies
  at::Tensor root_;                                   // resident root flat buffer
  std::map<std::string, float> fp8_scale_inv_;        // fp8: 1/s per FP8 key
  std::vector<std::map<std::string, at::Tensor>> root_fp8_;  // fp8: per layer, its injectors' codes (root views)
  std::vector<at::Tensor> free_buffers_;
  int buffers_allocated_ = 0;
  std::map<int64_t, Pending> pending_;
  int64_t next_layer_ = 0;
  int peak_buffers_in_use_ = 0;
  ShardAccounting acct_;
  std::unique_ptr<models::dit::CausalWanS2V> model_;
};

}  // namespace liveavatar::dist
