// Multi-process generation (issue: TPP, Ulysses, FSDP; docs/parallel.md) on the tiny checkpoint with CPU (Gloo)
// workers: every launch script's --help, each example layout run through its script against the single-process
// video (identical uint8 frames), the TPP driver's latents against the single-process Engine's (<= 1e-5), and
// failure handling (a refused layout, a failing rank leaves no output).
//
// The tiny checkpoint here has 4 attention heads (configs/tiny.json has 2), so that Ulysses over 3 and 4 ranks
// is possible. Runs are kept small: 384*256, 12 frames per clip, 2 clips, one thread per worker.
#include <gtest/gtest.h>

#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "liveavatar/core/threads.h"
#include "liveavatar/dist/communicator.h"
#include "liveavatar/dist/launcher.h"
#include "liveavatar/dist/world.h"
#include "liveavatar/io/safetensors.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/pipeline/engine.h"
#include "liveavatar/pipeline/topology.h"
#include "liveavatar/pipeline/tpp_driver.h"
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
// The frames of a y4m file (everything from the first FRAME marker) and their count.
std::string Y4mFrames(const std::string& y4m) {
  const size_t p = y4m.find("FRAME");
  return p == std::string::npos ? std::string() : y4m.substr(p);
}
// Frames of two process layouts (docs/testing.md, "Tolerances"): Ulysses head splits and spatially split VAE decodes
// change the shapes of matmuls and convolutions and so the order of fp32 sums (relative differences ~1e-6 through
// the DiT and the VAE). Quantised to 8 bits that can move a sample lying on a rounding boundary by one step, in a
// tiny fraction of samples. Bound, for any machine: every sample within 1 of the reference and at most 1 in 1000
// samples different. (Bit-exactness is promised only for the same layout, seed and machine: Generate.* checks it.)
::testing::AssertionResult FramesMatchAcrossLayouts(const std::string& got, const std::string& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "frame bytes " << got.size() << " != " << want.size();
  }
  size_t differ = 0;
  int worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const int d = std::abs(static_cast<int>(static_cast<uint8_t>(got[i])) - static_cast<uint8_t>(want[i]));
    differ += d != 0;
    worst = std::max(worst, d);
  }
  const double fraction = got.empty() ? 0.0 : static_cast<double>(differ) / static_cast<double>(got.size());
  if (worst > 1 || fraction > 1e-3) {
    return ::testing::AssertionFailure() << differ << " samples differ (" << fraction << "), by up to " << worst;
  }
  return ::testing::AssertionSuccess() << differ << " samples differ by 1 (" << fraction << ")";
}

size_t CountFrames(const std::string& y4m) {
  size_t n = 0;
  for (size_t p = y4m.find("FRAME"); p != std::string::npos; p = y4m.find("FRAME", p + 5)) ++n;
  return n;
}

const char* const kScripts[] = {"run_single_gpu.sh",   "run_5gpu_tpp.sh",
                                "run_4gpu_tpp.sh",     "run_4x24gb.sh",
                                "infinite_inference_single_gpu.sh", "infinite_inference_multi_gpu.sh"};

TEST(ParallelScripts, HelpIsCleanAndStatesTheNeeds) {
  const std::string dir = fs::temp_directory_path() / ("la_par_help_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  for (const char* s : kScripts) {
    const std::string out = dir + "/out.txt", err = dir + "/err.txt";
    // No binary needed for --help.
    EXPECT_EQ(Shell("LIVEAVATAR_BIN=/nonexistent bash " + Q(Src() + "/scripts/" + s) + " --help > " + Q(out) +
                    " 2> " + Q(err)),
              0)
        << s;
    const std::string text = Slurp(out);
    EXPECT_NE(text.find(s), std::string::npos) << s << ": " << text;
    EXPECT_NE(text.find("Needs:"), std::string::npos) << s << ": " << text;
    EXPECT_NE(text.find("Usage:"), std::string::npos) << s << ": " << text;
    EXPECT_EQ(Slurp(err), "") << s;
  }
  fs::remove_all(dir);
}

// Tiny checkpoint (4 heads) shared by the end-to-end tests, and the single-process reference video.
class ParallelGenerate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = (fs::temp_directory_path() / ("la_parallel_test_" + std::to_string(::getpid()))).string();
    fs::create_directories(root_);
    auto cfg = nlohmann::json::parse(Slurp(Src() + "/configs/tiny.json"));
    cfg["dit"]["num_heads"] = 4;
    std::ofstream(root_ + "/tiny4.json") << cfg.dump(1);
    MakeTinyArgs args;
    args.out = root_ + "/ckpt";
    args.seed = 3;
    args.config = root_ + "/tiny4.json";
    Status s = WriteTinyCheckpoint(args);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  // Runs scripts/<script> on the tiny checkpoint with CPU workers (one thread each); returns its exit status.
  static int RunScript(const std::string& script, const std::string& save_file, int64_t clips = 2,
                       const std::string& extra = "", bool fp8 = false) {
    const std::string env = "LIVEAVATAR_BIN=" + Q(Bin()) + " CKPT_DIR=" + Q(root_ + "/ckpt") +
                            " LORA=" + Q(root_ + "/ckpt/lora/liveavatar.safetensors") +
                            " IMAGE=" + Q(Src() + "/examples/face.png") +
                            " AUDIO=" + Q(Src() + "/examples/speech.wav") +
                            " SIZE=384*256 INFER_FRAMES=12 NUM_CLIP=" + std::to_string(clips) +
                            " FP8=" + (fp8 ? "1" : "0") + " SAVE_FILE=" + Q(save_file) + " LIVEAVATAR_DIST_TIMEOUT_S=300";
    return Shell(env + " bash " + Q(Src() + "/scripts/" + script) + " --threads 1 --log-level warn " + extra + " 2> " +
                 Q(save_file + ".log"));
  }

  // The single-process video (run once through run_single_gpu.sh), with FP8 DiT weights when `fp8`.
  static const std::string& Reference(bool fp8 = false) {
    static std::string videos[2];
    std::string& y4m = videos[fp8 ? 1 : 0];
    if (y4m.empty()) {
      const std::string out = root_ + (fp8 ? "/single_fp8.y4m" : "/single.y4m");
      EXPECT_EQ(RunScript("run_single_gpu.sh", out, 2, "", fp8), 0) << Slurp(out + ".log");
      y4m = Slurp(out);
      EXPECT_EQ(CountFrames(y4m), 21u);  // 2 clips x 12 frames - 3 dropped
    }
    return y4m;
  }

  // `extra` flags (e.g. another layout) go after the script's; `name` names the output (default: the script).
  static void ExpectSameVideoAsSingleProcess(const std::string& script, const std::string& extra = "",
                                             const std::string& name = "", bool fp8 = false) {
    const std::string& ref = Reference(fp8);
    ASSERT_FALSE(ref.empty());
    const std::string out = root_ + "/" + (name.empty() ? script : name) + ".y4m";
    ASSERT_EQ(RunScript(script, out, 2, extra, fp8), 0) << Slurp(out + ".log");
    const std::string y4m = Slurp(out);
    EXPECT_EQ(y4m.substr(0, y4m.find('\n')), ref.substr(0, ref.find('\n')));  // W384 H256 F25:1 ...
    EXPECT_EQ(CountFrames(y4m), 21u);
    EXPECT_TRUE(FramesMatchAcrossLayouts(Y4mFrames(y4m), Y4mFrames(ref)))
        << script << ": frames differ from the single-process run";
    EXPECT_FALSE(fs::exists(out + ".partial"));
  }

  static std::string root_;
};
std::string ParallelGenerate::root_;

TEST_F(ParallelGenerate, FiveRanksFourStagesAndVaeRankMatchSingleProcess) {
  ExpectSameVideoAsSingleProcess("run_5gpu_tpp.sh");
}

TEST_F(ParallelGenerate, FourRanksOneUlyssesStageAndVaeRankMatchSingleProcess) {
  ExpectSameVideoAsSingleProcess("run_4gpu_tpp.sh");
}

TEST_F(ParallelGenerate, TwoStagesAndTwoSpatiallySplitVaeRanksMatchSingleProcess) {
  // Ranks 2 and 3 decode every block together (rows split between them); rank 2 writes.
  ExpectSameVideoAsSingleProcess("run_single_gpu.sh",
                                 "--nproc_per_node 4 --num_gpus_dit 2 --ulysses_size 1 --enable_vae_parallel",
                                 "two_vae_ranks");
}

TEST_F(ParallelGenerate, FourRanksUlyssesWithFsdpMatchSingleProcess) {
  ExpectSameVideoAsSingleProcess("run_4x24gb.sh");
}

TEST_F(ParallelGenerate, FsdpWithFp8AndOffloadedSlicesMatchesSingleProcessFp8) {
  // FP8 conversion per FSDP slice (scales agreed by a max all-reduce) gives the single process's FP8 codes, and
  // --offload_model keeps each rank's slices in host memory (copied in per all-gather).
  ExpectSameVideoAsSingleProcess("run_4x24gb.sh", "--offload_model True", "fsdp_fp8", /*fp8=*/true);
  EXPECT_FALSE(Reference(true) == Reference(false)) << "FP8 changed nothing";
}

TEST_F(ParallelGenerate, ReferenceLaunchScriptsRunTheirLayouts) {
  // One clip each (the layouts are the ones above): the first 9 frames of the 2-clip reference.
  const std::string& ref = Reference();
  ASSERT_FALSE(ref.empty());
  const std::string first_clip = Y4mFrames(ref).substr(0, Y4mFrames(ref).size() * 9 / 21);
  for (const char* s : {"infinite_inference_single_gpu.sh", "infinite_inference_multi_gpu.sh"}) {
    const std::string out = root_ + "/" + s + ".y4m";
    ASSERT_EQ(RunScript(s, out, 1), 0) << Slurp(out + ".log");
    const std::string y4m = Slurp(out);
    EXPECT_EQ(CountFrames(y4m), 9u) << s;
    EXPECT_TRUE(FramesMatchAcrossLayouts(Y4mFrames(y4m), first_clip)) << s << ": frames differ from the single-process run";
  }
}

TEST_F(ParallelGenerate, RefusedLayoutsAndFailingRanksLeaveNoOutput) {
  const std::string base = Q(Bin()) + " generate --log-level warn --no_fp8 --threads 1 --ckpt_dir " +
                           Q(root_ + "/ckpt") + " --image " + Q(Src() + "/examples/face.png") + " --audio " +
                           Q(Src() + "/examples/speech.wav") + " --size 384*256 --infer_frames 12 ";
  // Refused at start, before any worker runs, with the reason.
  const std::string log = root_ + "/refused.log";
  EXPECT_EQ(Shell(base + "--num_clip 1 --nproc_per_node 3 --num_gpus_dit 3 --save_file " + Q(root_ + "/r.y4m") +
                  " 2> " + Q(log)),
            2);
  EXPECT_NE(Slurp(log).find("--sample_steps 4 must be divisible by the number of TPP stages 3"), std::string::npos)
      << Slurp(log);
  EXPECT_EQ(Shell(base + "--num_clip 1 --nproc_per_node 4 --num_gpus_dit 4 --enable_vae_parallel --save_file " +
                  Q(root_ + "/r.y4m") + " 2> " + Q(log)),
            2);
  EXPECT_NE(Slurp(log).find("leaves no VAE rank after --num_gpus_dit 4 DiT ranks"), std::string::npos)
      << Slurp(log);
  // A DiT rank that cannot load its model (no LoRA where the writer's engine does not look): every rank fails,
  // the run exits non-zero and nothing is left behind.
  const std::string out = root_ + "/fail.y4m";
  EXPECT_NE(Shell(base + "--num_clip 1 --nproc_per_node 2 --num_gpus_dit 2 --lora_path_dmd " +
                  Q(root_ + "/missing.safetensors") + " --save_file " + Q(out) + " 2> " + Q(log)),
            0);
  EXPECT_NE(Slurp(log).find("missing.safetensors"), std::string::npos) << Slurp(log);
  for (const char* f : {"fail.y4m", "fail.wav", "fail.y4m.partial", "fail.wav.partial"}) {
    EXPECT_FALSE(fs::exists(root_ + "/" + f)) << f;
  }
  // A rank killed mid-run, while the writer holds its partial output: the run fails and the partial files go.
  const std::string killed = root_ + "/killed.y4m";
  const std::string script =
      base + "--num_clip 2 --nproc_per_node 2 --num_gpus_dit 2 --save_file " + Q(killed) + " 2> " + Q(log) +
      " & pid=$!; for i in $(seq 1 1500); do [ -e " + Q(killed + ".partial") +
      " ] && break; kill -0 $pid 2> /dev/null || break; sleep 0.2; done; [ -e " + Q(killed + ".partial") +
      " ] || { echo 'no partial output seen' >&2; wait $pid; exit 99; }; "
      "kill -9 $(pgrep -P $pid | head -n 1); wait $pid";
  std::ofstream(root_ + "/kill.sh") << script << "\n";
  const int rc = Shell("bash " + Q(root_ + "/kill.sh"));
  EXPECT_NE(rc, 0);
  EXPECT_NE(rc, 99) << "the run ended before a rank could be killed";
  EXPECT_NE(Slurp(log).find("killed by signal 9"), std::string::npos) << Slurp(log);
  for (const char* f : {"killed.y4m", "killed.wav", "killed.y4m.partial", "killed.wav.partial"}) {
    EXPECT_FALSE(fs::exists(root_ + "/" + f)) << f;
  }
}

// The launcher itself killed with SIGKILL mid-run: its workers learn it from the kernel (parent-death signal),
// exit, and the writer removes its partial output; nothing is left behind and no worker lingers.
TEST_F(ParallelGenerate, KilledLauncherLeavesNoWorkersAndNoPartialOutput) {
  const std::string base = Q(Bin()) + " generate --log-level warn --no_fp8 --threads 1 --ckpt_dir " +
                           Q(root_ + "/ckpt") + " --image " + Q(Src() + "/examples/face.png") + " --audio " +
                           Q(Src() + "/examples/speech.wav") + " --size 384*256 --infer_frames 12 ";
  const std::string out = root_ + "/orphaned.y4m", log = root_ + "/orphaned.log";
  const std::string script =
      base + "--num_clip 2 --nproc_per_node 2 --num_gpus_dit 2 --save_file " + Q(out) + " 2> " + Q(log) +
      " & pid=$!; for i in $(seq 1 1500); do [ -e " + Q(out + ".partial") +
      " ] && break; kill -0 $pid 2> /dev/null || break; sleep 0.2; done; [ -e " + Q(out + ".partial") +
      " ] || { echo 'no partial output seen' >&2; exit 99; }; workers=$(pgrep -P $pid | tr '\\n' ' '); "
      "kill -9 $pid; wait $pid 2> /dev/null; "
      "for i in $(seq 1 300); do alive=0; for w in $workers; do kill -0 $w 2> /dev/null && alive=1; done; "
      "[ $alive = 0 ] && exit 0; sleep 0.2; done; echo \"workers still alive: $workers\" >&2; kill -9 $workers; exit 98";
  std::ofstream(root_ + "/kill_launcher.sh") << script << "\n";
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = Shell("bash " + Q(root_ + "/kill_launcher.sh"));
  EXPECT_NE(rc, 99) << "the run ended before the launcher could be killed\n" << Slurp(log);
  EXPECT_EQ(rc, 0) << "workers outlived the launcher by 60 s\n" << Slurp(log);
  std::printf("[faults] launcher killed: workers gone %.1f s after the start of the run\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  for (const char* f : {"orphaned.y4m", "orphaned.wav", "orphaned.y4m.partial", "orphaned.wav.partial"}) {
    EXPECT_FALSE(fs::exists(root_ + "/" + f)) << f;
  }
}

// ---- The driver in-process: latents of the last block against the single-process Engine ----

// Worker body, run by the processes that TppDriverLatentsMatchEngine launches (skipped otherwise).
// The request of the TPP driver test, run by the workers and by the single-process reference.
pipeline::GenerationRequest DriverTestRequest(const std::string& output) {
  pipeline::GenerationRequest r;
  r.image = Src() + "/examples/face.png";
  r.audio = Src() + "/examples/speech.wav";
  r.prompt = "a person talking";
  r.output = output;
  r.size = "384*256";
  r.num_clip = 2;
  r.infer_frames = 12;
  r.base_seed = 7;
  r.raw_video = true;
  return r;
}

TEST(TppWorker, Run) {
  const char* dir = std::getenv("LA_TPP_TEST_DIR");
  if (dir == nullptr) GTEST_SKIP() << "worker of ParallelGenerate.TppDriverLatentsMatchEngine";
  InitCpuThreads(1);
  auto world = dist::DetectWorld();
  ASSERT_TRUE(world.ok()) << world.status().ToString();
  pipeline::ParallelOptions par;
  par.num_gpus_dit = 4;
  par.ulysses_size = 1;
  par.enable_vae_parallel = true;
  auto topo = pipeline::MakeTopology(par, 4, world->world_size);
  ASSERT_TRUE(topo.ok()) << topo.status().ToString();
  auto comm = dist::InitCommunicator(*world);
  ASSERT_TRUE(comm.ok()) << comm.status().ToString();
  pipeline::EngineOptions eo;
  eo.ckpt_dir = std::string(dir) + "/ckpt";
  auto driver = pipeline::TppDriver::Create(eo, *topo, *comm);
  ASSERT_TRUE(driver.ok()) << driver.status().ToString();
  const pipeline::GenerationRequest r = DriverTestRequest(std::string(dir) + "/driver.y4m");
  auto res = (*driver)->Generate(r);
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  if ((*driver)->role().is_writer) {
    EXPECT_EQ(res->frames, 21);
    ASSERT_TRUE(res->final_latents.defined());
    Status s = io::WriteSafetensors(std::string(dir) + "/driver_latents.safetensors",
                                    {{"latents", res->final_latents.contiguous()}});
    ASSERT_TRUE(s.ok()) << s.ToString();
  } else {
    EXPECT_TRUE(res->outputs.empty());
  }
}

TEST_F(ParallelGenerate, TppDriverLatentsMatchEngine) {
  dist::LaunchOptions lo;
  lo.extra_env = {{"LA_TPP_TEST_DIR", root_}, {"LIVEAVATAR_DIST_TIMEOUT_S", "300"}};
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  ASSERT_GT(n, 0);
  const dist::LaunchResult lr =
      dist::LaunchLocal(5, {std::string(self, static_cast<size_t>(n)), "--gtest_filter=TppWorker.Run"}, lo);
  ASSERT_TRUE(lr.status.ok()) << lr.status.ToString();

  // The same request on one process.
  pipeline::EngineOptions eo;
  eo.ckpt_dir = root_ + "/ckpt";
  auto engine = pipeline::Engine::Load(eo);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  const pipeline::GenerationRequest r = DriverTestRequest(root_ + "/engine.y4m");
  auto res = (*engine)->Generate(r);
  ASSERT_TRUE(res.ok()) << res.status().ToString();

  auto store = io::OpenTensorStore(root_ + "/driver_latents.safetensors");
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto lat = (*store)->Get("latents");
  ASSERT_TRUE(lat.ok()) << lat.status().ToString();
  const double max_abs = (lat->to(at::kFloat) - res->final_latents.to(at::kFloat)).abs().max().item<double>();
  std::cout << "TPP driver vs Engine, last block latents: max |diff| = " << max_abs << "\n";
  EXPECT_LE(max_abs, 1e-5);
  EXPECT_TRUE(Y4mFrames(Slurp(root_ + "/driver.y4m")) == Y4mFrames(Slurp(res->outputs.at(0))));
  EXPECT_EQ(Slurp(root_ + "/driver.wav"), Slurp(res->outputs.at(1)));
}

}  // namespace
}  // namespace liveavatar::cli
