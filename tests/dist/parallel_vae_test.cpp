// Spatial-parallel VAE decode (dist::MakeSpatialParallel + models::vae::StreamingDecoder) on 2 and 3 Gloo
// processes: every worker decodes the same latents once on its own (single rank) and once split over the group,
// and checks that the two agree (fp32: rel. L2 <= 1e-5) and, for the golden cases, that the split result matches
// the fixture (rel. L2 <= 1e-4). The test binary launches copies of itself with dist::LaunchLocal; a copy started
// with LA_PVAE_TEST_SCENARIO set runs that scenario as one rank from a static initializer, before gtest's main,
// and exits with 0 (every check passed) or 1 (a message on stderr names the failed check).
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "dist/dist_test_harness.h"
#include "liveavatar/dist/communicator.h"
#include "liveavatar/dist/launcher.h"
#include "liveavatar/dist/parallel_vae.h"
#include "liveavatar/dist/world.h"
#include "liveavatar/models/vae/vae.h"
#include "liveavatar/models/vae/weights.h"
#include "liveavatar/testing/golden.h"
#include "liveavatar/testing/synthetic.h"

namespace liveavatar::dist {
namespace {

using models::vae::StreamingDecoder;
using models::vae::VaeConfig;
using models::vae::WanVae;
using testing::GoldenCase;
using testing::GoldenDir;
using testing::RelL2;

constexpr char kScenarioEnv[] = "LA_PVAE_TEST_SCENARIO";
constexpr double kSplitTol = 1e-5;    // split vs single-rank decode, fp32
constexpr double kGoldenTol = 1e-4;   // split decode vs the fixture, fp32
// bf16 weights: the convolutions round their outputs to bf16, so the split and the single-rank decode are two
// equally accurate roundings (CPU kernels block differently for other row counts, which flips single ulps that
// then propagate). Checked: split vs single <= kBf16SplitTol (a halo or gather bug is O(1)), and the split is as
// close to the fp32 decode as the single-rank bf16 decode: err(split) <= kBf16Slack * err(single) + kBf16Floor.
constexpr double kBf16SplitTol = 5e-2;
constexpr double kBf16Slack = 1.25;
constexpr double kBf16Floor = 5e-3;

// ---------------------------------------------------------------------------------------------------------------
// Worker side.

StatusOr<CommunicatorPtr> JoinWorld() {
  LA_ASSIGN_OR_RETURN(WorldInfo world, DetectWorld());
  CommOptions options;
  options.backend = BackendKind::kGloo;
  options.timeout = std::chrono::seconds(60);
  return InitCommunicator(world, options);
}

// Compares `split` with `single` (and with `ref` when defined); prints the measured errors.
int Compare(int rank, const std::string& what, const at::Tensor& split, const at::Tensor& single, double tol,
            const at::Tensor& ref = at::Tensor()) {
  WORKER_CHECK(split.sizes() == single.sizes(), what + ": split decode shape differs from the single-rank one");
  const double err = RelL2(split, single);
  const double max_abs = (split - single).abs().max().item<double>();
  std::fprintf(stderr, "[ measured ] rank %d %s: split vs single rel L2 %.3g (max abs %.3g)", rank, what.c_str(), err,
               max_abs);
  double ref_err = 0.0;
  if (ref.defined()) {
    WORKER_CHECK(split.sizes() == ref.sizes(), what + ": shape differs from the fixture");
    ref_err = RelL2(split, ref);
    std::fprintf(stderr, ", split vs fixture rel L2 %.3g", ref_err);
  }
  std::fprintf(stderr, "\n");
  WORKER_CHECK(err <= tol, what + ": split vs single rel L2 " + std::to_string(err));
  WORKER_CHECK(!ref.defined() || ref_err <= kGoldenTol, what + ": split vs fixture rel L2 " + std::to_string(ref_err));
  return 0;
}

// The output rows of this rank (DecodeLocal) must be the matching rows of the split Decode().
int CheckLocal(int rank, const std::string& what, const StreamingDecoder& decoder, int64_t latent_h,
               const at::Tensor& local, const at::Tensor& full) {
  const auto [first, count] = decoder.LocalOutputRows(latent_h);
  WORKER_CHECK(local.size(3) == count, what + ": DecodeLocal returned " + std::to_string(local.size(3)) +
                                           " rows, LocalOutputRows says " + std::to_string(count));
  WORKER_CHECK(local.equal(full.narrow(3, first, count)), what + ": DecodeLocal rows differ from Decode's slab");
  return 0;
}

// Streams `latents` in `chunks` through a single-rank and a split decoder (and a DecodeLocal one); compares
// every call. `ref_keys` (optional) names the fixture tensor of every call; `fp32` (optional, for bf16 `vae`) is
// the same VAE in fp32, whose decode both must approach equally well.
int StreamAndCompare(int rank, const std::string& what, const WanVae& vae,
                     const std::shared_ptr<models::vae::SpatialParallel>& sp, const at::Tensor& latents,
                     const std::vector<int64_t>& chunks, double tol, const GoldenCase* golden = nullptr,
                     const std::vector<std::string>& ref_keys = {}, const WanVae* fp32 = nullptr) {
  StreamingDecoder single(&vae);
  StreamingDecoder split(&vae, sp);
  StreamingDecoder local(&vae, sp);
  std::unique_ptr<StreamingDecoder> exact;
  if (fp32 != nullptr) exact = std::make_unique<StreamingDecoder>(fp32);
  int64_t start = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const at::Tensor chunk = latents.narrow(2, start, chunks[i]);
    start += chunks[i];
    const std::string label = what + " chunk " + std::to_string(i);
    const at::Tensor a = single.Decode(chunk);
    const at::Tensor b = split.Decode(chunk);
    const at::Tensor c = local.DecodeLocal(chunk);
    const at::Tensor ref = golden != nullptr && i < ref_keys.size() ? golden->Get(ref_keys[i]) : at::Tensor();
    if (exact != nullptr) {
      const at::Tensor e = exact->Decode(chunk);
      const double err_single = RelL2(a, e), err_split = RelL2(b, e);
      std::fprintf(stderr, "[ measured ] rank %d %s: vs the fp32 decode: single %.3g, split %.3g\n", rank,
                   label.c_str(), err_single, err_split);
      WORKER_CHECK(err_split <= kBf16Slack * err_single + kBf16Floor,
                   label + ": the split decode is less accurate than the single-rank one");
    }
    if (Compare(rank, label, b, a, tol, ref) != 0) return 1;
    if (CheckLocal(rank, label, local, latents.size(3), c, b) != 0) return 1;
  }
  WORKER_CHECK(split.latents_seen() == start && split.cache_bytes() > 0, what + ": decoder state");
  return 0;
}

WanVae LoadGoldenVae() {
  models::LoadOptions opts;
  opts.dtype = at::kFloat;
  auto vae = models::vae::LoadWanVae(GoldenDir("vae") + "/Wan2.1_VAE.safetensors", GoldenDir("vae") + "/config.json",
                                     opts);
  if (!vae.ok()) throw std::runtime_error(vae.status().ToString());
  return std::move(vae).value();
}

// One golden case (path in LA_PVAE_CASE) decoded split over the world.
int RunGolden(Communicator& comm, const std::shared_ptr<models::vae::SpatialParallel>& sp) {
  const int rank = comm.Rank();
  const char* path = std::getenv("LA_PVAE_CASE");
  WORKER_CHECK(path != nullptr, "LA_PVAE_CASE not set");
  const GoldenCase c(path);
  const WanVae vae = LoadGoldenVae();
  const std::string kind = c.kind();
  if (kind == "vae_decode") {
    const at::Tensor latent = c.Get("in.latent");
    WORKER_OK(models::vae::CheckSpatialSplit(vae.config, latent.size(3), comm.Size()));
    const at::Tensor single = models::vae::Decode(vae, latent);
    const at::Tensor split = models::vae::Decode(vae, latent, sp);
    if (Compare(rank, c.name() + " out.video_raw", split, single, kSplitTol, c.Get("out.video_raw")) != 0) return 1;
    if (c.Has("out.video")) {
      const at::Tensor ref = c.Get("out.video");
      const double err = RelL2(models::vae::ClampVideo(split), ref);
      std::fprintf(stderr, "[ measured ] rank %d %s out.video: split vs fixture rel L2 %.3g\n", rank,
                   c.name().c_str(), err);
      WORKER_CHECK(err <= kGoldenTol, "out.video vs fixture");
    }
    // The same latents as a stream of one-latent blocks.
    std::vector<int64_t> ones(static_cast<size_t>(latent.size(2)), 1);
    return StreamAndCompare(rank, c.name() + " one-latent stream", vae, sp, latent, ones, kSplitTol);
  }
  if (kind == "vae_stream_decode") {
    const at::Tensor latents = c.Get("in.latents");
    const at::Tensor sizes = c.Get("in.chunk_sizes").to(at::kLong);
    std::vector<int64_t> chunks;
    std::vector<std::string> keys;
    for (int64_t i = 0; i < sizes.numel(); ++i) {
      chunks.push_back(sizes[i].item<int64_t>());
      keys.push_back("out.chunk" + std::to_string(i) + ".video_raw");
    }
    return StreamAndCompare(rank, c.name(), vae, sp, latents, chunks, kSplitTol, &c, keys);
  }
  WORKER_CHECK(false, c.path() + ": no parallel decode for kind " + kind);
  return 1;
}

// Random weights (seeded, equal on every rank) with attention blocks inside the first two decoder levels as well
// as the middle one; latent height LA_PVAE_H; fp32 and bf16; a stream of several blocks, Reset(), and a second stream.
WanVae RandomVae(at::ScalarType dtype) {
  VaeConfig config;
  config.dim = 4;
  config.attn_scales = {0.25, 0.5};  // decoder levels 0 (latent rows) and 1 (2x rows)
  return testing::RandomVae(config, 7, dtype);
}

int RunRandom(Communicator& comm, const std::shared_ptr<models::vae::SpatialParallel>& sp) {
  const int rank = comm.Rank();
  const char* h_env = std::getenv("LA_PVAE_H");
  WORKER_CHECK(h_env != nullptr, "LA_PVAE_H not set");
  const int64_t h = std::atoll(h_env);
  at::manual_seed(11);
  const at::Tensor latents = at::randn({1, 16, 6, h, 5});
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const WanVae vae = RandomVae(dtype);
    WORKER_OK(models::vae::CheckSpatialSplit(vae.config, h, comm.Size()));
    const double tol = dtype == at::kFloat ? kSplitTol : kBf16SplitTol;
    const std::string what = std::string("random h=") + std::to_string(h) + " " + c10::toString(dtype);
    const WanVae fp32 = RandomVae(at::kFloat);
    if (StreamAndCompare(rank, what + " stream [1,2,3]", vae, sp, latents, {1, 2, 3}, tol, nullptr, {},
                         dtype == at::kFloat ? nullptr : &fp32) != 0) {
      return 1;
    }

    // Reset: a second stream of other latents (and another height) through the same decoders.
    StreamingDecoder single(&vae);
    StreamingDecoder split(&vae, sp);
    (void)single.Decode(latents.narrow(2, 0, 2));
    (void)split.Decode(latents.narrow(2, 0, 2));
    single.Reset();
    split.Reset();
    const at::Tensor other = latents.narrow(2, 2, 3).narrow(3, 0, h - 1 >= comm.Size() ? h - 1 : h).contiguous();
    if (Compare(rank, what + " after Reset", split.Decode(other), single.Decode(other), tol) != 0) return 1;
  }
  return 0;
}

// A latent too short for the group is refused with a Status, and the decoder throws that message before any
// collective (so no rank hangs).
int RunRefuse(Communicator& comm, const std::shared_ptr<models::vae::SpatialParallel>& sp) {
  const int rank = comm.Rank();
  const WanVae vae = RandomVae(at::kFloat);
  const int64_t h = comm.Size() - 1;
  const Status s = models::vae::CheckSpatialSplit(vae.config, h, comm.Size());
  WORKER_CHECK(s.code() == Status::Code::kInvalidArgument, "too few rows must be InvalidArgument: " + s.ToString());
  WORKER_CHECK(s.message().find("latent height " + std::to_string(h)) != std::string::npos &&
                   s.message().find(std::to_string(comm.Size()) + " VAE ranks") != std::string::npos,
               "message names the sizes: " + s.message());
  bool threw = false;
  try {
    StreamingDecoder decoder(&vae, sp);
    (void)decoder.Decode(at::zeros({1, 16, 1, h, 4}));
  } catch (const c10::Error& e) {
    threw = std::string(e.what()).find("latent height") != std::string::npos;
  }
  WORKER_CHECK(threw, "Decode with too few rows must throw the split message");
  VaeConfig tiled = vae.config;
  tiled.tile_decode = true;
  const Status t = models::vae::CheckSpatialSplit(tiled, 8, comm.Size());
  WORKER_CHECK(t.code() == Status::Code::kInvalidArgument && t.message().find("tile_decode") != std::string::npos,
               "tiling with a split must be refused: " + t.ToString());
  WORKER_OK(comm.Barrier()->Wait());
  return 0;
}

int RunScenario(const std::string& scenario) {
  alarm(120);  // a hung worker dies (and the launcher reports it) instead of hanging the test
  int rank = -1;
  auto comm = JoinWorld();
  WORKER_OK(comm.status());
  rank = (*comm)->Rank();
  auto sp = MakeSpatialParallel(*comm);
  WORKER_OK(sp.status());
  WORKER_CHECK((*sp)->world() == (*comm)->Size() && (*sp)->rank() == rank, "SpatialParallel world/rank");
  int rc = 1;
  if (scenario == "golden") {
    rc = RunGolden(**comm, *sp);
  } else if (scenario == "random") {
    rc = RunRandom(**comm, *sp);
  } else if (scenario == "refuse") {
    rc = RunRefuse(**comm, *sp);
  } else {
    WORKER_CHECK(false, "unknown scenario " + scenario);
  }
  if (rc != 0) return rc;
  WORKER_OK((*comm)->Barrier()->Wait());
  return 0;
}

LA_DIST_WORKER_HOOK(kScenarioEnv, RunScenario);

// ---------------------------------------------------------------------------------------------------------------
// Test side.

LaunchResult RunWorkers(int nproc, const std::string& scenario,
                        const std::vector<std::pair<std::string, std::string>>& env = {}) {
  return testutil::RunScenarioWorkers(kScenarioEnv, nproc, scenario, env);
}

// Latent height of a golden decode case (the rows to split).
int64_t LatentRows(const std::string& path) {
  GoldenCase c(path);
  return (c.Has("in.latent") ? c.Get("in.latent") : c.Get("in.latents")).size(3);
}

class GoldenParallelVae : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenParallelVae, TwoRanksEqualSingleRankAndGolden) {
  SKIP_WITHOUT_GLOO();
  if (LatentRows(GetParam()) < 2) GTEST_SKIP() << "latent height < 2 ranks";
  LaunchResult r = RunWorkers(2, "golden", {{"LA_PVAE_CASE", GetParam()}});
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
}

TEST_P(GoldenParallelVae, ThreeRanksEqualSingleRankAndGolden) {
  SKIP_WITHOUT_GLOO();
  if (LatentRows(GetParam()) < 3) GTEST_SKIP() << "latent height < 3 ranks";
  LaunchResult r = RunWorkers(3, "golden", {{"LA_PVAE_CASE", GetParam()}});
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
}

LA_GOLDEN_CASES(GoldenParallelVae, "vae", {"vae_decode", "vae_stream_decode"});

TEST(ParallelVaeTest, RandomWeightsWithAttentionLevelsOnTwoRanks) {
  SKIP_WITHOUT_GLOO();
  LaunchResult r = RunWorkers(2, "random", {{"LA_PVAE_H", "5"}});  // slabs 3 + 2
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
}

TEST(ParallelVaeTest, RandomWeightsOneLatentRowPerRankOnThreeRanks) {
  SKIP_WITHOUT_GLOO();
  LaunchResult r = RunWorkers(3, "random", {{"LA_PVAE_H", "3"}});  // slabs 1 + 1 + 1 (the smallest split)
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
}

TEST(ParallelVaeTest, TooFewLatentRowsAreRefusedOnThreeRanks) {
  SKIP_WITHOUT_GLOO();
  LaunchResult r = RunWorkers(3, "refuse");
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
}

// In-process: a group of one is the whole-frame decode, bit for bit.
TEST(ParallelVaeTest, GroupOfOneIsTheSingleRankDecode) {
  auto sp = MakeSpatialParallel(MakeFakeCommunicator());
  ASSERT_TRUE(sp.ok()) << sp.status().ToString();
  EXPECT_EQ((*sp)->world(), 1);
  const WanVae vae = RandomVae(at::kFloat);
  at::manual_seed(3);
  const at::Tensor latents = at::randn({1, 16, 3, 2, 3});
  EXPECT_TRUE(models::vae::Decode(vae, latents, *sp).equal(models::vae::Decode(vae, latents)));
}

TEST(ParallelVaeTest, MakeSpatialParallelRejectsANullGroup) {
  auto sp = MakeSpatialParallel(nullptr);
  ASSERT_FALSE(sp.ok());
  EXPECT_EQ(sp.status().code(), Status::Code::kInvalidArgument);
}

TEST(ParallelVaeTest, SplitRowsAreContiguousAndNearEqual) {
  EXPECT_EQ(models::vae::SplitRows(4, 3), (std::vector<int64_t>{2, 1, 1}));
  EXPECT_EQ(models::vae::SplitRows(6, 2), (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(models::vae::SplitOffset(4, 3, 2), 3);
  EXPECT_EQ(models::vae::SplitOffset(45, 4, 1), 12);  // 720-pixel rows: 12, 11, 11, 11 latent rows
  EXPECT_TRUE(models::vae::CheckSpatialSplit(VaeConfig(), 3, 3).ok());
  EXPECT_FALSE(models::vae::CheckSpatialSplit(VaeConfig(), 2, 3).ok());
  EXPECT_TRUE(models::vae::CheckSpatialSplit(VaeConfig(), 1, 1).ok());
}

}  // namespace
}  // namespace liveavatar::dist
