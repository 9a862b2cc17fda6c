// `liveavatar doctor [generate flags] [--json]`: the pre-flight checks of the run those flags describe, one line
// per check, "PASS|WARN|FAIL|SKIP  <section>: <what>  -> fix: <fix>", then a summary line. Sections:
//   inputs        --image / --audio quality (io/media_checks.h)
//   memory        the memory plan of the run against each visible GPU (runtime/memory_planner.h)
//   distribution  NCCL / Gloo in this build, the P2P access matrix, and with --nproc_per_node N > 1 (or under a
//                 launcher) a collective init + all-reduce bandwidth probe across the ranks
//   checkpoint    every file present and valid, shapes against the configs, LoRA keys matched
//                 (pipeline/checkpoint_checks.h)
// Exit status 1 when any check FAILs, 0 otherwise (2 for bad flags, in main.cpp). docs/doctor.md.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#if defined(LIVEAVATAR_HAVE_CUDA) && __has_include(<cuda_runtime_api.h>)
#include <cuda_runtime_api.h>
#define LIVEAVATAR_DOCTOR_CUDA 1
#else
#define LIVEAVATAR_DOCTOR_CUDA 0
#endif

#include "cli_commands.h"
#include "liveavatar/core/logging.h"
#include "liveavatar/dist/communicator.h"
#include "liveavatar/dist/launcher.h"
#include "liveavatar/dist/world.h"
#include "liveavatar/io/check_result.h"
#include "liveavatar/io/media_checks.h"
#include "liveavatar/pipeline/checkpoint_checks.h"
#include "liveavatar/runtime/memory_planner.h"

namespace liveavatar::cli {

namespace {

namespace fs = std::filesystem;
using io::CheckLevel;
using io::CheckResult;

// Set by the parent doctor in the workers it launches for the distribution probe: they run only the probe and
// rank 0 writes its result lines to this file.
constexpr const char* kProbeOutEnv = "LIVEAVATAR_DOCTOR_PROBE_OUT";
constexpr int64_t kCpuProbeBytes = int64_t{16} << 20;
constexpr int64_t kGpuProbeBytes = int64_t{256} << 20;
constexpr int kProbeIters = 5;

CheckResult Line(CheckLevel level, const char* section, std::string what, std::string fix = "") {
  return CheckResult{level, section, std::move(what), level == CheckLevel::kPass ? "" : std::move(fix)};
}

std::string Gb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f GB/s", bytes / 1e9);
  return buf;
}

// ---- GPUs (CUDA runtime in CUDA builds; none otherwise) ----

struct GpuInfo {
  int index = 0;
  std::string name;
  int64_t total_bytes = 0, free_bytes = 0;
};

std::vector<GpuInfo> VisibleGpus() {
  std::vector<GpuInfo> out;
#if LIVEAVATAR_DOCTOR_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return out;
  for (int i = 0; i < count; ++i) {
    GpuInfo g;
    g.index = i;
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) == cudaSuccess) g.name = prop.name;
    size_t free_b = 0, total_b = 0;
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
      g.free_bytes = static_cast<int64_t>(free_b);
      g.total_bytes = static_cast<int64_t>(total_b);
    }
    out.push_back(g);
  }
  if (count > 0) cudaSetDevice(0);
#endif
  return out;
}

// can[i][j]: GPU i can access GPU j's memory directly.
std::vector<std::vector<bool>> PeerAccessMatrix(int n) {
  std::vector<std::vector<bool>> can(static_cast<size_t>(n), std::vector<bool>(static_cast<size_t>(n), true));
#if LIVEAVATAR_DOCTOR_CUDA
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      int ok = 0;
      if (i != j) can[i][j] = cudaDeviceCanAccessPeer(&ok, i, j) == cudaSuccess && ok != 0;
    }
  }
#endif
  return can;
}

// ---- inputs ----

void InputChecks(const pipeline::RunOptions& run, int world, std::vector<CheckResult>* out) {
  const auto& g = run.generate;
  const std::string size = g.size.empty() ? pipeline::DefaultSize(world) : g.size;
  if (g.image.empty()) {
    out->push_back(Line(CheckLevel::kSkip, "inputs", "no --image given"));
  } else {
    auto lines = io::CheckImageFile(g.image, size);
    out->insert(out->end(), lines.begin(), lines.end());
  }
  if (g.audio.empty()) {
    out->push_back(Line(CheckLevel::kSkip, "inputs", "no --audio given"));
  } else {
    auto lines = io::CheckAudioFile(g.audio);
    out->insert(out->end(), lines.begin(), lines.end());
  }
}

// ---- memory ----

void MemoryChecks(const pipeline::RunOptions& run, int world, std::vector<CheckResult>* out) {
  const char* kS = "memory";
  // The plan `generate` would make (cli_plan.cpp), for a CUDA run whatever this machine is.
  auto planned = PlanInputsForRun(run, "", /*for_generate=*/true, "cuda");
  if (!planned.ok()) {
    out->push_back(Line(CheckLevel::kWarn, kS, "memory plan: not computed: " + planned.status().message(),
                        "fix the checkpoint problems (checkpoint section), then run doctor again"));
    return;
  }
  runtime::PlanInputs in = *planned;
  in.capacity_bytes = 0;
  const std::string shape = std::to_string(in.width) + "x" + std::to_string(in.height) + ", " +
                            std::to_string(in.world_size) + " rank(s)";
  const runtime::MemoryPlan plan = runtime::MemoryPlanner::Plan(in);
  if (!plan.error.empty()) {
    out->push_back(Line(CheckLevel::kFail, kS, "memory plan: " + plan.error,
                        "fix --nproc_per_node / --num_gpus_dit / --ulysses_size / --enable_vae_parallel"));
    return;
  }
  const std::vector<GpuInfo> gpus = VisibleGpus();
  if (gpus.empty()) {
    out->push_back(Line(CheckLevel::kWarn, kS,
                        "no GPU visible (CPU build or no device): the plan needs " +
                            runtime::FormatBytes(plan.peak_bytes) + " per GPU at peak (" + shape + ")",
                        "run on " + std::to_string(world) + " GPU(s) with at least " +
                            runtime::FormatBytes(plan.peak_bytes) + " each (`liveavatar plan` shows the breakdown)"));
    return;
  }
  if (static_cast<int>(gpus.size()) < world) {
    out->push_back(Line(CheckLevel::kFail, kS,
                        std::to_string(world) + " rank(s) requested but " + std::to_string(gpus.size()) +
                            " GPU(s) visible",
                        "lower --nproc_per_node or check CUDA_VISIBLE_DEVICES"));
  }
  const double budget = run.memory.max_gpu_mem_gb * double(int64_t{1} << 30);
  for (int rank = 0; rank < world && rank < static_cast<int>(gpus.size()); ++rank) {
    const GpuInfo& g = gpus[static_cast<size_t>(rank)];
    int64_t need = plan.peak_bytes;
    std::string role = "?";
    for (const auto& r : plan.roles) {
      if (std::find(r.ranks.begin(), r.ranks.end(), rank) != r.ranks.end()) {
        need = r.peak;
        role = r.role + ", peak in " + r.peak_phase;
      }
    }
    const int64_t cap = budget > 0 ? static_cast<int64_t>(budget) : g.total_bytes;
    const std::string what = "GPU " + std::to_string(g.index) + " (" + g.name + ", " +
                             runtime::FormatBytes(g.total_bytes) + ", " + runtime::FormatBytes(g.free_bytes) +
                             " free): rank " + std::to_string(rank) + " needs " + runtime::FormatBytes(need) + " (" +
                             role + "; " + shape + ")";
    if (need > cap) {
      runtime::PlanInputs with_cap = in;
      with_cap.capacity_bytes = cap;
      const auto alts = runtime::MemoryPlanner::Alternatives(with_cap);
      std::string fix = alts.empty() ? "use a GPU with more memory or a smaller --size"
                                     : "try: " + alts.front().flags + " (peak " +
                                           runtime::FormatBytes(alts.front().peak_bytes) + ")";
      out->push_back(Line(CheckLevel::kFail, "memory", what + ": does not fit", fix));
    } else if (need > g.free_bytes) {
      out->push_back(Line(CheckLevel::kWarn, "memory", what + ": fits the GPU but not its free memory",
                          "stop the other processes using GPU " + std::to_string(g.index)));
    } else {
      out->push_back(Line(CheckLevel::kPass, "memory", what));
    }
  }
}

// ---- distribution ----

// Initialises the communicator of this process's world and times an all-reduce. Collective: every rank calls it.
std::vector<CheckResult> AllReduceProbe(const dist::WorldInfo& world) {
  const char* kS = "distribution";
  const std::string fix_init =
      "check that every rank reaches MASTER_ADDR:MASTER_PORT (firewall, NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME); "
      "NCCL_DEBUG=INFO shows the failing step";
  auto comm = dist::InitCommunicator(world);
  if (!comm.ok()) {
    return {Line(CheckLevel::kFail, kS, "collective init across " + std::to_string(world.world_size) + " ranks (" +
                                           world.ToString() + "): " + comm.status().message(), fix_init)};
  }
  const std::string backend = (*comm)->BackendName();
  const bool gpu = backend == "nccl";
  const int64_t bytes = gpu ? kGpuProbeBytes : kCpuProbeBytes;
  at::TensorOptions opts = at::TensorOptions().dtype(at::kFloat);
  if (gpu) opts = opts.device(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(world.local_rank)));
  at::Tensor buf = at::ones({bytes / 4}, opts);
  std::vector<CheckResult> out;
  out.push_back(Line(CheckLevel::kPass, kS, backend + " init across " + std::to_string(world.world_size) + " ranks"));
  Status s = (*comm)->AllReduceSum(buf)->Wait();  // warm-up (connection setup)
  if (s.ok() && buf[0].item<float>() != static_cast<float>(world.world_size)) {
    s = Status::Internal("all-reduce returned " + std::to_string(buf[0].item<float>()) + ", expected " +
                         std::to_string(world.world_size));
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kProbeIters && s.ok(); ++i) s = (*comm)->AllReduceSum(buf)->Wait();
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!s.ok()) {
    out.push_back(Line(CheckLevel::kFail, kS, backend + " all-reduce: " + s.message(), fix_init));
    return out;
  }
  // Bus bandwidth as nccl-tests reports it: 2(n-1)/n · bytes / time.
  const double n = world.world_size;
  const double busbw = 2.0 * (n - 1) / n * static_cast<double>(bytes) * kProbeIters / std::max(sec, 1e-9);
  char mib[32];
  std::snprintf(mib, sizeof(mib), "%lld MiB", static_cast<long long>(bytes >> 20));
  out.push_back(Line(CheckLevel::kPass, kS,
                     backend + " all-reduce of " + mib + " x" + std::to_string(kProbeIters) + ": bus bandwidth " +
                         Gb(busbw) + " (" + std::to_string(world.world_size) + " ranks)"));
  return out;
}

std::string ResultsToText(const std::vector<CheckResult>& v) {
  std::string s;
  for (const auto& r : v) {
    s += std::string(io::CheckLevelName(r.level)) + "\t" + r.section + "\t" + r.what + "\t" + r.fix + "\n";
  }
  return s;
}

std::vector<CheckResult> ResultsFromText(const std::string& text) {
  std::vector<CheckResult> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::istringstream ls(line);
    std::string part;
    while (std::getline(ls, part, '\t')) f.push_back(part);
    if (f.size() < 3) continue;
    CheckResult r;
    r.level = f[0] == "PASS" ? CheckLevel::kPass : f[0] == "WARN" ? CheckLevel::kWarn
                              : f[0] == "FAIL" ? CheckLevel::kFail : CheckLevel::kSkip;
    r.section = f[1];
    r.what = f[2];
    r.fix = f.size() > 3 ? f[3] : "";
    out.push_back(r);
  }
  return out;
}

void DistributionChecks(const pipeline::RunOptions& run, const dist::WorldInfo& world,
                        std::vector<CheckResult>* out) {
  const char* kS = "distribution";
  const int requested = std::max<int>(world.world_size, static_cast<int>(run.parallel.nproc_per_node));
  if (dist::BackendCompiled(dist::BackendKind::kNccl)) {
    out->push_back(Line(CheckLevel::kPass, kS, "NCCL backend compiled in"));
  } else {
    out->push_back(Line(CheckLevel::kWarn, kS, "NCCL backend not compiled in (CPU LibTorch build): multi-GPU runs "
                        "are not possible with this binary",
                        "for multi-GPU runs build against a CUDA LibTorch with NCCL (docs/build.md, docs/distributed.md)"));
  }
  if (!dist::BackendCompiled(dist::BackendKind::kGloo)) {
    out->push_back(Line(CheckLevel::kWarn, kS, "Gloo backend not compiled in: no CPU collectives",
                        "install libgloo-dev and rebuild (docs/build.md)"));
  }
  // P2P access between the GPUs the run would use.
  const std::vector<GpuInfo> gpus = VisibleGpus();
  const int n = std::min<int>(static_cast<int>(gpus.size()), requested);
  if (n < 2) {
    out->push_back(Line(CheckLevel::kSkip, kS, "P2P access matrix: fewer than 2 GPUs in use (" +
                                                   std::to_string(gpus.size()) + " visible)"));
  } else {
    const auto can = PeerAccessMatrix(n);
    std::string matrix, missing;
    for (int i = 0; i < n; ++i) {
      matrix += (i ? " " : "");
      for (int j = 0; j < n; ++j) {
        matrix += i == j ? 'X' : can[i][j] ? '1' : '0';
        if (i != j && !can[i][j]) missing += (missing.empty() ? "" : ", ") + std::to_string(i) + "->" + std::to_string(j);
      }
    }
    if (missing.empty()) {
      out->push_back(Line(CheckLevel::kPass, kS, "P2P access between all " + std::to_string(n) + " GPUs [" + matrix + "]"));
    } else {
      out->push_back(Line(CheckLevel::kWarn, kS, "P2P access missing for " + missing + " [" + matrix + "]",
                          "collectives go through host memory (slower TPP hand-offs): check the topology with "
                          "nvidia-smi topo -m, IOMMU/ACS settings, or use GPUs on one NVLink/PCIe switch"));
    }
  }
  // Collective probe.
  if (world.world_size > 1) {
    auto probe = AllReduceProbe(world);
    out->insert(out->end(), probe.begin(), probe.end());
  } else if (requested > 1) {
    char tmpl[] = "/tmp/liveavatar_doctor_probe_XXXXXX";
    const int fd = mkstemp(tmpl);
    if (fd < 0) {
      out->push_back(Line(CheckLevel::kFail, kS, "all-reduce probe: cannot create a temporary file", "check /tmp"));
      return;
    }
    close(fd);
    const char* argv0 = "liveavatar";
    dist::LaunchOptions lo;
    lo.extra_env = {{kProbeOutEnv, tmpl}};
    const std::vector<std::string> worker = dist::WorkerCommandLine(1, &argv0, {});
    std::vector<std::string> args = {worker.at(0), "doctor", "--log-level", "warn", "--threads", "1"};
    const dist::LaunchResult lr = dist::LaunchLocal(requested, args, lo);
    std::ifstream in(tmpl);
    std::stringstream ss;
    ss << in.rdbuf();
    std::remove(tmpl);
    auto lines = ResultsFromText(ss.str());
    out->insert(out->end(), lines.begin(), lines.end());
    if (!lr.status.ok() && lines.empty()) {
      out->push_back(Line(CheckLevel::kFail, kS, "all-reduce probe over " + std::to_string(requested) +
                                                     " local processes: " + lr.status.message(),
                          "see the rank's error above; check the backend and the local network (127.0.0.1)"));
    }
  } else {
    out->push_back(Line(CheckLevel::kSkip, kS, "all-reduce probe: single process (give --nproc_per_node N to probe N "
                        "local ranks)"));
  }
}

// A worker of the probe launched above: only the collective probe; rank 0 writes the result lines.
int RunProbeWorker(const char* out_path) {
  auto world = dist::DetectWorld();
  std::vector<CheckResult> lines;
  if (!world.ok()) {
    lines.push_back(Line(CheckLevel::kFail, "distribution", "launcher environment: " + world.status().message(),
                         "check RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT"));
  } else {
    lines = AllReduceProbe(*world);
  }
  if (!world.ok() || world->rank == 0) {
    std::ofstream(out_path) << ResultsToText(lines);
  }
  for (const auto& l : lines) {
    if (l.failed()) return 1;
  }
  return 0;
}

void Print(const std::vector<CheckResult>& results, bool json) {
  const size_t pass = io::CountLevel(results, CheckLevel::kPass), warn = io::CountLevel(results, CheckLevel::kWarn),
               fail = io::CountLevel(results, CheckLevel::kFail), skip = io::CountLevel(results, CheckLevel::kSkip);
  if (json) {
    nlohmann::json j;
    j["checks"] = nlohmann::json::array();
    for (const auto& r : results) {
      j["checks"].push_back({{"level", io::CheckLevelName(r.level)}, {"section", r.section}, {"what", r.what},
                             {"fix", r.fix}});
    }
    j["summary"] = {{"pass", pass}, {"warn", warn}, {"fail", fail}, {"skip", skip}, {"ok", fail == 0}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    for (const auto& r : results) {
      std::printf("%s  %s: %s", io::CheckLevelName(r.level), r.section.c_str(), r.what.c_str());
      if (!r.fix.empty()) std::printf("  -> fix: %s", r.fix.c_str());
      std::printf("\n");
    }
    std::printf("doctor: %zu checks: %zu passed, %zu warning(s), %zu failure(s), %zu skipped\n", results.size(), pass,
                warn, fail, skip);
  }
  std::fflush(stdout);
}

}  // namespace

int RunDoctor(const ParsedCommand& cmd) {
  if (const char* probe_out = std::getenv(kProbeOutEnv)) return RunProbeWorker(probe_out);
  const pipeline::RunOptions& run = cmd.run;
  std::vector<CheckResult> results;

  auto world = dist::DetectWorld();
  if (!world.ok()) {
    results.push_back(Line(CheckLevel::kFail, "distribution", "launcher environment: " + world.status().message(),
                           "fix or unset RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT"));
  }
  const dist::WorldInfo w = world.ok() ? *world : dist::WorldInfo{};
  // Under a launcher every rank joins the probe; only rank 0 runs and prints the rest.
  if (w.world_size > 1 && w.rank != 0) {
    std::vector<CheckResult> d;
    DistributionChecks(run, w, &d);
    for (const auto& l : d) {
      if (l.failed()) {
        LA_LOG_ERROR("doctor (rank {}): {}", w.rank, l.what);
        return 1;
      }
    }
    return 0;
  }
  const int world_size = std::max<int>(w.world_size, static_cast<int>(run.parallel.nproc_per_node));

  InputChecks(run, world_size, &results);

  pipeline::CheckpointCheckOptions co;
  co.ckpt_dir = run.generate.ckpt_dir;
  co.load_lora = run.generate.load_lora;
  co.lora_path = run.generate.lora_path_dmd;
  co.training_config = run.generate.training_config;
  const pipeline::CheckpointReport ckpt = pipeline::CheckCheckpoint(co);

  MemoryChecks(run, world_size, &results);
  DistributionChecks(run, w, &results);
  results.insert(results.end(), ckpt.results.begin(), ckpt.results.end());

  Print(results, cmd.doctor.json);
  const size_t failed = io::CountLevel(results, CheckLevel::kFail);
  if (failed > 0) {
    LA_LOG_ERROR("doctor: {} check(s) failed", failed);
    return 1;
  }
  return 0;
}

}  // namespace liveavatar::cli
