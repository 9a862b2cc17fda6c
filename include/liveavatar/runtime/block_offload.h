// Model-agnostic pieces of weight / KV offloading (issue 9, docs/offload.md):
//   * AllocateHostTensors: many host tensors packed into a few large host slabs, page-locked ("pinned") when
//     the build has CUDA and pinning is asked for. LibTorch's pinned allocator rounds every allocation up to a
//     power of two; slabs of exactly a power of two bytes, filled first-fit-decreasing, keep that waste small
//     (a 14B checkpoint's 700 MB blocks would otherwise reserve 1 GB each).
//   * TransferStream: host <-> device copies on a side stream, ordered against the compute stream with events,
//     so the copy of the next block / step overlaps the current one's compute. Without CUDA (or for a CPU
//     device) every operation is a plain synchronous copy and the events are no-ops: same results, no overlap.
//
// The DiT binding (BlockOffloader: host-resident blocks swapped in through CausalWanS2V's BlockHooks) lives in
// include/liveavatar/models/dit/block_offload.h, because la_runtime sits below la_dit. Ring residency of the
// per-step KV caches lives in pipeline/streaming_denoiser.h.
//
// Thread safety: a TransferStream is used from the thread that runs the model (the compute stream is that
// thread's current CUDA stream).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace liveavatar::runtime {

// True when this build can page-lock host memory (LibTorch with CUDA).
bool HostPinningAvailable();

struct HostTensorSpec {
  std::vector<int64_t> shape;
  c10::ScalarType dtype = c10::kFloat;
};

struct HostAllocation {
  std::vector<at::Tensor> tensors;  // one per spec, in order: contiguous views into the slabs (uninitialised)
  std::vector<at::Tensor> slabs;    // the backing uint8 buffers (kept alive by the views as well)
  int64_t used_bytes = 0;           // sum of the tensors' bytes
  int64_t reserved_bytes = 0;       // sum of the slabs' bytes (what the host actually holds)
  bool pinned = false;
};

// Packs `specs` first-fit-decreasing into slabs (tensors never straddle slabs; offsets aligned to 64 bytes). The
// slab capacity is P, 2P, 4P or 8P for P = the power of two >= max(slab_bytes, largest tensor), whichever
// reserves the least (pinned slabs count as the power of two the pinned allocator rounds them to). `pinned` is
// honoured only when HostPinningAvailable().
constexpr int64_t kHostSlabBytes = int64_t{256} << 20;
HostAllocation AllocateHostTensors(const std::vector<HostTensorSpec>& specs, bool pinned,
                                   int64_t slab_bytes = kHostSlabBytes);

// Bytes of a tensor's elements (numel · element size).
int64_t TensorBytes(const at::Tensor& t);

// A point in the transfer stream's work (a recorded CUDA event); empty on CPU.
class TransferEvent {
 public:
  TransferEvent() = default;
  bool empty() const { return impl_ == nullptr; }

 private:
  friend class TransferStream;
  std::shared_ptr<void> impl_;
};

class TransferStream {
 public:
  // A side stream on `device` when it is a CUDA device of a CUDA build; synchronous copies otherwise.
  explicit TransferStream(const c10::Device& device);
  // Waits for every issued copy (owners free the buffers right after; declare the stream after them).
  ~TransferStream();
  TransferStream(const TransferStream&) = delete;
  TransferStream& operator=(const TransferStream&) = delete;

  const c10::Device& device() const { return device_; }
  // True when copies run asynchronously on a side stream.
  bool asynchronous() const;

  // Makes later copies wait for everything already queued on the compute stream (so they may overwrite
  // buffers the compute stream used, or read what it wrote).
  void WaitForCompute();
  // dst.copy_(src) on the side stream (non-blocking for pinned host memory). Both stay alive until the copy
  // ran: the caller keeps them, or allocated `dst` on the compute stream before WaitForCompute().
  void Copy(const at::Tensor& dst, const at::Tensor& src);
  // Marks the copies issued so far.
  TransferEvent Record();
  // Makes the compute stream wait for `event` (no host wait). No-op for an empty event.
  void MakeComputeWait(const TransferEvent& event);
  // Host waits for every issued copy (before the host reads pinned memory written by a device-to-host copy).
  void Synchronize();

 private:
  struct Impl;
  c10::Device device_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace liveavatar::runtime
