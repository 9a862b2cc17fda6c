// Communicator: the one narrow collective interface of the engine (style.md habit 9; modelled on c10d's
// Backend.hpp / Work.hpp). Everything above dist/ (FSDP hooks, Ulysses attention, the TPP driver) talks to a
// Communicator and never to NCCL or Gloo directly.
//
// Backends
//   "nccl"  CUDA tensors. Each communicator owns a dedicated communication stream; an op first makes that stream
//           wait for the caller's current compute stream (event), runs there, and records a completion event.
//           Work::Synchronize() makes the compute stream wait for it without blocking the host; Work::Wait()
//           blocks the host (polling, with the timeout). Compiled only in CUDA builds.
//   "gloo"  CPU tensors, through c10d::ProcessGroupGloo. Collectives block (the returned Work is complete);
//           Send/Recv stay pending until Wait(), so both sides of an exchange can be issued first.
//   "fake"  In-process world of size 1: every collective is the single-process identity. For unit tests.
//
// Collective contract (as torch.distributed): every rank of the communicator calls the same collectives in the
// same order with matching shapes and dtypes. Tensors are dense and contiguous, on the backend's device.
// Each op takes an options struct with a timeout (0 = the communicator's default, CommOptions::timeout).
// A collective that some rank never joins fails after the timeout with DeadlineExceeded naming this rank, the
// operation and its sequence number and, where the backend can tell, the ranks that never arrived; the
// communicator is then broken (every later op fails at once, and destroying it does not wait for the missing
// peer) and the process should exit.
//
// Errors: ops never throw for runtime failures; they return a Work whose Wait() gives the Status. Bad arguments
// (wrong sizes, dtype mismatch, wrong device) give InvalidArgument; an op a backend lacks gives NotSupported
// "Backend <name> does not support <op>".
//
// Thread safety: a Communicator is not thread-safe; issue its ops from one thread (as c10d process groups).
// Different communicators (e.g. sub-groups) may be used from different threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "liveavatar/core/status.h"
#include "liveavatar/dist/world.h"

namespace at {
class Tensor;
}

namespace liveavatar::dist {

using Milliseconds = std::chrono::milliseconds;

// Default collective timeout when neither CommOptions nor LIVEAVATAR_DIST_TIMEOUT_S says otherwise.
constexpr Milliseconds kDefaultCollectiveTimeout{std::chrono::minutes(10)};

// Handle of one issued operation (c10d Work). Owned by the caller; dropping it does not cancel the op.
class Work {
 public:
  virtual ~Work() = default;
  // True once the op finished (successfully or not). Never blocks.
  virtual bool IsCompleted() = 0;
  // Blocks the host until the op finished or its timeout expired. Returns OK or the op's error. Idempotent.
  virtual Status Wait() = 0;
  // Orders the caller's current compute stream after the op without blocking the host (NCCL); for host
  // backends the same as Wait(). Returns an error already known (e.g. an argument error).
  virtual Status Synchronize() { return Wait(); }

  // A completed Work carrying `status` (OK or an error).
  static std::shared_ptr<Work> Completed(Status status = Status::Ok());
};
using WorkPtr = std::shared_ptr<Work>;

struct CollectiveOptions {
  Milliseconds timeout{0};  // 0: the communicator's default timeout
};

struct AllToAllOptions : CollectiveOptions {
  // Rows (dim-0 slices) of `input` sent to each rank, and of `output` received from each rank. Empty: equal
  // splits (dim 0 divisible by the world size). When given, one entry per rank, and they must sum to dim 0.
  std::vector<int64_t> input_split_sizes;
  std::vector<int64_t> output_split_sizes;
};

struct BroadcastOptions : CollectiveOptions {
  int root = 0;  // rank (within this communicator) whose tensor is sent
};

struct P2POptions : CollectiveOptions {
  int tag = 0;  // matches a Send with a Recv (Gloo); NCCL ignores it and matches by order
};

// Elementwise reduction of AllReduce.
enum class ReduceOp { kSum, kMax };
// "sum", "max".
const char* ReduceOpName(ReduceOp op);

enum class BackendKind { kAuto, kNccl, kGloo, kFake };
// "auto", "nccl", "gloo", "fake".
const char* BackendKindName(BackendKind kind);
// Parses the names above; InvalidArgument naming `flag` otherwise.
StatusOr<BackendKind> ParseBackendKind(const std::string& name, const std::string& flag = "--dist-backend");

// Whether this build contains `kind` (kAuto and kFake: always; kNccl: CUDA builds; kGloo: when the Gloo headers,
// Debian libgloo-dev, were present at build time).
bool BackendCompiled(BackendKind kind);

struct CommOptions {
  // kAuto: NCCL when built with CUDA and a GPU is visible, otherwise Gloo (or fake for a world of one).
  BackendKind backend = BackendKind::kAuto;
  // Default timeout of every collective. 0: LIVEAVATAR_DIST_TIMEOUT_S (seconds) if set, else
  // kDefaultCollectiveTimeout.
  Milliseconds timeout{0};
  // How long rendezvous (connecting to rank 0's store, NCCL/Gloo connection setup) may take. 0: same as timeout.
  Milliseconds rendezvous_timeout{0};
  // NCCL: the CUDA device of this rank; -1 selects WorldInfo::local_rank.
  int device_index = -1;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  // "nccl", "gloo" or "fake".
  virtual const char* BackendName() const = 0;
  // Rank of this process within this communicator, 0 <= Rank() < Size().
  virtual int Rank() const = 0;
  virtual int Size() const = 0;
  // Label used in error messages ("world", "group1[0,2]").
  virtual std::string GroupName() const = 0;
  // Default timeout of this communicator's collectives.
  virtual Milliseconds DefaultTimeout() const = 0;

  // Collective over this communicator: every rank calls it with the same `ranks` (ranks of THIS communicator,
  // ascending, unique). Members get a new communicator of ranks.size() processes whose rank order follows
  // `ranks`; non-members get nullptr. InvalidArgument for a bad rank list.
  virtual StatusOr<std::shared_ptr<Communicator>> NewGroup(const std::vector<int>& ranks);

  // Gathers equal-size chunks: `output` (numel == Size() * input.numel(), same dtype) receives rank r's `input`
  // at flat elements [r * n, (r + 1) * n). With output shaped [Size() * d0, ...] that is concatenation on dim 0.
  virtual WorkPtr AllGatherIntoTensor(const at::Tensor& output, const at::Tensor& input,
                                      const CollectiveOptions& options = {});
  // Sends dim-0 slice i of `input` to rank i and stores the slice received from rank j as dim-0 slice j of
  // `output` (split sizes in `options`; equal splits when empty). Trailing dims of input and output must match.
  // REQUIRES: output and input do not overlap.
  virtual WorkPtr AllToAll(const at::Tensor& output, const at::Tensor& input, const AllToAllOptions& options = {});
  // Copies root's `tensor` into `tensor` on every other rank.
  virtual WorkPtr Broadcast(const at::Tensor& tensor, const BroadcastOptions& options = {});
  // Point-to-point; the peer calls Recv/Send with the same shape, dtype and tag.
  virtual WorkPtr Send(const at::Tensor& tensor, int dst, const P2POptions& options = {});
  virtual WorkPtr Recv(const at::Tensor& tensor, int src, const P2POptions& options = {});
  // Returns once every rank has entered the barrier.
  virtual WorkPtr Barrier(const CollectiveOptions& options = {});
  // In-place elementwise reduction over ranks. kSum: bf16/fp16 accumulate as the backend does (Gloo stages bf16
  // in fp32). kMax: exact in every dtype; NaN handling is the backend's (Gloo's std::max and NCCL's fmaxf may drop
  // a NaN), so callers that must see one map it to +inf first.
  virtual WorkPtr AllReduce(const at::Tensor& tensor, ReduceOp op, const CollectiveOptions& options = {});
  WorkPtr AllReduceSum(const at::Tensor& tensor, const CollectiveOptions& options = {}) {
    return AllReduce(tensor, ReduceOp::kSum, options);
  }
  WorkPtr AllReduceMax(const at::Tensor& tensor, const CollectiveOptions& options = {}) {
    return AllReduce(tensor, ReduceOp::kMax, options);
  }
  // `output` (numel n) receives the sum over ranks of flat elements [Rank() * n, (Rank() + 1) * n) of `input`
  // (numel Size() * n).
  virtual WorkPtr ReduceScatterSum(const at::Tensor& output, const at::Tensor& input,
                                   const CollectiveOptions& options = {});

 protected:
  Communicator() = default;
  // A completed Work failing with NotSupported "Backend <BackendName()> does not support <op>".
  WorkPtr Unsupported(const char* op) const;
};
using CommunicatorPtr = std::shared_ptr<Communicator>;

// Joins the world described by `world`: rank 0 hosts a c10d TCPStore on master_addr:master_port, every rank
// connects to it, and the backend's connections are set up through it (NCCL's unique id travels through it).
// kAuto picks NCCL with one GPU per local rank, Gloo staged through host memory when local ranks share GPUs
// (UsesHostStaging; logged as a warning), Gloo without a GPU, and "fake" for a world of one without a GPU.
// Collective: every rank of the world calls it. Errors: Unavailable naming the master address and port when the
// store cannot be reached within the rendezvous timeout; NotSupported for a backend that was not compiled in.
StatusOr<CommunicatorPtr> InitCommunicator(const WorldInfo& world, const CommOptions& options = {});

// Device tensors over a host backend (--max_gpu_mem_gb with several ranks on one GPU, where NCCL cannot run:
// it needs one GPU per rank). Every op copies its device inputs to host memory, runs on `host` (Gloo), and copies
// the results back; CPU tensors pass straight through unless `always_stage` (tests). Collectives complete before
// they return, as on Gloo; a staged Recv copies into its tensor when its Work is waited for, and a staged Send
// keeps its host copy alive until then. Slow (every byte crosses PCIe twice): for memory emulation only.
// BackendName() is "gloo+host"; sub-groups (NewGroup) are staged too. InitCommunicator picks it by itself (see
// there). Thread safety: as `host`.
CommunicatorPtr MakeHostStagedCommunicator(CommunicatorPtr host, bool always_stage = false);

// Whether InitCommunicator on this process stages device tensors through Gloo: a CUDA build with a visible GPU
// where Gloo was asked for, or kAuto with more local ranks (`local_world_size`) than visible GPUs.
bool UsesHostStaging(const WorldInfo& world, BackendKind backend);

// The in-process world of size 1 ("fake" backend).
CommunicatorPtr MakeFakeCommunicator(Milliseconds timeout = kDefaultCollectiveTimeout);

// Resolves CommOptions::timeout (0 -> LIVEAVATAR_DIST_TIMEOUT_S or kDefaultCollectiveTimeout).
StatusOr<Milliseconds> ResolveTimeout(Milliseconds requested);

}  // namespace liveavatar::dist
