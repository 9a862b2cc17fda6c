// Checkpoint layout of CausalWanModel_S2V: every key of the diffusers state dict with its shape, derived from a
// DitConfig. The real Wan2.2-S2V-14B checkpoint binds key for key (1260 tensors); make-tiny writes random weights
// from the same list (WeightSpec::init).
#pragma once

#include <vector>

#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/weights.h"

namespace liveavatar::models::dit {

// Every tensor of the checkpoint, in module order (embeddings, blocks, head, audio modules, frame packer).
std::vector<WeightSpec> DitWeightSpecs(const DitConfig& config);

// Number of tensors DitWeightSpecs(config) returns: 24 + 27·num_layers + 12 (audio encoder) + 12·num_injectors.
int64_t DitWeightCount(const DitConfig& config);

}  // namespace liveavatar::models::dit
