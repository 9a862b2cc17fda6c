// Parity of the streaming denoising loop (pipeline/streaming_denoiser) with the reference's end-to-end DiT
// replay (golden README §1.8, kind "e2e"): sink prefill into one cache per step, blocks × steps with the Euler
// update, per-call rolling-sink offsets replayed from in.relative_dist, and the TPP sink refresh at clip 1.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "liveavatar/models/dit/model.h"
#include "liveavatar/pipeline/scheduler.h"
#include "liveavatar/pipeline/streaming_denoiser.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar::pipeline {
namespace {

using testing::GoldenCase;
using testing::RelL2Within;

class GoldenStreamingE2E : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenStreamingE2E, LatentsMatchReference) {
  GoldenCase c(GetParam());
  auto ckpt = models::dit::LoadDitCheckpoint(testing::GoldenDir("dit"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  auto dit = models::dit::CausalWanS2V::Create(ckpt->config, ckpt->weights, at::kFloat, at::Device(at::kCPU));
  ASSERT_TRUE(dit.ok()) << dit.status().ToString();

  const int64_t n_clips = c.MetaInt("n_clips");
  const int64_t n_steps = c.MetaInt("n_steps");
  const bool refresh = c.MetaBool("sink_refresh_at_clip1");
  const at::Tensor rel = c.Get("in.relative_dist");  // [clip, block, step]

  // The scheduler's own tables must be the case's (the case stores what the reference fed the model).
  FlowMatchEulerScheduler sched(1000, 3.0);
  sched.SetTimesteps(n_steps);
  ASSERT_TRUE(RelL2Within(sched.timesteps(), c.Get("in.timesteps"), 1e-6, "timesteps"));
  ASSERT_TRUE(RelL2Within(sched.sigmas(), c.Get("in.sigmas"), 1e-6, "sigmas"));

  const at::Tensor ref = c.Get("in.ref_latents");
  StreamGeometry geo;
  geo.latent_h = ref.size(3);
  geo.latent_w = ref.size(4);
  geo.infer_frames = c.MetaInt("infer_frames");
  geo.frames_per_block = c.MetaInt("frames_per_block");
  ASSERT_EQ(geo.latent_frames_per_clip() * dit->config().FrameSeqLen(geo.latent_h, geo.latent_w), c.MetaInt("kv_size"));

  RelativeDistSource replay = [&rel](int64_t clip, int64_t block, int64_t step) {
    return rel.index({clip, block, step}).item<int64_t>();
  };
  StreamingDenoiser den(&dit.value(), &sched, geo, at::TensorOptions().dtype(at::kFloat), replay);
  std::vector<std::string> flow_errors;
  den.set_flow_tap([&](int64_t clip, int64_t block, int64_t step, const at::Tensor& flow) {
    const std::string key = "dbg.clip" + std::to_string(clip) + ".block" + std::to_string(block) + ".step" +
                            std::to_string(step) + ".flow";
    if (c.Has(key)) {
      auto r = RelL2Within(flow, c.Get(key), 1e-4, key);
      if (!r) flow_errors.push_back(r.message());
    }
  });
  den.Prefill(c.Get("in.context"), ref, c.Get("in.motion_latents"));

  const at::Tensor audio = c.Get("in.audio_emb");
  const int64_t blocks = geo.blocks_per_clip();
  const int64_t fpb = geo.video_frames_per_block();
  at::Tensor refreshed;
  for (int64_t r = 0; r < n_clips; ++r) {
    if (r == 1 && refresh) den.RefreshSink(refreshed);
    const at::Tensor noise = c.Get("in.noise.clip" + std::to_string(r));
    std::vector<at::Tensor> outs;
    for (int64_t b = 0; b < blocks; ++b) {
      at::Tensor x = noise.narrow(1, b * geo.frames_per_block, geo.frames_per_block);
      at::Tensor a = audio.narrow(3, r * geo.infer_frames + b * fpb, fpb);
      at::Tensor y = den.DenoiseBlock(r, b, x, a);
      if (r == 0 && b == 0) refreshed = y.narrow(1, 0, 1).unsqueeze(0).clone();
      outs.push_back(y);
    }
    const std::string key = "out.latents.clip" + std::to_string(r);
    EXPECT_TRUE(RelL2Within(at::cat(outs, 1), c.Get(key), 1e-4, key));
  }
  if (c.Has("out.refreshed_ref_latents")) {
    EXPECT_TRUE(RelL2Within(refreshed, c.Get("out.refreshed_ref_latents"), 1e-4, "refreshed_ref_latents"));
  }
  for (const auto& e : flow_errors) ADD_FAILURE() << e;
}

LA_GOLDEN_CASES(GoldenStreamingE2E, "dit", {"e2e"});

TEST(RelativeDist, SeededIsDeterministicAndInRange) {
  auto a = SeededRelativeDist(7), b = SeededRelativeDist(7), other = SeededRelativeDist(8);
  bool differs = false;
  for (int64_t clip = 0; clip < 3; ++clip) {
    for (int64_t block = 0; block < 4; ++block) {
      for (int64_t step = 0; step < 4; ++step) {
        const int64_t d = a(clip, block, step);
        EXPECT_GE(d, 4);
        EXPECT_LE(d, 30);
        EXPECT_EQ(d, b(clip, block, step));
        differs = differs || d != other(clip, block, step);
      }
    }
  }
  EXPECT_TRUE(differs);
  EXPECT_EQ(FixedRelativeDist(11)(5, 2, 1), 11);
}

}  // namespace
}  // namespace liveavatar::pipeline
