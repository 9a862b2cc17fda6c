#include "liveavatar/io/convert.h"

#include <filesystem>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "liveavatar/io/pth.h"
#include "liveavatar/io/safetensors.h"
#include "liveavatar/io/safetensors_index.h"
#include "liveavatar/io/tensor_store.h"

namespace liveavatar::io {

namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool IsCastable(DType d) { return d == DType::kF64 || d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

constexpr const char* kIndexSuffix = ".safetensors.index.json";

}  // namespace

Status ConvertCheckpoint(const std::string& in_path, const std::string& out_path,
                         std::optional<c10::ScalarType> dtype) {
  ConvertOptions options;
  options.dtype = dtype;
  return ConvertCheckpoint(in_path, out_path, options);
}

Status ConvertCheckpoint(const std::string& in_path, const std::string& out_path, const ConvertOptions& options) {
  if (options.dtype && *options.dtype != c10::kFloat && *options.dtype != c10::kHalf &&
      *options.dtype != c10::kBFloat16) {
    return Status::InvalidArgument(out_path + ": conversion dtype must be fp32, fp16 or bf16, not " +
                                   c10::toString(*options.dtype));
  }
  const bool to_index = EndsWith(out_path, kIndexSuffix);
  const bool to_safetensors = !to_index && EndsWith(out_path, ".safetensors");
  const bool to_pth = EndsWith(out_path, ".pth") || EndsWith(out_path, ".pt") || EndsWith(out_path, ".bin");
  if (!to_index && !to_safetensors && !to_pth) {
    return Status::InvalidArgument(out_path + ": unknown output type (expected .safetensors, " + kIndexSuffix +
                                   ", .pth, .pt or .bin)");
  }
  LA_ASSIGN_OR_RETURN(auto store, OpenTensorStore(in_path));
  // Missing output folders are created, as `generate` does for its --save_file.
  if (const auto parent = std::filesystem::path(out_path).parent_path(); !parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (!std::filesystem::is_directory(parent, ec)) {
      return Status::IOError(out_path + ": cannot create the output folder " + parent.string());
    }
  }
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::vector<DType> dtypes;
  for (const std::string& key : store->Keys()) {
    LA_ASSIGN_OR_RETURN(TensorMeta meta, store->Meta(key));
    LA_ASSIGN_OR_RETURN(at::Tensor t, store->Get(key));
    if (t.sizes().vec() != meta.shape || t.scalar_type() != ToScalarType(meta.dtype)) {
      return Status::Corruption(in_path + ": tensor '" + key + "' does not match its header description");
    }
    DType out_type = meta.dtype;
    if (options.dtype && IsCastable(meta.dtype) && t.scalar_type() != *options.dtype) {
      t = t.to(*options.dtype);
      LA_ASSIGN_OR_RETURN(out_type, FromScalarType(*options.dtype));
    }
    tensors.emplace_back(key, std::move(t));
    dtypes.push_back(out_type);
  }
  if (to_index) {
    const std::filesystem::path p(out_path);
    const std::string file = p.filename().string();
    const std::string base = file.substr(0, file.size() - std::string(kIndexSuffix).size());
    if (base.empty()) return Status::InvalidArgument(out_path + ": index file name has no stem");
    const std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
    LA_ASSIGN_OR_RETURN(std::string written,
                        WriteShardedSafetensors(dir, base, tensors, options.max_shard_bytes, dtypes));
    (void)written;
    return Status::Ok();
  }
  if (to_safetensors) return WriteSafetensorsTyped(out_path, tensors, dtypes, {{"format", "pt"}});
  return WritePth(out_path, tensors);
}

}  // namespace liveavatar::io
