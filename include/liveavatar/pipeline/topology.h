// Topology: how the processes of a generation run split the work (docs/parallel.md).
//
// The `num_gpus_dit` DiT ranks (0 .. num_gpus_dit − 1) form `num_stages = num_gpus_dit / ulysses_size` TPP
// stages of `ulysses_size` consecutive ranks each. Stage s owns the contiguous share of the denoising steps
// [s·k, (s+1)·k) with k = sample_steps / num_stages, and the KV rings of those steps. Inside a stage the ranks run
// the same blocks in lockstep: Ulysses attention across the stage's ranks and, with --dit_fsdp, DiT weights
// sharded across them. With --enable_vae_parallel every rank after the last stage (ranks num_gpus_dit ..
// world − 1, at least one) is a VAE rank: they decode every finished block together (the frame rows split across
// them when there are several) and the first of them (rank num_gpus_dit) writes the video; without it the first
// rank of the last stage decodes and writes.
// The "writer" rank also runs the encoders (T5, wav2vec2, VAE encode) and broadcasts their outputs.
//
// One process (world size 1) is the single-GPU pipeline whatever --num_gpus_dit says (the reference forces it
// to 1 there), as long as no flag asks for several processes.
//
// Plain values; safe to copy between threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "liveavatar/core/status.h"
#include "liveavatar/pipeline/options.h"

namespace liveavatar::pipeline {

// What one rank does.
struct RankRole {
  int rank = 0;
  int stage = -1;            // TPP stage of a DiT rank; -1 on the VAE rank
  int group_rank = 0;        // position inside the stage's Ulysses group (0 on the VAE rank)
  int64_t first_step = 0;    // owned denoising steps [first_step, first_step + num_steps) (0 steps: VAE rank)
  int64_t num_steps = 0;
  bool is_vae_rank = false;  // a dedicated decode rank of --enable_vae_parallel
  bool is_writer = false;    // runs the encoders, decodes finished blocks and writes the output
  bool is_dit() const { return stage >= 0; }
};

struct Topology {
  int world_size = 1;
  int num_dit_ranks = 1;      // --num_gpus_dit (1 on one process)
  int ulysses_size = 1;       // ranks per stage
  int num_stages = 1;
  int num_vae_ranks = 0;      // world_size − num_dit_ranks with --enable_vae_parallel, else 0
  bool dit_fsdp = false;      // shard the DiT across the ranks of each stage
  int64_t fsdp_prefetch = 1;  // FSDP blocks gathered ahead of the running one (--fsdp_prefetch)
  int64_t sample_steps = 4;
  int64_t steps_per_stage = 4;
  // Notes on flags that have no effect in this layout (to be logged as warnings).
  std::vector<std::string> warnings;

  bool single_process() const { return world_size == 1; }
  // The ranks of stage s (its Ulysses / FSDP group), ascending.
  std::vector<int> StageRanks(int stage) const;
  // First rank of stage s: it sends the stage's output on.
  int StageLeader(int stage) const { return stage * ulysses_size; }
  // The first VAE rank (VAE-group rank 0, the writer), or -1 without --enable_vae_parallel.
  int vae_rank() const { return num_vae_ranks > 0 ? num_dit_ranks : -1; }
  // All VAE ranks, ascending (empty without --enable_vae_parallel).
  std::vector<int> VaeRanks() const;
  // The rank that encodes inputs, decodes and writes the video.
  int writer_rank() const { return num_vae_ranks > 0 ? vae_rank() : StageLeader(num_stages - 1); }
  // REQUIRES: 0 <= rank < world_size.
  RankRole Role(int rank) const;
  // One line, e.g. "5 ranks: 4 TPP stages x 1 (steps 1 each), VAE rank 4, writer rank 4".
  std::string ToString() const;
};

// Validates the layout flags against the world size and the step count. Errors are InvalidArgument (or
// NotSupported for layouts this build cannot run yet) with the reason and the flags at fault, e.g.
// "--sample_steps 4 must be divisible by the number of TPP stages 3 (--num_gpus_dit 3 / --ulysses_size 1)".
StatusOr<Topology> MakeTopology(const ParallelOptions& parallel, int64_t sample_steps, int world_size);

// Whether this build can run Ulysses stages (ulysses_size > 1) and FSDP-sharded stages.
bool UlyssesSupported();
bool DitFsdpSupported();

}  // namespace liveavatar::pipeline
