// MappedFile: a read-only mmap of a whole file. Owns the mapping; unmaps on destruction. Tensors that alias it
// hold a shared_ptr, so the mapping lives as long as any view. Thread-safe after Open.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "liveavatar/core/status.h"

namespace liveavatar::io {

class MappedFile {
 public:
  // NotFound / IOError naming the path. An empty file maps to size() == 0, data() == nullptr.
  static StatusOr<std::shared_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace liveavatar::io
