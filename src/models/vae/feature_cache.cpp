#include "liveavatar/models/vae/feature_cache.h"

#include <ATen/ATen.h>

namespace liveavatar::models::vae {

at::Tensor VaeFeatureCache::Get(const std::string& key) const {
  auto it = slots_.find(key);
  return it == slots_.end() ? at::Tensor() : it->second;
}

void VaeFeatureCache::Set(const std::string& key, at::Tensor value) { slots_[key] = std::move(value); }

int64_t VaeFeatureCache::bytes() const {
  int64_t total = 0;
  for (const auto& kv : slots_) {
    if (kv.second.defined()) total += kv.second.numel() * static_cast<int64_t>(kv.second.element_size());
  }
  return total;
}

}  // namespace liveavatar::models::vae
