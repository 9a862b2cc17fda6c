// Checkpoint layout of the Wan2.1 VAE (`WanVAE_` state dict, file Wan2.1_VAE.pth / .safetensors): every key
// with its shape, derived from a VaeConfig (style.md habit 5). The real checkpoint binds key for key (194
// tensors at dim 96); make-tiny writes random tensors from the same list (RMS_norm gammas "ones").
//
// Key tree: conv1 / conv2 (1×1×1 CausalConv3d around the latent), encoder.{conv1, downsamples.N, middle.{0,1,2},
// head.{0,2}}, decoder.{conv1, middle.{0,1,2}, upsamples.N, head.{0,2}}; inside: residual.{0,2,3,6} (+ shortcut),
// norm / to_qkv / proj (attention), resample.1 (+ time_conv).
#pragma once

#include <vector>

#include "liveavatar/core/status.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/vae/config.h"
#include "liveavatar/models/weights.h"

namespace liveavatar::models::vae {

// Every tensor of the checkpoint, in module order (conv1, conv2, encoder, decoder).
std::vector<WeightSpec> VaeWeightSpecs(const VaeConfig& config);

// Strictly loads VaeWeightSpecs(config) from `store` (any TensorStore: .safetensors or torch.save .pth) with
// `options` (dtype: kFloat or kBFloat16). Errors name the file and every missing / unexpected / mismatched key.
StatusOr<WeightMap> LoadVaeWeights(const io::TensorStore& store, const VaeConfig& config,
                                   const LoadOptions& options);

}  // namespace liveavatar::models::vae
