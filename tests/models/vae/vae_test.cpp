// Wan2.1 VAE behaviour that the golden cases do not pin down: config parsing, the key layout of the real
// checkpoint, chunked (cached) evaluation == whole-sequence evaluation, streaming decode in arbitrary chunks ==
// one full decode, Reset(), and spatial tiling. Random weights from VaeWeightSpecs (no fixture needed).
#include <fstream>
#include <iostream>
#include <map>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/vae/layers.h"
#include "liveavatar/models/vae/vae.h"
#include "liveavatar/models/vae/weights.h"
#include "liveavatar/testing/golden.h"
#include "liveavatar/testing/synthetic.h"

namespace liveavatar::models::vae {
namespace {

using testing::RelL2;

VaeConfig TinyConfig() {
  VaeConfig c;
  c.dim = 4;
  c.attn_scales = {0.25};  // exercises AttentionBlocks inside encoder level 2 and decoder level 0
  return c;
}

using testing::RandomVae;

TEST(VaeConfigTest, DefaultsAreRealWan21) {
  VaeConfig c;
  EXPECT_TRUE(c.Validate().ok());
  EXPECT_EQ(c.dim, 96);
  EXPECT_EQ(c.spatial_stride(), 8);
  EXPECT_EQ(c.temporal_stride(), 4);
  ASSERT_EQ(c.latents_mean.size(), 16u);
  EXPECT_DOUBLE_EQ(c.latents_mean[0], -0.7571);
  EXPECT_DOUBLE_EQ(c.latents_std[15], 1.9160);
}

TEST(VaeConfigTest, ParsesAndRejects) {
  auto ok = VaeConfigFromJson(nlohmann::json::parse(R"({"dim": 4, "attn_scales": [], "z_dim": 16})"), "mem");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->dim, 4);
  EXPECT_FALSE(ok->tile_decode);
  auto bad_type = VaeConfigFromJson(nlohmann::json::parse(R"({"dim": "four"})"), "cfg.json");
  ASSERT_FALSE(bad_type.ok());
  EXPECT_NE(bad_type.status().message().find("dim"), std::string::npos);
  EXPECT_NE(bad_type.status().message().find("cfg.json"), std::string::npos);
  auto bad_mean = VaeConfigFromJson(nlohmann::json::parse(R"({"latents_mean": [1, 2]})"), "cfg.json");
  ASSERT_FALSE(bad_mean.ok());
  EXPECT_NE(bad_mean.status().message().find("latents_mean"), std::string::npos);
  auto missing = LoadVaeConfig("/nonexistent/config.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/config.json"), std::string::npos);
}

TEST(VaeWeightsTest, RealLayoutKeys) {
  std::map<std::string, std::vector<int64_t>> shapes;
  const auto specs = VaeWeightSpecs(VaeConfig());
  for (const auto& s : specs) shapes[s.key] = s.shape;
  EXPECT_EQ(specs.size(), shapes.size()) << "duplicate keys";
  EXPECT_EQ(specs.size(), 194u);
  using V = std::vector<int64_t>;
  EXPECT_EQ(shapes["conv1.weight"], (V{32, 32, 1, 1, 1}));
  EXPECT_EQ(shapes["encoder.conv1.weight"], (V{96, 3, 3, 3, 3}));
  EXPECT_EQ(shapes["encoder.downsamples.5.time_conv.weight"], (V{192, 192, 3, 1, 1}));
  EXPECT_EQ(shapes["encoder.middle.1.norm.gamma"], (V{384, 1, 1}));
  EXPECT_EQ(shapes["encoder.head.2.weight"], (V{32, 384, 3, 3, 3}));
  EXPECT_EQ(shapes["decoder.conv1.weight"], (V{384, 16, 3, 3, 3}));
  EXPECT_EQ(shapes["decoder.upsamples.3.time_conv.weight"], (V{768, 384, 3, 1, 1}));
  EXPECT_EQ(shapes["decoder.upsamples.4.shortcut.weight"], (V{384, 192, 1, 1, 1}));
  EXPECT_EQ(shapes["decoder.upsamples.11.resample.1.weight"], (V{96, 192, 3, 3}));
  EXPECT_EQ(shapes["decoder.head.0.gamma"], (V{96, 1, 1, 1}));
  EXPECT_EQ(shapes.count("decoder.upsamples.15.residual.0.gamma"), 0u);
  for (const auto& s : specs) {
    if (s.key.size() > 6 && s.key.substr(s.key.size() - 6) == ".gamma") {
      EXPECT_EQ(s.init, "ones") << s.key;
    }
  }
}

TEST(VaeWeightsTest, StrictLoadNamesOffendingKeys) {
  VaeConfig c = TinyConfig();
  WanVae vae = RandomVae(c, 1);
  std::map<std::string, at::Tensor> tensors(vae.weights.begin(), vae.weights.end());
  tensors.erase("decoder.head.2.bias");
  tensors["decoder.extra"] = at::zeros({1});
  auto store = io::MakeMemoryStore(tensors, "mem://vae");
  auto loaded = LoadVaeWeights(*store, c, LoadOptions());
  ASSERT_FALSE(loaded.ok());
  const std::string msg = loaded.status().message();
  EXPECT_NE(msg.find("decoder.head.2.bias"), std::string::npos) << msg;
  EXPECT_NE(msg.find("decoder.extra"), std::string::npos) << msg;
  EXPECT_NE(msg.find("mem://vae"), std::string::npos) << msg;
  EXPECT_FALSE(LoadWanVae("/nonexistent/vae.safetensors", "/nonexistent/config.json", LoadOptions()).ok());
}

TEST(VaeWeightsTest, FixtureConfigAndBothFileFormatsLoad) {
  const std::string dir = testing::GoldenDir("vae");
  if (!std::ifstream(dir + "/config.json")) GTEST_SKIP() << "no VAE fixture at " << dir;
  auto a = LoadWanVae(dir + "/Wan2.1_VAE.safetensors", dir + "/config.json", LoadOptions());
  auto b = LoadWanVae(dir + "/Wan2.1_VAE.pth", dir + "/config.json", LoadOptions());
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_EQ(a->weights.size(), b->weights.size());
  for (const auto& kv : a->weights) EXPECT_TRUE(at::equal(kv.second, b->weights.at(kv.first))) << kv.first;
}

TEST(VaeTest, ChunkedEncodeEqualsWholeSequence) {
  const WanVae vae = RandomVae(TinyConfig(), 2);
  const at::Tensor video = at::rand({1, 3, 9, 32, 48}) * 2 - 1;
  const at::Tensor latent = Encode(vae, video);
  ASSERT_EQ(latent.sizes(), (at::IntArrayRef{1, 16, 3, 4, 6}));
  // Whole sequence without a cache, then conv1 and the normalisation by hand.
  at::Tensor mu = CausalConv3d(Encoder3d(video, vae.weights, vae.config, nullptr), vae.weights, "conv1", nullptr)
                      .narrow(1, 0, 16);
  at::Tensor mean = at::tensor(vae.config.latents_mean).to(at::kFloat).view({1, 16, 1, 1, 1});
  at::Tensor std_t = at::tensor(vae.config.latents_std).to(at::kFloat).view({1, 16, 1, 1, 1});
  const double err = RelL2(latent, (mu - mean) / std_t);
  std::cout << "[ measured ] chunked vs whole encode rel L2 " << err << std::endl;
  EXPECT_LE(err, 1e-5);
  EXPECT_THROW(Encode(vae, at::zeros({1, 3, 6, 32, 48})), c10::Error);
}

TEST(VaeTest, ChunkedDecodeEqualsWholeSequence) {
  const WanVae vae = RandomVae(TinyConfig(), 3);
  const at::Tensor latent = at::randn({1, 16, 4, 4, 6});
  const at::Tensor raw = Decode(vae, latent);
  ASSERT_EQ(raw.sizes(), (at::IntArrayRef{1, 3, 13, 32, 48}));
  at::Tensor mean = at::tensor(vae.config.latents_mean).to(at::kFloat).view({1, 16, 1, 1, 1});
  at::Tensor std_t = at::tensor(vae.config.latents_std).to(at::kFloat).view({1, 16, 1, 1, 1});
  at::Tensor x = CausalConv3d(latent * std_t + mean, vae.weights, "conv2", nullptr);
  const double err = RelL2(raw, Decoder3d(x, vae.weights, vae.config, nullptr));
  std::cout << "[ measured ] chunked vs whole decode rel L2 " << err << std::endl;
  EXPECT_LE(err, 1e-5);
  const at::Tensor video = ClampVideo(raw);
  EXPECT_EQ(video.sizes(), (at::IntArrayRef{3, 13, 32, 48}));
  EXPECT_LE(video.abs().max().item<float>(), 1.0f);
}

TEST(VaeTest, StreamingDecodeInChunksEqualsFullDecode) {
  const WanVae vae = RandomVae(TinyConfig(), 4);
  const at::Tensor latents = at::randn({1, 16, 7, 4, 6});
  const at::Tensor full = Decode(vae, latents);
  for (int64_t chunk : {1, 2, 3}) {
    StreamingDecoder decoder(&vae);
    std::vector<at::Tensor> parts;
    for (int64_t s = 0; s < latents.size(2); s += chunk) {
      const int64_t n = std::min(chunk, latents.size(2) - s);
      at::Tensor out = decoder.Decode(latents.narrow(2, s, n));
      EXPECT_EQ(out.size(2), s == 0 ? 1 + 4 * (n - 1) : 4 * n);
      parts.push_back(out);
    }
    EXPECT_EQ(decoder.latents_seen(), latents.size(2));
    EXPECT_GT(decoder.cache_bytes(), 0);
    const double err = RelL2(at::cat(parts, 2), full);
    std::cout << "[ measured ] stream chunk " << chunk << " vs full decode rel L2 " << err << std::endl;
    EXPECT_LE(err, 1e-5) << "chunk " << chunk;
  }
  // Empty calls are allowed and change nothing.
  StreamingDecoder decoder(&vae);
  EXPECT_EQ(decoder.Decode(latents.narrow(2, 0, 0)).size(2), 0);
  EXPECT_LE(RelL2(decoder.Decode(latents), full), 1e-5);
}

TEST(VaeTest, ResetEqualsFreshDecoder) {
  const WanVae vae = RandomVae(TinyConfig(), 5);
  const at::Tensor a = at::randn({1, 16, 3, 4, 6});
  const at::Tensor b = at::randn({1, 16, 2, 4, 6});
  StreamingDecoder used(&vae);
  used.Decode(a);
  const at::Tensor continued = used.Decode(b);  // keeps a's causal state
  EXPECT_EQ(continued.size(2), 8);
  used.Reset();
  EXPECT_EQ(used.latents_seen(), 0);
  EXPECT_EQ(used.cache_bytes(), 0);
  const at::Tensor after_reset = used.Decode(b);
  StreamingDecoder fresh(&vae);
  const at::Tensor ref = fresh.Decode(b);
  EXPECT_TRUE(at::equal(after_reset, ref));
  // A new spatial size needs a Reset().
  EXPECT_THROW(used.Decode(at::randn({1, 16, 1, 2, 2})), c10::Error);
  used.Reset();
  EXPECT_EQ(used.Decode(at::randn({1, 16, 1, 2, 2})).sizes(), (at::IntArrayRef{1, 3, 1, 16, 16}));
}

TEST(VaeTest, Bf16StreamingMatchesBf16FullAndFp32) {
  const WanVae vae32 = RandomVae(TinyConfig(), 6);
  const WanVae vae16 = RandomVae(TinyConfig(), 6, at::kBFloat16);
  const at::Tensor latents = at::randn({1, 16, 3, 4, 6});
  const at::Tensor full16 = Decode(vae16, latents);
  EXPECT_EQ(full16.scalar_type(), at::kFloat);
  StreamingDecoder decoder(&vae16);
  at::Tensor parts = at::cat({decoder.Decode(latents.narrow(2, 0, 1)), decoder.Decode(latents.narrow(2, 1, 2))}, 2);
  EXPECT_TRUE(at::equal(parts, full16));
  const double err = RelL2(full16, Decode(vae32, latents));
  std::cout << "[ measured ] bf16 vs fp32 decode (random weights) rel L2 " << err << std::endl;
  EXPECT_LE(err, 5e-2);
}

// Zeroes every off-centre spatial tap (3×3 kernels act as 1×1) and the attention output projection, so each
// output pixel depends only on the latent pixel above it: tiling must then be exact, which checks tile
// placement and the blend weights independently of the receptive field.
WanVae SpatiallyLocal(WanVae vae) {
  for (auto& kv : vae.weights) {
    at::Tensor w = kv.second.clone();
    if (kv.first.find(".proj.weight") != std::string::npos) {
      w.zero_();
    } else if (w.dim() >= 4 && w.size(-1) == 3 && w.size(-2) == 3) {
      at::Tensor centre = w.narrow(-2, 1, 1).narrow(-1, 1, 1).clone();
      w.zero_();
      w.narrow(-2, 1, 1).narrow(-1, 1, 1).copy_(centre);
    }
    kv.second = w;
  }
  return vae;
}

TEST(VaeTest, TiledDecodeApproximatesUntiled) {
  VaeConfig c = TinyConfig();
  c.attn_scales = {};  // the real layout: attention only in the middle blocks
  const WanVae plain = RandomVae(c, 7);
  WanVae tiled = plain;
  tiled.config.tile_decode = true;
  tiled.config.tile_latent_size = 6;
  tiled.config.tile_latent_overlap = 3;
  const at::Tensor latents = at::randn({1, 16, 2, 8, 12});

  // Random weights: the decoder's receptive field (~11 latent pixels from the 3×3 convs at latent resolution)
  // and the global middle attention exceed a 6-pixel tile, so this only bounds the error (measured ~0.4 with
  // these seeds; trained weights are far more local).
  const at::Tensor ref = Decode(plain, latents);
  const at::Tensor out = Decode(tiled, latents);
  ASSERT_EQ(out.sizes(), ref.sizes());
  const double err = RelL2(out, ref);
  std::cout << "[ measured ] tiled (6/3) vs untiled decode, random weights: rel L2 " << err << std::endl;
  EXPECT_LE(err, 0.6);

  // A spatially local decoder: tiled == untiled.
  const WanVae local = SpatiallyLocal(plain);
  const WanVae local_tiled = SpatiallyLocal(tiled);
  const double local_err = RelL2(Decode(local_tiled, latents), Decode(local, latents));
  std::cout << "[ measured ] tiled (6/3) vs untiled decode, spatially local weights: rel L2 " << local_err
            << std::endl;
  EXPECT_LE(local_err, 1e-5);

  // Streaming with tiles keeps one cache per tile: chunked == full tiled decode.
  StreamingDecoder decoder(&tiled);
  at::Tensor parts = at::cat({decoder.Decode(latents.narrow(2, 0, 1)), decoder.Decode(latents.narrow(2, 1, 1))}, 2);
  EXPECT_LE(RelL2(parts, out), 1e-6);
  // One tile covering the latent is the untiled decode.
  WanVae single = plain;
  single.config.tile_decode = true;
  single.config.tile_latent_size = 12;
  EXPECT_TRUE(at::equal(Decode(single, latents), ref));
}

}  // namespace
}  // namespace liveavatar::models::vae
