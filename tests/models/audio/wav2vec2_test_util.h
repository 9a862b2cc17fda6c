// Test helpers for the wav2vec2 tests: random weights from the specs (make-tiny's recipe) and the fixture folder.
#pragma once

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <string>

#include <ATen/ATen.h>

#include "liveavatar/models/audio/wav2vec2.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar::models::audio {

// Tensors for every spec (optional ones included): "normal" = N(0, 1)/sqrt(fan_in), "ones", "zeros".
inline std::map<std::string, at::Tensor> RandomWeights(const Wav2Vec2Config& cfg, uint64_t seed) {
  at::manual_seed(seed);
  std::map<std::string, at::Tensor> out;
  for (const auto& s : Wav2Vec2WeightSpecs(cfg)) {
    if (s.init == "ones") {
      out[s.key] = at::ones(s.shape);
    } else if (s.init == "zeros") {
      out[s.key] = at::zeros(s.shape);
    } else {
      int64_t fan_in = 1;
      for (size_t i = 1; i < s.shape.size(); ++i) fan_in *= s.shape[i];
      out[s.key] = at::randn(s.shape) / std::sqrt(static_cast<double>(fan_in));
    }
  }
  return out;
}

inline std::vector<std::pair<std::string, at::Tensor>> AsList(const std::map<std::string, at::Tensor>& m) {
  return {m.begin(), m.end()};
}

// <golden>/audio/wav2vec2-large-xlsr-53-english, or "" when absent.
inline std::string WeightsDirOfFixture() {
  const auto dir = std::filesystem::path(liveavatar::testing::GoldenDir("audio")) / "wav2vec2-large-xlsr-53-english";
  return std::filesystem::exists(dir / "config.json") ? dir.string() : "";
}

}  // namespace liveavatar::models::audio
