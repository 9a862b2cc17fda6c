// Sharded safetensors checkpoints (diffusers / transformers layout): `<name>.safetensors.index.json` =
// {"metadata": {...}, "weight_map": {tensor name: shard file name}} next to the shard files.
//
// SafetensorsIndexReader opens every shard named in weight_map (relative to the index's folder) and validates
// the whole set up front: every mapped key exists in its shard, and no shard holds a tensor the map does not
// assign to it. Errors name the index and, where one is involved, the shard and tensor. Get() returns the
// shard reader's zero-copy view. Thread safety: const methods are safe to call concurrently.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"
#include "liveavatar/io/safetensors.h"
#include "liveavatar/io/tensor_store.h"

namespace liveavatar::io {

class SafetensorsIndexReader : public TensorStore {
 public:
  // NotFound for a missing index or shard; Corruption for bad JSON, a weight_map that is not an object of
  // strings, an absolute shard path or one containing "..", a key missing from its shard, or a shard tensor the
  // map does not assign to that shard; shard header errors as SafetensorsReader::Open.
  static StatusOr<std::shared_ptr<SafetensorsIndexReader>> Open(const std::string& index_path);

  const std::string& path() const override { return path_; }
  std::vector<std::string> Keys() const override;
  bool Contains(const std::string& key) const override { return where_.count(key) > 0; }
  StatusOr<TensorMeta> Meta(const std::string& key) const override;
  StatusOr<at::Tensor> Get(const std::string& key) const override;
  void Release(const std::string& key) const override;

  // Shard file names (as written in the index), sorted; and the shard holding `key` (nullptr when absent).
  std::vector<std::string> Shards() const;
  const SafetensorsReader* ShardOf(const std::string& key) const;
  // The index's "metadata" object flattened to strings (numbers are printed, e.g. total_size).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsIndexReader() = default;
  std::string path_;
  std::map<std::string, std::shared_ptr<SafetensorsReader>> shards_;  // shard name -> reader
  std::map<std::string, const SafetensorsReader*> where_;            // tensor -> its shard
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` as diffusers-style shards `<base_name>-00001-of-0000N.safetensors` (5-digit numbers) in
// `dir`, plus `<base_name>.safetensors.index.json` ({"metadata": {"total_size": bytes}, "weight_map": ...}).
// Tensors are packed in order; a new shard starts when adding the next tensor would exceed max_shard_bytes (a
// tensor larger than the limit gets a shard of its own). `dtypes`, when non-empty, gives the safetensors dtype
// of each tensor (see WriteSafetensors). Every file goes through ".partial" + rename; the index is written last,
// so a failure never leaves an index pointing at missing shards. Returns the index path.
// REQUIRES: max_shard_bytes > 0 (InvalidArgument otherwise).
StatusOr<std::string> WriteShardedSafetensors(const std::string& dir, const std::string& base_name,
                                              const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                              uint64_t max_shard_bytes, const std::vector<DType>& dtypes = {});

}  // namespace liveavatar::io
