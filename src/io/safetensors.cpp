#include "liveavatar/io/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "liveavatar/io/mapped_file.h"

namespace liveavatar::io {

int64_t TensorMeta::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // same bound as the reference implementation

Status Bad(const std::string& origin, const std::string& what) {
  return Status::Corruption(origin + ": invalid safetensors header: " + what);
}

}  // namespace

StatusOr<SafetensorsHeader> ParseSafetensorsHeader(const uint8_t* data, size_t size, const std::string& origin) {
  if (size < 8) return Bad(origin, "file is " + std::to_string(size) + " bytes, shorter than the 8-byte length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  // A file that is not safetensors at all shows here: name its first bytes in hex only, never as a number or text.
  auto magic = [data] {
    static const char* kHex = "0123456789abcdef";
    std::string h;
    for (int i = 0; i < 8; ++i) h += std::string(1, kHex[data[i] >> 4]) + kHex[data[i] & 15];
    return h;
  };
  if (n > kMaxHeaderBytes) {
    return Bad(origin, "the first 8 bytes (hex " + magic() +
                           ") are not a safetensors header length (over 100 MiB): not a safetensors file?");
  }
  if (n > size - 8) {
    return Bad(origin, "the header length in the first 8 bytes (hex " + magic() + ") runs past the end of the file (" +
                           std::to_string(size) + " bytes): truncated, or not a safetensors file?");
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(reinterpret_cast<const char*>(data) + 8, reinterpret_cast<const char*>(data) + 8 + n);
  } catch (const std::exception& e) {
    return Bad(origin, std::string("header is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) return Bad(origin, "header JSON is not an object");
  SafetensorsHeader h;
  h.data_offset = 8 + n;
  const uint64_t data_size = size - h.data_offset;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return Bad(origin, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return Bad(origin, "__metadata__ value of '" + m.key() + "' is not a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (name.empty()) return Bad(origin, "empty tensor name");
    if (!v.is_object()) return Bad(origin, where + " is not an object");
    if (!v.contains("dtype") || !v["dtype"].is_string()) return Bad(origin, where + " has no string 'dtype'");
    if (!v.contains("shape") || !v["shape"].is_array()) return Bad(origin, where + " has no array 'shape'");
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2) {
      return Bad(origin, where + " has no 2-element 'data_offsets'");
    }
    auto dt = ParseDType(v["dtype"].get<std::string>());
    if (!dt.ok()) return Status::NotSupported(origin + ": " + where + ": " + dt.status().message());
    SafetensorsEntry e;
    e.name = name;
    e.meta.dtype = dt.value();
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0)) {
        return Bad(origin, where + " has a non-integer or negative dimension");
      }
      uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 48) || (dim != 0 && numel > (std::numeric_limits<uint64_t>::max() >> 16) / dim)) {
        return Bad(origin, where + " has an absurd shape");
      }
      numel *= dim;
      e.meta.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const auto& o : v["data_offsets"]) {
      if (!o.is_number_unsigned() && !(o.is_number_integer() && o.get<int64_t>() >= 0)) {
        return Bad(origin, where + " has a non-integer or negative data offset");
      }
    }
    e.begin = v["data_offsets"][0].get<uint64_t>();
    e.end = v["data_offsets"][1].get<uint64_t>();
    if (e.begin > e.end) return Bad(origin, where + " has begin offset > end offset");
    if (e.end > data_size) {
      return Bad(origin, where + " data [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                             ") runs past the end of the data section (" + std::to_string(data_size) + " bytes)");
    }
    const uint64_t expect = numel * DTypeSize(e.meta.dtype);
    if (e.end - e.begin != expect) {
      return Bad(origin, where + " holds " + std::to_string(e.end - e.begin) + " bytes but dtype " +
                             DTypeName(e.meta.dtype) + " x shape needs " + std::to_string(expect));
    }
    h.entries.push_back(std::move(e));
  }
  std::sort(h.entries.begin(), h.entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < h.entries.size(); ++i) {
    const auto& p = h.entries[i - 1];
    const auto& c = h.entries[i];
    if (c.begin < p.end) {
      return Bad(origin, "tensors '" + p.name + "' and '" + c.name + "' overlap in the data section");
    }
  }
  return h;
}

StatusOr<std::shared_ptr<SafetensorsReader>> SafetensorsReader::Open(const std::string& path) {
  LA_ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  LA_ASSIGN_OR_RETURN(auto header, ParseSafetensorsHeader(file->data(), file->size(), path));
  std::shared_ptr<SafetensorsReader> r(new SafetensorsReader());
  r->path_ = path;
  r->file_ = std::move(file);
  r->header_ = std::move(header);
  for (size_t i = 0; i < r->header_.entries.size(); ++i) r->index_[r->header_.entries[i].name] = i;
  return r;
}

std::vector<std::string> SafetensorsReader::Keys() const {
  std::vector<std::string> keys;
  keys.reserve(index_.size());
  for (const auto& kv : index_) keys.push_back(kv.first);
  return keys;
}

const SafetensorsEntry* SafetensorsReader::Find(const std::string& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &header_.entries[it->second];
}

StatusOr<TensorMeta> SafetensorsReader::Meta(const std::string& key) const {
  const SafetensorsEntry* e = Find(key);
  if (e == nullptr) return Status::NotFound(path_ + ": no tensor '" + key + "'");
  return e->meta;
}

StatusOr<at::Tensor> SafetensorsReader::Get(const std::string& key) const {
  const SafetensorsEntry* e = Find(key);
  if (e == nullptr) return Status::NotFound(path_ + ": no tensor '" + key + "'");
  const auto opts = at::TensorOptions().dtype(ToScalarType(e->meta.dtype)).device(at::kCPU);
  if (e->meta.numel() == 0) return at::empty(e->meta.shape, opts);
  const uint8_t* ptr = file_->data() + FileOffset(*e);
  internal::CountTensorDataRequest(e->meta.nbytes());
  auto keep = file_;
  // The mapping is read-only; LibTorch's from_blob takes a non-const pointer but we never write through it.
  at::Tensor t = at::from_blob(const_cast<uint8_t*>(ptr), e->meta.shape, [keep](void*) {}, opts);
  // Element alignment: safetensors does not guarantee it; copy when the view would be misaligned.
  if (reinterpret_cast<uintptr_t>(ptr) % DTypeSize(e->meta.dtype) != 0) t = t.clone();
  return t;
}

void SafetensorsReader::Release(const std::string& key) const {
  if (const SafetensorsEntry* e = Find(key)) file_->DropPages(FileOffset(*e), e->meta.nbytes());
}

Status WriteSafetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  std::vector<DType> dtypes;
  dtypes.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    if (!t.defined()) return Status::InvalidArgument(path + ": tensor '" + name + "' is undefined");
    auto dt = FromScalarType(t.scalar_type());
    if (!dt.ok()) return Status::NotSupported(path + ": tensor '" + name + "': " + dt.status().message());
    dtypes.push_back(dt.value());
  }
  return WriteSafetensorsTyped(path, tensors, dtypes, metadata);
}

Status WriteSafetensorsTyped(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                             const std::vector<DType>& dtypes, const std::map<std::string, std::string>& metadata) {
  if (dtypes.size() != tensors.size()) {
    return Status::InvalidArgument(path + ": " + std::to_string(dtypes.size()) + " dtypes for " +
                                   std::to_string(tensors.size()) + " tensors");
  }
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> cpu;
  cpu.reserve(tensors.size());
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string& name = tensors[i].first;
    const at::Tensor& t = tensors[i].second;
    const DType dt = dtypes[i];
    if (name.empty() || name == "__metadata__") {
      return Status::InvalidArgument(path + ": invalid tensor name '" + name + "'");
    }
    if (header.contains(name)) return Status::InvalidArgument(path + ": duplicate tensor name '" + name + "'");
    if (!t.defined()) return Status::InvalidArgument(path + ": tensor '" + name + "' is undefined");
    if (static_cast<size_t>(t.element_size()) != DTypeSize(dt) || t.is_complex()) {
      return Status::InvalidArgument(path + ": tensor '" + name + "' of type " + c10::toString(t.scalar_type()) +
                                     " cannot be written as " + DTypeName(dt));
    }
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(c.numel()) * DTypeSize(dt);
    nlohmann::json entry = nlohmann::json::object();
    entry["dtype"] = DTypeName(dt);
    entry["shape"] = c.sizes().vec();
    entry["data_offsets"] = nlohmann::json::array({offset, offset + nbytes});
    header[name] = std::move(entry);
    offset += nbytes;
    cpu.push_back(std::move(c));
  }
  std::string hs;
  try {
    hs = header.dump();
  } catch (const std::exception& e) {
    return Status::InvalidArgument(path + ": tensor names / metadata are not valid UTF-8: " + e.what());
  }
  while ((8 + hs.size()) % 8 != 0) hs.push_back(' ');  // keep the data section 8-byte aligned
  const std::string tmp = path + ".partial";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return Status::IOError(tmp + ": cannot open for writing");
    uint8_t len[8];
    uint64_t n = hs.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(hs.data(), static_cast<std::streamsize>(hs.size()));
    for (const auto& c : cpu) {
      out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * c.element_size()));
    }
    out.flush();
    if (!out) {
      out.close();
      std::remove(tmp.c_str());
      return Status::IOError(tmp + ": write failed (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Status::IOError(path + ": cannot rename from " + tmp);
  }
  return Status::Ok();
}

}  // namespace liveavatar::io
