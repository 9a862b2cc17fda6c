// Forward functions of the Wan2.1 VAE modules (`wan/modules/vae2_1.py`), one per reference module, reading
// weights from a WeightMap under the module's checkpoint prefix. Activations are [B, C, T, H, W].
//
// Precision: every convolution and the attention run in the weights' dtype (bf16 weights: bf16 inputs and
// bf16 kernel outputs, like upstream's bf16 VAE); the activations between them (RMS_norm, SiLU, residual adds,
// interleaving) are fp32, and every function returns fp32. RMS_norm computes in fp32.
//
// Causal state: every function that has temporal state takes a VaeFeatureCache*:
//   * cache == nullptr: the input is the WHOLE sequence (zero left padding in time, upsample3d/downsample3d
//     treat frame 0 specially);
//   * cache != nullptr: the input is the next chunk of a chunked pass; the cache supplies the history and is
//     updated. Feeding frame 0 alone first (encoder) / one latent at a time (decoder) and concatenating the
//     chunk outputs equals the whole-sequence result (golden README §2.1).
//
// Spatial split (spatial_parallel.h): the decoder-side functions take an optional `const SpatialSplit* split`.
// nullptr (the default) is the whole frame and the behaviour above, bit for bit. With a split, x holds this rank's
// rows of the frame; every conv with a kernel taller than one row exchanges kh/2 halo rows with the neighbouring
// ranks (zero padding only at the true image border), the attention gathers the keys/values of all rows, and the
// result is this rank's rows of the whole-frame result. Every rank of the split must make the same calls.
//
// Thread safety: stateless apart from the caller's cache.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

#include "liveavatar/models/vae/config.h"
#include "liveavatar/models/vae/feature_cache.h"
#include "liveavatar/models/vae/spatial_parallel.h"
#include "liveavatar/models/weights.h"

namespace liveavatar::models::vae {

// CausalConv3d with kernel (kt, kh, kw) read from `prefix`.weight: zero-pads time by kt−1 frames on the left
// (or uses the cached last kt−1 input frames), space symmetrically by kh/2, kw/2. Stride 1.
// x: [B, Cin, T, H, W] -> [B, Cout, T, H, W]. With a split and kh > 1 the input gets kh/2 halo rows from the
// neighbours instead of the row padding (the cache then holds halo-padded frames).
at::Tensor CausalConv3d(const at::Tensor& x, const WeightMap& weights, const std::string& prefix,
                        VaeFeatureCache* cache, const SpatialSplit* split = nullptr);

// RMS_norm over the channel dim 1: x / max(||x||₂, 1e-12) · sqrt(C) · gamma (gamma [C,1,1,1] or [C,1,1]).
// Computed in fp32, returned in x's dtype.
at::Tensor RmsNormChannels(const at::Tensor& x, const at::Tensor& gamma);

// ResidualBlock: shortcut (1×1×1 conv when in ≠ out)
//               + [RMS_norm, SiLU, CausalConv3d, RMS_norm, SiLU, (Dropout), CausalConv3d].
// x: [B, Cin, T, H, W] -> [B, Cout, T, H, W].
at::Tensor ResidualBlock(const at::Tensor& x, const WeightMap& weights, const std::string& prefix,
                         VaeFeatureCache* cache, const SpatialSplit* split = nullptr);

// AttentionBlock: per frame, RMS_norm, 1×1 to_qkv, single-head softmax attention over the H·W positions,
// 1×1 proj, + x. x: [B, C, T, H, W] -> same. With a split, this rank's query rows attend to the gathered keys and
// values of every rank's rows.
at::Tensor AttentionBlock(const at::Tensor& x, const WeightMap& weights, const std::string& prefix,
                          const SpatialSplit* split = nullptr);

enum class ResampleMode { kUpsample2d, kUpsample3d, kDownsample2d, kDownsample3d };

// Resample:
//   upsample2d: per frame nearest ×2 + Conv2d(k3, pad 1, C -> C/2)            [B,C,T,H,W] -> [B,C/2,T,2H,2W]
//   upsample3d: time_conv (C -> 2C) doubles every frame but the first, then upsample2d
//               whole sequence: T -> 1 + 2(T−1); chunked: first chunk T -> T, later chunks T -> 2T
//   downsample2d: per frame ZeroPad2d(0,1,0,1) + Conv2d(k3, stride 2)          [B,C,T,H,W] -> [B,C,T,H/2,W/2]
//   downsample3d: downsample2d, then time_conv (k (3,1,1), stride 2) over (2j−2, 2j−1, 2j); frame 0 passes
//               whole sequence: T = 1 + 2k -> 1 + k; chunked: first chunk passes, later chunks of 2m -> m
// REQUIRES (chunked): the first chunk of a 3-D resample holds exactly one frame.
// REQUIRES: split == nullptr for the down-sampling modes (the encoder has no parallel path).
at::Tensor Resample(const at::Tensor& x, const WeightMap& weights, const std::string& prefix, ResampleMode mode,
                    VaeFeatureCache* cache, const SpatialSplit* split = nullptr);

// Encoder3d: conv1, downsamples, middle (res, attn, res), head (RMS_norm, SiLU, CausalConv3d -> 2·z_dim).
// x: [B, 3, T, H, W] -> [B, 2·z_dim, T', H/8, W/8] (T' as per the temporal down-sampling above).
at::Tensor Encoder3d(const at::Tensor& x, const WeightMap& weights, const VaeConfig& config,
                     VaeFeatureCache* cache);

// Decoder3d: conv1, middle, upsamples, head (RMS_norm, SiLU, CausalConv3d -> 3).
// x: [B, z_dim, T, h, w] (after conv2) -> [B, 3, T'', 8h, 8w].
// REQUIRES (chunked): one latent frame per call, as upstream (the first call's up-sampling passes through).
// With a split: x holds this rank's latent rows split->latent_rows[rank] and the result its 8× output rows.
at::Tensor Decoder3d(const at::Tensor& x, const WeightMap& weights, const VaeConfig& config,
                     VaeFeatureCache* cache, const SpatialSplit* split = nullptr);

}  // namespace liveavatar::models::vae
