// Fp8DitWeights: the DiT's FP8 weights (--fp8) on devices without an FP8 GEMM. The linears the reference
// quantises (liveavatar/utils/fp8_linear.py, replace_linear_with_scaled_fp8) are stored as per-tensor scaled
// e4m3fn codes (models/fp8.h) and dequantised into the model dtype one transformer block at a time, through
// the model's BlockHooks: before(i) puts layer i's dense weights into CausalWanS2V::mutable_weights(), after(i)
// drops them. Everything else (biases, norms, modulation, embeddings, head, audio encoder, convolutions) stays
// dense, as in the reference.
//
// Quantised (the .weight of every nn.Linear of the DiT except text_embedding.*, time_embedding.*,
// time_projection.*, head.head and casual_audio_encoder.encoder.final_linear):
//   blocks.<i>.{self_attn,cross_attn}.{q,k,v,o}.weight, blocks.<i>.ffn.{0,2}.weight,
//   audio_injector.injector.<j>.{q,k,v,o}.weight, audio_injector.injector_adain_layers.<j>.linear.weight.
// Injector j runs inside layer audio_inject_layers[j], so its weights are materialised by that layer's hooks;
// between calls its keys hold an empty placeholder tensor (CausalWanS2V requires non-block keys to exist).
//
// Numerics: weights are rounded to the model dtype first (the reference quantises the bf16 model after the
// LoRA merge), then quantised with the reference's scale rule; dequantised values are decode·(1/s) rounded once
// to the model dtype. Activations are not quantised on this path (the reference's _scaled_mm path quantises
// them too; see models::Fp8LinearScaledMm for that extension point), so it is slightly closer to bf16.
//
// Memory: FP8 codes (1 byte/weight) resident; at most one layer's dense weights exist at a time.
//
// Thread safety: the hooks mutate the model's weight map, so a model with these hooks must not run
// SinkPrefill/StreamBlock concurrently (one model per pipeline stage, as in TPP).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "liveavatar/core/status.h"
#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/dit/model.h"
#include "liveavatar/models/fp8.h"
#include "liveavatar/models/weights.h"

namespace liveavatar::models::dit {

// Whether the reference stores checkpoint key `key` in FP8 (see the list above).
bool IsFp8LinearWeight(const std::string& key);

// The layer whose hooks materialise FP8 key `key`: i for "blocks.<i>.", audio_inject_layers[j] for injector j;
// -1 when the key is not an FP8 key of `config`.
int64_t Fp8KeyLayer(const DitConfig& config, const std::string& key);

struct Fp8DitStats {
  int64_t quantized_tensors = 0;
  int64_t fp8_bytes = 0;               // resident codes
  int64_t dense_bytes = 0;             // the same tensors in the model dtype (what FP8 saves, plus fp8_bytes)
  int64_t max_layer_dense_bytes = 0;   // the largest layer's dequantised weights (transient, one layer at a time)
};

class Fp8DitWeights : public std::enable_shared_from_this<Fp8DitWeights> {
 public:
  // Quantises the FP8 keys of `weights` (checkpoint keys, any float dtype, LoRA already merged) one tensor at a
  // time, releasing each dense tensor as soon as its codes exist: block keys are erased, injector keys replaced
  // by placeholders. The rest of `weights` is left as is, ready for
  // CausalWanS2V::CreateWithExternalBlocks(config, std::move(*weights), dtype, device) followed by Install().
  // Codes are stored on `device`. Errors (weights untouched) name every FP8 key that is missing or misshapen;
  // a tensor with non-finite values gives Corruption naming it (the map is then partly consumed).
  static StatusOr<std::shared_ptr<Fp8DitWeights>> Quantize(const DitConfig& config, WeightMap* weights,
                                                           c10::ScalarType dtype, const c10::Device& device);

  // For a model built with CausalWanS2V::Create: quantises its resident FP8 keys in place (one at a time) and
  // installs the hooks. REQUIRES: `model` outlives the returned object's hooks and is not moved afterwards.
  static StatusOr<std::shared_ptr<Fp8DitWeights>> Attach(CausalWanS2V* model);

  // Sets `model`'s BlockHooks to Materialize/Release of this object (the hooks keep it alive). REQUIRES: the
  // model's config/dtype/device are the ones this object was quantised for; the model is not moved afterwards.
  void Install(CausalWanS2V* model);

  // Puts layer `layer`'s dequantised weights (model dtype, device) into `weights`; Release() removes them
  // (block keys erased, injector keys back to placeholders).
  void Materialize(int64_t layer, WeightMap* weights) const;
  void Release(int64_t layer, WeightMap* weights) const;

  const Fp8Tensor& tensor(const std::string& key) const;  // throws c10::Error for a key that is not quantised
  const std::map<std::string, Fp8Tensor>& tensors() const { return tensors_; }
  c10::ScalarType dtype() const { return dtype_; }
  Fp8DitStats stats() const;

 private:
  Fp8DitWeights(const DitConfig& config, c10::ScalarType dtype, const c10::Device& device);
  // Quantises `weights[key]` (rounded to dtype_ first), stores the codes and drops/placeholders the dense entry.
  void Take(const std::string& key, WeightMap* weights);

  DitConfig config_;
  c10::ScalarType dtype_;
  c10::Device device_;
  std::map<std::string, Fp8Tensor> tensors_;
  std::vector<std::vector<std::string>> layer_keys_;  // per layer: the FP8 keys its hooks materialise
};

}  // namespace liveavatar::models::dit
