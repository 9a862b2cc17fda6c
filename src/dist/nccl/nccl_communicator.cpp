// The "nccl" backend: CUDA tensors, one dedicated communication stream per communicator.
//
// Ordering: an op records an event on the caller's current compute stream, makes the communication stream wait
// for it, enqueues the NCCL call there and records a completion event. Work::Synchronize() makes the compute
// stream wait for that event (no host block); Work::Wait() polls it from the host with the op's timeout and, on
// expiry, aborts the NCCL communicator so that no rank hangs forever, returning DeadlineExceeded.
// Data movement (all-gather, all-to-all, broadcast, send/recv) moves bytes (ncclUint8), so every dtype works
// bit for bit; reductions use the tensor's dtype (fp32/fp64/fp16/bf16/int8/uint8/int32/int64).
//
// This file uses only the CUDA runtime API and NCCL, plus CPU LibTorch headers. The parts that need LibTorch's
// CUDA build (current stream, caching-allocator stream bookkeeping) are guarded by LIVEAVATAR_HAVE_CUDA, so the
// CPU CI can compile-check it (target la_nccl_compile_check) without linking it.
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

#if LIVEAVATAR_HAVE_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "dist/dist_internal.h"
#include "liveavatar/core/logging.h"

#ifndef NCCL_VERSION_CODE
#define NCCL_VERSION_CODE 0
#endif
#define LA_NCCL_AT_LEAST(a, b) (NCCL_VERSION_CODE >= NCCL_VERSION(a, b, 0))

namespace liveavatar::dist::internal {
namespace {

constexpr const char* kNccl = "nccl";
using Clock = std::chrono::steady_clock;

std::string CudaError(cudaError_t e) { return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e); }

std::string NcclError(ncclResult_t r, ncclComm_t comm) {
  std::string s = ncclGetErrorString(r);
#if LA_NCCL_AT_LEAST(2, 13)
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && *last != '\0') s += " (" + std::string(last) + ")";
#endif
  return s;
}

// Sets the CUDA device for the scope and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device) cudaSetDevice(device);
  }
  ~DeviceGuard() {
    if (previous_ >= 0) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

cudaStream_t CurrentComputeStream(int device) {
#if LIVEAVATAR_HAVE_CUDA
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
#else
  (void)device;
  return cudaStreamLegacy;
#endif
}

// Tells LibTorch's caching allocator that `t` is in use on `stream`, so its memory is not reused by the compute
// stream before the communication finished.
void RecordStream(const at::Tensor& t, cudaStream_t stream, int device) {
#if LIVEAVATAR_HAVE_CUDA
  c10::cuda::CUDACachingAllocator::recordStream(
      t.storage().data_ptr(), c10::cuda::getStreamFromExternal(stream, static_cast<c10::DeviceIndex>(device)));
#else
  (void)t;
  (void)stream;
  (void)device;
#endif
}

bool NcclReduceType(at::ScalarType t, ncclDataType_t* out) {
  switch (t) {
    case at::kFloat: *out = ncclFloat32; return true;
    case at::kDouble: *out = ncclFloat64; return true;
    case at::kHalf: *out = ncclFloat16; return true;
#if LA_NCCL_AT_LEAST(2, 10)
    case at::kBFloat16: *out = ncclBfloat16; return true;
#endif
    case at::kChar: *out = ncclInt8; return true;
    case at::kByte: *out = ncclUint8; return true;
    case at::kInt: *out = ncclInt32; return true;
    case at::kLong: *out = ncclInt64; return true;
    default: return false;
  }
}

char* Bytes(const at::Tensor& t) { return static_cast<char*>(t.data_ptr()); }

class NcclCommunicator final : public Communicator, public std::enable_shared_from_this<NcclCommunicator> {
 public:
  NcclCommunicator(GroupContext ctx, ncclComm_t comm, cudaStream_t stream, float* barrier_buf)
      : ctx_(std::move(ctx)), comm_(comm), stream_(stream), barrier_buf_(barrier_buf) {}

  ~NcclCommunicator() override {
    DeviceGuard guard(ctx_.device_index);
    if (comm_ != nullptr) {
      if (broken_.ok()) {
        cudaStreamSynchronize(stream_);
        ncclCommDestroy(comm_);
      } else {
        ncclCommAbort(comm_);
      }
    }
    if (barrier_buf_ != nullptr) cudaFree(barrier_buf_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  // Joins the group described by ctx: rank 0 makes the NCCL unique id and publishes it in the store.
  static StatusOr<CommunicatorPtr> Create(const GroupContext& ctx) {
    if (ctx.device_index < 0) return Status::InvalidArgument("nccl: no CUDA device index for " + ctx.name);
    int count = 0;
    cudaError_t ce = cudaGetDeviceCount(&count);
    if (ce != cudaSuccess || ctx.device_index >= count) {
      return Status::Unavailable("nccl: " + ctx.DescribeRank(ctx.rank) + " needs CUDA device " +
                                 std::to_string(ctx.device_index) + " but " + std::to_string(count) +
                                 " are visible" + (ce != cudaSuccess ? " (" + CudaError(ce) + ")" : ""));
    }
    DeviceGuard guard(ctx.device_index);
    ncclUniqueId id;
    const std::string key = ctx.key_prefix + "nccl_unique_id";
    try {
      if (ctx.rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess) return Status::Unavailable("nccl: ncclGetUniqueId failed: " + NcclError(r, nullptr));
        const uint8_t* p = reinterpret_cast<const uint8_t*>(&id);
        ctx.store->set(key, std::vector<uint8_t>(p, p + sizeof(id)));
      } else {
        std::vector<uint8_t> v = ctx.store->get(key);  // blocks up to the store's timeout
        if (v.size() != sizeof(id)) return Status::Corruption("nccl: unique id in the store has the wrong size");
        std::copy(v.begin(), v.end(), reinterpret_cast<uint8_t*>(&id));
      }
    } catch (const std::exception& e) {
      return Status::Unavailable("nccl: " + ctx.DescribeRank(ctx.rank) + " of group " + ctx.name +
                                 " could not exchange the NCCL unique id through the store: " + e.what());
    }

    ncclComm_t comm = nullptr;
#if LA_NCCL_AT_LEAST(2, 14)
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // init can then be abandoned when a peer never arrives
    ncclResult_t r = ncclCommInitRankConfig(&comm, ctx.size, id, ctx.rank, &config);
#else
    ncclResult_t r = ncclCommInitRank(&comm, ctx.size, id, ctx.rank);
#endif
    Status s = Settle(comm, r, Clock::now() + ctx.timeout);
    if (!s.ok()) {
      if (comm != nullptr) ncclCommAbort(comm);
      return Status(s).WithPrefix("nccl: init of " + ctx.DescribeRank(ctx.rank) + " of group " + ctx.name + " (" +
                                  std::to_string(ctx.size) + " ranks, device " + std::to_string(ctx.device_index) +
                                  ")");
    }
    cudaStream_t stream = nullptr;
    float* barrier_buf = nullptr;
    ce = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    if (ce == cudaSuccess) ce = cudaMalloc(reinterpret_cast<void**>(&barrier_buf), sizeof(float));
    if (ce != cudaSuccess) {
      ncclCommAbort(comm);
      if (stream != nullptr) cudaStreamDestroy(stream);
      return Status::Unavailable("nccl: " + CudaError(ce));
    }
    return CommunicatorPtr(std::make_shared<NcclCommunicator>(ctx, comm, stream, barrier_buf));
  }

  const char* BackendName() const override { return kNccl; }
  int Rank() const override { return ctx_.rank; }
  int Size() const override { return ctx_.size; }
  std::string GroupName() const override { return ctx_.name; }
  Milliseconds DefaultTimeout() const override { return ctx_.timeout; }

  StatusOr<CommunicatorPtr> NewGroup(const std::vector<int>& ranks) override {
    LA_RETURN_IF_ERROR(CheckNewGroupRanks(ctx_.size, ranks));
    const int id = next_group_++;
    auto it = std::find(ranks.begin(), ranks.end(), ctx_.rank);
    if (it == ranks.end()) return CommunicatorPtr();
    GroupContext sub = ctx_;
    sub.key_prefix = ctx_.key_prefix + "g" + std::to_string(id) + "/";
    sub.rank = static_cast<int>(it - ranks.begin());
    sub.size = static_cast<int>(ranks.size());
    sub.global_ranks.clear();
    sub.name = "group" + std::to_string(id) + "[";
    for (size_t i = 0; i < ranks.size(); ++i) {
      sub.global_ranks.push_back(ctx_.global_ranks[ranks[i]]);
      sub.name += (i ? "," : "") + std::to_string(sub.global_ranks.back());
    }
    sub.name += "]";
    return Create(sub);
  }

  WorkPtr AllGatherIntoTensor(const at::Tensor& output, const at::Tensor& input,
                              const CollectiveOptions& options) override {
    const char* op = "all_gather_into_tensor";
    Status s = CheckAllGather(kNccl, ctx_.size, output, input);
    if (s.ok()) s = CheckDevice(op, output);
    if (!s.ok()) return Work::Completed(s);
    return Issue(op, options.timeout, {output, input}, [&](cudaStream_t st) {
      return ncclAllGather(input.data_ptr(), output.data_ptr(), input.nbytes(), ncclUint8, comm_, st);
    });
  }

  WorkPtr AllToAll(const at::Tensor& output, const at::Tensor& input, const AllToAllOptions& options) override {
    const char* op = "all_to_all";
    std::vector<int64_t> in_splits = options.input_split_sizes;
    std::vector<int64_t> out_splits = options.output_split_sizes;
    Status s = CheckAllToAll(kNccl, ctx_.size, output, input, &in_splits, &out_splits);
    if (s.ok()) s = CheckDevice(op, output);
    if (s.ok() && in_splits[ctx_.rank] != out_splits[ctx_.rank]) {
      s = Status::InvalidArgument("nccl all_to_all: rank " + std::to_string(ctx_.rank) + " sends " +
                                  std::to_string(in_splits[ctx_.rank]) + " rows to itself but expects " +
                                  std::to_string(out_splits[ctx_.rank]));
    }
    if (!s.ok()) return Work::Completed(s);
    const size_t row_bytes = input.dim() > 0 && input.size(0) > 0 ? input.nbytes() / input.size(0)
                             : output.dim() > 0 && output.size(0) > 0 ? output.nbytes() / output.size(0)
                                                                      : 0;
    return Issue(op, options.timeout, {output, input}, [&](cudaStream_t st) -> ncclResult_t {
      size_t in_off = 0, out_off = 0;
      for (int p = 0; p < ctx_.rank; ++p) {
        in_off += in_splits[p] * row_bytes;
        out_off += out_splits[p] * row_bytes;
      }
      if (in_splits[ctx_.rank] > 0) {  // this rank's own rows: a device copy, not a self send
        cudaError_t e = cudaMemcpyAsync(Bytes(output) + out_off, Bytes(input) + in_off,
                                        in_splits[ctx_.rank] * row_bytes, cudaMemcpyDeviceToDevice, st);
        if (e != cudaSuccess) return ncclUnhandledCudaError;
      }
      ncclResult_t r = ncclGroupStart();
      if (r != ncclSuccess) return r;
      in_off = 0;
      out_off = 0;
      for (int p = 0; p < ctx_.size; ++p) {
        if (p != ctx_.rank) {
          if (in_splits[p] > 0) ncclSend(Bytes(input) + in_off, in_splits[p] * row_bytes, ncclUint8, p, comm_, st);
          if (out_splits[p] > 0) ncclRecv(Bytes(output) + out_off, out_splits[p] * row_bytes, ncclUint8, p, comm_, st);
        }
        in_off += in_splits[p] * row_bytes;
        out_off += out_splits[p] * row_bytes;
      }
      return ncclGroupEnd();
    });
  }

  WorkPtr Broadcast(const at::Tensor& tensor, const BroadcastOptions& options) override {
    const char* op = "broadcast";
    Status s = CheckDense(kNccl, op, "tensor", tensor);
    if (s.ok()) s = CheckDevice(op, tensor);
    if (s.ok() && (options.root < 0 || options.root >= ctx_.size)) {
      s = Status::InvalidArgument("nccl broadcast: root " + std::to_string(options.root) + " is outside [0, " +
                                  std::to_string(ctx_.size) + ")");
    }
    if (!s.ok()) return Work::Completed(s);
    return Issue(op, options.timeout, {tensor}, [&](cudaStream_t st) {
      return ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.nbytes(), ncclUint8, options.root, comm_, st);
    });
  }

  WorkPtr Send(const at::Tensor& tensor, int dst, const P2POptions& options) override {
    const char* op = "send";
    Status s = CheckDense(kNccl, op, "tensor", tensor);
    if (s.ok()) s = CheckDevice(op, tensor);
    if (s.ok()) s = CheckPeer(kNccl, op, ctx_.size, ctx_.rank, dst);
    if (!s.ok()) return Work::Completed(s);
    return Issue(op, options.timeout, {tensor}, [&](cudaStream_t st) {
      return ncclSend(tensor.data_ptr(), tensor.nbytes(), ncclUint8, dst, comm_, st);
    });
  }

  WorkPtr Recv(const at::Tensor& tensor, int src, const P2POptions& options) override {
    const char* op = "recv";
    Status s = CheckDense(kNccl, op, "tensor", tensor);
    if (s.ok()) s = CheckDevice(op, tensor);
    if (s.ok()) s = CheckPeer(kNccl, op, ctx_.size, ctx_.rank, src);
    if (!s.ok()) return Work::Completed(s);
    return Issue(op, options.timeout, {tensor}, [&](cudaStream_t st) {
      return ncclRecv(tensor.data_ptr(), tensor.nbytes(), ncclUint8, src, comm_, st);
    });
  }

  WorkPtr Barrier(const CollectiveOptions& options) override {
    return Issue("barrier", options.timeout, {}, [&](cudaStream_t st) {
      return ncclAllReduce(barrier_buf_, barrier_buf_, 1, ncclFloat32, ncclSum, comm_, st);
    });
  }

  WorkPtr AllReduce(const at::Tensor& tensor, ReduceOp reduce, const CollectiveOptions& options) override {
    const char* op = "all_reduce";
    Status s = CheckDense(kNccl, op, "tensor", tensor);
    if (s.ok()) s = CheckDevice(op, tensor);
    if (!s.ok()) return Work::Completed(s);
    ncclDataType_t type;
    if (!NcclReduceType(tensor.scalar_type(), &type)) return UnsupportedDtype(op, tensor);
    return Issue(op, options.timeout, {tensor}, [&](cudaStream_t st) {
      return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), type,
                           reduce == ReduceOp::kMax ? ncclMax : ncclSum, comm_, st);
    });
  }

  WorkPtr ReduceScatterSum(const at::Tensor& output, const at::Tensor& input,
                           const CollectiveOptions& options) override {
    const char* op = "reduce_scatter";
    Status s = CheckReduceScatter(kNccl, ctx_.size, output, input);
    if (s.ok()) s = CheckDevice(op, output);
    if (!s.ok()) return Work::Completed(s);
    ncclDataType_t type;
    if (!NcclReduceType(input.scalar_type(), &type)) return UnsupportedDtype(op, input);
    return Issue(op, options.timeout, {output, input}, [&](cudaStream_t st) {
      return ncclReduceScatter(input.data_ptr(), output.data_ptr(), output.numel(), type, ncclSum, comm_, st);
    });
  }

 private:
  class NcclWork final : public Work {
   public:
    NcclWork(std::shared_ptr<NcclCommunicator> comm, cudaEvent_t done, const char* op, int64_t seq,
             Clock::time_point deadline, Milliseconds timeout)
        : comm_(std::move(comm)), done_(done), op_(op), seq_(seq), deadline_(deadline), timeout_(timeout) {}
    ~NcclWork() override {
      if (done_ != nullptr) cudaEventDestroy(done_);
    }
    bool IsCompleted() override { return finished_ || cudaEventQuery(done_) != cudaErrorNotReady; }
    Status Wait() override {
      if (finished_) return status_;
      status_ = comm_->WaitEvent(done_, op_, seq_, deadline_, timeout_);
      finished_ = true;
      return status_;
    }
    Status Synchronize() override {
      if (finished_) return status_;
      DeviceGuard guard(comm_->ctx_.device_index);
      cudaError_t e = cudaStreamWaitEvent(CurrentComputeStream(comm_->ctx_.device_index), done_, 0);
      if (e != cudaSuccess) return Status::Internal(std::string("nccl ") + op_ + ": " + CudaError(e));
      return Status::Ok();
    }

   private:
    std::shared_ptr<NcclCommunicator> comm_;
    cudaEvent_t done_;
    const char* op_;
    int64_t seq_;
    Clock::time_point deadline_;
    Milliseconds timeout_;
    bool finished_ = false;
    Status status_;
  };

  // Polls the NCCL state after a non-blocking call until it is settled or the deadline passes.
  static Status Settle(ncclComm_t comm, ncclResult_t r, Clock::time_point deadline) {
    while (r == ncclInProgress) {
      if (Clock::now() > deadline) return Status::DeadlineExceeded("timed out waiting for the peers");
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      if (ncclCommGetAsyncError(comm, &r) != ncclSuccess) break;
    }
    if (r != ncclSuccess) return Status::Unavailable(NcclError(r, comm));
    return Status::Ok();
  }

  Status CheckDevice(const char* op, const at::Tensor& t) const {
    if (!t.is_cuda() || t.get_device() != ctx_.device_index) {
      return Status::InvalidArgument(std::string("nccl ") + op + ": tensors must be on cuda:" +
                                     std::to_string(ctx_.device_index) + ", got " + t.device().str());
    }
    return Status::Ok();
  }

  WorkPtr UnsupportedDtype(const char* op, const at::Tensor& t) const {
    return Work::Completed(Status::NotSupported(std::string("Backend nccl does not support ") + op + " on dtype " +
                                                std::string(c10::toString(t.scalar_type()))));
  }

  Status Fail(const char* op, int64_t seq, Milliseconds timeout, const std::string& what) {
    Status s = CommFailure(ctx_, kNccl, op, seq, timeout, what, "");
    if (broken_.ok()) {
      broken_ = s;
      if (comm_ != nullptr) {
        ncclCommAbort(comm_);  // frees every rank blocked on this communicator's kernels
        comm_ = nullptr;
      }
    }
    LA_LOG_ERROR("{}", s.message());
    return s;
  }

  Status WaitEvent(cudaEvent_t done, const char* op, int64_t seq, Clock::time_point deadline, Milliseconds timeout) {
    auto sleep = std::chrono::microseconds(20);
    for (;;) {
      cudaError_t e = cudaEventQuery(done);
      if (e == cudaSuccess) return Status::Ok();
      if (e != cudaErrorNotReady) return Fail(op, seq, timeout, CudaError(e));
      if (comm_ == nullptr) return broken_;
      ncclResult_t async = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess && async != ncclInProgress) {
        return Fail(op, seq, timeout, NcclError(async, comm_));
      }
      if (Clock::now() > deadline) {
        return Fail(op, seq, timeout,
                    "timeout: a peer never joined or is stuck; NCCL communicator aborted (rank " +
                        std::to_string(ctx_.rank) + " waited for " + op + ")");
      }
      std::this_thread::sleep_for(sleep);
      sleep = std::min(sleep * 2, std::chrono::microseconds(2000));
    }
  }

  // Orders the communication stream after the compute stream, enqueues `enqueue(stream_)`, records completion.
  template <typename Enqueue>
  WorkPtr Issue(const char* op, Milliseconds requested, std::initializer_list<at::Tensor> tensors, Enqueue&& enqueue) {
    if (!broken_.ok()) {
      return Work::Completed(Status::Unavailable(std::string("nccl ") + op + " on group " + ctx_.name +
                                                 ": communicator is broken by an earlier error: " +
                                                 broken_.message()));
    }
    const Milliseconds timeout = EffectiveTimeout(requested, ctx_.timeout);
    const int64_t seq = ++seq_;
    DeviceGuard guard(ctx_.device_index);
    cudaEvent_t ready = nullptr, done = nullptr;
    cudaError_t e = cudaEventCreateWithFlags(&ready, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventRecord(ready, CurrentComputeStream(ctx_.device_index));
    if (e == cudaSuccess) e = cudaStreamWaitEvent(stream_, ready, 0);
    if (ready != nullptr) cudaEventDestroy(ready);
    if (e != cudaSuccess) return Work::Completed(Fail(op, seq, timeout, CudaError(e)));

    ncclResult_t r = enqueue(stream_);
    Status settled = Settle(comm_, r, Clock::now() + timeout);
    if (!settled.ok()) return Work::Completed(Fail(op, seq, timeout, settled.message()));
    for (const at::Tensor& t : tensors) RecordStream(t, stream_, ctx_.device_index);

    e = cudaEventCreateWithFlags(&done, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventRecord(done, stream_);
    if (e != cudaSuccess) {
      if (done != nullptr) cudaEventDestroy(done);
      return Work::Completed(Fail(op, seq, timeout, CudaError(e)));
    }
    return std::make_shared<NcclWork>(shared_from_this(), done, op, seq, Clock::now() + timeout, timeout);
  }

  GroupContext ctx_;
  ncclComm_t comm_;
  cudaStream_t stream_;
  float* barrier_buf_;
  int64_t seq_ = 0;
  int next_group_ = 0;
  Status broken_;
};

}  // namespace

StatusOr<CommunicatorPtr> CreateNcclCommunicator(const GroupContext& ctx) { return NcclCommunicator::Create(ctx); }

}  // namespace liveavatar::dist::internal
