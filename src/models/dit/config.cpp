#include "liveavatar/core/json_file.h"
#include "liveavatar/models/dit/config.h"

#include <cmath>
#include <type_traits>

#include <fstream>
#include <sstream>

namespace liveavatar::models::dit {

namespace {

// Reads json[key] into *out when present; a missing required key or a type mismatch is an error naming both.
template <typename T>
Status ReadField(const nlohmann::json& j, const char* key, bool required, const std::string& source, T* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return Status::InvalidArgument(source + ": missing required field \"" + key + "\"");
    return Status::Ok();
  }
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    // nlohmann converts 2.5 to 2 silently: an integer field must hold an integral number.
    if (it->is_number_float()) {
      const double d = it->get<double>();
      if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9.0e15) {
        return Status::InvalidArgument(source + ": field \"" + key + "\" must be an integer (got " + it->dump() + ")");
      }
    }
  }
  try {
    *out = it->get<T>();
  } catch (const std::exception& e) {
    return Status::InvalidArgument(source + ": field \"" + key + "\" has the wrong type (" + it->dump() +
                                   "): " + e.what());
  }
  return Status::Ok();
}

}  // namespace

int64_t DitConfig::InjectorIndex(int64_t layer) const {
  for (size_t i = 0; i < audio_inject_layers.size(); ++i) {
    if (audio_inject_layers[i] == layer) return static_cast<int64_t>(i);
  }
  return -1;
}

Status DitConfig::Validate() const {
  auto bad = [](const std::string& field, const std::string& why) {
    return Status::InvalidArgument("DiT config field \"" + field + "\": " + why);
  };
  if (dim <= 0 || num_heads <= 0 || dim % num_heads != 0) return bad("dim", "must be a positive multiple of num_heads");
  if (head_dim() % 2 != 0) return bad("num_heads", "head_dim = dim / num_heads must be even");
  if (dim % 4 != 0) return bad("dim", "must be divisible by 4 (audio encoder groups)");
  if (num_layers <= 0 || num_layers > 1024) return bad("num_layers", "must be within 1..1024");
  if (dim > 65536) return bad("dim", "must be at most 65536");
  if (num_heads > 1024) return bad("num_heads", "must be at most 1024");
  if (ffn_dim > (int64_t{1} << 20)) return bad("ffn_dim", "must be at most 2^20");
  if (text_len > 65536) return bad("text_len", "must be at most 65536");
  if (freq_dim > 65536) return bad("freq_dim", "must be at most 65536");
  if (!(eps > 0 && eps < 1)) return bad("eps", "must be a finite value in (0, 1)");
  for (const auto& [field, v] : {std::pair<const char*, int64_t>{"in_dim", in_dim}, {"out_dim", out_dim},
                                 {"cond_dim", cond_dim}, {"audio_dim", audio_dim}, {"text_dim", text_dim}}) {
    if (v <= 0 || v > 65536) return bad(field, "must be within 1..65536");
  }
  if (ffn_dim <= 0) return bad("ffn_dim", "must be positive");
  if (freq_dim <= 0 || freq_dim % 2 != 0) return bad("freq_dim", "must be positive and even");
  if (text_len <= 0) return bad("text_len", "must be positive");
  if (patch_size[0] != 1 || patch_size[1] <= 0 || patch_size[2] <= 0)
    return bad("patch_size", "only [1, ph, pw] is supported");
  if (cross_attn_type != "t2v_cross_attn") return bad("cross_attn_type", "only \"t2v_cross_attn\" is supported");
  if (!enable_adain || adain_mode != "attn_norm")
    return bad("enable_adain/adain_mode", "only enable_adain=true with adain_mode \"attn_norm\" is supported");
  if (!enable_framepack) return bad("enable_framepack", "only true is supported");
  if (enable_motioner) return bad("enable_motioner", "only false is supported");
  if (enable_tsm) return bad("enable_tsm", "only false is supported");
  if (trainable_token_pos_emb) return bad("trainable_token_pos_emb", "only false is supported");
  if (!qk_norm) return bad("qk_norm", "only true is supported");
  if (!cross_attn_norm) return bad("cross_attn_norm", "only true is supported");
  if (window_size[0] != -1 || window_size[1] != -1) return bad("window_size", "only [-1, -1] is supported");
  if (local_attn_size != -1) return bad("local_attn_size", "only -1 is supported");
  if (num_audio_token <= 0) return bad("num_audio_token", "must be positive");
  for (size_t i = 0; i < audio_inject_layers.size(); ++i) {
    const auto l = audio_inject_layers[i];
    if (l < 0 || l >= num_layers) return bad("audio_inject_layers", "layer id out of range [0, num_layers)");
    if (i > 0 && l <= audio_inject_layers[i - 1]) return bad("audio_inject_layers", "must be strictly increasing");
  }
  return Status::Ok();
}

nlohmann::json DitConfig::ToJson() const {
  nlohmann::json j;
  j["cross_attn_type"] = cross_attn_type;
  j["cond_dim"] = cond_dim;
  j["audio_dim"] = audio_dim;
  j["num_audio_token"] = num_audio_token;
  j["enable_adain"] = enable_adain;
  j["adain_mode"] = adain_mode;
  j["audio_inject_layers"] = audio_inject_layers;
  j["zero_init"] = zero_init;
  j["zero_timestep"] = zero_timestep;
  j["enable_motioner"] = enable_motioner;
  j["add_last_motion"] = add_last_motion;
  j["enable_tsm"] = enable_tsm;
  j["trainable_token_pos_emb"] = trainable_token_pos_emb;
  j["motion_token_num"] = motion_token_num;
  j["enable_framepack"] = enable_framepack;
  j["framepack_drop_mode"] = framepack_drop_mode;
  j["model_type"] = model_type;
  j["patch_size"] = patch_size;
  j["text_len"] = text_len;
  j["in_dim"] = in_dim;
  j["dim"] = dim;
  j["ffn_dim"] = ffn_dim;
  j["freq_dim"] = freq_dim;
  j["text_dim"] = text_dim;
  j["out_dim"] = out_dim;
  j["num_heads"] = num_heads;
  j["num_layers"] = num_layers;
  j["window_size"] = window_size;
  j["qk_norm"] = qk_norm;
  j["cross_attn_norm"] = cross_attn_norm;
  j["eps"] = eps;
  j["slide_motion_frames"] = slide_motion_frames;
  j["local_attn_size"] = local_attn_size;
  j["_class_name"] = class_name;
  return j;
}

StatusOr<DitConfig> DitConfigFromJson(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) return Status::InvalidArgument(source + ": DiT config must be a JSON object");
  DitConfig c;
  LA_RETURN_IF_ERROR(ReadField(j, "cross_attn_type", false, source, &c.cross_attn_type));
  LA_RETURN_IF_ERROR(ReadField(j, "cond_dim", false, source, &c.cond_dim));
  LA_RETURN_IF_ERROR(ReadField(j, "audio_dim", true, source, &c.audio_dim));
  LA_RETURN_IF_ERROR(ReadField(j, "num_audio_token", false, source, &c.num_audio_token));
  LA_RETURN_IF_ERROR(ReadField(j, "enable_adain", false, source, &c.enable_adain));
  LA_RETURN_IF_ERROR(ReadField(j, "adain_mode", false, source, &c.adain_mode));
  LA_RETURN_IF_ERROR(ReadField(j, "audio_inject_layers", true, source, &c.audio_inject_layers));
  LA_RETURN_IF_ERROR(ReadField(j, "zero_init", false, source, &c.zero_init));
  LA_RETURN_IF_ERROR(ReadField(j, "zero_timestep", false, source, &c.zero_timestep));
  LA_RETURN_IF_ERROR(ReadField(j, "enable_motioner", false, source, &c.enable_motioner));
  LA_RETURN_IF_ERROR(ReadField(j, "add_last_motion", false, source, &c.add_last_motion));
  LA_RETURN_IF_ERROR(ReadField(j, "enable_tsm", false, source, &c.enable_tsm));
  LA_RETURN_IF_ERROR(ReadField(j, "trainable_token_pos_emb", false, source, &c.trainable_token_pos_emb));
  LA_RETURN_IF_ERROR(ReadField(j, "motion_token_num", false, source, &c.motion_token_num));
  LA_RETURN_IF_ERROR(ReadField(j, "enable_framepack", false, source, &c.enable_framepack));
  LA_RETURN_IF_ERROR(ReadField(j, "framepack_drop_mode", false, source, &c.framepack_drop_mode));
  LA_RETURN_IF_ERROR(ReadField(j, "model_type", false, source, &c.model_type));
  LA_RETURN_IF_ERROR(ReadField(j, "patch_size", false, source, &c.patch_size));
  LA_RETURN_IF_ERROR(ReadField(j, "text_len", true, source, &c.text_len));
  LA_RETURN_IF_ERROR(ReadField(j, "in_dim", true, source, &c.in_dim));
  LA_RETURN_IF_ERROR(ReadField(j, "dim", true, source, &c.dim));
  LA_RETURN_IF_ERROR(ReadField(j, "ffn_dim", true, source, &c.ffn_dim));
  LA_RETURN_IF_ERROR(ReadField(j, "freq_dim", true, source, &c.freq_dim));
  LA_RETURN_IF_ERROR(ReadField(j, "text_dim", true, source, &c.text_dim));
  LA_RETURN_IF_ERROR(ReadField(j, "out_dim", true, source, &c.out_dim));
  LA_RETURN_IF_ERROR(ReadField(j, "num_heads", true, source, &c.num_heads));
  LA_RETURN_IF_ERROR(ReadField(j, "num_layers", true, source, &c.num_layers));
  LA_RETURN_IF_ERROR(ReadField(j, "window_size", false, source, &c.window_size));
  LA_RETURN_IF_ERROR(ReadField(j, "qk_norm", false, source, &c.qk_norm));
  LA_RETURN_IF_ERROR(ReadField(j, "cross_attn_norm", false, source, &c.cross_attn_norm));
  LA_RETURN_IF_ERROR(ReadField(j, "eps", false, source, &c.eps));
  LA_RETURN_IF_ERROR(ReadField(j, "slide_motion_frames", false, source, &c.slide_motion_frames));
  LA_RETURN_IF_ERROR(ReadField(j, "local_attn_size", false, source, &c.local_attn_size));
  LA_RETURN_IF_ERROR(ReadField(j, "_class_name", false, source, &c.class_name));
  Status s = c.Validate();
  if (!s.ok()) return s.WithPrefix(source);
  return c;
}

StatusOr<DitConfig> LoadDitConfig(const std::string& path) {
  LA_ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(path, "DiT config.json"));
  return DitConfigFromJson(j, path);
}

}  // namespace liveavatar::models::dit
