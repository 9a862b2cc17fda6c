// umT5 encoder (reference: Wan2.2 `modules/t5.py: T5Encoder`, built as umt5_xxl(encoder_only=True)).
//
//   x = token_embedding(ids)                                   ids: [B, L] -> x: [B, L, dim]
//   per block i:  x += o(Attn(q, k, v of norm1(x)))            no 1/sqrt(d) scaling; logits + bias_i
//                 x += fc2(fc1(norm2(x)) * gelu_tanh(gate.0(norm2(x))))
//   x = norm(x)
// T5 RMS norm: weight * (x * rsqrt(mean(x^2) + 1e-6)), statistics in fp32, cast to the weight dtype before the
// product. bias_i = relative position bias of block i (blocks.i.pos_embedding; one shared top-level
// pos_embedding when shared_pos), with keys where mask == 0 set to the minimum of the compute dtype (float32
// min in fp32, not -inf). Softmax in fp32. Dropout is off (inference).
//
// Weights are data (WeightMap); the compute dtype and device are those of the loaded weights (LoadOptions):
// fp32 or bf16 (normal on GPU), CPU or CUDA. Every attention goes through models::Attention.
// Thread safety: a loaded T5Encoder is immutable; Encode() may run concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"
#include "liveavatar/models/weights.h"

namespace liveavatar::models::t5 {

struct TokenizedBatch;

// Architecture; defaults are the real umt5-xxl encoder.
struct T5Config {
  int64_t vocab = 256384;
  int64_t dim = 4096;
  int64_t dim_attn = 4096;
  int64_t dim_ffn = 10240;
  int64_t num_heads = 64;
  int64_t num_layers = 24;
  int64_t num_buckets = 32;
  bool shared_pos = false;
  int64_t max_dist = 128;  // fixed in the reference (T5RelativeEmbedding default), not in config.json
  double eps = 1e-6;       // T5LayerNorm

  // Reads the keys above from a JSON object (missing keys keep their defaults; "vocab"/"vocab_size" and
  // "num_layers"/"encoder_layers" are both accepted). InvalidArgument naming `source` and the key on a wrong
  // type or an inconsistent value (dim_attn % num_heads != 0, non-positive sizes).
  static StatusOr<T5Config> FromJsonText(const std::string& json_text, const std::string& source);
  // Same from a file; NotFound / InvalidArgument naming the path.
  static StatusOr<T5Config> FromJsonFile(const std::string& path);

  int64_t head_dim() const { return dim_attn / num_heads; }
};

// Every tensor of the checkpoint with its shape (strict loading; make-tiny writes random tensors from these).
// Norm weights have init "ones".
std::vector<WeightSpec> T5WeightSpecs(const T5Config& config);

// Bidirectional relative-position bucket table: out[i][j] = bucket of (j - i), [lq, lk] int64 on CPU.
// n = num_buckets / 2; bucket = n * (r > 0) + (|r| < n/2 ? |r| : min(n - 1, n/2 + trunc(log(|r| / (n/2)) /
// log(max_dist / (n/2)) * (n - n/2)))) with the log in float32, as the reference computes it.
at::Tensor RelativePositionBuckets(int64_t lq, int64_t lk, int64_t num_buckets, int64_t max_dist);

class T5Encoder {
 public:
  // Opens `weights_path` (a .pth state dict or .safetensors, through io::OpenTensorStore) and binds
  // T5WeightSpecs(config) strictly, converting to options.dtype on options.device. Errors name the file and keys.
  static StatusOr<T5Encoder> Load(const std::string& weights_path, const T5Config& config,
                                  const LoadOptions& options = {});
  // From already loaded weights (keys of T5WeightSpecs). InvalidArgument on a missing key or a wrong shape.
  static StatusOr<T5Encoder> FromWeights(WeightMap weights, const T5Config& config);

  // ids, mask: [B, L] integer tensors (any device; moved to the weights' device). Returns hidden [B, L, dim] in
  // the compute dtype on the weights' device.
  // REQUIRES: ids within [0, vocab); every row of mask has at least one non-zero entry.
  at::Tensor Encode(const at::Tensor& ids, const at::Tensor& mask) const;

  // Encode() then, per row b, hidden[b, :sum(mask[b] > 0)]: the reference's T5EncoderModel.__call__ output
  // (the DiT zero-pads each context back to text_len itself).
  std::vector<at::Tensor> EncodeTrimmed(const at::Tensor& ids, const at::Tensor& mask) const;
  std::vector<at::Tensor> EncodeTrimmed(const TokenizedBatch& batch) const;

  const T5Config& config() const { return config_; }
  const WeightMap& weights() const { return weights_; }

 private:
  T5Encoder(WeightMap weights, T5Config config) : weights_(std::move(weights)), config_(config) {}
  WeightMap weights_;
  T5Config config_;
};

}  // namespace liveavatar::models::t5
