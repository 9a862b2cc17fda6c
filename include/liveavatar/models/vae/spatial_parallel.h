// Spatial-parallel decoding of the Wan2.1 VAE: the model side (no collectives here; dist::MakeSpatialParallel in
// liveavatar/dist/parallel_vae.h implements SpatialParallel over a Communicator).
//
// Several VAE ranks decode the same latents together: the latent rows (H) are split into contiguous near-equal
// slabs, one per rank (SplitRows), and every rank runs the whole decoder on its slab. The decoder consults its
// SpatialParallel wherever a result depends on rows outside the slab:
//   * every convolution whose kernel spans more than one row (the 3×3×3 causal convs, the 3×3 up-sampling convs)
//     first gets kh/2 halo rows from the neighbouring ranks (ExchangeHalo); only the true image border (the top of
//     rank 0, the bottom of the last rank) gets the conv's zero padding;
//   * the middle AttentionBlock attends over the whole frame: the keys and values of every rank are gathered
//     (GatherRows) and each rank keeps its own query rows;
//   * up-sampling doubles every rank's slab, so the split stays aligned (rank r's rows at scale 2^k are its latent
//     rows × 2^k);
//   * the causal time cache stays local: it is per spatial position (a halo-padded conv caches its padded input).
// The result equals single-rank decoding up to floating-point summation order (~1e-7 relative).
//
// Requirements: every rank holds at least one latent row (latent h >= ranks; CheckSpatialSplit), and spatial
// tiling (VaeConfig::tile_decode) is off. The encoder has no parallel path.
//
// Thread safety: a SpatialParallel is used by one decoder on one thread at a time; its collectives must be
// called by every rank of its group in the same order (the decoders of the group run the same layers in lockstep).
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"
#include "liveavatar/models/vae/config.h"

namespace liveavatar::models::vae {

// The collective side of a spatial split, implemented by dist/ (or by a test double). Ranks are ordered top to
// bottom: rank 0 holds the top slab. Failures of the underlying communication throw c10::Error naming the op.
class SpatialParallel {
 public:
  virtual ~SpatialParallel() = default;

  // Ranks sharing the decode, and this process's rank among them.
  virtual int world() const = 0;
  virtual int rank() const = 0;

  // x: [..., rows, W] (this rank's rows in dim −2; every rank the same shape apart from rows, same dtype).
  // Returns [..., halo + rows + halo, W]: the `halo` rows above are the last `halo` rows of rank−1 (zeros on
  // rank 0), the rows below are the first `halo` rows of rank+1 (zeros on the last rank).
  // REQUIRES: halo >= 1; every rank holds >= halo rows; every rank calls it with the same halo.
  virtual at::Tensor ExchangeHalo(const at::Tensor& x, int64_t halo) = 0;

  // x: [..., rows[rank()], W]; `rows` lists the rows of every rank (same on every rank). Returns the slabs of all
  // ranks concatenated along dim −2 in rank order: [..., sum(rows), W].
  virtual at::Tensor GatherRows(const at::Tensor& x, const std::vector<int64_t>& rows) = 0;
};

// Rows of each of `parts` contiguous near-equal slabs of `h` rows: the first h % parts slabs get one more row.
// REQUIRES: parts >= 1, h >= 0.
std::vector<int64_t> SplitRows(int64_t h, int parts);
// First row of slab `part` in SplitRows(h, parts).
int64_t SplitOffset(int64_t h, int parts, int part);

// OK when a latent of height `latent_h` can be decoded over `world` ranks with `config`: world >= 1, every rank
// gets at least one latent row (so at least the one halo row of every 3×3 conv at every resolution), and tiling
// is off when world > 1. InvalidArgument naming the sizes otherwise.
Status CheckSpatialSplit(const VaeConfig& config, int64_t latent_h, int world);

// What the decoder's layers need to run on one rank's slab: the collectives and the latent rows of every rank.
// Built by StreamingDecoder; layers take a `const SpatialSplit*` (nullptr: the whole frame, no communication).
struct SpatialSplit {
  SpatialParallel* parallel = nullptr;  // not owned
  std::vector<int64_t> latent_rows;     // SplitRows(latent h, world)

  // Rows of every rank at the resolution where this rank holds `local_rows` (latent rows × the same power of 2).
  std::vector<int64_t> RowsAt(int64_t local_rows) const;
};

}  // namespace liveavatar::models::vae
