// `liveavatar bench --load --ckpt_dir DIR [generate flags]`: loads the checkpoint exactly as `generate` does
// (pipeline::Engine::Load: header pre-flight, then each model streamed to its device, the LoRA merged on the way)
// and reports, per model, the seconds, the GB/s of checkpoint bytes read, the process's peak RSS while that model
// loaded and its RSS after; then the plan's predicted host peak for the same flags beside the measured one, and
// the LoRA merge rate against this machine's fp32 GEMM rate (docs/performance.md, "Load").
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "cli_commands.h"
#include "liveavatar/core/logging.h"
#include "liveavatar/io/checkpoint_dir.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/dit/model.h"
#include "liveavatar/models/lora.h"
#include "liveavatar/pipeline/checkpoint_checks.h"
#include "liveavatar/pipeline/engine.h"
#include "liveavatar/runtime/cpu_memory_tracker.h"

namespace liveavatar::cli {

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kGB = 1e9;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Stored bytes of a tensor file (header arithmetic; nothing is read).
int64_t StoredBytes(const std::string& path) {
  auto store = io::OpenTensorStore(path);
  if (!store.ok()) return 0;
  int64_t total = 0;
  for (const auto& k : (*store)->Keys()) {
    auto m = (*store)->Meta(k);
    if (m.ok()) total += static_cast<int64_t>(m->nbytes());
  }
  return total;
}

// Median seconds of `fn` over `iters` runs after one warm-up.
template <typename Fn>
double MedianSeconds(int iters, Fn fn) {
  fn();
  std::vector<double> s;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = Clock::now();
    fn();
    s.push_back(SecondsSince(t0));
  }
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

// fp32 GEMM rate of this machine: a square 2048 product (the shape BLAS runs at its best).
double GemmGflops(const c10::Device& device) {
  const auto o = at::TensorOptions().dtype(at::kFloat).device(device);
  const at::Tensor a = at::randn({2048, 2048}, o), b = at::randn({2048, 2048}, o);
  const double s = MedianSeconds(3, [&] { (void)at::mm(a, b).sum().item<float>(); });
  return 2.0 * 2048 * 2048 * 2048 / s / 1e9;
}

// The LoRA merge as the streaming load runs it (LoraApplier::AddDelta on each targeted weight, already converted to
// fp32 on the device as the load does first): GFLOP/s of the (alpha/r)·B·A updates. The fp32 conversion is the
// load's, timed with the DiT above.
StatusOr<nlohmann::json> MergeRate(const pipeline::EngineOptions& eo) {
  nlohmann::json out;
  const io::CheckpointDir dir = io::CheckpointDir::At(eo.ckpt_dir, "");
  LA_ASSIGN_OR_RETURN(models::dit::DitConfig config, models::dit::LoadDitConfig(dir.dit_config));
  LA_ASSIGN_OR_RETURN(pipeline::LoraChoice choice, pipeline::ResolveLora(eo));
  LA_ASSIGN_OR_RETURN(models::LoraApplier lora, models::LoraApplier::Open(choice.path, models::dit::DitBaseShapes(config),
                                                                          choice.alpha, choice.rank));
  LA_ASSIGN_OR_RETURN(auto store, io::OpenTensorStore(dir.dit_weights));
  double flops = 0, seconds = 0;
  int merged = 0;
  for (const auto& key : store->Keys()) {
    if (!lora.Targets(key)) continue;
    LA_ASSIGN_OR_RETURN(at::Tensor stored, store->Get(key));
    at::Tensor w = stored.to(eo.device, at::kFloat, /*non_blocking=*/false, /*copy=*/true);
    store->Release(key);
    (void)w.sum().item<float>();  // resident and waited for before the clock starts
    const auto t0 = Clock::now();
    LA_RETURN_IF_ERROR(lora.AddDelta(key, w));
    if (eo.device.is_cuda()) (void)w.sum().item<float>();  // waits for the device (CPU ops are synchronous)
    seconds += SecondsSince(t0);
    flops += 2.0 * static_cast<double>(w.size(0)) * static_cast<double>(w.size(1)) * lora.rank();
    ++merged;
  }
  out["pairs"] = merged;
  out["seconds"] = seconds;
  out["gflops"] = seconds > 0 ? flops / seconds / 1e9 : 0.0;
  out["gemm_fp32_gflops"] = GemmGflops(eo.device);
  out["fraction_of_gemm"] = out["gemm_fp32_gflops"].get<double>() > 0
                                ? out["gflops"].get<double>() / out["gemm_fp32_gflops"].get<double>()
                                : 0.0;
  return out;
}

}  // namespace

StatusOr<nlohmann::json> BenchLoad(const ParsedCommand& cmd) {
  if (cmd.run.generate.ckpt_dir.empty()) return Status::InvalidArgument("bench --load: --ckpt_dir is required");
  pipeline::EngineOptions eo = EngineOptionsFrom(cmd.run);
  const io::CheckpointDir dir = io::CheckpointDir::At(eo.ckpt_dir, "");
  const std::map<std::string, int64_t> file_bytes = {{"dit", StoredBytes(dir.dit_weights)},
                                                     {"t5", StoredBytes(dir.t5_weights)},
                                                     {"wav2vec2", StoredBytes(dir.wav2vec2_weights)},
                                                     {"vae", StoredBytes(dir.vae_weights)}};
  nlohmann::json out;
  out["ckpt_dir"] = eo.ckpt_dir;
  out["device"] = eo.device.str();
  out["dtype"] = std::string(c10::toString(eo.dtype));
  const runtime::ProcessMemory before = runtime::ReadProcessMemory();
  out["rss_before_bytes"] = before.rss;
  const bool hwm_resets = runtime::ResetPeakRss();
  int64_t process_peak = before.rss;
  out["components"] = nlohmann::json::array();
  eo.on_loaded = [&](const std::string& name, double seconds) {
    const runtime::ProcessMemory m = runtime::ReadProcessMemory();
    const int64_t bytes = file_bytes.count(name) ? file_bytes.at(name) : 0;
    process_peak = std::max(process_peak, m.peak_rss);
    out["components"].push_back({{"name", name},
                                 {"seconds", seconds},
                                 {"file_bytes", bytes},
                                 {"gb_per_s", seconds > 0 ? bytes / kGB / seconds : 0.0},
                                 {"peak_rss_bytes", m.peak_rss},
                                 {"rss_after_bytes", m.rss},
                                 {"rss_anon_after_bytes", m.rss_anon}});
    if (hwm_resets) runtime::ResetPeakRss();
  };
  const auto t0 = Clock::now();
  LA_ASSIGN_OR_RETURN(std::unique_ptr<pipeline::Engine> engine, pipeline::Engine::Load(eo));
  out["load_seconds"] = SecondsSince(t0);
  const runtime::ProcessMemory after = runtime::ReadProcessMemory();
  out["peak_rss_bytes"] = std::max(process_peak, after.peak_rss);
  out["rss_after_bytes"] = after.rss;
  out["rss_anon_after_bytes"] = after.rss_anon;

  // The plan for the same flags, on this device kind.
  auto inputs = PlanInputsForRun(cmd.run, "", /*for_generate=*/true, eo.device.is_cuda() ? "cuda" : "cpu");
  if (inputs.ok()) {
    const runtime::MemoryPlan p = runtime::MemoryPlanner::Plan(*inputs);
    if (p.error.empty() && !p.roles.empty()) {
      const runtime::RankPlan& r = p.roles.front();
      int64_t load_host = 0;  // the host plan's load-time part: runtime + what loads + the mapped tensor
      for (const auto& c : r.host.components) {
        if (c.name != "after_load") load_host += c.anon + c.mapped;
      }
      out["plan"] = {{"host_peak_bytes", r.host.peak}, {"host_load_peak_bytes", load_host},
                     {"device_load_bytes", r.load_peak}};
    }
  }
  if (eo.load_dit && eo.load_lora) {
    engine.reset();  // the merge benchmark runs on its own
    auto merge = MergeRate(eo);
    if (merge.ok()) out["lora_merge"] = *merge;
  }
  return out;
}

int RunBenchLoad(const ParsedCommand& cmd) {
  auto result = BenchLoad(cmd);
  if (!result.ok()) {
    LA_LOG_ERROR("bench --load: {}", result.status().message());
    return result.status().code() == Status::Code::kInvalidArgument ? 2 : 1;
  }
  const nlohmann::json& r = *result;
  if (cmd.bench.json) {
    std::printf("%s\n", r.dump(2).c_str());
    return 0;
  }
  std::printf("liveavatar bench --load: %s on %s (%s)\n", r["ckpt_dir"].get<std::string>().c_str(),
              r["device"].get<std::string>().c_str(), r["dtype"].get<std::string>().c_str());
  std::printf("  %-10s %8s %10s %8s %14s %14s\n", "model", "seconds", "GB read", "GB/s", "peak RSS GB", "RSS after GB");
  for (const auto& c : r["components"]) {
    std::printf("  %-10s %8.2f %10.3f %8.2f %14.3f %14.3f\n", c["name"].get<std::string>().c_str(),
                c["seconds"].get<double>(), c["file_bytes"].get<int64_t>() / kGB, c["gb_per_s"].get<double>(),
                c["peak_rss_bytes"].get<int64_t>() / kGB, c["rss_after_bytes"].get<int64_t>() / kGB);
  }
  std::printf("  total %.2f s, peak RSS %.3f GB (before loading %.3f GB)\n", r["load_seconds"].get<double>(),
              r["peak_rss_bytes"].get<int64_t>() / kGB, r["rss_before_bytes"].get<int64_t>() / kGB);
  if (r.contains("plan")) {
    std::printf("  plan: predicted host peak while loading %.3f GB (whole run %.3f GB)\n",
                r["plan"]["host_load_peak_bytes"].get<int64_t>() / kGB, r["plan"]["host_peak_bytes"].get<int64_t>() / kGB);
  }
  if (r.contains("lora_merge")) {
    const auto& m = r["lora_merge"];
    std::printf("  LoRA merge: %d pairs in %.2f s, %.1f GFLOP/s = %.0f%% of fp32 GEMM (%.1f GFLOP/s)\n",
                m["pairs"].get<int>(), m["seconds"].get<double>(), m["gflops"].get<double>(),
                100.0 * m["fraction_of_gemm"].get<double>(), m["gemm_fp32_gflops"].get<double>());
  }
  return 0;
}

}  // namespace liveavatar::cli
