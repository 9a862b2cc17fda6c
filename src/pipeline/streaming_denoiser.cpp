#include "liveavatar/pipeline/streaming_denoiser.h"

#include <random>

#include <ATen/ATen.h>

namespace liveavatar::pipeline {

RelativeDistSource SeededRelativeDist(uint64_t seed) {
  return [seed](int64_t clip, int64_t block, int64_t step) -> int64_t {
    // A stateless per-call draw: independent of call order, so TPP stages and replays agree.
    std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(clip),
                      static_cast<uint32_t>(block), static_cast<uint32_t>(step)};
    std::mt19937_64 gen(seq);
    return std::uniform_int_distribution<int64_t>(4, 30)(gen);
  };
}

RelativeDistSource FixedRelativeDist(int64_t d) {
  return [d](int64_t, int64_t, int64_t) { return d; };
}

StreamingDenoiser::StreamingDenoiser(const models::dit::CausalWanS2V* dit, const FlowMatchEulerScheduler* scheduler,
                                     const StreamGeometry& geometry, const c10::TensorOptions& cache_options,
                                     RelativeDistSource relative_dist, int64_t first_step, int64_t num_steps)
    : dit_(dit), scheduler_(scheduler), geometry_(geometry), relative_dist_(std::move(relative_dist)),
      first_step_(first_step) {
  TORCH_CHECK(dit_ != nullptr && scheduler_ != nullptr, "StreamingDenoiser needs a model and a scheduler");
  TORCH_CHECK(scheduler_->num_steps() > 0, "StreamingDenoiser: scheduler has no timesteps (SetTimesteps first)");
  if (num_steps < 0) num_steps = scheduler_->num_steps() - first_step;
  TORCH_CHECK(first_step >= 0 && num_steps >= 1 && first_step + num_steps <= scheduler_->num_steps(),
              "StreamingDenoiser: steps [", first_step, ", ", first_step + num_steps, ") outside the schedule of ",
              scheduler_->num_steps(), " steps");
  TORCH_CHECK(geometry_.latent_frames_per_clip() % geometry_.frames_per_block == 0,
              "StreamingDenoiser: ", geometry_.latent_frames_per_clip(), " latent frames per clip are not a multiple of ",
              geometry_.frames_per_block, " frames per block (infer_frames ", geometry_.infer_frames, ")");
  const auto geo = dit_->CacheGeometry(geometry_.latent_h, geometry_.latent_w, geometry_.latent_frames_per_clip());
  caches_.reserve(static_cast<size_t>(num_steps));
  for (int64_t s = 0; s < num_steps; ++s) caches_.emplace_back(geo, cache_options);
}

runtime::DitStepCache& StreamingDenoiser::CacheOf(int64_t step) {
  TORCH_CHECK(step >= first_step_ && step < first_step_ + num_steps(), "step ", step,
              " is not owned by this denoiser (owns [", first_step_, ", ", first_step_ + num_steps(), "))");
  return caches_[static_cast<size_t>(step - first_step_)];
}

void StreamingDenoiser::SinkAll() {
  models::dit::SinkInputs in;
  in.ref_latents = ref_latents_;
  in.motion_latents = motion_latents_;
  in.context = context_;
  for (auto& cache : caches_) dit_->SinkPrefill(in, cache);
}

void StreamingDenoiser::Prefill(const at::Tensor& context, const at::Tensor& ref_latents,
                                const at::Tensor& motion_latents) {
  context_ = context;
  ref_latents_ = ref_latents;
  motion_latents_ = motion_latents;
  SinkAll();
}

void StreamingDenoiser::RefreshSink(const at::Tensor& ref_latents) {
  TORCH_CHECK(context_.defined(), "RefreshSink before Prefill");
  ref_latents_ = ref_latents;
  SinkAll();
}

at::Tensor StreamingDenoiser::RunStep(int64_t step, int64_t clip, int64_t block, const at::Tensor& x,
                                      const at::Tensor& audio_block) {
  TORCH_CHECK(context_.defined(), "RunStep before Prefill");
  auto& cache = CacheOf(step);
  const int64_t fs = dit_->config().FrameSeqLen(geometry_.latent_h, geometry_.latent_w);
  const int64_t frame0 = clip * geometry_.latent_frames_per_clip() + block * geometry_.frames_per_block;
  models::dit::StreamInputs in;
  in.x = x;
  const float t = scheduler_->timesteps()[step].item<float>();
  in.timestep = at::full({1, geometry_.frames_per_block}, t, at::kFloat);
  in.context = context_;
  in.audio_input = audio_block;
  in.current_start = frame0 * fs;
  in.relative_dist = relative_dist_(clip, block, step);
  at::Tensor flow = dit_->StreamBlock(in, cache);
  if (flow_tap_) flow_tap_(clip, block, step, flow);
  return scheduler_->Step(flow.to(at::kFloat), x.to(flow.device(), at::kFloat), step);
}

at::Tensor StreamingDenoiser::DenoiseBlock(int64_t clip, int64_t block, const at::Tensor& x,
                                           const at::Tensor& audio_block) {
  at::Tensor cur = x;
  for (int64_t s = first_step_; s < first_step_ + num_steps(); ++s) cur = RunStep(s, clip, block, cur, audio_block);
  return cur;
}

void StreamingDenoiser::Reset() {
  for (auto& c : caches_) c.Reset();
  context_ = at::Tensor();
  ref_latents_ = at::Tensor();
  motion_latents_ = at::Tensor();
}

int64_t StreamingDenoiser::cache_bytes() const {
  int64_t total = 0;
  for (const auto& c : caches_) {
    for (int64_t i = 0; i < c.num_layers(); ++i) {
      const auto& l = c.layer(i);
      for (const at::Tensor* t : {&l.k, &l.v, &l.cond_k, &l.cond_v}) total += t->numel() * t->element_size();
    }
  }
  return total;
}

}  // namespace liveavatar::pipeline
