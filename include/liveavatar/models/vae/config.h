// VaeConfig: the constructor arguments of upstream `WanVAE_` (Wan2.1 causal 3-D VAE, `wan/modules/vae2_1.py`)
// plus the 16 latent normalisation constants and the engine-side decode tiling switch. Read from the
// checkpoint folder's config.json (upstream field names); defaults are the real Wan2.1 VAE (dim 96, stride 4×8×8).
//
// Thread safety: a value type.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "liveavatar/core/status.h"

namespace liveavatar::models::vae {

struct VaeConfig {
  // --- Checkpoint architecture (config.json keys of WanVAE_) ---
  int64_t dim = 96;                                       // base channel count
  int64_t z_dim = 16;                                     // latent channels
  std::vector<int64_t> dim_mult = {1, 2, 4, 4};           // channel multiplier per level
  int64_t num_res_blocks = 2;                             // residual blocks per encoder level (+1 in the decoder)
  std::vector<double> attn_scales = {};                   // scales with an AttentionBlock after each res block
  std::vector<bool> temperal_downsample = {false, true, true};  // (sic, upstream spelling) per down-sampling
  double dropout = 0.0;                                   // inference: ignored

  // --- Latent normalisation: z = (mu - mean) / std on encode, the inverse on decode ("latents_mean/std") ---
  std::vector<double> latents_mean = {-0.7571, -0.7089, -0.9113, 0.1075,  -0.1745, 0.9653,  -0.1517, 1.5508,
                                      0.4134,  -0.0715, 0.5517,  -0.3632, -0.1922, -0.9497, 0.2503,  -0.2921};
  std::vector<double> latents_std = {2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160};

  // --- Engine-only: spatial tiling of the decoder (not an upstream field; off by default) ---
  // When on, every latent frame is decoded as overlapping latent tiles of tile_latent_size² (each tile keeps its
  // own causal cache) blended linearly across the overlap. Lowers peak activation memory roughly by
  // (H·W)/tile² at the cost of recomputing the overlap; not bit-identical (the middle attention block and the
  // convolutions' receptive field see only the tile). Ignored when the latent fits in one tile. Refused together
  // with a spatial split over several ranks (CheckSpatialSplit in spatial_parallel.h).
  bool tile_decode = false;
  int64_t tile_latent_size = 32;     // tile edge in latent pixels (×8 in output pixels)
  int64_t tile_latent_overlap = 8;   // overlap between neighbouring tiles in latent pixels; < tile_latent_size

  // --- Derived ---
  int64_t num_levels() const { return static_cast<int64_t>(dim_mult.size()); }
  // Spatial stride (2^(levels-1)) and temporal stride (2^#true(temperal_downsample)).
  int64_t spatial_stride() const;
  int64_t temporal_stride() const;
  // Decoder temporal up-sampling flags = temperal_downsample reversed.
  std::vector<bool> temperal_upsample() const;

  // Checks the values this implementation supports; errors name the field.
  Status Validate() const;
  nlohmann::json ToJson() const;
};

// Parses `json` (read from `source`, used in messages). Unknown keys are ignored; missing keys keep the real
// Wan2.1 defaults above. Validates the result.
StatusOr<VaeConfig> VaeConfigFromJson(const nlohmann::json& json, const std::string& source);
// Reads and parses `path` (a config.json). Errors name the file and the field.
StatusOr<VaeConfig> LoadVaeConfig(const std::string& path);

}  // namespace liveavatar::models::vae
