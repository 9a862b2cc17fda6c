// BlockOffloader: the S2V DiT with its transformer blocks kept on the host and streamed to the device one block
// (plus `lookahead` blocks ahead) at a time (--offload_model on one GPU; issue 9, docs/offload.md).
//
// Layout. Every "blocks.<i>." weight is converted once to its final dtype (CausalWanS2V::WeightDtype: fp32
// islands stay fp32) and stored in host slabs (runtime::AllocateHostTensors; page-locked in CUDA builds). The
// non-block weights (embeddings, head, audio encoder and injectors, frame packer) are resident on the device.
//
// Running. Create() builds the model with CausalWanS2V::CreateWithExternalBlocks and installs BlockHooks:
//   before(i): makes sure block i and blocks i+1 .. i+lookahead (cyclically: after the last block the first
//              ones of the next call are prefetched) have their device copies issued on the transfer stream,
//              drops any other device copy (left over from an abandoned call), makes the compute stream wait for
//              block i's copy and puts block i's device tensors into model.mutable_weights();
//   after(i):  removes them from the weight map and frees the device copy.
// At most lookahead + 1 blocks are on the device at any time (accounting().peak_device_block_bytes). On CUDA the
// copies run on a side stream ordered by events, so block i+1's copy overlaps block i's compute; on a CPU device
// they are plain synchronous copies (same numbers, which is what the tests check bit for bit).
//
// Ownership: the offloader owns the model and the host blocks; model() and its hooks are valid while the
// offloader lives (do not replace the model's block hooks; attention, debug taps and sequence parallelism are
// free). Thread safety: not thread-safe; run the model from one thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "liveavatar/core/status.h"
#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/dit/model.h"
#include "liveavatar/models/weights.h"
#include "liveavatar/runtime/block_offload.h"

namespace liveavatar::models::dit {

struct OffloadOptions {
  int lookahead = 1;                            // blocks copied ahead of the running one, >= 0
  c10::ScalarType dtype = c10::kFloat;          // model dtype: kFloat or kBFloat16 (fp32 islands stay fp32)
  c10::Device device = c10::Device(c10::kCPU);  // where the model runs
  bool pin_memory = true;                       // page-lock the host blocks (CUDA builds only)
};

struct OffloadAccounting {
  int64_t num_blocks = 0;
  int64_t block_bytes = 0;              // the largest block in its final dtypes
  int64_t host_block_bytes = 0;         // every block's tensors on the host
  int64_t host_reserved_bytes = 0;      // the host slabs backing them (>= host_block_bytes)
  bool host_pinned = false;
  int64_t root_bytes = 0;               // resident non-block weights on the device
  int64_t device_block_bytes = 0;       // block copies on the device now
  int64_t peak_device_block_bytes = 0;  // most of them at once (<= (lookahead + 1) · block_bytes)
  int peak_device_blocks = 0;           // most blocks on the device at once (<= lookahead + 1)
  int64_t copies = 0;                   // block copies issued
  int64_t bytes_copied = 0;             // host -> device bytes
  // root_bytes + peak_device_block_bytes: the weights' share of device memory.
  int64_t peak_device_bytes() const { return root_bytes + peak_device_block_bytes; }
};

class BlockOffloader {
 public:
  // Takes every weight of the checkpoint (checkpoint keys, any float dtype, LoRA already merged). Errors:
  // InvalidArgument naming missing / misshapen / unexpected "blocks." keys, a negative lookahead or an
  // unsupported dtype, and whatever CreateWithExternalBlocks reports for the non-block keys.
  static StatusOr<std::unique_ptr<BlockOffloader>> Create(const DitConfig& config, WeightMap weights,
                                                          const OffloadOptions& options);

  // What Create() would hold, without weights (for the memory planner): block, host, root and peak device
  // block bytes (lookahead + 1 blocks, capped at num_layers). Host bytes are unpadded.
  static OffloadAccounting Plan(const DitConfig& config, const OffloadOptions& options);

  ~BlockOffloader();
  BlockOffloader(const BlockOffloader&) = delete;
  BlockOffloader& operator=(const BlockOffloader&) = delete;

  CausalWanS2V& model() { return *model_; }
  const CausalWanS2V& model() const { return *model_; }
  const OffloadOptions& options() const { return options_; }
  OffloadAccounting accounting() const { return acct_; }
  // Restarts the peak figures from the current values.
  void ResetPeaks();

 private:
  struct Resident {
    std::vector<at::Tensor> tensors;  // device copies, in keys_[layer] order
    runtime::TransferEvent ready;
    bool installed = false;
  };

  explicit BlockOffloader(const OffloadOptions& options);
  void Before(int64_t layer);
  void After(int64_t layer);
  void Issue(int64_t layer);
  void Drop(int64_t layer);
  void NoteUsage();

  OffloadOptions options_;
  int64_t num_layers_ = 0;
  std::vector<std::vector<std::string>> keys_;  // per layer
  std::vector<std::vector<at::Tensor>> host_;   // per layer, host tensors in keys_ order
  std::vector<int64_t> layer_bytes_;
  runtime::HostAllocation host_alloc_;
  std::map<int64_t, Resident> resident_;
  std::unique_ptr<runtime::TransferStream> stream_;
  OffloadAccounting acct_;
  std::unique_ptr<CausalWanS2V> model_;
};

}  // namespace liveavatar::models::dit
