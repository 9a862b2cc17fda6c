#include "liveavatar/models/t5/encoder.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/attention.h"
#include "liveavatar/models/t5/tokenizer.h"

namespace liveavatar::models::t5 {
namespace {

std::string Block(int64_t i) { return "blocks." + std::to_string(i) + "."; }

// T5LayerNorm: statistics in fp32, normalized x cast to the weight dtype, then scaled.
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  auto xf = x.to(at::kFloat);
  auto normed = xf * at::rsqrt(xf.pow(2).mean({-1}, /*keepdim=*/true) + eps);
  return weight * normed.to(weight.scalar_type());
}

// torch.finfo(dtype).min: the value the reference writes into masked logits.
double MinOf(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return static_cast<double>(std::numeric_limits<float>::lowest());
    case at::kDouble: return std::numeric_limits<double>::lowest();
    case at::kHalf: return static_cast<double>(std::numeric_limits<c10::Half>::lowest());
    case at::kBFloat16: return static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest());
    default: TORCH_CHECK(false, "T5Encoder: unsupported compute dtype ", dtype);
  }
}

// fp16 only: the reference clamps the residual stream when it overflowed.
at::Tensor Fp16Clamp(at::Tensor x) {
  if (x.scalar_type() == at::kHalf && at::isinf(x).any().item<bool>()) {
    const double clamp = 65504.0 - 1000.0;
    x = at::clamp(x, -clamp, clamp);
  }
  return x;
}

// [1, heads, L, L] position bias from a pos_embedding table [num_buckets, heads] and a bucket table [L, L].
at::Tensor PositionBias(const at::Tensor& table, const at::Tensor& buckets) {
  return at::embedding(table, buckets).permute({2, 0, 1}).unsqueeze(0);
}

// x: [B, L, dim], bias: [B or 1, H, L, L] -> [B, L, dim]
at::Tensor SelfAttention(const WeightMap& w, const std::string& p, const T5Config& c, const at::Tensor& x,
                         const at::Tensor& bias) {
  const int64_t b = x.size(0), l = x.size(1);
  auto q = at::linear(x, W(w, p + "attn.q.weight")).view({b, l, c.num_heads, c.head_dim()});
  auto k = at::linear(x, W(w, p + "attn.k.weight")).view({b, l, c.num_heads, c.head_dim()});
  auto v = at::linear(x, W(w, p + "attn.v.weight")).view({b, l, c.num_heads, c.head_dim()});
  auto o = Attention(q, k, v, bias, /*scale=*/1.0);  // T5: no 1/sqrt(d)
  return at::linear(o.reshape({b, l, c.dim_attn}), W(w, p + "attn.o.weight"));
}

// Gated GELU-tanh FFN: fc2(fc1(x) * gelu_tanh(gate.0(x))); gate.1 is the weightless GELU.
at::Tensor FeedForward(const WeightMap& w, const std::string& p, const at::Tensor& x) {
  auto gate = at::gelu(at::linear(x, W(w, p + "ffn.gate.0.weight")), "tanh");
  return at::linear(at::linear(x, W(w, p + "ffn.fc1.weight")) * gate, W(w, p + "ffn.fc2.weight"));
}

Status CheckConfig(const T5Config& c, const std::string& source) {
  auto positive = [&](int64_t v, const char* key) -> Status {
    if (v <= 0) return Status::InvalidArgument(source + ": T5 config \"" + key + "\" must be > 0, got " +
                                               std::to_string(v));
    return Status::Ok();
  };
  LA_RETURN_IF_ERROR(positive(c.vocab, "vocab"));
  LA_RETURN_IF_ERROR(positive(c.dim, "dim"));
  LA_RETURN_IF_ERROR(positive(c.dim_attn, "dim_attn"));
  LA_RETURN_IF_ERROR(positive(c.dim_ffn, "dim_ffn"));
  LA_RETURN_IF_ERROR(positive(c.num_heads, "num_heads"));
  LA_RETURN_IF_ERROR(positive(c.num_layers, "num_layers"));
  LA_RETURN_IF_ERROR(positive(c.num_buckets, "num_buckets"));
  if (c.dim_attn % c.num_heads != 0) {
    return Status::InvalidArgument(source + ": T5 config dim_attn (" + std::to_string(c.dim_attn) +
                                   ") is not divisible by num_heads (" + std::to_string(c.num_heads) + ")");
  }
  if (c.num_buckets < 4 || c.num_buckets % 2 != 0) {
    return Status::InvalidArgument(source + ": T5 config num_buckets must be even and >= 4, got " +
                                   std::to_string(c.num_buckets));
  }
  return Status::Ok();
}

}  // namespace

StatusOr<T5Config> T5Config::FromJsonText(const std::string& json_text, const std::string& source) {
  const auto j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument(source + ": T5 config is not a JSON object");
  }
  T5Config c;
  Status status;
  auto read_int = [&](std::initializer_list<const char*> keys, int64_t* out) {
    for (const char* key : keys) {
      if (!j.contains(key) || !status.ok()) continue;
      const auto& v = j.at(key);
      if (!v.is_number_integer()) {
        status = Status::InvalidArgument(source + ": T5 config \"" + key + "\" must be an integer, got " + v.dump());
        return;
      }
      *out = v.get<int64_t>();
      return;
    }
  };
  read_int({"vocab", "vocab_size"}, &c.vocab);
  read_int({"dim", "d_model"}, &c.dim);
  read_int({"dim_attn"}, &c.dim_attn);
  read_int({"dim_ffn", "d_ff"}, &c.dim_ffn);
  read_int({"num_heads"}, &c.num_heads);
  read_int({"num_layers", "encoder_layers"}, &c.num_layers);
  read_int({"num_buckets", "relative_attention_num_buckets"}, &c.num_buckets);
  read_int({"max_dist", "relative_attention_max_distance"}, &c.max_dist);
  LA_RETURN_IF_ERROR(status);
  if (j.contains("shared_pos")) {
    if (!j.at("shared_pos").is_boolean()) {
      return Status::InvalidArgument(source + ": T5 config \"shared_pos\" must be true/false, got " +
                                     j.at("shared_pos").dump());
    }
    c.shared_pos = j.at("shared_pos").get<bool>();
  }
  LA_RETURN_IF_ERROR(CheckConfig(c, source));
  return c;
}

StatusOr<T5Config> T5Config::FromJsonFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("T5 config " + path + " cannot be opened");
  std::stringstream ss;
  ss << in.rdbuf();
  return FromJsonText(ss.str(), path);
}

std::vector<WeightSpec> T5WeightSpecs(const T5Config& c) {
  std::vector<WeightSpec> specs;
  specs.push_back({"token_embedding.weight", {c.vocab, c.dim}});
  if (c.shared_pos) specs.push_back({"pos_embedding.embedding.weight", {c.num_buckets, c.num_heads}});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = Block(i);
    specs.push_back({p + "norm1.weight", {c.dim}, false, "ones"});
    specs.push_back({p + "attn.q.weight", {c.dim_attn, c.dim}});
    specs.push_back({p + "attn.k.weight", {c.dim_attn, c.dim}});
    specs.push_back({p + "attn.v.weight", {c.dim_attn, c.dim}});
    specs.push_back({p + "attn.o.weight", {c.dim, c.dim_attn}});
    specs.push_back({p + "norm2.weight", {c.dim}, false, "ones"});
    specs.push_back({p + "ffn.gate.0.weight", {c.dim_ffn, c.dim}});
    specs.push_back({p + "ffn.fc1.weight", {c.dim_ffn, c.dim}});
    specs.push_back({p + "ffn.fc2.weight", {c.dim, c.dim_ffn}});
    if (!c.shared_pos) specs.push_back({p + "pos_embedding.embedding.weight", {c.num_buckets, c.num_heads}});
  }
  specs.push_back({"norm.weight", {c.dim}, false, "ones"});
  return specs;
}

at::Tensor RelativePositionBuckets(int64_t lq, int64_t lk, int64_t num_buckets, int64_t max_dist) {
  TORCH_CHECK(num_buckets >= 4 && num_buckets % 2 == 0, "num_buckets must be even and >= 4");
  // rel[i][j] = j - i
  auto rel = at::arange(lk, at::kLong).unsqueeze(0) - at::arange(lq, at::kLong).unsqueeze(1);
  const int64_t n = num_buckets / 2;  // bidirectional: half the buckets per direction
  auto buckets = (rel > 0).to(at::kLong) * n;
  auto a = rel.abs();
  const int64_t max_exact = n / 2;
  // Same float32 arithmetic as the reference: log(a / max_exact) / log(max_dist / max_exact) * (n - max_exact).
  auto large = at::log(a.to(at::kFloat) / static_cast<double>(max_exact)) /
               std::log(static_cast<double>(max_dist) / static_cast<double>(max_exact)) *
               static_cast<double>(n - max_exact);
  // Clamp before the integer cast so a = 0 (log = -inf) stays well defined; that entry is not selected below.
  large = at::clamp(large, -1.0, static_cast<double>(num_buckets)).to(at::kLong) + max_exact;
  large = at::clamp_max(large, n - 1);
  return buckets + at::where(a < max_exact, a, large);
}

StatusOr<T5Encoder> T5Encoder::FromWeights(WeightMap weights, const T5Config& config) {
  LA_RETURN_IF_ERROR(CheckConfig(config, "T5Encoder"));
  for (const auto& spec : T5WeightSpecs(config)) {
    auto it = weights.find(spec.key);
    if (it == weights.end()) return Status::InvalidArgument("T5Encoder: missing weight " + spec.key);
    if (it->second.sizes().vec() != spec.shape) {
      return Status::InvalidArgument("T5Encoder: weight " + spec.key + " has shape " +
                                     c10::str(it->second.sizes()) + ", expected " + c10::str(at::IntArrayRef(spec.shape)));
    }
  }
  return T5Encoder(std::move(weights), config);
}

StatusOr<T5Encoder> T5Encoder::Load(const std::string& weights_path, const T5Config& config,
                                    const LoadOptions& options) {
  LA_RETURN_IF_ERROR(CheckConfig(config, weights_path));
  LA_ASSIGN_OR_RETURN(auto store, io::OpenTensorStore(weights_path));
  LA_ASSIGN_OR_RETURN(WeightMap weights, LoadWeights(*store, T5WeightSpecs(config), options));
  return T5Encoder(std::move(weights), config);
}

at::Tensor T5Encoder::Encode(const at::Tensor& ids, const at::Tensor& mask) const {
  const auto& c = config_;
  TORCH_CHECK(ids.dim() == 2 && mask.sizes() == ids.sizes(), "T5Encoder::Encode: ids and mask must be [B, L], got ",
              ids.sizes(), " and ", mask.sizes());
  const auto& embedding = W(weights_, "token_embedding.weight");
  const auto device = embedding.device();
  const auto dtype = embedding.scalar_type();
  const int64_t l = ids.size(1);
  // x: [B, L, dim]
  auto x = at::embedding(embedding, ids.to(device, at::kLong));
  // Buckets are shared by every layer; each layer has its own table unless shared_pos.
  const auto buckets = RelativePositionBuckets(l, l, c.num_buckets, c.max_dist).to(device);
  // Key mask: [B, 1, 1, L], true where the key is padding.
  const auto masked = (mask.to(device) == 0).view({ids.size(0), 1, 1, l});
  at::Tensor shared_bias;
  if (c.shared_pos) shared_bias = PositionBias(W(weights_, "pos_embedding.embedding.weight"), buckets);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = Block(i);
    auto pos = c.shared_pos ? shared_bias : PositionBias(W(weights_, p + "pos_embedding.embedding.weight"), buckets);
    auto bias = pos.to(dtype).expand({ids.size(0), c.num_heads, l, l}).masked_fill(masked, MinOf(dtype));
    x = Fp16Clamp(x + SelfAttention(weights_, p, c, RmsNorm(x, W(weights_, p + "norm1.weight"), c.eps), bias));
    x = Fp16Clamp(x + FeedForward(weights_, p, RmsNorm(x, W(weights_, p + "norm2.weight"), c.eps)));
  }
  return RmsNorm(x, W(weights_, "norm.weight"), c.eps);
}

std::vector<at::Tensor> T5Encoder::EncodeTrimmed(const at::Tensor& ids, const at::Tensor& mask) const {
  auto hidden = Encode(ids, mask);
  const auto lengths = (mask > 0).sum(1).to(at::kCPU, at::kLong);
  std::vector<at::Tensor> out;
  for (int64_t b = 0; b < hidden.size(0); ++b) out.push_back(hidden[b].narrow(0, 0, lengths[b].item<int64_t>()));
  return out;
}

std::vector<at::Tensor> T5Encoder::EncodeTrimmed(const TokenizedBatch& batch) const {
  return EncodeTrimmed(batch.ids, batch.mask);
}

}  // namespace liveavatar::models::t5
