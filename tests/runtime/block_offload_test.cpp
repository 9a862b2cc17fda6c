// Block offload (models/dit/block_offload.h, runtime/block_offload.h) and the cache byte formula: the offloaded
// DiT must reproduce the resident one bit for bit on every golden sink/stream case while keeping at most
// lookahead + 1 blocks on the device.
#include <cstring>
#include <filesystem>
#include <set>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/models/dit/block_offload.h"
#include "liveavatar/models/dit/model.h"
#include "liveavatar/models/lora.h"
#include "liveavatar/runtime/block_offload.h"
#include "liveavatar/runtime/kv_cache.h"
#include "liveavatar/testing/dit_case.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar {
namespace {

using models::dit::BlockOffloader;
using models::dit::CausalWanS2V;
using models::dit::OffloadOptions;
using testing::GoldenCase;
using testing::RelL2;

// ---------------------------------------------------------------------------------------------------------------
// Host slabs and the transfer stream.

TEST(HostSlabs, PacksTensorsWithoutOverlap) {
  std::vector<runtime::HostTensorSpec> specs = {
      {{100, 3}, at::kFloat}, {{7}, at::kBFloat16}, {{50, 50}, at::kFloat}, {{1}, at::kLong}, {{33, 2}, at::kFloat}};
  // Slabs of 16 KiB: the 10 KB tensor gets most of one, the others fill around it.
  auto alloc = runtime::AllocateHostTensors(specs, /*pinned=*/true, 16 << 10);
  ASSERT_EQ(alloc.tensors.size(), specs.size());
  EXPECT_EQ(alloc.pinned, runtime::HostPinningAvailable());
  int64_t used = 0;
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& t = alloc.tensors[i];
    EXPECT_EQ(t.sizes(), at::IntArrayRef(specs[i].shape));
    EXPECT_EQ(t.scalar_type(), specs[i].dtype);
    EXPECT_TRUE(t.is_contiguous());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % 64, 0u);
    const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
    ranges.push_back({begin, begin + static_cast<uintptr_t>(runtime::TensorBytes(t))});
    used += runtime::TensorBytes(t);
  }
  EXPECT_EQ(alloc.used_bytes, used);
  EXPECT_GE(alloc.reserved_bytes, used);
  for (size_t i = 0; i < ranges.size(); ++i) {
    for (size_t j = i + 1; j < ranges.size(); ++j) {
      EXPECT_TRUE(ranges[i].second <= ranges[j].first || ranges[j].second <= ranges[i].first) << i << " vs " << j;
    }
  }
  // Writes through one view never show up in another.
  for (size_t i = 0; i < specs.size(); ++i) alloc.tensors[i].fill_(static_cast<double>(i + 1));
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_TRUE(at::all(alloc.tensors[i] == static_cast<double>(i + 1)).item<bool>()) << i;
  }
}

TEST(HostSlabs, OversizedTensorGetsItsOwnPowerOfTwoSlab) {
  auto alloc = runtime::AllocateHostTensors({{{3000}, at::kFloat}, {{10}, at::kFloat}}, /*pinned=*/false, 1024);
  // 12000 bytes > 1024: the slab size becomes 16384 and both fit in it.
  ASSERT_EQ(alloc.slabs.size(), 1u);
  EXPECT_LE(alloc.reserved_bytes, 16384);
  EXPECT_GE(alloc.reserved_bytes, alloc.used_bytes);
}

TEST(TransferStreamCpu, CopiesSynchronously) {
  runtime::TransferStream stream(c10::Device(c10::kCPU));
  EXPECT_FALSE(stream.asynchronous());
  auto src = at::arange(10, at::kFloat);
  auto dst = at::zeros({10}, at::kFloat);
  stream.WaitForCompute();
  stream.Copy(dst, src);
  auto ev = stream.Record();
  EXPECT_TRUE(ev.empty());
  stream.MakeComputeWait(ev);
  stream.Synchronize();
  EXPECT_TRUE(at::equal(dst, src));
}

// ---------------------------------------------------------------------------------------------------------------
// Cache bytes and row copies.

TEST(KvCacheBytes, FormulaMatchesTheAllocatedCache) {
  runtime::DitCacheGeometry g;
  g.num_layers = 3;
  g.num_heads = 2;
  g.head_dim = 8;
  g.frame_seqlen = 4;
  g.ring_tokens = 24;
  g.cond_capacity = 10;
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    runtime::DitStepCache c(g, at::TensorOptions().dtype(dtype));
    int64_t manual = 0;
    for (int64_t i = 0; i < c.num_layers(); ++i) {
      const auto& l = c.layer(i);
      for (const at::Tensor* t : {&l.k, &l.v, &l.cond_k, &l.cond_v}) manual += t->numel() * t->element_size();
    }
    EXPECT_EQ(c.bytes(), manual);
    EXPECT_EQ(runtime::DitCacheBytes(g, dtype), manual);
  }
  // 14B at 704x384 (golden-independent arithmetic of the upstream notes: 12 672 ring rows, 40 x 128, bf16).
  runtime::DitCacheGeometry big{40, 40, 128, 1056, 12672, 2800};
  EXPECT_EQ(runtime::DitCacheBytes(big, at::kBFloat16), int64_t{40} * 2 * (12672 + 2800) * 40 * 128 * 2);
}

TEST(KvCacheRows, CopyRingRowsAndCondOnlyTouchTheirRows) {
  runtime::DitCacheGeometry g{2, 2, 4, 3, 12, 5};
  runtime::DitStepCache src(g, at::TensorOptions().dtype(at::kFloat));
  runtime::DitStepCache dst(g, at::TensorOptions().dtype(at::kFloat));
  for (int64_t i = 0; i < 2; ++i) {
    src.layer(i).k.copy_(at::randn_like(src.layer(i).k));
    src.layer(i).v.copy_(at::randn_like(src.layer(i).v));
    src.WriteCond(i, at::randn({1, 4, 2, 4}), at::randn({1, 4, 2, 4}));
  }
  int calls = 0;
  dst.CopyRingRowsFrom(src, 3, 9, [&](const at::Tensor& d, const at::Tensor& s) {
    ++calls;
    d.copy_(s);
  });
  EXPECT_EQ(calls, 4);  // k and v of two layers
  dst.CopyCondFrom(src);
  for (int64_t i = 0; i < 2; ++i) {
    EXPECT_TRUE(at::equal(dst.layer(i).k.narrow(1, 3, 6), src.layer(i).k.narrow(1, 3, 6)));
    EXPECT_TRUE(at::all(dst.layer(i).k.narrow(1, 0, 3) == 0).item<bool>());
    EXPECT_TRUE(at::all(dst.layer(i).v.narrow(1, 9, 3) == 0).item<bool>());
    EXPECT_EQ(dst.layer(i).cond_end, 4);
    EXPECT_TRUE(at::equal(dst.layer(i).cond_k.narrow(1, 0, 4), src.layer(i).cond_k.narrow(1, 0, 4)));
    EXPECT_TRUE(at::all(dst.layer(i).cond_v.narrow(1, 4, 1) == 0).item<bool>());
  }
  EXPECT_THROW(dst.CopyRingRowsFrom(src, 10, 13), c10::Error);
}

TEST(KvCacheRows, FromTensorsChecksShapes) {
  runtime::DitCacheGeometry g{1, 2, 4, 3, 12, 5};
  std::vector<runtime::LayerKvCache> layers(1);
  layers[0].k = at::zeros({1, 12, 2, 4});
  layers[0].v = at::zeros({1, 12, 2, 4});
  layers[0].cond_k = at::zeros({1, 5, 2, 4});
  layers[0].cond_v = at::zeros({1, 5, 2, 4});
  auto c = runtime::DitStepCache::FromTensors(g, layers);
  EXPECT_EQ(c.bytes(), runtime::DitCacheBytes(g, at::kFloat));
  layers[0].cond_v = at::zeros({1, 6, 2, 4});
  EXPECT_THROW(runtime::DitStepCache::FromTensors(g, layers), c10::Error);
}

// ---------------------------------------------------------------------------------------------------------------
// BlockOffloader.

models::dit::DitCheckpoint LoadCheckpoint() {
  auto ckpt = models::dit::LoadDitCheckpoint(testing::GoldenDir("dit"));
  if (!ckpt.ok()) throw StatusError(ckpt.status());
  return std::move(ckpt).value();
}

std::unique_ptr<BlockOffloader> MakeOffloaded(const models::dit::DitCheckpoint& ckpt, int lookahead,
                                              c10::ScalarType dtype) {
  OffloadOptions o;
  o.lookahead = lookahead;
  o.dtype = dtype;
  auto off = BlockOffloader::Create(ckpt.config, ckpt.weights, o);
  if (!off.ok()) throw StatusError(off.status());
  return std::move(off).value();
}

TEST(BlockOffload, RejectsBadWeightsAndOptions) {
  auto ckpt = LoadCheckpoint();
  auto weights = ckpt.weights;
  weights.erase("blocks.0.ffn.0.weight");
  weights["blocks.99.ffn.0.weight"] = at::zeros({1});
  auto off = BlockOffloader::Create(ckpt.config, weights, OffloadOptions());
  ASSERT_FALSE(off.ok());
  EXPECT_NE(off.status().message().find("missing blocks.0.ffn.0.weight"), std::string::npos) << off.status().message();
  EXPECT_NE(off.status().message().find("unexpected blocks.99.ffn.0.weight"), std::string::npos);
  OffloadOptions bad;
  bad.lookahead = -1;
  auto off2 = BlockOffloader::Create(ckpt.config, ckpt.weights, bad);
  ASSERT_FALSE(off2.ok());
  EXPECT_NE(off2.status().message().find("lookahead"), std::string::npos);
}

TEST(BlockOffload, PlanMatchesCreate) {
  auto ckpt = LoadCheckpoint();
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    auto off = MakeOffloaded(ckpt, 1, dtype);
    OffloadOptions o;
    o.dtype = dtype;
    const auto plan = BlockOffloader::Plan(ckpt.config, o);
    const auto a = off->accounting();
    EXPECT_EQ(plan.block_bytes, a.block_bytes);
    EXPECT_EQ(plan.host_block_bytes, a.host_block_bytes);
    EXPECT_EQ(plan.root_bytes, a.root_bytes);
    EXPECT_EQ(plan.num_blocks, ckpt.config.num_layers);
    EXPECT_GE(a.host_reserved_bytes, a.host_block_bytes);
    EXPECT_EQ(a.device_block_bytes, 0);
    // No "blocks." weight is resident in the model between calls.
    for (const auto& kv : off->model().weights()) EXPECT_NE(kv.first.rfind("blocks.", 0), 0u) << kv.first;
  }
}

class GoldenBlockOffload : public ::testing::TestWithParam<std::string> {};

void ExpectCachesEqual(const runtime::DitStepCache& a, const runtime::DitStepCache& b) {
  ASSERT_EQ(a.num_layers(), b.num_layers());
  for (int64_t i = 0; i < a.num_layers(); ++i) {
    EXPECT_TRUE(at::equal(a.layer(i).k, b.layer(i).k)) << "layer " << i << " k";
    EXPECT_TRUE(at::equal(a.layer(i).v, b.layer(i).v)) << "layer " << i << " v";
    EXPECT_TRUE(at::equal(a.layer(i).cond_k, b.layer(i).cond_k)) << "layer " << i << " cond_k";
    EXPECT_TRUE(at::equal(a.layer(i).cond_v, b.layer(i).cond_v)) << "layer " << i << " cond_v";
    EXPECT_EQ(a.layer(i).cond_end, b.layer(i).cond_end);
  }
}

void CheckPeak(const BlockOffloader& off, int lookahead) {
  const auto a = off.accounting();
  EXPECT_LE(a.peak_device_blocks, lookahead + 1);
  EXPECT_LE(a.peak_device_block_bytes, (lookahead + 1) * a.block_bytes);
  EXPECT_GE(a.peak_device_blocks, 1);
  EXPECT_GT(a.copies, 0);
}

void RunCase(const GoldenCase& c, c10::ScalarType dtype, int lookahead) {
  SCOPED_TRACE(std::string(c10::toString(dtype)) + " lookahead " + std::to_string(lookahead));
  auto ckpt = LoadCheckpoint();
  if (c.HasMeta("lora")) {
    const auto path = (std::filesystem::path(testing::GoldenDir("dit")) / c.Meta("lora")).string();
    auto merged = models::MergeLoraFile(ckpt.weights, path, std::nullopt, std::nullopt);
    ASSERT_TRUE(merged.ok()) << merged.status().ToString();
  }
  auto plain = CausalWanS2V::Create(ckpt.config, ckpt.weights, dtype, c10::Device(c10::kCPU));
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  auto off = MakeOffloaded(ckpt, lookahead, dtype);
  const auto& model = off->model();
  if (c.kind() == "sink") {
    const int64_t ring_frames = runtime::LatentFramesPerClip(48, models::dit::kAudioPrefixFrames, 19);
    auto a = testing::DitSinkCache(*plain, c, dtype);
    auto b = testing::DitSinkCache(*plain, c, dtype);
    ASSERT_EQ(a.geometry().ring_tokens, ring_frames * c.MetaInt("frame_seqlen"));
    const models::dit::SinkInputs in = testing::DitSinkInputs(c);
    plain->SinkPrefill(in, a);
    model.SinkPrefill(in, b);
    ExpectCachesEqual(a, b);
    // A second call (prefetched across the call boundary) is still exact.
    auto b2 = testing::DitSinkCache(*plain, c, dtype);
    model.SinkPrefill(in, b2);
    ExpectCachesEqual(a, b2);
  } else {
    auto a = testing::DitStreamCache(*plain, c, dtype);
    auto b = testing::DitStreamCache(model, c, dtype);
    auto b2 = testing::DitStreamCache(model, c, dtype);
    const models::dit::StreamInputs in = testing::DitStreamInputs(c);
    const auto fa = plain->StreamBlock(in, a);
    const auto fb = model.StreamBlock(in, b);
    const auto fb2 = model.StreamBlock(in, b2);
    EXPECT_TRUE(at::equal(fa, fb));
    EXPECT_TRUE(at::equal(fa, fb2));
    ExpectCachesEqual(a, b);
    if (dtype == at::kFloat) {
      const double e = RelL2(fb, c.Get("out.x0_flow"));
      std::printf("[offload] %s lookahead %d: out.x0_flow rel L2 %.3g\n", c.name().c_str(), lookahead, e);
      EXPECT_LE(e, 1e-4);
    }
  }
  CheckPeak(*off, lookahead);
  const auto acct = off->accounting();
  std::printf("[offload] %s %s lookahead %d: block %lld B, peak device blocks %d (%lld B), host %lld B, root %lld B\n",
              c.name().c_str(), c10::toString(dtype), lookahead, static_cast<long long>(acct.block_bytes),
              acct.peak_device_blocks, static_cast<long long>(acct.peak_device_block_bytes),
              static_cast<long long>(acct.host_block_bytes), static_cast<long long>(acct.root_bytes));
}

TEST_P(GoldenBlockOffload, MatchesResidentModelBitForBit) {
  GoldenCase c(GetParam());
  for (int lookahead : {0, 1, 2}) RunCase(c, at::kFloat, lookahead);
  RunCase(c, at::kBFloat16, 1);
}

LA_GOLDEN_CASES(GoldenBlockOffload, "dit", {"sink", "stream"});

}  // namespace
}  // namespace liveavatar
