// LoRA merge (PEFT `merge_and_unload` semantics): for every adapted Linear, W ← W + (alpha / rank)·B·A with
// lora_A [rank, in] and lora_B [out, rank]; biases unchanged. Reads the PEFT in-model layout
// `[base_model.model.]<module>.lora_{A,B}[.default].weight`. Targets are matched PEFT-style: a module matches a
// target when its name equals it or ends with "." + target.
//
// Thread safety: mutates the given WeightMap; callers serialise.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <string>
#include <vector>

#include "liveavatar/core/status.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/weights.h"

namespace liveavatar::models {

// Live Avatar's target list: "q", "k", "v", "o", "ffn.0", "ffn.2".
std::vector<std::string> DefaultLoraTargets();

// training_config_lora.json: lora_rank, lora_alpha, lora_target_modules ("q,k,v,o,ffn.0,ffn.2" or a list).
struct LoraTrainingConfig {
  int rank = 0;
  double alpha = 0;
  std::vector<std::string> targets;
};
StatusOr<LoraTrainingConfig> LoadLoraTrainingConfig(const std::string& path);

// The key matching of MergeLora() without merging (dry run; `liveavatar doctor`): pairs every lora_A/lora_B key
// of `lora` with a targeted base weight, given only the base weights' shapes (`base_shapes`: key -> shape, e.g.
// from DitWeightSpecs). Reads tensor metadata only. `errors` has one line per LoRA key that does not resolve to a
// targeted `<module>.weight` of `base_shapes` (naming the key and why), per unpaired A/B tensor, and per
// rank/shape mismatch; `pairs` maps each matched module to its (lora_A key, lora_B key).
struct LoraMatch {
  std::map<std::string, std::pair<std::string, std::string>> pairs;
  std::vector<std::string> errors;
};
StatusOr<LoraMatch> MatchLora(const io::TensorStore& lora, const std::map<std::string, std::vector<int64_t>>& base_shapes,
                              int rank, const std::vector<std::string>& targets = DefaultLoraTargets());

// MatchLora() that fails on any error: InvalidArgument naming lora.path() and listing every offending key (the
// error MergeLora() returns). Also rejects rank <= 0.
StatusOr<LoraMatch> ResolveLora(const io::TensorStore& lora,
                                const std::map<std::string, std::vector<int64_t>>& base_shapes, int rank,
                                const std::vector<std::string>& targets = DefaultLoraTargets());

// A LoRA resolved against a model's weight shapes (ResolveLora's rules and errors), applied one base weight at a
// time: the streaming load (LoadOptions::transform) calls Apply() as each weight leaves the file, so no full fp32
// copy of the model exists. Thread safety: const methods are safe to call concurrently.
class LoraApplier {
 public:
  static StatusOr<LoraApplier> Create(std::shared_ptr<const io::TensorStore> lora,
                                      const std::map<std::string, std::vector<int64_t>>& base_shapes, double alpha,
                                      int rank, const std::vector<std::string>& targets = DefaultLoraTargets());
  // Opens `lora_path` and takes alpha / rank / targets as ResolveLoraParams() does.
  static StatusOr<LoraApplier> Open(const std::string& lora_path,
                                    const std::map<std::string, std::vector<int64_t>>& base_shapes,
                                    std::optional<double> alpha, std::optional<int> rank);

  // For a targeted base weight `key` ("<module>.weight"): W + (alpha / rank)·B·A computed in fp32 on `device`
  // (one in-place GEMM on an fp32 copy of `w`); an undefined tensor for any other key.
  StatusOr<at::Tensor> Apply(const std::string& key, const at::Tensor& w, const c10::Device& device) const;
  // The merge itself: w32 += (alpha / rank)·B·A in place (one GEMM on w32's device); `w32` is an fp32 weight of
  // a targeted `key`. NotFound for another key.
  Status AddDelta(const std::string& key, at::Tensor& w32) const;
  bool Targets(const std::string& key) const { return by_weight_.count(key) > 0; }
  int pairs() const { return static_cast<int>(by_weight_.size()); }
  double scale() const { return scale_; }
  int rank() const { return rank_; }
  const std::string& path() const { return lora_->path(); }

 private:
  std::shared_ptr<const io::TensorStore> lora_;
  std::map<std::string, std::pair<std::string, std::string>> by_weight_;  // "<module>.weight" -> (A key, B key)
  double scale_ = 0;
  int rank_ = 0;
};

// Merges every A/B pair of `lora` into `weights` (merge in fp32, result in the weight's dtype). Returns the
// number of merged pairs. Errors (weights untouched) list every LoRA key that does not resolve to a targeted
// `<module>.weight` of `weights`, unpaired A/B tensors, and rank/shape mismatches.
StatusOr<int> MergeLora(WeightMap& weights, const io::TensorStore& lora, double alpha, int rank,
                        const std::vector<std::string>& targets = DefaultLoraTargets());

// Opens `lora_path`; alpha/rank/targets default to training_config_lora.json in the same folder (an error names
// that file when it is needed and absent).
// alpha, rank and targets for the LoRA file `lora_path`: explicit values win; otherwise (and for the targets)
// training_config_lora.json next to it; NotFound naming that file when it is needed and absent.
StatusOr<LoraTrainingConfig> ResolveLoraParams(const std::string& lora_path, std::optional<double> alpha,
                                               std::optional<int> rank);

StatusOr<int> MergeLoraFile(WeightMap& weights, const std::string& lora_path, std::optional<double> alpha,
                            std::optional<int> rank);

}  // namespace liveavatar::models
