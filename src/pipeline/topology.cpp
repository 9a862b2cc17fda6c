#include "liveavatar/pipeline/topology.h"

#include <numeric>

namespace liveavatar::pipeline {

namespace {

std::string Str(int64_t v) { return std::to_string(v); }

}  // namespace

bool UlyssesSupported() { return true; }
bool DitFsdpSupported() { return true; }

std::vector<int> Topology::StageRanks(int stage) const {
  std::vector<int> ranks(static_cast<size_t>(ulysses_size));
  std::iota(ranks.begin(), ranks.end(), StageLeader(stage));
  return ranks;
}

std::vector<int> Topology::VaeRanks() const {
  std::vector<int> ranks(static_cast<size_t>(num_vae_ranks));
  std::iota(ranks.begin(), ranks.end(), num_dit_ranks);
  return ranks;
}

RankRole Topology::Role(int rank) const {
  RankRole r;
  r.rank = rank;
  if (rank < num_dit_ranks) {
    r.stage = rank / ulysses_size;
    r.group_rank = rank % ulysses_size;
    r.first_step = r.stage * steps_per_stage;
    r.num_steps = steps_per_stage;
  } else {
    r.is_vae_rank = true;
  }
  r.is_writer = rank == writer_rank();
  return r;
}

std::string Topology::ToString() const {
  if (single_process()) return "1 process: all " + Str(sample_steps) + " steps, decode and write on rank 0";
  std::string s = Str(world_size) + " ranks: " + Str(num_stages) + " TPP stage" + (num_stages > 1 ? "s" : "") +
                  " x " + Str(ulysses_size) + " rank" + (ulysses_size > 1 ? "s (Ulysses" : " (") +
                  (dit_fsdp ? ", FSDP" : "") + (ulysses_size > 1 || dit_fsdp ? "; " : "") + Str(steps_per_stage) +
                  " step" + (steps_per_stage > 1 ? "s" : "") + " each)";
  if (num_vae_ranks == 1) {
    s += ", VAE rank " + Str(vae_rank());
  } else if (num_vae_ranks > 1) {
    s += ", VAE ranks " + Str(vae_rank()) + ".." + Str(world_size - 1) + " (spatially split decode)";
  } else {
    s += ", decode on the last stage";
  }
  return s + ", writer rank " + Str(writer_rank());
}

StatusOr<Topology> MakeTopology(const ParallelOptions& p, int64_t sample_steps, int world_size) {
  Topology t;
  t.world_size = world_size;
  t.sample_steps = sample_steps;
  if (world_size < 1) return Status::InvalidArgument("world size must be >= 1, got " + Str(world_size));
  if (sample_steps < 1) return Status::InvalidArgument("--sample_steps must be >= 1, got " + Str(sample_steps));
  if (p.num_gpus_dit < 1) return Status::InvalidArgument("--num_gpus_dit must be >= 1, got " + Str(p.num_gpus_dit));
  if (p.ulysses_size < 1) return Status::InvalidArgument("--ulysses_size must be >= 1, got " + Str(p.ulysses_size));

  if (world_size == 1) {
    // The single-GPU pipeline; the reference forces num_gpus_dit = 1 and enable_vae_parallel = False here.
    if (p.ulysses_size > 1 || p.dit_fsdp) {
      const int64_t want = p.num_gpus_dit + (p.enable_vae_parallel ? 1 : 0);
      return Status::InvalidArgument(
          std::string(p.ulysses_size > 1 ? "--ulysses_size " + Str(p.ulysses_size) : "--dit_fsdp") +
          " needs several processes, but this run has one: start " + Str(want) +
          " with --nproc_per_node " + Str(want) + " (or torchrun), or drop the flag");
    }
    if (p.enable_vae_parallel) {
      t.warnings.push_back("--enable_vae_parallel has no effect on one process (the reference forces it off too)");
    }
    t.steps_per_stage = sample_steps;
    return t;
  }

  const std::string world = "world size " + Str(world_size) + " (--nproc_per_node / WORLD_SIZE)";
  if (p.num_gpus_dit % p.ulysses_size != 0) {
    return Status::InvalidArgument("--num_gpus_dit " + Str(p.num_gpus_dit) + " is not a multiple of --ulysses_size " +
                                   Str(p.ulysses_size) + ": every TPP stage has ulysses_size ranks");
  }
  t.num_dit_ranks = static_cast<int>(p.num_gpus_dit);
  t.ulysses_size = static_cast<int>(p.ulysses_size);
  t.num_stages = t.num_dit_ranks / t.ulysses_size;
  if (p.enable_vae_parallel) {
    // Every rank after the DiT ranks decodes (spatially split over the VAE ranks).
    if (world_size <= t.num_dit_ranks) {
      return Status::InvalidArgument(world + " leaves no VAE rank after --num_gpus_dit " + Str(t.num_dit_ranks) +
                                     " DiT ranks: --enable_vae_parallel needs at least " + Str(t.num_dit_ranks + 1) +
                                     " processes; raise --nproc_per_node or lower --num_gpus_dit");
    }
    t.num_vae_ranks = world_size - t.num_dit_ranks;
  } else if (world_size != t.num_dit_ranks) {
    std::string hint;
    if (world_size > t.num_dit_ranks) hint = "; add --enable_vae_parallel?";
    if (world_size < t.num_dit_ranks) {
      hint = "; start " + Str(t.num_dit_ranks) + " processes or lower --num_gpus_dit";
    }
    return Status::InvalidArgument(world + " must equal --num_gpus_dit " + Str(t.num_dit_ranks) +
                                   " (no --enable_vae_parallel)" + hint);
  }
  if (sample_steps % t.num_stages != 0) {
    return Status::InvalidArgument("--sample_steps " + Str(sample_steps) +
                                   " must be divisible by the number of TPP stages " + Str(t.num_stages) +
                                   " (--num_gpus_dit " + Str(t.num_dit_ranks) + " / --ulysses_size " +
                                   Str(t.ulysses_size) + ")");
  }
  t.steps_per_stage = sample_steps / t.num_stages;
  t.dit_fsdp = p.dit_fsdp;
  t.fsdp_prefetch = p.fsdp_prefetch;
  if (p.dit_fsdp && t.ulysses_size == 1) {
    t.dit_fsdp = false;
    t.warnings.push_back("--dit_fsdp shards the DiT across the ranks of one stage; with --ulysses_size 1 every "
                         "stage has one rank, so it has no effect");
  }
  if (p.t5_fsdp) t.warnings.push_back("--t5_fsdp has no effect: only the writer rank runs T5");
  if (t.ulysses_size > 1 && !UlyssesSupported()) {
    return Status::NotSupported("--ulysses_size " + Str(t.ulysses_size) +
                                ": Ulysses stages are not yet supported by this build; use --ulysses_size 1 "
                                "(one rank per TPP stage)");
  }
  if (t.dit_fsdp && !DitFsdpSupported()) {
    return Status::NotSupported("--dit_fsdp: FSDP-sharded stages are not yet supported by this build; drop --dit_fsdp");
  }
  return t;
}

}  // namespace liveavatar::pipeline
