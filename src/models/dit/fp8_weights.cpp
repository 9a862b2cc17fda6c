#include "liveavatar/models/dit/fp8_weights.h"

#include <algorithm>
#include <regex>

#include <ATen/ATen.h>

#include "liveavatar/core/logging.h"
#include "liveavatar/models/dit/weights.h"

namespace liveavatar::models::dit {

namespace {

const std::regex& Fp8KeyPattern() {
  static const std::regex re(
      R"(^blocks\.\d+\.(self_attn|cross_attn)\.[qkvo]\.weight$|^blocks\.\d+\.ffn\.[02]\.weight$|)"
      R"(^audio_injector\.injector\.\d+\.[qkvo]\.weight$|)"
      R"(^audio_injector\.injector_adain_layers\.\d+\.linear\.weight$)");
  return re;
}

bool StartsWith(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

// Every FP8 key of `config` with its shape, in checkpoint order.
std::vector<WeightSpec> Fp8Specs(const DitConfig& config) {
  std::vector<WeightSpec> out;
  for (auto& spec : DitWeightSpecs(config)) {
    if (IsFp8LinearWeight(spec.key)) out.push_back(std::move(spec));
  }
  return out;
}


// Missing or misshapen FP8 keys of `weights` (one error listing them all).
Status CheckFp8Keys(const DitConfig& config, const WeightMap& weights) {
  std::string problems;
  for (const auto& spec : Fp8Specs(config)) {
    auto it = weights.find(spec.key);
    if (it == weights.end() || !it->second.defined()) {
      problems += "\n    missing " + spec.key;
    } else if (it->second.sizes() != at::IntArrayRef(spec.shape)) {
      problems += "\n    " + spec.key + " has shape " + ShapeString(it->second.sizes()) + ", expected " +
                  ShapeString(spec.shape);
    } else if (!at::isFloatingType(it->second.scalar_type())) {
      problems += "\n    " + spec.key + " is not floating point";
    }
  }
  if (!problems.empty()) return Status::InvalidArgument("FP8 DiT weights:" + problems);
  return Status::Ok();
}

}  // namespace

bool IsFp8LinearWeight(const std::string& key) { return std::regex_match(key, Fp8KeyPattern()); }

int64_t Fp8KeyLayer(const DitConfig& config, const std::string& key) {
  if (!IsFp8LinearWeight(key)) return -1;
  int64_t layer = BlockIndex(key);
  if (layer >= 0) return layer < config.num_layers ? layer : -1;
  int64_t j = KeyIndex(key, "audio_injector.injector.");
  if (j < 0) j = KeyIndex(key, "audio_injector.injector_adain_layers.");
  if (j < 0 || j >= config.num_audio_injectors()) return -1;
  return config.audio_inject_layers[static_cast<size_t>(j)];
}

Fp8DitWeights::Fp8DitWeights(const DitConfig& config, c10::ScalarType dtype, const c10::Device& device)
    : config_(config), dtype_(dtype), device_(device), layer_keys_(static_cast<size_t>(config.num_layers)) {}

void Fp8DitWeights::Take(const std::string& key, WeightMap* weights) {
  auto it = weights->find(key);
  TORCH_CHECK(it != weights->end(), "Fp8DitWeights: missing ", key);
  const int64_t layer = Fp8KeyLayer(config_, key);
  TORCH_CHECK(layer >= 0 && layer < config_.num_layers, "Fp8DitWeights: ", key, " has no layer");
  at::Tensor dense = std::move(it->second);
  if (StartsWith(key, "blocks.")) {
    weights->erase(it);
  } else {
    it->second = at::empty({0}, at::TensorOptions().dtype(dtype_).device(device_));
  }
  // Rounded to the model dtype first (the reference quantises the bf16 model); `dense` is freed on return.
  Fp8Tensor q = QuantizeFp8PerTensor(dense.to(dtype_));
  q.codes = q.codes.to(device_);
  tensors_[key] = std::move(q);
  layer_keys_[static_cast<size_t>(layer)].push_back(key);
}

StatusOr<std::shared_ptr<Fp8DitWeights>> Fp8DitWeights::Quantize(const DitConfig& config, WeightMap* weights,
                                                                  c10::ScalarType dtype, const c10::Device& device) {
  LA_RETURN_IF_ERROR(config.Validate());
  if (dtype != at::kFloat && dtype != at::kBFloat16) {
    return Status::InvalidArgument("Fp8DitWeights: unsupported model dtype (use float32 or bfloat16)");
  }
  LA_RETURN_IF_ERROR(CheckFp8Keys(config, *weights));
  std::shared_ptr<Fp8DitWeights> fp8(new Fp8DitWeights(config, dtype, device));
  for (const auto& spec : Fp8Specs(config)) {
    try {
      fp8->Take(spec.key, weights);
    } catch (const c10::Error& e) {  // e.g. non-finite values; the map is partly consumed by now
      return Status::Corruption("FP8 DiT weights: " + spec.key + ": " + e.what_without_backtrace());
    }
  }
  const auto s = fp8->stats();
  LA_LOG_INFO("FP8: {} DiT linears stored as e4m3 ({:.2f} GiB instead of {:.2f} GiB in {}); dequantised per block",
              s.quantized_tensors, s.fp8_bytes / 1073741824.0, s.dense_bytes / 1073741824.0, c10::toString(dtype));
  return fp8;
}

StatusOr<std::shared_ptr<Fp8DitWeights>> Fp8DitWeights::Attach(CausalWanS2V* model) {
  LA_ASSIGN_OR_RETURN(auto fp8, Quantize(model->config(), model->mutable_weights(), model->dtype(), model->device()));
  fp8->Install(model);
  return fp8;
}

void Fp8DitWeights::Install(CausalWanS2V* model) {
  TORCH_CHECK(model->dtype() == dtype_ && model->device() == device_ &&
                  model->config().num_layers == config_.num_layers,
              "Fp8DitWeights::Install: model does not match the quantised weights");
  std::shared_ptr<const Fp8DitWeights> self = shared_from_this();
  WeightMap* weights = model->mutable_weights();
  model->set_block_hooks({[self, weights](int64_t i) { self->Materialize(i, weights); },
                          [self, weights](int64_t i) { self->Release(i, weights); }});
}

void Fp8DitWeights::Materialize(int64_t layer, WeightMap* weights) const {
  TORCH_CHECK(layer >= 0 && layer < config_.num_layers, "Fp8DitWeights: layer ", layer, " out of range");
  for (const auto& key : layer_keys_[static_cast<size_t>(layer)]) {
    (*weights)[key] = DequantizeFp8(tensors_.at(key), CausalWanS2V::WeightDtype(key, dtype_));
  }
}

void Fp8DitWeights::Release(int64_t layer, WeightMap* weights) const {
  TORCH_CHECK(layer >= 0 && layer < config_.num_layers, "Fp8DitWeights: layer ", layer, " out of range");
  for (const auto& key : layer_keys_[static_cast<size_t>(layer)]) {
    if (StartsWith(key, "blocks.")) {
      weights->erase(key);
    } else {
      (*weights)[key] = at::empty({0}, at::TensorOptions().dtype(dtype_).device(device_));
    }
  }
}

const Fp8Tensor& Fp8DitWeights::tensor(const std::string& key) const {
  auto it = tensors_.find(key);
  TORCH_CHECK(it != tensors_.end(), "Fp8DitWeights: ", key, " is not an FP8 weight");
  return it->second;
}

Fp8DitStats Fp8DitWeights::stats() const {
  Fp8DitStats s;
  const int64_t elem = static_cast<int64_t>(c10::elementSize(dtype_));
  for (const auto& [key, q] : tensors_) {
    ++s.quantized_tensors;
    s.fp8_bytes += q.nbytes();
    s.dense_bytes += q.codes.numel() * elem;
  }
  for (const auto& keys : layer_keys_) {
    int64_t bytes = 0;
    for (const auto& key : keys) bytes += tensors_.at(key).codes.numel() * elem;
    s.max_layer_dense_bytes = std::max(s.max_layer_dense_bytes, bytes);
  }
  return s;
}

}  // namespace liveavatar::models::dit
