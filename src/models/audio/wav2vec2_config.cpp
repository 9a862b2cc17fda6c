#include "liveavatar/models/audio/wav2vec2_config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace liveavatar::models::audio {

namespace fs = std::filesystem;

int64_t Wav2Vec2Config::FrameHop() const {
  int64_t hop = 1;
  for (int64_t s : conv_stride) hop *= s;
  return hop;
}

int64_t Wav2Vec2Config::ReceptiveField() const {
  int64_t rf = 1, jump = 1;
  for (size_t i = 0; i < conv_kernel.size(); ++i) {
    rf += (conv_kernel[i] - 1) * jump;
    jump *= conv_stride[i];
  }
  return rf;
}

int64_t Wav2Vec2Config::NumFrames(int64_t num_samples) const {
  int64_t len = num_samples;
  for (size_t i = 0; i < conv_kernel.size(); ++i) {
    if (len < conv_kernel[i]) return 0;
    len = (len - conv_kernel[i]) / conv_stride[i] + 1;
  }
  return len;
}

Status Wav2Vec2Config::Validate() const {
  auto bad = [](const std::string& m) { return Status::InvalidArgument("wav2vec2 config: " + m); };
  if (hidden_size <= 0 || num_hidden_layers <= 0 || num_attention_heads <= 0 || intermediate_size <= 0) {
    return bad("hidden_size, num_hidden_layers, num_attention_heads and intermediate_size must be positive");
  }
  if (hidden_size % num_attention_heads != 0) {
    return bad("hidden_size " + std::to_string(hidden_size) + " is not divisible by num_attention_heads " +
               std::to_string(num_attention_heads));
  }
  if (conv_dim.empty() || conv_dim.size() != conv_kernel.size() || conv_dim.size() != conv_stride.size()) {
    return bad("conv_dim, conv_kernel and conv_stride must be non-empty lists of equal length");
  }
  for (size_t i = 0; i < conv_dim.size(); ++i) {
    if (conv_dim[i] <= 0 || conv_kernel[i] <= 0 || conv_stride[i] <= 0) return bad("conv_* entries must be positive");
  }
  if (num_conv_pos_embeddings <= 0 || num_conv_pos_embedding_groups <= 0 ||
      hidden_size % num_conv_pos_embedding_groups != 0) {
    return bad("hidden_size must be divisible by num_conv_pos_embedding_groups (both positive)");
  }
  if (feat_extract_norm != "layer" && feat_extract_norm != "group") {
    return Status::NotSupported("wav2vec2 config: feat_extract_norm \"" + feat_extract_norm +
                                "\" (supported: \"layer\", \"group\")");
  }
  if (feat_extract_activation != "gelu" || hidden_act != "gelu") {
    return Status::NotSupported("wav2vec2 config: only \"gelu\" activations are supported (feat_extract_activation \"" +
                                feat_extract_activation + "\", hidden_act \"" + hidden_act + "\")");
  }
  if (sampling_rate <= 0) return bad("sampling_rate must be positive");
  if (vocab_size < 0) return bad("vocab_size must be >= 0");
  return Status::Ok();
}

namespace {

template <typename T>
Status Read(const nlohmann::json& j, const char* key, T* out, const std::string& source) {
  if (!j.contains(key) || j.at(key).is_null()) return Status::Ok();  // keep the default
  try {
    *out = j.at(key).get<T>();
  } catch (const std::exception& e) {
    return Status::InvalidArgument(source + ": field \"" + key + "\" has the wrong type (" + e.what() + ")");
  }
  return Status::Ok();
}

StatusOr<nlohmann::json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot open " + path);
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    return Status::Corruption(path + ": invalid JSON (" + e.what() + ")");
  }
}

}  // namespace

StatusOr<Wav2Vec2Config> Wav2Vec2ConfigFromJson(const nlohmann::json& config, const nlohmann::json& preprocessor,
                                                const std::string& source) {
  if (!config.is_object()) return Status::InvalidArgument(source + ": config.json is not a JSON object");
  Wav2Vec2Config c;
  LA_RETURN_IF_ERROR(Read(config, "hidden_size", &c.hidden_size, source));
  LA_RETURN_IF_ERROR(Read(config, "num_hidden_layers", &c.num_hidden_layers, source));
  LA_RETURN_IF_ERROR(Read(config, "num_attention_heads", &c.num_attention_heads, source));
  LA_RETURN_IF_ERROR(Read(config, "intermediate_size", &c.intermediate_size, source));
  LA_RETURN_IF_ERROR(Read(config, "conv_dim", &c.conv_dim, source));
  LA_RETURN_IF_ERROR(Read(config, "conv_kernel", &c.conv_kernel, source));
  LA_RETURN_IF_ERROR(Read(config, "conv_stride", &c.conv_stride, source));
  LA_RETURN_IF_ERROR(Read(config, "conv_bias", &c.conv_bias, source));
  LA_RETURN_IF_ERROR(Read(config, "feat_extract_norm", &c.feat_extract_norm, source));
  LA_RETURN_IF_ERROR(Read(config, "feat_extract_activation", &c.feat_extract_activation, source));
  LA_RETURN_IF_ERROR(Read(config, "hidden_act", &c.hidden_act, source));
  LA_RETURN_IF_ERROR(Read(config, "do_stable_layer_norm", &c.do_stable_layer_norm, source));
  LA_RETURN_IF_ERROR(Read(config, "num_conv_pos_embeddings", &c.num_conv_pos_embeddings, source));
  LA_RETURN_IF_ERROR(Read(config, "num_conv_pos_embedding_groups", &c.num_conv_pos_embedding_groups, source));
  LA_RETURN_IF_ERROR(Read(config, "layer_norm_eps", &c.layer_norm_eps, source));
  LA_RETURN_IF_ERROR(Read(config, "vocab_size", &c.vocab_size, source));
  if (config.contains("num_feat_extract_layers") && config["num_feat_extract_layers"].is_number_integer() &&
      config["num_feat_extract_layers"].get<int64_t>() != static_cast<int64_t>(c.conv_dim.size())) {
    return Status::InvalidArgument(source + ": num_feat_extract_layers disagrees with len(conv_dim)");
  }
  if (preprocessor.is_object()) {
    LA_RETURN_IF_ERROR(Read(preprocessor, "do_normalize", &c.do_normalize, source));
    LA_RETURN_IF_ERROR(Read(preprocessor, "sampling_rate", &c.sampling_rate, source));
  }
  Status s = c.Validate();
  if (!s.ok()) return s.WithPrefix(source);
  return c;
}

StatusOr<Wav2Vec2Config> LoadWav2Vec2Config(const std::string& dir) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  const std::string pre_path = (fs::path(dir) / "preprocessor_config.json").string();
  LA_ASSIGN_OR_RETURN(nlohmann::json config, ReadJsonFile(config_path));
  nlohmann::json pre;  // null: defaults
  std::string source = config_path;
  if (fs::exists(pre_path)) {
    LA_ASSIGN_OR_RETURN(pre, ReadJsonFile(pre_path));
    source += " + " + pre_path;
  }
  return Wav2Vec2ConfigFromJson(config, pre, source);
}

nlohmann::json Wav2Vec2ConfigToHfJson(const Wav2Vec2Config& c) {
  nlohmann::json j;
  // Fields this engine reads.
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["intermediate_size"] = c.intermediate_size;
  j["conv_dim"] = c.conv_dim;
  j["conv_kernel"] = c.conv_kernel;
  j["conv_stride"] = c.conv_stride;
  j["num_feat_extract_layers"] = static_cast<int64_t>(c.conv_dim.size());
  j["conv_bias"] = c.conv_bias;
  j["feat_extract_norm"] = c.feat_extract_norm;
  j["feat_extract_activation"] = c.feat_extract_activation;
  j["hidden_act"] = c.hidden_act;
  j["do_stable_layer_norm"] = c.do_stable_layer_norm;
  j["num_conv_pos_embeddings"] = c.num_conv_pos_embeddings;
  j["num_conv_pos_embedding_groups"] = c.num_conv_pos_embedding_groups;
  j["layer_norm_eps"] = c.layer_norm_eps;
  j["vocab_size"] = c.vocab_size;
  j["output_hidden_size"] = c.hidden_size;
  // Identity and training-only fields at the xlsr-53-english values (ignored at inference).
  j["architectures"] = {"Wav2Vec2ForCTC"};
  j["model_type"] = "wav2vec2";
  j["activation_dropout"] = 0.05;
  j["attention_dropout"] = 0.1;
  j["hidden_dropout"] = 0.05;
  j["feat_proj_dropout"] = 0.05;
  j["feat_extract_dropout"] = 0.0;
  j["final_dropout"] = 0.0;
  j["layerdrop"] = 0.05;
  j["apply_spec_augment"] = true;
  j["mask_time_prob"] = 0.05;
  j["mask_time_length"] = 10;
  j["mask_time_min_masks"] = 2;
  j["mask_feature_prob"] = 0.0;
  j["mask_feature_length"] = 10;
  j["mask_feature_min_masks"] = 0;
  j["initializer_range"] = 0.02;
  j["ctc_loss_reduction"] = "mean";
  j["ctc_zero_infinity"] = false;
  j["use_weighted_layer_sum"] = false;
  j["add_adapter"] = false;
  j["bos_token_id"] = 1;
  j["eos_token_id"] = 2;
  j["pad_token_id"] = 0;
  j["num_codevector_groups"] = 2;
  j["num_codevectors_per_group"] = 320;
  j["codevector_dim"] = 256;
  j["proj_codevector_dim"] = 256;
  j["contrastive_logits_temperature"] = 0.1;
  j["num_negatives"] = 100;
  j["diversity_loss_weight"] = 0.1;
  j["feat_quantizer_dropout"] = 0.0;
  return j;
}

nlohmann::json Wav2Vec2PreprocessorToHfJson(const Wav2Vec2Config& c) {
  nlohmann::json j;
  j["do_normalize"] = c.do_normalize;
  j["feature_extractor_type"] = "Wav2Vec2FeatureExtractor";
  j["feature_size"] = 1;
  j["padding_side"] = "right";
  j["padding_value"] = 0.0;
  j["return_attention_mask"] = true;
  j["sampling_rate"] = c.sampling_rate;
  return j;
}

Wav2Vec2Config Wav2Vec2TinyConfig() {
  Wav2Vec2Config c;
  c.hidden_size = 32;
  c.num_hidden_layers = 24;
  c.num_attention_heads = 2;
  c.intermediate_size = 64;
  c.conv_dim = std::vector<int64_t>(7, 16);
  c.num_conv_pos_embeddings = 16;
  c.num_conv_pos_embedding_groups = 4;
  c.vocab_size = 33;
  return c;
}

}  // namespace liveavatar::models::audio
