// `liveavatar plan` and the planner against reality: the 14B plan through --model_config (text and --json), the
// tiny checkpoint's plan, alternatives of a plan that does not fit, the preflight message, and the planner's CPU
// prediction for a tiny-model generation against the tracked peak of live CPU tensor bytes
// (runtime::CpuMemoryTracker).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "cli_commands.h"
#include "liveavatar/core/threads.h"
#include "liveavatar/models/audio/wav2vec2.h"
#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/dit/weights.h"
#include "liveavatar/models/vae/weights.h"
#include "liveavatar/pipeline/engine.h"
#include "liveavatar/runtime/cpu_memory_tracker.h"
#include "liveavatar/runtime/memory_planner.h"
#include "cli_test_util.h"
#include "make_tiny.h"

namespace fs = std::filesystem;

namespace liveavatar::cli {
namespace {

using testutil::Bin;
using testutil::Q;
using testutil::Shell;
using testutil::Slurp;
using testutil::Src;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

class PlanCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = (fs::temp_directory_path() / ("la_plan_test_" + std::to_string(::getpid()))).string();
    fs::create_directories(root_);
    MakeTinyArgs args;
    args.out = root_ + "/ckpt";
    args.seed = 5;
    Status s = WriteTinyCheckpoint(args);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  // Runs the binary, stdout to a file; returns the exit status.
  static int RunPlanCmd(const std::string& flags, std::string* out) {
    const std::string file = root_ + "/out.txt";
    const int rc =
        Shell(Q(Bin()) + " plan --log-level warn " + flags + " > " + Q(file) + " 2> " + Q(root_ + "/err.txt"));
    *out = Slurp(file);
    return rc;
  }
  static std::string root_;
};
std::string PlanCli::root_;

TEST_F(PlanCli, TinyCpuPredictionMatchesTrackedPeak) {
  // One thread: the allocation sequence (and oneDNN's per-thread scratch) is then reproducible.
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  pipeline::RunOptions run;
  run.generate.ckpt_dir = root_ + "/ckpt";
  run.generate.image = Src() + "/examples/face.png";
  run.generate.audio = Src() + "/examples/speech.wav";
  run.generate.size = "384*256";
  run.generate.num_clip = 1;
  run.memory.fp8 = false;
  auto in = PlanInputsForRun(run, "", /*for_generate=*/true, "cpu");
  ASSERT_TRUE(in.ok()) << in.status().ToString();
  in->capacity_bytes = 0;
  const runtime::MemoryPlan plan = runtime::MemoryPlanner::Plan(*in);
  ASSERT_TRUE(plan.error.empty()) << plan.error;
  ASSERT_EQ(plan.roles.size(), 1u);

  runtime::CpuMemoryTracker::Install();
  const int64_t base = runtime::CpuMemoryTracker::live_bytes();
  runtime::CpuMemoryTracker::ResetPeak();
  pipeline::EngineOptions eo;
  eo.ckpt_dir = root_ + "/ckpt";
  auto engine = pipeline::Engine::Load(eo);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  const int64_t load_peak = runtime::CpuMemoryTracker::peak_bytes() - base;
  const int64_t after_load = runtime::CpuMemoryTracker::live_bytes() - base;
  runtime::CpuMemoryTracker::ResetPeak();
  pipeline::GenerationRequest req;
  req.image = run.generate.image;
  req.audio = run.generate.audio;
  req.prompt = "a person talking";
  req.output = root_ + "/tracked.mp4";
  req.size = "384*256";
  req.num_clip = 1;
  req.raw_video = true;
  auto g = (*engine)->Generate(req);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  const int64_t gen_peak = runtime::CpuMemoryTracker::peak_bytes() - base;
  runtime::CpuMemoryTracker::Uninstall();
  at::set_num_threads(threads);
  const int64_t measured = std::max(load_peak, gen_peak);
  const auto& r = plan.roles[0];
  std::ostringstream table;
  for (const auto& c : r.components) {
    table << "  " << c.name << " " << c.load << " " << c.encode << " " << c.denoise << "\n";
  }
  std::printf(
      "tracked: load peak %lld, after load %lld, generate peak %lld; planned: load %lld encode %lld denoise "
      "%lld\n%s",
      static_cast<long long>(load_peak), static_cast<long long>(after_load), static_cast<long long>(gen_peak),
      static_cast<long long>(r.load_peak), static_cast<long long>(r.encode_peak),
      static_cast<long long>(r.denoise_peak), table.str().c_str());
  EXPECT_NEAR(static_cast<double>(plan.peak_bytes) / static_cast<double>(measured), 1.0, 0.05)
      << "planned " << plan.peak_bytes << " B, tracked " << measured << " B";
}

TEST_F(PlanCli, Plan14BFromModelConfigTextAndJson) {
  const std::string base = "--model_config " + Q(Src() + "/configs/wan2.2_s2v_14b.json") +
                           " --device cuda --size 704*384 --nproc_per_node 5 --enable_vae_parallel "
                           "--offload_model False --no_fp8 --max_gpu_mem_gb 80";
  std::string out;
  ASSERT_EQ(RunPlanCmd(base + " --json", &out), 0) << out << Slurp(root_ + "/err.txt");
  const auto j = nlohmann::json::parse(out);
  EXPECT_TRUE(j["fits"].get<bool>());
  EXPECT_EQ(j["device"], "cuda");
  EXPECT_EQ(j["params"]["dit"].get<int64_t>(), 16295755609);
  EXPECT_EQ(j["topology"]["dit_stages"].get<int64_t>(), 4);
  EXPECT_EQ(j["geometry"]["ring_tokens"].get<int64_t>(), 12672);
  ASSERT_EQ(j["roles"].size(), 2u);
  EXPECT_EQ(j["roles"][0]["ranks"].size(), 4u);
  EXPECT_EQ(j["roles"][1]["role"], "vae");
  int64_t sum = 0;
  for (const auto& c : j["roles"][0]["components"]) sum += c["denoise"].get<int64_t>();
  EXPECT_EQ(sum, j["roles"][0]["phase_peaks"]["denoise"].get<int64_t>());
  EXPECT_LE(j["peak_bytes"].get<int64_t>(), j["capacity_bytes"].get<int64_t>());
  // The same plan as a table.
  ASSERT_EQ(RunPlanCmd(base, &out), 0);
  EXPECT_NE(out.find("ranks 0-3 (dit"), std::string::npos) << out;
  EXPECT_NE(out.find("kv_rings"), std::string::npos) << out;
  EXPECT_NE(out.find("verdict: fits"), std::string::npos) << out;
}

TEST_F(PlanCli, NonFittingPlanListsAlternativesThatFit) {
  // 4 x 24 GiB, Ulysses 4 + FSDP in bf16 with every step's ring resident does not fit.
  const std::string base = "--model_config " + Q(Src() + "/configs/wan2.2_s2v_14b.json") +
                           " --device cuda --size 704*384 --nproc_per_node 4 --ulysses_size 4 --dit_fsdp --no_fp8 "
                           "--t5_cpu --max_gpu_mem_gb 24";
  std::string out;
  ASSERT_EQ(RunPlanCmd(base, &out), 1) << out << Slurp(root_ + "/err.txt");
  EXPECT_NE(out.find("does NOT fit"), std::string::npos) << out;
  EXPECT_NE(out.find("alternatives that fit:"), std::string::npos) << out;
  EXPECT_NE(out.find("--offload_kv_cache"), std::string::npos) << out;
  ASSERT_EQ(RunPlanCmd(base + " --json", &out), 1);
  const auto j = nlohmann::json::parse(out);
  EXPECT_FALSE(j["fits"].get<bool>());
  ASSERT_FALSE(j["alternatives"].empty());
  bool full_quality = false;
  for (const auto& a : j["alternatives"]) {
    EXPECT_LE(a["peak_bytes"].get<int64_t>(), static_cast<int64_t>(24 * kGiB)) << a.dump();
    full_quality = full_quality || a["full_quality"].get<bool>();
  }
  EXPECT_TRUE(full_quality);
}

TEST_F(PlanCli, TinyCheckpointPlanUsesItsConfigs) {
  std::string out;
  ASSERT_EQ(RunPlanCmd("--ckpt_dir " + Q(root_ + "/ckpt") + " --device cpu --size 384*256 --json", &out), 0)
      << out << Slurp(root_ + "/err.txt");
  const auto j = nlohmann::json::parse(out);
  auto cfg = models::dit::LoadDitConfig(root_ + "/ckpt/config.json");
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  int64_t params = 0;
  for (const auto& s : models::dit::DitWeightSpecs(*cfg)) {
    int64_t n = 1;
    for (auto d : s.shape) n *= d;
    params += n;
  }
  EXPECT_EQ(j["params"]["dit"].get<int64_t>(), params);
  EXPECT_EQ(j["dtype"], "fp32");
  EXPECT_EQ(j["work"]["width"].get<int64_t>(), 384);
  EXPECT_EQ(j["work"]["height"].get<int64_t>(), 256);
  EXPECT_EQ(j["geometry"]["frame_seqlen"].get<int64_t>(), 16 * 24);
}

TEST_F(PlanCli, InvalidTopologyAndBadDevice) {
  std::string out;
  EXPECT_EQ(RunPlanCmd("--model_config " + Q(Src() + "/configs/wan2.2_s2v_14b.json") +
                           " --device cuda --nproc_per_node 3 --ulysses_size 2",
                       &out),
            2);
  EXPECT_NE(out.find("error:"), std::string::npos) << out;
  EXPECT_NE(RunPlanCmd("--device tpu", &out), 0);
  EXPECT_NE(Slurp(root_ + "/err.txt").find("--device"), std::string::npos);
}

TEST_F(PlanCli, PreflightRefusesAPlanThatDoesNotFitAndNamesAlternatives) {
  pipeline::RunOptions run;
  run.generate.ckpt_dir = root_ + "/ckpt";
  run.generate.size = "704*384";
  run.memory.fp8 = false;
  run.memory.max_gpu_mem_gb = 0.5;  // the tiny model at 704x384 needs ~0.9 GiB on the CPU
  const Status s = PreflightPlan(run);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kOutOfMemory);
  EXPECT_NE(s.message().find("alternatives that fit"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("--size"), std::string::npos) << s.message();
  run.memory.max_gpu_mem_gb = 64;
  EXPECT_TRUE(PreflightPlan(run).ok());
}

TEST_F(PlanCli, OutOfMemoryReportCarriesThePlansPredictionForTheRank) {
  pipeline::RunOptions run;
  run.generate.ckpt_dir = root_ + "/ckpt";
  run.generate.size = "384*256";
  run.memory.max_gpu_mem_gb = 2;
  const std::string line = PlanPredictionText(run, 0);
  EXPECT_NE(line.find("plan: rank 0 (dit+decode) was predicted to peak at "), std::string::npos) << line;
  EXPECT_NE(line.find("phase ("), std::string::npos) << line;
  EXPECT_NE(line.find("budget 2.00 GiB"), std::string::npos) << line;
  EXPECT_NE(line.find("liveavatar plan"), std::string::npos) << line;
  // A run the planner cannot describe still gets a line, saying why.
  run.parallel.ulysses_size = 3;  // one process cannot hold 3 Ulysses ranks
  const std::string none = PlanPredictionText(run, 0);
  EXPECT_EQ(none.rfind("plan: not available (", 0), 0u) << none;
}

}  // namespace
}  // namespace liveavatar::cli
