#include "liveavatar/models/vae/weights.h"

#include "layout_internal.h"

namespace liveavatar::models::vae {

namespace {

using internal::Layer;
using internal::LayerKind;

class SpecBuilder {
 public:
  std::vector<WeightSpec> specs;

  // CausalConv3d / Conv2d: weight [out, in, kernel...] + bias [out].
  void Conv(const std::string& p, int64_t out, int64_t in, std::vector<int64_t> kernel) {
    std::vector<int64_t> shape = {out, in};
    shape.insert(shape.end(), kernel.begin(), kernel.end());
    specs.push_back({p + ".weight", shape, false, "normal"});
    specs.push_back({p + ".bias", {out}, false, "zeros"});
  }
  // RMS_norm gamma: [C, 1, 1, 1] (channel_first, video) or [C, 1, 1] (images, inside AttentionBlock).
  void Gamma(const std::string& p, int64_t c, bool images) {
    std::vector<int64_t> shape = images ? std::vector<int64_t>{c, 1, 1} : std::vector<int64_t>{c, 1, 1, 1};
    specs.push_back({p + ".gamma", shape, false, "ones"});
  }
  void Residual(const std::string& p, int64_t in, int64_t out) {
    Gamma(p + ".residual.0", in, false);  // residual.1 = SiLU
    Conv(p + ".residual.2", out, in, {3, 3, 3});
    Gamma(p + ".residual.3", out, false);  // residual.4 = SiLU, residual.5 = Dropout
    Conv(p + ".residual.6", out, out, {3, 3, 3});
    if (in != out) Conv(p + ".shortcut", out, in, {1, 1, 1});
  }
  void Attention(const std::string& p, int64_t c) {
    Gamma(p + ".norm", c, true);
    Conv(p + ".to_qkv", 3 * c, c, {1, 1});
    Conv(p + ".proj", c, c, {1, 1});
  }
  void Apply(const Layer& l) {
    switch (l.kind) {
      case LayerKind::kResidual: Residual(l.prefix, l.in_dim, l.out_dim); break;
      case LayerKind::kAttention: Attention(l.prefix, l.in_dim); break;
      case LayerKind::kDownsample2d:  // resample.0 = ZeroPad2d
        Conv(l.prefix + ".resample.1", l.in_dim, l.in_dim, {3, 3});
        break;
      case LayerKind::kDownsample3d:
        Conv(l.prefix + ".resample.1", l.in_dim, l.in_dim, {3, 3});
        Conv(l.prefix + ".time_conv", l.in_dim, l.in_dim, {3, 1, 1});
        break;
      case LayerKind::kUpsample2d:  // resample.0 = nearest-exact ×2
        Conv(l.prefix + ".resample.1", l.out_dim, l.in_dim, {3, 3});
        break;
      case LayerKind::kUpsample3d:
        Conv(l.prefix + ".resample.1", l.out_dim, l.in_dim, {3, 3});
        Conv(l.prefix + ".time_conv", 2 * l.in_dim, l.in_dim, {3, 1, 1});
        break;
    }
  }
};

}  // namespace

std::vector<WeightSpec> VaeWeightSpecs(const VaeConfig& c) {
  SpecBuilder b;
  b.Conv("conv1", 2 * c.z_dim, 2 * c.z_dim, {1, 1, 1});
  b.Conv("conv2", c.z_dim, c.z_dim, {1, 1, 1});

  const int64_t enc = internal::EncoderOutDim(c);
  b.Conv("encoder.conv1", c.dim, 3, {3, 3, 3});
  for (const auto& l : internal::EncoderLayers(c)) b.Apply(l);
  b.Residual("encoder.middle.0", enc, enc);
  b.Attention("encoder.middle.1", enc);
  b.Residual("encoder.middle.2", enc, enc);
  b.Gamma("encoder.head.0", enc, false);  // head.1 = SiLU
  b.Conv("encoder.head.2", 2 * c.z_dim, enc, {3, 3, 3});

  const int64_t dec = internal::DecoderInDim(c);
  b.Conv("decoder.conv1", dec, c.z_dim, {3, 3, 3});
  b.Residual("decoder.middle.0", dec, dec);
  b.Attention("decoder.middle.1", dec);
  b.Residual("decoder.middle.2", dec, dec);
  for (const auto& l : internal::DecoderLayers(c)) b.Apply(l);
  const int64_t dec_out = internal::DecoderOutDim(c);
  b.Gamma("decoder.head.0", dec_out, false);  // head.1 = SiLU
  b.Conv("decoder.head.2", 3, dec_out, {3, 3, 3});
  return b.specs;
}

StatusOr<WeightMap> LoadVaeWeights(const io::TensorStore& store, const VaeConfig& config,
                                   const LoadOptions& options) {
  LA_RETURN_IF_ERROR(config.Validate());
  return LoadWeights(store, VaeWeightSpecs(config), options);
}

}  // namespace liveavatar::models::vae
