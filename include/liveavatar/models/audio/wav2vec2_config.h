// Wav2Vec2Config: the HF `Wav2Vec2Config` fields the speech encoder uses (config.json of
// `wav2vec2-large-xlsr-53-english`), plus the two preprocessor fields (preprocessor_config.json: do_normalize,
// sampling_rate). Defaults are the real xlsr-53 values (golden README §5.2; upstream spec §2.3).
//
// Supported layouts: feat_extract_norm "layer" (xlsr; LayerNorm after every conv) or "group" (GroupNorm on the
// first conv only), do_stable_layer_norm true (pre-LN layers, xlsr) or false (post-LN layers), activations
// "gelu" (erf). Anything else is rejected by Wav2Vec2ConfigFromJson with NotSupported naming the field.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "liveavatar/core/status.h"

namespace liveavatar::models::audio {

struct Wav2Vec2Config {
  // Field names = HF config.json keys.
  int64_t hidden_size = 1024;
  int64_t num_hidden_layers = 24;
  int64_t num_attention_heads = 16;
  int64_t intermediate_size = 4096;
  std::vector<int64_t> conv_dim = {512, 512, 512, 512, 512, 512, 512};
  std::vector<int64_t> conv_kernel = {10, 3, 3, 3, 3, 2, 2};
  std::vector<int64_t> conv_stride = {5, 2, 2, 2, 2, 2, 2};
  bool conv_bias = true;
  std::string feat_extract_norm = "layer";
  std::string feat_extract_activation = "gelu";
  std::string hidden_act = "gelu";
  bool do_stable_layer_norm = true;
  int64_t num_conv_pos_embeddings = 128;
  int64_t num_conv_pos_embedding_groups = 16;
  double layer_norm_eps = 1e-5;
  int64_t vocab_size = 33;  // lm_head rows (Wav2Vec2ForCTC; 33 in the English xlsr-53 checkpoint)
  // preprocessor_config.json
  bool do_normalize = true;
  int64_t sampling_rate = 16000;

  // Samples per output frame (product of the strides; 320 for xlsr -> 50 frames/s at 16 kHz).
  int64_t FrameHop() const;
  // Samples seen by one output frame of the conv feature encoder (400 for xlsr).
  int64_t ReceptiveField() const;
  // Output frames of the conv feature encoder for `num_samples` input samples (0 when too short).
  int64_t NumFrames(int64_t num_samples) const;
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  // Checks divisibility / list lengths / supported options; InvalidArgument or NotSupported naming the field.
  Status Validate() const;
};

// Parses HF config.json (`config`) and preprocessor_config.json (`preprocessor`, may be null: defaults).
// `source` names the files in error messages. Unknown keys are ignored.
StatusOr<Wav2Vec2Config> Wav2Vec2ConfigFromJson(const nlohmann::json& config, const nlohmann::json& preprocessor,
                                                const std::string& source);

// Reads <dir>/config.json and, when present, <dir>/preprocessor_config.json. Errors name the file.
StatusOr<Wav2Vec2Config> LoadWav2Vec2Config(const std::string& dir);

// Renders a complete HF config.json for `cfg` (architectures ["Wav2Vec2ForCTC"], model_type "wav2vec2", the
// training-only fields at the xlsr defaults), loadable by transformers' Wav2Vec2ForCTC and by
// Wav2Vec2ConfigFromJson (round trip).
nlohmann::json Wav2Vec2ConfigToHfJson(const Wav2Vec2Config& cfg);
// Renders preprocessor_config.json (Wav2Vec2FeatureExtractor) for `cfg`.
nlohmann::json Wav2Vec2PreprocessorToHfJson(const Wav2Vec2Config& cfg);

// The tiny config of the golden fixtures (hidden 32, 24 layers, 2 heads, FFN 64, conv_dim 7x16, pos conv 16/4,
// vocab 33): what make-tiny writes by default.
Wav2Vec2Config Wav2Vec2TinyConfig();

}  // namespace liveavatar::models::audio
