// `liveavatar doctor` end to end on the real binary (no generation): a healthy tiny checkpoint passes, a
// truncated DiT shard and a LoRA key that matches nothing FAIL naming the file / key, a blurred image and
// clipped / silent audio give the expected input lines, bad flags exit 2, --json is parseable, and (where Gloo
// is built in) --nproc_per_node 2 runs the all-reduce probe.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "liveavatar/dist/communicator.h"
#include "liveavatar/io/checkpoint_dir.h"
#include "liveavatar/io/image_reader.h"
#include "liveavatar/io/safetensors.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/testing/synthetic.h"
#include "make_tiny.h"

namespace liveavatar::cli {
namespace {

namespace fs = std::filesystem;

std::string MakeTempDir(const char* stem) {
  std::string tmpl = (fs::temp_directory_path() / (std::string(stem) + "_XXXXXX")).string();
  return mkdtemp(tmpl.data());
}

struct RunResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::vector<std::string> lines;
};

// Runs `liveavatar doctor ARGS` and captures stdout.
RunResult Doctor(const std::string& args) {
  const char* bin = std::getenv("LIVEAVATAR_BINARY");
  if (bin == nullptr) bin = LIVEAVATAR_CLI_BINARY;
  const std::string out_file = MakeTempDir("la_doctor_out") + "/stdout.txt";
  const std::string cmd = std::string("'") + bin + "' doctor --log-level off " + args + " > '" + out_file + "'";
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(out_file);
  std::stringstream ss;
  ss << in.rdbuf();
  r.out = ss.str();
  std::istringstream ls(r.out);
  std::string line;
  while (std::getline(ls, line)) r.lines.push_back(line);
  std::error_code ec;
  fs::remove_all(fs::path(out_file).parent_path(), ec);
  return r;
}

// The first line starting with `level` that contains every needle, or "".
std::string FindLine(const RunResult& r, const std::string& level, const std::vector<std::string>& needles) {
  for (const auto& l : r.lines) {
    if (l.rfind(level + "  ", 0) != 0) continue;
    bool all = true;
    for (const auto& n : needles) all = all && l.find(n) != std::string::npos;
    if (all) return l;
  }
  return "";
}

size_t CountLines(const RunResult& r, const std::string& level) {
  size_t n = 0;
  for (const auto& l : r.lines) n += l.rfind(level + "  ", 0) == 0 ? 1 : 0;
  return n;
}

std::string Q(const std::string& s) { return "'" + s + "'"; }

at::Tensor Sine(double seconds, double amplitude) {
  const int64_t n = static_cast<int64_t>(seconds * 16000);
  return (at::arange(n, at::kDouble) * (2 * M_PI * 220.0 / 16000)).sin().mul(amplitude).to(at::kFloat);
}

// A sharp test card (8 px checkerboard) and its heavy box blur, uint8 [h, w, 3].
at::Tensor Card(int64_t h, int64_t w, bool blurred) {
  auto y = at::arange(h).view({h, 1}), x = at::arange(w).view({1, w});
  at::Tensor f = ((y / 8 + x / 8) % 2).to(at::kFloat) * 200 + 20;
  if (blurred) {
    f = at::avg_pool2d(f.view({1, 1, h, w}), {31, 31}, {1, 1}, {15, 15}, false, false).view({h, w});
  }
  return f.round().clamp(0, 255).to(at::kByte).unsqueeze(2).expand({h, w, 3}).contiguous();
}

class DoctorBinary : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir("la_doctor"));
    MakeTinyArgs args;
    args.out = *dir_ + "/ckpt";
    args.seed = 3;
    status_ = new Status(WriteTinyCheckpoint(args));
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
    delete status_;
  }
  void SetUp() override { ASSERT_TRUE(status_->ok()) << status_->ToString(); }
  static std::string Ckpt() { return *dir_ + "/ckpt"; }
  static std::string Lora() { return Ckpt() + "/" + io::kTinyLoraFile; }
  // A copy of the tiny checkpoint the test may damage.
  static std::string CopyCkpt(const std::string& name) {
    const std::string to = *dir_ + "/" + name;
    fs::copy(Ckpt(), to, fs::copy_options::recursive);
    return to;
  }

  static std::string* dir_;
  static Status* status_;
};
std::string* DoctorBinary::dir_ = nullptr;
Status* DoctorBinary::status_ = nullptr;

TEST_F(DoctorBinary, HealthyCheckpointHasNoFailure) {
  const RunResult r = Doctor("--ckpt_dir " + Q(Ckpt()) + " --lora_path_dmd " + Q(Lora()));
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(CountLines(r, "FAIL"), 0u) << r.out;
  EXPECT_NE(FindLine(r, "PASS", {"checkpoint: DiT weights", "tensors match config.json"}), "") << r.out;
  EXPECT_NE(FindLine(r, "PASS", {"checkpoint: T5 weights", "tensors match"}), "") << r.out;
  EXPECT_NE(FindLine(r, "PASS", {"checkpoint: VAE weights", "tensors match"}), "") << r.out;
  EXPECT_NE(FindLine(r, "PASS", {"checkpoint: wav2vec2 weights", "tensors match"}), "") << r.out;
  EXPECT_NE(FindLine(r, "PASS", {"checkpoint: LoRA", "A/B pairs match DiT weights"}), "") << r.out;
  // Every section reports; no inputs were given.
  EXPECT_NE(FindLine(r, "SKIP", {"inputs: no --image given"}), "") << r.out;
  EXPECT_NE(r.out.find("  memory: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  distribution: "), std::string::npos) << r.out;
  if (!dist::BackendCompiled(dist::BackendKind::kNccl)) {
    const std::string nccl = FindLine(r, "WARN", {"distribution: NCCL backend not compiled in", "-> fix: "});
    EXPECT_NE(nccl, "") << r.out;
  }
  EXPECT_NE(r.out.find("doctor: "), std::string::npos);
  // The default LoRA resolution (no --lora_path_dmd) finds <ckpt>/lora/liveavatar.safetensors like the engine.
  const RunResult d = Doctor("--ckpt_dir " + Q(Ckpt()));
  EXPECT_EQ(d.exit_code, 0) << d.out;
  EXPECT_NE(FindLine(d, "PASS", {"checkpoint: LoRA", Lora()}), "") << d.out;
}

TEST_F(DoctorBinary, TruncatedShardFailsNamingTheFile) {
  const std::string dir = CopyCkpt("truncated");
  auto index = nlohmann::json::parse(std::ifstream(dir + "/" + io::kDitIndexFile));
  const std::string shard = index["weight_map"].begin().value().get<std::string>();
  const std::string shard_path = dir + "/" + shard;
  fs::resize_file(shard_path, fs::file_size(shard_path) / 2);
  const RunResult r = Doctor("--ckpt_dir " + Q(dir) + " --no_load_lora");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  const std::string line = FindLine(r, "FAIL", {"checkpoint: DiT weights", shard});
  EXPECT_NE(line, "") << r.out;
  EXPECT_NE(line.find("-> fix: re-download"), std::string::npos) << line;
  // The shapes could not be checked, the other pieces still pass.
  EXPECT_NE(FindLine(r, "SKIP", {"DiT shapes"}), "") << r.out;
  EXPECT_NE(FindLine(r, "PASS", {"checkpoint: VAE weights", "tensors match"}), "") << r.out;
}

TEST_F(DoctorBinary, MissingFileAndShapeMismatchFail) {
  const std::string dir = CopyCkpt("mismatch");
  fs::remove(dir + "/" + io::kVaeFile);
  // A config.json that disagrees with the weights (another dim): every DiT shape check fails against it.
  auto cfg = nlohmann::json::parse(std::ifstream(dir + "/" + io::kDitConfigFile));
  cfg["num_layers"] = cfg["num_layers"].get<int>() + 1;
  std::ofstream(dir + "/" + io::kDitConfigFile) << cfg.dump(2);
  const RunResult r = Doctor("--ckpt_dir " + Q(dir) + " --no_load_lora");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(FindLine(r, "FAIL", {"checkpoint: VAE weights", io::kVaeFile, "missing", "-> fix: download"}), "")
      << r.out;
  EXPECT_NE(FindLine(r, "FAIL", {"checkpoint: DiT weights", "does not match config.json", "missing"}), "") << r.out;
}

TEST_F(DoctorBinary, LoraKeyMatchingNothingFailsNamingTheKey) {
  auto store = io::OpenTensorStore(Lora());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& k : (*store)->Keys()) tensors.emplace_back(k, (*store)->Get(k).value().clone());
  const std::string bad_key = "blocks.0.self_attn.nonexistent.lora_A.default.weight";
  tensors.emplace_back(bad_key, tensors.front().second.clone());
  // Next to the good LoRA, so the same training config applies.
  const std::string extra = Ckpt() + "/lora/extra_key.safetensors";
  ASSERT_TRUE(io::WriteSafetensors(extra, tensors).ok());
  const RunResult r = Doctor("--ckpt_dir " + Q(Ckpt()) + " --lora_path_dmd " + Q(extra));
  fs::remove(extra);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  const std::string line = FindLine(r, "FAIL", {"checkpoint: LoRA", "match no DiT weight", bad_key});
  EXPECT_NE(line, "") << r.out;
  EXPECT_NE(line.find("-> fix: "), std::string::npos);
  // --no_load_lora skips the LoRA entirely.
  const RunResult skip = Doctor("--ckpt_dir " + Q(Ckpt()) + " --lora_path_dmd " + Q(extra) + " --no_load_lora");
  EXPECT_EQ(skip.exit_code, 0) << skip.out;
  // A missing LoRA file fails with its path.
  const RunResult missing = Doctor("--ckpt_dir " + Q(Ckpt()) + " --lora_path_dmd /nonexistent/l.safetensors");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(FindLine(missing, "FAIL", {"checkpoint: LoRA", "/nonexistent/l.safetensors", "missing"}), "")
      << missing.out;
}

TEST_F(DoctorBinary, BlurredImageAndBadAudio) {
  const std::string sharp = *dir_ + "/sharp.ppm", blurred = *dir_ + "/blurred.ppm";
  ASSERT_TRUE(io::WritePpm(sharp, Card(384, 704, false)).ok());
  ASSERT_TRUE(io::WritePpm(blurred, Card(384, 704, true)).ok());
  const std::string clean = *dir_ + "/clean.wav", clipped = *dir_ + "/clipped.wav", silent = *dir_ + "/silent.wav";
  testing::WriteWav16(clean, Sine(2.0, 0.3));
  testing::WriteWav16(clipped, Sine(2.0, 4.0).clamp(-1, 1));
  testing::WriteWav16(silent, at::zeros({32000}));
  const std::string base = "--ckpt_dir " + Q(Ckpt()) + " --size 704*384";

  const RunResult ok = Doctor(base + " --image " + Q(sharp) + " --audio " + Q(clean));
  EXPECT_EQ(ok.exit_code, 0) << ok.out;
  EXPECT_NE(FindLine(ok, "PASS", {"inputs: image", "sharpness"}), "") << ok.out;
  EXPECT_NE(FindLine(ok, "PASS", {"inputs: audio", "clipped"}), "") << ok.out;

  const RunResult bad = Doctor(base + " --image " + Q(blurred) + " --audio " + Q(clipped));
  EXPECT_EQ(bad.exit_code, 1) << bad.out;
  EXPECT_NE(FindLine(bad, "FAIL", {"inputs: image", "blurred.ppm", "sharpness", "-> fix: "}), "") << bad.out;
  EXPECT_NE(FindLine(bad, "FAIL", {"inputs: audio", "clipped.wav", "heavily clipped", "-> fix: "}), "") << bad.out;

  const RunResult quiet = Doctor(base + " --audio " + Q(silent));
  EXPECT_EQ(quiet.exit_code, 1) << quiet.out;
  EXPECT_NE(FindLine(quiet, "FAIL", {"inputs: audio", "silent.wav", "silent", "-> fix: "}), "") << quiet.out;
  EXPECT_NE(FindLine(quiet, "SKIP", {"inputs: no --image given"}), "") << quiet.out;
}

TEST_F(DoctorBinary, JsonAndBadFlags) {
  const RunResult r = Doctor("--ckpt_dir " + Q(Ckpt()) + " --json");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_TRUE(j["summary"]["ok"].get<bool>());
  EXPECT_EQ(j["summary"]["fail"].get<int>(), 0);
  ASSERT_TRUE(j["checks"].is_array());
  EXPECT_GT(j["checks"].size(), 10u);
  EXPECT_TRUE(j["checks"][0].contains("level") && j["checks"][0].contains("fix"));
  // Bad flags are usage errors (2), like every subcommand.
  EXPECT_EQ(Doctor("--size 1*1").exit_code, 2);
  EXPECT_EQ(Doctor("--no_such_flag").exit_code, 2);
  // A missing directory is one FAIL.
  const RunResult missing = Doctor("--ckpt_dir /nonexistent/ckpt");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(FindLine(missing, "FAIL", {"checkpoint: checkpoint directory", "/nonexistent/ckpt"}), "") << missing.out;
}

TEST_F(DoctorBinary, AllReduceProbeAcrossLocalRanks) {
  if (!dist::BackendCompiled(dist::BackendKind::kGloo)) GTEST_SKIP() << "Gloo not built in";
  const RunResult r = Doctor("--ckpt_dir " + Q(Ckpt()) + " --nproc_per_node 2 --num_gpus_dit 1");
  EXPECT_NE(FindLine(r, "PASS", {"distribution: gloo init across 2 ranks"}), "") << r.out;
  EXPECT_NE(FindLine(r, "PASS", {"distribution: gloo all-reduce", "bus bandwidth", "GB/s"}), "") << r.out;
}

}  // namespace
}  // namespace liveavatar::cli
