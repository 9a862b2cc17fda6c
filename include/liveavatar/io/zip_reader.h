// ZipArchive: a read-only view of the central directory of a zip file image (the container torch.save uses for
// .pth / .pt / pytorch_model.bin), and a minimal STORED-only zip writer used by the .pth writer.
//
// Reading: the end-of-central-directory record is located (zip64 EOCD + locator honoured), every central
// directory entry is parsed and its local header checked, so each entry's data range [data_offset,
// data_offset + size) is known to lie inside the image. Only STORED (method 0), unencrypted entries can be
// read; a compressed or encrypted entry is listed but Data() refuses it with NotSupported naming the entry.
// CRCs are not verified (checkpoints are GBs; the tensor checks downstream catch truncation).
//
// The archive does not own the bytes: the caller keeps the image (usually a MappedFile) alive.
// Thread safety: immutable after Parse; const methods are safe to call concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "liveavatar/core/status.h"

namespace liveavatar::io {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;       // 0 = stored, 8 = deflate, ...
  uint16_t flags = 0;        // general purpose bit flags (bit 0: encrypted)
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;         // uncompressed size
  uint64_t header_offset = 0;  // file offset of the local header
  uint64_t data_offset = 0;    // file offset of the first data byte (after the local header)
};

class ZipArchive {
 public:
  // Parses the central directory of `data[0, size)`. Corruption naming `origin` for anything malformed
  // (no end record, directory or local header out of bounds, duplicate names, data past the end).
  static StatusOr<ZipArchive> Parse(const uint8_t* data, size_t size, const std::string& origin);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* Find(const std::string& name) const;
  // Pointer to the stored bytes of `e` (e.size of them). NotSupported naming the entry and origin when the entry
  // is compressed or encrypted.
  StatusOr<const uint8_t*> Data(const ZipEntry& e) const;
  const std::string& origin() const { return origin_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string origin_;
  std::vector<ZipEntry> entries_;
  std::map<std::string, size_t> index_;
};

// CRC-32 (zip / IEEE polynomial) of `n` bytes, continuing from `crc` (0 to start).
uint32_t Crc32(const void* data, size_t n, uint32_t crc = 0);

// Writes a zip of STORED entries, each entry's data aligned to `alignment` bytes in the file through a padding
// extra field (what PyTorch's writer does with alignment 64). Zip64 records are written when an offset, size
// or count needs them, or always with force_zip64 (tests). Entries go to an open stream in order; Finish() writes
// the central directory. Errors: IOError naming `origin`.
class ZipWriter {
 public:
  ZipWriter(std::FILE* out, std::string origin, uint64_t alignment = 64, bool force_zip64 = false);
  Status Add(const std::string& name, const void* data, uint64_t size);
  Status Finish();

 private:
  Status Write(const void* p, size_t n);
  std::FILE* out_;
  std::string origin_;
  uint64_t alignment_;
  bool force_zip64_;
  uint64_t offset_ = 0;
  std::vector<ZipEntry> entries_;
};

}  // namespace liveavatar::io
