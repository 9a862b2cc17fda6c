// `liveavatar bench` (apps/liveavatar/cli_bench.cpp): flag parsing, and one fast end-to-end run of the real
// executable on the tiny config with --json whose fields must exist, be positive and agree with each other and
// with the FLOP counter.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_commands.h"
#include "cli_parse.h"
#include "liveavatar/runtime/flops.h"

namespace liveavatar::cli {
namespace {

std::string Bin() {
  const char* b = std::getenv("LIVEAVATAR_CLI_BINARY_OVERRIDE");
  return b != nullptr && *b ? b : LIVEAVATAR_CLI_BINARY;
}

// Runs `args` through the executable; returns {exit status, stdout}.
std::pair<int, std::string> RunCli(const std::string& args) {
  const std::string cmd = Bin() + " " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return {-1, ""};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = pclose(p);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : 128, out};
}

TEST(BenchCli, ParsesItsFlags) {
  auto p = ParseCommandLine(std::vector<std::string>{
      "bench", "--tiny", "--layers", "2", "--iters", "3", "--warmup", "0", "--dtype", "fp32", "--device", "cpu",
      "--no_vae", "--json", "--with_fp8", "--size", "384*256", "--shape", "128*64"});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->command, Command::kBench);
  EXPECT_TRUE(p->bench.tiny);
  EXPECT_EQ(p->bench.layers, 2);
  EXPECT_EQ(p->bench.iters, 3);
  EXPECT_EQ(p->bench.warmup, 0);
  EXPECT_EQ(p->bench.dtype, "fp32");
  EXPECT_EQ(p->bench.device, "cpu");
  EXPECT_FALSE(p->bench.vae);
  EXPECT_TRUE(p->bench.json);
  EXPECT_TRUE(p->bench.with_fp8);
  EXPECT_EQ(p->run.generate.size, "384*256");
  EXPECT_EQ(p->bench.shape, "128*64");
  auto d = ParseCommandLine(std::vector<std::string>{"bench"});
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->bench.model_config.empty());  // default: the 14B config (GPU sizes)
  EXPECT_FALSE(d->bench.tiny);
  EXPECT_EQ(d->bench.dtype, "bf16");
  EXPECT_TRUE(d->bench.vae);
  EXPECT_FALSE(d->bench.with_fp8);
}

// Bad values are refused before anything is built: InvalidArgument in-process, exit status 2 from the binary.
TEST(BenchCli, BadFlagsAreUsageErrors) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"bench", "--tiny", "--iters", "0"},
        {"bench", "--tiny", "--model_config", "configs/tiny.json"},
        {"bench", "--tiny", "--dtype", "fp16"},
        {"bench", "--tiny", "--device", "tpu"},
        {"bench", "--tiny", "--layers", "-1"},
        {"bench", "--tiny", "--shape", "100*64"},
        {"bench", "--tiny", "--shape", "128x128"}}) {
    auto p = ParseCommandLine(args);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    auto r = Bench(*p);
    ASSERT_FALSE(r.ok()) << args.back();
    EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument) << args.back() << ": " << r.status().ToString();
  }
  auto missing = ParseCommandLine(std::vector<std::string>{"bench", "--model_config", "/nonexistent/config.json"});
  ASSERT_TRUE(missing.ok());
  auto r = Bench(*missing);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("/nonexistent/config.json"), std::string::npos) << r.status().ToString();
  EXPECT_EQ(RunCli("bench --log-level off --tiny --iters 0").first, 2);
}

TEST(BenchCli, TinyJsonRunReportsConsistentPositiveNumbers) {
  const int iters = 3;
  // 128*128 keeps the VAE decode of 12 frames (the slow part on a CPU) to about a second.
  auto [rc, out] = RunCli("bench --log-level warn --threads 1 --tiny --json --dtype fp32 --device cpu --shape 128*128 "
                          "--with_fp8 --warmup 1 --iters " + std::to_string(iters));
  ASSERT_EQ(rc, 0) << out;
  nlohmann::json r;
  ASSERT_NO_THROW(r = nlohmann::json::parse(out)) << out;
  // 128*128 -> latent 16x16 -> 8x8 = 64 tokens per frame (tiny patch 1x2x2).
  EXPECT_EQ(r["latent_hw"][0].get<int64_t>(), 16);
  EXPECT_EQ(r["latent_hw"][1].get<int64_t>(), 16);
  const int64_t fs = r["frame_tokens"].get<int64_t>();
  EXPECT_EQ(fs, 64);
  EXPECT_EQ(r["block_queries"].get<int64_t>(), 3 * fs);
  EXPECT_EQ(r["sink_tokens"].get<int64_t>(), 5 * fs / 2);
  EXPECT_EQ(r["block_keys"].get<int64_t>(), 12 * fs + r["sink_tokens"].get<int64_t>());  // full ring + cond

  for (const char* k : {"dit_block", "sink_prefill", "vae_decode"}) {
    ASSERT_TRUE(r.contains(k)) << k;
    const auto& t = r[k];
    ASSERT_EQ(t["runs_ms"].size(), static_cast<size_t>(iters)) << k;
    EXPECT_GT(t["min_ms"].get<double>(), 0) << k;
    EXPECT_LE(t["min_ms"].get<double>(), t["median_ms"].get<double>()) << k;
    EXPECT_LE(t["median_ms"].get<double>(), t["max_ms"].get<double>()) << k;
  }
  const auto& b = r["dit_block"];
  // FLOPs: the counter's number for the tiny config at this geometry; TFLOP/s and fps follow from the median.
  runtime::DitFlopShape tiny;
  tiny.dim = r["dit"]["dim"].get<int64_t>();
  tiny.ffn_dim = r["dit"]["ffn_dim"].get<int64_t>();
  tiny.num_layers = r["dit"]["num_layers"].get<int64_t>();
  tiny.num_injected_layers = r["dit"]["num_audio_injectors"].get<int64_t>();
  tiny.text_len = 16;
  tiny.text_dim = 32;
  const double gflop = runtime::DitStreamCallFlops(tiny, 3, 16, 16, r["block_keys"].get<int64_t>()).total() / 1e9;
  EXPECT_NEAR(b["gflop"].get<double>(), gflop, 1e-9 * gflop);
  EXPECT_NEAR(b["gflop_linear"].get<double>() + b["gflop_attention"].get<double>() + b["gflop_conv"].get<double>(),
              b["gflop"].get<double>(), 1e-9 * gflop);
  const double med = b["median_ms"].get<double>();
  EXPECT_NEAR(b["tflops"].get<double>(), gflop / med, 1e-6 * gflop / med);
  EXPECT_NEAR(b["fps_per_stage"].get<double>(), 12000.0 / med, 1e-6 * 12000.0 / med);
  EXPECT_NEAR(b["ms_per_layer"].get<double>() * tiny.num_layers, med, 1e-9 * med);
  EXPECT_GT(r["sink_prefill"]["gflop"].get<double>(), 0);
  EXPECT_GT(r["sink_prefill"]["tflops"].get<double>(), 0);
  EXPECT_EQ(r["vae_decode"]["frames"].get<int64_t>(), 12);
  EXPECT_GT(r["vae_decode"]["fps_per_stage"].get<double>(), 0);
  // Peak memory covers at least the weights that were alive.
  EXPECT_GT(r["dit_weight_bytes"].get<int64_t>(), 0);
  EXPECT_GE(r["dit_peak_bytes"].get<int64_t>(), r["dit_weight_bytes"].get<int64_t>());
  EXPECT_GE(r["peak_device_bytes"].get<int64_t>(), r["dit_peak_bytes"].get<int64_t>());
  EXPECT_EQ(r["device"].get<std::string>(), "cpu");
  // --with_fp8: the same call with FP8 weights; 1-byte codes replace 4-byte fp32 weights.
  ASSERT_TRUE(r.contains("dit_block_fp8"));
  const auto& f = r["dit_block_fp8"];
  EXPECT_EQ(f["runs_ms"].size(), static_cast<size_t>(iters));
  EXPECT_GT(f["median_ms"].get<double>(), 0);
  EXPECT_GT(f["fp8_bytes"].get<int64_t>(), 0);
  EXPECT_EQ(f["dense_bytes_replaced"].get<int64_t>(), 4 * f["fp8_bytes"].get<int64_t>());  // fp32 model
  EXPECT_GT(f["max_layer_dense_bytes"].get<int64_t>(), 0);
}

}  // namespace
}  // namespace liveavatar::cli
