// Checkpoint conversion: read any TensorStore source, optionally cast its floating tensors, write safetensors.
//
//   ConvertCheckpoint("Wan2.1_VAE.pth", "vae.safetensors", std::nullopt);
//   ConvertCheckpoint("models_t5_umt5-xxl-enc-bf16.pth", "t5.safetensors", c10::kFloat);
//   ConvertCheckpoint("dit.safetensors", "out/diffusion_pytorch_model.safetensors.index.json", c10::kBFloat16);
//
// Thread safety: free functions; concurrent calls on different outputs are safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <c10/core/ScalarType.h>

#include "liveavatar/core/status.h"

namespace liveavatar::io {

// Default shard size for sharded output (diffusers' default max_shard_size, 10 GB).
inline constexpr uint64_t kDefaultMaxShardBytes = 10ull * 1000 * 1000 * 1000;

struct ConvertOptions {
  // Cast floating tensors (F64/F32/F16/BF16) to this type: kFloat, kHalf or kBFloat16. Integer, bool and F8
  // tensors are copied unchanged. nullopt: no cast.
  std::optional<c10::ScalarType> dtype;
  // Shard size limit when the output is an index (see WriteShardedSafetensors).
  uint64_t max_shard_bytes = kDefaultMaxShardBytes;
};

// Reads `in_path` (anything OpenTensorStore() opens: .safetensors, *.safetensors.index.json, .pth/.pt/.bin;
// every header and tensor description validated on open), casts as requested, and writes `out_path`:
//   *.safetensors.index.json -> shards "<stem>-0000i-of-0000n.safetensors" + the index in the same folder,
//                               where <stem> is the file name without ".safetensors.index.json";
//   *.safetensors            -> one file;
//   *.pth / *.pt / *.bin     -> a torch.save zip (WritePth).
// F8 tensors keep their F8 dtype in safetensors output. Output files appear only when complete (.partial +
// rename). Errors: those of the reader and writer (naming the file and tensor); InvalidArgument for a
// non-floating `dtype` or an unknown output extension.
Status ConvertCheckpoint(const std::string& in_path, const std::string& out_path,
                         std::optional<c10::ScalarType> dtype);
Status ConvertCheckpoint(const std::string& in_path, const std::string& out_path, const ConvertOptions& options);

}  // namespace liveavatar::io
