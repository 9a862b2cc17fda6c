#include "liveavatar/io/pth.h"

#include <cstdio>
#include <set>

#include <ATen/ATen.h>

#include "liveavatar/io/mapped_file.h"
#include "liveavatar/io/zip_reader.h"
#include "pth_pickle.h"

namespace liveavatar::io {

namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

StatusOr<std::shared_ptr<PthReader>> PthReader::Open(const std::string& path) {
  LA_ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  const uint8_t* data = file->data();
  const size_t size = file->size();
  if (size >= 2 && data[0] == 0x80 && data[1] <= 5) {
    return Status::NotSupported(path + ": legacy (pre-1.6, non-zip) torch.save format is not supported; re-save "
                                "it with torch.save(..., _use_new_zipfile_serialization=True)");
  }
  if (size < 4 || data[0] != 'P' || data[1] != 'K') {
    return Status::Corruption(path + ": not a torch.save zip archive (no zip signature)");
  }
  LA_ASSIGN_OR_RETURN(ZipArchive zip, ZipArchive::Parse(data, size, path));
  // data.pkl sits in the archive folder: "<folder>/data.pkl" (folder names vary between writers).
  const ZipEntry* pkl = nullptr;
  std::string prefix;
  for (const ZipEntry& e : zip.entries()) {
    if (e.name == "data.pkl" || (EndsWith(e.name, "/data.pkl") && e.name.find('/') == e.name.size() - 9)) {
      pkl = &e;
      prefix = e.name.substr(0, e.name.size() - 8);
      break;
    }
  }
  if (pkl == nullptr) return Status::Corruption(path + ": zip holds no <archive>/data.pkl (not a torch.save file)");
  if (zip.Find(prefix + "byteorder") != nullptr) {
    const ZipEntry* bo = zip.Find(prefix + "byteorder");
    LA_ASSIGN_OR_RETURN(const uint8_t* p, zip.Data(*bo));
    std::string order(reinterpret_cast<const char*>(p), static_cast<size_t>(bo->size));
    if (order != "little" && order != "little\n") {
      return Status::NotSupported(path + ": byteorder '" + order + "' is not supported (little-endian only)");
    }
  }
  LA_ASSIGN_OR_RETURN(const uint8_t* pkl_data, zip.Data(*pkl));
  LA_ASSIGN_OR_RETURN(internal::PickledStateDict sd,
                      internal::ParsePickleStateDict(pkl_data, static_cast<size_t>(pkl->size), path));
  std::shared_ptr<PthReader> r(new PthReader());
  r->path_ = path;
  r->prefix_ = prefix;
  r->nested_under_ = sd.nested_under;
  for (internal::PickledTensor& t : sd.tensors) {
    const std::string entry_name = prefix + "data/" + t.storage_key;
    const ZipEntry* e = zip.Find(entry_name);
    if (e == nullptr) {
      return Status::Corruption(path + ": tensor '" + t.name + "': storage entry '" + entry_name + "' is missing");
    }
    LA_ASSIGN_OR_RETURN(const uint8_t* p, zip.Data(*e));
    (void)p;
    uint64_t need = 0;
    if (__builtin_mul_overflow(t.storage_numel, static_cast<uint64_t>(DTypeSize(t.dtype)), &need) || e->size != need) {
      return Status::Corruption(path + ": tensor '" + t.name + "': storage '" + entry_name + "' holds " +
                                std::to_string(e->size) + " bytes but " + std::to_string(t.storage_numel) + " x " +
                                DTypeName(t.dtype) + " needs " + std::to_string(need));
    }
    PthTensorInfo info;
    info.name = std::move(t.name);
    info.dtype = t.dtype;
    info.size = std::move(t.size);
    info.stride = std::move(t.stride);
    info.storage_offset = t.storage_offset;
    info.storage_key = std::move(t.storage_key);
    info.storage_file_offset = e->data_offset;
    info.storage_numel = t.storage_numel;
    r->index_[info.name] = r->tensors_.size();
    r->tensors_.push_back(std::move(info));
  }
  r->file_ = std::move(file);
  return r;
}

std::vector<std::string> PthReader::Keys() const {
  std::vector<std::string> keys;
  keys.reserve(index_.size());
  for (const auto& kv : index_) keys.push_back(kv.first);
  return keys;
}

StatusOr<TensorMeta> PthReader::Meta(const std::string& key) const {
  auto it = index_.find(key);
  if (it == index_.end()) return Status::NotFound(path_ + ": no tensor '" + key + "'");
  const PthTensorInfo& t = tensors_[it->second];
  return TensorMeta{t.dtype, t.size};
}

StatusOr<at::Tensor> PthReader::Get(const std::string& key) const {
  auto it = index_.find(key);
  if (it == index_.end()) return Status::NotFound(path_ + ": no tensor '" + key + "'");
  const PthTensorInfo& t = tensors_[it->second];
  const auto opts = at::TensorOptions().dtype(ToScalarType(t.dtype)).device(at::kCPU);
  if (t.storage_numel == 0) return at::empty(t.size, opts);
  const uint8_t* ptr = file_->data() + t.storage_file_offset;
  internal::CountTensorDataRequest(t.storage_numel * DTypeSize(t.dtype));
  auto keep = file_;
  // The mapping is read-only; from_blob takes a non-const pointer but nothing writes through it.
  at::Tensor storage = at::from_blob(const_cast<uint8_t*>(ptr), {static_cast<int64_t>(t.storage_numel)},
                                     [keep](void*) {}, opts);
  if (reinterpret_cast<uintptr_t>(ptr) % DTypeSize(t.dtype) != 0) storage = storage.clone();
  return storage.as_strided(t.size, t.stride, t.storage_offset);
}

void PthReader::Release(const std::string& key) const {
  auto it = index_.find(key);
  if (it == index_.end()) return;
  const PthTensorInfo& t = tensors_[it->second];
  file_->DropPages(t.storage_file_offset, t.storage_numel * DTypeSize(t.dtype));
}

Status WritePth(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                const PthWriteOptions& options) {
  if (options.archive_name.empty() || options.archive_name.find('/') != std::string::npos) {
    return Status::InvalidArgument(path + ": invalid archive name '" + options.archive_name + "'");
  }
  std::vector<internal::PickledTensor> descs;
  std::vector<at::Tensor> cpu;
  std::set<std::string> names;
  for (const auto& [name, t] : tensors) {
    if (name.empty()) return Status::InvalidArgument(path + ": empty tensor name");
    if (!names.insert(name).second) return Status::InvalidArgument(path + ": duplicate tensor name '" + name + "'");
    if (!t.defined()) return Status::InvalidArgument(path + ": tensor '" + name + "' is undefined");
    auto dt = FromScalarType(t.scalar_type());
    if (!dt.ok()) return Status::NotSupported(path + ": tensor '" + name + "': " + dt.status().message());
    if (internal::StorageClassName(dt.value()) == nullptr) {
      return Status::NotSupported(path + ": tensor '" + name + "': dtype " + DTypeName(dt.value()) +
                                  " has no torch storage class");
    }
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    internal::PickledTensor d;
    d.name = name;
    d.storage_key = std::to_string(descs.size());
    d.dtype = dt.value();
    d.storage_numel = static_cast<uint64_t>(c.numel());
    d.storage_offset = 0;
    d.size = c.sizes().vec();
    d.stride = c.strides().vec();
    descs.push_back(std::move(d));
    cpu.push_back(std::move(c));
  }
  LA_ASSIGN_OR_RETURN(std::string pickle, internal::PickleStateDict(descs));
  const std::string tmp = path + ".partial";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return Status::IOError(tmp + ": cannot open for writing");
  Status s = [&]() -> Status {
    ZipWriter zip(f, path, 64, options.force_zip64);
    const std::string dir = options.archive_name + "/";
    LA_RETURN_IF_ERROR(zip.Add(dir + "data.pkl", pickle.data(), pickle.size()));
    LA_RETURN_IF_ERROR(zip.Add(dir + "byteorder", "little", 6));
    for (size_t i = 0; i < cpu.size(); ++i) {
      const uint64_t nbytes = static_cast<uint64_t>(cpu[i].numel()) * cpu[i].element_size();
      LA_RETURN_IF_ERROR(zip.Add(dir + "data/" + descs[i].storage_key, cpu[i].data_ptr(), nbytes));
    }
    LA_RETURN_IF_ERROR(zip.Add(dir + "version", "3\n", 2));
    return zip.Finish();
  }();
  if (std::fclose(f) != 0 && s.ok()) s = Status::IOError(tmp + ": write failed (disk full?)");
  if (!s.ok()) {
    std::remove(tmp.c_str());
    return s;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Status::IOError(path + ": cannot rename from " + tmp);
  }
  return Status::Ok();
}

}  // namespace liveavatar::io
