#include "liveavatar/runtime/kv_cache.h"

#include <ATen/ATen.h>

namespace liveavatar::runtime {

namespace {

void Copy(const DitStepCache::CopyFn& copy, const at::Tensor& dst, const at::Tensor& src) {
  if (copy) {
    copy(dst, src);
  } else {
    dst.copy_(src);
  }
}

}  // namespace

int64_t DitCacheBytes(const DitCacheGeometry& g, c10::ScalarType dtype) {
  const int64_t row = g.num_heads * g.head_dim * static_cast<int64_t>(c10::elementSize(dtype));
  return g.num_layers * 2 * (g.ring_tokens + g.cond_capacity) * row;
}

int64_t LatentFramesPerClip(int64_t infer_frames, int64_t motion_frames, int64_t latent_motion_frames) {
  return (infer_frames + 3 + motion_frames) / 4 - latent_motion_frames;
}

int64_t SinkTokenCount(int64_t latent_h, int64_t latent_w, int64_t patch_h, int64_t patch_w) {
  const int64_t fs = (latent_h / patch_h) * (latent_w / patch_w);
  return fs + fs + (latent_h / 4) * (latent_w / 4) + 4 * (latent_h / 8) * (latent_w / 8);
}

RingPlan PlanRing(int64_t current_start, int64_t num_tokens, int64_t ring_tokens) {
  TORCH_CHECK(current_start >= 0 && num_tokens > 0 && ring_tokens > 0, "PlanRing: bad arguments (current_start=",
              current_start, ", num_tokens=", num_tokens, ", ring=", ring_tokens, ")");
  RingPlan plan;
  if (current_start < ring_tokens) {
    plan.write_pos = current_start;
    plan.active_end = current_start + num_tokens;
    plan.wrapped = false;
  } else {
    plan.write_pos = current_start % ring_tokens;
    plan.active_end = ring_tokens;
    plan.wrapped = true;
  }
  TORCH_CHECK(plan.write_pos + num_tokens <= ring_tokens, "PlanRing: block of ", num_tokens,
              " tokens at ring row ", plan.write_pos, " overruns the ring of ", ring_tokens,
              " rows (ring must be a multiple of the block size)");
  return plan;
}

DitStepCache::DitStepCache(const DitCacheGeometry& g, const c10::TensorOptions& options) : geometry_(g) {
  TORCH_CHECK(g.num_layers > 0 && g.num_heads > 0 && g.head_dim > 0 && g.ring_tokens > 0 && g.cond_capacity > 0,
              "DitStepCache: invalid geometry");
  layers_.resize(static_cast<size_t>(g.num_layers));
  for (auto& l : layers_) {
    l.k = at::zeros({1, g.ring_tokens, g.num_heads, g.head_dim}, options);
    l.v = at::zeros({1, g.ring_tokens, g.num_heads, g.head_dim}, options);
    l.cond_k = at::zeros({1, g.cond_capacity, g.num_heads, g.head_dim}, options);
    l.cond_v = at::zeros({1, g.cond_capacity, g.num_heads, g.head_dim}, options);
    l.cond_end = 0;
  }
}

DitStepCache DitStepCache::FromTensors(const DitCacheGeometry& g, std::vector<LayerKvCache> layers) {
  TORCH_CHECK(static_cast<int64_t>(layers.size()) == g.num_layers, "DitStepCache::FromTensors: ", layers.size(),
              " layers for a geometry of ", g.num_layers);
  const std::vector<int64_t> ring{1, g.ring_tokens, g.num_heads, g.head_dim};
  const std::vector<int64_t> cond{1, g.cond_capacity, g.num_heads, g.head_dim};
  const auto& first = layers.front().k;
  for (const auto& l : layers) {
    for (const at::Tensor* t : {&l.k, &l.v, &l.cond_k, &l.cond_v}) {
      TORCH_CHECK(t->defined() && t->is_contiguous(), "DitStepCache::FromTensors: undefined or strided tensor");
      TORCH_CHECK(t->scalar_type() == first.scalar_type() && t->device() == first.device(),
                  "DitStepCache::FromTensors: mixed dtypes or devices");
    }
    TORCH_CHECK(l.k.sizes() == ring && l.v.sizes() == ring, "DitStepCache::FromTensors: ring ", l.k.sizes(),
                " != ", at::IntArrayRef(ring));
    TORCH_CHECK(l.cond_k.sizes() == cond && l.cond_v.sizes() == cond, "DitStepCache::FromTensors: cond ",
                l.cond_k.sizes(), " != ", at::IntArrayRef(cond));
    TORCH_CHECK(l.cond_end >= 0 && l.cond_end <= g.cond_capacity, "DitStepCache::FromTensors: bad cond_end");
  }
  DitStepCache c;
  c.geometry_ = g;
  c.layers_ = std::move(layers);
  return c;
}

int64_t DitStepCache::bytes() const {
  int64_t total = 0;
  for (const auto& l : layers_) {
    for (const at::Tensor* t : {&l.k, &l.v, &l.cond_k, &l.cond_v}) total += t->numel() * t->element_size();
  }
  return total;
}

void DitStepCache::CopyRingRowsFrom(const DitStepCache& src, int64_t begin, int64_t end, const CopyFn& copy) {
  TORCH_CHECK(src.num_layers() == num_layers() && src.geometry().ring_tokens == geometry_.ring_tokens,
              "DitStepCache::CopyRingRowsFrom: geometry mismatch");
  TORCH_CHECK(begin >= 0 && begin <= end && end <= geometry_.ring_tokens, "DitStepCache::CopyRingRowsFrom: rows [",
              begin, ", ", end, ") outside the ring of ", geometry_.ring_tokens);
  if (begin == end) return;
  for (int64_t i = 0; i < num_layers(); ++i) {
    auto& d = layers_[static_cast<size_t>(i)];
    const auto& s = src.layer(i);
    Copy(copy, d.k.narrow(1, begin, end - begin), s.k.narrow(1, begin, end - begin));
    Copy(copy, d.v.narrow(1, begin, end - begin), s.v.narrow(1, begin, end - begin));
  }
}

void DitStepCache::CopyCondFrom(const DitStepCache& src, const CopyFn& copy) {
  TORCH_CHECK(src.num_layers() == num_layers() && src.geometry().cond_capacity == geometry_.cond_capacity,
              "DitStepCache::CopyCondFrom: geometry mismatch");
  for (int64_t i = 0; i < num_layers(); ++i) {
    auto& d = layers_[static_cast<size_t>(i)];
    const auto& s = src.layer(i);
    if (s.cond_end > 0) {
      Copy(copy, d.cond_k.narrow(1, 0, s.cond_end), s.cond_k.narrow(1, 0, s.cond_end));
      Copy(copy, d.cond_v.narrow(1, 0, s.cond_end), s.cond_v.narrow(1, 0, s.cond_end));
    }
    d.cond_end = s.cond_end;
  }
}

LayerKvCache& DitStepCache::layer(int64_t i) {
  TORCH_CHECK(i >= 0 && i < num_layers(), "DitStepCache: layer ", i, " out of range");
  return layers_[static_cast<size_t>(i)];
}

const LayerKvCache& DitStepCache::layer(int64_t i) const {
  TORCH_CHECK(i >= 0 && i < num_layers(), "DitStepCache: layer ", i, " out of range");
  return layers_[static_cast<size_t>(i)];
}

void DitStepCache::Reset() {
  for (auto& l : layers_) {
    l.k.zero_();
    l.v.zero_();
  }
  ResetCond();
}

void DitStepCache::ResetCond() {
  for (auto& l : layers_) {
    l.cond_k.zero_();
    l.cond_v.zero_();
    l.cond_end = 0;
  }
}

void DitStepCache::WriteRing(int64_t i, const RingPlan& plan, const at::Tensor& k, const at::Tensor& v) {
  auto& l = layer(i);
  const int64_t n = k.size(1);
  TORCH_CHECK(plan.write_pos >= 0 && plan.write_pos + n <= l.k.size(1), "DitStepCache::WriteRing: rows [",
              plan.write_pos, ", ", plan.write_pos + n, ") outside the ring of ", l.k.size(1));
  l.k.narrow(1, plan.write_pos, n).copy_(k);
  l.v.narrow(1, plan.write_pos, n).copy_(v);
}

void DitStepCache::WriteCond(int64_t i, const at::Tensor& k, const at::Tensor& v) {
  auto& l = layer(i);
  const int64_t n = k.size(1);
  TORCH_CHECK(n <= l.cond_k.size(1), "DitStepCache::WriteCond: ", n, " sink tokens exceed the cond capacity ",
              l.cond_k.size(1));
  l.cond_k.narrow(1, 0, n).copy_(k);
  l.cond_v.narrow(1, 0, n).copy_(v);
  l.cond_end = std::max(l.cond_end, n);
}

}  // namespace liveavatar::runtime
