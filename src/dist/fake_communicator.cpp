// The "fake" backend: an in-process world of one rank. Every collective is the single-process identity
// (all-gather/all-to-all copy input to output, broadcast/all-reduce/barrier leave data as is), and Send to
// oneself queues a copy that the matching Recv (same tag) pops. Arguments are checked exactly as the real
// backends check them, so code above dist/ is exercised with the same contract.
#include <deque>
#include <map>

#include <ATen/ATen.h>

#include "dist/dist_internal.h"

namespace liveavatar::dist {
namespace {

constexpr const char* kFake = "fake";

class FakeCommunicator final : public Communicator {
 public:
  explicit FakeCommunicator(Milliseconds timeout) : timeout_(timeout) {}

  const char* BackendName() const override { return kFake; }
  int Rank() const override { return 0; }
  int Size() const override { return 1; }
  std::string GroupName() const override { return "world"; }
  Milliseconds DefaultTimeout() const override { return timeout_; }

  StatusOr<CommunicatorPtr> NewGroup(const std::vector<int>& ranks) override {
    LA_RETURN_IF_ERROR(internal::CheckNewGroupRanks(1, ranks));
    return CommunicatorPtr(std::make_shared<FakeCommunicator>(timeout_));
  }

  WorkPtr AllGatherIntoTensor(const at::Tensor& output, const at::Tensor& input, const CollectiveOptions&) override {
    Status s = internal::CheckAllGather(kFake, 1, output, input);
    if (s.ok()) output.view({-1}).copy_(input.reshape({-1}));
    return Work::Completed(s);
  }

  WorkPtr AllToAll(const at::Tensor& output, const at::Tensor& input, const AllToAllOptions& options) override {
    std::vector<int64_t> in_splits = options.input_split_sizes;
    std::vector<int64_t> out_splits = options.output_split_sizes;
    Status s = internal::CheckAllToAll(kFake, 1, output, input, &in_splits, &out_splits);
    if (s.ok() && in_splits[0] != out_splits[0]) {
      s = Status::InvalidArgument("fake all_to_all: rank 0 sends " + std::to_string(in_splits[0]) +
                                  " rows to itself but expects " + std::to_string(out_splits[0]));
    }
    if (s.ok()) output.copy_(input);
    return Work::Completed(s);
  }

  WorkPtr Broadcast(const at::Tensor& tensor, const BroadcastOptions& options) override {
    Status s = internal::CheckDense(kFake, "broadcast", "tensor", tensor);
    if (s.ok() && options.root != 0) {
      s = Status::InvalidArgument("fake broadcast: root " + std::to_string(options.root) + " is outside [0, 1)");
    }
    return Work::Completed(s);
  }

  WorkPtr Send(const at::Tensor& tensor, int dst, const P2POptions& options) override {
    Status s = internal::CheckDense(kFake, "send", "tensor", tensor);
    if (s.ok() && dst != 0) s = Status::InvalidArgument("fake send: peer rank " + std::to_string(dst) + " is outside [0, 1)");
    if (s.ok()) queues_[options.tag].push_back(tensor.clone());
    return Work::Completed(s);
  }

  WorkPtr Recv(const at::Tensor& tensor, int src, const P2POptions& options) override {
    Status s = internal::CheckDense(kFake, "recv", "tensor", tensor);
    if (s.ok() && src != 0) s = Status::InvalidArgument("fake recv: peer rank " + std::to_string(src) + " is outside [0, 1)");
    if (!s.ok()) return Work::Completed(s);
    auto& q = queues_[options.tag];
    if (q.empty()) {
      return Work::Completed(Status::DeadlineExceeded("fake recv on rank 0: nothing was sent with tag " +
                                                      std::to_string(options.tag) + " (would never complete)"));
    }
    at::Tensor sent = q.front();
    q.pop_front();
    if (!sent.sizes().equals(tensor.sizes()) || sent.scalar_type() != tensor.scalar_type()) {
      return Work::Completed(Status::InvalidArgument("fake recv: shape or dtype differs from the matching send"));
    }
    tensor.copy_(sent);
    return Work::Completed();
  }

  WorkPtr Barrier(const CollectiveOptions&) override { return Work::Completed(); }

  WorkPtr AllReduce(const at::Tensor& tensor, ReduceOp, const CollectiveOptions&) override {
    return Work::Completed(internal::CheckDense(kFake, "all_reduce", "tensor", tensor));
  }

  WorkPtr ReduceScatterSum(const at::Tensor& output, const at::Tensor& input, const CollectiveOptions&) override {
    Status s = internal::CheckReduceScatter(kFake, 1, output, input);
    if (s.ok()) output.view({-1}).copy_(input.reshape({-1}));
    return Work::Completed(s);
  }

 private:
  Milliseconds timeout_;
  std::map<int, std::deque<at::Tensor>> queues_;
};

}  // namespace

CommunicatorPtr MakeFakeCommunicator(Milliseconds timeout) { return std::make_shared<FakeCommunicator>(timeout); }

}  // namespace liveavatar::dist
