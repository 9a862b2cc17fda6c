// Communicator defaults (unsupported ops), Work::Completed, backend selection and the TCPStore rendezvous.
#include "liveavatar/dist/communicator.h"

#include <cstdlib>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "dist/dist_internal.h"
#include "liveavatar/core/logging.h"

namespace liveavatar::dist {
namespace {

class CompletedWork : public Work {
 public:
  explicit CompletedWork(Status s) : status_(std::move(s)) {}
  bool IsCompleted() override { return true; }
  Status Wait() override { return status_; }

 private:
  Status status_;
};

bool CudaAvailable() {
#if LIVEAVATAR_HAVE_NCCL
  return at::hasCUDA();
#else
  return false;
#endif
}

}  // namespace

WorkPtr Work::Completed(Status status) { return std::make_shared<CompletedWork>(std::move(status)); }

WorkPtr Communicator::Unsupported(const char* op) const {
  return Work::Completed(Status::NotSupported(std::string("Backend ") + BackendName() + " does not support " + op));
}

StatusOr<CommunicatorPtr> Communicator::NewGroup(const std::vector<int>& ranks) {
  return Status::NotSupported(std::string("Backend ") + BackendName() + " does not support new_group");
}
WorkPtr Communicator::AllGatherIntoTensor(const at::Tensor&, const at::Tensor&, const CollectiveOptions&) {
  return Unsupported("all_gather_into_tensor");
}
WorkPtr Communicator::AllToAll(const at::Tensor&, const at::Tensor&, const AllToAllOptions&) {
  return Unsupported("all_to_all");
}
WorkPtr Communicator::Broadcast(const at::Tensor&, const BroadcastOptions&) { return Unsupported("broadcast"); }
WorkPtr Communicator::Send(const at::Tensor&, int, const P2POptions&) { return Unsupported("send"); }
WorkPtr Communicator::Recv(const at::Tensor&, int, const P2POptions&) { return Unsupported("recv"); }
WorkPtr Communicator::Barrier(const CollectiveOptions&) { return Unsupported("barrier"); }
WorkPtr Communicator::AllReduce(const at::Tensor&, ReduceOp, const CollectiveOptions&) {
  return Unsupported("all_reduce");
}
WorkPtr Communicator::ReduceScatterSum(const at::Tensor&, const at::Tensor&, const CollectiveOptions&) {
  return Unsupported("reduce_scatter");
}

const char* ReduceOpName(ReduceOp op) { return op == ReduceOp::kMax ? "max" : "sum"; }

const char* BackendKindName(BackendKind kind) {
  switch (kind) {
    case BackendKind::kAuto: return "auto";
    case BackendKind::kNccl: return "nccl";
    case BackendKind::kGloo: return "gloo";
    case BackendKind::kFake: return "fake";
  }
  return "?";
}

bool BackendCompiled(BackendKind kind) {
  switch (kind) {
    case BackendKind::kAuto:
    case BackendKind::kFake:
      return true;
    case BackendKind::kNccl:
#if LIVEAVATAR_HAVE_NCCL
      return true;
#else
      return false;
#endif
    case BackendKind::kGloo:
      return internal::GlooCompiled();
  }
  return false;
}

StatusOr<BackendKind> ParseBackendKind(const std::string& name, const std::string& flag) {
  for (BackendKind k : {BackendKind::kAuto, BackendKind::kNccl, BackendKind::kGloo, BackendKind::kFake}) {
    if (name == BackendKindName(k)) return k;
  }
  return Status::InvalidArgument(flag + ": unknown communication backend '" + name +
                                 "' (expected auto, nccl, gloo or fake)");
}

StatusOr<Milliseconds> ResolveTimeout(Milliseconds requested) {
  if (requested.count() > 0) return requested;
  if (requested.count() < 0) return Status::InvalidArgument("collective timeout must be positive");
  const char* env = std::getenv("LIVEAVATAR_DIST_TIMEOUT_S");
  if (env == nullptr || *env == '\0') return kDefaultCollectiveTimeout;
  char* end = nullptr;
  double seconds = std::strtod(env, &end);
  if (end == env || *end != '\0' || !(seconds > 0) || seconds > 1e7) {
    return Status::InvalidArgument(std::string("LIVEAVATAR_DIST_TIMEOUT_S='") + env +
                                   "' is not a positive number of seconds");
  }
  return Milliseconds(static_cast<int64_t>(seconds * 1000.0 + 0.5));
}

StatusOr<CommunicatorPtr> InitCommunicator(const WorldInfo& world, const CommOptions& options) {
  if (world.world_size < 1 || world.rank < 0 || world.rank >= world.world_size) {
    return Status::InvalidArgument("InitCommunicator: bad world " + world.ToString());
  }
  LA_ASSIGN_OR_RETURN(Milliseconds timeout, ResolveTimeout(options.timeout));
  Milliseconds rdzv_timeout = options.rendezvous_timeout.count() > 0 ? options.rendezvous_timeout : timeout;

  BackendKind kind = options.backend;
  const bool staged = UsesHostStaging(world, kind);
  if (kind == BackendKind::kAuto) {
    if (staged) {
      kind = BackendKind::kGloo;
      LA_LOG_WARN("dist: {} local ranks share {} GPU(s): collectives are staged through host memory over Gloo "
                  "(slow; for memory emulation with --max_gpu_mem_gb)",
                  world.local_world_size, at::getNumGPUs());
    } else if (CudaAvailable()) {
      kind = BackendKind::kNccl;
    } else {
      kind = world.world_size == 1 ? BackendKind::kFake : BackendKind::kGloo;
    }
  }
  if (kind == BackendKind::kFake) {
    if (world.world_size != 1) {
      return Status::InvalidArgument("the fake communication backend only supports a world of 1 process, got " +
                                     world.ToString());
    }
    return MakeFakeCommunicator(timeout);
  }
#if !LIVEAVATAR_HAVE_NCCL
  if (kind == BackendKind::kNccl) {
    return Status::NotSupported(
        "the nccl communication backend is not compiled into this build (LibTorch without CUDA); use gloo");
  }
#endif

  internal::GroupContext ctx;
  ctx.rank = world.rank;
  ctx.size = world.world_size;
  ctx.timeout = timeout;
  ctx.master_addr = world.master_addr;
  ctx.device_index = options.device_index >= 0 ? options.device_index : world.local_rank;
  for (int r = 0; r < world.world_size; ++r) ctx.global_ranks.push_back(r);
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<std::uint16_t>(world.master_port);
    store_options.isServer = world.rank == 0;
    store_options.numWorkers = static_cast<std::size_t>(world.world_size);
    store_options.waitWorkers = true;
    store_options.timeout = rdzv_timeout;
    ctx.store = c10::make_intrusive<c10d::TCPStore>(world.master_addr, store_options);
  } catch (const std::exception& e) {
    return Status::Unavailable("rendezvous failed: " + world.ToString() + " could not " +
                               (world.rank == 0 ? "host" : "reach") + " the store at " + world.master_addr + ":" +
                               std::to_string(world.master_port) + " within " +
                               std::to_string(rdzv_timeout.count()) + " ms (check MASTER_ADDR/MASTER_PORT and " +
                               "that every rank was started): " + e.what());
  }
  LA_LOG_DEBUG("dist: {} joined the store at {}:{}", world.ToString(), world.master_addr, world.master_port);
#if LIVEAVATAR_HAVE_NCCL
  if (kind == BackendKind::kNccl) return internal::CreateNcclCommunicator(ctx);
#endif
  LA_ASSIGN_OR_RETURN(CommunicatorPtr gloo, internal::CreateGlooCommunicator(ctx));
  return staged ? MakeHostStagedCommunicator(std::move(gloo)) : gloo;
}

bool UsesHostStaging(const WorldInfo& world, BackendKind backend) {
  if (!at::hasCUDA()) return false;
  if (backend == BackendKind::kGloo) return true;
  return backend == BackendKind::kAuto && world.world_size > 1 &&
         static_cast<size_t>(world.local_world_size) > at::getNumGPUs();
}

}  // namespace liveavatar::dist
