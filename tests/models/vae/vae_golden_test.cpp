// Parity of the Wan2.1 VAE against the golden fixtures (golden README §2). Every case_*.safetensors of the vae
// folder runs through the same test, dispatching on its kind; config and weights come from the fixture folder.
// fp32: rel. L2 <= 1e-4 per out.* tensor; bf16 weights/activations: rel. L2 <= 2e-2 against the fp32 reference.
#include <iostream>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/models/vae/vae.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar::models::vae {
namespace {

using testing::GoldenCase;
using testing::GoldenDir;
using testing::RelL2;
using testing::RelL2Within;

WanVae LoadGoldenVae(const std::string& file, at::ScalarType dtype) {
  LoadOptions opts;
  opts.dtype = dtype;
  auto vae = LoadWanVae(GoldenDir("vae") + "/" + file, GoldenDir("vae") + "/config.json", opts);
  if (!vae.ok()) throw std::runtime_error(vae.status().ToString());
  return std::move(vae).value();
}

void Check(const at::Tensor& out, const GoldenCase& c, const std::string& key, double tol) {
  const at::Tensor ref = c.Get(key);
  EXPECT_TRUE(RelL2Within(out.to(at::kFloat), ref, tol, c.name() + " " + key));
  std::cout << "[ measured ] " << c.name() << " " << key << " rel L2 " << RelL2(out.to(at::kFloat), ref)
            << std::endl;
}

void RunCase(const GoldenCase& c, const WanVae& vae, double tol) {
  const std::string kind = c.kind();
  if (kind == "vae_encode") {
    ASSERT_TRUE(c.Has("out.latent"));
    Check(Encode(vae, c.Get("in.video")), c, "out.latent", tol);
    if (c.Has("out.latent_image")) {  // TPP: the reference image encoded as one frame
      Check(Encode(vae, c.Get("in.image")).squeeze(0), c, "out.latent_image", tol);
    }
    if (c.Has("out.latent_image_rep5")) {  // single GPU: the image repeated 5x (2 latents)
      const at::Tensor image = c.Get("in.image");
      Check(Encode(vae, image.repeat({1, 1, 5, 1, 1})).squeeze(0), c, "out.latent_image_rep5", tol);
    }
  } else if (kind == "vae_decode") {
    const at::Tensor raw = Decode(vae, c.Get("in.latent"));
    Check(raw, c, "out.video_raw", tol);
    if (c.Has("out.video")) Check(ClampVideo(raw), c, "out.video", tol);
  } else if (kind == "vae_stream_decode") {
    const at::Tensor latents = c.Get("in.latents");
    const at::Tensor sizes = c.Get("in.chunk_sizes").to(at::kLong);
    StreamingDecoder decoder(&vae);
    int64_t start = 0;
    for (int64_t i = 0; i < sizes.numel(); ++i) {
      const int64_t n = sizes[i].item<int64_t>();
      const at::Tensor raw = decoder.Decode(latents.narrow(2, start, n));
      start += n;
      Check(raw, c, "out.chunk" + std::to_string(i) + ".video_raw", tol);
    }
    EXPECT_EQ(start, latents.size(2));
  } else {
    FAIL() << c.path() << ": unknown vae case kind \"" << kind << "\"";
  }
}

class GoldenVae : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenVae, Fp32SafetensorsGolden) {
  GoldenCase c(GetParam());
  RunCase(c, LoadGoldenVae("Wan2.1_VAE.safetensors", at::kFloat), 1e-4);
}

TEST_P(GoldenVae, Fp32PthGolden) {
  GoldenCase c(GetParam());
  RunCase(c, LoadGoldenVae("Wan2.1_VAE.pth", at::kFloat), 1e-4);
}

TEST_P(GoldenVae, Bf16Golden) {
  GoldenCase c(GetParam());
  RunCase(c, LoadGoldenVae("Wan2.1_VAE.safetensors", at::kBFloat16), 2e-2);
}

LA_GOLDEN_CASES(GoldenVae, "vae", {"vae_encode", "vae_decode", "vae_stream_decode"});

}  // namespace
}  // namespace liveavatar::models::vae
