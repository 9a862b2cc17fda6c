#include "liveavatar/models/vae/vae.h"

#include <algorithm>

#include <ATen/ATen.h>

#include "liveavatar/models/vae/layers.h"
#include "liveavatar/models/vae/weights.h"

namespace liveavatar::models::vae {

namespace {

// Latent normalisation constants as [1, z_dim, 1, 1, 1] fp32 on `device`: mean and 1/std (upstream `scale`).
std::pair<at::Tensor, at::Tensor> LatentScale(const VaeConfig& c, const c10::Device& device) {
  auto opts = at::TensorOptions().dtype(at::kDouble);
  at::Tensor mean = at::tensor(c.latents_mean, opts).to(at::kFloat).view({1, c.z_dim, 1, 1, 1}).to(device);
  at::Tensor std_t = at::tensor(c.latents_std, opts).to(at::kFloat).view({1, c.z_dim, 1, 1, 1}).to(device);
  return {mean, 1.0 / std_t};
}

const at::Tensor& ReferenceWeight(const WanVae& vae) { return W(vae.weights, "conv2.weight"); }

// Start offsets of tiles of `size` covering [0, length) with at least `overlap` shared cells; the last tile is
// aligned to the end.
std::vector<int64_t> TileStarts(int64_t length, int64_t size, int64_t overlap) {
  if (length <= size) return {0};
  std::vector<int64_t> starts;
  const int64_t stride = size - overlap;
  for (int64_t s = 0;; s += stride) {
    if (s + size >= length) {
      starts.push_back(length - size);
      break;
    }
    starts.push_back(s);
  }
  return starts;
}

// Blend weights along one axis of a tile of `n` output cells: linear ramps of `ramp` cells on the sides that
// touch a neighbouring tile, 1 elsewhere; always > 0.
at::Tensor Ramp(int64_t n, int64_t ramp, bool ramp_lo, bool ramp_hi) {
  at::Tensor i = at::arange(n, at::TensorOptions().dtype(at::kFloat)) + 0.5;
  at::Tensor w = at::ones({n}, at::TensorOptions().dtype(at::kFloat));
  if (ramp > 0) {
    if (ramp_lo) w = w * (i / static_cast<double>(ramp)).clamp_max(1.0);
    if (ramp_hi) w = w * ((static_cast<double>(n) - i) / static_cast<double>(ramp)).clamp_max(1.0);
  }
  return w;
}

struct Tile {
  int64_t y0, x0, h, w;
  bool top, bottom, left, right;  // whether a neighbour tile exists on that side
};

std::vector<Tile> MakeTiles(const VaeConfig& c, int64_t h, int64_t w) {
  if (!c.tile_decode) return {{0, 0, h, w, false, false, false, false}};
  const auto ys = TileStarts(h, c.tile_latent_size, c.tile_latent_overlap);
  const auto xs = TileStarts(w, c.tile_latent_size, c.tile_latent_overlap);
  std::vector<Tile> tiles;
  for (size_t a = 0; a < ys.size(); ++a) {
    for (size_t b = 0; b < xs.size(); ++b) {
      tiles.push_back({ys[a], xs[b], std::min(h, c.tile_latent_size), std::min(w, c.tile_latent_size), a > 0,
                       a + 1 < ys.size(), b > 0, b + 1 < xs.size()});
    }
  }
  return tiles;
}

}  // namespace

StatusOr<WanVae> LoadWanVae(const io::TensorStore& store, const VaeConfig& config, const LoadOptions& options) {
  if (options.dtype != at::kFloat && options.dtype != at::kBFloat16) {
    return Status::InvalidArgument(store.path() + ": the VAE runs in float32 or bfloat16 only");
  }
  LA_ASSIGN_OR_RETURN(WeightMap weights, LoadVaeWeights(store, config, options));
  return WanVae{config, std::move(weights)};
}

StatusOr<WanVae> LoadWanVae(const std::string& checkpoint_path, const std::string& config_path,
                            const LoadOptions& options) {
  LA_ASSIGN_OR_RETURN(VaeConfig config, LoadVaeConfig(config_path));
  LA_ASSIGN_OR_RETURN(std::shared_ptr<io::TensorStore> store, io::OpenTensorStore(checkpoint_path));
  return LoadWanVae(*store, config, options);
}

at::Tensor Encode(const WanVae& vae, const at::Tensor& video) {
  const VaeConfig& c = vae.config;
  TORCH_CHECK(video.dim() == 5 && video.size(0) == 1 && video.size(1) == 3,
              "VAE Encode expects video [1, 3, T, H, W], got ", video.sizes());
  const int64_t t = video.size(2);
  TORCH_CHECK(t >= 1 && (t - 1) % 4 == 0, "VAE Encode needs T = 1 + 4k frames, got ", t);
  const at::Tensor& ref = ReferenceWeight(vae);
  at::Tensor x = video.to(ref.device(), at::kFloat);

  // Frame 0 alone, then chunks of 4 frames, sharing one causal cache.
  VaeFeatureCache cache;
  std::vector<at::Tensor> outs;
  const int64_t chunks = 1 + (t - 1) / 4;
  for (int64_t i = 0; i < chunks; ++i) {
    at::Tensor chunk = i == 0 ? x.narrow(2, 0, 1) : x.narrow(2, 1 + 4 * (i - 1), 4);
    outs.push_back(Encoder3d(chunk, vae.weights, c, &cache));
  }
  at::Tensor out = outs.size() == 1 ? outs[0] : at::cat(outs, 2);
  outs.clear();
  at::Tensor mu = CausalConv3d(out, vae.weights, "conv1", nullptr).narrow(1, 0, c.z_dim);  // [mu | log_var]
  auto [mean, inv_std] = LatentScale(c, ref.device());
  return (mu - mean) * inv_std;
}

at::Tensor Decode(const WanVae& vae, const at::Tensor& latent, std::shared_ptr<SpatialParallel> parallel) {
  TORCH_CHECK(latent.dim() == 5 && latent.size(2) >= 1, "VAE Decode expects latent [1, z, n >= 1, h, w], got ",
              latent.sizes());
  StreamingDecoder decoder(&vae, std::move(parallel));
  return decoder.Decode(latent);
}

at::Tensor ClampVideo(const at::Tensor& video_raw) {
  TORCH_CHECK(video_raw.dim() == 5 && video_raw.size(0) == 1, "ClampVideo expects [1, 3, T, H, W], got ",
              video_raw.sizes());
  return video_raw.to(at::kFloat).clamp(-1.0, 1.0).squeeze(0);
}

StreamingDecoder::StreamingDecoder(const WanVae* vae, std::shared_ptr<SpatialParallel> parallel)
    : vae_(vae), parallel_(std::move(parallel)) {
  TORCH_CHECK(vae_ != nullptr, "StreamingDecoder needs a VAE");
  if (parallel_ != nullptr) {
    TORCH_CHECK(parallel_->world() >= 1 && parallel_->rank() >= 0 && parallel_->rank() < parallel_->world(),
                "StreamingDecoder: bad spatial split rank ", parallel_->rank(), " of ", parallel_->world());
  }
}

void StreamingDecoder::Reset() {
  caches_.clear();
  split_ = SpatialSplit();
  latent_h_ = -1;
  latent_w_ = -1;
  latents_seen_ = 0;
}

int64_t StreamingDecoder::cache_bytes() const {
  int64_t total = 0;
  for (const auto& c : caches_) total += c.bytes();
  return total;
}

std::pair<int64_t, int64_t> StreamingDecoder::LocalOutputRows(int64_t latent_h) const {
  const int64_t s = vae_->config.spatial_stride();
  if (!Split()) return {0, s * latent_h};
  const int world = parallel_->world(), rank = parallel_->rank();
  return {s * SplitOffset(latent_h, world, rank), s * SplitRows(latent_h, world)[static_cast<size_t>(rank)]};
}

at::Tensor StreamingDecoder::Decode(const at::Tensor& latents) {
  at::Tensor local = DecodeLocal(latents);
  if (!Split()) return local;
  const int64_t s = vae_->config.spatial_stride();
  if (local.size(2) == 0) return at::zeros({1, 3, 0, s * latent_h_, s * latent_w_}, local.options());
  // Every rank decoded the same number of frames; collect the row slabs of all ranks.
  std::vector<int64_t> rows = split_.latent_rows;
  for (auto& r : rows) r *= s;
  return parallel_->GatherRows(local.contiguous(), rows);
}

at::Tensor StreamingDecoder::DecodeLocal(const at::Tensor& latents) {
  const VaeConfig& c = vae_->config;
  TORCH_CHECK(latents.dim() == 5 && latents.size(0) == 1 && latents.size(1) == c.z_dim,
              "StreamingDecoder expects latents [1, ", c.z_dim, ", n, h, w], got ", latents.sizes());
  const int64_t n = latents.size(2), h = latents.size(3), w = latents.size(4);
  if (latent_h_ < 0) {
    if (Split()) {
      const Status split_ok = CheckSpatialSplit(c, h, parallel_->world());
      TORCH_CHECK(split_ok.ok(), split_ok.message());
      split_.parallel = parallel_.get();
      split_.latent_rows = SplitRows(h, parallel_->world());
    }
    latent_h_ = h;
    latent_w_ = w;
    caches_.assign(Split() ? 1 : MakeTiles(c, h, w).size(), VaeFeatureCache());
  }
  TORCH_CHECK(h == latent_h_ && w == latent_w_, "StreamingDecoder: latent size ", h, "x", w,
              " differs from the stream's ", latent_h_, "x", latent_w_, "; call Reset() first");
  const int64_t s = c.spatial_stride();
  const at::Tensor& ref = ReferenceWeight(*vae_);
  if (n == 0) return at::zeros({1, 3, 0, LocalOutputRows(h).second, s * w}, ref.options().dtype(at::kFloat));

  // x = conv2(z · std + mean) (upstream divides by scale[1] = 1/std); 1×1×1, so all latents at once.
  auto [mean, inv_std] = LatentScale(c, ref.device());
  at::Tensor z = latents.to(ref.device(), at::kFloat) / inv_std + mean;
  at::Tensor x = CausalConv3d(z, vae_->weights, "conv2", nullptr);

  std::vector<at::Tensor> frames;
  for (int64_t i = 0; i < n; ++i) frames.push_back(DecodeFrame(x.narrow(2, i, 1)));
  latents_seen_ += n;
  return frames.size() == 1 ? frames[0] : at::cat(frames, 2);
}

at::Tensor StreamingDecoder::DecodeFrame(const at::Tensor& x) {
  const VaeConfig& c = vae_->config;
  if (Split()) {
    // This rank's latent rows; the layers fetch halo rows and the attention's keys/values from the others.
    const int rank = parallel_->rank();
    const at::Tensor slab = x.narrow(3, SplitOffset(latent_h_, parallel_->world(), rank),
                                     split_.latent_rows[static_cast<size_t>(rank)]);
    return Decoder3d(slab, vae_->weights, c, &caches_[0], &split_);
  }
  const auto tiles = MakeTiles(c, latent_h_, latent_w_);
  if (tiles.size() == 1) return Decoder3d(x, vae_->weights, c, &caches_[0]);

  const int64_t s = c.spatial_stride();
  const int64_t ramp = s * c.tile_latent_overlap;
  at::Tensor out, weight_sum;
  for (size_t k = 0; k < tiles.size(); ++k) {
    const Tile& t = tiles[k];
    at::Tensor crop = x.narrow(3, t.y0, t.h).narrow(4, t.x0, t.w);
    at::Tensor y = Decoder3d(crop, vae_->weights, c, &caches_[k]);  // [1, 3, F, s·h, s·w]
    if (!out.defined()) {
      out = at::zeros({1, y.size(1), y.size(2), s * latent_h_, s * latent_w_}, y.options());
      weight_sum = at::zeros({1, 1, 1, s * latent_h_, s * latent_w_}, y.options());
    }
    at::Tensor mask = at::outer(Ramp(s * t.h, ramp, t.top, t.bottom), Ramp(s * t.w, ramp, t.left, t.right))
                          .to(y.device())
                          .view({1, 1, 1, s * t.h, s * t.w});
    out.narrow(3, s * t.y0, s * t.h).narrow(4, s * t.x0, s * t.w).add_(y * mask);
    weight_sum.narrow(3, s * t.y0, s * t.h).narrow(4, s * t.x0, s * t.w).add_(mask);
  }
  return out / weight_sum;
}

}  // namespace liveavatar::models::vae
