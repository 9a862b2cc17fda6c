#include "liveavatar/io/zip_reader.h"

#include <array>
#include <cstring>

namespace liveavatar::io {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kEocdSize = 22;
constexpr size_t kZip64EocdSize = 56;
constexpr size_t kZip64LocatorSize = 20;
constexpr size_t kCentralSize = 46;
constexpr size_t kLocalSize = 30;
constexpr uint32_t kMax32 = 0xFFFFFFFFu;
constexpr uint16_t kMax16 = 0xFFFFu;

uint16_t Le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t Le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t Le64(const uint8_t* p) { return static_cast<uint64_t>(Le32(p)) | (static_cast<uint64_t>(Le32(p + 4)) << 32); }

void Put16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v & 0xFF));
  s.push_back(static_cast<char>(v >> 8));
}
void Put32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void Put64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

Status Bad(const std::string& origin, const std::string& what) {
  return Status::Corruption(origin + ": invalid zip archive: " + what);
}

// True when [off, off + len) lies inside [0, size).
bool InBounds(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }

const std::array<uint32_t, 256>& CrcTable() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

}  // namespace

uint32_t Crc32(const void* data, size_t n, uint32_t crc) {
  const auto& t = CrcTable();
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = t[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

StatusOr<ZipArchive> ZipArchive::Parse(const uint8_t* data, size_t size, const std::string& origin) {
  const uint64_t fsize = size;
  if (fsize < kEocdSize) return Bad(origin, "file is " + std::to_string(size) + " bytes, too short for a zip");
  // The end-of-central-directory record: the last signature whose comment reaches exactly to the end (or, for
  // sloppy writers, fits inside the file).
  uint64_t eocd = UINT64_MAX;
  const uint64_t lowest = fsize > kEocdSize + 0xFFFF ? fsize - kEocdSize - 0xFFFF : 0;
  for (uint64_t pos = fsize - kEocdSize + 1; pos-- > lowest;) {
    if (Le32(data + pos) == kEocdSig && pos + kEocdSize + Le16(data + pos + 20) <= fsize) {
      eocd = pos;
      break;
    }
  }
  if (eocd == UINT64_MAX) return Bad(origin, "no end-of-central-directory record (truncated or not a zip file)");
  const uint8_t* e = data + eocd;
  if (Le16(e + 4) != 0 || Le16(e + 6) != 0) return Bad(origin, "multi-disk archives are not supported");
  uint64_t count = Le16(e + 10);
  uint64_t cd_size = Le32(e + 12);
  uint64_t cd_offset = Le32(e + 16);
  // Zip64: a locator right before the EOCD points at the zip64 EOCD record holding the 64-bit values.
  if (eocd >= kZip64LocatorSize && Le32(data + eocd - kZip64LocatorSize) == kZip64LocatorSig) {
    const uint8_t* loc = data + eocd - kZip64LocatorSize;
    const uint64_t z_off = Le64(loc + 8);
    if (!InBounds(z_off, kZip64EocdSize, eocd - kZip64LocatorSize) || Le32(data + z_off) != kZip64EocdSig) {
      return Bad(origin, "zip64 end-of-central-directory locator points outside the file");
    }
    const uint8_t* z = data + z_off;
    count = Le64(z + 32);
    cd_size = Le64(z + 40);
    cd_offset = Le64(z + 48);
  } else if (count == kMax16 || cd_size == kMax32 || cd_offset == kMax32) {
    return Bad(origin, "end record needs zip64 values but has no zip64 locator");
  }
  if (!InBounds(cd_offset, cd_size, eocd)) {
    return Bad(origin, "central directory [" + std::to_string(cd_offset) + ", +" + std::to_string(cd_size) +
                           ") lies outside the file (" + std::to_string(size) + " bytes; truncated?)");
  }
  if (count > cd_size / kCentralSize) return Bad(origin, "central directory too small for its entry count");

  ZipArchive a;
  a.data_ = data;
  a.size_ = size;
  a.origin_ = origin;
  a.entries_.reserve(static_cast<size_t>(count));
  uint64_t pos = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (!InBounds(pos, kCentralSize, cd_end) || Le32(data + pos) != kCentralSig) {
      return Bad(origin, "central directory entry " + std::to_string(i) + " is malformed");
    }
    const uint8_t* c = data + pos;
    ZipEntry z;
    z.flags = Le16(c + 8);
    z.method = Le16(c + 10);
    z.crc32 = Le32(c + 16);
    z.compressed_size = Le32(c + 20);
    z.size = Le32(c + 24);
    const uint16_t name_len = Le16(c + 28), extra_len = Le16(c + 30), comment_len = Le16(c + 32);
    z.header_offset = Le32(c + 42);
    const uint64_t var_len = static_cast<uint64_t>(name_len) + extra_len + comment_len;
    if (!InBounds(pos + kCentralSize, var_len, cd_end)) {
      return Bad(origin, "central directory entry " + std::to_string(i) + " runs past the directory");
    }
    z.name.assign(reinterpret_cast<const char*>(c + kCentralSize), name_len);
    // Zip64 extended information: 64-bit values for the fields saturated at 0xFFFFFFFF, in this order.
    const uint8_t* x = c + kCentralSize + name_len;
    const uint8_t* x_end = x + extra_len;
    while (x + 4 <= x_end) {
      const uint16_t id = Le16(x), len = Le16(x + 2);
      if (x + 4 + len > x_end) return Bad(origin, "entry '" + z.name + "' has a malformed extra field");
      if (id == 0x0001) {
        const uint8_t* f = x + 4;
        const uint8_t* f_end = f + len;
        auto take = [&](uint64_t& v) -> bool {
          if (v != kMax32) return true;
          if (f + 8 > f_end) return false;
          v = Le64(f);
          f += 8;
          return true;
        };
        if (!take(z.size) || !take(z.compressed_size) || !take(z.header_offset)) {
          return Bad(origin, "entry '" + z.name + "' has a short zip64 extra field");
        }
      }
      x += 4 + len;
    }
    pos += kCentralSize + var_len;
    // The local header: its own name/extra lengths decide where the data begins.
    if (!InBounds(z.header_offset, kLocalSize, fsize) || Le32(data + z.header_offset) != kLocalSig) {
      return Bad(origin, "entry '" + z.name + "': local header at " + std::to_string(z.header_offset) +
                             " is missing (truncated file?)");
    }
    const uint8_t* l = data + z.header_offset;
    z.data_offset = z.header_offset + kLocalSize + Le16(l + 26) + Le16(l + 28);
    if (!InBounds(z.data_offset, z.compressed_size, fsize)) {
      return Bad(origin, "entry '" + z.name + "': data [" + std::to_string(z.data_offset) + ", +" +
                             std::to_string(z.compressed_size) + ") runs past the end of the file (" +
                             std::to_string(size) + " bytes; truncated?)");
    }
    if (z.method == 0 && z.compressed_size != z.size) {
      return Bad(origin, "stored entry '" + z.name + "' has different compressed and uncompressed sizes");
    }
    if (!a.index_.emplace(z.name, a.entries_.size()).second) return Bad(origin, "duplicate entry '" + z.name + "'");
    a.entries_.push_back(std::move(z));
  }
  return a;
}

const ZipEntry* ZipArchive::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

StatusOr<const uint8_t*> ZipArchive::Data(const ZipEntry& e) const {
  if (e.flags & 1) return Status::NotSupported(origin_ + ": zip entry '" + e.name + "' is encrypted");
  if (e.method != 0) {
    return Status::NotSupported(origin_ + ": zip entry '" + e.name + "' is compressed (method " +
                                std::to_string(e.method) +
                                "); only STORED entries are supported, as torch.save writes them");
  }
  return data_ + e.data_offset;
}

ZipWriter::ZipWriter(std::FILE* out, std::string origin, uint64_t alignment, bool force_zip64)
    : out_(out), origin_(std::move(origin)), alignment_(alignment == 0 ? 1 : alignment), force_zip64_(force_zip64) {}

Status ZipWriter::Write(const void* p, size_t n) {
  if (n != 0 && std::fwrite(p, 1, n, out_) != n) return Status::IOError(origin_ + ": write failed (disk full?)");
  offset_ += n;
  return Status::Ok();
}

Status ZipWriter::Add(const std::string& name, const void* data, uint64_t size) {
  if (name.size() > 0xFFFF) return Status::InvalidArgument(origin_ + ": zip entry name too long");
  ZipEntry z;
  z.name = name;
  z.size = z.compressed_size = size;
  z.crc32 = Crc32(data, static_cast<size_t>(size));
  z.header_offset = offset_;
  const bool zip64 = force_zip64_ || size >= kMax32;
  std::string h;
  Put32(h, kLocalSig);
  Put16(h, zip64 ? 45 : 20);
  Put16(h, 0);     // flags
  Put16(h, 0);     // stored
  Put16(h, 0);     // time
  Put16(h, 0x21);  // date: 1980-01-01
  Put32(h, z.crc32);
  Put32(h, zip64 ? kMax32 : static_cast<uint32_t>(size));
  Put32(h, zip64 ? kMax32 : static_cast<uint32_t>(size));
  Put16(h, static_cast<uint16_t>(name.size()));
  std::string extra;
  if (zip64) {
    Put16(extra, 0x0001);
    Put16(extra, 16);
    Put64(extra, size);
    Put64(extra, size);
  }
  // Padding field "FB" (PyTorch's choice of id) so the data starts on an `alignment_` boundary.
  const uint64_t before = offset_ + kLocalSize + name.size() + extra.size() + 4;
  const uint64_t pad = (alignment_ - before % alignment_) % alignment_;
  Put16(extra, 0x4246);
  Put16(extra, static_cast<uint16_t>(pad));
  extra.append(static_cast<size_t>(pad), 'Z');
  Put16(h, static_cast<uint16_t>(extra.size()));
  h += name;
  h += extra;
  LA_RETURN_IF_ERROR(Write(h.data(), h.size()));
  z.data_offset = offset_;
  LA_RETURN_IF_ERROR(Write(data, static_cast<size_t>(size)));
  entries_.push_back(std::move(z));
  return Status::Ok();
}

Status ZipWriter::Finish() {
  const uint64_t cd_offset = offset_;
  for (const ZipEntry& z : entries_) {
    const bool big_size = force_zip64_ || z.size >= kMax32;
    const bool big_off = force_zip64_ || z.header_offset >= kMax32;
    std::string extra;
    if (big_size || big_off) {
      Put16(extra, 0x0001);
      Put16(extra, static_cast<uint16_t>((big_size ? 16 : 0) + (big_off ? 8 : 0)));
      if (big_size) {
        Put64(extra, z.size);
        Put64(extra, z.compressed_size);
      }
      if (big_off) Put64(extra, z.header_offset);
    }
    std::string c;
    Put32(c, kCentralSig);
    Put16(c, extra.empty() ? 20 : 45);  // made by
    Put16(c, extra.empty() ? 20 : 45);  // needed
    Put16(c, 0);
    Put16(c, 0);
    Put16(c, 0);
    Put16(c, 0x21);
    Put32(c, z.crc32);
    Put32(c, big_size ? kMax32 : static_cast<uint32_t>(z.compressed_size));
    Put32(c, big_size ? kMax32 : static_cast<uint32_t>(z.size));
    Put16(c, static_cast<uint16_t>(z.name.size()));
    Put16(c, static_cast<uint16_t>(extra.size()));
    Put16(c, 0);  // comment
    Put16(c, 0);  // disk
    Put16(c, 0);  // internal attributes
    Put32(c, 0);  // external attributes
    Put32(c, big_off ? kMax32 : static_cast<uint32_t>(z.header_offset));
    c += z.name;
    c += extra;
    LA_RETURN_IF_ERROR(Write(c.data(), c.size()));
  }
  const uint64_t cd_size = offset_ - cd_offset;
  const uint64_t count = entries_.size();
  const bool zip64 = force_zip64_ || count >= kMax16 || cd_offset >= kMax32 || cd_size >= kMax32;
  std::string e;
  if (zip64) {
    const uint64_t z_off = offset_;
    Put32(e, kZip64EocdSig);
    Put64(e, kZip64EocdSize - 12);
    Put16(e, 45);
    Put16(e, 45);
    Put32(e, 0);
    Put32(e, 0);
    Put64(e, count);
    Put64(e, count);
    Put64(e, cd_size);
    Put64(e, cd_offset);
    Put32(e, kZip64LocatorSig);
    Put32(e, 0);
    Put64(e, z_off);
    Put32(e, 1);
  }
  Put32(e, kEocdSig);
  Put16(e, 0);
  Put16(e, 0);
  Put16(e, zip64 ? kMax16 : static_cast<uint16_t>(count));
  Put16(e, zip64 ? kMax16 : static_cast<uint16_t>(count));
  Put32(e, zip64 ? kMax32 : static_cast<uint32_t>(cd_size));
  Put32(e, zip64 ? kMax32 : static_cast<uint32_t>(cd_offset));
  Put16(e, 0);
  return Write(e.data(), e.size());
}

}  // namespace liveavatar::io
