// safetensors files: an mmap-backed reader with full header validation, and an atomic writer.
//
// Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets:[b,e]},
// "__metadata__": {str: str}}, then the data section; offsets are relative to the data section.
// Validation (every violation is Corruption/NotSupported naming the file and the tensor): N within the file,
// JSON an object of objects, known dtype, non-negative integer shape, offsets in bounds, begin <= end,
// (end - begin) == dtype size * numel, no two tensors overlapping, metadata values strings.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"
#include "liveavatar/io/tensor_store.h"

namespace liveavatar::io {

struct SafetensorsEntry {
  std::string name;
  TensorMeta meta;
  uint64_t begin = 0;  // byte offsets relative to the data section
  uint64_t end = 0;
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;  // in data-offset order
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  // file offset of the data section (8 + N)
};

// Parses and validates a header from the first `size` bytes of a file image (the whole file, so bounds can be
// checked). `origin` names the source in errors. Pure function: the fuzzing entry point.
StatusOr<SafetensorsHeader> ParseSafetensorsHeader(const uint8_t* data, size_t size, const std::string& origin);

class MappedFile;  // read-only mmap of a whole file (io/mapped_file.h)

class SafetensorsReader : public TensorStore {
 public:
  static StatusOr<std::shared_ptr<SafetensorsReader>> Open(const std::string& path);

  const std::string& path() const override { return path_; }
  std::vector<std::string> Keys() const override;
  bool Contains(const std::string& key) const override { return index_.count(key) > 0; }
  StatusOr<TensorMeta> Meta(const std::string& key) const override;
  // Zero-copy view into the mapping (read-only memory; clone() before writing).
  StatusOr<at::Tensor> Get(const std::string& key) const override;
  void Release(const std::string& key) const override;

  const SafetensorsHeader& header() const { return header_; }
  const SafetensorsEntry* Find(const std::string& key) const;
  // File offset of the entry's first byte (for byte-range reads by the shard manager).
  uint64_t FileOffset(const SafetensorsEntry& e) const { return header_.data_offset + e.begin; }
  const std::shared_ptr<MappedFile>& mapping() const { return file_; }

 private:
  SafetensorsReader() = default;
  std::string path_;
  std::shared_ptr<MappedFile> file_;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;
};

// Writes tensors (any device/dtype with a safetensors spelling; made contiguous, copied to CPU) to `path`
// through `path + ".partial"` and an atomic rename, so a crash never leaves a half-written file under `path`.
// Names must be unique and non-empty.
Status WriteSafetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

// WriteSafetensors with the safetensors dtype of each tensor given explicitly (dtypes.size() == tensors.size()),
// e.g. uint8 raw bits written as F8_E4M3 / F8_E5M2 on LibTorch < 2.1, or to keep a source file's F8 spelling.
// Each tensor's element size must equal the dtype's size (InvalidArgument naming the tensor otherwise).
Status WriteSafetensorsTyped(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                             const std::vector<DType>& dtypes, const std::map<std::string, std::string>& metadata = {});

}  // namespace liveavatar::io
