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
      first_step_(first_step), cache_options_(cache_options) {
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
  if (!ring_.enabled) {
    for (auto& cache : caches_) dit_->SinkPrefill(in, cache);
    return;
  }
  for (int64_t step = first_step_; step < first_step_ + num_steps(); ++step) {
    Slot* slot = Acquire(step, 0, -1);
    transfer_->MakeComputeWait(slot->ready);
    slot->last_use = ++use_clock_;
    dit_->SinkPrefill(in, slot->cache);
    // Only the cond rows changed: send them back.
    transfer_->WaitForCompute();
    CacheOf(step).CopyCondFrom(slot->cache, [this](const at::Tensor& dst, const at::Tensor& src) {
      ring_bytes_out_ += runtime::TensorBytes(src);
      transfer_->Copy(dst, src);
    });
  }
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
  at::Tensor flow;
  if (!ring_.enabled) {
    flow = dit_->StreamBlock(in, cache);
  } else {
    const int64_t n = geometry_.frames_per_block * fs;
    const int64_t ring = cache.geometry().ring_tokens;
    const auto plan = runtime::PlanRing(in.current_start, n, ring);
    Slot* slot = Acquire(step, plan.active_end, -1);
    transfer_->MakeComputeWait(slot->ready);
    slot->last_use = ++use_clock_;
    // Prefetch the next owned step (the first one of the next block after the last step) while this one runs.
    const int64_t last = first_step_ + num_steps() - 1;
    const int64_t next = step < last ? step + 1 : first_step_;
    if (next != step) {
      const int64_t next_start = next > step ? in.current_start : in.current_start + n;
      Acquire(next, runtime::PlanRing(next_start, n, ring).active_end, step);
    }
    flow = dit_->StreamBlock(in, slot->cache);
    WriteBackRing(*slot, plan.write_pos, plan.write_pos + n);
  }
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
  if (transfer_) transfer_->Synchronize();
  for (auto& c : caches_) c.Reset();
  for (auto& slot : slots_) {
    slot.step = -1;
    slot.ring_valid = 0;
  }
  context_ = at::Tensor();
  ref_latents_ = at::Tensor();
  motion_latents_ = at::Tensor();
}

int64_t StreamingDenoiser::cache_bytes() const {
  int64_t total = 0;
  for (const auto& c : caches_) total += c.bytes();
  return total;
}

int64_t StreamingDenoiser::device_cache_bytes() const {
  if (!ring_.enabled) return cache_bytes();
  int64_t total = 0;
  for (const auto& slot : slots_) total += slot.cache.bytes();
  return total;
}

int64_t StreamingDenoiser::host_cache_bytes() const { return ring_.enabled ? cache_bytes() : 0; }

const runtime::DitStepCache& StreamingDenoiser::StepCache(int64_t step) {
  if (transfer_) transfer_->Synchronize();
  return CacheOf(step);
}

namespace {

// Every tensor of `src` into `dst` (same geometry) and the cond_end counters.
void CopyWholeCache(const runtime::DitStepCache& src, runtime::DitStepCache& dst) {
  for (int64_t i = 0; i < src.num_layers(); ++i) {
    const auto& s = src.layer(i);
    auto& d = dst.layer(i);
    d.k.copy_(s.k);
    d.v.copy_(s.v);
    d.cond_k.copy_(s.cond_k);
    d.cond_v.copy_(s.cond_v);
    d.cond_end = s.cond_end;
  }
}

}  // namespace

void StreamingDenoiser::set_ring_residency(const RingResidency& residency) {
  TORCH_CHECK(!residency.enabled || residency.device_slots >= 1,
              "StreamingDenoiser: ring residency needs at least one device slot, got ", residency.device_slots);
  if (transfer_) transfer_->Synchronize();
  const auto geo = caches_.front().geometry();
  const auto dtype = caches_.front().layer(0).k.scalar_type();
  std::vector<runtime::DitStepCache> moved;
  moved.reserve(caches_.size());
  if (residency.enabled) {
    // Host caches in slabs (pinned in CUDA builds when the cache device is a GPU).
    std::vector<runtime::HostTensorSpec> specs;
    const std::vector<int64_t> ring{1, geo.ring_tokens, geo.num_heads, geo.head_dim};
    const std::vector<int64_t> cond{1, geo.cond_capacity, geo.num_heads, geo.head_dim};
    for (size_t s = 0; s < caches_.size(); ++s) {
      for (int64_t i = 0; i < geo.num_layers; ++i) {
        for (const auto* shape : {&ring, &ring, &cond, &cond}) specs.push_back({*shape, dtype});
      }
    }
    const bool pin = residency.pin_memory && cache_options_.device().is_cuda();
    runtime::HostAllocation alloc = runtime::AllocateHostTensors(specs, pin);
    size_t t = 0;
    for (const auto& c : caches_) {
      std::vector<runtime::LayerKvCache> layers(static_cast<size_t>(geo.num_layers));
      for (auto& l : layers) {
        l.k = alloc.tensors[t++];
        l.v = alloc.tensors[t++];
        l.cond_k = alloc.tensors[t++];
        l.cond_v = alloc.tensors[t++];
      }
      moved.push_back(runtime::DitStepCache::FromTensors(geo, std::move(layers)));
      // A slot may hold newer ring rows than a previous host copy only until its write-back, which has run.
      CopyWholeCache(c, moved.back());
    }
    host_alloc_ = std::move(alloc);
    caches_ = std::move(moved);
    const int64_t n_slots = std::min<int64_t>(residency.device_slots, num_steps());
    slots_.clear();
    slots_.resize(static_cast<size_t>(n_slots));
    for (auto& slot : slots_) slot.cache = runtime::DitStepCache(geo, cache_options_);
    transfer_ = std::make_unique<runtime::TransferStream>(cache_options_.device());
  } else if (ring_.enabled) {
    for (const auto& c : caches_) {
      moved.emplace_back(geo, cache_options_);
      CopyWholeCache(c, moved.back());
    }
    caches_ = std::move(moved);
    slots_.clear();
    host_alloc_ = runtime::HostAllocation();
    transfer_.reset();
  }
  ring_ = residency;
}

StreamingDenoiser::Slot* StreamingDenoiser::Acquire(int64_t step, int64_t ring_end, int64_t keep_step) {
  const runtime::DitStepCache& host = CacheOf(step);
  auto copy_in = [this](const at::Tensor& dst, const at::Tensor& src) {
    ring_bytes_in_ += runtime::TensorBytes(src);
    transfer_->Copy(dst, src);
  };
  Slot* slot = nullptr;
  for (auto& s : slots_) {
    if (s.step == step) slot = &s;
  }
  bool copied = false;
  if (slot == nullptr) {
    for (auto& s : slots_) {
      if (s.step == keep_step && keep_step >= 0) continue;
      if (slot == nullptr || (s.step < 0 && slot->step >= 0) ||
          ((s.step < 0) == (slot->step < 0) && s.last_use < slot->last_use)) {
        slot = &s;
      }
    }
    if (slot == nullptr) return nullptr;
    // The compute stream may still read the slot's old contents: copy after it.
    transfer_->WaitForCompute();
    slot->cache.CopyCondFrom(host, copy_in);
    slot->step = step;
    slot->ring_valid = 0;
    copied = true;
  } else if (ring_end > slot->ring_valid) {
    transfer_->WaitForCompute();
  }
  if (ring_end > slot->ring_valid) {
    slot->cache.CopyRingRowsFrom(host, slot->ring_valid, ring_end, copy_in);
    slot->ring_valid = ring_end;
    copied = true;
  }
  // A slot that needed nothing keeps the event of its last load (not the later write-backs of other steps).
  if (copied) slot->ready = transfer_->Record();
  return slot;
}

void StreamingDenoiser::WriteBackRing(Slot& slot, int64_t begin, int64_t end) {
  transfer_->WaitForCompute();
  CacheOf(slot.step).CopyRingRowsFrom(slot.cache, begin, end, [this](const at::Tensor& dst, const at::Tensor& src) {
    ring_bytes_out_ += runtime::TensorBytes(src);
    transfer_->Copy(dst, src);
  });
}

}  // namespace liveavatar::pipeline
