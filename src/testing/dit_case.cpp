#include "liveavatar/testing/dit_case.h"

#include <utility>

#include <ATen/ATen.h>

namespace liveavatar::testing {
namespace {

std::string LayerPrefix(const char* group, int64_t i) { return std::string(group) + std::to_string(i) + "."; }

}  // namespace

models::dit::SinkInputs DitSinkInputs(const GoldenCase& c) {
  return {c.Get("in.ref_latents"), c.Get("in.motion_latents"), c.Get("in.context")};
}

models::dit::StreamInputs DitStreamInputs(const GoldenCase& c) {
  models::dit::StreamInputs in;
  in.x = c.Get("in.x");
  in.timestep = c.Get("in.t");
  in.context = c.Get("in.context");
  in.cond_states = c.Get("in.cond_states");
  in.audio_input = c.Get("in.audio_input");
  in.current_start = c.MetaInt("current_start");
  in.relative_dist = c.MetaInt("relative_dist");
  return in;
}

runtime::DitStepCache DitSinkCache(const models::dit::CausalWanS2V& model, const GoldenCase& c,
                                   c10::ScalarType dtype) {
  const auto ref = c.Get("in.ref_latents");
  const int64_t ring_frames = runtime::LatentFramesPerClip(48, models::dit::kAudioPrefixFrames, 19);
  const auto g = model.CacheGeometry(ref.size(3), ref.size(4), ring_frames, c.MetaInt("cond_capacity"));
  return runtime::DitStepCache(g, at::TensorOptions().dtype(dtype));
}

runtime::DitStepCache DitStreamCache(const models::dit::CausalWanS2V& model, const GoldenCase& c,
                                     c10::ScalarType dtype) {
  const auto x = c.Get("in.x");
  const int64_t ring = c.Get("in.kv.0.k").size(1);
  const int64_t fs = model.config().FrameSeqLen(x.size(2), x.size(3));
  TORCH_CHECK(ring % fs == 0, c.path(), ": in.kv.0.k has ", ring, " ring rows, not a whole number of ", fs,
              "-token frames");
  const auto g = model.CacheGeometry(x.size(2), x.size(3), ring / fs, c.Get("in.kv.0.cond_k").size(1));
  runtime::DitStepCache cache(g, at::TensorOptions().dtype(dtype));
  for (int64_t i = 0; i < model.config().num_layers; ++i) {
    const std::string p = LayerPrefix("in.kv.", i);
    auto& l = cache.layer(i);
    l.k.copy_(c.Get(p + "k"));
    l.v.copy_(c.Get(p + "v"));
    l.cond_k.copy_(c.Get(p + "cond_k"));
    l.cond_v.copy_(c.Get(p + "cond_v"));
    l.cond_end = c.Get(p + "cond_end").item<int64_t>();
  }
  return cache;
}

std::map<std::string, at::Tensor> RunDitCase(const models::dit::CausalWanS2V& model, const GoldenCase& c,
                                             c10::ScalarType cache_dtype, DitCaseRun* run) {
  const std::string kind = c.kind();
  TORCH_CHECK(kind == "sink" || kind == "stream", c.path(), ": RunDitCase runs sink and stream cases, not \"", kind,
              "\"");
  const int64_t layers = model.config().num_layers;
  std::map<std::string, at::Tensor> out;
  DitCaseRun result;
  if (kind == "sink") {
    result.cache = DitSinkCache(model, c, cache_dtype);
    model.SinkPrefill(DitSinkInputs(c), result.cache);
    for (int64_t i = 0; i < layers; ++i) {
      const std::string p = LayerPrefix("out.kv.", i);
      const auto& l = result.cache.layer(i);
      out[p + "cond_k"] = l.cond_k.to(at::kFloat);
      out[p + "cond_v"] = l.cond_v.to(at::kFloat);
      out[p + "cond_end"] = at::full({1}, l.cond_end, at::kLong);
    }
  } else {
    result.cache = DitStreamCache(model, c, cache_dtype);
    const models::dit::StreamInputs in = DitStreamInputs(c);
    const int64_t fs = model.config().FrameSeqLen(in.x.size(2), in.x.size(3));
    result.plan = runtime::PlanRing(in.current_start, in.x.size(1) * fs, result.cache.geometry().ring_tokens);
    out["out.x0_flow"] = model.StreamBlock(in, result.cache).to(at::kFloat);
    for (int64_t i = 0; i < layers; ++i) {
      const std::string p = LayerPrefix("out.kv.", i);
      const int64_t n = c.Get(p + "k_written").size(1);
      const auto& l = result.cache.layer(i);
      out[p + "k_written"] = l.k.narrow(1, result.plan.write_pos, n).to(at::kFloat);
      out[p + "v_written"] = l.v.narrow(1, result.plan.write_pos, n).to(at::kFloat);
    }
  }
  if (run != nullptr) *run = std::move(result);
  return out;
}

}  // namespace liveavatar::testing
