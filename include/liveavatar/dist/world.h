// WorldInfo and DetectWorld(): who this process is in a multi-process run, read from the environment that a
// launcher leaves behind. Three conventions are recognised, in this order of precedence:
//
//   torchrun / liveavatar --nproc_per_node   RANK, WORLD_SIZE, LOCAL_RANK (default 0), LOCAL_WORLD_SIZE
//                                            (optional), MASTER_ADDR, MASTER_PORT
//   Open MPI (mpirun)                        OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK,
//                                            OMPI_COMM_WORLD_LOCAL_SIZE (optional); master from MASTER_ADDR /
//                                            MASTER_PORT
//   Slurm (srun)                             SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; master from MASTER_ADDR,
//                                            else SLURM_LAUNCH_NODE_IPADDR; port from MASTER_PORT
//
// Open MPI wins over Slurm because `mpirun` inside a Slurm allocation inherits the batch step's SLURM_PROCID (0 on
// every process). With none of them set the world is one process (rank 0 of 1, source "single").
// MASTER_PORT defaults to kDefaultMasterPort when absent; MASTER_ADDR is required when the world has more than
// one process (except under Slurm, see above).
//
// Thread safety: DetectWorld reads the environment (getenv); do not call it while another thread calls setenv.
#pragma once

#include <string>

#include "liveavatar/core/status.h"

namespace liveavatar::dist {

constexpr int kDefaultMasterPort = 29500;

struct WorldInfo {
  int rank = 0;              // global rank, 0 <= rank < world_size
  int world_size = 1;        // number of processes
  int local_rank = 0;        // rank on this node; selects the GPU
  int local_world_size = 1;  // processes on this node (best effort: 1 when the launcher does not say)
  std::string master_addr = "127.0.0.1";  // host of rank 0's rendezvous store
  int master_port = kDefaultMasterPort;   // port of rank 0's rendezvous store
  std::string source = "single";          // "torchrun", "openmpi", "slurm" or "single"

  bool distributed() const { return world_size > 1; }
  // "rank 1/4 (local 1, torchrun, master 127.0.0.1:29500)".
  std::string ToString() const;
};

// Reads the environment. Returns InvalidArgument naming the variable for a value that is not an integer, a rank
// outside [0, world_size), a port outside 1..65535, or a convention that is only partly set (e.g. RANK without
// WORLD_SIZE), and for a multi-process world without a master address.
StatusOr<WorldInfo> DetectWorld();

}  // namespace liveavatar::dist
