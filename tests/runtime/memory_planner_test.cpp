// MemoryPlanner on the 14B configuration: parameter counts, exact cache / shard components recomputed here from
// first principles, the totals of the reference's layouts against the upstream accounting (docs/memory.md:
// ≈57 / ≈41 GB for a TPP DiT rank, ≈76 / ≈61 GB single GPU, bf16 / FP8; ±10 %), our 4 × 24 GB plan
// (Ulysses 4 + FSDP, bf16) which must be found by the planner itself, topology errors and the verdict.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "liveavatar/models/audio/wav2vec2.h"
#include "liveavatar/models/dit/weights.h"
#include "liveavatar/models/t5/encoder.h"
#include "liveavatar/models/vae/weights.h"
#include "liveavatar/runtime/kv_cache.h"
#include "liveavatar/runtime/memory_planner.h"

namespace liveavatar::runtime {
namespace {

constexpr double kGB = 1e9;
constexpr int64_t kGiB = int64_t{1} << 30;

PlanModels Models14B() {
  PlanModels m;  // every config defaults to the real model
  m.dit_specs = models::dit::DitWeightSpecs(m.dit);
  m.t5_specs = models::t5::T5WeightSpecs(m.t5);
  m.wav2vec2_specs = models::audio::Wav2Vec2WeightSpecs(m.wav2vec2);
  m.vae_specs = models::vae::VaeWeightSpecs(m.vae);
  return m;
}

// 704x384, 48 frames, 4 steps on CUDA in bf16 (the upstream running example).
PlanInputs Base14B() {
  PlanInputs in;
  in.models = Models14B();
  in.width = 704;
  in.height = 384;
  in.infer_frames = 48;
  in.sample_steps = 4;
  in.device = PlanDeviceKind::kCuda;
  in.dtype = PlanDtype::kBFloat16;
  return in;
}

// The reference TPP DiT rank: 5 ranks (4 DiT + 1 VAE), full replica, T5 resident (offload_model False),
// wav2vec2 moved to the CPU after use, one KV set, cond cache hard-coded to 3000 rows.
PlanInputs ReferenceTpp(bool fp8) {
  PlanInputs in = Base14B();
  in.world_size = 5;
  in.vae_rank = true;
  in.fp8 = fp8;
  in.offload_model = false;
  in.keep_wav2vec2 = false;
  in.cond_capacity = 3000;
  return in;
}

// The reference single-GPU pipeline: offload_model True (encoders off the GPU while denoising), 4 KV sets on the
// GPU, one shared cond cache of 2800 rows.
PlanInputs ReferenceSingle(bool fp8) {
  PlanInputs in = Base14B();
  in.fp8 = fp8;
  in.offload_model = true;
  in.cond_capacity = 2800;
  in.share_cond_cache = true;
  return in;
}

// Our 4 x 24 GB plan: 4 ranks, Ulysses 4, FSDP over the 4, bf16, T5 released after encoding, every rank runs
// all 4 steps; all four rings resident unless the planner decides otherwise.
PlanInputs Ours4x24() {
  PlanInputs in = Base14B();
  in.world_size = 4;
  in.ulysses_size = 4;
  in.dit_fsdp = true;
  in.fsdp_prefetch = 1;
  in.offload_model = true;
  in.capacity_bytes = 24 * kGiB;
  return in;
}

// A DiT tensor's fp32 island status in this engine's bf16 model (the planner's rule, recomputed here).
bool Fp32Island(const std::string& k) {
  return k.rfind("time_embedding.", 0) == 0 || k.rfind("time_projection.", 0) == 0 || k.rfind("head.", 0) == 0 ||
         k.rfind("casual_audio_encoder.", 0) == 0 || (k.size() > 11 && k.compare(k.size() - 11, 11, ".modulation") == 0) ||
         k.find("norm3.") != std::string::npos;
}

int64_t Numel(const models::WeightSpec& s) {
  int64_t n = 1;
  for (auto d : s.shape) n *= d;
  return n;
}

// Bytes of the bf16 DiT (fp32 islands at 4 bytes): block 0, every block, and everything else (the root unit).
struct DitBf16Bytes {
  int64_t block0 = 0, blocks = 0, root = 0;
};
DitBf16Bytes SplitDitBf16Bytes(const std::vector<models::WeightSpec>& specs) {
  DitBf16Bytes r;
  for (const auto& s : specs) {
    const int64_t b = (Fp32Island(s.key) ? 4 : 2) * Numel(s);
    if (s.key.rfind("blocks.", 0) == 0) {
      r.blocks += b;
      if (s.key.rfind("blocks.0.", 0) == 0) r.block0 += b;
    } else {
      r.root += b;
    }
  }
  return r;
}

const PlanComponent& Component(const RankPlan& r, const std::string& name) {
  for (const auto& c : r.components) {
    if (c.name == name) return c;
  }
  static PlanComponent none;
  ADD_FAILURE() << "no component " << name << " in role " << r.role;
  return none;
}

// The per-rank tables, for failure messages.
std::string Dump(const MemoryPlan& p) {
  std::string s;
  for (const auto& r : p.roles) {
    s += "role " + r.role + " peak " + std::to_string(r.peak / kGB) + " GB (" + r.peak_phase + ")\n";
    for (const auto& c : r.components) {
      s += "  " + c.name + " " + std::to_string(c.load / kGB) + " " + std::to_string(c.encode / kGB) + " " +
           std::to_string(c.denoise / kGB) + "  " + c.detail + "\n";
    }
  }
  return s;
}

const RankPlan& DitRole(const MemoryPlan& p) {
  for (const auto& r : p.roles) {
    if (r.role != "vae") return r;
  }
  ADD_FAILURE() << "no DiT role";
  return p.roles.front();
}

TEST(MemoryPlanner, ParameterCounts14B) {
  const MemoryPlan p = MemoryPlanner::Plan(Base14B());
  ASSERT_TRUE(p.error.empty()) << p.error;
  // 14 288 491 584 (base Wan-14B) + 2 007 264 025 (S2V extras), computed from the module definitions upstream.
  EXPECT_EQ(p.dit_params, 16295755609);
  // umT5-XXL encoder: embedding 256384·4096 + 24 layers of (4·4096² + 3·4096·10240 + 2·4096 + 32·64) + 4096.
  EXPECT_EQ(p.t5_params, 256384LL * 4096 + 24 * (4LL * 4096 * 4096 + 3LL * 4096 * 10240 + 2 * 4096 + 32 * 64) + 4096);
  EXPECT_NEAR(p.t5_params / 1e9, 5.68, 0.01);
  EXPECT_NEAR(p.wav2vec2_params / 1e9, 0.315, 0.01);  // xlsr-53 large without lm_head (optional)
  EXPECT_NEAR(p.vae_params / 1e9, 0.127, 0.005);      // Wan2.1 VAE, 508 MB in fp32
}

TEST(MemoryPlanner, GeometryMatchesTheCacheFunctions) {
  const MemoryPlan p = MemoryPlanner::Plan(Base14B());
  EXPECT_EQ(p.latent_h, 48);
  EXPECT_EQ(p.latent_w, 88);
  EXPECT_EQ(p.frame_seqlen, 24 * 44);
  EXPECT_EQ(p.block_tokens, 3 * 1056);
  EXPECT_EQ(p.ring_tokens, LatentFramesPerClip(48, 73, 19) * 1056);
  EXPECT_EQ(p.ring_tokens, 12672);
  EXPECT_EQ(p.sink_tokens, SinkTokenCount(48, 88, 2, 2));
  EXPECT_EQ(p.sink_tokens, 2640);
}

TEST(MemoryPlanner, ReferenceTppRankBf16AndFp8) {
  for (bool fp8 : {false, true}) {
    const MemoryPlan p = MemoryPlanner::Plan(ReferenceTpp(fp8));
    ASSERT_TRUE(p.error.empty()) << p.error;
    EXPECT_EQ(p.dit_stages, 4);
    ASSERT_EQ(p.roles.size(), 2u);  // ranks 0-3 DiT, rank 4 VAE
    const RankPlan& r = DitRole(p);
    EXPECT_EQ(r.ranks, (std::vector<int64_t>{0, 1, 2, 3}));
    EXPECT_EQ(r.num_steps, 1);
    EXPECT_EQ(p.roles[1].ranks, (std::vector<int64_t>{4}));
    // One KV set of 40 layers x {k, v} x 12 672 tokens x 40 heads x 128 x bf16 = 10.38 GB, cond 3000 rows.
    EXPECT_EQ(Component(r, "kv_rings").denoise, 40LL * 2 * 12672 * 40 * 128 * 2);
    EXPECT_EQ(Component(r, "cond_cache").denoise, 40LL * 2 * 3000 * 40 * 128 * 2);
    EXPECT_EQ(Component(r, "t5").denoise, p.t5_params * 2);  // resident
    EXPECT_EQ(Component(r, "wav2vec2").denoise, 0);
    const double expected = fp8 ? 41.0 : 57.0;
    EXPECT_NEAR(r.peak / kGB, expected, 0.10 * expected) << Dump(p);
    std::printf("[planner] reference TPP DiT rank %s: peak %.1f GB (upstream accounting ~%.0f)\n",
                fp8 ? "FP8" : "bf16", r.peak / kGB, expected);
    EXPECT_EQ(r.peak_phase, "denoise");
    // Above the upstream accounting, which excludes activations and the CUDA context.
    EXPECT_GT(r.peak / kGB, expected);
  }
}

TEST(MemoryPlanner, DitWeightFormatsFromTheSpecs) {
  const PlanModels m = Models14B();
  // bf16 weights with fp32 islands, and FP8 (1 byte + one fp32 scale per block/injector Linear).
  int64_t bf16 = 0, fp8 = 0;
  for (const auto& s : m.dit_specs) {
    const int64_t n = Numel(s);
    const std::string& k = s.key;
    const bool island = Fp32Island(k);
    const bool linear8 = s.shape.size() == 2 && k.size() > 7 && k.compare(k.size() - 7, 7, ".weight") == 0 &&
                         (k.rfind("blocks.", 0) == 0 || k.rfind("audio_injector.", 0) == 0);
    bf16 += island ? 4 * n : 2 * n;
    fp8 += linear8 ? n + 4 : island ? 4 * n : 2 * n;
  }
  PlanInputs in = Base14B();
  EXPECT_EQ(Component(DitRole(MemoryPlanner::Plan(in)), "dit_weights").denoise, bf16);
  in.fp8 = true;
  EXPECT_EQ(Component(DitRole(MemoryPlanner::Plan(in)), "dit_weights").denoise, fp8);
  // Upstream: 32.6 GB in bf16 (all bf16), ≈16.7 GB with FP8 linears.
  EXPECT_NEAR(bf16 / kGB, 32.6, 0.7);
  EXPECT_NEAR(fp8 / kGB, 16.7, 0.7);
}

TEST(MemoryPlanner, ReferenceSingleGpuBf16AndFp8) {
  for (bool fp8 : {false, true}) {
    const MemoryPlan p = MemoryPlanner::Plan(ReferenceSingle(fp8));
    ASSERT_TRUE(p.error.empty()) << p.error;
    ASSERT_EQ(p.roles.size(), 1u);
    const RankPlan& r = p.roles[0];
    EXPECT_EQ(r.role, "dit+decode");
    EXPECT_EQ(r.num_steps, 4);
    EXPECT_EQ(Component(r, "kv_rings").denoise, 4 * (40LL * 2 * 12672 * 40 * 128 * 2));  // 41.5 GB
    EXPECT_EQ(Component(r, "cond_cache").denoise, 40LL * 2 * 2800 * 40 * 128 * 2);       // shared
    EXPECT_EQ(Component(r, "t5").denoise, 0);                                            // offloaded while denoising
    const double expected = fp8 ? 61.0 : 76.0;
    EXPECT_NEAR(r.peak / kGB, expected, 0.10 * expected) << Dump(p);
    std::printf("[planner] reference single GPU %s: peak %.1f GB in %s (upstream accounting ~%.0f)\n",
                fp8 ? "FP8" : "bf16", r.peak / kGB, r.peak_phase.c_str(), expected);
  }
}

TEST(MemoryPlanner, Ours4x24NeedsRingResidencyOrFp8AndThePlannerFindsIt) {
  const PlanInputs in = Ours4x24();
  const MemoryPlan all_rings = MemoryPlanner::Plan(in);
  ASSERT_TRUE(all_rings.error.empty()) << all_rings.error;
  EXPECT_EQ(all_rings.dit_stages, 1);
  ASSERT_EQ(all_rings.roles.size(), 1u);
  const RankPlan& r = all_rings.roles[0];
  EXPECT_EQ(r.ranks, (std::vector<int64_t>{0, 1, 2, 3}));
  // Exact components: 4 rings of 10 local heads, 4 cond caches of the 2640 sink rows.
  EXPECT_EQ(Component(r, "kv_rings").denoise, 4 * (40LL * 2 * 12672 * 10 * 128 * 2));
  EXPECT_EQ(Component(r, "cond_cache").denoise, 4 * (40LL * 2 * 2640 * 10 * 128 * 2));
  // FSDP: every block sharded over 4 (padded up), the root unit resident in full; 2 gathered blocks in flight.
  const auto [block0, blocks, root] = SplitDitBf16Bytes(in.models.dit_specs);
  EXPECT_EQ(Component(r, "dit_weights").denoise, root + (blocks + 3) / 4);
  EXPECT_EQ(Component(r, "fsdp_unshard").denoise, 2 * block0);
  EXPECT_EQ(Component(r, "t5").denoise, 0);
  // All four rings resident in bf16 does not fit 24 GiB ...
  EXPECT_FALSE(all_rings.fits) << "peak " << all_rings.peak_bytes / kGB << " GB";
  // ... ring residency (only the running step's cache on the device) does, under 22 GB ...
  PlanInputs ring = in;
  ring.offload_kv_cache = true;
  const MemoryPlan one_ring = MemoryPlanner::Plan(ring);
  EXPECT_TRUE(one_ring.fits);
  EXPECT_LE(one_ring.peak_bytes, 22e9) << Dump(one_ring);
  EXPECT_EQ(Component(one_ring.roles[0], "kv_rings").denoise, 40LL * 2 * 12672 * 10 * 128 * 2);
  // ... and so do FP8 weights with all four rings.
  PlanInputs f8 = in;
  f8.fp8 = true;
  EXPECT_TRUE(MemoryPlanner::Plan(f8).fits) << MemoryPlanner::Plan(f8).peak_bytes / kGB;
  std::printf("[planner] ours 4x24 (U4 + FSDP): all rings bf16 %.1f GB, ring residency %.1f GB, FP8 all rings %.1f GB\n",
              all_rings.peak_bytes / kGB, one_ring.peak_bytes / kGB, MemoryPlanner::Plan(f8).peak_bytes / kGB);

  // The planner finds a full-quality fit by itself on the same 4 GPUs, <= 22 GB, without FP8.
  const MemoryPlanner::Auto a = MemoryPlanner::AutoPlan(in);
  ASSERT_TRUE(a.ok);
  EXPECT_TRUE(a.choice.full_quality);
  EXPECT_FALSE(a.choice.inputs.fp8);
  EXPECT_EQ(a.choice.inputs.world_size, 4);
  EXPECT_LE(a.choice.peak_bytes, 22e9) << a.choice.flags;
  EXPECT_LE(a.choice.peak_bytes, in.capacity_bytes);
  EXPECT_EQ(a.choice.peak_bytes, MemoryPlanner::Plan(a.choice.inputs).peak_bytes);
  // Alternatives: the same fastest full-quality plan first, and an FP8 one marked as lower quality.
  const auto alts = MemoryPlanner::Alternatives(in);
  ASSERT_FALSE(alts.empty());
  EXPECT_EQ(alts[0].flags, a.choice.flags);
  bool fp8_alt = false;
  for (const auto& alt : alts) {
    EXPECT_LE(alt.peak_bytes, in.capacity_bytes) << alt.flags;
    EXPECT_TRUE(MemoryPlanner::Plan(alt.inputs).fits) << alt.flags;
    if (alt.inputs.fp8) {
      fp8_alt = true;
      EXPECT_FALSE(alt.full_quality);
      EXPECT_NE(alt.flags.find("--fp8"), std::string::npos);
    }
  }
  EXPECT_TRUE(fp8_alt);
}

TEST(MemoryPlanner, AutoPlanKeepsAPlanThatFitsAndPrefersCheaperMeasures) {
  PlanInputs in = Base14B();
  in.capacity_bytes = 200 * kGiB;  // everything fits as given
  const auto a = MemoryPlanner::AutoPlan(in);
  ASSERT_TRUE(a.ok);
  EXPECT_EQ(a.choice.flags, "(as given)");
  EXPECT_EQ(a.choice.speed_rank, 0);
  // With FSDP + offloading already requested but not needed, auto plan drops them.
  in.dit_fsdp = false;
  in.offload_kv_cache = true;
  const auto b = MemoryPlanner::AutoPlan(in);
  ASSERT_TRUE(b.ok);
  EXPECT_FALSE(b.choice.inputs.offload_kv_cache);
  EXPECT_NE(b.choice.flags.find("no --offload_kv_cache"), std::string::npos) << b.choice.flags;
}

TEST(MemoryPlanner, OffloadModelStreamsDitBlocksAndIsProposedOnlyWhereTheEngineCan) {
  // This engine's --offload_model: the DiT blocks live in host memory, root + (1 + lookahead) blocks on the device.
  PlanInputs in = Base14B();
  in.t5_cpu = true;
  const MemoryPlan resident = MemoryPlanner::Plan(in);
  in.offload_dit_blocks = true;
  const MemoryPlan streamed = MemoryPlanner::Plan(in);
  ASSERT_TRUE(streamed.error.empty()) << streamed.error;
  const int64_t full = Component(resident.roles[0], "dit_weights").denoise;
  const int64_t on_device = Component(streamed.roles[0], "dit_weights").denoise;
  const int64_t layers = in.models.dit.num_layers;
  const DitBf16Bytes bytes = SplitDitBf16Bytes(in.models.dit_specs);
  EXPECT_EQ(bytes.blocks, bytes.block0 * layers);
  EXPECT_EQ(full - on_device, bytes.blocks - 2 * bytes.block0);
  EXPECT_LT(streamed.peak_bytes, resident.peak_bytes - 20 * kGiB);
  // On one 48 GiB GPU without FP8 the fastest full-quality fit streams the blocks.
  in.offload_dit_blocks = false;
  in.capacity_bytes = 48 * kGiB;
  in.features.offload_model = false;  // this engine keeps the encoders loaded
  ASSERT_FALSE(MemoryPlanner::Plan(in).fits);
  const auto a = MemoryPlanner::AutoPlan(in);
  ASSERT_TRUE(a.ok);
  EXPECT_TRUE(a.choice.inputs.offload_dit_blocks);
  EXPECT_FALSE(a.choice.inputs.offload_model);
  EXPECT_NE(a.choice.flags.find("--offload_model True"), std::string::npos) << a.choice.flags;
  // Never with FP8 outside FSDP (the engine refuses it), and never proposed so.
  for (const auto& alt : MemoryPlanner::Alternatives(in)) {
    EXPECT_FALSE(alt.inputs.offload_dit_blocks && alt.inputs.fp8 && !alt.inputs.dit_fsdp) << alt.flags;
  }
  PlanInputs bad = in;
  bad.offload_dit_blocks = true;
  bad.fp8 = true;
  EXPECT_NE(MemoryPlanner::Plan(bad).error.find("--offload_model True with --fp8"), std::string::npos);
  // With FSDP the rank's slices move to the host instead: root + (1 + prefetch) staging slices on the device.
  PlanInputs fsdp = Ours4x24();
  const MemoryPlan sharded = MemoryPlanner::Plan(fsdp);
  fsdp.offload_dit_blocks = true;
  fsdp.fp8 = true;  // FP8 slices offload too
  const MemoryPlan offloaded = MemoryPlanner::Plan(fsdp);
  ASSERT_TRUE(offloaded.error.empty()) << offloaded.error;
  EXPECT_LT(Component(offloaded.roles[0], "dit_weights").denoise,
            Component(sharded.roles[0], "dit_weights").denoise - 5 * kGiB);
  EXPECT_GT(Component(offloaded.roles[0], "fsdp_unshard").denoise, 0);
}

TEST(MemoryPlanner, VerdictFollowsCapacity) {
  PlanInputs in = ReferenceTpp(false);
  const MemoryPlan p = MemoryPlanner::Plan(in);
  in.capacity_bytes = p.peak_bytes;
  EXPECT_TRUE(MemoryPlanner::Plan(in).fits);
  in.capacity_bytes = p.peak_bytes - 1;
  EXPECT_FALSE(MemoryPlanner::Plan(in).fits);
  in.capacity_bytes = 0;  // unknown
  EXPECT_TRUE(MemoryPlanner::Plan(in).fits);
}

TEST(MemoryPlanner, InvalidTopologiesAreReported) {
  PlanInputs in = Base14B();
  in.world_size = 4;
  in.ulysses_size = 3;  // 4 ranks are not a multiple of 3
  EXPECT_NE(MemoryPlanner::Plan(in).error.find("multiple of --ulysses_size"), std::string::npos);
  in.world_size = 3;
  in.ulysses_size = 3;  // 40 heads split 14/13/13: valid, planned with the largest share
  const MemoryPlan uneven = MemoryPlanner::Plan(in);
  EXPECT_TRUE(uneven.error.empty()) << uneven.error;
  {
    PlanInputs few = in;
    few.models.dit.num_heads = 2;  // more Ulysses ranks than heads
    EXPECT_NE(MemoryPlanner::Plan(few).error.find("exceeds the 2 attention heads"), std::string::npos);
  }
  in.world_size = 3;
  in.ulysses_size = 1;  // 3 stages for 4 steps
  EXPECT_NE(MemoryPlanner::Plan(in).error.find("do not divide --sample_steps"), std::string::npos);
  in.world_size = 4;
  in.dit_fsdp = true;  // FSDP across TPP stages
  EXPECT_NE(MemoryPlanner::Plan(in).error.find("--dit_fsdp"), std::string::npos);
  in = Base14B();
  in.width = 700;
  EXPECT_NE(MemoryPlanner::Plan(in).error.find("multiples of 64"), std::string::npos);
  EXPECT_FALSE(MemoryPlanner::Plan(in).fits);
}

TEST(MemoryPlanner, CpuAttentionScoresAreMaterialised) {
  PlanInputs in = Base14B();
  const int64_t cuda_act = Component(MemoryPlanner::Plan(in).roles[0], "activations").denoise;
  in.device = PlanDeviceKind::kCpu;
  in.dtype = PlanDtype::kFloat32;
  const int64_t cpu_act = Component(MemoryPlanner::Plan(in).roles[0], "activations").denoise;
  // 40 heads x 3168 queries x (12672 + 2640) keys x fp32, logits + probabilities.
  EXPECT_GE(cpu_act - cuda_act, 2LL * 40 * 3168 * (12672 + 2640) * 4 - 2LL * 3168 * 13824 * 4);
  EXPECT_EQ(DeviceOverheadBytes(PlanDeviceKind::kCpu), 0);
  EXPECT_GT(DeviceOverheadBytes(PlanDeviceKind::kCuda), 0);
}

}  // namespace
}  // namespace liveavatar::runtime
