// The "gloo" backend: CPU collectives through c10d::ProcessGroupGloo.
//
// LibTorch 1.13's ProcessGroupGloo lacks _allgather_base, reduce_scatter and bf16; this file works around them:
// - all_gather_into_tensor: allgather into a list of views of the one flat output;
// - data-movement ops on dtypes Gloo does not know (bf16, bool, float8, int16, ...): the tensor is reinterpreted
//   bit for bit as a Gloo dtype of the same element size (bf16 -> half), so no value is converted;
// - all_reduce on bf16: staged through fp32;
// - reduce_scatter: all_to_all of the chunks, then a local sum (fp32 accumulation for bf16/half);
// - uneven all_to_all: alltoall_base with split sizes (present in 1.13).
// Every op blocks until done; the returned Work is complete.
#include <algorithm>

#include <ATen/ATen.h>

#include "dist/dist_internal.h"
#include "liveavatar/core/logging.h"

#if __has_include(<gloo/algorithm.h>)
#define LIVEAVATAR_HAVE_GLOO 1
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#else
#define LIVEAVATAR_HAVE_GLOO 0
#endif

namespace liveavatar::dist::internal {

#if LIVEAVATAR_HAVE_GLOO
namespace {

constexpr const char* kGloo = "gloo";

bool GlooKnows(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
    case at::kDouble:
    case at::kHalf:
    case at::kChar:
    case at::kByte:
    case at::kInt:
    case at::kLong:
      return true;
    default:
      return false;
  }
}

// Bit-for-bit view of `t` as a dtype Gloo can move (same element size). Undefined if none exists.
at::Tensor MovementView(const at::Tensor& t) {
  if (GlooKnows(t.scalar_type())) return t;
  switch (t.element_size()) {
    case 1: return t.view(at::kByte);
    case 2: return t.view(at::kHalf);
    case 4: return t.view(at::kInt);
    case 8: return t.view(at::kLong);
    default: return at::Tensor();
  }
}

Status CheckCpu(const char* op, const at::Tensor& t) {
  if (!t.device().is_cpu()) {
    return Status::InvalidArgument(std::string("gloo ") + op + ": tensors must be on the CPU, got " + t.device().str() +
                                   " (use the nccl backend for CUDA tensors)");
  }
  return Status::Ok();
}

bool IsLoopback(const std::string& addr) {
  return addr.rfind("127.", 0) == 0 || addr == "localhost" || addr == "::1";
}

std::shared_ptr<::gloo::transport::Device> MakeDevice(const std::string& master_addr) {
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname != nullptr && *ifname != '\0') return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  if (IsLoopback(master_addr)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

class GlooCommunicator final : public Communicator, public std::enable_shared_from_this<GlooCommunicator> {
 public:
  GlooCommunicator(GroupContext ctx, std::shared_ptr<::gloo::transport::Device> device,
                   c10::intrusive_ptr<c10d::ProcessGroupGloo> pg)
      : ctx_(std::move(ctx)), device_(std::move(device)), pg_(std::move(pg)), tracker_(&ctx_) {}

  ~GlooCommunicator() override {
    // After a failure a Gloo worker thread may still sit in the abandoned collective until the process group's
    // own timeout; ProcessGroupGloo's destructor would join it. Leak the group instead, so that tearing down
    // (and exiting) never blocks on a dead or absent peer.
    if (!broken_.ok()) pg_.release();
  }

  const char* BackendName() const override { return kGloo; }
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
    return Create(sub, device_);
  }

  static StatusOr<CommunicatorPtr> Create(const GroupContext& ctx, std::shared_ptr<::gloo::transport::Device> device) {
    try {
      if (!device) device = MakeDevice(ctx.master_addr);
      auto options = c10d::ProcessGroupGloo::Options::create(ctx.timeout);
      options->devices.push_back(device);
      auto store = c10::make_intrusive<c10d::PrefixStore>(ctx.key_prefix + "pg/", ctx.store);
      auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, ctx.rank, ctx.size, options);
      return CommunicatorPtr(std::make_shared<GlooCommunicator>(ctx, device, pg));
    } catch (const std::exception& e) {
      return Status::Unavailable("gloo: could not connect " + ctx.DescribeRank(ctx.rank) + " of group " + ctx.name +
                                 " (" + std::to_string(ctx.size) + " ranks) to its peers: " + e.what());
    }
  }

  WorkPtr AllGatherIntoTensor(const at::Tensor& output, const at::Tensor& input,
                              const CollectiveOptions& options) override {
    const char* op = "all_gather_into_tensor";
    Status s = CheckAllGather(kGloo, ctx_.size, output, input);
    if (s.ok()) s = CheckCpu(op, output);
    if (!s.ok()) return Work::Completed(s);
    at::Tensor in = MovementView(input);
    if (!in.defined()) return UnsupportedDtype(op, input);
    at::Tensor out = MovementView(output).view({-1});
    const int64_t n = in.numel();
    return Run(op, options.timeout, [&](Milliseconds timeout) {
      std::vector<std::vector<at::Tensor>> outputs(1);
      for (int r = 0; r < ctx_.size; ++r) outputs[0].push_back(out.narrow(0, r * n, n).view(in.sizes()));
      std::vector<at::Tensor> inputs{in};
      c10d::AllgatherOptions o;
      o.timeout = timeout;
      pg_->allgather(outputs, inputs, o)->wait(timeout);
    });
  }

  WorkPtr AllToAll(const at::Tensor& output, const at::Tensor& input, const AllToAllOptions& options) override {
    const char* op = "all_to_all";
    std::vector<int64_t> in_splits = options.input_split_sizes;
    std::vector<int64_t> out_splits = options.output_split_sizes;
    Status s = CheckAllToAll(kGloo, ctx_.size, output, input, &in_splits, &out_splits);
    if (s.ok()) s = CheckCpu(op, output);
    if (!s.ok()) return Work::Completed(s);
    at::Tensor in = MovementView(input);
    if (!in.defined()) return UnsupportedDtype(op, input);
    at::Tensor out = MovementView(output);
    return Run(op, options.timeout, [&](Milliseconds timeout) {
      c10d::AllToAllOptions o;
      o.timeout = timeout;
      pg_->alltoall_base(out, in, out_splits, in_splits, o)->wait(timeout);
    });
  }

  WorkPtr Broadcast(const at::Tensor& tensor, const BroadcastOptions& options) override {
    const char* op = "broadcast";
    Status s = CheckDense(kGloo, op, "tensor", tensor);
    if (s.ok()) s = CheckCpu(op, tensor);
    if (s.ok() && (options.root < 0 || options.root >= ctx_.size)) {
      s = Status::InvalidArgument("gloo broadcast: root " + std::to_string(options.root) + " is outside [0, " +
                                  std::to_string(ctx_.size) + ")");
    }
    if (!s.ok()) return Work::Completed(s);
    at::Tensor t = MovementView(tensor);
    if (!t.defined()) return UnsupportedDtype(op, tensor);
    return Run(op, options.timeout, [&](Milliseconds timeout) {
      std::vector<at::Tensor> tensors{t};
      c10d::BroadcastOptions o;
      o.rootRank = options.root;
      o.timeout = timeout;
      pg_->broadcast(tensors, o)->wait(timeout);
    });
  }

  WorkPtr Send(const at::Tensor& tensor, int dst, const P2POptions& options) override {
    return PointToPoint("send", tensor, dst, options);
  }
  WorkPtr Recv(const at::Tensor& tensor, int src, const P2POptions& options) override {
    return PointToPoint("recv", tensor, src, options);
  }

  WorkPtr Barrier(const CollectiveOptions& options) override {
    return Run("barrier", options.timeout, [&](Milliseconds timeout) {
      c10d::BarrierOptions o;
      o.timeout = timeout;
      pg_->barrier(o)->wait(timeout);
    });
  }

  WorkPtr AllReduce(const at::Tensor& tensor, ReduceOp reduce, const CollectiveOptions& options) override {
    const char* op = "all_reduce";
    Status s = CheckDense(kGloo, op, "tensor", tensor);
    if (s.ok()) s = CheckCpu(op, tensor);
    if (!s.ok()) return Work::Completed(s);
    const bool staged = tensor.scalar_type() == at::kBFloat16;
    if (!staged && !GlooKnows(tensor.scalar_type())) return UnsupportedDtype(op, tensor);
    at::Tensor work = staged ? tensor.to(at::kFloat) : tensor;
    WorkPtr w = Run(op, options.timeout, [&](Milliseconds timeout) {
      std::vector<at::Tensor> tensors{work};
      c10d::AllreduceOptions o;
      o.reduceOp = reduce == ReduceOp::kMax ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
      o.timeout = timeout;
      pg_->allreduce(tensors, o)->wait(timeout);
    });
    if (staged && w->Wait().ok()) tensor.copy_(work);
    return w;
  }

  WorkPtr ReduceScatterSum(const at::Tensor& output, const at::Tensor& input,
                           const CollectiveOptions& options) override {
    const char* op = "reduce_scatter";
    Status s = CheckReduceScatter(kGloo, ctx_.size, output, input);
    if (s.ok()) s = CheckCpu(op, output);
    if (!s.ok()) return Work::Completed(s);
    const at::ScalarType dt = input.scalar_type();
    if (dt != at::kBFloat16 && !GlooKnows(dt)) return UnsupportedDtype(op, input);
    at::Tensor chunks = at::empty({input.numel()}, input.options());
    at::Tensor in = MovementView(input.view({-1}));
    at::Tensor out = MovementView(chunks);
    WorkPtr w = Run(op, options.timeout, [&](Milliseconds timeout) {
      std::vector<int64_t> no_splits;
      c10d::AllToAllOptions o;
      o.timeout = timeout;
      pg_->alltoall_base(out, in, no_splits, no_splits, o)->wait(timeout);
    });
    if (w->Wait().ok()) {
      at::Tensor stacked = chunks.view({ctx_.size, output.numel()});
      const bool low_precision = dt == at::kBFloat16 || dt == at::kHalf;
      at::Tensor sum = low_precision ? stacked.to(at::kFloat).sum(0) : stacked.sum(0);
      output.view({-1}).copy_(sum);
    }
    return w;
  }

 private:
  WorkPtr UnsupportedDtype(const char* op, const at::Tensor& t) const {
    return Work::Completed(Status::NotSupported(std::string("Backend gloo does not support ") + op + " on dtype " +
                                                std::string(c10::toString(t.scalar_type()))));
  }

  // Send/Recv are asynchronous (a blocking send would deadlock a ring exchange: Gloo delivers a send only once
  // the peer posted the matching recv). The returned Work waits with the op's timeout.
  WorkPtr PointToPoint(const char* op, const at::Tensor& tensor, int peer, const P2POptions& options) {
    Status s = CheckDense(kGloo, op, "tensor", tensor);
    if (s.ok()) s = CheckCpu(op, tensor);
    if (s.ok()) s = CheckPeer(kGloo, op, ctx_.size, ctx_.rank, peer);
    if (!s.ok()) return Work::Completed(s);
    at::Tensor t = MovementView(tensor);
    if (!t.defined()) return UnsupportedDtype(op, tensor);
    if (!broken_.ok()) return Run(op, options.timeout, [](Milliseconds) {});
    const bool is_send = op[0] == 's';
    const Milliseconds timeout = EffectiveTimeout(options.timeout, ctx_.timeout);
    // Point-to-point ops have their own numbering: ranks issue different numbers of them, so they do not take
    // part in the collective progress tracking.
    const int64_t seq = ++p2p_seq_;
    const std::string culprit = ctx_.DescribeRank(peer) + " did not post the matching " + (is_send ? "recv" : "send") +
                                " (tag " + std::to_string(options.tag) + ")";
    try {
      std::vector<at::Tensor> tensors{t};
      auto work = is_send ? pg_->send(tensors, peer, options.tag) : pg_->recv(tensors, peer, options.tag);
      return std::make_shared<PendingWork>(shared_from_this(), std::move(work), op, seq, timeout, culprit);
    } catch (const std::exception& e) {
      return Work::Completed(Fail(op, seq, timeout, e.what(), culprit));
    }
  }

  // A c10d work issued but not yet waited for (Send/Recv). Keeps the communicator alive.
  class PendingWork final : public Work {
   public:
    PendingWork(std::shared_ptr<GlooCommunicator> comm, c10::intrusive_ptr<c10d::Work> work, const char* op,
                int64_t seq, Milliseconds timeout, std::string culprit)
        : comm_(std::move(comm)),
          work_(std::move(work)),
          op_(op),
          seq_(seq),
          timeout_(timeout),
          culprit_(std::move(culprit)) {}
    bool IsCompleted() override { return done_ || work_->isCompleted(); }
    Status Wait() override {
      if (done_) return status_;
      try {
        work_->wait(timeout_);
      } catch (const std::exception& e) {
        status_ = comm_->Fail(op_, seq_, timeout_, e.what(), culprit_);
      }
      done_ = true;
      work_.reset();
      return status_;
    }

   private:
    std::shared_ptr<GlooCommunicator> comm_;
    c10::intrusive_ptr<c10d::Work> work_;
    const char* op_;
    int64_t seq_;
    Milliseconds timeout_;
    std::string culprit_;
    bool done_ = false;
    Status status_;
  };

  // `culprit` empty: ask the progress tracker which ranks never reached collective #seq.
  Status Fail(const char* op, int64_t seq, Milliseconds timeout, const std::string& what,
              const std::string& culprit = "") {
    Status s = CommFailure(ctx_, kGloo, op, seq, timeout, what,
                           culprit.empty() ? tracker_.DescribeLaggards(seq) : culprit);
    if (broken_.ok()) broken_ = s;
    LA_LOG_ERROR("{}", s.message());
    return s;
  }

  // Runs one blocking c10d op with the resolved timeout; turns an exception into a Status that names this rank,
  // the op, and the ranks that never reached it. After a failure the communicator is broken.
  template <typename Body>
  WorkPtr Run(const char* op, Milliseconds requested, Body&& body) {
    if (!broken_.ok()) {
      return Work::Completed(Status::Unavailable(std::string("gloo ") + op + " on group " + ctx_.name +
                                                 ": communicator is broken by an earlier error: " +
                                                 broken_.message()));
    }
    const Milliseconds timeout = EffectiveTimeout(requested, ctx_.timeout);
    const int64_t seq = ++seq_;
    tracker_.Enter(seq, op);
    try {
      body(timeout);
      return Work::Completed();
    } catch (const std::exception& e) {
      return Work::Completed(Fail(op, seq, timeout, e.what()));
    }
  }

  GroupContext ctx_;
  std::shared_ptr<::gloo::transport::Device> device_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
  ProgressTracker tracker_;
  int64_t seq_ = 0;      // collectives issued
  int64_t p2p_seq_ = 0;  // sends and receives issued
  int next_group_ = 0;
  Status broken_;
};

}  // namespace

StatusOr<CommunicatorPtr> CreateGlooCommunicator(const GroupContext& ctx) {
  return GlooCommunicator::Create(ctx, nullptr);
}

bool GlooCompiled() { return true; }

#else  // !LIVEAVATAR_HAVE_GLOO

StatusOr<CommunicatorPtr> CreateGlooCommunicator(const GroupContext& ctx) {
  return Status::NotSupported(
      "the gloo communication backend was not compiled in: the Gloo headers (<gloo/algorithm.h>, Debian package "
      "libgloo-dev) were missing at build time");
}

bool GlooCompiled() { return false; }

#endif

}  // namespace liveavatar::dist::internal
