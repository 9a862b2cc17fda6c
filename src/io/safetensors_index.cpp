#include "liveavatar/io/safetensors_index.h"

#include "liveavatar/io/path_rules.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

namespace liveavatar::io {

namespace fs = std::filesystem;

namespace {

Status BadIndex(const std::string& index, const std::string& what) {
  return Status::Corruption(index + ": invalid safetensors index: " + what);
}

}  // namespace

StatusOr<std::shared_ptr<SafetensorsIndexReader>> SafetensorsIndexReader::Open(const std::string& index_path) {
  std::error_code ec;
  if (!fs::exists(index_path, ec)) return Status::NotFound(index_path + ": no such file");
  if (fs::is_directory(index_path, ec)) return Status::InvalidArgument(index_path + ": is a directory, expected a file");
  std::ifstream in(index_path, std::ios::binary);
  if (!in) return Status::IOError(index_path + ": cannot open");
  std::stringstream buf;
  buf << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(buf.str());
  } catch (const std::exception& e) {
    return BadIndex(index_path, std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) return BadIndex(index_path, "JSON is not an object");
  if (!j.contains("weight_map") || !j["weight_map"].is_object()) {
    return BadIndex(index_path, "no 'weight_map' object");
  }
  std::shared_ptr<SafetensorsIndexReader> r(new SafetensorsIndexReader());
  r->path_ = index_path;
  if (j.contains("metadata")) {
    const auto& m = j["metadata"];
    if (!m.is_object() && !m.is_null()) return BadIndex(index_path, "'metadata' is not an object");
    if (m.is_object()) {
      for (auto it = m.begin(); it != m.end(); ++it) {
        r->metadata_[it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
      }
    }
  }
  std::map<std::string, std::set<std::string>> mapped;  // shard -> keys the index assigns to it
  const fs::path dir = fs::path(index_path).parent_path();
  const auto& wm = j["weight_map"];
  for (auto it = wm.begin(); it != wm.end(); ++it) {
    if (!it.value().is_string()) return BadIndex(index_path, "weight_map value of '" + it.key() + "' is not a string");
    const std::string shard = it.value().get<std::string>();
    auto inside = PathInside(dir.string(), shard, "tensor '" + Printable(it.key()) + "' maps to shard");
    if (!inside.ok()) return BadIndex(index_path, inside.status().message());
    mapped[shard].insert(it.key());
  }
  for (const auto& [shard, keys] : mapped) {
    const std::string shard_path = (dir / shard).string();
    auto reader = SafetensorsReader::Open(shard_path);
    if (!reader.ok()) return reader.status().WithPrefix(index_path + ": shard '" + shard + "'");
    const SafetensorsReader* raw = reader.value().get();
    for (const std::string& key : keys) {
      if (!raw->Contains(key)) {
        return BadIndex(index_path, "tensor '" + key + "' is mapped to shard '" + shard + "', which does not hold it");
      }
      r->where_[key] = raw;
    }
    for (const std::string& key : raw->Keys()) {
      if (keys.count(key) == 0) {
        return BadIndex(index_path, "shard '" + shard + "' holds tensor '" + key +
                                        "', which the weight_map does not assign to it");
      }
    }
    r->shards_[shard] = std::move(reader).value();
  }
  return r;
}

std::vector<std::string> SafetensorsIndexReader::Keys() const {
  std::vector<std::string> keys;
  keys.reserve(where_.size());
  for (const auto& kv : where_) keys.push_back(kv.first);
  return keys;
}

std::vector<std::string> SafetensorsIndexReader::Shards() const {
  std::vector<std::string> s;
  for (const auto& kv : shards_) s.push_back(kv.first);
  return s;
}

const SafetensorsReader* SafetensorsIndexReader::ShardOf(const std::string& key) const {
  auto it = where_.find(key);
  return it == where_.end() ? nullptr : it->second;
}

StatusOr<TensorMeta> SafetensorsIndexReader::Meta(const std::string& key) const {
  const SafetensorsReader* s = ShardOf(key);
  if (s == nullptr) return Status::NotFound(path_ + ": no tensor '" + key + "'");
  return s->Meta(key);
}

StatusOr<at::Tensor> SafetensorsIndexReader::Get(const std::string& key) const {
  const SafetensorsReader* s = ShardOf(key);
  if (s == nullptr) return Status::NotFound(path_ + ": no tensor '" + key + "'");
  return s->Get(key);
}

void SafetensorsIndexReader::Release(const std::string& key) const {
  if (const SafetensorsReader* s = ShardOf(key)) s->Release(key);
}

StatusOr<std::string> WriteShardedSafetensors(const std::string& dir, const std::string& base_name,
                                              const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                              uint64_t max_shard_bytes, const std::vector<DType>& dtypes) {
  const std::string index_path = (fs::path(dir) / (base_name + ".safetensors.index.json")).string();
  if (max_shard_bytes == 0) return Status::InvalidArgument(index_path + ": max_shard_bytes must be > 0");
  if (base_name.empty() || base_name.find('/') != std::string::npos) {
    return Status::InvalidArgument(index_path + ": invalid base name '" + base_name + "'");
  }
  if (!dtypes.empty() && dtypes.size() != tensors.size()) {
    return Status::InvalidArgument(index_path + ": " + std::to_string(dtypes.size()) + " dtypes for " +
                                   std::to_string(tensors.size()) + " tensors");
  }
  std::vector<DType> types = dtypes;
  if (types.empty()) {
    for (const auto& [name, t] : tensors) {
      if (!t.defined()) return Status::InvalidArgument(index_path + ": tensor '" + name + "' is undefined");
      auto dt = FromScalarType(t.scalar_type());
      if (!dt.ok()) return Status::NotSupported(index_path + ": tensor '" + name + "': " + dt.status().message());
      types.push_back(dt.value());
    }
  }
  // Pack tensors greedily into shards.
  std::vector<std::vector<size_t>> shards(1);
  uint64_t current = 0, total = 0;
  std::set<std::string> names;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!names.insert(tensors[i].first).second) {
      return Status::InvalidArgument(index_path + ": duplicate tensor name '" + tensors[i].first + "'");
    }
    if (!tensors[i].second.defined()) {
      return Status::InvalidArgument(index_path + ": tensor '" + tensors[i].first + "' is undefined");
    }
    const uint64_t nbytes = static_cast<uint64_t>(tensors[i].second.numel()) * DTypeSize(types[i]);
    if (!shards.back().empty() && current + nbytes > max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += nbytes;
    total += nbytes;
  }
  const size_t n = shards.size();
  auto shard_name = [&](size_t k) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "-%05zu-of-%05zu.safetensors", k + 1, n);
    return base_name + buf;
  };
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t k = 0; k < n; ++k) {
    std::vector<std::pair<std::string, at::Tensor>> part;
    std::vector<DType> part_types;
    for (size_t i : shards[k]) {
      part.push_back(tensors[i]);
      part_types.push_back(types[i]);
      weight_map[tensors[i].first] = shard_name(k);
    }
    LA_RETURN_IF_ERROR(WriteSafetensorsTyped((fs::path(dir) / shard_name(k)).string(), part, part_types,
                                             {{"format", "pt"}}));
  }
  nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  std::string text;
  try {
    text = index.dump(2);
  } catch (const std::exception& e) {
    return Status::InvalidArgument(index_path + ": tensor names are not valid UTF-8: " + e.what());
  }
  const std::string tmp = index_path + ".partial";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return Status::IOError(tmp + ": cannot open for writing");
    out << text << "\n";
    out.flush();
    if (!out) {
      out.close();
      std::remove(tmp.c_str());
      return Status::IOError(tmp + ": write failed (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), index_path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Status::IOError(index_path + ": cannot rename from " + tmp);
  }
  return index_path;
}

}  // namespace liveavatar::io
