#include "liveavatar/dist/flat_param.h"

#include <algorithm>
#include <filesystem>
#include <sstream>

#include <ATen/ATen.h>

#include "liveavatar/models/lora.h"

namespace liveavatar::dist {

namespace {

int64_t AlignUp(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

bool StartsWith(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool EndsWith(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// PEFT key parsing and target matching, as models/lora.cpp does for MergeLora (same rules, same messages).
bool ParseLoraKey(std::string key, std::string* module, char* which) {
  const std::string kPrefix = "base_model.model.";
  if (StartsWith(key, kPrefix)) key = key.substr(kPrefix.size());
  for (const char* suffix : {".default.weight", ".weight"}) {
    if (!EndsWith(key, suffix)) continue;
    const std::string head = key.substr(0, key.size() - std::string(suffix).size());
    for (char w : {'A', 'B'}) {
      const std::string tag = std::string(".lora_") + w;
      if (EndsWith(head, tag)) {
        *module = head.substr(0, head.size() - tag.size());
        *which = w;
        return true;
      }
    }
  }
  return false;
}

bool MatchesTarget(const std::string& module, const std::vector<std::string>& targets) {
  for (const auto& t : targets) {
    if (module == t || EndsWith(module, "." + t)) return true;
  }
  return false;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < shape.size(); ++i) o << (i ? ", " : "") << shape[i];
  o << "]";
  return o.str();
}

}  // namespace

FlatLayout MakeFlatLayout(const std::vector<models::WeightSpec>& specs,
                          const std::function<c10::ScalarType(const std::string& key)>& dtype_of, int group_size) {
  TORCH_CHECK(group_size >= 1, "MakeFlatLayout: group_size must be >= 1, got ", group_size);
  FlatLayout layout;
  layout.group_size = group_size;
  int64_t cursor = 0;
  for (const auto& spec : specs) {
    FlatParam p;
    p.key = spec.key;
    p.shape = spec.shape;
    p.dtype = dtype_of(spec.key);
    TORCH_CHECK(c10::isFloatingType(p.dtype), "MakeFlatLayout: ", spec.key, " has non-floating dtype ", p.dtype);
    p.numel = 1;
    for (int64_t d : spec.shape) p.numel *= d;
    TORCH_CHECK(p.numel > 0, "MakeFlatLayout: ", spec.key, " has no elements");
    p.nbytes = p.numel * static_cast<int64_t>(c10::elementSize(p.dtype));
    p.offset = AlignUp(cursor, kFlatParamAlignment);
    cursor = p.offset + p.nbytes;
    layout.param_bytes += p.nbytes;
    layout.params.push_back(std::move(p));
  }
  layout.used_bytes = cursor;
  const int64_t per_rank = (cursor + group_size - 1) / group_size;
  layout.shard_bytes = std::max(AlignUp(per_rank, kFlatParamAlignment), kFlatParamAlignment);
  layout.padded_bytes = layout.shard_bytes * group_size;
  return layout;
}

StatusOr<SliceLora> ResolveSliceLora(std::shared_ptr<io::TensorStore> lora,
                                     const std::vector<models::WeightSpec>& specs, double alpha, int rank,
                                     const std::vector<std::string>& targets) {
  if (lora == nullptr) return Status::InvalidArgument("ResolveSliceLora: no LoRA store");
  if (rank <= 0) return Status::InvalidArgument(lora->path() + ": LoRA rank must be positive");
  std::map<std::string, const models::WeightSpec*> by_key;
  for (const auto& s : specs) by_key[s.key] = &s;
  SliceLora out;
  out.scale = alpha / static_cast<double>(rank);
  std::vector<std::string> errors;
  for (const auto& key : lora->Keys()) {
    std::string module;
    char which = 0;
    if (!ParseLoraKey(key, &module, &which)) {
      errors.push_back(key + " (not a lora_A/lora_B weight)");
      continue;
    }
    if (!MatchesTarget(module, targets)) {
      errors.push_back(key + " (module \"" + module + "\" is not a LoRA target)");
      continue;
    }
    if (!by_key.count(module + ".weight")) {
      errors.push_back(key + " (no base weight \"" + module + ".weight\")");
      continue;
    }
    auto& p = out.pairs[module + ".weight"];
    (which == 'A' ? p.key_a : p.key_b) = key;
  }
  for (auto it = out.pairs.begin(); it != out.pairs.end();) {
    const auto& [weight_key, p] = *it;
    if (p.key_a.empty() || p.key_b.empty()) {
      errors.push_back((p.key_a.empty() ? p.key_b : p.key_a) + " (unpaired: lora_A and lora_B must both exist)");
      it = out.pairs.erase(it);
      continue;
    }
    LA_ASSIGN_OR_RETURN(auto ma, lora->Meta(p.key_a));
    LA_ASSIGN_OR_RETURN(auto mb, lora->Meta(p.key_b));
    const auto& w = by_key.at(weight_key)->shape;
    if (ma.shape.size() != 2 || mb.shape.size() != 2 || w.size() != 2 || ma.shape[0] != rank ||
        mb.shape[1] != rank || ma.shape[1] != w[1] || mb.shape[0] != w[0]) {
      errors.push_back(weight_key.substr(0, weight_key.size() - 7) + " (shape mismatch: A " + ShapeString(ma.shape) +
                       ", B " + ShapeString(mb.shape) + ", weight " + ShapeString(w) + ", rank " +
                       std::to_string(rank) + ")");
    }
    ++it;
  }
  if (!errors.empty()) {
    std::ostringstream o;
    o << lora->path() << ": " << errors.size() << " LoRA key(s) do not match the model:";
    for (const auto& e : errors) o << "\n    " << e;
    return Status::InvalidArgument(o.str());
  }
  out.store = std::move(lora);
  return out;
}

StatusOr<SliceLora> OpenSliceLora(const std::string& lora_path, std::optional<double> alpha, std::optional<int> rank,
                                  const std::vector<models::WeightSpec>& specs) {
  namespace fs = std::filesystem;
  std::vector<std::string> targets = models::DefaultLoraTargets();
  const auto config_path = (fs::path(lora_path).parent_path() / "training_config_lora.json").string();
  if (fs::exists(config_path)) {
    LA_ASSIGN_OR_RETURN(auto cfg, models::LoadLoraTrainingConfig(config_path));
    if (!alpha) alpha = cfg.alpha;
    if (!rank) rank = cfg.rank;
    targets = cfg.targets;
  } else if (!alpha || !rank) {
    return Status::NotFound(config_path + ": needed for the LoRA alpha/rank of " + lora_path +
                            " (or pass them explicitly)");
  }
  LA_ASSIGN_OR_RETURN(auto store, io::OpenTensorStore(lora_path));
  return ResolveSliceLora(std::move(store), specs, *alpha, *rank, targets);
}

StatusOr<at::Tensor> ConvertRange(const io::TensorStore& store, const FlatParam& param, int64_t begin, int64_t end,
                                  const SliceLora* lora, int64_t* bytes_read, int64_t* lora_bytes_read) {
  TORCH_CHECK(0 <= begin && begin <= end && end <= param.numel, "ConvertRange: bad range [", begin, ", ", end,
              ") of ", param.key, " (", param.numel, " elements)");
  LA_ASSIGN_OR_RETURN(at::Tensor stored, store.Get(param.key));
  if (stored.sizes().vec() != param.shape) {
    return Status::InvalidArgument(store.path() + ": " + param.key + " has shape " +
                                   ShapeString(stored.sizes().vec()) + ", expected " + ShapeString(param.shape));
  }
  if (!c10::isFloatingType(stored.scalar_type())) {
    return Status::InvalidArgument(store.path() + ": " + param.key + " has non-floating dtype " +
                                   std::string(c10::toString(stored.scalar_type())));
  }
  if (!stored.is_contiguous()) stored = stored.contiguous();  // only memory stores can hand out strided tensors
  const int64_t n = end - begin;
  const at::Tensor range = stored.view({-1}).narrow(0, begin, n);
  if (bytes_read != nullptr) *bytes_read += n * static_cast<int64_t>(stored.element_size());
  at::Tensor out = at::empty({n}, at::TensorOptions().dtype(param.dtype));
  const SliceLora::Pair* pair = nullptr;
  if (lora != nullptr) {
    auto it = lora->pairs.find(param.key);
    if (it != lora->pairs.end()) pair = &it->second;
  }
  if (pair == nullptr || n == 0) {
    out.copy_(range);
    return out;
  }
  // W[r0:r1] += scale * B[r0:r1] @ A for the rows the range touches (MergeLora merges in fp32 the same way).
  LA_ASSIGN_OR_RETURN(at::Tensor a, lora->store->Get(pair->key_a));
  LA_ASSIGN_OR_RETURN(at::Tensor b, lora->store->Get(pair->key_b));
  const int64_t cols = param.shape[1];
  const int64_t r0 = begin / cols;
  const int64_t r1 = (end + cols - 1) / cols;
  const at::Tensor b_rows = b.narrow(0, r0, r1 - r0);
  if (lora_bytes_read != nullptr) {
    *lora_bytes_read += a.numel() * static_cast<int64_t>(a.element_size()) +
                        b_rows.numel() * static_cast<int64_t>(b.element_size());
  }
  const at::Tensor delta = at::matmul(b_rows.to(at::kFloat), a.to(at::kFloat)) * lora->scale;
  out.copy_(range.to(at::kFloat) + delta.reshape({-1}).narrow(0, begin - r0 * cols, n));
  return out;
}

Status FillShard(const FlatLayout& layout, int rank, const io::TensorStore& store, const SliceLora* lora,
                 const at::Tensor& shard, int64_t* bytes_read, int64_t* lora_bytes_read) {
  TORCH_CHECK(rank >= 0 && rank < layout.group_size, "FillShard: rank ", rank, " outside the group of ",
              layout.group_size);
  TORCH_CHECK(shard.scalar_type() == at::kByte && shard.device().is_cpu() && shard.is_contiguous() &&
                  shard.numel() == layout.shard_bytes,
              "FillShard: shard must be a contiguous CPU uint8 tensor of ", layout.shard_bytes, " bytes");
  shard.zero_();
  const int64_t s0 = layout.ShardBegin(rank);
  const int64_t s1 = s0 + layout.shard_bytes;
  for (const auto& p : layout.params) {
    const int64_t lo = std::max(p.offset, s0);
    const int64_t hi = std::min(p.offset + p.nbytes, s1);
    if (lo >= hi) continue;
    const int64_t es = static_cast<int64_t>(c10::elementSize(p.dtype));
    LA_ASSIGN_OR_RETURN(at::Tensor values,
                        ConvertRange(store, p, (lo - p.offset) / es, (hi - p.offset) / es, lora, bytes_read,
                                     lora_bytes_read));
    shard.narrow(0, lo - s0, hi - lo).view(p.dtype).copy_(values);
  }
  return Status::Ok();
}

models::WeightMap ViewParams(const FlatLayout& layout, const at::Tensor& flat) {
  TORCH_CHECK(flat.scalar_type() == at::kByte && flat.dim() == 1 && flat.is_contiguous() &&
                  flat.numel() == layout.padded_bytes,
              "ViewParams: flat must be a contiguous uint8 tensor of ", layout.padded_bytes, " bytes");
  models::WeightMap views;
  for (const auto& p : layout.params) {
    views[p.key] = flat.narrow(0, p.offset, p.nbytes).view(p.dtype).view(p.shape);
  }
  return views;
}

}  // namespace liveavatar::dist
