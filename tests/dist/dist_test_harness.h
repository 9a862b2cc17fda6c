// Harness shared by the multi-process tests of tests/dist/: the test binary launches copies of itself with
// dist::LaunchLocal (so the launcher and DetectWorld's torchrun convention are exercised too); a copy started
// with a file's scenario variable set runs that scenario as one rank from a static initializer, before gtest's
// main, and exits with 0 (every check passed) or 1 (a message on stderr names the failed check).
//
// Every test file links into the one test_dist binary, so each file names its own scenario variable (e.g.
// LA_SHARD_TEST_SCENARIO) and declares one hook for it; a worker has exactly one of them set, so only that
// file's hook runs and the others return at once.
//
//   int RunScenario(const std::string& scenario) { ... WORKER_CHECK(cond, "what"); ... }
//   LA_DIST_WORKER_HOOK("LA_X_TEST_SCENARIO", RunScenario);  // in the file's anonymous namespace
//   TEST(X, Y) { SKIP_WITHOUT_GLOO(); auto r = testutil::RunScenarioWorkers("LA_X_TEST_SCENARIO", 2, "name"); }
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "liveavatar/core/status.h"
#include "liveavatar/dist/communicator.h"
#include "liveavatar/dist/launcher.h"

// Worker side: in a function returning int with an int `rank` in scope, fails the worker (prints the rank, the
// message and the place on stderr, returns 1) unless `cond` holds.
#define WORKER_CHECK(cond, what)                                                                              \
  do {                                                                                                        \
    if (!(cond)) {                                                                                            \
      std::fprintf(stderr, "check failed on rank %d: %s (%s:%d)\n", rank, std::string(what).c_str(), __FILE__, \
                   __LINE__);                                                                                 \
      return 1;                                                                                               \
    }                                                                                                         \
  } while (0)

// WORKER_CHECK that the Status `expr` (evaluated once) is OK, naming the expression and the status.
#define WORKER_OK(expr)                                                                         \
  do {                                                                                          \
    const ::liveavatar::Status worker_status_ = (expr);                                         \
    WORKER_CHECK(worker_status_.ok(), std::string(#expr) + ": " + worker_status_.ToString()); \
  } while (0)

// Declares (at namespace scope, in the test file's anonymous namespace) the static hook that runs
// `scenario_fn(value)` and _exit()s with its result when the environment variable `env_var` is set and not empty.
#define LA_DIST_WORKER_HOOK(env_var, scenario_fn) \
  const ::liveavatar::dist::testutil::WorkerHook la_dist_worker_hook_((env_var), (scenario_fn))

// Test side: skips the test when the Gloo backend is not compiled in.
#define SKIP_WITHOUT_GLOO()                                                                 \
  if (!::liveavatar::dist::BackendCompiled(::liveavatar::dist::BackendKind::kGloo)) \
  GTEST_SKIP() << "gloo backend not compiled in (install libgloo-dev)"

namespace liveavatar::dist::testutil {

using ScenarioFn = int (*)(const std::string& scenario);

// Runs the scenario named by $env_var (when set) as this process's only work: exceptions are reported on
// stderr (exit status 1), stdout/stderr are flushed, and the process _exit()s without running static
// destructors or the tests.
inline void RunScenarioIfRequested(const char* env_var, ScenarioFn scenario_fn) {
  const char* scenario = std::getenv(env_var);
  if (scenario == nullptr || *scenario == '\0') return;
  int rc = 1;
  try {
    rc = scenario_fn(scenario);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "worker exception: %s\n", e.what());
  }
  std::fflush(stdout);
  std::fflush(stderr);
  _exit(rc);
}

// The object LA_DIST_WORKER_HOOK declares: its constructor (a static initializer) is the worker's entry point.
class WorkerHook {
 public:
  WorkerHook(const char* env_var, ScenarioFn scenario_fn) { RunScenarioIfRequested(env_var, scenario_fn); }
};

// This test binary's path.
inline std::string SelfExe() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("/proc/self/exe");
}

// Launches `nproc` copies of this binary as one local world running `scenario` ($env_var=scenario,
// OMP_NUM_THREADS=1, then `extra_env`), killing the others 2 s after one fails.
inline LaunchResult RunScenarioWorkers(const std::string& env_var, int nproc, const std::string& scenario,
                                       const std::vector<std::pair<std::string, std::string>>& extra_env = {}) {
  LaunchOptions o;
  o.extra_env = {{env_var, scenario}, {"OMP_NUM_THREADS", "1"}};
  o.extra_env.insert(o.extra_env.end(), extra_env.begin(), extra_env.end());
  o.kill_grace = std::chrono::seconds(2);
  return LaunchLocal(nproc, {SelfExe()}, o);
}

}  // namespace liveavatar::dist::testutil
