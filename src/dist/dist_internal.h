// Helpers shared by the communicator backends (not part of the public surface): argument checks, the group
// context every store-backed backend carries, progress tracking for timeout diagnostics, and the backend
// factories.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>

#include "liveavatar/core/status.h"
#include "liveavatar/dist/communicator.h"

namespace c10d {
class Store;
}

namespace liveavatar::dist::internal {

// Everything a store-backed communicator needs to know about its group.
struct GroupContext {
  c10::intrusive_ptr<c10d::Store> store;  // the world's root store (TCPStore client; server on rank 0)
  std::string key_prefix;                 // "" for the world, "g<n>/" (nested: "g1/g0/") for sub-groups
  std::string name = "world";             // for messages
  int rank = 0;
  int size = 1;
  std::vector<int> global_ranks;  // global rank of each member (messages)
  Milliseconds timeout = kDefaultCollectiveTimeout;
  std::string master_addr = "127.0.0.1";
  int device_index = -1;  // NCCL

  // "rank 1 (global 3)" or "rank 1".
  std::string DescribeRank(int group_rank) const;
};

// Validates the arguments of each op; InvalidArgument naming the backend, op and offending property.
Status CheckDense(const char* backend, const char* op, const char* what, const at::Tensor& t);
Status CheckAllGather(const char* backend, int size, const at::Tensor& output, const at::Tensor& input);
// Fills in equal splits when the options leave them empty.
Status CheckAllToAll(const char* backend, int size, const at::Tensor& output, const at::Tensor& input,
                     std::vector<int64_t>* input_splits, std::vector<int64_t>* output_splits);
Status CheckReduceScatter(const char* backend, int size, const at::Tensor& output, const at::Tensor& input);
Status CheckPeer(const char* backend, const char* op, int size, int rank, int peer);
Status CheckNewGroupRanks(int size, const std::vector<int>& ranks);

Milliseconds EffectiveTimeout(Milliseconds requested, Milliseconds fallback);

// Records in the store which collective each rank last entered, so that a rank whose collective timed out can
// name the ranks that never joined. Costs one store round trip per op; used by the Gloo backend.
class ProgressTracker {
 public:
  explicit ProgressTracker(const GroupContext* ctx) : ctx_(ctx) {}
  // Publishes "<seq> <op>" for this rank. Never fails (diagnostics only).
  void Enter(int64_t seq, const char* op);
  // "rank 1 never joined (last entered #3 barrier); rank 2 never joined (no collective yet)", or "" when every
  // rank reached `seq`.
  std::string DescribeLaggards(int64_t seq);

 private:
  const GroupContext* ctx_;
};

// Turns a backend exception message into a Status: DeadlineExceeded for timeouts, Unavailable otherwise.
Status CommFailure(const GroupContext& ctx, const char* backend, const char* op, int64_t seq, Milliseconds timeout,
                   const std::string& what, const std::string& laggards);

// Backend factories (each backend's .cpp). `ctx.store` is connected.
StatusOr<CommunicatorPtr> CreateGlooCommunicator(const GroupContext& ctx);
bool GlooCompiled();
#if LIVEAVATAR_HAVE_NCCL
StatusOr<CommunicatorPtr> CreateNcclCommunicator(const GroupContext& ctx);
#endif

}  // namespace liveavatar::dist::internal
