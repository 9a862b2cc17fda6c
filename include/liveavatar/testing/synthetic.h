// Synthetic test inputs shared by several test binaries: random VAE weights and 16-bit PCM WAV files.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include "liveavatar/models/vae/vae.h"

namespace liveavatar::testing {

// Random weights for `config`, seeded: weights ~ N(0, 1/fan_in), 1-D tensors around 0 and "ones"-initialised
// gammas around 1, cast to `dtype`.
models::vae::WanVae RandomVae(const models::vae::VaeConfig& config, uint64_t seed, c10::ScalarType dtype = c10::kFloat);

// Writes `mono` (samples in [-1, 1], clamped, rounded to 16 bits) as a 16-bit PCM mono WAV at `rate` Hz.
void WriteWav16(const std::string& path, const at::Tensor& mono, int rate = 16000);

}  // namespace liveavatar::testing
