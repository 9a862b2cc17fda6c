#include "liveavatar/models/vae/spatial_parallel.h"

#include <string>

#include <c10/util/Exception.h>

namespace liveavatar::models::vae {

std::vector<int64_t> SplitRows(int64_t h, int parts) {
  TORCH_CHECK(parts >= 1 && h >= 0, "SplitRows: bad split of ", h, " rows into ", parts, " parts");
  std::vector<int64_t> rows(static_cast<size_t>(parts), h / parts);
  for (int64_t p = 0; p < h % parts; ++p) ++rows[static_cast<size_t>(p)];
  return rows;
}

int64_t SplitOffset(int64_t h, int parts, int part) {
  TORCH_CHECK(part >= 0 && part < parts, "SplitOffset: part ", part, " of ", parts);
  const auto rows = SplitRows(h, parts);
  int64_t offset = 0;
  for (int p = 0; p < part; ++p) offset += rows[static_cast<size_t>(p)];
  return offset;
}

Status CheckSpatialSplit(const VaeConfig& config, int64_t latent_h, int world) {
  if (world < 1) {
    return Status::InvalidArgument("parallel VAE decode: the VAE group has " + std::to_string(world) + " ranks");
  }
  if (world == 1) return Status::Ok();
  if (latent_h < world) {
    return Status::InvalidArgument(
        "parallel VAE decode: latent height " + std::to_string(latent_h) + " (" +
        std::to_string(latent_h * config.spatial_stride()) + " pixels) cannot be split over " + std::to_string(world) +
        " VAE ranks: every rank needs at least one latent row (use at most " + std::to_string(latent_h) +
        " VAE ranks)");
  }
  if (config.tile_decode) {
    return Status::InvalidArgument(
        "parallel VAE decode: tile_decode cannot be combined with a spatial split over " + std::to_string(world) +
        " ranks (the split already bounds each rank's activations); turn tiling off");
  }
  return Status::Ok();
}

std::vector<int64_t> SpatialSplit::RowsAt(int64_t local_rows) const {
  TORCH_CHECK(parallel != nullptr, "SpatialSplit without a SpatialParallel");
  const int rank = parallel->rank();
  TORCH_CHECK(rank >= 0 && static_cast<size_t>(rank) < latent_rows.size(), "SpatialSplit: rank ", rank,
              " outside the split of ", latent_rows.size(), " slabs");
  const int64_t base = latent_rows[static_cast<size_t>(rank)];
  TORCH_CHECK(base > 0 && local_rows % base == 0, "SpatialSplit: ", local_rows, " local rows are not a multiple of ",
              base, " latent rows");
  const int64_t scale = local_rows / base;
  std::vector<int64_t> rows = latent_rows;
  for (auto& r : rows) r *= scale;
  return rows;
}

}  // namespace liveavatar::models::vae
