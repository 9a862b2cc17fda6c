// Loading checkpoints the way `generate` does (pipeline::Engine::Load):
//   * a component mismatch is found from the files' headers alone, before any tensor data is read, and the error
//     names both files;
//   * a checkpoint at the real tensor sizes (make-tiny --dims real, one layer per model) loads with its rank-128
//     LoRA within the bytes that stay resident plus a fixed margin (`bench --load` measures the peak RSS);
//   * the plan refuses a run whose host memory exceeds --max_host_mem_gb and reports host figures in --json.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "cli_test_util.h"
#include "liveavatar/io/checkpoint_dir.h"
#include "liveavatar/io/pth.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/audio/wav2vec2.h"
#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/dit/weights.h"
#include "liveavatar/models/t5/encoder.h"
#include "liveavatar/models/vae/weights.h"
#include "liveavatar/pipeline/checkpoint_checks.h"
#include "liveavatar/pipeline/engine.h"
#include "make_tiny.h"

namespace liveavatar::cli {
namespace {

namespace fs = std::filesystem;
using testutil::Bin;
using testutil::Q;
using testutil::Shell;
using testutil::Slurp;

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

class LoadCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Status s = testutil::MakeTinySuiteRoot("la_load_test", 5, &root_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  static std::string root_;
};
std::string LoadCli::root_;

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

TEST_F(LoadCli, ComponentMismatchFailsFromHeadersNamingBothFiles) {
  // The same tiny checkpoint with a T5 whose dim (48) is not the DiT's text_dim.
  const std::string dir = root_ + "/mismatch";
  fs::copy(root_ + "/ckpt", dir, fs::copy_options::recursive);
  const std::string t5_path = (fs::path(dir) / io::kT5File).string();
  auto store = io::OpenTensorStore(t5_path);
  ASSERT_TRUE(store.ok());
  auto t5 = pipeline::InferT5ConfigFromWeights(**store);
  ASSERT_TRUE(t5.ok()) << t5.status().ToString();
  store = StatusOr<std::shared_ptr<io::TensorStore>>(Status::Internal("closed"));
  t5->dim = 48;
  t5->dim_attn = 48;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& s : models::t5::T5WeightSpecs(*t5)) tensors.emplace_back(s.key, at::zeros(s.shape, at::kBFloat16));
  ASSERT_TRUE(io::WritePth(t5_path, tensors).ok());

  pipeline::EngineOptions eo;
  eo.ckpt_dir = dir;
  const uint64_t read_before = io::TensorDataBytesRequested();
  const auto t0 = std::chrono::steady_clock::now();
  auto engine = pipeline::Engine::Load(eo);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(engine.ok());
  const std::string msg = engine.status().message();
  EXPECT_NE(msg.find(t5_path), std::string::npos) << msg;
  EXPECT_NE(msg.find((fs::path(dir) / io::kDitConfigFile).string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("T5 dim 48"), std::string::npos) << msg;
  EXPECT_NE(msg.find("nothing loaded"), std::string::npos) << msg;
  // Headers only: not one byte of tensor data was handed out by any store.
  EXPECT_EQ(io::TensorDataBytesRequested(), read_before);
  std::printf("[load] mismatch refused after %.3f s without reading tensor data\n", seconds);
  EXPECT_LT(seconds, 30.0);  // a bound for any machine; ~0.1 s here

  // The untouched checkpoint loads (and does read tensor data).
  eo.ckpt_dir = root_ + "/ckpt";
  auto ok = pipeline::Engine::Load(eo);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_GT(io::TensorDataBytesRequested(), read_before);
}

TEST_F(LoadCli, PlanRefusesAHostBudgetAndReportsHostFigures) {
  const std::string base = Q(Bin()) + " plan --log-level off --ckpt_dir " + Q(root_ + "/ckpt") +
                           " --device cpu --size 384*256 --json";
  const std::string out = root_ + "/plan.json";
  ASSERT_EQ(Shell(base + " --max_host_mem_gb 64 > " + Q(out)), 0) << Slurp(out);
  auto j = nlohmann::json::parse(Slurp(out));
  ASSERT_TRUE(j.contains("host")) << j.dump();
  const int64_t host_peak = j["host"]["peak_bytes"].get<int64_t>();
  EXPECT_TRUE(j["host"]["fits"].get<bool>());
  EXPECT_EQ(j["host"]["capacity_bytes"].get<int64_t>(), static_cast<int64_t>(64 * kGiB));
  // On the CPU the host holds the device plan: its peak is at least the device peak.
  EXPECT_GE(host_peak, j["peak_bytes"].get<int64_t>());
  EXPECT_GT(j["host"]["page_cache_bytes"].get<int64_t>(), 0);
  ASSERT_FALSE(j["roles"].empty());
  EXPECT_EQ(j["roles"][0]["host"]["peak_bytes"].get<int64_t>(), host_peak);  // one process

  // A budget below the prediction: refused (exit 1), naming the host budget.
  const double budget_gb = static_cast<double>(host_peak) / kGiB / 2;
  const std::string text = root_ + "/plan.txt";
  EXPECT_EQ(Shell(Q(Bin()) + " plan --log-level off --ckpt_dir " + Q(root_ + "/ckpt") +
                  " --device cpu --size 384*256 --max_host_mem_gb " + std::to_string(budget_gb) + " > " + Q(text)),
            1);
  const std::string t = Slurp(text);
  EXPECT_NE(t.find("does NOT fit"), std::string::npos) << t;
  EXPECT_NE(t.find("host budget"), std::string::npos) << t;
  EXPECT_NE(t.find("--max_host_mem_gb"), std::string::npos) << t;

  // Two processes on the host need more host memory than one.
  ASSERT_EQ(Shell(base + " --nproc_per_node 2 --max_host_mem_gb 64 > " + Q(out)), 0) << Slurp(out);
  j = nlohmann::json::parse(Slurp(out));
  EXPECT_GT(j["host"]["peak_bytes"].get<int64_t>(), host_peak);
  EXPECT_EQ(j["host"]["ranks_per_host"].get<int64_t>(), 2);
}

// Real tensor sizes (dim 5120 DiT block, umT5-XXL embedding, rank-128 LoRA), one layer per model: the streaming
// load's peak RSS stays within 1.10x the bytes that stay resident by design plus 1.5 GB.
TEST_F(LoadCli, RealDimsCheckpointLoadsWithinResidentBytes) {
  const std::string ckpt = root_ + "/real1";
  ASSERT_EQ(Shell(Q(Bin()) + " make-tiny --log-level warn --dims real --layers 1 --out " + Q(ckpt)), 0);
  const std::string out = root_ + "/bench_load.json";
  ASSERT_EQ(Shell(Q(Bin()) + " bench --load --log-level warn --json --ckpt_dir " + Q(ckpt) + " > " + Q(out)), 0)
      << Slurp(out);
  const auto j = nlohmann::json::parse(Slurp(out));
  // What stays resident by design on a CPU run: every model in fp32.
  const io::CheckpointDir dir = io::CheckpointDir::At(ckpt, "");
  int64_t resident = 0;
  for (const std::string& path : {dir.dit_weights, dir.t5_weights, dir.wav2vec2_weights, dir.vae_weights}) {
    auto store = io::OpenTensorStore(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    for (const auto& k : (*store)->Keys()) resident += Numel((*store)->Meta(k)->shape) * 4;
  }
  const int64_t peak = j["peak_rss_bytes"].get<int64_t>();
  const double bound = 1.10 * static_cast<double>(resident) + 1.5e9;
  std::printf("[load] real dims, 1 layer: resident %.3f GB, peak RSS %.3f GB, bound %.3f GB, %.1f s\n",
              resident / 1e9, peak / 1e9, bound / 1e9, j["load_seconds"].get<double>());
  EXPECT_LE(static_cast<double>(peak), bound);
  // And the weights really are resident (the load did not skip anything).
  EXPECT_GE(j["rss_anon_after_bytes"].get<int64_t>(), resident * 9 / 10);
  ASSERT_TRUE(j.contains("lora_merge"));
  EXPECT_GT(j["lora_merge"]["pairs"].get<int>(), 0);
  std::error_code ec;
  fs::remove_all(ckpt, ec);
}

}  // namespace
}  // namespace liveavatar::cli
