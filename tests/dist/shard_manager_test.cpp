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
#include <limits>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "dist/dist_test_harness.h"
#include "liveavatar/dist/communicator.h"
#include "liveavatar/dist/flat_param.h"
#include "liveavatar/dist/launcher.h"
#include "liveavatar/dist/shard_manager.h"
#include "liveavatar/dist/world.h"
#include "liveavatar/models/attention.h"
#include "liveavatar/models/dit/fp8_weights.h"
#include "liveavatar/models/dit/model.h"
#include "liveavatar/models/dit/weights.h"
#include "liveavatar/models/fp8.h"
#include "liveavatar/models/lora.h"
#include "liveavatar/runtime/kv_cache.h"
#include "liveavatar/testing/dit_case.h"
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
constexpr char kScenarioEnv[] = "LA_SHARD_TEST_SCENARIO";

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

// The unsharded model, with the FP8 weights of models::dit::Fp8DitWeights when `fp8` (the reference for sharded FP8).
std::unique_ptr<CausalWanS2V> UnshardedModel(const std::string& lora_path, c10::ScalarType dtype, bool fp8) {
  auto m = std::make_unique<CausalWanS2V>(UnshardedModel(lora_path, dtype));
  if (fp8) {
    auto q = models::dit::Fp8DitWeights::Attach(m.get());
    if (!q.ok()) throw StatusError(q.status());
  }
  return m;
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
  WORKER_CHECK(comm.ok(), "join: " + comm.status().ToString());
  rank = (*comm)->Rank();
  const int size = (*comm)->Size();
  ShardOptions options;
  options.prefetch = EnvInt("LA_SHARD_TEST_PREFETCH", 1);
  options.shard_root = EnvInt("LA_SHARD_TEST_SHARD_ROOT", 0) != 0;
  options.fp8 = EnvInt("LA_SHARD_TEST_FP8", 0) != 0;
  options.offload_shards = EnvInt("LA_SHARD_TEST_OFFLOAD", 0) != 0;
  const bool with_bf16 = EnvInt("LA_SHARD_TEST_BF16", 0) != 0;
  const DitConfig config = FixtureConfig();
  const auto store = FixtureStore();
  const int64_t stored_total = SumBytes(*store);
  const auto cases = testing::DiscoverCases("dit", {"sink", "stream"});
  WORKER_CHECK(!cases.empty(), "no sink/stream cases in " + GoldenDir("dit"));

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
        WORKER_CHECK(m.ok(), "ShardManager::Create: " + m.status().ToString());
        managers[lora] = std::move(m).value();
        unsharded[lora] = UnshardedModel(lora, dtype, options.fp8);
      }
      ShardManager& m = *managers[lora];
      const auto got = testing::RunDitCase(m.model(), c, dtype);
      const auto ref = testing::RunDitCase(*unsharded[lora], c, dtype);
      const std::string errors = CompareCase(c, got, ref, /*check_fixture=*/dtype == at::kFloat && !options.fp8,
                                             &worst_shard, &worst_fixture);
      WORKER_CHECK(errors.empty(), c.name() + " (" + c10::toString(dtype) + "):" + errors);
      // Nothing of any block stays installed or pending between calls.
      for (const auto& kv : m.model().weights()) {
        WORKER_CHECK(kv.first.compare(0, 7, "blocks.") != 0, "block weight left installed: " + kv.first);
        WORKER_CHECK(!options.fp8 || !models::dit::IsFp8LinearWeight(kv.first) || kv.second.numel() == 0,
                     "dequantised injector weight left installed: " + kv.first);
      }
      const ShardAccounting a = m.accounting();
      WORKER_CHECK(a.unshard_in_use_bytes == 0, "unshard buffers still in use after " + c.name());
    }
    for (const auto& [lora, m] : managers) {
      const ShardAccounting a = m->accounting();
      const int64_t L = config.num_layers;
      const int64_t expect_buffers = std::min<int64_t>(options.prefetch + 1, L);
      const int64_t share = a.total_param_bytes / size;
      // Offloaded slices live on the host; the device holds at most prefetch + 1 staging slices.
      const int64_t slices = a.resident_shard_bytes + a.host_shard_bytes;
      WORKER_CHECK(!options.offload_shards || (a.resident_shard_bytes == 0 && a.host_shard_bytes > 0 &&
                                               a.staging_bytes == expect_buffers * m->block_layout().shard_bytes),
                   "offloaded slices: device " + std::to_string(a.resident_shard_bytes) + ", staging " +
                       std::to_string(a.staging_bytes));
      // Resident parameters: this rank's slices + the root unit, within total/N + one block + root.
      WORKER_CHECK(slices + a.root_bytes <= share + a.block_bytes + a.root_bytes,
                   "resident " + std::to_string(a.resident_shard_bytes) + " > share " + std::to_string(share) +
                       " + block " + std::to_string(a.block_bytes));
      WORKER_CHECK(slices < a.total_param_bytes - a.root_bytes || size == 1,
                   "a rank holds every block");
      // Unshard buffers: never more than prefetch + 1 blocks, and exactly that many were needed.
      WORKER_CHECK(a.peak_unshard_in_use_bytes <= (options.prefetch + 1) * a.block_bytes,
                   "peak unshard bytes " + std::to_string(a.peak_unshard_in_use_bytes));
      WORKER_CHECK(m->peak_buffers_in_use() == expect_buffers,
                   "peak buffers in use " + std::to_string(m->peak_buffers_in_use()));
      WORKER_CHECK(a.unshard_buffer_bytes == expect_buffers * a.block_bytes, "pool size");
      // Disk: this rank's share (plus the whole root unit when it is replicated). The fixture stores fp32.
      int64_t root_stored = 0;
      for (const auto& p : m->root_layout().params) root_stored += static_cast<int64_t>(store->Meta(p.key)->nbytes());
      const int64_t expect_read_max = options.shard_root ? slices + m->root_layout().shard_bytes
                                                         : slices + root_stored;
      WORKER_CHECK(a.bytes_read <= expect_read_max || dtype != at::kFloat || options.fp8 || !AllStoredFp32(*store),
                   "bytes read " + std::to_string(a.bytes_read) + " > " + std::to_string(expect_read_max));
      at::Tensor reads = at::full({1}, a.bytes_read, at::kLong);
      Status s = (*comm)->AllReduceSum(reads)->Wait();
      WORKER_CHECK(s.ok(), s.ToString());
      const int64_t sum_reads = reads.item<int64_t>();
      const int64_t expect_sum = options.shard_root ? stored_total : stored_total + (size - 1) * root_stored;
      WORKER_CHECK(sum_reads == expect_sum,
                   "sum of bytes read " + std::to_string(sum_reads) + " != " + std::to_string(expect_sum));
      const ShardAccounting plan = ShardManager::Plan(config, m->options(), size);
      WORKER_CHECK(plan.resident_shard_bytes == a.resident_shard_bytes && plan.root_bytes == a.root_bytes &&
                       plan.block_bytes == a.block_bytes && plan.total_param_bytes == a.total_param_bytes &&
                       plan.unshard_buffer_bytes == a.unshard_buffer_bytes && plan.dequant_bytes == a.dequant_bytes &&
                       plan.host_shard_bytes == a.host_shard_bytes && plan.staging_bytes == a.staging_bytes &&
                       a.peak_bytes <= plan.peak_bytes,
                   "Plan() disagrees with Create()");
      std::fprintf(stderr,
                   "rank %d/%d %s fp8=%d lora=%d prefetch=%d shard_root=%d: total %lld B, resident shards %lld B "
                   "(host %lld B) "
                   "(share %lld B), root %lld B, block %lld B, peak unshard in use %lld B (%d buffers), bytes read "
                   "%lld B (%.3f of total/N + root%s), gathers %lld\n",
                   rank, size, c10::toString(dtype), options.fp8 ? 1 : 0, lora.empty() ? 0 : 1, options.prefetch, options.shard_root ? 1 : 0,
                   static_cast<long long>(a.total_param_bytes), static_cast<long long>(a.resident_shard_bytes),
                   static_cast<long long>(a.host_shard_bytes),
                   static_cast<long long>(share), static_cast<long long>(a.root_bytes),
                   static_cast<long long>(a.block_bytes), static_cast<long long>(a.peak_unshard_in_use_bytes),
                   m->peak_buffers_in_use(), static_cast<long long>(a.bytes_read),
                   static_cast<double>(a.bytes_read) /
                       static_cast<double>(options.shard_root ? stored_total / size
                                                              : (stored_total - root_stored) / size + root_stored),
                   options.shard_root ? " (root sharded)" : "", static_cast<long long>(a.gathers));
    }
    char fixture[64] = "(checked in fp32 without fp8 only)";
    if (dtype == at::kFloat && !options.fp8) std::snprintf(fixture, sizeof(fixture), "%.3g", worst_fixture);
    std::fprintf(stderr, "rank %d/%d %s: %zu cases, worst rel L2 vs unsharded %.3g, vs fixture %s\n", rank, size,
                 c10::toString(dtype), cases.size(), worst_shard, fixture);
  }
  Status s = (*comm)->Barrier()->Wait();
  WORKER_CHECK(s.ok(), s.ToString());
  return 0;
}

// Rank 1 builds its shards but never runs the model: rank 0's first block all-gather must time out with an
// error (thrown from the model call), not hang.
int RunNeverJoined() {
  int rank = -1;
  auto comm = JoinGlooWorld(std::chrono::milliseconds(1500));
  WORKER_CHECK(comm.ok(), "join: " + comm.status().ToString());
  rank = (*comm)->Rank();
  const DitConfig config = FixtureConfig();
  auto m = ShardManager::Open(GoldenDir("dit"), *comm, ShardOptions{});
  WORKER_CHECK(m.ok(), m.status().ToString());
  CollectiveOptions patient;  // only the model's collectives use the short default timeout
  patient.timeout = std::chrono::seconds(60);
  Status s = (*comm)->Barrier(patient)->Wait();
  WORKER_CHECK(s.ok(), s.ToString());
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
  WORKER_CHECK(got.code() == Status::Code::kDeadlineExceeded, "expected DeadlineExceeded: " + got.ToString());
  WORKER_CHECK(got.message().find("FSDP all-gather of block 0") != std::string::npos, "message names the block");
  WORKER_CHECK(got.message().find("rank 1") != std::string::npos, "message names the missing rank");
  WORKER_CHECK(seconds < 10.0, "timeout honoured");
  WORKER_CHECK((*m)->accounting().unshard_in_use_bytes == 0, "buffers released after the failure");
  return 0;
}

// FP8 load where rank 1 cannot read its slice of block 0 (integer tensors under the FP8 keys): rank 1 fails naming
// the key, and rank 0 fails at the same unit through the amax all-reduce's error flag, well before the timeout.
int RunFp8ReadFailure() {
  int rank = -1;
  auto comm = JoinGlooWorld(std::chrono::seconds(30));
  WORKER_CHECK(comm.ok(), "join: " + comm.status().ToString());
  rank = (*comm)->Rank();
  const DitConfig config = FixtureConfig();
  WeightMap weights = FixtureCheckpoint("").weights;
  if (rank == 1) {
    for (auto& [key, t] : weights) {
      if (key.rfind("blocks.0.", 0) == 0 && models::dit::IsFp8LinearWeight(key)) t = t.to(at::kInt);
    }
  }
  ShardOptions o;
  o.fp8 = true;
  const auto start = std::chrono::steady_clock::now();
  auto m = ShardManager::Create(
      config, *io::MakeMemoryStore(std::map<std::string, at::Tensor>(weights.begin(), weights.end()), "mem_ckpt"),
      *comm, o);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "rank %d got (%.2f s): %s\n", rank, seconds, m.status().ToString().c_str());
  WORKER_CHECK(!m.ok(), "load succeeded");
  WORKER_CHECK(m.status().message().find("block 0") != std::string::npos, "names the unit");
  if (rank == 1) {
    WORKER_CHECK(m.status().message().find("non-floating") != std::string::npos, "names the cause");
  } else {
    WORKER_CHECK(m.status().code() == Status::Code::kUnavailable, "another rank's failure");
  }
  WORKER_CHECK(seconds < 20.0, "no wait for the timeout");
  return 0;
}

int RunShardScenario(const std::string& scenario) {
  alarm(120);  // a hung worker dies (and the launcher reports it) instead of hanging the test
  int rank = -1;
  if (scenario == "fixture_cases") return RunFixtureCases();
  if (scenario == "never_joined") return RunNeverJoined();
  if (scenario == "fp8_read_failure") return RunFp8ReadFailure();
  WORKER_CHECK(false, "unknown scenario " + scenario);
  return 1;
}

LA_DIST_WORKER_HOOK(kScenarioEnv, RunShardScenario);

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
      p.value_dtype = dtype;
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

// The fixture checkpoint with a random rank-2 LoRA: resolved for slices, and merged into the full weights.
struct LoraFixture {
  std::vector<models::WeightSpec> specs;
  std::shared_ptr<io::TensorStore> store;
  std::optional<SliceLora> lora;
  WeightMap full;  // the checkpoint with the LoRA merged (models::MergeLora)
};
LoraFixture MakeLoraFixture() {
  LoraFixture f;
  f.specs = models::dit::DitWeightSpecs(FixtureConfig());
  f.store = FixtureStore();
  auto lora = ResolveSliceLora(RandomLora(f.specs, 2), f.specs, 2.0, 2, models::DefaultLoraTargets());
  if (!lora.ok()) throw StatusError(lora.status());
  f.lora = std::move(lora).value();
  f.full = FixtureCheckpoint("").weights;
  Status merged = models::MergeLora(f.full, *f.lora->store, 2.0, 2).status();
  if (!merged.ok()) throw StatusError(merged);
  return f;
}

TEST(FlatParamTest, SlicesOfEveryRankReassembleTheUnitAndReadOnlyTheirShare) {
  LoraFixture fx = MakeLoraFixture();
  const auto& specs = fx.specs;
  const auto& store = fx.store;
  const SliceLora* lora = &*fx.lora;
  const WeightMap& full = fx.full;
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

// A sink prefill then one streaming call of `model` on seeded random inputs at 8x8 latents (the same inputs for
// every model of the fixture config), with the cache they leave.
struct RandomCall {
  at::Tensor flow;
  std::unique_ptr<runtime::DitStepCache> cache;
};
RandomCall RunRandomCall(const CausalWanS2V& model, c10::ScalarType dtype) {
  const DitConfig& config = model.config();
  const int64_t h = 8, w = 8;
  RandomCall r;
  r.cache = std::make_unique<runtime::DitStepCache>(model.CacheGeometry(h, w, 12), at::TensorOptions().dtype(dtype));
  at::manual_seed(0);
  models::dit::SinkInputs sink{at::randn({1, config.in_dim, 1, h, w}), at::randn({1, config.in_dim, 19, h, w}),
                               at::randn({5, config.text_dim})};
  models::dit::StreamInputs in;
  in.x = at::randn({config.in_dim, 3, h, w});
  in.timestep = at::full({1, 3}, 500.0);
  in.context = sink.context;
  in.audio_input = at::randn({1, 25, config.audio_dim, 12});
  in.relative_dist = 10;
  model.SinkPrefill(sink, *r.cache);
  r.flow = model.StreamBlock(in, *r.cache);
  return r;
}

TEST(FlatParamTest, Fp8SlicesEncodeLikeTheWholeTensor) {
  // Every rank converts its ranges, the amax is the max over ranks, each encodes with the common scale: the
  // reassembled codes equal QuantizeFp8PerTensor of the whole (LoRA-merged, dtype-rounded) tensor.
  LoraFixture fx = MakeLoraFixture();
  const auto& specs = fx.specs;
  const auto& store = fx.store;
  const SliceLora* lora = &*fx.lora;
  const WeightMap& full = fx.full;
  std::vector<models::WeightSpec> block;
  for (const auto& s : specs) {
    if (s.key.compare(0, 9, "blocks.1.") == 0) block.push_back(s);
  }
  const auto fp8_of = [](const std::string& k) { return models::dit::IsFp8LinearWeight(k); };
  for (c10::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (int n : {1, 2, 3, 5}) {
      const FlatLayout l = MakeFlatLayout(
          block, [dtype](const std::string& k) { return CausalWanS2V::WeightDtype(k, dtype); }, n, fp8_of);
      ASSERT_TRUE(HasFp8(l));
      std::vector<std::vector<ShardPiece>> pieces(static_cast<size_t>(n));
      at::Tensor amax;
      for (int r = 0; r < n; ++r) {
        auto p = ReadShard(l, r, *store, &*lora);
        ASSERT_TRUE(p.ok()) << p.status().ToString();
        pieces[static_cast<size_t>(r)] = std::move(p).value();
        const at::Tensor mine = Fp8AbsMaxOfPieces(l, pieces[static_cast<size_t>(r)]);
        amax = r == 0 ? mine : at::maximum(amax, mine);
      }
      Fp8Scales scales;
      int64_t k = 0;
      for (const auto& p : l.params) {
        if (p.fp8) scales[p.key] = models::Fp8Scale(amax[k++].item<float>());
      }
      EXPECT_EQ(k, amax.numel());
      at::Tensor flat = at::empty({l.padded_bytes}, at::kByte);
      for (int r = 0; r < n; ++r) {
        at::Tensor shard = at::empty({l.shard_bytes}, at::kByte);
        ASSERT_TRUE(WriteShard(l, pieces[static_cast<size_t>(r)], scales, shard).ok());
        flat.narrow(0, l.ShardBegin(r), l.shard_bytes).copy_(shard);
      }
      const WeightMap views = ViewParams(l, flat);
      int fp8_params = 0;
      for (const auto& p : l.params) {
        const at::Tensor dense = full.at(p.key).to(p.value_dtype);
        if (!p.fp8) {
          EXPECT_EQ(p.dtype, p.value_dtype);
          EXPECT_LE(RelL2(views.at(p.key), dense), dtype == at::kFloat ? kShardTol : 1e-2) << p.key;
          continue;
        }
        ++fp8_params;
        EXPECT_EQ(p.dtype, at::kByte) << p.key;
        EXPECT_EQ(p.nbytes, p.numel) << p.key;
        const models::Fp8Tensor whole = models::QuantizeFp8PerTensor(dense);
        EXPECT_FLOAT_EQ(1.0f / scales.at(p.key), whole.scale_inv) << p.key;
        const double same = views.at(p.key).eq(whole.codes).to(at::kFloat).mean().item<double>();
        // fp32: identical; bf16: the per-slice LoRA merge may round a tie differently in a few elements.
        EXPECT_GE(same, dtype == at::kFloat ? 1.0 : 0.999) << p.key << " with " << n << " ranks";
      }
      EXPECT_EQ(fp8_params, 10);  // self_attn and cross_attn q/k/v/o, ffn.0 and ffn.2
    }
  }
  // An FP8 piece without a scale is an argument error naming the key.
  const FlatLayout l = MakeFlatLayout(block, [](const std::string&) { return at::kFloat; }, 1, fp8_of);
  auto p = ReadShard(l, 0, *store, nullptr);
  ASSERT_TRUE(p.ok());
  at::Tensor shard = at::empty({l.shard_bytes}, at::kByte);
  Status st = WriteShard(l, *p, {}, shard);
  EXPECT_EQ(st.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(st.message().find("blocks.1."), std::string::npos) << st.message();
}

TEST(ShardManagerTest, Fp8WorldOfOneMatchesTheUnshardedFp8Model) {
  const DitConfig config = FixtureConfig();
  ShardOptions o;
  o.fp8 = true;
  o.dtype = at::kBFloat16;
  auto m = ShardManager::Create(config, *FixtureStore(), MakeFakeCommunicator(), o);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const auto ref = UnshardedModel("", at::kBFloat16, /*fp8=*/true);
  const RandomCall want = RunRandomCall(*ref, at::kBFloat16);
  const RandomCall got = RunRandomCall((*m)->model(), at::kBFloat16);
  EXPECT_TRUE(at::equal(got.flow, want.flow)) << "rel L2 " << RelL2(got.flow, want.flow);
  // FP8 codes travel: the block unit is smaller than in bf16 and the layer's dense FP8 weights are transient.
  ShardOptions bf16 = o;
  bf16.fp8 = false;
  const ShardAccounting a = (*m)->accounting();
  const ShardAccounting dense = ShardManager::Plan(config, bf16, 1);
  EXPECT_LT(a.block_bytes, dense.block_bytes);
  EXPECT_GT(a.dequant_bytes, 0);
  EXPECT_EQ(dense.dequant_bytes, 0);
  EXPECT_EQ(a.peak_bytes, a.resident_bytes() + a.dequant_bytes);
  const ShardAccounting plan = ShardManager::Plan(config, o, 1);
  EXPECT_EQ(plan.block_bytes, a.block_bytes);
  EXPECT_EQ(plan.dequant_bytes, a.dequant_bytes);
  EXPECT_EQ(plan.peak_bytes, a.peak_bytes);
  for (const auto& [key, t] : (*m)->model().weights()) {
    if (models::dit::IsFp8LinearWeight(key)) {
      EXPECT_EQ(t.numel(), 0) << key << " is a placeholder between calls";
    }
  }
  // A non-finite value in an FP8 weight is corruption naming the key.
  WeightMap weights = FixtureCheckpoint("").weights;
  weights.at("blocks.0.ffn.2.weight")[0][1] = std::numeric_limits<float>::infinity();
  auto bad = ShardManager::Create(
      config, *io::MakeMemoryStore(std::map<std::string, at::Tensor>(weights.begin(), weights.end()), "mem_ckpt"),
      MakeFakeCommunicator(), o);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Status::Code::kCorruption);
  EXPECT_NE(bad.status().message().find("blocks.0.ffn.2.weight"), std::string::npos) << bad.status().message();
  // So is a NaN (mapped to +inf before the max all-reduce, which may drop NaNs).
  weights = FixtureCheckpoint("").weights;
  weights.at("blocks.1.self_attn.q.weight")[2][0] = std::numeric_limits<float>::quiet_NaN();
  auto nan = ShardManager::Create(
      config, *io::MakeMemoryStore(std::map<std::string, at::Tensor>(weights.begin(), weights.end()), "mem_ckpt"),
      MakeFakeCommunicator(), o);
  ASSERT_FALSE(nan.ok());
  EXPECT_EQ(nan.status().code(), Status::Code::kCorruption);
  EXPECT_NE(nan.status().message().find("blocks.1.self_attn.q.weight"), std::string::npos) << nan.status().message();
}

TEST(ShardManagerTest, WorldOfOneMatchesTheUnshardedModel) {
  const DitConfig config = FixtureConfig();
  for (int variant = 0; variant < 6; ++variant) {
    const int prefetch = std::vector<int>{0, 1, 2, 9, 0, 1}[static_cast<size_t>(variant)];
    ShardOptions o;
    o.prefetch = prefetch;
    o.offload_shards = variant >= 4;  // slices in host memory, copied to a staging slice per gather
    SCOPED_TRACE("prefetch " + std::to_string(prefetch) + (o.offload_shards ? ", offloaded slices" : ""));
    auto m = ShardManager::Create(config, *FixtureStore(), MakeFakeCommunicator(), o);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    const CausalWanS2V ref = UnshardedModel("", at::kFloat);
    const RandomCall want = RunRandomCall(ref, at::kFloat);
    const RandomCall got = RunRandomCall((*m)->model(), at::kFloat);
    EXPECT_LE(RelL2(got.flow, want.flow), kShardTol) << "prefetch " << prefetch;
    for (int64_t i = 0; i < config.num_layers; ++i) {
      EXPECT_LE(RelL2(got.cache->layer(i).cond_k, want.cache->layer(i).cond_k), kShardTol);
      EXPECT_LE(RelL2(got.cache->layer(i).k, want.cache->layer(i).k), kShardTol);
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
    const int64_t slices = config.num_layers * (*m)->block_layout().shard_bytes;
    EXPECT_EQ(a.resident_shard_bytes, o.offload_shards ? 0 : slices);
    EXPECT_EQ(a.host_shard_bytes, o.offload_shards ? slices : 0);
    EXPECT_EQ(a.staging_bytes, o.offload_shards ? buffers * (*m)->block_layout().shard_bytes : 0);
    const ShardAccounting plan = ShardManager::Plan(config, o, 1);
    EXPECT_EQ(plan.resident_shard_bytes, a.resident_shard_bytes);
    EXPECT_EQ(plan.root_bytes, a.root_bytes);
    EXPECT_EQ(plan.unshard_buffer_bytes, a.unshard_buffer_bytes);
    EXPECT_EQ(plan.host_shard_bytes, a.host_shard_bytes);
    EXPECT_EQ(plan.staging_bytes, a.staging_bytes);
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

LaunchResult RunShardWorkers(int nproc, const std::string& scenario,
                             const std::vector<std::pair<std::string, std::string>>& env = {}) {
  return testutil::RunScenarioWorkers(kScenarioEnv, nproc, scenario, env);
}

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

TEST(ShardManagerGlooTest, Fp8FixtureCasesMatchUnshardedFp8OnThreeRanks) {
  // Three ranks split most FP8 tensors across slices, so the per-tensor amax needs the max all-reduce; the root
  // is sharded too (the injectors' FP8 weights), and the FP8 slices are offloaded to host memory.
  SKIP_WITHOUT_GLOO();
  LaunchResult r = RunShardWorkers(3, "fixture_cases",
                                   {{"LA_SHARD_TEST_PREFETCH", "1"},
                                    {"LA_SHARD_TEST_SHARD_ROOT", "1"},
                                    {"LA_SHARD_TEST_FP8", "1"},
                                    {"LA_SHARD_TEST_OFFLOAD", "1"},
                                    {"LA_SHARD_TEST_BF16", "1"}});
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
}

TEST(ShardManagerGlooTest, Fp8SliceThatOneRankCannotReadFailsEveryRankAtOnce) {
  SKIP_WITHOUT_GLOO();
  LaunchResult r = RunShardWorkers(2, "fp8_read_failure");
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
