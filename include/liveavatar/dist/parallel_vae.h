// Spatial-parallel VAE decode over a communicator group: the collective side of
// models::vae::SpatialParallel (liveavatar/models/vae/spatial_parallel.h explains the split; the decoder calls it).
//
//   ExchangeHalo  one all_to_all with split sizes: rank r sends its first `halo` rows to r−1 and its last `halo`
//                 rows to r+1 and receives theirs (nothing else moves; NCCL runs it as one grouped send/recv, so
//                 neighbours cannot deadlock); the true image border is zero-filled locally.
//   GatherRows    one all_gather_into_tensor of the slabs padded to the largest slab, then unpadded.
//
// Use (every rank of `group` the same calls, e.g. the VAE ranks of the TPP pipeline, or all ranks after the
// DiT stage):
//   LA_ASSIGN_OR_RETURN(auto sp, dist::MakeSpatialParallel(vae_group));
//   LA_RETURN_IF_ERROR(models::vae::CheckSpatialSplit(vae.config, latent_h, sp->world()));
//   models::vae::StreamingDecoder decoder(&vae, sp);
//   at::Tensor frames = decoder.Decode(latents);       // same latents on every rank -> full frames everywhere
//   (or decoder.DecodeLocal(latents) for this rank's rows only; LocalOutputRows(h) says which)
//
// Errors: a failed collective (timeout, broken communicator) throws c10::Error carrying the Status message (the
// decoder's at::Tensor API has no Status path); the group is then broken (communicator.h) and the process should
// exit. Tensors must live on the communicator's device (CPU for Gloo, the rank's GPU for NCCL).
// Thread safety: as the group's Communicator (one thread).
#pragma once

#include <memory>

#include "liveavatar/core/status.h"
#include "liveavatar/dist/communicator.h"
#include "liveavatar/models/vae/spatial_parallel.h"

namespace liveavatar::dist {

// A SpatialParallel whose ranks are the ranks of `group` (rank 0 decodes the top rows). The group is shared with
// the caller and must outlive every decoder using the result. InvalidArgument for a null group.
StatusOr<std::shared_ptr<models::vae::SpatialParallel>> MakeSpatialParallel(CommunicatorPtr group);

}  // namespace liveavatar::dist
