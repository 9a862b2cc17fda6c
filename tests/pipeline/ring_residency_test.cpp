// Ring residency of the streaming denoiser (--offload_kv_cache, docs/offload.md): on every golden e2e case the
// streaming loop with host-resident step caches (one or two device slots, and combined with the block-offloaded
// DiT) must give the resident mode's flow predictions and latents bit for bit, hold only the slots on the device
// and leave identical caches behind.
#include <map>
#include <tuple>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/models/dit/block_offload.h"
#include "liveavatar/models/dit/model.h"
#include "liveavatar/pipeline/scheduler.h"
#include "liveavatar/pipeline/streaming_denoiser.h"
#include "liveavatar/testing/golden.h"
#include "pipeline/e2e_replay.h"

namespace liveavatar::pipeline {
namespace {

using testing::GoldenCase;

struct ReplayResult {
  std::map<std::tuple<int64_t, int64_t, int64_t>, at::Tensor> flows;
  std::vector<at::Tensor> latents;  // per clip
  std::vector<std::vector<at::Tensor>> final_k;  // per step, per layer: the ring after the last call
  int64_t device_bytes = 0, host_bytes = 0, bytes_in = 0, bytes_out = 0;
};

// The streaming loop of the e2e case (same driving as streaming_golden_test.cpp).
ReplayResult Replay(const GoldenCase& c, const models::dit::CausalWanS2V& dit, const RingResidency& residency) {
  FlowMatchEulerScheduler sched(1000, 3.0);
  sched.SetTimesteps(c.MetaInt("n_steps"));
  const StreamGeometry geo = testutil::E2eGeometry(c);
  StreamingDenoiser den(&dit, &sched, geo, at::TensorOptions().dtype(at::kFloat), testutil::E2eRelativeDist(c));
  den.set_ring_residency(residency);
  ReplayResult run;
  den.set_flow_tap([&](int64_t clip, int64_t block, int64_t step, const at::Tensor& flow) {
    run.flows[{clip, block, step}] = flow.clone();
  });
  run.latents = testutil::RunE2eCase(den, c, geo).clips;
  for (int64_t s = 0; s < den.num_steps(); ++s) {
    const auto& cache = den.StepCache(s);
    std::vector<at::Tensor> ks;
    for (int64_t i = 0; i < cache.num_layers(); ++i) {
      ks.push_back(cache.layer(i).k.clone());
      ks.push_back(cache.layer(i).v.clone());
      ks.push_back(cache.layer(i).cond_k.clone());
    }
    run.final_k.push_back(ks);
  }
  run.device_bytes = den.device_cache_bytes();
  run.host_bytes = den.host_cache_bytes();
  run.bytes_in = den.ring_bytes_in();
  run.bytes_out = den.ring_bytes_out();
  // Switching back to resident keeps the contents.
  if (residency.enabled) {
    den.set_ring_residency(RingResidency());
    EXPECT_EQ(den.host_cache_bytes(), 0);
    EXPECT_TRUE(at::equal(den.StepCache(0).layer(0).k, run.final_k[0][0]));
  }
  return run;
}

void ExpectSameRun(const ReplayResult& a, const ReplayResult& b, const std::string& what) {
  ASSERT_EQ(a.flows.size(), b.flows.size()) << what;
  for (const auto& [key, flow] : a.flows) {
    auto it = b.flows.find(key);
    ASSERT_NE(it, b.flows.end()) << what;
    EXPECT_TRUE(at::equal(flow, it->second)) << what << ": flow of clip " << std::get<0>(key) << " block "
                                              << std::get<1>(key) << " step " << std::get<2>(key);
  }
  ASSERT_EQ(a.latents.size(), b.latents.size());
  for (size_t r = 0; r < a.latents.size(); ++r) EXPECT_TRUE(at::equal(a.latents[r], b.latents[r])) << what;
  ASSERT_EQ(a.final_k.size(), b.final_k.size());
  for (size_t s = 0; s < a.final_k.size(); ++s) {
    for (size_t j = 0; j < a.final_k[s].size(); ++j) {
      EXPECT_TRUE(at::equal(a.final_k[s][j], b.final_k[s][j])) << what << ": cache of step " << s << " tensor " << j;
    }
  }
}

class GoldenRingResidency : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenRingResidency, MatchesResidentCachesBitForBit) {
  GoldenCase c(GetParam());
  auto ckpt = models::dit::LoadDitCheckpoint(testing::GoldenDir("dit"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  auto dit = models::dit::CausalWanS2V::Create(ckpt->config, ckpt->weights, at::kFloat, at::Device(at::kCPU));
  ASSERT_TRUE(dit.ok()) << dit.status().ToString();

  const ReplayResult resident = Replay(c, *dit, RingResidency());
  const int64_t n_steps = c.MetaInt("n_steps");
  const at::Tensor ref = c.Get("in.ref_latents");
  const int64_t fs = dit->config().FrameSeqLen(ref.size(3), ref.size(4));
  StreamGeometry geo;
  geo.latent_h = ref.size(3);
  geo.latent_w = ref.size(4);
  geo.infer_frames = c.MetaInt("infer_frames");
  const auto g = dit->CacheGeometry(geo.latent_h, geo.latent_w, geo.latent_frames_per_clip());
  ASSERT_EQ(g.ring_tokens, geo.latent_frames_per_clip() * fs);
  const int64_t step_bytes = runtime::DitCacheBytes(g, at::kFloat);
  EXPECT_EQ(resident.device_bytes, n_steps * step_bytes);
  EXPECT_EQ(resident.host_bytes, 0);
  // The fixture's latents, as a sanity check of the replay itself.
  EXPECT_TRUE(testing::RelL2Within(resident.latents[0], c.Get("out.latents.clip0"), 1e-4, "out.latents.clip0"));

  for (int slots : {1, 2}) {
    RingResidency r;
    r.enabled = true;
    r.device_slots = slots;
    const ReplayResult ring = Replay(c, *dit, r);
    const std::string what = std::to_string(slots) + " slot(s)";
    ExpectSameRun(resident, ring, what);
    EXPECT_EQ(ring.device_bytes, std::min<int64_t>(slots, n_steps) * step_bytes) << what;
    EXPECT_EQ(ring.host_bytes, n_steps * step_bytes) << what;
    EXPECT_GT(ring.bytes_in, 0);
    EXPECT_GT(ring.bytes_out, 0);
    std::printf("[ring] %s, %d slot(s): device cache %lld B (one step %lld B), host %lld B, in %lld B, out %lld B\n",
                c.name().c_str(), slots, static_cast<long long>(ring.device_bytes),
                static_cast<long long>(step_bytes), static_cast<long long>(ring.host_bytes),
                static_cast<long long>(ring.bytes_in), static_cast<long long>(ring.bytes_out));
  }

  // Ring residency + block offload together (the single-GPU low-memory configuration).
  models::dit::OffloadOptions o;
  o.lookahead = 1;
  auto off = models::dit::BlockOffloader::Create(ckpt->config, ckpt->weights, o);
  ASSERT_TRUE(off.ok()) << off.status().ToString();
  RingResidency r;
  r.enabled = true;
  const ReplayResult both = Replay(c, (*off)->model(), r);
  ExpectSameRun(resident, both, "ring residency + block offload");
  EXPECT_LE((*off)->accounting().peak_device_blocks, 2);
}

LA_GOLDEN_CASES(GoldenRingResidency, "dit", {"e2e"});

TEST(RingResidency, RejectsZeroSlots) {
  auto ckpt = models::dit::LoadDitCheckpoint(testing::GoldenDir("dit"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  auto dit = models::dit::CausalWanS2V::Create(ckpt->config, ckpt->weights, at::kFloat, at::Device(at::kCPU));
  ASSERT_TRUE(dit.ok());
  FlowMatchEulerScheduler sched(1000, 3.0);
  sched.SetTimesteps(2);
  StreamGeometry geo;
  geo.latent_h = 8;
  geo.latent_w = 8;
  StreamingDenoiser den(&dit.value(), &sched, geo, at::TensorOptions().dtype(at::kFloat), FixedRelativeDist(4));
  RingResidency r;
  r.enabled = true;
  r.device_slots = 0;
  EXPECT_THROW(den.set_ring_residency(r), c10::Error);
  r.device_slots = 5;  // capped at the two owned steps
  den.set_ring_residency(r);
  EXPECT_EQ(den.device_cache_bytes(), den.host_cache_bytes());
}

}  // namespace
}  // namespace liveavatar::pipeline
