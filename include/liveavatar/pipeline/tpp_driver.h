// TppDriver: one rank of a multi-process generation (timestep-forcing pipeline parallelism, docs/parallel.md).
//
// Every rank of the world builds one driver for the same Topology and calls Generate() with the same request.
// Roles (pipeline/topology.h):
//   writer rank   runs the encoders (T5, wav2vec2, VAE encode of the image) and broadcasts the prompt context,
//                 audio features and reference / motion latents to every rank; then primes its streaming VAE
//                 decoder, receives finished blocks (or finishes them itself when it is the last stage), decodes
//                 them as they arrive and writes the video.
//   DiT stage s   owns the KV rings of steps [s·k, (s+1)·k); for every block n it receives the block's latents
//                 from stage s−1 (stage 0 draws the block's noise), applies its steps and sends the result to
//                 stage s+1, or from the last stage to the VAE rank. Sends are asynchronous (one in flight per
//                 peer), so in steady state stage s works on block n − s while stage 0 starts block n.
// The sink-refresh latent (first latent frame of clip 0 / block 0, from the last stage) is broadcast to every rank
// before clip 1 and each stage re-runs its sink prefill with it. The result is frame for frame the
// single-process Engine's for the same request (same seeds, same rolling-sink offsets).
//
// Failure: every setup phase (model loading, input encoding, output opening) ends in an agreement collective,
// so an error on one rank makes every rank return an error and no output is left behind (the writer's
// NAME.partial is removed). A rank that dies mid-run is detected by its peers' communication errors; the
// launcher (dist::LaunchLocal) stops the other workers.
//
// Thread safety: one Generate() at a time; every rank calls the driver's methods in the same order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <c10/core/Device.h>

#include "liveavatar/core/status.h"
#include "liveavatar/dist/communicator.h"
#include "liveavatar/pipeline/engine.h"
#include "liveavatar/pipeline/topology.h"

namespace liveavatar::pipeline {

// Small collectives of the multi-process CLI and driver. `device` is this rank's compute device; tensors go
// through CollectiveDevice(comm, device) (the device for NCCL, the CPU for Gloo and the fake backend).
c10::Device CollectiveDevice(const dist::Communicator& comm, c10::Device device);
// Every rank reports whether its part of `phase` failed (waiting up to an hour for the slowest rank). Returns
// `local` on a failing rank, Unavailable naming the first failing rank ("TPP rank 2 failed while <phase> (see
// its error)") on the others, OK when all succeeded.
Status AgreeAcrossRanks(dist::Communicator& comm, const Status& local, const std::string& phase, c10::Device device);
// Root's `value` on every rank.
StatusOr<int64_t> BroadcastValue(dist::Communicator& comm, int64_t value, int root, c10::Device device);

class TppDriver {
 public:
  // Collective over `world` (whose size must be topology.world_size). Loads what this rank's role needs: the
  // DiT on stage ranks, the encoders and the VAE on the writer rank. `options.device` is this rank's device.
  // Any rank's load error fails every rank (the others return Unavailable naming the failing rank).
  static StatusOr<std::unique_ptr<TppDriver>> Create(const EngineOptions& options, const Topology& topology,
                                                     dist::CommunicatorPtr world);
  ~TppDriver();

  // Collective: renders `request` across the world. On the writer rank the result is complete (outputs,
  // frames, per-block timings; `progress` is called after every written block); on the other ranks it holds
  // the sizes, clip count and this rank's denoise timings, and `outputs` is empty.
  StatusOr<GenerationResult> Generate(const GenerationRequest& request, const ProgressFn& progress = {});

  const RankRole& role() const;
  const Topology& topology() const;

  struct Impl;

 private:
  explicit TppDriver(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace liveavatar::pipeline
