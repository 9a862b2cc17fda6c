#include "layout_internal.h"

#include <algorithm>

namespace liveavatar::models::vae::internal {

namespace {
bool HasScale(const VaeConfig& c, double scale) {
  return std::find(c.attn_scales.begin(), c.attn_scales.end(), scale) != c.attn_scales.end();
}
}  // namespace

int64_t EncoderOutDim(const VaeConfig& c) { return c.dim * c.dim_mult.back(); }
int64_t DecoderInDim(const VaeConfig& c) { return c.dim * c.dim_mult.back(); }
int64_t DecoderOutDim(const VaeConfig& c) { return c.dim * c.dim_mult.front(); }

std::vector<Layer> EncoderLayers(const VaeConfig& c) {
  // dims = dim·[1] + dim·dim_mult; level i maps dims[i] -> dims[i+1].
  std::vector<int64_t> dims = {c.dim};
  for (auto m : c.dim_mult) dims.push_back(c.dim * m);
  std::vector<Layer> out;
  auto add = [&out](LayerKind k, int64_t in, int64_t o) {
    out.push_back({k, "encoder.downsamples." + std::to_string(out.size()), in, o});
  };
  double scale = 1.0;
  const int64_t n = c.num_levels();
  for (int64_t i = 0; i < n; ++i) {
    int64_t in_dim = dims[i];
    const int64_t out_dim = dims[i + 1];
    for (int64_t r = 0; r < c.num_res_blocks; ++r) {
      add(LayerKind::kResidual, in_dim, out_dim);
      if (HasScale(c, scale)) add(LayerKind::kAttention, out_dim, out_dim);
      in_dim = out_dim;
    }
    if (i != n - 1) {
      add(c.temperal_downsample[i] ? LayerKind::kDownsample3d : LayerKind::kDownsample2d, out_dim, out_dim);
      scale /= 2.0;
    }
  }
  return out;
}

std::vector<Layer> DecoderLayers(const VaeConfig& c) {
  // dims = dim·[mult[-1]] + dim·reversed(mult); level i maps dims[i] (halved for i >= 1: the previous level's
  // up-sampling halves its channels) -> dims[i+1], with num_res_blocks + 1 residual blocks.
  std::vector<int64_t> dims = {c.dim * c.dim_mult.back()};
  for (auto it = c.dim_mult.rbegin(); it != c.dim_mult.rend(); ++it) dims.push_back(c.dim * *it);
  const auto up3d = c.temperal_upsample();
  std::vector<Layer> out;
  auto add = [&out](LayerKind k, int64_t in, int64_t o) {
    out.push_back({k, "decoder.upsamples." + std::to_string(out.size()), in, o});
  };
  const int64_t n = c.num_levels();
  double scale = 1.0 / static_cast<double>(int64_t{1} << (n - 2));
  for (int64_t i = 0; i < n; ++i) {
    int64_t in_dim = i >= 1 ? dims[i] / 2 : dims[i];
    const int64_t out_dim = dims[i + 1];
    for (int64_t r = 0; r < c.num_res_blocks + 1; ++r) {
      add(LayerKind::kResidual, in_dim, out_dim);
      if (HasScale(c, scale)) add(LayerKind::kAttention, out_dim, out_dim);
      in_dim = out_dim;
    }
    if (i != n - 1) {
      add(up3d[i] ? LayerKind::kUpsample3d : LayerKind::kUpsample2d, out_dim, out_dim / 2);
      scale *= 2.0;
    }
  }
  return out;
}

}  // namespace liveavatar::models::vae::internal
