// VaeFeatureCache: the causal state of one chunked VAE pass (upstream `feat_cache`), keyed by the checkpoint
// prefix of the module that owns each slot (e.g. "decoder.upsamples.4.residual.2"), not by a running index.
//
//   * a 3-tap CausalConv3d keeps the last two frames of its input (fewer before two frames were seen);
//   * downsample3d's time_conv keeps the last frame of its input;
//   * upsample3d marks its first chunk with an empty slot (the first chunk passes through; the next one gets
//     zero history, so the first frame is never used as temporal history — upstream behaviour).
//
// With a spatial split (spatial_parallel.h) each rank's cache holds only its own rows (the halo-padded input of
// every conv with a 3-row kernel), so the causal state never crosses ranks.
//
// A cache belongs to exactly one pass (one encode, or one decoder stream, or one spatial tile of it); the model
// functions read and update it and keep no state of their own. Owned by the caller (StreamingDecoder, Encode).
// Thread safety: none; one cache per thread.
#pragma once

#include <map>
#include <string>

#include <ATen/core/Tensor.h>

namespace liveavatar::models::vae {

class VaeFeatureCache {
 public:
  VaeFeatureCache() = default;

  // True when `key` has a slot (possibly an empty marker).
  bool Has(const std::string& key) const { return slots_.count(key) != 0; }
  // The slot's tensor; undefined when absent or an empty marker.
  at::Tensor Get(const std::string& key) const;
  // Stores `value` (may be undefined: a marker). The cache keeps the tensor alive; pass a compact copy
  // (clone of a slice), not a view of a large activation.
  void Set(const std::string& key, at::Tensor value);

  // Forgets everything: the next pass starts as a fresh one.
  void Clear() { slots_.clear(); }
  bool empty() const { return slots_.empty(); }
  size_t size() const { return slots_.size(); }
  // Bytes held by the cached tensors.
  int64_t bytes() const;

 private:
  std::map<std::string, at::Tensor> slots_;
};

}  // namespace liveavatar::models::vae
