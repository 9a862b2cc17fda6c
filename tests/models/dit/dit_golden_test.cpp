// Parity of the S2V DiT with the golden fixtures (golden README §1): every case of <golden>/dit is discovered and
// dispatched on its "kind"; config and weights come from the fixture folder.
#include <filesystem>
#include <map>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/models/dit/audio_encoder.h"
#include "liveavatar/models/dit/model.h"
#include "liveavatar/models/lora.h"
#include "liveavatar/runtime/kv_cache.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar::models::dit {
namespace {

using testing::GoldenCase;
using testing::GoldenDir;
using testing::RelL2;
using testing::RelL2Within;

constexpr double kFp32Tol = 1e-4;
constexpr double kBf16Tol = 2e-2;

DitCheckpoint LoadGoldenCheckpoint() {
  auto ckpt = LoadDitCheckpoint(GoldenDir("dit"));
  if (!ckpt.ok()) throw StatusError(ckpt.status());
  return std::move(ckpt).value();
}

// Fixture checkpoint with the case's LoRA merged when it names one.
DitCheckpoint CheckpointFor(const GoldenCase& c) {
  auto ckpt = LoadGoldenCheckpoint();
  if (c.HasMeta("lora")) {
    const auto path = (std::filesystem::path(GoldenDir("dit")) / c.Meta("lora")).string();
    auto merged = MergeLoraFile(ckpt.weights, path, std::nullopt, std::nullopt);
    if (!merged.ok()) throw StatusError(merged.status());
    EXPECT_GT(merged.value(), 0);
    for (const auto& key : c.Keys("dbg.merged.")) {
      EXPECT_TRUE(RelL2Within(W(ckpt.weights, key.substr(11)), c.Get(key), kFp32Tol, key));
    }
  }
  return ckpt;
}

CausalWanS2V MakeModel(DitCheckpoint ckpt, c10::ScalarType dtype) {
  auto model = CausalWanS2V::Create(ckpt.config, std::move(ckpt.weights), dtype, c10::Device(c10::kCPU));
  if (!model.ok()) throw StatusError(model.status());
  return std::move(model).value();
}

// Cache of the case's geometry (ring and cond capacity as stored in the fixture).
runtime::DitStepCache MakeCache(const CausalWanS2V& model, int64_t latent_h, int64_t latent_w, int64_t ring_tokens,
                                int64_t cond_capacity, c10::ScalarType dtype) {
  const int64_t fs = model.config().FrameSeqLen(latent_h, latent_w);
  EXPECT_EQ(ring_tokens % fs, 0);
  auto g = model.CacheGeometry(latent_h, latent_w, ring_tokens / fs, cond_capacity);
  EXPECT_EQ(g.ring_tokens, ring_tokens);
  return runtime::DitStepCache(g, at::TensorOptions().dtype(dtype));
}

// Collects debug intermediates into a map.
struct Recorder {
  std::map<std::string, at::Tensor> values;
  DebugTap Tap() {
    return [this](const std::string& name, const at::Tensor& t) { values[name] = t.detach().to(at::kFloat).clone(); };
  }
};

void CheckDebug(const GoldenCase& c, const Recorder& rec, double tol) {
  for (const auto& key : c.Keys("dbg.")) {
    const auto name = key.substr(4);
    auto it = rec.values.find(name);
    if (it == rec.values.end()) continue;
    const auto ref = c.Get(key);
    EXPECT_TRUE(RelL2Within(it->second.reshape(ref.sizes()), ref, tol, key));
  }
}

class GoldenDit : public ::testing::TestWithParam<std::string> {};

void RunAudioEncoder(const GoldenCase& c) {
  auto ckpt = LoadGoldenCheckpoint();
  auto tokens = CausalAudioEncoder(ckpt.weights, ckpt.config, c.Get("in.features"));
  const double eg = RelL2(tokens.global, c.Get("out.global"));
  const double el = RelL2(tokens.local, c.Get("out.local"));
  std::printf("[dit] %s: out.global rel L2 %.3g, out.local %.3g\n", c.name().c_str(), eg, el);
  EXPECT_TRUE(RelL2Within(tokens.global, c.Get("out.global"), kFp32Tol, "out.global"));
  EXPECT_TRUE(RelL2Within(tokens.local, c.Get("out.local"), kFp32Tol, "out.local"));
}

void RunSink(const GoldenCase& c, c10::ScalarType dtype, double tol) {
  auto model = MakeModel(CheckpointFor(c), dtype);
  Recorder rec;
  if (dtype == at::kFloat) model.set_debug_tap(rec.Tap());
  const auto ref = c.Get("in.ref_latents");
  const int64_t fs = c.MetaInt("frame_seqlen");
  // The ring is not used by the sink pass; size it like the pipeline (48 frames + 73 motion → 12 latent frames).
  const int64_t ring = runtime::LatentFramesPerClip(48, kAudioPrefixFrames, 19) * fs;
  auto cache = MakeCache(model, ref.size(3), ref.size(4), ring, c.MetaInt("cond_capacity"), dtype);
  model.SinkPrefill({ref, c.Get("in.motion_latents"), c.Get("in.context")}, cache);
  CheckDebug(c, rec, kFp32Tol);
  double worst = 0;
  for (int64_t i = 0; i < model.config().num_layers; ++i) {
    const std::string p = "out.kv." + std::to_string(i) + ".";
    const auto& l = cache.layer(i);
    EXPECT_EQ(l.cond_end, c.Get(p + "cond_end").item<int64_t>()) << p;
    for (const auto& [name, t] : {std::pair<std::string, at::Tensor>{"cond_k", l.cond_k}, {"cond_v", l.cond_v}}) {
      worst = std::max(worst, RelL2(t.to(at::kFloat), c.Get(p + name)));
      EXPECT_TRUE(RelL2Within(t.to(at::kFloat), c.Get(p + name), tol, p + name));
    }
  }
  std::printf("[dit] %s (%s): worst out.* rel L2 %.3g\n", c.name().c_str(), c10::toString(dtype), worst);
}

void RunStream(const GoldenCase& c, c10::ScalarType dtype, double tol) {
  auto model = MakeModel(CheckpointFor(c), dtype);
  Recorder rec;
  if (dtype == at::kFloat) model.set_debug_tap(rec.Tap());
  const auto x = c.Get("in.x");
  const auto k0 = c.Get("in.kv.0.k");
  auto cache = MakeCache(model, x.size(2), x.size(3), k0.size(1), c.Get("in.kv.0.cond_k").size(1), dtype);
  for (int64_t i = 0; i < model.config().num_layers; ++i) {
    const std::string p = "in.kv." + std::to_string(i) + ".";
    auto& l = cache.layer(i);
    l.k.copy_(c.Get(p + "k"));
    l.v.copy_(c.Get(p + "v"));
    l.cond_k.copy_(c.Get(p + "cond_k"));
    l.cond_v.copy_(c.Get(p + "cond_v"));
    l.cond_end = c.Get(p + "cond_end").item<int64_t>();
  }
  StreamInputs in;
  in.x = x;
  in.timestep = c.Get("in.t");
  in.context = c.Get("in.context");
  in.cond_states = c.Get("in.cond_states");
  in.audio_input = c.Get("in.audio_input");
  in.current_start = c.MetaInt("current_start");
  in.relative_dist = c.MetaInt("relative_dist");
  const auto plan = runtime::PlanRing(in.current_start, x.size(1) * c.MetaInt("frame_seqlen"), k0.size(1));
  EXPECT_EQ(plan.write_pos, c.MetaInt("write_pos"));
  auto flow = model.StreamBlock(in, cache);
  CheckDebug(c, rec, kFp32Tol);
  double worst = RelL2(flow, c.Get("out.x0_flow"));
  EXPECT_TRUE(RelL2Within(flow, c.Get("out.x0_flow"), tol, "out.x0_flow"));
  for (int64_t i = 0; i < model.config().num_layers; ++i) {
    const std::string p = "out.kv." + std::to_string(i) + ".";
    const auto& l = cache.layer(i);
    const auto ref_k = c.Get(p + "k_written");
    auto k = l.k.narrow(1, plan.write_pos, ref_k.size(1)).to(at::kFloat);
    auto v = l.v.narrow(1, plan.write_pos, ref_k.size(1)).to(at::kFloat);
    worst = std::max({worst, RelL2(k, ref_k), RelL2(v, c.Get(p + "v_written"))});
    EXPECT_TRUE(RelL2Within(k, ref_k, tol, p + "k_written"));
    EXPECT_TRUE(RelL2Within(v, c.Get(p + "v_written"), tol, p + "v_written"));
  }
  std::printf("[dit] %s (%s): out.x0_flow rel L2 %.3g, worst out.* %.3g\n", c.name().c_str(), c10::toString(dtype),
              RelL2(flow, c.Get("out.x0_flow")), worst);
}


TEST_P(GoldenDit, MatchesReferenceFp32) {
  GoldenCase c(GetParam());
  const auto kind = c.kind();
  if (kind == "causal_audio_encoder") {
    RunAudioEncoder(c);
  } else if (kind == "sink") {
    RunSink(c, at::kFloat, kFp32Tol);
  } else if (kind == "stream") {
    RunStream(c, at::kFloat, kFp32Tol);
  } else {
    FAIL() << "unknown DiT case kind \"" << kind << "\"";
  }
}

TEST_P(GoldenDit, MatchesReferenceBf16) {
  GoldenCase c(GetParam());
  const auto kind = c.kind();
  if (kind == "sink") {
    RunSink(c, at::kBFloat16, kBf16Tol);
  } else if (kind == "stream") {
    RunStream(c, at::kBFloat16, kBf16Tol);
  } else {
    GTEST_SKIP() << "bf16 parity covers the sink and stream kinds";
  }
}

// The end-to-end kind ("e2e") replays the streaming loop of pipeline/streaming_denoiser and is checked by
// tests/pipeline/streaming_golden_test.cpp against the same fixtures.
LA_GOLDEN_CASES(GoldenDit, "dit", {"causal_audio_encoder", "sink", "stream"});

}  // namespace
}  // namespace liveavatar::models::dit
