// Ulysses sequence parallelism of the S2V DiT (dist::MakeUlysses + CausalWanS2V::set_sequence_parallel).
//
// Multi-process part: the test binary launches P copies of itself with dist::LaunchLocal (Gloo on 127.0.0.1); a
// copy started with LA_ULYSSES_TEST_SCENARIO set runs as one rank from a static initializer, before gtest's main,
// and exits with 0 (every check passed) or 1 (a message on stderr names the failed check). Each rank runs every
// sink/stream case of the DiT fixtures (discovered, never named) twice in the same process: single-process and
// Ulysses over the world, and compares the flow prediction and the KV caches (this rank's head slice) at rel L2
// <= 1e-5, and the per-rank cache bytes with the single-rank ones (LocalHeads / H; summed over ranks: equal).
// The fixture weights run when P <= their head count; a seeded random model with 5 heads (uneven for P = 2, 3,
// 4: 3/2, 2/2/1, 2/1/1/1) runs on the same inputs in every case.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "dist/dist_test_harness.h"
#include "liveavatar/dist/communicator.h"
#include "liveavatar/dist/launcher.h"
#include "liveavatar/dist/ulysses.h"
#include "liveavatar/dist/world.h"
#include "liveavatar/models/dit/model.h"
#include "liveavatar/models/dit/parallel.h"
#include "liveavatar/models/dit/weights.h"
#include "liveavatar/models/lora.h"
#include "liveavatar/runtime/kv_cache.h"
#include "liveavatar/testing/dit_case.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar::dist {
namespace {

using models::WeightMap;
using models::dit::CausalWanS2V;
using models::dit::DitConfig;
using models::dit::SequenceParallel;
using testing::GoldenCase;
using testing::GoldenDir;
using testing::RelL2;

constexpr char kScenarioEnv[] = "LA_ULYSSES_TEST_SCENARIO";
constexpr double kSplitTol = 1e-5;
constexpr double kBf16SplitTol = 1e-2;  // bf16 rounding may differ with the matmul row count
constexpr int64_t kRandomHeads = 5;

// Bytes of every ring and cond tensor of a step cache.
int64_t CacheBytes(const runtime::DitStepCache& cache) {
  int64_t bytes = 0;
  for (int64_t i = 0; i < cache.num_layers(); ++i) {
    const auto& l = cache.layer(i);
    bytes += l.k.nbytes() + l.v.nbytes() + l.cond_k.nbytes() + l.cond_v.nbytes();
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------------------------------
// Worker side.

// A model variant the cases run on.
struct Variant {
  std::string label;
  DitConfig config;
  WeightMap weights;
  bool fixture = false;  // fixture weights (LoRA merged per case) vs seeded random weights
};

// The fixture config with kRandomHeads heads of (about) the same head_dim, seeded random weights (equal on every rank).
Variant RandomVariant(const DitConfig& base) {
  Variant v;
  v.label = "random" + std::to_string(kRandomHeads) + "h";
  v.config = base;
  v.config.num_heads = kRandomHeads;
  const int64_t head_dim = (base.head_dim() + 3) / 4 * 4;  // dim must stay divisible by 4
  v.config.dim = kRandomHeads * head_dim;
  at::manual_seed(1234);
  for (const auto& spec : models::dit::DitWeightSpecs(v.config)) {
    at::Tensor t;
    if (spec.init == "ones") {
      t = 1.0 + 0.1 * at::randn(spec.shape);
    } else if (spec.init == "zeros" || spec.shape.size() == 1) {
      t = 0.1 * at::randn(spec.shape);
    } else {
      int64_t fan_in = 1;
      for (size_t i = 1; i < spec.shape.size(); ++i) fan_in *= spec.shape[i];
      t = at::randn(spec.shape) / std::sqrt(static_cast<double>(fan_in));
    }
    v.weights[spec.key] = t;
  }
  return v;
}

StatusOr<CausalWanS2V> MakeModel(const Variant& variant, const GoldenCase& c) {
  WeightMap weights = variant.weights;  // shares the tensors
  if (variant.fixture && c.HasMeta("lora")) {
    for (auto& [key, t] : weights) t = t.clone();
    const auto path = (std::filesystem::path(GoldenDir("dit")) / c.Meta("lora")).string();
    auto merged = models::MergeLoraFile(weights, path, std::nullopt, std::nullopt);
    if (!merged.ok()) return merged.status();
  }
  return CausalWanS2V::Create(variant.config, std::move(weights), at::kFloat, c10::Device(c10::kCPU));
}

struct Totals {
  double worst = 0;
  int runs = 0;
};

int CompareTensor(int rank, const std::string& what, const at::Tensor& split, const at::Tensor& single, Totals* t,
                  double tol = kSplitTol) {
  WORKER_CHECK(split.sizes() == single.sizes(), what + ": shape mismatch");
  const double err = RelL2(split.to(at::kFloat), single.to(at::kFloat));
  t->worst = std::max(t->worst, err);
  WORKER_CHECK(err <= tol, what + ": rel L2 " + std::to_string(err));
  return 0;
}

// Per-rank cache bytes are LocalHeads / H of the single-rank ones and sum to them over the group.
int CheckBytes(Communicator& comm, const std::string& what, const runtime::DitStepCache& mine,
               const runtime::DitStepCache& single, int64_t heads, int64_t local_heads) {
  const int rank = comm.Rank();
  const int64_t b_mine = CacheBytes(mine), b_single = CacheBytes(single);
  WORKER_CHECK(b_mine * heads == b_single * local_heads,
               what + ": cache bytes " + std::to_string(b_mine) + " != " + std::to_string(b_single) + " * " +
                   std::to_string(local_heads) + "/" + std::to_string(heads));
  at::Tensor sum = at::full({1}, b_mine, at::kLong);
  WORKER_OK(comm.AllReduceSum(sum)->Wait());
  WORKER_CHECK(sum.item<int64_t>() == b_single, what + ": cache bytes summed over ranks != single-rank bytes");
  if (rank == 0) {
    std::fprintf(stderr, "[ measured ] %s: per-rank cache bytes %lld of %lld single-rank (heads %lld/%lld)\n",
                 what.c_str(), static_cast<long long>(b_mine), static_cast<long long>(b_single),
                 static_cast<long long>(local_heads), static_cast<long long>(heads));
  }
  return 0;
}

int RunSink(Communicator& comm, const std::shared_ptr<SequenceParallel>& sp, CausalWanS2V& model,
            const GoldenCase& c, const std::string& what, Totals* totals) {
  const int rank = comm.Rank();
  const auto ref = c.Get("in.ref_latents");
  const models::dit::SinkInputs in = testing::DitSinkInputs(c);
  const int64_t lat_h = ref.size(3), lat_w = ref.size(4);
  const int64_t cap = c.MetaInt("cond_capacity");
  const int64_t heads = model.config().num_heads;

  WORKER_OK(model.set_sequence_parallel(nullptr));
  runtime::DitStepCache single(model.CacheGeometry(lat_h, lat_w, 12, cap), at::TensorOptions().dtype(at::kFloat));
  model.SinkPrefill(in, single);

  WORKER_OK(model.set_sequence_parallel(sp));
  const auto g = model.CacheGeometry(lat_h, lat_w, 12, cap);
  const int64_t hl = sp->LocalHeads(heads), h0 = sp->HeadOffset(heads);
  WORKER_CHECK(g.num_heads == hl, what + ": geometry heads");
  runtime::DitStepCache mine(g, at::TensorOptions().dtype(at::kFloat));
  model.SinkPrefill(in, mine);

  for (int64_t i = 0; i < model.config().num_layers; ++i) {
    const auto& a = mine.layer(i);
    const auto& b = single.layer(i);
    const std::string p = what + " layer " + std::to_string(i);
    WORKER_CHECK(a.cond_end == b.cond_end, p + " cond_end");
    if (CompareTensor(rank, p + " cond_k", a.cond_k, b.cond_k.narrow(2, h0, hl), totals)) return 1;
    if (CompareTensor(rank, p + " cond_v", a.cond_v, b.cond_v.narrow(2, h0, hl), totals)) return 1;
  }
  ++totals->runs;
  return CheckBytes(comm, what, mine, single, heads, hl);
}

int RunStream(Communicator& comm, const std::shared_ptr<SequenceParallel>& sp, CausalWanS2V& model,
              const GoldenCase& c, const Variant& variant, const std::string& what, Totals* totals) {
  const int rank = comm.Rank();
  const auto x = c.Get("in.x");
  const int64_t ring = c.Get("in.kv.0.k").size(1);
  const int64_t cap = c.Get("in.kv.0.cond_k").size(1);
  const int64_t fs = model.config().FrameSeqLen(x.size(2), x.size(3));
  WORKER_CHECK(ring % fs == 0, what + ": ring not a whole number of frames");
  const int64_t heads = model.config().num_heads;

  WORKER_OK(model.set_sequence_parallel(nullptr));
  runtime::DitStepCache single(model.CacheGeometry(x.size(2), x.size(3), ring / fs, cap),
                               at::TensorOptions().dtype(at::kFloat));
  at::manual_seed(99);  // random caches for the random variant (same on every rank)
  for (int64_t i = 0; i < model.config().num_layers; ++i) {
    const std::string p = "in.kv." + std::to_string(i) + ".";
    auto& l = single.layer(i);
    for (auto [t, key] : {std::pair<at::Tensor*, const char*>{&l.k, "k"}, {&l.v, "v"}, {&l.cond_k, "cond_k"},
                          {&l.cond_v, "cond_v"}}) {
      t->copy_(variant.fixture ? c.Get(p + key) : at::randn(t->sizes()));
    }
    l.cond_end = c.Get(p + "cond_end").item<int64_t>();
  }
  const models::dit::StreamInputs in = testing::DitStreamInputs(c);

  WORKER_OK(model.set_sequence_parallel(sp));
  const auto g = model.CacheGeometry(x.size(2), x.size(3), ring / fs, cap);
  const int64_t hl = sp->LocalHeads(heads), h0 = sp->HeadOffset(heads);
  WORKER_CHECK(g.num_heads == hl, what + ": geometry heads");
  runtime::DitStepCache mine(g, at::TensorOptions().dtype(at::kFloat));
  for (int64_t i = 0; i < model.config().num_layers; ++i) {
    auto& a = mine.layer(i);
    const auto& b = single.layer(i);
    a.k.copy_(b.k.narrow(2, h0, hl));
    a.v.copy_(b.v.narrow(2, h0, hl));
    a.cond_k.copy_(b.cond_k.narrow(2, h0, hl));
    a.cond_v.copy_(b.cond_v.narrow(2, h0, hl));
    a.cond_end = b.cond_end;
  }
  const at::Tensor ring_before = single.layer(0).k.clone();
  const at::Tensor flow = model.StreamBlock(in, mine);

  WORKER_OK(model.set_sequence_parallel(nullptr));
  const at::Tensor flow_single = model.StreamBlock(in, single);

  if (CompareTensor(rank, what + " flow", flow, flow_single, totals)) return 1;
  // Controls: the block wrote its rows, and another head slice would not match (the comparison discriminates).
  const auto plan = runtime::PlanRing(in.current_start, x.size(1) * fs, ring);
  const auto rows = [&](const at::Tensor& t) { return t.narrow(1, plan.write_pos, x.size(1) * fs); };
  WORKER_CHECK(flow.abs().max().item<double>() > 0, what + ": zero flow");
  WORKER_CHECK(RelL2(rows(single.layer(0).k), rows(ring_before)) > 1e-3, what + ": ring rows not written");
  WORKER_CHECK(RelL2(rows(mine.layer(0).k), rows(single.layer(0).k.roll(1, 2).narrow(2, h0, hl))) > 1e-3,
               what + ": a shifted head slice matches too");
  for (int64_t i = 0; i < model.config().num_layers; ++i) {
    const auto& a = mine.layer(i);
    const auto& b = single.layer(i);
    const std::string p = what + " layer " + std::to_string(i);
    if (CompareTensor(rank, p + " ring k", a.k, b.k.narrow(2, h0, hl), totals)) return 1;
    if (CompareTensor(rank, p + " ring v", a.v, b.v.narrow(2, h0, hl), totals)) return 1;
  }
  ++totals->runs;
  return CheckBytes(comm, what, mine, single, heads, hl);
}

// Random inputs on a 10 x 10 latent grid (sink 58 tokens, blocks of 3 and 2 frames: 75 and 50 tokens, so the
// padding path runs for every P in 2..4): sink prefill, then two streaming calls on the same caches. In bf16 the
// model and caches are bf16 (q/k/v travel as bf16).
int RunOddGrid(Communicator& comm, const std::shared_ptr<SequenceParallel>& sp, const Variant& variant,
               at::ScalarType dtype, Totals* totals) {
  const int rank = comm.Rank();
  const std::string what = "odd grid [" + variant.label + ", " + c10::toString(dtype) +
                           ", P=" + std::to_string(comm.Size()) + "]";
  const double tol = dtype == at::kFloat ? kSplitTol : kBf16SplitTol;
  auto model_or = CausalWanS2V::Create(variant.config, variant.weights, dtype, c10::Device(c10::kCPU));
  WORKER_OK(model_or.status());
  CausalWanS2V& model = *model_or;
  const auto& c = model.config();
  const int64_t h = 10, w = 10, fs = c.FrameSeqLen(h, w);
  at::manual_seed(5);
  const models::dit::SinkInputs sink{at::randn({1, c.in_dim, 1, h, w}), at::randn({1, c.in_dim, 19, h, w}),
                                     at::randn({5, c.text_dim})};
  std::vector<models::dit::StreamInputs> blocks(2);
  int64_t start = 0;
  for (int64_t b = 0; b < 2; ++b) {
    const int64_t frames = 3 - b;
    auto& in = blocks[b];
    in.x = at::randn({c.in_dim, frames, h, w});
    in.timestep = at::linspace(900.0, 300.0, frames).view({1, frames});
    in.context = sink.context;
    in.cond_states = at::randn({1, c.cond_dim, frames, h, w});
    in.audio_input = at::randn({1, 25, c.audio_dim, 4 * frames});
    in.current_start = start;
    in.relative_dist = 7;
    start += frames * fs;
  }
  const int64_t heads = c.num_heads;
  auto run = [&](const std::shared_ptr<SequenceParallel>& mode, std::vector<at::Tensor>* flows) {
    ThrowIfError(model.set_sequence_parallel(mode));
    auto cache = std::make_unique<runtime::DitStepCache>(model.CacheGeometry(h, w, 12),
                                                          at::TensorOptions().dtype(dtype));
    model.SinkPrefill(sink, *cache);
    for (const auto& in : blocks) flows->push_back(model.StreamBlock(in, *cache));
    return cache;
  };
  std::vector<at::Tensor> flows_single, flows_split;
  auto single = run(nullptr, &flows_single);
  auto mine = run(sp, &flows_split);
  const int64_t hl = sp->LocalHeads(heads), h0 = sp->HeadOffset(heads);
  for (size_t b = 0; b < blocks.size(); ++b) {
    if (CompareTensor(rank, what + " flow " + std::to_string(b), flows_split[b], flows_single[b], totals, tol)) {
      return 1;
    }
  }
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = what + " layer " + std::to_string(i);
    const auto& a = mine->layer(i);
    const auto& b = single->layer(i);
    WORKER_CHECK(a.cond_end == b.cond_end, p + " cond_end");
    if (CompareTensor(rank, p + " ring k", a.k, b.k.narrow(2, h0, hl), totals, tol)) return 1;
    if (CompareTensor(rank, p + " ring v", a.v, b.v.narrow(2, h0, hl), totals, tol)) return 1;
    if (CompareTensor(rank, p + " cond_k", a.cond_k, b.cond_k.narrow(2, h0, hl), totals, tol)) return 1;
    if (CompareTensor(rank, p + " cond_v", a.cond_v, b.cond_v.narrow(2, h0, hl), totals, tol)) return 1;
  }
  ++totals->runs;
  return CheckBytes(comm, what, *mine, *single, heads, hl);
}

int RunParity() {
  int rank = -1;
  auto world = DetectWorld();
  WORKER_OK(world.status());
  CommOptions options;
  options.backend = BackendKind::kGloo;
  options.timeout = std::chrono::seconds(60);
  auto comm_or = InitCommunicator(*world, options);
  WORKER_OK(comm_or.status());
  Communicator& comm = **comm_or;
  rank = comm.Rank();
  const int p = comm.Size();
  auto sp = MakeUlysses(*comm_or);
  WORKER_CHECK(sp->world() == p && sp->rank() == rank, "world/rank");

  auto ckpt = models::dit::LoadDitCheckpoint(GoldenDir("dit"));
  WORKER_OK(ckpt.status());
  std::vector<Variant> variants;
  if (p <= ckpt->config.num_heads) {
    variants.push_back({"fixture", ckpt->config, ckpt->weights, true});
  } else if (rank == 0) {
    std::fprintf(stderr, "[ note ] fixture model has %lld heads < P = %d: random model only\n",
                 static_cast<long long>(ckpt->config.num_heads), p);
  }
  variants.push_back(RandomVariant(ckpt->config));

  Totals totals;
  const auto cases = testing::DiscoverCases("dit", {"sink", "stream"});
  WORKER_CHECK(!cases.empty(), "no sink/stream cases under " + GoldenDir("dit"));
  for (const auto& path : cases) {
    const GoldenCase c(path);
    for (const auto& variant : variants) {
      const std::string what = c.name() + " [" + variant.label + ", P=" + std::to_string(p) + "]";
      auto model = MakeModel(variant, c);
      WORKER_OK(model.status());
      WORKER_CHECK(model->config().num_heads >= p, what + ": heads");
      int rc = 1;
      if (c.kind() == "sink") {
        rc = RunSink(comm, sp, *model, c, what, &totals);
      } else {
        rc = RunStream(comm, sp, *model, c, variant, what, &totals);
      }
      if (rc != 0) return rc;
    }
  }
  for (const auto& variant : variants) {
    if (RunOddGrid(comm, sp, variant, at::kFloat, &totals) != 0) return 1;
  }
  Totals bf16;
  if (RunOddGrid(comm, sp, variants.back(), at::kBFloat16, &bf16) != 0) return 1;
  std::fprintf(stderr,
               "[ measured ] rank %d P=%d: %d fp32 runs, worst Ulysses vs single-process rel L2 %.3g; bf16 %.3g\n",
               rank, p, totals.runs, totals.worst, bf16.worst);
  WORKER_OK(comm.Barrier()->Wait());
  return 0;
}

int RunScenario(const std::string& scenario) {
  alarm(300);  // a hung worker dies (and the launcher reports it) instead of hanging the test
  int rank = -1;
  if (scenario == "parity") return RunParity();
  WORKER_CHECK(false, "unknown scenario " + scenario);
  return 1;
}

LA_DIST_WORKER_HOOK(kScenarioEnv, RunScenario);

// ---------------------------------------------------------------------------------------------------------------
// Test side.

LaunchResult RunWorkers(int nproc) { return testutil::RunScenarioWorkers(kScenarioEnv, nproc, "parity"); }

TEST(UlyssesTest, MatchesSingleProcessOnTwoRanks) {
  SKIP_WITHOUT_GLOO();
  LaunchResult r = RunWorkers(2);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
}

TEST(UlyssesTest, MatchesSingleProcessOnThreeRanksUnevenHeads) {
  SKIP_WITHOUT_GLOO();
  LaunchResult r = RunWorkers(3);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
}

TEST(UlyssesTest, MatchesSingleProcessOnFourRanks) {
  SKIP_WITHOUT_GLOO();
  LaunchResult r = RunWorkers(4);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
}

// ---------------------------------------------------------------------------------------------------------------
// Single-process tests: the arithmetic, Scatter, and the whole model path with a world of one.

TEST(UlyssesSplitTest, HeadSplitIsUnevenWithTheFirstRanksOwningOneMore) {
  using models::dit::LocalHeadCount;
  using models::dit::LocalHeadOffset;
  EXPECT_EQ(LocalHeadCount(40, 3, 0), 14);
  EXPECT_EQ(LocalHeadCount(40, 3, 1), 13);
  EXPECT_EQ(LocalHeadCount(40, 3, 2), 13);
  EXPECT_EQ(LocalHeadOffset(40, 3, 0), 0);
  EXPECT_EQ(LocalHeadOffset(40, 3, 1), 14);
  EXPECT_EQ(LocalHeadOffset(40, 3, 2), 27);
  for (int64_t heads : {1, 2, 5, 40}) {
    for (int64_t world = 1; world <= 8; ++world) {
      int64_t total = 0;
      for (int64_t r = 0; r < world; ++r) {
        EXPECT_EQ(LocalHeadOffset(heads, world, r), total) << heads << " heads, world " << world << ", rank " << r;
        const int64_t h = LocalHeadCount(heads, world, r);
        EXPECT_TRUE(h == heads / world || h == heads / world + 1);
        if (r > 0) {
          EXPECT_LE(h, LocalHeadCount(heads, world, r - 1));
        }
        total += h;
      }
      EXPECT_EQ(total, heads);
      EXPECT_EQ(LocalHeadOffset(heads, world, world), heads);
    }
  }
}

TEST(UlyssesSplitTest, SequenceIsPaddedToAMultipleOfTheWorld) {
  using models::dit::PaddedSequenceLength;
  using models::dit::SequenceChunkLength;
  EXPECT_EQ(SequenceChunkLength(10, 4), 3);
  EXPECT_EQ(PaddedSequenceLength(10, 4), 12);
  EXPECT_EQ(SequenceChunkLength(12, 4), 3);
  EXPECT_EQ(PaddedSequenceLength(12, 4), 12);
  EXPECT_EQ(SequenceChunkLength(1, 3), 1);
  EXPECT_EQ(PaddedSequenceLength(1, 3), 3);
  EXPECT_EQ(SequenceChunkLength(0, 3), 0);
  EXPECT_EQ(SequenceChunkLength(7, 1), 7);
}

// A SequenceParallel of a given world/rank without communication (Scatter only).
class ScatterOnly final : public SequenceParallel {
 public:
  ScatterOnly(int world, int rank) : world_(world), rank_(rank) {}
  int world() const override { return world_; }
  int rank() const override { return rank_; }
  at::Tensor Gather(const at::Tensor&, int64_t) const override { throw std::logic_error("no gather"); }
  at::Tensor Attention(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                       const AttentionInner&) const override {
    throw std::logic_error("no attention");
  }

 private:
  int world_, rank_;
};

TEST(UlyssesSplitTest, ScatterChunksAreTheZeroPaddedSequenceInRankOrder) {
  at::manual_seed(0);
  for (int64_t n : {1, 7, 12, 13}) {
    for (int world : {1, 2, 3, 4, 5}) {
      const auto x = at::randn({1, n, 6});
      std::vector<at::Tensor> chunks;
      for (int r = 0; r < world; ++r) {
        auto chunk = ScatterOnly(world, r).Scatter(x);
        EXPECT_EQ(chunk.size(1), models::dit::SequenceChunkLength(n, world));
        EXPECT_TRUE(chunk.is_contiguous());
        chunks.push_back(chunk);
      }
      const auto joined = at::cat(chunks, 1);
      ASSERT_EQ(joined.size(1), models::dit::PaddedSequenceLength(n, world));
      EXPECT_TRUE(at::equal(joined.narrow(1, 0, n), x)) << "n " << n << ", world " << world;
      EXPECT_EQ(joined.narrow(1, n, joined.size(1) - n).abs().sum().item<double>(), 0.0);
    }
  }
}

TEST(UlyssesSplitTest, ModelRejectsMoreRanksThanHeads) {
  auto ckpt = models::dit::LoadDitCheckpoint(GoldenDir("dit"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  const int64_t heads = ckpt->config.num_heads;
  auto model = CausalWanS2V::Create(ckpt->config, ckpt->weights, at::kFloat, c10::Device(c10::kCPU));
  ASSERT_TRUE(model.ok());
  Status s = model->set_sequence_parallel(std::make_shared<ScatterOnly>(static_cast<int>(heads) + 1, 0));
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("heads"), std::string::npos) << s.message();
  EXPECT_EQ(model->sequence_parallel(), nullptr);
  EXPECT_TRUE(model->set_sequence_parallel(std::make_shared<ScatterOnly>(static_cast<int>(heads), 0)).ok());
  EXPECT_EQ(model->CacheGeometry(8, 8, 12).num_heads, 1);
}

// With a world of one (fake communicator) every collective is the identity, so Ulysses runs the per-token
// modulation / chunked path of the model and must reproduce the plain model bit for bit up to rounding.
TEST(UlyssesSplitTest, WorldOfOneMatchesThePlainModel) {
  auto ckpt = models::dit::LoadDitCheckpoint(GoldenDir("dit"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  auto model = CausalWanS2V::Create(ckpt->config, ckpt->weights, at::kFloat, c10::Device(c10::kCPU));
  ASSERT_TRUE(model.ok());
  const auto& c = model->config();
  const int64_t h = 8, w = 8;
  at::manual_seed(0);
  models::dit::SinkInputs sink{at::randn({1, c.in_dim, 1, h, w}), at::randn({1, c.in_dim, 19, h, w}),
                               at::randn({5, c.text_dim})};
  models::dit::StreamInputs in;
  in.x = at::randn({c.in_dim, 3, h, w});
  in.timestep = at::tensor({900.0, 600.0, 300.0}).view({1, 3});
  in.context = sink.context;
  in.audio_input = at::randn({1, 25, c.audio_dim, 12});
  in.current_start = 3 * c.FrameSeqLen(h, w);
  in.relative_dist = 10;

  runtime::DitStepCache plain(model->CacheGeometry(h, w, 12), at::TensorOptions().dtype(at::kFloat));
  model->SinkPrefill(sink, plain);
  const auto ref = model->StreamBlock(in, plain);

  auto sp = MakeUlysses(MakeFakeCommunicator());
  ASSERT_TRUE(model->set_sequence_parallel(sp).ok());
  runtime::DitStepCache split(model->CacheGeometry(h, w, 12), at::TensorOptions().dtype(at::kFloat));
  EXPECT_EQ(CacheBytes(split), CacheBytes(plain));
  model->SinkPrefill(sink, split);
  const auto out = model->StreamBlock(in, split);
  EXPECT_LE(RelL2(out, ref), kSplitTol);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    EXPECT_LE(RelL2(split.layer(i).cond_k, plain.layer(i).cond_k), kSplitTol) << i;
    EXPECT_LE(RelL2(split.layer(i).k, plain.layer(i).k), kSplitTol) << i;
    EXPECT_LE(RelL2(split.layer(i).v, plain.layer(i).v), kSplitTol) << i;
  }
}

}  // namespace
}  // namespace liveavatar::dist
