// FSDP-style sharding (dist/flat_param.h, dist/shard_manager.h).
//
// In-process: flat layouts, per-slice reads with the LoRA merged per slice against models::MergeLora on the full
// weight, the slices of every rank reassembling the unit exactly, the shard manager on a world of one against
// the unsharded model, accounting and error messages.
// Multi-process (Gloo on 127.0.0.1, 2 and 4 ranks): the test binary relaunches itself through dist::LaunchLocal
// with LA_SHARD_TEST_SCENARIO set; each worker builds the DiT through ShardManager from the DiT fixture's
// checkpoint, runs every discovered sink/stream case and compares with the unsharded model in the same process
// (<= 1e-6) and with the fixture outputs (<= 1e-4), then checks the per-rank memory and disk-read accounting.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/dist/communicator.h"
#include "liveavatar/dist/flat_param.h"
#include "liveavatar/dist/launcher.h"
#include "liveavatar/dist/shard_manager.h"
#include "liveavatar/dist/world.h"
#include "liveavatar/models/attention.h"
#include "liveavatar/models/dit/model.h"
#include "liveavatar/models/dit/weights.h"
#include "liveavatar/models/lora.h"
#include "liveavatar/runtime/kv_cache.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar::dist {
namespace {

namespace fs = std::filesystem;
using models::WeightMap;
using models::dit::CausalWanS2V;
using models::dit::DitConfig;
using testing::GoldenCase;
using testing::GoldenDir;
using testing::RelL2;

constexpr double kShardTol = 1e-6;    // sharded vs unsharded, same process
constexpr double kFixtureTol = 1e-4;  // vs the fixture outputs (golden README §0)

// ---------------------------------------------------------------------------------------------------------------
// Shared helpers.

DitConfig FixtureConfig() {
  auto c = models::dit::LoadDitConfig((fs::path(GoldenDir("dit")) / "config.json").string());
  if (!c.ok()) throw StatusError(c.status());
  return *c;
}

std::shared_ptr<io::TensorStore> FixtureStore() {
  fs::path p = fs::path(GoldenDir("dit")) / "diffusion_pytorch_model.safetensors";
  if (!fs::exists(p)) p = fs::path(GoldenDir("dit")) / "diffusion_pytorch_model.safetensors.index.json";
  auto s = io::OpenTensorStore(p.string());
  if (!s.ok()) throw StatusError(s.status());
  return *s;
}

models::dit::DitCheckpoint FixtureCheckpoint(const std::string& lora_path) {
  auto ckpt = models::dit::LoadDitCheckpoint(GoldenDir("dit"));
  if (!ckpt.ok()) throw StatusError(ckpt.status());
  if (!lora_path.empty()) {
    auto merged = models::MergeLoraFile(ckpt->weights, lora_path, std::nullopt, std::nullopt);
    if (!merged.ok()) throw StatusError(merged.status());
  }
  return std::move(ckpt).value();
}

CausalWanS2V UnshardedModel(const std::string& lora_path, c10::ScalarType dtype) {
  auto ckpt = FixtureCheckpoint(lora_path);
  auto m = CausalWanS2V::Create(ckpt.config, std::move(ckpt.weights), dtype, c10::Device(c10::kCPU));
  if (!m.ok()) throw StatusError(m.status());
  return std::move(m).value();
}

std::string CaseLoraPath(const GoldenCase& c) {
  return c.HasMeta("lora") ? (fs::path(GoldenDir("dit")) / c.Meta("lora")).string() : std::string();
}

int64_t SumBytes(const io::TensorStore& store) {
  int64_t n = 0;
  for (const auto& k : store.Keys()) n += static_cast<int64_t>(store.Meta(k).value().nbytes());
  return n;
}

// Whether every stored tensor is F32 (then stored bytes == bytes in an fp32 model).
bool AllStoredFp32(const io::TensorStore& store) {
  for (const auto& k : store.Keys()) {
    if (store.Meta(k).value().dtype != io::DType::kF32) return false;
  }
  return true;
}

// Runs one sink/stream case (inputs from the fixture, as tests/models/dit/dit_golden_test.cpp does) and returns
// the model's value for every out.* tensor of the case.
std::map<std::string, at::Tensor> RunCase(const CausalWanS2V& model, const GoldenCase& c, c10::ScalarType dtype) {
  std::map<std::string, at::Tensor> out;
  const int64_t layers = model.config().num_layers;
  const int64_t fs = c.MetaInt("frame_seqlen");
  if (c.kind() == "sink") {
    const auto ref = c.Get("in.ref_latents");
    const int64_t ring = runtime::LatentFramesPerClip(48, models::dit::kAudioPrefixFrames, 19) * fs;
    auto g = model.CacheGeometry(ref.size(3), ref.size(4), ring / fs, c.MetaInt("cond_capacity"));
    runtime::DitStepCache cache(g, at::TensorOptions().dtype(dtype));
    model.SinkPrefill({ref, c.Get("in.motion_latents"), c.Get("in.context")}, cache);
    for (int64_t i = 0; i < layers; ++i) {
      const std::string p = "out.kv." + std::to_string(i) + ".";
      out[p + "cond_k"] = cache.layer(i).cond_k.to(at::kFloat);
      out[p + "cond_v"] = cache.layer(i).cond_v.to(at::kFloat);
      out[p + "cond_end"] = at::full({1}, cache.layer(i).cond_end, at::kLong);
    }
    return out;
  }
  const auto x = c.Get("in.x");
  const auto k0 = c.Get("in.kv.0.k");
  auto g = model.CacheGeometry(x.size(2), x.size(3), k0.size(1) / fs, c.Get("in.kv.0.cond_k").size(1));
  runtime::DitStepCache cache(g, at::TensorOptions().dtype(dtype));
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = "in.kv." + std::to_string(i) + ".";
    auto& l = cache.layer(i);
    l.k.copy_(c.Get(p + "k"));
    l.v.copy_(c.Get(p + "v"));
    l.cond_k.copy_(c.Get(p + "cond_k"));
    l.cond_v.copy_(c.Get(p + "cond_v"));
    l.cond_end = c.Get(p + "cond_end").item<int64_t>();
  }
  models::dit::StreamInputs in;
  in.x = x;
  in.timestep = c.Get("in.t");
  in.context = c.Get("in.context");
  in.cond_states = c.Get("in.cond_states");
  in.audio_input = c.Get("in.audio_input");
  in.current_start = c.MetaInt("current_start");
  in.relative_dist = c.MetaInt("relative_dist");
  const auto plan = runtime::PlanRing(in.current_start, x.size(1) * fs, k0.size(1));
  out["out.x0_flow"] = model.StreamBlock(in, cache);
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = "out.kv." + std::to_string(i) + ".";
    const int64_t n = c.Get(p + "k_written").size(1);
    out[p + "k_written"] = cache.layer(i).k.narrow(1, plan.write_pos, n).to(at::kFloat);
    out[p + "v_written"] = cache.layer(i).v.narrow(1, plan.write_pos, n).to(at::kFloat);
  }
  return out;
}

// Compares `got` (sharded) with `ref` (unsharded) and the fixture; returns an empty string or the failures.
std::string CompareCase(const GoldenCase& c, const std::map<std::string, at::Tensor>& got,
                        const std::map<std::string, at::Tensor>& ref, bool check_fixture, double* worst_shard,
                        double* worst_fixture) {
  std::string errors;
  for (const auto& key : c.Keys("out.")) {
    auto it = got.find(key);
    if (it == got.end()) {
      errors += " " + key + " (not produced)";
      continue;
    }
    const at::Tensor expect = c.Get(key);
    if (!c10::isFloatingType(expect.scalar_type())) {
      if (!it->second.equal(expect.to(it->second.scalar_type()))) errors += " " + key + " (integer mismatch)";
      continue;
    }
    const double e_shard = RelL2(it->second, ref.at(key));
    *worst_shard = std::max(*worst_shard, e_shard);
    if (e_shard > kShardTol) errors += " " + key + " vs unsharded " + std::to_string(e_shard);
    if (check_fixture) {
      const double e_fix = RelL2(it->second.reshape(expect.sizes()), expect);
      *worst_fixture = std::max(*worst_fixture, e_fix);
      if (e_fix > kFixtureTol) errors += " " + key + " vs fixture " + std::to_string(e_fix);
    }
  }
  return errors;
}

// A random LoRA (PEFT layout, rank r) over every 2-D weight of `specs` that the default targets adapt.
std::shared_ptr<io::TensorStore> RandomLora(const std::vector<models::WeightSpec>& specs, int64_t r) {
  std::map<std::string, at::Tensor> t;
  at::manual_seed(7);
  const auto targets = models::DefaultLoraTargets();
  for (const auto& s : specs) {
    const std::string suffix = ".weight";
    if (s.shape.size() != 2 || s.key.size() <= suffix.size()) continue;
    const std::string module = s.key.substr(0, s.key.size() - suffix.size());
    bool target = false;
    for (const auto& tg : targets) {
      const std::string dotted = "." + tg;
      target = target || module == tg ||
               (module.size() > dotted.size() &&
                module.compare(module.size() - dotted.size(), dotted.size(), dotted) == 0);
    }
    if (!target) continue;
    t["base_model.model." + module + ".lora_A.default.weight"] = at::randn({r, s.shape[1]}) * 0.1;
    t["base_model.model." + module + ".lora_B.default.weight"] = at::randn({s.shape[0], r}) * 0.1;
  }
  return io::MakeMemoryStore(std::move(t), "random_lora");
}

// ---------------------------------------------------------------------------------------------------------------
// Worker side (multi-process scenarios).

#define SHARD_CHECK(cond, what)                                                                              \
  do {                                                                                                       \
    if (!(cond)) {                                                                                           \
      std::fprintf(stderr, "check failed on rank %d: %s (%s:%d)\n", rank, std::string(what).c_str(), __FILE__, \
                   __LINE__);                                                                                \
      return 1;                                                                                              \
    }                                                                                                        \
  } while (0)

StatusOr<CommunicatorPtr> JoinGlooWorld(Milliseconds timeout) {
  LA_ASSIGN_OR_RETURN(WorldInfo world, DetectWorld());
  CommOptions options;
  options.backend = BackendKind::kGloo;
  options.timeout = timeout;
  options.rendezvous_timeout = std::chrono::seconds(60);  // a loaded machine may start ranks seconds apart
  return InitCommunicator(world, options);
}

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

// Every sink/stream case of the DiT fixture through ShardManager on this rank.
int RunFixtureCases() {
  int rank = -1;
  auto comm = JoinGlooWorld(std::chrono::seconds(60));
  SHARD_CHECK(comm.ok(), "join: " + comm.status().ToString());
  rank = (*comm)->Rank();
  const int size = (*comm)->Size();
  ShardOptions options;
  options.prefetch = EnvInt("LA_SHARD_TEST_PREFETCH", 1);
  options.shard_root = EnvInt("LA_SHARD_TEST_SHARD_ROOT", 0) != 0;
  const bool with_bf16 = EnvInt("LA_SHARD_TEST_BF16", 0) != 0;
  const DitConfig config = FixtureConfig();
  const auto store = FixtureStore();
  const int64_t stored_total = SumBytes(*store);
  const auto cases = testing::DiscoverCases("dit", {"sink", "stream"});
  SHARD_CHECK(!cases.empty(), "no sink/stream cases in " + GoldenDir("dit"));

  std::vector<c10::ScalarType> dtypes = {at::kFloat};
  if (with_bf16) dtypes.push_back(at::kBFloat16);
  for (c10::ScalarType dtype : dtypes) {
    options.dtype = dtype;
    std::map<std::string, std::unique_ptr<ShardManager>> managers;  // by LoRA path
    std::map<std::string, std::unique_ptr<CausalWanS2V>> unsharded;
    double worst_shard = 0, worst_fixture = 0;
    for (const auto& path : cases) {
      GoldenCase c(path);
      const std::string lora = CaseLoraPath(c);
      if (!managers.count(lora)) {
        ShardOptions o = options;
        o.lora_path = lora;
        auto m = ShardManager::Create(config, *store, *comm, o);
        SHARD_CHECK(m.ok(), "ShardManager::Create: " + m.status().ToString());
        managers[lora] = std::move(m).value();
        unsharded[lora] = std::make_unique<CausalWanS2V>(UnshardedModel(lora, dtype));
      }
      ShardManager& m = *managers[lora];
      const auto got = RunCase(m.model(), c, dtype);
      const auto ref = RunCase(*unsharded[lora], c, dtype);
      const std::string errors =
          CompareCase(c, got, ref, /*check_fixture=*/dtype == at::kFloat, &worst_shard, &worst_fixture);
      SHARD_CHECK(errors.empty(), c.name() + " (" + c10::toString(dtype) + "):" + errors);
      // Nothing of any block stays installed or pending between calls.
      for (const auto& kv : m.model().weights()) {
        SHARD_CHECK(kv.first.compare(0, 7, "blocks.") != 0, "block weight left installed: " + kv.first);
      }
      const ShardAccounting a = m.accounting();
      SHARD_CHECK(a.unshard_in_use_bytes == 0, "unshard buffers still in use after " + c.name());
    }
    for (const auto& [lora, m] : managers) {
      const ShardAccounting a = m->accounting();
      const int64_t L = config.num_layers;
      const int64_t expect_buffers = std::min<int64_t>(options.prefetch + 1, L);
      const int64_t share = a.total_param_bytes / size;
      // Resident parameters: this rank's slices + the root unit, within total/N + one block + root.
      SHARD_CHECK(a.resident_shard_bytes + a.root_bytes <= share + a.block_bytes + a.root_bytes,
                  "resident " + std::to_string(a.resident_shard_bytes) + " > share " + std::to_string(share) +
                      " + block " + std::to_string(a.block_bytes));
      SHARD_CHECK(a.resident_shard_bytes < a.total_param_bytes - a.root_bytes || size == 1,
                  "a rank holds every block");
      // Unshard buffers: never more than prefetch + 1 blocks, and exactly that many were needed.
      SHARD_CHECK(a.peak_unshard_in_use_bytes <= (options.prefetch + 1) * a.block_bytes,
                  "peak unshard bytes " + std::to_string(a.peak_unshard_in_use_bytes));
      SHARD_CHECK(m->peak_buffers_in_use() == expect_buffers,
                  "peak buffers in use " + std::to_string(m->peak_buffers_in_use()));
      SHARD_CHECK(a.unshard_buffer_bytes == expect_buffers * a.block_bytes, "pool size");
      // Disk: this rank's share (plus the whole root unit when it is replicated). The fixture stores fp32.
      int64_t root_stored = 0;
      for (const auto& p : m->root_layout().params) root_stored += static_cast<int64_t>(store->Meta(p.key)->nbytes());
      const int64_t expect_read_max = options.shard_root ? a.resident_shard_bytes + m->root_layout().shard_bytes
                                                         : a.resident_shard_bytes + root_stored;
      SHARD_CHECK(a.bytes_read <= expect_read_max || dtype != at::kFloat || !AllStoredFp32(*store),
                  "bytes read " + std::to_string(a.bytes_read) + " > " + std::to_string(expect_read_max));
      at::Tensor reads = at::full({1}, a.bytes_read, at::kLong);
      Status s = (*comm)->AllReduceSum(reads)->Wait();
      SHARD_CHECK(s.ok(), s.ToString());
      const int64_t sum_reads = reads.item<int64_t>();
      const int64_t expect_sum = options.shard_root ? stored_total : stored_total + (size - 1) * root_stored;
      SHARD_CHECK(sum_reads == expect_sum,
                  "sum of bytes read " + std::to_string(sum_reads) + " != " + std::to_string(expect_sum));
      const ShardAccounting plan = ShardManager::Plan(config, m->options(), size);
      SHARD_CHECK(plan.resident_shard_bytes == a.resident_shard_bytes && plan.root_bytes == a.root_bytes &&
                      plan.block_bytes == a.block_bytes && plan.total_param_bytes == a.total_param_bytes &&
                      plan.unshard_buffer_bytes == a.unshard_buffer_bytes,
                  "Plan() disagrees with Create()");
      std::fprintf(stderr,
                   "rank %d/%d %s lora=%d prefetch=%d shard_root=%d: total %lld B, resident shards %lld B "
                   "(share %lld B), root %lld B, block %lld B, peak unshard in use %lld B (%d buffers), bytes read "
                   "%lld B (%.3f of total/N + root%s), gathers %lld\n",
                   rank, size, c10::toString(dtype), lora.empty() ? 0 : 1, options.prefetch, options.shard_root ? 1 : 0,
                   static_cast<long long>(a.total_param_bytes), static_cast<long long>(a.resident_shard_bytes),
                   static_cast<long long>(share), static_cast<long long>(a.root_bytes),
                   static_cast<long long>(a.block_bytes), static_cast<long long>(a.peak_unshard_in_use_bytes),
                   m->peak_buffers_in_use(), static_cast<long long>(a.bytes_read),
                   static_cast<double>(a.bytes_read) /
                       static_cast<double>(options.shard_root ? stored_total / size
                                                              : (stored_total - root_stored) / size + root_stored),
                   options.shard_root ? " (root sharded)" : "", static_cast<long long>(a.gathers));
    }
    char fixture[64] = "(checked in fp32 only)";
    if (dtype == at::kFloat) std::snprintf(fixture, sizeof(fixture), "%.3g", worst_fixture);
    std::fprintf(stderr, "rank %d/%d %s: %zu cases, worst rel L2 vs unsharded %.3g, vs fixture %s\n", rank, size,
                 c10::toString(dtype), cases.size(), worst_shard, fixture);
  }
  Status s = (*comm)->Barrier()->Wait();
  SHARD_CHECK(s.ok(), s.ToString());
  return 0;
}

// Rank 1 builds its shards but never runs the model: rank 0's first block all-gather must time out with an
// error (thrown from the model call), not hang.
int RunNeverJoined() {
  int rank = -1;
  auto comm = JoinGlooWorld(std::chrono::milliseconds(1500));
  SHARD_CHECK(comm.ok(), "join: " + comm.status().ToString());
  rank = (*comm)->Rank();
  const DitConfig config = FixtureConfig();
  auto m = ShardManager::Open(GoldenDir("dit"), *comm, ShardOptions{});
  SHARD_CHECK(m.ok(), m.status().ToString());
  CollectiveOptions patient;  // only the model's collectives use the short default timeout
  patient.timeout = std::chrono::seconds(60);
  Status s = (*comm)->Barrier(patient)->Wait();
  SHARD_CHECK(s.ok(), s.ToString());
  if (rank != 0) {
    std::this_thread::sleep_for(std::chrono::seconds(4));
    return 0;
  }
  const auto& c = config;
  const int64_t h = 8, w = 8;
  runtime::DitStepCache cache((*m)->model().CacheGeometry(h, w, 12), at::TensorOptions().dtype(at::kFloat));
  models::dit::StreamInputs in;
  in.x = at::randn({c.in_dim, 3, h, w});
  in.timestep = at::full({1, 3}, 500.0);
  in.context = at::randn({5, c.text_dim});
  in.audio_input = at::randn({1, 25, c.audio_dim, 12});
  in.relative_dist = 10;
  const auto start = std::chrono::steady_clock::now();
  Status got;
  try {
    (*m)->model().StreamBlock(in, cache);
  } catch (const StatusError& e) {
    got = e.status();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "rank 0 got (%.2f s): %s\n", seconds, got.ToString().c_str());
  SHARD_CHECK(got.code() == Status::Code::kDeadlineExceeded, "expected DeadlineExceeded: " + got.ToString());
  SHARD_CHECK(got.message().find("FSDP all-gather of block 0") != std::string::npos, "message names the block");
  SHARD_CHECK(got.message().find("rank 1") != std::string::npos, "message names the missing rank");
  SHARD_CHECK(seconds < 10.0, "timeout honoured");
  SHARD_CHECK((*m)->accounting().unshard_in_use_bytes == 0, "buffers released after the failure");
  return 0;
}

int RunShardScenario(const std::string& scenario) {
  alarm(120);  // a hung worker dies (and the launcher reports it) instead of hanging the test
  int rank = -1;
  if (scenario == "fixture_cases") return RunFixtureCases();
  if (scenario == "never_joined") return RunNeverJoined();
  SHARD_CHECK(false, "unknown scenario " + scenario);
  return 1;
}

struct ShardWorkerHook {
  ShardWorkerHook() {
    const char* scenario = std::getenv("LA_SHARD_TEST_SCENARIO");
    if (scenario == nullptr || *scenario == '\0') return;
    int rc = 1;
    try {
      rc = RunShardScenario(scenario);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "worker exception: %s\n", e.what());
    }
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(rc);
  }
};
ShardWorkerHook shard_worker_hook;

// ---------------------------------------------------------------------------------------------------------------
// Test side: in-process tests.

TEST(FlatLayoutTest, ParamsAlignedSlicesEqualAndIslandsKeepFp32) {
  const DitConfig config = FixtureConfig();
  std::vector<models::WeightSpec> block;
  for (const auto& s : models::dit::DitWeightSpecs(config)) {
    if (s.key.compare(0, 9, "blocks.1.") == 0) block.push_back(s);
  }
  ASSERT_FALSE(block.empty());
  for (int n = 1; n <= 5; ++n) {
    const FlatLayout l =
        MakeFlatLayout(block, [](const std::string& k) { return CausalWanS2V::WeightDtype(k, at::kBFloat16); }, n);
    ASSERT_EQ(l.params.size(), block.size());
    EXPECT_EQ(l.group_size, n);
    EXPECT_EQ(l.shard_bytes % kFlatParamAlignment, 0);
    EXPECT_EQ(l.padded_bytes, l.shard_bytes * n);
    EXPECT_GE(l.padded_bytes, l.used_bytes);
    EXPECT_LT(l.padded_bytes - l.used_bytes, n * kFlatParamAlignment + kFlatParamAlignment);
    int64_t end = 0, sum = 0;
    for (const auto& p : l.params) {
      EXPECT_EQ(p.offset % kFlatParamAlignment, 0) << p.key;
      EXPECT_GE(p.offset, end) << p.key;
      EXPECT_LT(p.offset - end, kFlatParamAlignment) << p.key;
      end = p.offset + p.nbytes;
      sum += p.nbytes;
      const bool island = p.key.find(".modulation") != std::string::npos || p.key.find("norm3.") != std::string::npos;
      EXPECT_EQ(p.dtype, island ? at::kFloat : at::kBFloat16) << p.key;
    }
    EXPECT_EQ(end, l.used_bytes);
    EXPECT_EQ(sum, l.param_bytes);
  }
}

TEST(FlatParamTest, SliceLoraMergeMatchesMergeLoraOnTheFullWeight) {
  const DitConfig config = FixtureConfig();
  const auto specs = models::dit::DitWeightSpecs(config);
  const auto store = FixtureStore();
  const auto lora_store = RandomLora(specs, 3);
  auto lora = ResolveSliceLora(lora_store, specs, /*alpha=*/1.5, /*rank=*/3, models::DefaultLoraTargets());
  ASSERT_TRUE(lora.ok()) << lora.status().ToString();
  EXPECT_DOUBLE_EQ(lora->scale, 0.5);
  EXPECT_EQ(static_cast<int64_t>(lora->pairs.size() * 2), static_cast<int64_t>(lora_store->Keys().size()));

  WeightMap full = FixtureCheckpoint("").weights;
  auto merged = models::MergeLora(full, *lora_store, 1.5, 3);
  ASSERT_TRUE(merged.ok()) << merged.status().ToString();
  ASSERT_EQ(merged.value(), static_cast<int>(lora->pairs.size()));

  at::manual_seed(3);
  int checked = 0;
  for (const auto& [key, pair] : lora->pairs) {
    const auto& w = full.at(key);
    for (c10::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      FlatParam p;
      p.key = key;
      p.shape = w.sizes().vec();
      p.dtype = dtype;
      p.numel = w.numel();
      p.nbytes = p.numel * static_cast<int64_t>(c10::elementSize(dtype));
      const int64_t cols = w.size(1);
      // Whole tensor, partial first/last rows, one element, a row-aligned block.
      std::vector<std::pair<int64_t, int64_t>> ranges = {{0, w.numel()}, {cols / 2, w.numel() - cols / 3},
                                                         {cols + 1, cols + 2}, {2 * cols, 5 * cols}};
      const int64_t b = at::randint(0, w.numel() - 1, {1}).item<int64_t>();
      ranges.push_back({b, b + at::randint(1, w.numel() - b + 1, {1}).item<int64_t>()});
      for (const auto& [b0, b1] : ranges) {
        int64_t read = 0, lora_read = 0;
        auto got = ConvertRange(*store, p, b0, b1, &*lora, &read, &lora_read);
        ASSERT_TRUE(got.ok()) << got.status().ToString();
        EXPECT_EQ(read, (b1 - b0) * static_cast<int64_t>(io::DTypeSize(store->Meta(key)->dtype))) << key;
        const int64_t rows = (b1 + cols - 1) / cols - b0 / cols;
        EXPECT_EQ(lora_read, (3 * cols + rows * 3) * 4) << key;
        const at::Tensor expect = w.reshape({-1}).narrow(0, b0, b1 - b0).to(dtype);
        ASSERT_EQ(got->scalar_type(), dtype);
        if (dtype == at::kFloat) {
          EXPECT_LE(RelL2(*got, expect), kShardTol) << key << " [" << b0 << ", " << b1 << ")";
          EXPECT_LE((*got - expect).abs().max().item<double>(), 1e-6) << key;
        } else {
          // Same fp32 value rounded once; allow a last-bit tie on fp32 summation-order differences.
          EXPECT_LE((got->to(at::kFloat) - expect.to(at::kFloat)).abs().max().item<double>(),
                    expect.to(at::kFloat).abs().max().item<double>() * 1e-2)
              << key;
          EXPECT_GE(got->eq(expect).to(at::kFloat).mean().item<double>(), 0.999) << key;
        }
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 0);
  std::printf("[shard] per-slice LoRA merge checked on %d ranges of %zu weights\n", checked, lora->pairs.size());
}

TEST(FlatParamTest, SlicesOfEveryRankReassembleTheUnitAndReadOnlyTheirShare) {
  const DitConfig config = FixtureConfig();
  const auto specs = models::dit::DitWeightSpecs(config);
  const auto store = FixtureStore();
  auto lora = ResolveSliceLora(RandomLora(specs, 2), specs, 2.0, 2, models::DefaultLoraTargets());
  ASSERT_TRUE(lora.ok()) << lora.status().ToString();
  WeightMap full = FixtureCheckpoint("").weights;
  ASSERT_TRUE(models::MergeLora(full, *lora->store, 2.0, 2).ok());
  std::vector<models::WeightSpec> block, rest;  // one block, and everything else as one (large) unit
  for (const auto& s : specs) (s.key.compare(0, 9, "blocks.2.") == 0 ? block : rest).push_back(s);
  for (const auto* unit : {&block, &rest}) {
    for (int n : {1, 2, 3, 4, 7}) {
      const FlatLayout l = MakeFlatLayout(*unit, [](const std::string&) { return at::kFloat; }, n);
      at::Tensor flat = at::empty({l.padded_bytes}, at::kByte);
      int64_t stored = 0, read_sum = 0;
      for (const auto& p : l.params) stored += static_cast<int64_t>(store->Meta(p.key).value().nbytes());
      for (int r = 0; r < n; ++r) {
        int64_t read = 0;
        at::Tensor shard = at::full({l.shard_bytes}, 0xAB, at::kByte);
        Status s = FillShard(l, r, *store, &*lora, shard, &read);
        ASSERT_TRUE(s.ok()) << s.ToString();
        if (AllStoredFp32(*store)) {
          EXPECT_LE(read, l.shard_bytes) << "rank " << r << " of " << n;  // its slice only
        }
        read_sum += read;
        flat.narrow(0, l.ShardBegin(r), l.shard_bytes).copy_(shard);
      }
      EXPECT_EQ(read_sum, stored) << n << " ranks: every stored byte is read exactly once";
      const WeightMap views = ViewParams(l, flat);
      for (const auto& p : l.params) {
        EXPECT_LE(RelL2(views.at(p.key), full.at(p.key)), kShardTol) << p.key << " with " << n << " ranks";
        EXPECT_EQ(views.at(p.key).data_ptr<float>(),
                  reinterpret_cast<float*>(flat.data_ptr<uint8_t>() + p.offset));  // a view, no copy
      }
      // Gaps and padding are zero.
      at::Tensor mask = at::ones({l.padded_bytes}, at::kBool);
      for (const auto& p : l.params) mask.narrow(0, p.offset, p.nbytes).fill_(false);
      EXPECT_EQ(flat.masked_select(mask).nonzero().size(0), 0);
    }
  }
}

TEST(ShardManagerTest, WorldOfOneMatchesTheUnshardedModel) {
  const DitConfig config = FixtureConfig();
  for (int prefetch : {0, 1, 2, 9}) {
    ShardOptions o;
    o.prefetch = prefetch;
    auto m = ShardManager::Create(config, *FixtureStore(), MakeFakeCommunicator(), o);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    const CausalWanS2V ref = UnshardedModel("", at::kFloat);
    const int64_t h = 8, w = 8;
    const auto g = ref.CacheGeometry(h, w, 12);
    runtime::DitStepCache cache_a(g, at::TensorOptions().dtype(at::kFloat));
    runtime::DitStepCache cache_b(g, at::TensorOptions().dtype(at::kFloat));
    at::manual_seed(0);
    models::dit::SinkInputs sink{at::randn({1, config.in_dim, 1, h, w}), at::randn({1, config.in_dim, 19, h, w}),
                                 at::randn({5, config.text_dim})};
    models::dit::StreamInputs in;
    in.x = at::randn({config.in_dim, 3, h, w});
    in.timestep = at::full({1, 3}, 500.0);
    in.context = sink.context;
    in.audio_input = at::randn({1, 25, config.audio_dim, 12});
    in.relative_dist = 10;
    ref.SinkPrefill(sink, cache_a);
    (*m)->model().SinkPrefill(sink, cache_b);
    const auto flow_a = ref.StreamBlock(in, cache_a);
    const auto flow_b = (*m)->model().StreamBlock(in, cache_b);
    EXPECT_LE(RelL2(flow_b, flow_a), kShardTol) << "prefetch " << prefetch;
    for (int64_t i = 0; i < config.num_layers; ++i) {
      EXPECT_LE(RelL2(cache_b.layer(i).cond_k, cache_a.layer(i).cond_k), kShardTol);
      EXPECT_LE(RelL2(cache_b.layer(i).k, cache_a.layer(i).k), kShardTol);
    }
    const ShardAccounting a = (*m)->accounting();
    const int64_t buffers = std::min<int64_t>(prefetch + 1, config.num_layers);
    EXPECT_EQ((*m)->peak_buffers_in_use(), buffers);
    EXPECT_EQ(a.peak_unshard_in_use_bytes, buffers * a.block_bytes);
    EXPECT_EQ(a.unshard_in_use_bytes, 0);
    EXPECT_EQ(a.unshard_buffer_bytes, buffers * a.block_bytes);
    EXPECT_EQ(a.gathers, 2 * config.num_layers);
    EXPECT_EQ(a.bytes_read, SumBytes(*FixtureStore()));
    EXPECT_EQ(a.peak_bytes, a.resident_bytes());
    const ShardAccounting plan = ShardManager::Plan(config, o, 1);
    EXPECT_EQ(plan.resident_shard_bytes, a.resident_shard_bytes);
    EXPECT_EQ(plan.root_bytes, a.root_bytes);
    EXPECT_EQ(plan.unshard_buffer_bytes, a.unshard_buffer_bytes);
    EXPECT_EQ(plan.total_param_bytes, a.total_param_bytes);
    EXPECT_EQ(plan.peak_bytes, a.peak_bytes);
  }
}

TEST(ShardManagerTest, AbandonedCallIsDrainedBeforeTheNextOne) {
  const DitConfig config = FixtureConfig();
  auto m = ShardManager::Create(config, *FixtureStore(), MakeFakeCommunicator(), ShardOptions{});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const int64_t h = 8, w = 8;
  runtime::DitStepCache cache((*m)->model().CacheGeometry(h, w, 12), at::TensorOptions().dtype(at::kFloat));
  models::dit::StreamInputs in;
  in.x = at::randn({config.in_dim, 3, h, w});
  in.timestep = at::full({1, 3}, 500.0);
  in.context = at::randn({5, config.text_dim});
  in.audio_input = at::randn({1, 25, config.audio_dim, 12});
  in.relative_dist = 10;
  const auto ref = (*m)->model().StreamBlock(in, cache);
  // Make the attention of block 1 throw once: blocks 1 and 2 are gathered/installed when the call is abandoned.
  int calls = 0;
  (*m)->model().set_attention([&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    if (++calls == 3) throw std::runtime_error("injected failure");
    return models::Attention(q, k, v);
  });
  EXPECT_THROW((*m)->model().StreamBlock(in, cache), std::runtime_error);
  EXPECT_GT((*m)->accounting().unshard_in_use_bytes, 0);
  runtime::DitStepCache cache2((*m)->model().CacheGeometry(h, w, 12), at::TensorOptions().dtype(at::kFloat));
  const auto again = (*m)->model().StreamBlock(in, cache2);
  EXPECT_TRUE(at::equal(again, ref));
  EXPECT_EQ((*m)->accounting().unshard_in_use_bytes, 0);
  EXPECT_LE((*m)->peak_buffers_in_use(), 2);
}

TEST(ShardManagerTest, CheckpointAndOptionErrorsNameTheKeyOrFlag) {
  const DitConfig config = FixtureConfig();
  WeightMap weights = FixtureCheckpoint("").weights;
  auto store_with = [](WeightMap w) {
    return io::MakeMemoryStore(std::map<std::string, at::Tensor>(w.begin(), w.end()), "mem_ckpt");
  };
  {
    WeightMap w = weights;
    w.erase("blocks.1.ffn.0.weight");
    w["blocks.0.self_attn.q.weight"] = at::zeros({3, 3});
    w["unused.extra"] = at::zeros({2});
    auto m = ShardManager::Create(config, *store_with(w), MakeFakeCommunicator(), ShardOptions{});
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), Status::Code::kInvalidArgument);
    const std::string& msg = m.status().message();
    for (const char* part :
         {"mem_ckpt", "blocks.1.ffn.0.weight", "blocks.0.self_attn.q.weight", "[3, 3]", "unused.extra"}) {
      EXPECT_NE(msg.find(part), std::string::npos) << part << " in " << msg;
    }
  }
  {
    ShardOptions o;
    o.prefetch = -1;
    auto m = ShardManager::Create(config, *store_with(weights), MakeFakeCommunicator(), o);
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.status().message().find("--fsdp_prefetch"), std::string::npos);
    o.prefetch = 1;
    o.dtype = at::kHalf;
    EXPECT_EQ(ShardManager::Create(config, *store_with(weights), MakeFakeCommunicator(), o).status().code(),
              Status::Code::kInvalidArgument);
  }
  {
    const auto specs = models::dit::DitWeightSpecs(config);
    std::map<std::string, at::Tensor> bad = {
        {"blocks.0.norm3.lora_A.weight", at::zeros({2, 64})},           // not a target
        {"blocks.0.self_attn.q.lora_A.default.weight", at::zeros({2, 64})},  // unpaired
        {"blocks.0.ffn.0.lora_A.weight", at::zeros({2, 64})},           // B has the wrong shape
        {"blocks.0.ffn.0.lora_B.weight", at::zeros({5, 2})},
        {"nonsense", at::zeros({1})}};
    auto r = ResolveSliceLora(io::MakeMemoryStore(bad, "bad_lora"), specs, 1.0, 2, models::DefaultLoraTargets());
    ASSERT_FALSE(r.ok());
    const std::string& msg = r.status().message();
    for (const char* part : {"bad_lora", "4 LoRA key(s)", "blocks.0.norm3.lora_A.weight", "unpaired",
                             "blocks.0.ffn.0 (shape mismatch", "nonsense (not a lora_A/lora_B weight)"}) {
      EXPECT_NE(msg.find(part), std::string::npos) << part << " in " << msg;
    }
    auto no_dir = ShardManager::Open("/nonexistent/ckpt", MakeFakeCommunicator(), ShardOptions{});
    ASSERT_FALSE(no_dir.ok());
    EXPECT_NE(no_dir.status().message().find("/nonexistent/ckpt/config.json"), std::string::npos)
        << no_dir.status().message();
    auto missing = OpenSliceLora("/nonexistent/dir/lora.safetensors", std::nullopt, std::nullopt, specs);
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.status().message().find("training_config_lora.json"), std::string::npos);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Test side: multi-process (Gloo).

std::string SelfExe() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("/proc/self/exe");
}

LaunchResult RunShardWorkers(int nproc, const std::string& scenario,
                             std::vector<std::pair<std::string, std::string>> env = {}) {
  LaunchOptions o;
  o.extra_env = {{"LA_SHARD_TEST_SCENARIO", scenario}, {"OMP_NUM_THREADS", "1"}};
  for (auto& kv : env) o.extra_env.push_back(std::move(kv));
  o.kill_grace = std::chrono::seconds(2);
  return LaunchLocal(nproc, {SelfExe()}, o);
}

#define SKIP_WITHOUT_GLOO()                  \
  if (!BackendCompiled(BackendKind::kGloo)) \
  GTEST_SKIP() << "gloo backend not compiled in (install libgloo-dev)"

TEST(ShardManagerGlooTest, FixtureCasesMatchUnshardedOnTwoRanks) {
  SKIP_WITHOUT_GLOO();
  LaunchResult r = RunShardWorkers(
      2, "fixture_cases",
      {{"LA_SHARD_TEST_PREFETCH", "1"}, {"LA_SHARD_TEST_SHARD_ROOT", "0"}, {"LA_SHARD_TEST_BF16", "1"}});
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
}

TEST(ShardManagerGlooTest, FixtureCasesMatchUnshardedOnFourRanksWithShardedRoot) {
  SKIP_WITHOUT_GLOO();
  LaunchResult r =
      RunShardWorkers(4, "fixture_cases", {{"LA_SHARD_TEST_PREFETCH", "2"}, {"LA_SHARD_TEST_SHARD_ROOT", "1"}});
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
}

TEST(ShardManagerGlooTest, RankThatNeverRunsTheModelGivesATimeoutError) {
  SKIP_WITHOUT_GLOO();
  const auto start = std::chrono::steady_clock::now();
  LaunchResult r = RunShardWorkers(2, "never_joined");
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

}  // namespace
}  // namespace liveavatar::dist
