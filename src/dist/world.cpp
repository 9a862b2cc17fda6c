// DetectWorld: torchrun / Open MPI / Slurm environment conventions (see dist/world.h).
#include "liveavatar/dist/world.h"

#include <cerrno>
#include <cstdlib>
#include <optional>

namespace liveavatar::dist {
namespace {

std::optional<std::string> Env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

// Parses an optional integer variable; absent -> fallback.
StatusOr<int> EnvInt(const char* name, std::optional<int> fallback) {
  auto v = Env(name);
  if (!v) {
    if (fallback) return *fallback;
    return Status::InvalidArgument(std::string("environment variable ") + name + " is not set");
  }
  errno = 0;
  char* end = nullptr;
  long parsed = std::strtol(v->c_str(), &end, 10);
  if (errno != 0 || end == v->c_str() || *end != '\0' || parsed < 0 || parsed > (1L << 30)) {
    return Status::InvalidArgument(std::string("environment variable ") + name + "='" + *v +
                                   "' is not a non-negative integer");
  }
  return static_cast<int>(parsed);
}

struct Convention {
  const char* source;
  const char* rank;
  const char* size;
  const char* local_rank;
  const char* local_size;
};

constexpr Convention kTorchrun{"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"};
constexpr Convention kOpenMpi{"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                              "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"};
constexpr Convention kSlurm{"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"};

StatusOr<WorldInfo> FromConvention(const Convention& c) {
  WorldInfo w;
  w.source = c.source;
  const bool slurm = w.source == "slurm";
  LA_ASSIGN_OR_RETURN(w.rank, EnvInt(c.rank, std::nullopt));
  auto size = EnvInt(c.size, std::nullopt);
  if (!size.ok()) {
    return Status::InvalidArgument(std::string(c.rank) + " is set (" + c.source + " convention) but " + c.size +
                                   " is not: " + size.status().message());
  }
  w.world_size = *size;
  LA_ASSIGN_OR_RETURN(w.local_rank, EnvInt(c.local_rank, 0));
  if (slurm) {
    // SLURM_NTASKS_PER_NODE may read "4" or "4(x2)"; only trust a plain integer.
    auto v = EnvInt(c.local_size, 0);
    w.local_world_size = v.ok() && *v > 0 ? *v : 1;
  } else {
    LA_ASSIGN_OR_RETURN(w.local_world_size, EnvInt(c.local_size, 1));
  }
  if (w.world_size < 1) {
    return Status::InvalidArgument(std::string(c.size) + "=" + std::to_string(w.world_size) + " must be >= 1");
  }
  if (w.rank >= w.world_size) {
    return Status::InvalidArgument(std::string(c.rank) + "=" + std::to_string(w.rank) + " is outside [0, " +
                                   c.size + "=" + std::to_string(w.world_size) + ")");
  }
  if (w.local_world_size < 1) w.local_world_size = 1;

  auto addr = Env("MASTER_ADDR");
  if (!addr && slurm) addr = Env("SLURM_LAUNCH_NODE_IPADDR");
  if (addr) {
    w.master_addr = *addr;
  } else if (w.world_size > 1) {
    return Status::InvalidArgument(std::string("a ") + std::to_string(w.world_size) + "-process world (" + c.source +
                                   ") needs MASTER_ADDR" +
                                   (slurm ? " or SLURM_LAUNCH_NODE_IPADDR" : "") +
                                   " (the address of rank 0) and MASTER_PORT");
  }
  LA_ASSIGN_OR_RETURN(w.master_port, EnvInt("MASTER_PORT", kDefaultMasterPort));
  if (w.master_port < 1 || w.master_port > 65535) {
    return Status::InvalidArgument("MASTER_PORT=" + std::to_string(w.master_port) + " is outside 1..65535");
  }
  return w;
}

}  // namespace

std::string WorldInfo::ToString() const {
  return "rank " + std::to_string(rank) + "/" + std::to_string(world_size) + " (local " + std::to_string(local_rank) +
         ", " + source + ", master " + master_addr + ":" + std::to_string(master_port) + ")";
}

StatusOr<WorldInfo> DetectWorld() {
  if (Env("RANK") || Env("WORLD_SIZE")) {
    if (!Env("RANK")) return Status::InvalidArgument("WORLD_SIZE is set (torchrun convention) but RANK is not");
    return FromConvention(kTorchrun);
  }
  if (Env("OMPI_COMM_WORLD_RANK")) return FromConvention(kOpenMpi);
  if (Env("SLURM_PROCID")) return FromConvention(kSlurm);
  WorldInfo single;
  if (auto addr = Env("MASTER_ADDR")) single.master_addr = *addr;
  auto port = EnvInt("MASTER_PORT", kDefaultMasterPort);
  if (port.ok() && *port >= 1 && *port <= 65535) single.master_port = *port;
  return single;
}

}  // namespace liveavatar::dist
