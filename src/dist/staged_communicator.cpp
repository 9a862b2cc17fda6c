// Device tensors over a host backend: see MakeHostStagedCommunicator in communicator.h.
#include <functional>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "liveavatar/dist/communicator.h"

namespace liveavatar::dist {
namespace {

// The host op's Work plus what must outlive it (host copies) and what runs once it succeeded (copy back).
class StagedWork : public Work {
 public:
  StagedWork(WorkPtr inner, std::vector<at::Tensor> keep, std::function<void()> finish)
      : inner_(std::move(inner)), keep_(std::move(keep)), finish_(std::move(finish)) {}
  bool IsCompleted() override { return inner_->IsCompleted(); }
  Status Wait() override {
    Status s = inner_->Wait();
    if (s.ok() && finish_) {
      finish_();
      finish_ = nullptr;
    }
    keep_.clear();
    return s;
  }

 private:
  WorkPtr inner_;
  std::vector<at::Tensor> keep_;
  std::function<void()> finish_;
};

class HostStagedCommunicator : public Communicator {
 public:
  HostStagedCommunicator(CommunicatorPtr host, bool always_stage)
      : host_(std::move(host)), always_stage_(always_stage) {}

  const char* BackendName() const override { return "gloo+host"; }
  int Rank() const override { return host_->Rank(); }
  int Size() const override { return host_->Size(); }
  std::string GroupName() const override { return host_->GroupName(); }
  Milliseconds DefaultTimeout() const override { return host_->DefaultTimeout(); }

  StatusOr<std::shared_ptr<Communicator>> NewGroup(const std::vector<int>& ranks) override {
    LA_ASSIGN_OR_RETURN(CommunicatorPtr group, host_->NewGroup(ranks));
    if (group == nullptr) return CommunicatorPtr();
    return MakeHostStagedCommunicator(std::move(group), always_stage_);
  }

  WorkPtr AllGatherIntoTensor(const at::Tensor& output, const at::Tensor& input,
                              const CollectiveOptions& options) override {
    if (!Stages(output) && !Stages(input)) return host_->AllGatherIntoTensor(output, input, options);
    at::Tensor out = HostBuffer(output);
    return Finish(host_->AllGatherIntoTensor(out, ToHost(input), options), {out}, output, out);
  }
  WorkPtr AllToAll(const at::Tensor& output, const at::Tensor& input, const AllToAllOptions& options) override {
    if (!Stages(output) && !Stages(input)) return host_->AllToAll(output, input, options);
    at::Tensor out = HostBuffer(output);
    return Finish(host_->AllToAll(out, ToHost(input), options), {out}, output, out);
  }
  WorkPtr Broadcast(const at::Tensor& tensor, const BroadcastOptions& options) override {
    if (!Stages(tensor)) return host_->Broadcast(tensor, options);
    at::Tensor host = ToHost(tensor);
    return Finish(host_->Broadcast(host, options), {host}, tensor, host);
  }
  WorkPtr Send(const at::Tensor& tensor, int dst, const P2POptions& options) override {
    if (!Stages(tensor)) return host_->Send(tensor, dst, options);
    at::Tensor host = ToHost(tensor);
    return std::make_shared<StagedWork>(host_->Send(host, dst, options), std::vector<at::Tensor>{host}, nullptr);
  }
  WorkPtr Recv(const at::Tensor& tensor, int src, const P2POptions& options) override {
    if (!Stages(tensor)) return host_->Recv(tensor, src, options);
    at::Tensor host = HostBuffer(tensor);
    return Finish(host_->Recv(host, src, options), {host}, tensor, host);
  }
  WorkPtr Barrier(const CollectiveOptions& options) override { return host_->Barrier(options); }
  WorkPtr AllReduce(const at::Tensor& tensor, ReduceOp op, const CollectiveOptions& options) override {
    if (!Stages(tensor)) return host_->AllReduce(tensor, op, options);
    at::Tensor host = ToHost(tensor);
    return Finish(host_->AllReduce(host, op, options), {host}, tensor, host);
  }
  WorkPtr ReduceScatterSum(const at::Tensor& output, const at::Tensor& input,
                           const CollectiveOptions& options) override {
    if (!Stages(output) && !Stages(input)) return host_->ReduceScatterSum(output, input, options);
    at::Tensor out = HostBuffer(output);
    return Finish(host_->ReduceScatterSum(out, ToHost(input), options), {out}, output, out);
  }

 private:
  bool Stages(const at::Tensor& t) const { return t.defined() && (always_stage_ || !t.device().is_cpu()); }
  // A host copy of `t` (a fresh one even for CPU tensors when staging, so the path is the same).
  static at::Tensor ToHost(const at::Tensor& t) {
    return t.device().is_cpu() ? t.clone() : t.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true);
  }
  static at::Tensor HostBuffer(const at::Tensor& t) { return at::empty(t.sizes(), t.options().device(at::kCPU)); }
  // Copies `host` back into `dst` once `work` succeeded (at Wait()).
  static WorkPtr Finish(WorkPtr work, std::vector<at::Tensor> keep, const at::Tensor& dst, const at::Tensor& host) {
    at::Tensor d = dst;
    at::Tensor h = host;
    return std::make_shared<StagedWork>(std::move(work), std::move(keep), [d, h]() mutable { d.copy_(h); });
  }

  CommunicatorPtr host_;
  bool always_stage_;
};

}  // namespace

CommunicatorPtr MakeHostStagedCommunicator(CommunicatorPtr host, bool always_stage) {
  return std::make_shared<HostStagedCommunicator>(std::move(host), always_stage);
}

}  // namespace liveavatar::dist
