// How the pipeline tests drive a golden "e2e" case (golden README §1.8) through the StreamingDenoiser: the
// stream geometry and the replayed rolling-sink offsets of the case, and the clip/block loop with the sink refresh
// at clip 1. Shared by streaming_golden_test.cpp (parity) and ring_residency_test.cpp (residency modes).
#pragma once

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "liveavatar/pipeline/streaming_denoiser.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar::pipeline::testutil {

// The latent grid of in.ref_latents and the case's frames per clip / block.
inline StreamGeometry E2eGeometry(const testing::GoldenCase& c) {
  const at::Tensor ref = c.Get("in.ref_latents");
  StreamGeometry geo;
  geo.latent_h = ref.size(3);
  geo.latent_w = ref.size(4);
  geo.infer_frames = c.MetaInt("infer_frames");
  geo.frames_per_block = c.MetaInt("frames_per_block");
  return geo;
}

// The reference's per-call offsets, in.relative_dist [clip, block, step].
inline RelativeDistSource E2eRelativeDist(const testing::GoldenCase& c) {
  const at::Tensor rel = c.Get("in.relative_dist");
  return [rel](int64_t clip, int64_t block, int64_t step) { return rel.index({clip, block, step}).item<int64_t>(); };
}

struct E2eLatents {
  std::vector<at::Tensor> clips;  // per clip: the denoised latents of its blocks, concatenated on frames
  at::Tensor refreshed;           // the first latent frame of clip 0 (the sink refresh input)
};

// Sink prefill, then every block of every clip from the case's noise and audio; refreshes the sink at clip 1
// when the case says so.
inline E2eLatents RunE2eCase(StreamingDenoiser& den, const testing::GoldenCase& c, const StreamGeometry& geo) {
  den.Prefill(c.Get("in.context"), c.Get("in.ref_latents"), c.Get("in.motion_latents"));
  const at::Tensor audio = c.Get("in.audio_emb");
  const int64_t blocks = geo.blocks_per_clip();
  const int64_t fpb = geo.video_frames_per_block();
  const bool refresh = c.MetaBool("sink_refresh_at_clip1");
  E2eLatents out;
  for (int64_t r = 0; r < c.MetaInt("n_clips"); ++r) {
    if (r == 1 && refresh) den.RefreshSink(out.refreshed);
    const at::Tensor noise = c.Get("in.noise.clip" + std::to_string(r));
    std::vector<at::Tensor> outs;
    for (int64_t b = 0; b < blocks; ++b) {
      at::Tensor x = noise.narrow(1, b * geo.frames_per_block, geo.frames_per_block);
      at::Tensor a = audio.narrow(3, r * geo.infer_frames + b * fpb, fpb);
      at::Tensor y = den.DenoiseBlock(r, b, x, a);
      if (r == 0 && b == 0) out.refreshed = y.narrow(1, 0, 1).unsqueeze(0).clone();
      outs.push_back(y);
    }
    out.clips.push_back(at::cat(outs, 1));
  }
  return out;
}

}  // namespace liveavatar::pipeline::testutil
