// Module layout of WanVAE_: the ordered children of `encoder.downsamples` and `decoder.upsamples` with their
// channel counts, derived once from a VaeConfig. Both VaeWeightSpecs() and the forward pass walk these lists, so
// the key tree and the compute cannot disagree.
#pragma once

#include <string>
#include <vector>

#include "liveavatar/models/vae/config.h"

namespace liveavatar::models::vae::internal {

enum class LayerKind { kResidual, kAttention, kDownsample2d, kDownsample3d, kUpsample2d, kUpsample3d };

struct Layer {
  LayerKind kind;
  std::string prefix;  // e.g. "decoder.upsamples.3"
  int64_t in_dim;      // input channels
  int64_t out_dim;     // output channels (Resample up-sampling: in_dim / 2)
};

// Channels after encoder.conv1 / the encoder levels (= middle and head width).
int64_t EncoderOutDim(const VaeConfig& c);
// Channels of decoder.conv1 / the middle blocks, and of the head input.
int64_t DecoderInDim(const VaeConfig& c);
int64_t DecoderOutDim(const VaeConfig& c);

// Children of encoder.downsamples / decoder.upsamples in index order.
std::vector<Layer> EncoderLayers(const VaeConfig& c);
std::vector<Layer> DecoderLayers(const VaeConfig& c);

}  // namespace liveavatar::models::vae::internal
