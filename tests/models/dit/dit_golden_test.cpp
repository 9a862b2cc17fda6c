// Parity of the S2V DiT with the golden fixtures (golden README §1): every case of <golden>/dit is discovered and
// dispatched on its "kind"; config and weights come from the fixture folder.
#include <algorithm>
#include <filesystem>
#include <map>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/models/dit/audio_encoder.h"
#include "liveavatar/models/dit/model.h"
#include "liveavatar/models/lora.h"
#include "liveavatar/runtime/kv_cache.h"
#include "liveavatar/testing/dit_case.h"
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

// Every out.* tensor of the case against the model's value (integer tensors exactly); returns the worst rel L2.
double CheckOutputs(const GoldenCase& c, const std::map<std::string, at::Tensor>& got, double tol) {
  double worst = 0;
  for (const auto& key : c.Keys("out.")) {
    auto it = got.find(key);
    if (it == got.end()) {
      ADD_FAILURE() << key << " not produced";
      continue;
    }
    const auto ref = c.Get(key);
    if (!c10::isFloatingType(ref.scalar_type())) {
      EXPECT_EQ(it->second.item<int64_t>(), ref.item<int64_t>()) << key;
      continue;
    }
    worst = std::max(worst, RelL2(it->second, ref));
    EXPECT_TRUE(RelL2Within(it->second, ref, tol, key));
  }
  return worst;
}

// Runs a sink or stream case in `dtype` (debug intermediates checked in fp32) and checks every out.* tensor.
void RunSinkOrStream(const GoldenCase& c, c10::ScalarType dtype, double tol) {
  auto model = MakeModel(CheckpointFor(c), dtype);
  Recorder rec;
  if (dtype == at::kFloat) model.set_debug_tap(rec.Tap());
  testing::DitCaseRun run;
  const auto out = testing::RunDitCase(model, c, dtype, &run);
  CheckDebug(c, rec, kFp32Tol);
  // The cache geometry reproduces the fixture's ring: the pipeline's 12 latent frames for a sink case (the
  // ring is not used by the sink pass), the ring of in.kv for a stream case.
  if (c.kind() == "sink") {
    EXPECT_EQ(run.cache.geometry().ring_tokens,
              runtime::LatentFramesPerClip(48, kAudioPrefixFrames, 19) * c.MetaInt("frame_seqlen"));
  } else {
    EXPECT_EQ(run.cache.geometry().ring_tokens, c.Get("in.kv.0.k").size(1));
    EXPECT_EQ(run.plan.write_pos, c.MetaInt("write_pos"));
  }
  const double worst = CheckOutputs(c, out, tol);
  if (c.kind() == "stream") {
    std::printf("[dit] %s (%s): out.x0_flow rel L2 %.3g, worst out.* %.3g\n", c.name().c_str(),
                c10::toString(dtype), RelL2(out.at("out.x0_flow"), c.Get("out.x0_flow")), worst);
  } else {
    std::printf("[dit] %s (%s): worst out.* rel L2 %.3g\n", c.name().c_str(), c10::toString(dtype), worst);
  }
}

TEST_P(GoldenDit, MatchesReferenceFp32) {
  GoldenCase c(GetParam());
  const auto kind = c.kind();
  if (kind == "causal_audio_encoder") {
    RunAudioEncoder(c);
  } else if (kind == "sink" || kind == "stream") {
    RunSinkOrStream(c, at::kFloat, kFp32Tol);
  } else {
    FAIL() << "unknown DiT case kind \"" << kind << "\"";
  }
}

TEST_P(GoldenDit, MatchesReferenceBf16) {
  GoldenCase c(GetParam());
  const auto kind = c.kind();
  if (kind == "sink" || kind == "stream") {
    RunSinkOrStream(c, at::kBFloat16, kBf16Tol);
  } else {
    GTEST_SKIP() << "bf16 parity covers the sink and stream kinds";
  }
}

// The end-to-end kind ("e2e") replays the streaming loop of pipeline/streaming_denoiser and is checked by
// tests/pipeline/streaming_golden_test.cpp against the same fixtures.
LA_GOLDEN_CASES(GoldenDit, "dit", {"causal_audio_encoder", "sink", "stream"});

}  // namespace
}  // namespace liveavatar::models::dit
