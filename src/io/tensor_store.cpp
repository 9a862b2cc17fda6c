#include "liveavatar/io/tensor_store.h"

#include <atomic>

#include <ATen/ATen.h>

#include "liveavatar/io/pth.h"
#include "liveavatar/io/safetensors.h"
#include "liveavatar/io/safetensors_index.h"

namespace liveavatar::io {

namespace {

std::atomic<uint64_t> g_tensor_data_requested{0};

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

class MemoryStore : public TensorStore {
 public:
  MemoryStore(std::map<std::string, at::Tensor> t, std::string name) : tensors_(std::move(t)), name_(std::move(name)) {}
  const std::string& path() const override { return name_; }
  std::vector<std::string> Keys() const override {
    std::vector<std::string> k;
    for (const auto& kv : tensors_) k.push_back(kv.first);
    return k;
  }
  bool Contains(const std::string& key) const override { return tensors_.count(key) > 0; }
  StatusOr<TensorMeta> Meta(const std::string& key) const override {
    auto it = tensors_.find(key);
    if (it == tensors_.end()) return Status::NotFound(name_ + ": no tensor '" + key + "'");
    LA_ASSIGN_OR_RETURN(DType dt, FromScalarType(it->second.scalar_type()));
    return TensorMeta{dt, it->second.sizes().vec()};
  }
  StatusOr<at::Tensor> Get(const std::string& key) const override {
    auto it = tensors_.find(key);
    if (it == tensors_.end()) return Status::NotFound(name_ + ": no tensor '" + key + "'");
    return it->second;
  }

 private:
  std::map<std::string, at::Tensor> tensors_;
  std::string name_;
};

}  // namespace

uint64_t TensorDataBytesRequested() { return g_tensor_data_requested.load(std::memory_order_relaxed); }
void internal::CountTensorDataRequest(uint64_t bytes) {
  g_tensor_data_requested.fetch_add(bytes, std::memory_order_relaxed);
}

std::shared_ptr<TensorStore> MakeMemoryStore(std::map<std::string, at::Tensor> tensors, std::string name) {
  return std::make_shared<MemoryStore>(std::move(tensors), std::move(name));
}

StatusOr<std::shared_ptr<TensorStore>> OpenTensorStore(const std::string& path) {
  if (EndsWith(path, ".safetensors.index.json")) {
    LA_ASSIGN_OR_RETURN(auto r, SafetensorsIndexReader::Open(path));
    return std::shared_ptr<TensorStore>(std::move(r));
  }
  if (EndsWith(path, ".safetensors")) {
    LA_ASSIGN_OR_RETURN(auto r, SafetensorsReader::Open(path));
    return std::shared_ptr<TensorStore>(std::move(r));
  }
  if (EndsWith(path, ".pth") || EndsWith(path, ".pt") || EndsWith(path, ".bin")) {
    LA_ASSIGN_OR_RETURN(auto r, PthReader::Open(path));
    return std::shared_ptr<TensorStore>(std::move(r));
  }
  return Status::NotSupported(path + ": unsupported checkpoint file type (expected .safetensors, "
                              ".safetensors.index.json, .pth, .pt or .bin)");
}

}  // namespace liveavatar::io
