#include "liveavatar/core/json_file.h"
#include "liveavatar/models/lora.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

namespace liveavatar::models {

namespace {

bool StartsWith(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool EndsWith(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

bool MatchesTarget(const std::string& module, const std::vector<std::string>& targets) {
  for (const auto& t : targets) {
    if (module == t || EndsWith(module, "." + t)) return true;
  }
  return false;
}

// Splits "<module>.lora_{A,B}[.default].weight" into module and 'A'/'B'; false when the key has another form.
bool ParseLoraKey(std::string key, std::string* module, char* which) {
  const std::string kPrefix = "base_model.model.";
  if (StartsWith(key, kPrefix)) key = key.substr(kPrefix.size());
  for (const char* suffix : {".default.weight", ".weight"}) {
    if (!EndsWith(key, suffix)) continue;
    std::string head = key.substr(0, key.size() - std::string(suffix).size());
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

std::vector<std::string> SplitTargets(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto b = item.find_first_not_of(" \t");
    const auto e = item.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}

// The one range rule for a LoRA alpha, whether it comes from a training config or a caller.
Status CheckLoraAlpha(double alpha, const std::string& what) {
  if (std::isfinite(alpha) && alpha > 0 && alpha <= 1e6) return Status::Ok();
  return Status::InvalidArgument(what + " must be a finite value in (0, 1e6]");
}

}  // namespace

std::vector<std::string> DefaultLoraTargets() { return {"q", "k", "v", "o", "ffn.0", "ffn.2"}; }

StatusOr<LoraTrainingConfig> LoadLoraTrainingConfig(const std::string& path) {
  LA_ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(path, "LoRA training config"));
  LoraTrainingConfig c;
  try {
    if (!j.contains("lora_rank")) return Status::InvalidArgument(path + ": missing field \"lora_rank\"");
    if (!j.contains("lora_alpha")) return Status::InvalidArgument(path + ": missing field \"lora_alpha\"");
    c.rank = j.at("lora_rank").get<int>();
    c.alpha = j.at("lora_alpha").get<double>();
    if (j.contains("lora_target_modules")) {
      const auto& t = j.at("lora_target_modules");
      c.targets = t.is_string() ? SplitTargets(t.get<std::string>()) : t.get<std::vector<std::string>>();
    } else {
      c.targets = DefaultLoraTargets();
    }
  } catch (const std::exception& e) {
    return Status::InvalidArgument(path + ": bad field type: " + e.what());
  }
  if (c.rank <= 0) return Status::InvalidArgument(path + ": field \"lora_rank\" must be positive");
  LA_RETURN_IF_ERROR(CheckLoraAlpha(c.alpha, path + ": field \"lora_alpha\""));
  return c;
}

StatusOr<LoraMatch> MatchLora(const io::TensorStore& lora, const std::map<std::string, std::vector<int64_t>>& base_shapes,
                              int rank, const std::vector<std::string>& targets) {
  LoraMatch m;
  for (const auto& key : lora.Keys()) {
    std::string module;
    char which = 0;
    if (!ParseLoraKey(key, &module, &which)) {
      m.errors.push_back(key + " (not a lora_A/lora_B weight)");
      continue;
    }
    if (!MatchesTarget(module, targets)) {
      m.errors.push_back(key + " (module \"" + module + "\" is not a LoRA target)");
      continue;
    }
    if (!base_shapes.count(module + ".weight")) {
      m.errors.push_back(key + " (no base weight \"" + module + ".weight\")");
      continue;
    }
    auto& p = m.pairs[module];
    (which == 'A' ? p.first : p.second) = key;
  }
  for (auto it = m.pairs.begin(); it != m.pairs.end();) {
    const std::string& module = it->first;
    const auto& p = it->second;
    if (p.first.empty() || p.second.empty()) {
      m.errors.push_back((p.first.empty() ? p.second : p.first) + " (unpaired: lora_A and lora_B must both exist)");
      it = m.pairs.erase(it);
      continue;
    }
    LA_ASSIGN_OR_RETURN(auto ma, lora.Meta(p.first));
    LA_ASSIGN_OR_RETURN(auto mb, lora.Meta(p.second));
    const std::vector<int64_t>& w = base_shapes.at(module + ".weight");
    if (ma.shape.size() != 2 || mb.shape.size() != 2 || w.size() != 2 || ma.shape[0] != rank ||
        mb.shape[1] != rank || ma.shape[1] != w[1] || mb.shape[0] != w[0]) {
      std::ostringstream o;
      o << module << " (shape mismatch: A [" << (ma.shape.size() > 0 ? ma.shape[0] : -1) << ", "
        << (ma.shape.size() > 1 ? ma.shape[1] : -1) << "], B [" << (mb.shape.size() > 0 ? mb.shape[0] : -1) << ", "
        << (mb.shape.size() > 1 ? mb.shape[1] : -1) << "], weight " << at::IntArrayRef(w) << ", rank " << rank
        << ")";
      m.errors.push_back(o.str());
    }
    ++it;
  }
  return m;
}

StatusOr<LoraMatch> ResolveLora(const io::TensorStore& lora,
                                const std::map<std::string, std::vector<int64_t>>& base_shapes, int rank,
                                const std::vector<std::string>& targets) {
  if (rank <= 0) return Status::InvalidArgument(lora.path() + ": LoRA rank must be positive");
  LA_ASSIGN_OR_RETURN(LoraMatch match, MatchLora(lora, base_shapes, rank, targets));
  if (!match.errors.empty()) {
    std::ostringstream o;
    o << lora.path() << ": " << match.errors.size() << " LoRA key(s) do not match the model:";
    for (const auto& e : match.errors) o << "\n    " << e;
    return Status::InvalidArgument(o.str());
  }
  return match;
}

StatusOr<LoraApplier> LoraApplier::Create(std::shared_ptr<const io::TensorStore> lora,
                                          const std::map<std::string, std::vector<int64_t>>& base_shapes, double alpha,
                                          int rank, const std::vector<std::string>& targets) {
  LA_RETURN_IF_ERROR(CheckLoraAlpha(alpha, lora->path() + ": LoRA alpha " + std::to_string(alpha)));
  LA_ASSIGN_OR_RETURN(LoraMatch match, ResolveLora(*lora, base_shapes, rank, targets));
  LoraApplier a;
  for (auto& [module, p] : match.pairs) a.by_weight_[module + ".weight"] = std::move(p);
  a.lora_ = std::move(lora);
  a.scale_ = alpha / static_cast<double>(rank);
  a.rank_ = rank;
  return a;
}

StatusOr<LoraApplier> LoraApplier::Open(const std::string& lora_path,
                                        const std::map<std::string, std::vector<int64_t>>& base_shapes,
                                        std::optional<double> alpha, std::optional<int> rank) {
  LA_ASSIGN_OR_RETURN(LoraTrainingConfig params, ResolveLoraParams(lora_path, alpha, rank));
  LA_ASSIGN_OR_RETURN(auto store, io::OpenTensorStore(lora_path));
  return Create(std::move(store), base_shapes, params.alpha, params.rank, params.targets);
}

StatusOr<at::Tensor> LoraApplier::Apply(const std::string& key, const at::Tensor& w, const c10::Device& device) const {
  if (!Targets(key)) return at::Tensor();
  at::Tensor out = w.to(device, at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  LA_RETURN_IF_ERROR(AddDelta(key, out));
  return out;
}

Status LoraApplier::AddDelta(const std::string& key, at::Tensor& w32) const {
  auto it = by_weight_.find(key);
  if (it == by_weight_.end()) return Status::NotFound(lora_->path() + ": no LoRA pair targets '" + key + "'");
  LA_ASSIGN_OR_RETURN(at::Tensor a, lora_->Get(it->second.first));
  LA_ASSIGN_OR_RETURN(at::Tensor b, lora_->Get(it->second.second));
  w32.addmm_(b.to(w32.device(), at::kFloat), a.to(w32.device(), at::kFloat), /*beta=*/1.0, /*alpha=*/scale_);
  lora_->Release(it->second.first);
  lora_->Release(it->second.second);
  return Status::Ok();
}

StatusOr<int> MergeLora(WeightMap& weights, const io::TensorStore& lora, double alpha, int rank,
                        const std::vector<std::string>& targets) {
  std::map<std::string, std::vector<int64_t>> base_shapes;
  for (const auto& [key, w] : weights) base_shapes[key] = w.sizes().vec();
  // A non-owning handle: `lora` outlives this call.
  std::shared_ptr<const io::TensorStore> handle(&lora, [](const io::TensorStore*) {});
  LA_ASSIGN_OR_RETURN(LoraApplier applier, LoraApplier::Create(handle, base_shapes, alpha, rank, targets));
  int merged = 0;
  for (auto& [key, w] : weights) {
    LA_ASSIGN_OR_RETURN(at::Tensor m, applier.Apply(key, w, w.device()));
    if (!m.defined()) continue;
    w = m.to(w.scalar_type());
    ++merged;
  }
  return merged;
}

StatusOr<LoraTrainingConfig> ResolveLoraParams(const std::string& lora_path, std::optional<double> alpha,
                                               std::optional<int> rank) {
  LoraTrainingConfig params;
  params.targets = DefaultLoraTargets();
  const auto config_path = (std::filesystem::path(lora_path).parent_path() / "training_config_lora.json").string();
  if (std::filesystem::exists(config_path)) {
    LA_ASSIGN_OR_RETURN(auto cfg, LoadLoraTrainingConfig(config_path));
    if (!alpha) alpha = cfg.alpha;
    if (!rank) rank = cfg.rank;
    params.targets = cfg.targets;
  } else if (!alpha || !rank) {
    return Status::NotFound(config_path + ": needed for the LoRA alpha/rank of " + lora_path +
                            " (or pass them explicitly)");
  }
  params.alpha = *alpha;
  params.rank = *rank;
  return params;
}

StatusOr<int> MergeLoraFile(WeightMap& weights, const std::string& lora_path, std::optional<double> alpha,
                            std::optional<int> rank) {
  LA_ASSIGN_OR_RETURN(LoraTrainingConfig params, ResolveLoraParams(lora_path, alpha, rank));
  LA_ASSIGN_OR_RETURN(auto store, io::OpenTensorStore(lora_path));
  return MergeLora(weights, *store, params.alpha, params.rank, params.targets);
}

}  // namespace liveavatar::models
