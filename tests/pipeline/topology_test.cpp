// Topology: roles of every rank in the example layouts of docs/parallel.md, and refusals with their reasons.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "liveavatar/pipeline/topology.h"

namespace liveavatar::pipeline {
namespace {

ParallelOptions Par(int64_t dit, int64_t ulysses, bool vae, bool fsdp = false) {
  ParallelOptions p;
  p.num_gpus_dit = dit;
  p.ulysses_size = ulysses;
  p.enable_vae_parallel = vae;
  p.dit_fsdp = fsdp;
  return p;
}

void ExpectError(const StatusOr<Topology>& t, const std::string& needle) {
  ASSERT_FALSE(t.ok()) << "accepted: " << t->ToString();
  EXPECT_NE(t.status().message().find(needle), std::string::npos) << t.status().message();
}

TEST(Topology, SingleProcessIgnoresTheDitCountLikeTheReference) {
  auto t = MakeTopology(ParallelOptions{}, 4, 1);  // default --num_gpus_dit 4
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_TRUE(t->single_process());
  EXPECT_EQ(t->num_stages, 1);
  EXPECT_EQ(t->writer_rank(), 0);
  const RankRole r = t->Role(0);
  EXPECT_TRUE(r.is_dit());
  EXPECT_TRUE(r.is_writer);
  EXPECT_EQ(r.first_step, 0);
  EXPECT_EQ(r.num_steps, 4);
  // --enable_vae_parallel is accepted with a warning.
  auto v = MakeTopology(Par(1, 1, true), 4, 1);
  ASSERT_TRUE(v.ok());
  ASSERT_EQ(v->warnings.size(), 1u);
  EXPECT_NE(v->warnings[0].find("--enable_vae_parallel"), std::string::npos);
}

TEST(Topology, ReferenceFiveRanksAreFourStagesAndAVaeRank) {
  auto t = MakeTopology(Par(4, 1, true), 4, 5);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->num_stages, 4);
  EXPECT_EQ(t->steps_per_stage, 1);
  EXPECT_EQ(t->vae_rank(), 4);
  EXPECT_EQ(t->writer_rank(), 4);
  for (int r = 0; r < 4; ++r) {
    const RankRole role = t->Role(r);
    EXPECT_EQ(role.stage, r);
    EXPECT_EQ(role.first_step, r);
    EXPECT_EQ(role.num_steps, 1);
    EXPECT_FALSE(role.is_writer);
    EXPECT_EQ(t->StageLeader(r), r);
  }
  const RankRole vae = t->Role(4);
  EXPECT_TRUE(vae.is_vae_rank);
  EXPECT_FALSE(vae.is_dit());
  EXPECT_TRUE(vae.is_writer);
  EXPECT_EQ(vae.num_steps, 0);
  EXPECT_NE(t->ToString().find("VAE rank 4"), std::string::npos) << t->ToString();
}

TEST(Topology, EveryRankAfterTheDitRanksIsAVaeRankAndTheFirstWrites) {
  auto t = MakeTopology(Par(2, 1, true), 4, 4);  // 2 TPP stages + 2 VAE ranks
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->num_stages, 2);
  EXPECT_EQ(t->steps_per_stage, 2);
  EXPECT_EQ(t->num_vae_ranks, 2);
  EXPECT_EQ(t->VaeRanks(), (std::vector<int>{2, 3}));
  EXPECT_EQ(t->vae_rank(), 2);
  EXPECT_EQ(t->writer_rank(), 2);
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(t->Role(r).is_dit());
    EXPECT_FALSE(t->Role(r).is_vae_rank);
    EXPECT_FALSE(t->Role(r).is_writer);
  }
  for (int r = 2; r < 4; ++r) {
    const RankRole role = t->Role(r);
    EXPECT_TRUE(role.is_vae_rank) << r;
    EXPECT_FALSE(role.is_dit()) << r;
    EXPECT_EQ(role.num_steps, 0) << r;
    EXPECT_EQ(role.is_writer, r == 2) << r;
  }
  EXPECT_NE(t->ToString().find("VAE ranks 2..3"), std::string::npos) << t->ToString();
  // Without --enable_vae_parallel there is none; with it but no rank left over, the run is refused.
  auto plain = MakeTopology(Par(2, 1, false), 4, 2);
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->VaeRanks().empty());
  ExpectError(MakeTopology(Par(2, 1, true), 4, 2), "leaves no VAE rank");
  ExpectError(MakeTopology(Par(2, 1, true), 4, 2), "--nproc_per_node");
  ExpectError(MakeTopology(Par(2, 1, true), 4, 2), "--num_gpus_dit");
}

TEST(Topology, StagesOwnContiguousStepShares) {
  auto t = MakeTopology(Par(2, 1, false), 4, 2);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->steps_per_stage, 2);
  EXPECT_EQ(t->Role(0).first_step, 0);
  EXPECT_EQ(t->Role(1).first_step, 2);
  // Without a VAE rank the last stage's leader decodes and writes.
  EXPECT_EQ(t->vae_rank(), -1);
  EXPECT_EQ(t->writer_rank(), 1);
  EXPECT_TRUE(t->Role(1).is_writer);
  EXPECT_FALSE(t->Role(0).is_writer);
}

TEST(Topology, UlyssesStagesGroupConsecutiveRanks) {
  // The layout is computed whether or not this build runs Ulysses; only MakeTopology refuses it then.
  Topology t;
  t.world_size = 4;
  t.num_dit_ranks = 3;
  t.ulysses_size = 3;
  t.num_stages = 1;
  t.num_vae_ranks = 1;
  t.sample_steps = 4;
  t.steps_per_stage = 4;
  EXPECT_EQ(t.StageRanks(0), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(t.writer_rank(), 3);
  EXPECT_EQ(t.Role(2).stage, 0);
  EXPECT_EQ(t.Role(2).group_rank, 2);
  EXPECT_EQ(t.Role(2).num_steps, 4);
  auto made = MakeTopology(Par(3, 3, true), 4, 4);
  if (UlyssesSupported()) {
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    EXPECT_EQ(made->num_stages, 1);
    EXPECT_EQ(made->writer_rank(), 3);
  } else {
    ExpectError(made, "--ulysses_size 3");
    EXPECT_EQ(made.status().code(), Status::Code::kNotSupported);
  }
  auto fsdp = MakeTopology(Par(4, 4, false, true), 4, 4);
  if (UlyssesSupported() && DitFsdpSupported()) {
    ASSERT_TRUE(fsdp.ok()) << fsdp.status().ToString();
    EXPECT_TRUE(fsdp->dit_fsdp);
    EXPECT_EQ(fsdp->writer_rank(), 0);
    EXPECT_TRUE(fsdp->Role(0).is_writer);
  } else {
    EXPECT_FALSE(fsdp.ok());
  }
}

TEST(Topology, StagesOfSeveralUlyssesRanksChainTheirLeaders) {
  if (!UlyssesSupported()) GTEST_SKIP() << "Ulysses stages not in this build";
  auto t = MakeTopology(Par(4, 2, true), 4, 5);  // 2 stages x 2 ranks + VAE rank
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->num_stages, 2);
  EXPECT_EQ(t->steps_per_stage, 2);
  EXPECT_EQ(t->StageRanks(1), (std::vector<int>{2, 3}));
  EXPECT_EQ(t->StageLeader(1), 2);
  const RankRole r3 = t->Role(3);
  EXPECT_EQ(r3.stage, 1);
  EXPECT_EQ(r3.group_rank, 1);
  EXPECT_EQ(r3.first_step, 2);
  EXPECT_EQ(r3.num_steps, 2);
  EXPECT_EQ(t->writer_rank(), 4);
}

TEST(Topology, RefusesLayoutsThatCannotWorkWithTheReason) {
  ExpectError(MakeTopology(Par(3, 1, true), 4, 4), "--sample_steps 4 must be divisible by the number of TPP stages 3");
  ExpectError(MakeTopology(Par(4, 1, true), 4, 4), "leaves no VAE rank after --num_gpus_dit 4 DiT ranks");
  ExpectError(MakeTopology(Par(4, 1, false), 4, 5), "add --enable_vae_parallel");
  ExpectError(MakeTopology(Par(4, 3, true), 4, 5), "--num_gpus_dit 4 is not a multiple of --ulysses_size 3");
  ExpectError(MakeTopology(Par(4, 4, false), 4, 1), "needs several processes");
  ExpectError(MakeTopology(Par(4, 1, false, true), 4, 1), "--dit_fsdp");
  ExpectError(MakeTopology(Par(2, 1, false), 0, 2), "--sample_steps");
  // A refusal names the world size flag too.
  ExpectError(MakeTopology(Par(2, 1, false), 4, 3), "--nproc_per_node");
}

TEST(Topology, FsdpWithOneRankPerStageIsANoOpWithAWarning) {
  auto t = MakeTopology(Par(2, 1, false, true), 4, 2);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_FALSE(t->dit_fsdp);
  ASSERT_EQ(t->warnings.size(), 1u);
  EXPECT_NE(t->warnings[0].find("--dit_fsdp"), std::string::npos);
}

}  // namespace
}  // namespace liveavatar::pipeline
