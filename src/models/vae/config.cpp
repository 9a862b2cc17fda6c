#include "liveavatar/core/json_file.h"
#include "liveavatar/models/vae/config.h"

#include <fstream>

namespace liveavatar::models::vae {

namespace {

// Reads json[key] into *out when present (absent/null keeps the default); a type mismatch names the field.
template <typename T>
Status ReadField(const nlohmann::json& j, const char* key, const std::string& source, T* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::Ok();
  try {
    *out = it->get<T>();
  } catch (const std::exception& e) {
    return Status::InvalidArgument(source + ": field \"" + key + "\" has the wrong type (" + it->dump() +
                                   "): " + e.what());
  }
  return Status::Ok();
}

}  // namespace

int64_t VaeConfig::spatial_stride() const { return int64_t{1} << (num_levels() - 1); }

int64_t VaeConfig::temporal_stride() const {
  int64_t s = 1;
  for (bool b : temperal_downsample) s *= b ? 2 : 1;
  return s;
}

std::vector<bool> VaeConfig::temperal_upsample() const {
  return std::vector<bool>(temperal_downsample.rbegin(), temperal_downsample.rend());
}

Status VaeConfig::Validate() const {
  auto bad = [](const std::string& field, const std::string& why) {
    return Status::InvalidArgument("VAE config field \"" + field + "\": " + why);
  };
  if (dim <= 0) return bad("dim", "must be positive");
  if (z_dim <= 0) return bad("z_dim", "must be positive");
  if (dim_mult.size() < 2) return bad("dim_mult", "needs at least two levels");
  for (auto m : dim_mult) {
    if (m <= 0) return bad("dim_mult", "entries must be positive");
  }
  // Every decoder up-sampling halves its channels (Resample conv C -> C/2).
  const size_t n = dim_mult.size();
  for (size_t i = 0; i + 1 < n; ++i) {
    if ((dim * dim_mult[n - 1 - i]) % 2 != 0) return bad("dim/dim_mult", "decoder channel counts must be even");
  }
  if (num_res_blocks <= 0) return bad("num_res_blocks", "must be positive");
  if (temperal_downsample.size() + 1 != dim_mult.size())
    return bad("temperal_downsample", "needs len(dim_mult) - 1 entries");
  if (latents_mean.size() != static_cast<size_t>(z_dim)) return bad("latents_mean", "needs z_dim entries");
  if (latents_std.size() != static_cast<size_t>(z_dim)) return bad("latents_std", "needs z_dim entries");
  for (double s : latents_std) {
    if (!(s > 0.0)) return bad("latents_std", "entries must be positive");
  }
  if (tile_latent_size <= 0) return bad("tile_latent_size", "must be positive");
  if (tile_latent_overlap < 0 || tile_latent_overlap >= tile_latent_size)
    return bad("tile_latent_overlap", "must be in [0, tile_latent_size)");
  return Status::Ok();
}

nlohmann::json VaeConfig::ToJson() const {
  nlohmann::json j;
  j["dim"] = dim;
  j["z_dim"] = z_dim;
  j["dim_mult"] = dim_mult;
  j["num_res_blocks"] = num_res_blocks;
  j["attn_scales"] = attn_scales;
  j["temperal_downsample"] = temperal_downsample;
  j["dropout"] = dropout;
  j["_class_name"] = "WanVAE_";
  j["latents_mean"] = latents_mean;
  j["latents_std"] = latents_std;
  j["tile_decode"] = tile_decode;
  j["tile_latent_size"] = tile_latent_size;
  j["tile_latent_overlap"] = tile_latent_overlap;
  return j;
}

StatusOr<VaeConfig> VaeConfigFromJson(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) return Status::InvalidArgument(source + ": VAE config must be a JSON object");
  VaeConfig c;
  LA_RETURN_IF_ERROR(ReadField(j, "dim", source, &c.dim));
  LA_RETURN_IF_ERROR(ReadField(j, "z_dim", source, &c.z_dim));
  LA_RETURN_IF_ERROR(ReadField(j, "dim_mult", source, &c.dim_mult));
  LA_RETURN_IF_ERROR(ReadField(j, "num_res_blocks", source, &c.num_res_blocks));
  LA_RETURN_IF_ERROR(ReadField(j, "attn_scales", source, &c.attn_scales));
  LA_RETURN_IF_ERROR(ReadField(j, "temperal_downsample", source, &c.temperal_downsample));
  LA_RETURN_IF_ERROR(ReadField(j, "dropout", source, &c.dropout));
  LA_RETURN_IF_ERROR(ReadField(j, "latents_mean", source, &c.latents_mean));
  LA_RETURN_IF_ERROR(ReadField(j, "latents_std", source, &c.latents_std));
  LA_RETURN_IF_ERROR(ReadField(j, "tile_decode", source, &c.tile_decode));
  LA_RETURN_IF_ERROR(ReadField(j, "tile_latent_size", source, &c.tile_latent_size));
  LA_RETURN_IF_ERROR(ReadField(j, "tile_latent_overlap", source, &c.tile_latent_overlap));
  Status s = c.Validate();
  if (!s.ok()) return Status::InvalidArgument(source + ": " + s.message());
  return c;
}

StatusOr<VaeConfig> LoadVaeConfig(const std::string& path) {
  LA_ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(path, "VAE config.json"));
  return VaeConfigFromJson(j, path);
}

}  // namespace liveavatar::models::vae
