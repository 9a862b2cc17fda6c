// Strict weight binding shared by every model (style.md habit 5): a model declares the tensors it consumes as
// WeightSpecs (checkpoint key + expected shape); LoadWeights() fetches them from a TensorStore, checks shapes,
// converts dtype/device, and fails with ONE error listing every missing key, every shape mismatch and every
// key of the store that no spec consumed. make-tiny writes random tensors from the same specs.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "liveavatar/core/status.h"
#include "liveavatar/io/tensor_store.h"

namespace liveavatar::models {

struct WeightSpec {
  std::string key;             // exact checkpoint key, e.g. "blocks.0.self_attn.q.weight"
  std::vector<int64_t> shape;  // expected shape
  bool optional = false;       // absent is fine (e.g. lm_head of wav2vec2)
  // Value make-tiny writes for this tensor: "normal" (random, scaled by 1/sqrt(fan_in)), "ones", "zeros".
  std::string init = "normal";
};

struct LoadOptions {
  c10::ScalarType dtype = c10::kFloat;  // floating tensors are converted to this; integer tensors keep theirs
  c10::Device device = c10::Device(c10::kCPU);
  // Keys of the store starting with one of these are allowed to go unused (e.g. "lm_head." for wav2vec2).
  std::vector<std::string> ignore_prefixes;
  // Keys whose dtype must be kept as stored (e.g. norms kept in fp32 while the model runs in bf16).
  std::vector<std::string> keep_fp32_suffixes;
  // When set, the dtype of each floating tensor (overrides `dtype` and `keep_fp32_suffixes`), e.g. the DiT's
  // fp32 islands.
  std::function<c10::ScalarType(const std::string& key)> dtype_of;
  // When set, called with each stored tensor (a read-only view of the file) before the conversion; returns the
  // tensor to convert instead (e.g. fp32 on `device` with a LoRA delta added), or an undefined tensor to keep it.
  std::function<StatusOr<at::Tensor>(const std::string& key, const at::Tensor& stored)> transform;
  // Refuse NaN / Inf in floating tensors (checked on the converted tensor, where it lands, in bounded chunks).
  bool check_finite = true;
};

using WeightMap = std::map<std::string, at::Tensor>;

// The metadata half of LoadWeights(): compares the keys and shapes of `store` with `specs` without reading any
// tensor data (`liveavatar doctor`, pre-flight checks). Each list holds one entry per offending key, formatted as
// in LoadWeights()'s error: "key [shape]" (missing), "key: file [a], expected [b]" (mismatched), "key" (unexpected;
// keys starting with one of `ignore_prefixes` are allowed to go unused).
struct WeightCheck {
  std::vector<std::string> missing, mismatched, unexpected;
  size_t matched = 0;  // specs found with the expected shape
  bool ok() const { return missing.empty() && mismatched.empty() && unexpected.empty(); }
};
StatusOr<WeightCheck> CheckWeights(const io::TensorStore& store, const std::vector<WeightSpec>& specs,
                                   const std::vector<std::string>& ignore_prefixes = {});

// The message LoadWeights() fails with for a failed check: "<store_path>: checkpoint does not match the model:"
// followed by one indented line per offending key, grouped as missing / shape mismatch / unexpected.
std::string WeightCheckReport(const std::string& store_path, const WeightCheck& check);

// "[a, b, c]" (the shape notation of every weight error message).
std::string ShapeString(at::IntArrayRef shape);

// Loads exactly `specs` from `store`, streaming: one tensor at a time goes from the file (a memory-mapped view)
// through `transform` to its final dtype and device, and its mapped pages are released (TensorStore::Release), so
// no second copy of the model exists at any moment. Errors name store.path() and list the offending keys with
// both shapes; a non-finite value names the key.
StatusOr<WeightMap> LoadWeights(const io::TensorStore& store, const std::vector<WeightSpec>& specs,
                                const LoadOptions& options);

// Corruption "<what> holds NaN|infinite values ..." when a floating tensor has a non-finite element; checked in
// bounded chunks on the tensor's device.
Status CheckFinite(const at::Tensor& t, const std::string& what);

// Fetches `key` from `weights`; throws c10::Error naming the key when absent (a bug: specs and model disagree).
const at::Tensor& W(const WeightMap& weights, const std::string& key);

}  // namespace liveavatar::models
