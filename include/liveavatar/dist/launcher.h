// LaunchLocal: the built-in single-node launcher behind `liveavatar --nproc_per_node N ...` (a torchrun
// replacement for one machine).
//
// Contract
// - Starts `nproc` workers with fork + execv(argv[0], argv), each in its own process group, with the parent's
//   environment plus RANK=LOCAL_RANK=i, WORLD_SIZE=LOCAL_WORLD_SIZE=nproc, MASTER_ADDR (options.master_addr,
//   127.0.0.1 by default), MASTER_PORT (options.master_port, or a free port of master_addr picked by binding
//   port 0), LIVEAVATAR_LOCAL_LAUNCHER=1 (so a worker never launches again), and options.extra_env. The caller passes the worker command line: for the CLI that is its own argv
//   with --nproc_per_node removed (argv[0] resolved to /proc/self/exe), so workers see a torchrun-style world
//   (dist::DetectWorld).
// - Workers' stdin and stdout are inherited. Their stderr goes through a pipe and every line is re-emitted on the
//   launcher's stderr prefixed "[rank i] " (options.prefix_stderr); the last lines of each rank are kept for the
//   failure message.
// - SIGINT and SIGTERM received by the launcher while it runs are forwarded to every worker's process group.
// - Returns when every worker has exited. If any worker exits non-zero or is killed by a signal, the launcher
//   sends SIGTERM to the others' process groups, SIGKILL after options.kill_grace, and returns within
//   kill_grace + 1 s of the failure. It never hangs on a dead worker.
// - Must be called from a process that does not reap children behind its back (no SIGCHLD = SIG_IGN), and from
//   one thread at a time (it installs and restores SIGINT/SIGTERM handlers).
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "liveavatar/core/status.h"

namespace liveavatar::dist {

struct LaunchOptions {
  std::string master_addr = "127.0.0.1";  // MASTER_ADDR given to the workers
  int master_port = 0;                    // 0: pick a free port on master_addr
  // After the first failure, how long the other workers get between SIGTERM and SIGKILL.
  std::chrono::milliseconds kill_grace{std::chrono::seconds(5)};
  bool prefix_stderr = true;  // "[rank i] " before every stderr line of worker i
  // Extra variables set in every worker (after the launcher's own; same name overrides).
  std::vector<std::pair<std::string, std::string>> extra_env;
};

struct LaunchResult {
  // OK when every worker exited with status 0. Otherwise names the first failing rank, its pid and its exit
  // status or signal, followed by its last stderr lines; InvalidArgument for bad arguments (nproc < 1, empty
  // argv), IOError when a worker could not be started.
  Status status;
  // Suggested exit code for the launcher process: 0; the failing worker's exit status; or 128 + signal number.
  int exit_code = 0;
  int failed_rank = -1;  // first failing rank, -1 if none
};

LaunchResult LaunchLocal(int nproc, const std::vector<std::string>& argv, const LaunchOptions& options = {});

// The worker command line for `liveavatar --nproc_per_node N ...`: argv without "--nproc_per_node N" /
// "--nproc_per_node=N" (and the same for any other names in `strip_flags`, each taking one value), argv[0]
// replaced by the path of the running executable (/proc/self/exe) so workers run the same binary.
std::vector<std::string> WorkerCommandLine(int argc, const char* const* argv,
                                           const std::vector<std::string>& strip_flags = {"--nproc_per_node"});

// A TCP port on `addr` that was free a moment ago (bind to port 0, read it back, close). IOError on failure.
StatusOr<int> PickFreePort(const std::string& addr = "127.0.0.1");

}  // namespace liveavatar::dist
