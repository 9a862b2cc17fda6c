// CheckpointDir: the file layout of a Wan2.2-S2V-14B checkpoint directory (HF Wan-AI/Wan2.2-S2V-14B) plus the
// Live Avatar LoRA given by flag, and a check that reports every missing or damaged piece in one error.
//
//   <root>/config.json                                   DiT constructor config (diffusers)
//   <root>/diffusion_pytorch_model.safetensors           DiT weights, one file, or
//   <root>/diffusion_pytorch_model.safetensors.index.json  + the shards its weight_map names
//   <root>/models_t5_umt5-xxl-enc-bf16.pth               umT5-XXL encoder (torch.save zip, bf16)
//   <root>/Wan2.1_VAE.pth                                Wan2.1 VAE (torch.save zip, fp32)
//   <root>/google/umt5-xxl/spiece.model                  SentencePiece tokenizer
//   <root>/wav2vec2-large-xlsr-53-english/{config.json, model.safetensors | pytorch_model.bin,
//                                          preprocessor_config.json}
//   LoRA: any path (PEFT layout .safetensors); make-tiny writes <root>/lora/liveavatar.safetensors.
//
// Describing a directory touches the file system only to pick between alternatives (index vs single file,
// model.safetensors vs pytorch_model.bin). Thread-safe: plain values and free functions.
#pragma once

#include <string>
#include <vector>

#include "liveavatar/core/status.h"

namespace liveavatar::io {

// File names relative to the checkpoint root (upstream spellings).
inline constexpr const char* kDitConfigFile = "config.json";
inline constexpr const char* kDitSingleFile = "diffusion_pytorch_model.safetensors";
inline constexpr const char* kDitIndexFile = "diffusion_pytorch_model.safetensors.index.json";
inline constexpr const char* kT5File = "models_t5_umt5-xxl-enc-bf16.pth";
inline constexpr const char* kVaeFile = "Wan2.1_VAE.pth";
inline constexpr const char* kTokenizerFile = "google/umt5-xxl/spiece.model";
inline constexpr const char* kWav2Vec2Dir = "wav2vec2-large-xlsr-53-english";
inline constexpr const char* kWav2Vec2ConfigFile = "config.json";
inline constexpr const char* kWav2Vec2SafetensorsFile = "model.safetensors";
inline constexpr const char* kWav2Vec2BinFile = "pytorch_model.bin";
inline constexpr const char* kWav2Vec2PreprocessorFile = "preprocessor_config.json";
// Where make-tiny puts the tiny LoRA and its training config (relative to the root); the config sits next to
// the LoRA, where models::MergeLoraFile looks for it.
inline constexpr const char* kTinyLoraFile = "lora/liveavatar.safetensors";
inline constexpr const char* kTinyTrainingConfigFile = "lora/training_config_lora.json";

// Absolute-or-relative paths of every piece (joined onto root as given).
struct CheckpointDir {
  std::string root;
  std::string dit_config;
  // The index when <root>/diffusion_pytorch_model.safetensors.index.json exists, else the single file. Either
  // can be passed to OpenTensorStore().
  std::string dit_weights;
  bool dit_sharded = false;
  std::string t5_weights;
  std::string vae_weights;
  std::string tokenizer;
  std::string wav2vec2_dir;
  std::string wav2vec2_config;
  // model.safetensors when present, else pytorch_model.bin.
  std::string wav2vec2_weights;
  std::string wav2vec2_preprocessor;
  // Empty when no LoRA was given.
  std::string lora;

  // Resolves the layout under `root`; `lora_path` may be empty. Never fails (CheckCheckpointDir validates).
  static CheckpointDir At(const std::string& root, const std::string& lora_path = "");
};

// One line per piece: "<what>: OK (<path>)" or "<what>: <problem>". Each piece is opened and its header
// validated: safetensors headers via SafetensorsReader, .pth/.bin via OpenTensorStore, an index's shards all
// present and valid and holding every key the index maps to them, JSON files parseable, other files non-empty.
struct CheckpointCheck {
  std::string what;     // e.g. "DiT weights"
  std::string path;
  bool ok = false;
  std::string problem;  // empty when ok
};
std::vector<CheckpointCheck> InspectCheckpointDir(const std::string& root, const std::string& lora_path = "");

// OK when every piece passes InspectCheckpointDir(); otherwise ONE NotFound/Corruption error naming the root and
// listing every missing, empty or truncated piece with its path.
Status CheckCheckpointDir(const std::string& root, const std::string& lora_path = "");

}  // namespace liveavatar::io
