// Pre-flight checks of a checkpoint directory (the "checkpoint" section of `liveavatar doctor`): every piece the
// engine loads, checked without reading tensor data.
//
//   1. presence and header validity of every file (io::InspectCheckpointDir: missing, empty, truncated
//      safetensors / .pth, a sharded index whose shards are missing, truncated or lack their keys, bad JSON);
//   2. for each weight file that passed 1, its keys and shapes against the model's WeightSpecs for the
//      configuration the engine would use (DiT: config.json; T5 and VAE: inferred from the weight shapes, as the
//      engine does, since the checkpoint carries no config for them; wav2vec2: its config.json), plus the
//      cross-model dimensions (T5 dim = DiT text_dim, wav2vec2 hidden size = DiT audio_dim);
//   3. the LoRA the engine would merge (when load_lora): resolved like the engine, every key matched to a
//      targeted DiT weight with the right rank and shapes (models::MatchLora, a dry run of the merge).
//
// Results are io::CheckResult lines in section "checkpoint", in the order above; any FAIL means Engine::Load
// would fail. Reads only file headers (plus the small JSON files); safe to call concurrently.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "liveavatar/core/status.h"
#include "liveavatar/io/check_result.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/audio/wav2vec2_config.h"
#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/t5/encoder.h"
#include "liveavatar/models/vae/config.h"

namespace liveavatar::pipeline {

struct CheckpointCheckOptions {
  std::string ckpt_dir;         // --ckpt_dir
  bool load_lora = true;        // --load_lora / --no_load_lora
  std::string lora_path;        // --lora_path_dmd (the reference's HF id resolves like the engine's)
  std::string training_config;  // --training_config (LoRA rank); empty: next to the LoRA, else r=128
};

struct CheckpointReport {
  std::vector<io::CheckResult> results;
  // Configurations met on the way (unset when their files failed); what the memory planner needs.
  std::optional<models::dit::DitConfig> dit;
  std::optional<models::t5::T5Config> t5;
  std::optional<models::audio::Wav2Vec2Config> wav2vec2;
  std::optional<models::vae::VaeConfig> vae;
  int lora_rank = 0;  // rank of the LoRA that will be merged; 0 when none
  bool failed() const;
  // Ok, or ONE Corruption error listing every FAIL line with its fix (what Engine::Load returns before reading
  // any tensor data).
  Status ToStatus() const;
};

CheckpointReport CheckCheckpoint(const CheckpointCheckOptions& options);

// The LoRA file the engine merges for --lora_path_dmd `lora_path`: the path itself, or for the reference's
// default id "Quark-Vision/Live-Avatar" (or empty) <ckpt_dir>/lora/liveavatar.safetensors or
// ckpt/LiveAvatar/liveavatar.safetensors when present. May name a file that does not exist.
std::string ResolveLoraFile(const std::string& ckpt_dir, const std::string& lora_path);

// T5 architecture from the umT5 weight shapes (token_embedding, blocks.0.attn.q, blocks.0.ffn.fc1,
// blocks.0.pos_embedding; the layer count from the blocks present). Corruption / NotFound naming the file.
StatusOr<models::t5::T5Config> InferT5ConfigFromWeights(const io::TensorStore& store);

// Wan2.1 VAE base width and latent channels from encoder.conv1 / conv2; the rest of the layout is Wan2.1's.
StatusOr<models::vae::VaeConfig> InferVaeConfigFromWeights(const io::TensorStore& store);

}  // namespace liveavatar::pipeline
