#include "liveavatar/testing/synthetic.h"

#include <cmath>
#include <fstream>

#include <ATen/ATen.h>

#include "liveavatar/models/vae/weights.h"

namespace liveavatar::testing {

models::vae::WanVae RandomVae(const models::vae::VaeConfig& config, uint64_t seed, c10::ScalarType dtype) {
  at::manual_seed(seed);
  models::vae::WanVae vae{config, {}};
  for (const auto& spec : models::vae::VaeWeightSpecs(config)) {
    at::Tensor t;
    if (spec.init == "ones") {
      t = 1.0 + 0.1 * at::randn(spec.shape);
    } else if (spec.shape.size() == 1) {
      t = 0.1 * at::randn(spec.shape);
    } else {
      int64_t fan_in = 1;
      for (size_t i = 1; i < spec.shape.size(); ++i) fan_in *= spec.shape[i];
      t = at::randn(spec.shape) / std::sqrt(static_cast<double>(fan_in));
    }
    vae.weights[spec.key] = t.to(dtype);
  }
  return vae;
}

void WriteWav16(const std::string& path, const at::Tensor& mono, int rate) {
  std::ofstream o(path, std::ios::binary);
  auto u32 = [&o](uint32_t v) { o.write(reinterpret_cast<const char*>(&v), 4); };  // little-endian host
  auto u16 = [&o](uint16_t v) { o.write(reinterpret_cast<const char*>(&v), 2); };
  const at::Tensor s = (mono.reshape({-1}).clamp(-1, 1) * 32767).round().to(at::kShort).contiguous();
  const uint32_t bytes = static_cast<uint32_t>(s.numel() * 2);
  o.write("RIFF", 4);
  u32(36 + bytes);
  o.write("WAVEfmt ", 8);
  u32(16);
  u16(1);  // PCM
  u16(1);  // mono
  u32(static_cast<uint32_t>(rate));
  u32(static_cast<uint32_t>(rate * 2));
  u16(2);
  u16(16);
  o.write("data", 4);
  u32(bytes);
  o.write(static_cast<const char*>(s.data_ptr()), bytes);
}

}  // namespace liveavatar::testing
