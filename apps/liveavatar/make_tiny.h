// make-tiny: a complete checkpoint directory in the real Wan2.2-S2V-14B layout (io/checkpoint_dir.h) with tiny
// dimensions (configs/tiny.json) and seeded random weights under the real key names, so every test and the demo
// run without downloads.
//
// Every tensor is a pure function of (seed, key, spec): RandomTensor() seeds its own generator from both, so a
// file's content does not depend on the order or the set of other tensors, and BuildTinyTensorFiles() can be
// called again to reproduce what WriteTinyCheckpoint() wrote, bit for bit.
//
// Pieces (one function each): DiT (bf16, 2 safetensors shards + index), T5 (bf16 .pth), VAE (fp32 .pth),
// wav2vec2 (fp32 model.safetensors + HF json configs), LoRA (bf16, PEFT layout + training config json),
// tokenizer (SentencePiece trained on configs/tiny_corpus.txt).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "cli_parse.h"
#include "liveavatar/core/status.h"
#include "liveavatar/models/weights.h"

namespace liveavatar::cli {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// One tensor file of the tiny checkpoint, in memory.
struct TinyTensorFile {
  enum class Format { kSafetensors, kPth };
  std::string relpath;  // relative to the checkpoint root
  Format format = Format::kSafetensors;
  NamedTensors tensors;
};

// Seed of one tensor: a hash of `seed` and `key` (stable across platforms and runs).
uint64_t TensorSeed(uint64_t seed, const std::string& key);
// The value make-tiny writes for `spec` in fp32: "normal" = N(0, 1)/sqrt(fan_in) (fan_in = numel / shape[0] for
// 2+ dims, else numel), "ones", "zeros". InvalidArgument naming the key for another init.
StatusOr<at::Tensor> RandomTensor(const models::WeightSpec& spec, uint64_t seed);
// RandomTensor() of every spec (optional ones included), cast to `dtype`, in spec order.
StatusOr<NamedTensors> RandomWeights(const std::vector<models::WeightSpec>& specs, uint64_t seed,
                                     c10::ScalarType dtype);

// Reads configs/tiny.json (sections dit, vae, t5, tokenizer, wav2vec2, lora).
StatusOr<nlohmann::json> LoadTinyConfig(const std::string& path);
// `explicit_path` if non-empty, else `relpath` under the working directory, else under the source tree.
std::string FindDataFile(const std::string& explicit_path, const std::string& relpath);

// Per-model pieces.
StatusOr<std::vector<TinyTensorFile>> TinyDitFiles(const nlohmann::json& config, uint64_t seed);  // 2 shards
StatusOr<TinyTensorFile> TinyT5File(const nlohmann::json& config, uint64_t seed);
StatusOr<TinyTensorFile> TinyVaeFile(const nlohmann::json& config, uint64_t seed);
StatusOr<TinyTensorFile> TinyWav2Vec2File(const nlohmann::json& config, uint64_t seed);
StatusOr<TinyTensorFile> TinyLoraFile(const nlohmann::json& config, uint64_t seed);
// The PEFT target modules of the LoRA (module name equal to or ending in "." + a target of
// lora.lora_target_modules), taken from the DiT's 2-D ".weight" specs.
StatusOr<std::vector<std::pair<std::string, std::vector<int64_t>>>> LoraTargets(const nlohmann::json& config);

// Every tensor file of the tiny checkpoint, in memory.
StatusOr<std::vector<TinyTensorFile>> BuildTinyTensorFiles(const nlohmann::json& config, uint64_t seed);

// Writes the whole directory `args.out` (created if needed; existing files are replaced).
Status WriteTinyCheckpoint(const MakeTinyArgs& args);

}  // namespace liveavatar::cli
