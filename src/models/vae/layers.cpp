#include "liveavatar/models/vae/layers.h"

#include <cmath>
#include <vector>

#include <ATen/ATen.h>

#include "layout_internal.h"
#include "liveavatar/models/attention.h"

namespace liveavatar::models::vae {

namespace {

using internal::Layer;
using internal::LayerKind;

const std::vector<int64_t> kStride2x2 = {2, 2};
const std::vector<int64_t> kNoPad2d = {0, 0};
const std::vector<int64_t> kTimeStride2 = {2, 1, 1};
const std::vector<int64_t> kNoPad3d = {0, 0, 0};

// Convolutions and attention run in the weights' dtype; activations between them are fp32.
at::Tensor AsDtypeOf(const at::Tensor& x, const at::Tensor& w) {
  return x.scalar_type() == w.scalar_type() ? x : x.to(w.scalar_type());
}
at::Tensor Fp32(const at::Tensor& x) { return x.scalar_type() == at::kFloat ? x : x.to(at::kFloat); }

// Applies `fn` to every frame: [B, C, T, H, W] -> [B·T, C, H, W] -> fn -> [B, C', T, H', W'].
template <typename Fn>
at::Tensor PerFrame(const at::Tensor& x, Fn fn) {
  const int64_t b = x.size(0), c = x.size(1), t = x.size(2), h = x.size(3), w = x.size(4);
  at::Tensor frames = x.permute({0, 2, 1, 3, 4}).reshape({b * t, c, h, w});
  at::Tensor y = fn(frames);
  return y.reshape({b, t, y.size(1), y.size(2), y.size(3)}).permute({0, 2, 1, 3, 4}).contiguous();
}

// Nearest ×2 in H and W ("nearest-exact" equals "nearest" for an integer factor 2). x: [N, C, H, W].
at::Tensor Nearest2x(const at::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  return x.reshape({n, c, h, 1, w, 1}).expand({n, c, h, 2, w, 2}).reshape({n, c, 2 * h, 2 * w});
}

// time_conv output [B, 2C, T, H, W] -> [B, C, 2T, H, W]: output frame t gives frames 2t (channels [0, C)) and
// 2t+1 (channels [C, 2C)).
at::Tensor InterleaveTime(const at::Tensor& y) {
  const int64_t b = y.size(0), c = y.size(1) / 2, t = y.size(2), h = y.size(3), w = y.size(4);
  return y.reshape({b, 2, c, t, h, w}).permute({0, 2, 3, 1, 4, 5}).reshape({b, c, 2 * t, h, w});
}

// Rows of halo a kernel of height `kh` needs from the neighbouring ranks (0 without a split).
int64_t HaloRows(const SpatialSplit* split, int64_t kh) { return split != nullptr ? kh / 2 : 0; }

// Conv2d, stride 1, "same" zero padding. With a split, the rows beyond this rank's slab come from the neighbours
// (ExchangeHalo) and only the true image border is zero-padded. x: [N, C, H, W].
at::Tensor Conv2dSame(const at::Tensor& x, const WeightMap& weights, const std::string& prefix,
                      const SpatialSplit* split = nullptr) {
  const auto& w = W(weights, prefix + ".weight");
  at::Tensor in = AsDtypeOf(x, w);
  const int64_t halo = HaloRows(split, w.size(2));
  if (halo > 0) in = split->parallel->ExchangeHalo(in, halo);
  const std::vector<int64_t> padding = {halo > 0 ? 0 : w.size(2) / 2, w.size(3) / 2};
  return Fp32(at::conv2d(in, w, W(weights, prefix + ".bias"), {1, 1}, padding));
}

at::Tensor ApplyLayer(const at::Tensor& x, const WeightMap& weights, const Layer& l, VaeFeatureCache* cache,
                      const SpatialSplit* split) {
  switch (l.kind) {
    case LayerKind::kResidual: return ResidualBlock(x, weights, l.prefix, cache, split);
    case LayerKind::kAttention: return AttentionBlock(x, weights, l.prefix, split);
    case LayerKind::kDownsample2d: return Resample(x, weights, l.prefix, ResampleMode::kDownsample2d, cache, split);
    case LayerKind::kDownsample3d: return Resample(x, weights, l.prefix, ResampleMode::kDownsample3d, cache, split);
    case LayerKind::kUpsample2d: return Resample(x, weights, l.prefix, ResampleMode::kUpsample2d, cache, split);
    case LayerKind::kUpsample3d: return Resample(x, weights, l.prefix, ResampleMode::kUpsample3d, cache, split);
  }
  TORCH_CHECK(false, "unknown VAE layer kind at ", l.prefix);
}

at::Tensor Middle(at::Tensor x, const WeightMap& weights, const std::string& prefix, VaeFeatureCache* cache,
                  const SpatialSplit* split = nullptr) {
  x = ResidualBlock(x, weights, prefix + ".0", cache, split);
  x = AttentionBlock(x, weights, prefix + ".1", split);
  return ResidualBlock(x, weights, prefix + ".2", cache, split);
}

at::Tensor Head(const at::Tensor& x, const WeightMap& weights, const std::string& prefix, VaeFeatureCache* cache,
                const SpatialSplit* split = nullptr) {
  at::Tensor y = at::silu(RmsNormChannels(x, W(weights, prefix + ".0.gamma")));  // head.1 = SiLU
  return CausalConv3d(y, weights, prefix + ".2", cache, split);
}

}  // namespace

at::Tensor CausalConv3d(const at::Tensor& x, const WeightMap& weights, const std::string& prefix,
                        VaeFeatureCache* cache, const SpatialSplit* split) {
  // x: [B, Cin, T, H, W]; weight: [Cout, Cin, kt, kh, kw]
  const auto& w = W(weights, prefix + ".weight");
  const auto& b = W(weights, prefix + ".bias");
  TORCH_CHECK(x.dim() == 5, prefix, ": CausalConv3d expects [B, C, T, H, W], got ", x.sizes());
  TORCH_CHECK(x.size(1) == w.size(1), prefix, ": ", x.size(1), " input channels, weight expects ", w.size(1));
  at::Tensor in = AsDtypeOf(x, w);
  // With a split the chunk gets its halo rows first; the cached history is then halo-padded too.
  const int64_t halo = HaloRows(split, w.size(3));
  if (halo > 0) in = split->parallel->ExchangeHalo(in, halo);
  const int64_t history = w.size(2) - 1;
  if (history > 0) {
    at::Tensor cached = cache != nullptr ? cache->Get(prefix) : at::Tensor();
    const int64_t have = cached.defined() ? cached.size(2) : 0;
    if (have > 0) {
      TORCH_CHECK(cached.size(0) == in.size(0) && cached.size(1) == in.size(1) && cached.size(3) == in.size(3) &&
                      cached.size(4) == in.size(4),
                  prefix, ": cached history ", cached.sizes(), " does not match the chunk ", in.sizes(),
                  " (reset the cache between streams of different sizes)");
    }
    std::vector<at::Tensor> parts;
    if (have < history) {
      parts.push_back(at::zeros({in.size(0), in.size(1), history - have, in.size(3), in.size(4)}, in.options()));
    }
    if (have > 0) parts.push_back(cached);
    parts.push_back(in);
    at::Tensor full = at::cat(parts, 2);
    if (cache != nullptr) {
      // Keep the last `history` real frames (zero padding is not history).
      const int64_t keep = std::min(history, have + in.size(2));
      cache->Set(prefix, full.narrow(2, full.size(2) - keep, keep).clone());
    }
    in = std::move(full);
  }
  return Fp32(at::conv3d(in, w, b, {1, 1, 1}, {0, halo > 0 ? 0 : w.size(3) / 2, w.size(4) / 2}));
}

at::Tensor RmsNormChannels(const at::Tensor& x, const at::Tensor& gamma) {
  at::Tensor xf = x.to(at::kFloat);
  const double scale = std::sqrt(static_cast<double>(x.size(1)));
  at::Tensor denom = xf.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12);
  at::Tensor y = (xf / denom) * scale * gamma.to(at::kFloat);
  return y.to(x.scalar_type());
}

at::Tensor ResidualBlock(const at::Tensor& x, const WeightMap& weights, const std::string& prefix,
                         VaeFeatureCache* cache, const SpatialSplit* split) {
  // x: [B, Cin, T, H, W] -> [B, Cout, T, H, W]
  const bool has_shortcut = weights.count(prefix + ".shortcut.weight") != 0;
  at::Tensor h = has_shortcut ? CausalConv3d(x, weights, prefix + ".shortcut", nullptr) : x;
  at::Tensor y = at::silu(RmsNormChannels(x, W(weights, prefix + ".residual.0.gamma")));  // .1 = SiLU
  y = CausalConv3d(y, weights, prefix + ".residual.2", cache, split);
  y = at::silu(RmsNormChannels(y, W(weights, prefix + ".residual.3.gamma")));  // .4 = SiLU, .5 = Dropout
  y = CausalConv3d(y, weights, prefix + ".residual.6", cache, split);
  return y + h;
}

at::Tensor AttentionBlock(const at::Tensor& x, const WeightMap& weights, const std::string& prefix,
                          const SpatialSplit* split) {
  // x: [B, C, T, H, W]; per frame: [B·T, C, H, W]
  const auto& gamma = W(weights, prefix + ".norm.gamma");
  // [N, C', H', W'] -> tokens [N, H'·W', C']
  auto tokens = [](const at::Tensor& t) {
    return t.reshape({t.size(0), t.size(1), t.size(2) * t.size(3)}).permute({0, 2, 1});
  };
  at::Tensor y = PerFrame(x, [&](const at::Tensor& f) {
    const int64_t n = f.size(0), c = f.size(1), h = f.size(2), w = f.size(3);
    at::Tensor qkv = Conv2dSame(RmsNormChannels(f, gamma), weights, prefix + ".to_qkv");  // [N, 3C, H, W]
    qkv = AsDtypeOf(qkv, W(weights, prefix + ".to_qkv.weight"));
    at::Tensor q = qkv.narrow(1, 0, c);
    at::Tensor kv = qkv.narrow(1, c, 2 * c);  // [N, 2C, H, W]
    // With a split: this rank's query rows attend to the keys and values of the whole frame.
    if (split != nullptr) kv = split->parallel->GatherRows(kv.contiguous(), split->RowsAt(h));
    q = tokens(q);    // [N, HW, C]
    kv = tokens(kv);  // [N, H_all·W, 2C]
    at::Tensor o = Attention(q.unsqueeze(2).contiguous(), kv.narrow(2, 0, c).unsqueeze(2).contiguous(),
                             kv.narrow(2, c, c).unsqueeze(2).contiguous());  // [N, HW, 1, C]
    o = o.squeeze(2).permute({0, 2, 1}).reshape({n, c, h, w});
    return Conv2dSame(o, weights, prefix + ".proj");
  });
  return y + x;
}

at::Tensor Resample(const at::Tensor& x, const WeightMap& weights, const std::string& prefix, ResampleMode mode,
                    VaeFeatureCache* cache, const SpatialSplit* split) {
  TORCH_CHECK(x.dim() == 5, prefix, ": Resample expects [B, C, T, H, W], got ", x.sizes());
  const std::string time_key = prefix + ".time_conv";
  if (mode == ResampleMode::kUpsample2d || mode == ResampleMode::kUpsample3d) {
    at::Tensor y = x;
    if (mode == ResampleMode::kUpsample3d) {
      if (cache == nullptr) {
        // Whole sequence: frame 0 passes; frames 1.. are doubled with zero history.
        if (x.size(2) > 1) {
          at::Tensor rest =
              InterleaveTime(CausalConv3d(x.narrow(2, 1, x.size(2) - 1), weights, time_key, nullptr, split));
          y = at::cat({Fp32(x.narrow(2, 0, 1)), rest}, 2);
        }
      } else if (!cache->Has(prefix)) {
        TORCH_CHECK(x.size(2) == 1, prefix, ": the first chunk of upsample3d must hold one frame, got ", x.size(2));
        cache->Set(prefix, at::Tensor());  // first chunk passes through
      } else {
        y = InterleaveTime(CausalConv3d(x, weights, time_key, cache, split));
      }
    }
    return PerFrame(y, [&](const at::Tensor& f) {
      return Conv2dSame(Nearest2x(f), weights, prefix + ".resample.1", split);  // resample.0 = nearest-exact ×2
    });
  }

  // Down-sampling: per frame ZeroPad2d(right 1, bottom 1) + Conv2d(k3, stride 2).
  TORCH_CHECK(split == nullptr, prefix, ": down-sampling has no spatial-parallel path (the encoder runs on one rank)");
  const auto& w2 = W(weights, prefix + ".resample.1.weight");
  const auto& b2 = W(weights, prefix + ".resample.1.bias");
  at::Tensor y = PerFrame(x, [&](const at::Tensor& f) {
    return Fp32(at::conv2d(at::constant_pad_nd(AsDtypeOf(f, w2), {0, 1, 0, 1}, 0), w2, b2, kStride2x2, kNoPad2d));
  });
  if (mode == ResampleMode::kDownsample2d) return y;

  const auto& wt = W(weights, time_key + ".weight");
  const auto& bt = W(weights, time_key + ".bias");
  if (cache == nullptr) {
    // Whole sequence: frame 0 passes; frame j >= 1 = time_conv over frames (2j-2, 2j-1, 2j).
    if (y.size(2) < 3) return y.narrow(2, 0, 1);
    return at::cat({y.narrow(2, 0, 1), Fp32(at::conv3d(AsDtypeOf(y, wt), wt, bt, kTimeStride2, kNoPad3d))}, 2);
  }
  at::Tensor last = AsDtypeOf(y.narrow(2, y.size(2) - 1, 1), wt).clone();
  if (!cache->Has(time_key)) {
    TORCH_CHECK(y.size(2) == 1, prefix, ": the first chunk of downsample3d must hold one frame, got ", y.size(2));
    cache->Set(time_key, last);  // first chunk passes through
    return y;
  }
  at::Tensor history = at::cat({cache->Get(time_key), AsDtypeOf(y, wt)}, 2);
  at::Tensor out = Fp32(at::conv3d(history, wt, bt, kTimeStride2, kNoPad3d));
  cache->Set(time_key, last);
  return out;
}

at::Tensor Encoder3d(const at::Tensor& x, const WeightMap& weights, const VaeConfig& config,
                     VaeFeatureCache* cache) {
  // x: [B, 3, T, H, W]
  at::Tensor y = CausalConv3d(x, weights, "encoder.conv1", cache);
  for (const auto& l : internal::EncoderLayers(config)) y = ApplyLayer(y, weights, l, cache, nullptr);
  y = Middle(y, weights, "encoder.middle", cache);
  return Head(y, weights, "encoder.head", cache);  // [B, 2·z_dim, T', H/8, W/8]
}

at::Tensor Decoder3d(const at::Tensor& x, const WeightMap& weights, const VaeConfig& config,
                     VaeFeatureCache* cache, const SpatialSplit* split) {
  // x: [B, z_dim, T, h, w] (with a split: this rank's latent rows)
  at::Tensor y = CausalConv3d(x, weights, "decoder.conv1", cache, split);
  y = Middle(y, weights, "decoder.middle", cache, split);
  for (const auto& l : internal::DecoderLayers(config)) y = ApplyLayer(y, weights, l, cache, split);
  return Head(y, weights, "decoder.head", cache, split);  // [B, 3, T'', 8h, 8w]
}

}  // namespace liveavatar::models::vae
