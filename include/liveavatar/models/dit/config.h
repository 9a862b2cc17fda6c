// DitConfig: the constructor arguments of upstream `CausalWanModel_S2V`, read from the checkpoint's config.json
// (diffusers layout, upstream field names). Values only; derived quantities are methods.
//
// Thread safety: a value type.
#pragma once

#include <array>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "liveavatar/core/status.h"

namespace liveavatar::models::dit {

struct DitConfig {
  // Field names = upstream config.json keys (golden README §1.1).
  std::string cross_attn_type = "t2v_cross_attn";
  int64_t cond_dim = 16;
  int64_t audio_dim = 1024;
  int64_t num_audio_token = 4;
  bool enable_adain = true;
  std::string adain_mode = "attn_norm";
  std::vector<int64_t> audio_inject_layers = {0, 4, 8, 12, 16, 20, 24, 27, 30, 33, 36, 39};
  bool zero_init = true;
  bool zero_timestep = true;
  bool enable_motioner = false;
  bool add_last_motion = true;
  bool enable_tsm = false;
  bool trainable_token_pos_emb = false;
  int64_t motion_token_num = 1024;
  bool enable_framepack = true;
  std::string framepack_drop_mode = "padd";
  std::string model_type = "s2v";
  std::array<int64_t, 3> patch_size = {1, 2, 2};
  int64_t text_len = 512;
  int64_t in_dim = 16;
  int64_t dim = 5120;
  int64_t ffn_dim = 13824;
  int64_t freq_dim = 256;
  int64_t text_dim = 4096;
  int64_t out_dim = 16;
  int64_t num_heads = 40;
  int64_t num_layers = 40;
  std::array<int64_t, 2> window_size = {-1, -1};
  bool qk_norm = true;
  bool cross_attn_norm = true;
  double eps = 1e-6;
  bool slide_motion_frames = false;
  int64_t local_attn_size = -1;
  std::string class_name = "CausalWanModel_S2V";  // "_class_name"

  // Derived.
  int64_t head_dim() const { return dim / num_heads; }
  int64_t num_audio_injectors() const { return static_cast<int64_t>(audio_inject_layers.size()); }
  // Position of `layer` in audio_inject_layers (the injector id), or -1 when the layer has no injector.
  int64_t InjectorIndex(int64_t layer) const;
  // Tokens per latent frame of a latent grid H x W.
  int64_t FrameSeqLen(int64_t latent_h, int64_t latent_w) const {
    return (latent_h / patch_size[1]) * (latent_w / patch_size[2]);
  }

  // Checks the values this implementation supports (the S2V framepack/adain variant); errors name the field.
  Status Validate() const;
  nlohmann::json ToJson() const;
};

// Parses `json` (as read from `source`, used in error messages). Unknown keys are ignored; missing keys keep the
// 14B defaults above except the size fields (dim, ffn_dim, num_heads, num_layers, ...) which are required.
StatusOr<DitConfig> DitConfigFromJson(const nlohmann::json& json, const std::string& source);
// Reads and parses `path` (a config.json). Errors name the file and the field.
StatusOr<DitConfig> LoadDitConfig(const std::string& path);

}  // namespace liveavatar::models::dit
