// Argument checks, progress tracking and error shaping shared by the communicator backends.
#include "dist/dist_internal.h"

#include <algorithm>
#include <cctype>
#include <numeric>
#include <sstream>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

namespace liveavatar::dist::internal {
namespace {

std::string Prefix(const char* backend, const char* op) { return std::string(backend) + " " + op + ": "; }

std::string ShapeString(const at::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

}  // namespace

std::string GroupContext::DescribeRank(int group_rank) const {
  std::string s = "rank " + std::to_string(group_rank);
  if (group_rank >= 0 && group_rank < static_cast<int>(global_ranks.size()) && global_ranks[group_rank] != group_rank) {
    s += " (global " + std::to_string(global_ranks[group_rank]) + ")";
  }
  return s;
}

Status CheckDense(const char* backend, const char* op, const char* what, const at::Tensor& t) {
  if (!t.defined()) return Status::InvalidArgument(Prefix(backend, op) + what + " is an undefined tensor");
  if (t.is_sparse() || !t.is_contiguous()) {
    return Status::InvalidArgument(Prefix(backend, op) + what + " must be dense and contiguous");
  }
  return Status::Ok();
}

Status CheckAllGather(const char* backend, int size, const at::Tensor& output, const at::Tensor& input) {
  const char* op = "all_gather_into_tensor";
  LA_RETURN_IF_ERROR(CheckDense(backend, op, "output", output));
  LA_RETURN_IF_ERROR(CheckDense(backend, op, "input", input));
  if (output.scalar_type() != input.scalar_type() || output.device() != input.device()) {
    return Status::InvalidArgument(Prefix(backend, op) + "output and input differ in dtype or device");
  }
  if (output.numel() != input.numel() * size) {
    return Status::InvalidArgument(Prefix(backend, op) + "output has " + std::to_string(output.numel()) +
                                   " elements, expected world size " + std::to_string(size) + " x input " +
                                   std::to_string(input.numel()));
  }
  return Status::Ok();
}

Status CheckAllToAll(const char* backend, int size, const at::Tensor& output, const at::Tensor& input,
                     std::vector<int64_t>* input_splits, std::vector<int64_t>* output_splits) {
  const char* op = "all_to_all";
  LA_RETURN_IF_ERROR(CheckDense(backend, op, "output", output));
  LA_RETURN_IF_ERROR(CheckDense(backend, op, "input", input));
  if (output.scalar_type() != input.scalar_type() || output.device() != input.device()) {
    return Status::InvalidArgument(Prefix(backend, op) + "output and input differ in dtype or device");
  }
  if (input.dim() < 1 || output.dim() != input.dim() || !output.sizes().slice(1).equals(input.sizes().slice(1))) {
    return Status::InvalidArgument(Prefix(backend, op) + "output " + ShapeString(output) + " and input " +
                                   ShapeString(input) + " must have the same trailing dims (splits are on dim 0)");
  }
  auto fill = [&](std::vector<int64_t>* splits, const at::Tensor& t, const char* what) -> Status {
    if (splits->empty()) {
      if (t.size(0) % size != 0) {
        return Status::InvalidArgument(Prefix(backend, op) + what + " dim 0 (" + std::to_string(t.size(0)) +
                                       ") is not divisible by world size " + std::to_string(size) +
                                       "; pass split sizes");
      }
      splits->assign(size, t.size(0) / size);
      return Status::Ok();
    }
    if (static_cast<int>(splits->size()) != size) {
      return Status::InvalidArgument(Prefix(backend, op) + std::to_string(splits->size()) + " " + what +
                                     " split sizes for world size " + std::to_string(size));
    }
    int64_t total = 0;
    for (int64_t s : *splits) {
      if (s < 0) return Status::InvalidArgument(Prefix(backend, op) + "negative " + what + " split size");
      total += s;
    }
    if (total != t.size(0)) {
      return Status::InvalidArgument(Prefix(backend, op) + what + " split sizes sum to " + std::to_string(total) +
                                     " but dim 0 is " + std::to_string(t.size(0)));
    }
    return Status::Ok();
  };
  LA_RETURN_IF_ERROR(fill(input_splits, input, "input"));
  LA_RETURN_IF_ERROR(fill(output_splits, output, "output"));
  return Status::Ok();
}

Status CheckReduceScatter(const char* backend, int size, const at::Tensor& output, const at::Tensor& input) {
  const char* op = "reduce_scatter";
  LA_RETURN_IF_ERROR(CheckDense(backend, op, "output", output));
  LA_RETURN_IF_ERROR(CheckDense(backend, op, "input", input));
  if (output.scalar_type() != input.scalar_type() || output.device() != input.device()) {
    return Status::InvalidArgument(Prefix(backend, op) + "output and input differ in dtype or device");
  }
  if (input.numel() != output.numel() * size) {
    return Status::InvalidArgument(Prefix(backend, op) + "input has " + std::to_string(input.numel()) +
                                   " elements, expected world size " + std::to_string(size) + " x output " +
                                   std::to_string(output.numel()));
  }
  return Status::Ok();
}

Status CheckPeer(const char* backend, const char* op, int size, int rank, int peer) {
  if (peer < 0 || peer >= size) {
    return Status::InvalidArgument(Prefix(backend, op) + "peer rank " + std::to_string(peer) + " is outside [0, " +
                                   std::to_string(size) + ")");
  }
  if (peer == rank) return Status::InvalidArgument(Prefix(backend, op) + "peer rank is this rank");
  return Status::Ok();
}

Status CheckNewGroupRanks(int size, const std::vector<int>& ranks) {
  if (ranks.empty()) return Status::InvalidArgument("new_group: empty rank list");
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i] < 0 || ranks[i] >= size) {
      return Status::InvalidArgument("new_group: rank " + std::to_string(ranks[i]) + " is outside [0, " +
                                     std::to_string(size) + ")");
    }
    if (i > 0 && ranks[i] <= ranks[i - 1]) {
      return Status::InvalidArgument("new_group: ranks must be ascending and unique");
    }
  }
  return Status::Ok();
}

Milliseconds EffectiveTimeout(Milliseconds requested, Milliseconds fallback) {
  return requested.count() > 0 ? requested : fallback;
}

void ProgressTracker::Enter(int64_t seq, const char* op) {
  try {
    std::string value = std::to_string(seq) + " " + op;
    ctx_->store->set(ctx_->key_prefix + "progress/" + std::to_string(ctx_->rank),
                     std::vector<uint8_t>(value.begin(), value.end()));
  } catch (const std::exception&) {
    // Diagnostics only: a store failure shows up in the collective itself.
  }
}

std::string ProgressTracker::DescribeLaggards(int64_t seq) {
  std::string out;
  for (int r = 0; r < ctx_->size; ++r) {
    if (r == ctx_->rank) continue;
    std::string key = ctx_->key_prefix + "progress/" + std::to_string(r);
    std::string entry;
    int64_t their_seq = -1;
    try {
      if (ctx_->store->check({key})) {
        std::vector<uint8_t> v = ctx_->store->get(key);
        entry.assign(v.begin(), v.end());
        their_seq = std::stoll(entry);
      }
    } catch (const std::exception&) {
      entry = "unknown: store unreachable";
    }
    if (their_seq >= seq) continue;
    if (!out.empty()) out += "; ";
    out += ctx_->DescribeRank(r) + " never joined (" + (entry.empty() ? "no collective yet" : "last entered #" + entry) +
           ")";
  }
  return out;
}

Status CommFailure(const GroupContext& ctx, const char* backend, const char* op, int64_t seq, Milliseconds timeout,
                   const std::string& what, const std::string& laggards) {
  std::string lower = what;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  bool timed_out = lower.find("timed out") != std::string::npos || lower.find("timeout") != std::string::npos;
  std::string msg = std::string(backend) + " " + op + " #" + std::to_string(seq) + " on " +
                    ctx.DescribeRank(ctx.rank) + " of " + std::to_string(ctx.size) + " (group " + ctx.name + ") " +
                    (timed_out ? "timed out after " + std::to_string(timeout.count()) + " ms" : "failed");
  if (!laggards.empty()) msg += ": " + laggards;
  // Keep the backend's own text short: first line only.
  std::string first = what.substr(0, what.find('\n'));
  msg += " [" + first + "]";
  return timed_out ? Status::DeadlineExceeded(msg) : Status::Unavailable(msg);
}

}  // namespace liveavatar::dist::internal
