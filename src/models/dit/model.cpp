#include "liveavatar/models/dit/model.h"

#include <algorithm>
#include <filesystem>
#include <vector>

#include <ATen/ATen.h>

#include "liveavatar/io/checkpoint_dir.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/attention.h"
#include "liveavatar/models/dit/audio_encoder.h"
#include "liveavatar/models/dit/rope.h"
#include "liveavatar/models/dit/weights.h"
#include "liveavatar/models/ops.h"

namespace liveavatar::models::dit {

namespace {

bool StartsWith(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool EndsWith(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// Weights that stay fp32 in a bf16 model (upstream autocast-fp32 islands).
bool IsFp32Island(const std::string& key) {
  return StartsWith(key, "time_embedding.") || StartsWith(key, "time_projection.") || StartsWith(key, "head.") ||
         StartsWith(key, "casual_audio_encoder.") || EndsWith(key, ".modulation") || EndsWith(key, "norm3.weight") ||
         EndsWith(key, "norm3.bias");
}

}  // namespace

CausalWanS2V::CausalWanS2V(DitConfig config, WeightMap weights, c10::ScalarType dtype, c10::Device device)
    : config_(std::move(config)), weights_(std::move(weights)), dtype_(dtype), device_(device) {
  attention_ = [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) { return Attention(q, k, v); };
}

c10::ScalarType CausalWanS2V::WeightDtype(const std::string& key, c10::ScalarType dtype) {
  return IsFp32Island(key) ? at::kFloat : dtype;
}

StatusOr<CausalWanS2V> CausalWanS2V::Create(const DitConfig& config, WeightMap weights, c10::ScalarType dtype,
                                            const c10::Device& device) {
  return CreateImpl(config, std::move(weights), dtype, device, /*external_blocks=*/false);
}

StatusOr<CausalWanS2V> CausalWanS2V::CreateWithExternalBlocks(const DitConfig& config, WeightMap weights,
                                                              c10::ScalarType dtype, const c10::Device& device) {
  return CreateImpl(config, std::move(weights), dtype, device, /*external_blocks=*/true);
}

StatusOr<CausalWanS2V> CausalWanS2V::CreateImpl(const DitConfig& config, WeightMap weights, c10::ScalarType dtype,
                                                const c10::Device& device, bool external_blocks) {
  LA_RETURN_IF_ERROR(config.Validate());
  if (dtype != at::kFloat && dtype != at::kBFloat16) {
    return Status::InvalidArgument("CausalWanS2V: unsupported dtype (use float32 or bfloat16)");
  }
  std::string missing;
  for (const auto& spec : DitWeightSpecs(config)) {
    if (external_blocks && StartsWith(spec.key, "blocks.")) continue;
    if (!weights.count(spec.key)) missing += "\n    " + spec.key;
  }
  if (!missing.empty()) return Status::InvalidArgument("CausalWanS2V: weight map lacks key(s):" + missing);
  for (auto& [key, t] : weights) {
    t = t.to(device, WeightDtype(key, dtype)).contiguous();
  }
  return CausalWanS2V(config, std::move(weights), dtype, device);
}

Status CausalWanS2V::set_sequence_parallel(std::shared_ptr<SequenceParallel> sp) {
  if (sp && sp->world() > config_.num_heads) {
    return Status::InvalidArgument("CausalWanS2V: sequence parallelism over " + std::to_string(sp->world()) +
                                   " ranks needs at least as many attention heads (the model has " +
                                   std::to_string(config_.num_heads) + ")");
  }
  sp_ = std::move(sp);
  return Status::Ok();
}

at::Tensor CausalWanS2V::ChunkTokenRows(int64_t n, int64_t rows_per_frame) const {
  const int64_t chunk = sp_->ChunkLength(n);
  std::vector<int64_t> rows(static_cast<size_t>(chunk));
  for (int64_t j = 0; j < chunk; ++j) rows[j] = std::min(chunk * sp_->rank() + j, n - 1) / rows_per_frame;
  return at::tensor(rows, at::TensorOptions().dtype(at::kLong)).to(device_);
}

at::Tensor CausalWanS2V::EnterSequenceParallel(const char* who, const runtime::DitStepCache& cache, int64_t n,
                                               int64_t rows_per_frame, at::Tensor* x) const {
  const int64_t heads = sp_ ? sp_->LocalHeads(config_.num_heads) : config_.num_heads;
  TORCH_CHECK(cache.geometry().num_heads == heads, who, ": cache has ", cache.geometry().num_heads,
              " heads, this rank attends with ", heads);
  if (!sp_) return at::Tensor();
  *x = sp_->Scatter(*x);
  return ChunkTokenRows(n, rows_per_frame);
}

runtime::DitCacheGeometry CausalWanS2V::CacheGeometry(int64_t latent_h, int64_t latent_w,
                                                      int64_t latent_frames_per_clip, int64_t cond_capacity) const {
  runtime::DitCacheGeometry g;
  g.num_layers = config_.num_layers;
  g.num_heads = sp_ ? sp_->LocalHeads(config_.num_heads) : config_.num_heads;
  g.head_dim = config_.head_dim();
  g.frame_seqlen = config_.FrameSeqLen(latent_h, latent_w);
  g.ring_tokens = latent_frames_per_clip * g.frame_seqlen;
  g.cond_capacity = cond_capacity > 0 ? cond_capacity
                                      : runtime::SinkTokenCount(latent_h, latent_w, config_.patch_size[1],
                                                                config_.patch_size[2]);
  return g;
}

void CausalWanS2V::TimeConditioning(const at::Tensor& t, at::Tensor* e, at::Tensor* e0) const {
  auto sinusoid = SinusoidalEmbedding(t.to(device_), config_.freq_dim);
  *e = TimeEmbedding(weights_, sinusoid);
  *e0 = TimeProjection(weights_, *e);
}

at::Tensor CausalWanS2V::Block(
    int64_t i, const at::Tensor& x, const at::Tensor& mod_rows, int64_t rows_per_frame, const at::Tensor& token_rows,
    const at::Tensor& text,
    const std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>& self_attn) const {
  const auto& c = config_;
  const std::string b = "blocks." + std::to_string(i);
  const int64_t n = x.size(1);
  // Per-token rows (a sequence-parallel chunk): every token is its own "frame" of one row.
  const bool per_token = token_rows.defined();
  TORCH_CHECK(!per_token || token_rows.numel() == n, "Block: ", token_rows.numel(), " token rows for ", n, " tokens");
  const int64_t frames = per_token ? n : mod_rows.size(0);
  if (per_token) rows_per_frame = 1;
  // m_k = modulation[0, k] + e0[row, k]: [F, 6, dim] fp32.
  const auto m = W(weights_, b + ".modulation").to(at::kFloat) + mod_rows;
  auto chunk = [&](int64_t k) {  // [frames, dim]
    auto r = m.select(1, k);
    return per_token ? r.index_select(0, token_rows) : r;
  };
  auto xf = x.to(at::kFloat);
  // 1-4: self-attention with gate.
  {
    auto y = Modulate(xf.view({frames, rows_per_frame, c.dim}), chunk(0), chunk(1), c.eps)
                 .reshape({1, n, c.dim})
                 .to(dtype_);
    auto q = RmsNorm(Linear(y, weights_, b + ".self_attn.q"), W(weights_, b + ".self_attn.norm_q.weight"), c.eps);
    auto k = RmsNorm(Linear(y, weights_, b + ".self_attn.k"), W(weights_, b + ".self_attn.norm_k.weight"), c.eps);
    auto v = Linear(y, weights_, b + ".self_attn.v");
    const int64_t h = c.num_heads, d = c.head_dim();
    auto o = self_attn(q.view({1, n, h, d}), k.view({1, n, h, d}), v.view({1, n, h, d}));
    o = Linear(o.reshape({1, n, c.dim}).to(dtype_), weights_, b + ".self_attn.o").to(at::kFloat);
    xf = xf + (o.view({frames, rows_per_frame, c.dim}) * chunk(2).unsqueeze(1)).view({1, n, c.dim});
  }
  // 5: text cross-attention on norm3(x), no gate.
  {
    auto y = LayerNormAffine(xf.to(dtype_), W(weights_, b + ".norm3.weight"), W(weights_, b + ".norm3.bias"), c.eps)
                 .to(dtype_);
    xf = xf + CrossAttention(weights_, c, b + ".cross_attn", y, text, attention_).to(at::kFloat);
  }
  // 6: FFN with gate.
  {
    auto y = Modulate(xf.view({frames, rows_per_frame, c.dim}), chunk(3), chunk(4), c.eps)
                 .reshape({1, n, c.dim})
                 .to(dtype_);
    auto f = Ffn(weights_, b + ".ffn", y).to(at::kFloat);
    xf = xf + (f.view({frames, rows_per_frame, c.dim}) * chunk(5).unsqueeze(1)).view({1, n, c.dim});
  }
  return xf;
}

void CausalWanS2V::SinkPrefill(const SinkInputs& in, runtime::DitStepCache& cache) const {
  const auto& c = config_;
  TORCH_CHECK(in.ref_latents.dim() == 5 && in.ref_latents.size(2) == 1, "SinkPrefill: ref_latents ",
              in.ref_latents.sizes(), " must be [1, C, 1, H, W]");
  TORCH_CHECK(cache.num_layers() == c.num_layers, "SinkPrefill: cache has ", cache.num_layers(), " layers");
  const int64_t hp = in.ref_latents.size(3) / c.patch_size[1];
  const int64_t wp = in.ref_latents.size(4) / c.patch_size[2];
  const auto& mask = W(weights_, "trainable_cond_mask.weight");
  // Reference tokens (+ mask row 1), FramePack motion tokens (+ mask row 2).
  auto ref_conv = PatchConv(weights_, "patch_embedding", in.ref_latents.to(device_));
  Tap("patch_embedding", ref_conv);
  auto ref = FlattenTokens(ref_conv) + mask[1];
  int64_t h2 = 0, w2 = 0, h4 = 0, w4 = 0;
  auto motion = FramePack(weights_, in.motion_latents.to(device_), &h2, &w2, &h4, &w4);
  Tap("frame_packer.tokens", motion);
  motion = motion + mask[2];
  auto x = at::cat({ref, motion}, 1).to(at::kFloat);
  const int64_t n = x.size(1);
  // Everything at t = 0.
  at::Tensor e, e0;
  TimeConditioning(at::zeros({1}, at::kFloat), &e, &e0);
  auto text = TextEmbedding(weights_, c, in.context.to(device_));
  Tap("text_embedding", text);
  auto groups = SinkRopeGroups(kSinkRefFrame, hp, wp, h2, w2, h4, w4);
  const auto rope = ComputeRopeFactors(groups, c.head_dim(), device_);
  TORCH_CHECK(rope.size() == n, "SinkPrefill: RoPE grid of ", rope.size(), " tokens != ", n, " sink tokens");
  Tap("rope.sink_freqs", RopeFactorsDebug(rope, c.num_heads));
  // Sequence parallel: this rank's chunk of the tokens, one modulation row (t = 0) for all of them.
  const at::Tensor token_rows = EnterSequenceParallel("SinkPrefill", cache, n, n, &x);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    if (hooks_.before) hooks_.before(i);
    SequenceParallel::AttentionInner inner = [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
      cache.WriteCond(i, k, v);  // un-rotated keys
      return attention_(ApplyRope(q, rope), ApplyRope(k, rope), v);
    };
    auto self_attn = [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
      return sp_ ? sp_->Attention(q, k, v, n, inner) : inner(q, k, v);
    };
    x = Block(i, x, e0, n, token_rows, text, self_attn);
    if (!sp_) Tap("block" + std::to_string(i) + ".out", x);
    if (hooks_.after) hooks_.after(i);
  }
}

at::Tensor CausalWanS2V::StreamBlock(const StreamInputs& in, runtime::DitStepCache& cache) const {
  const auto& c = config_;
  TORCH_CHECK(in.x.dim() == 4 && in.x.size(0) == c.in_dim, "StreamBlock: x ", in.x.sizes(), " must be [",
              c.in_dim, ", F, H, W]");
  TORCH_CHECK(cache.num_layers() == c.num_layers, "StreamBlock: cache has ", cache.num_layers(), " layers");
  const int64_t frames = in.x.size(1);
  const int64_t hp = in.x.size(2) / c.patch_size[1];
  const int64_t wp = in.x.size(3) / c.patch_size[2];
  const int64_t fs = hp * wp;
  const int64_t n = frames * fs;
  // Audio tokens of this block (fp32).
  auto audio = EncodeBlockAudio(weights_, c, in.audio_input.to(device_), kAudioPrefixFrames, frames);
  Tap("casual_audio_encoder.0", audio.all.global);
  Tap("casual_audio_encoder.1", audio.all.local);
  // Embeddings.
  auto xe = PatchConv(weights_, "patch_embedding", in.x.unsqueeze(0).to(device_));
  Tap("patch_embedding", xe);
  at::Tensor cond = in.cond_states.defined()
                        ? in.cond_states.to(device_)
                        : at::zeros({1, c.cond_dim, frames, in.x.size(2), in.x.size(3)},
                                    in.x.options().device(device_));
  auto ce = PatchConv(weights_, "cond_encoder", cond);
  Tap("cond_encoder", ce);
  auto x = (FlattenTokens(xe + ce) + W(weights_, "trainable_cond_mask.weight")[0]).to(at::kFloat);
  // Time conditioning: (t_0..t_{F-1}, 0 × F).
  auto t = in.timestep.to(device_, at::kFloat).reshape({-1});
  TORCH_CHECK(t.numel() == frames, "StreamBlock: timestep has ", t.numel(), " values for ", frames, " frames");
  at::Tensor e, e0;
  TimeConditioning(at::cat({t, at::zeros_like(t)}), &e, &e0);
  Tap("time_embedding", e);
  Tap("time_projection", e0.reshape({e0.size(0), -1}));
  auto text = TextEmbedding(weights_, c, in.context.to(device_));
  Tap("text_embedding", text);
  // RoPE: block tokens at absolute frame F0; cond keys with the rolling-sink reference frame.
  const int64_t f0 = in.current_start / fs;
  const auto block_rope = ComputeRopeFactors({BlockRopeGroup(f0, frames, hp, wp)}, c.head_dim(), device_);
  Tap("rope.noisy_freqs", RopeFactorsDebug(block_rope, c.num_heads));
  const int64_t rolled = RollingSinkShift(f0, in.relative_dist, kSinkRefFrame);
  const int64_t lat_h = in.x.size(2), lat_w = in.x.size(3);
  const auto cond_groups = SinkRopeGroups(kSinkRefFrame + rolled, hp, wp, lat_h / 4, lat_w / 4, lat_h / 8, lat_w / 8);
  const auto cond_rope = ComputeRopeFactors(cond_groups, c.head_dim(), device_);
  Tap("rope.cond_freqs", RopeFactorsDebug(cond_rope, c.num_heads));
  const auto plan = runtime::PlanRing(in.current_start, n, cache.geometry().ring_tokens);
  auto mod_rows = e0.narrow(0, 0, frames);
  // Sequence parallel: this rank's chunk of the tokens, modulated per token.
  const at::Tensor token_rows = EnterSequenceParallel("StreamBlock", cache, n, fs, &x);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    if (hooks_.before) hooks_.before(i);
    SequenceParallel::AttentionInner inner = [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
      auto& layer = cache.layer(i);
      auto qr = ApplyRope(q, block_rope);
      auto kr = ApplyRope(k, block_rope);
      cache.WriteRing(i, plan, kr, v);
      const int64_t cond_end = layer.cond_end;
      TORCH_CHECK(cond_end == 0 || cond_end == cond_rope.size(), "StreamBlock: layer ", i, " cond_end ", cond_end,
                  " != sink token count ", cond_rope.size());
      at::Tensor keys = layer.k.narrow(1, 0, plan.active_end);
      at::Tensor values = layer.v.narrow(1, 0, plan.active_end);
      if (cond_end > 0) {
        auto ck = ApplyRope(layer.cond_k.narrow(1, 0, cond_end), cond_rope);
        keys = at::cat({keys, ck.to(keys.scalar_type())}, 1);
        values = at::cat({values, layer.cond_v.narrow(1, 0, cond_end)}, 1);
      }
      // The cache may live elsewhere (offloaded KV): bring the attended rows to the model's device and dtype.
      return attention_(qr.to(dtype_), keys.to(device_, dtype_), values.to(device_, dtype_));
    };
    auto self_attn = [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
      return sp_ ? sp_->Attention(q, k, v, n, inner) : inner(q, k, v);
    };
    x = Block(i, x, mod_rows, fs, token_rows, text, self_attn);
    if (!sp_) Tap("block" + std::to_string(i) + ".out", x);
    const int64_t inj = c.InjectorIndex(i);
    if (inj >= 0) {
      // The injector attends per frame: it sees the whole (gathered) sequence, as upstream.
      auto full = sp_ ? sp_->Gather(x, n) : x;
      full = AudioInjector(weights_, c, inj, full.view({frames, fs, c.dim}), audio.global, audio.local, attention_,
                           dtype_)
                 .view({1, n, c.dim});
      Tap("block" + std::to_string(i) + ".after_audio", full);
      x = sp_ ? sp_->Scatter(full) : full;
    }
    x = x.to(dtype_).to(at::kFloat);  // block output in the model dtype (no-op in fp32)
    if (hooks_.after) hooks_.after(i);
  }
  if (sp_) x = sp_->Gather(x, n);
  auto head = Head(weights_, c, x, e.narrow(0, 0, frames));
  Tap("head", head);
  return Unpatchify(c, head, frames, hp, wp);
}

std::map<std::string, std::vector<int64_t>> DitBaseShapes(const DitConfig& config) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& s : DitWeightSpecs(config)) shapes[s.key] = s.shape;
  return shapes;
}

StatusOr<DitCheckpoint> LoadDitCheckpoint(const std::string& dir, const DitLoadOptions& options) {
  DitCheckpoint ckpt;
  const io::CheckpointDir layout = io::CheckpointDir::At(dir, "");
  LA_ASSIGN_OR_RETURN(ckpt.config, LoadDitConfig(layout.dit_config));
  LA_ASSIGN_OR_RETURN(auto store, io::OpenTensorStore(layout.dit_weights));
  LoadOptions lo;
  lo.device = options.device;
  lo.dtype_of = [dtype = options.dtype](const std::string& key) { return CausalWanS2V::WeightDtype(key, dtype); };
  if (options.lora != nullptr) {
    const LoraApplier* lora = options.lora;
    const c10::Device device = options.device;
    lo.transform = [lora, device](const std::string& key, const at::Tensor& stored) {
      return lora->Apply(key, stored, device);
    };
  }
  LA_ASSIGN_OR_RETURN(ckpt.weights, LoadWeights(*store, DitWeightSpecs(ckpt.config), lo));
  return ckpt;
}

}  // namespace liveavatar::models::dit
