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
  // NotFound / IOError naming the path; InvalidArgument for anything but a regular file (a FIFO or device is
  // refused without blocking). An empty file maps to size() == 0, data() == nullptr.
  static StatusOr<std::shared_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Drops this process's resident pages of [offset, offset + length) (rounded out to whole pages) after their
  // bytes were copied elsewhere: RSS falls back while the kernel's page cache keeps them for the next reader
  // (another rank on the host). Views of the range stay valid (they fault the pages in again). No-op when out of
  // range.
  void DropPages(size_t offset, size_t length) const;

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace liveavatar::io
