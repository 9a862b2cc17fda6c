// Checkpoint layout of CausalWanModel_S2V: every key of the diffusers state dict with its shape, derived from a
// DitConfig. The real Wan2.2-S2V-14B checkpoint binds key for key (1260 tensors); make-tiny writes random weights
// from the same list (WeightSpec::init).
#pragma once

#include <string>
#include <vector>

#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/weights.h"

namespace liveavatar::models::dit {

// Every tensor of the checkpoint, in module order (embeddings, blocks, head, audio modules, frame packer).
std::vector<WeightSpec> DitWeightSpecs(const DitConfig& config);

// Number of tensors DitWeightSpecs(config) returns: 24 + 27·num_layers + 12 (audio encoder) + 12·num_injectors.
int64_t DitWeightCount(const DitConfig& config);

// The index i of a key "<prefix><i>.…" (prefix ending in '.', i decimal digits followed by '.'), -1 otherwise:
// KeyIndex("blocks.12.ffn.0.weight", "blocks.") == 12.
int64_t KeyIndex(const std::string& key, const std::string& prefix);
// The layer of a "blocks.<i>." key, -1 for every other key.
inline int64_t BlockIndex(const std::string& key) { return KeyIndex(key, "blocks."); }

}  // namespace liveavatar::models::dit
