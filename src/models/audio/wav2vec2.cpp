#include "liveavatar/models/audio/wav2vec2.h"

#include <algorithm>
#include <filesystem>

#include <ATen/ATen.h>

#include "liveavatar/models/attention.h"
#include "liveavatar/models/ops.h"

namespace liveavatar::models::audio {

namespace fs = std::filesystem;

namespace {

const char kPrefix[] = "wav2vec2.";
const char kPosConv[] = "wav2vec2.encoder.pos_conv_embed.conv.";
// Feature-encoder norms are nn.LayerNorm / nn.GroupNorm with torch's default eps, not config.layer_norm_eps.
constexpr double kConvNormEps = 1e-5;
constexpr int64_t kAutoFeatureChunkFrames = 3000;
constexpr int64_t kAttentionLogitBudgetBytes = 256ll << 20;

std::string L(int64_t i) { return std::string(kPrefix) + "encoder.layers." + std::to_string(i) + "."; }

at::Tensor Gelu(const at::Tensor& x) { return at::gelu(x); }  // erf form ("gelu")

// LayerNorm over the last dim with the model's weights, cast back to the residual dtype.
at::Tensor LayerNorm(const at::Tensor& x, const WeightMap& w, const std::string& prefix, double eps) {
  return LayerNormAffine(x, W(w, prefix + ".weight"), W(w, prefix + ".bias"), eps).to(x.scalar_type());
}

at::Tensor OptionalBias(const WeightMap& w, const std::string& key) {
  auto it = w.find(key);
  return it == w.end() ? at::Tensor() : it->second;
}

}  // namespace

std::vector<WeightSpec> Wav2Vec2WeightSpecs(const Wav2Vec2Config& cfg) {
  std::vector<WeightSpec> specs;
  const std::string p = kPrefix;
  auto add = [&specs](std::string key, std::vector<int64_t> shape, std::string init = "normal", bool optional = false) {
    specs.push_back(WeightSpec{std::move(key), std::move(shape), optional, std::move(init)});
  };
  auto norm = [&](const std::string& prefix, int64_t dim) {
    add(prefix + ".weight", {dim}, "ones");
    add(prefix + ".bias", {dim}, "zeros");
  };
  int64_t in_dim = 1;
  for (size_t i = 0; i < cfg.conv_dim.size(); ++i) {
    const std::string c = p + "feature_extractor.conv_layers." + std::to_string(i) + ".";
    add(c + "conv.weight", {cfg.conv_dim[i], in_dim, cfg.conv_kernel[i]});
    if (cfg.conv_bias) add(c + "conv.bias", {cfg.conv_dim[i]}, "zeros");
    if (cfg.feat_extract_norm == "layer" || i == 0) norm(c + "layer_norm", cfg.conv_dim[i]);
    in_dim = cfg.conv_dim[i];
  }
  const int64_t h = cfg.hidden_size;
  norm(p + "feature_projection.layer_norm", in_dim);
  add(p + "feature_projection.projection.weight", {h, in_dim});
  add(p + "feature_projection.projection.bias", {h}, "zeros");
  add(std::string(kPosConv) + "weight_g", {1, 1, cfg.num_conv_pos_embeddings}, "ones");
  add(std::string(kPosConv) + "weight_v", {h, h / cfg.num_conv_pos_embedding_groups, cfg.num_conv_pos_embeddings});
  add(std::string(kPosConv) + "bias", {h}, "zeros");
  norm(p + "encoder.layer_norm", h);
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    const std::string l = L(i);
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      add(l + "attention." + proj + ".weight", {h, h});
      add(l + "attention." + proj + ".bias", {h}, "zeros");
    }
    norm(l + "layer_norm", h);
    add(l + "feed_forward.intermediate_dense.weight", {cfg.intermediate_size, h});
    add(l + "feed_forward.intermediate_dense.bias", {cfg.intermediate_size}, "zeros");
    add(l + "feed_forward.output_dense.weight", {h, cfg.intermediate_size});
    add(l + "feed_forward.output_dense.bias", {h}, "zeros");
    norm(l + "final_layer_norm", h);
  }
  add(p + "masked_spec_embed", {h}, "normal", /*optional=*/true);  // SpecAugment (training only), ignored
  if (cfg.vocab_size > 0) {
    add("lm_head.weight", {cfg.vocab_size, h}, "normal", /*optional=*/true);
    add("lm_head.bias", {cfg.vocab_size}, "zeros", /*optional=*/true);
  }
  return specs;
}

at::Tensor NormalizeWaveform(const at::Tensor& wav) {
  TORCH_CHECK(wav.dim() == 1 || (wav.dim() == 2 && wav.size(0) == 1), "NormalizeWaveform expects [N] or [1, N]");
  const at::Tensor x = wav.reshape({1, -1}).to(at::kDouble);
  const at::Tensor mean = x.mean();
  const at::Tensor var = (x - mean).pow(2).mean();  // population variance (numpy .var())
  return ((x - mean) / at::sqrt(var + 1e-7)).to(at::kFloat);
}

StatusOr<Wav2Vec2> Wav2Vec2::FromStore(const Wav2Vec2Config& cfg, const io::TensorStore& store,
                                       const LoadOptions& options) {
  LA_RETURN_IF_ERROR(cfg.Validate());
  std::vector<WeightSpec> specs = Wav2Vec2WeightSpecs(cfg);
  // transformers >= 4.46 may save the weight norm as a parametrization: original0 = g, original1 = v.
  const std::string g_key = std::string(kPosConv) + "weight_g", v_key = std::string(kPosConv) + "weight_v";
  const std::string g_param = std::string(kPosConv) + "parametrizations.weight.original0";
  const std::string v_param = std::string(kPosConv) + "parametrizations.weight.original1";
  const bool parametrized = !store.Contains(g_key) && store.Contains(g_param);
  if (parametrized) {
    for (auto& s : specs) {
      if (s.key == g_key) s.key = g_param;
      if (s.key == v_key) s.key = v_param;
    }
  }
  LA_ASSIGN_OR_RETURN(WeightMap weights, LoadWeights(store, specs, options));
  // Materialise the weight-normed positional conv: w = g · v / ||v||, norm over dims (0, 1) per kernel tap.
  const at::Tensor g = weights.at(parametrized ? g_param : g_key).to(at::kFloat);
  const at::Tensor v = weights.at(parametrized ? v_param : v_key).to(at::kFloat);
  const std::vector<int64_t> dims = {0, 1};
  const at::Tensor norm = v.pow(2).sum(at::IntArrayRef(dims), /*keepdim=*/true).sqrt();
  const auto dtype = weights.at(std::string(kPosConv) + "bias").scalar_type();
  weights[std::string(kPosConv) + "weight"] = (g * v / norm).to(dtype);
  weights.erase(parametrized ? g_param : g_key);
  weights.erase(parametrized ? v_param : v_key);
  weights.erase(std::string(kPrefix) + "masked_spec_embed");
  const bool has_w = weights.count("lm_head.weight") > 0, has_b = weights.count("lm_head.bias") > 0;
  if (has_w != has_b) {
    return Status::Corruption(store.path() + ": lm_head.weight and lm_head.bias must be both present or both absent");
  }
  return Wav2Vec2(cfg, std::move(weights));
}

StatusOr<Wav2Vec2> Wav2Vec2::Load(const std::string& dir, const LoadOptions& options) {
  LA_ASSIGN_OR_RETURN(Wav2Vec2Config cfg, LoadWav2Vec2Config(dir));
  std::string weights_path;
  for (const char* name : {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"}) {
    if (fs::exists(fs::path(dir) / name)) {
      weights_path = (fs::path(dir) / name).string();
      break;
    }
  }
  if (weights_path.empty()) {
    return Status::NotFound(dir + ": no wav2vec2 weights (expected model.safetensors, model.safetensors.index.json "
                                  "or pytorch_model.bin)");
  }
  LA_ASSIGN_OR_RETURN(std::shared_ptr<io::TensorStore> store, io::OpenTensorStore(weights_path));
  return FromStore(cfg, *store, options);
}

bool Wav2Vec2::has_lm_head() const { return weights_.count("lm_head.weight") > 0; }

at::Tensor Wav2Vec2::FeatureEncoder(const at::Tensor& input_values, int64_t chunk_frames) const {
  // input_values: [1, N] -> [1, T, C]
  const auto& w = weights_;
  const auto dtype = W(w, std::string(kPrefix) + "feature_extractor.conv_layers.0.conv.weight").scalar_type();
  const auto device = W(w, std::string(kPrefix) + "feature_extractor.conv_layers.0.conv.weight").device();
  const at::Tensor x = input_values.reshape({1, 1, -1}).to(device, dtype);
  const int64_t n = x.size(-1);
  const int64_t total = config_.NumFrames(n);
  TORCH_CHECK(total > 0, "wav2vec2: input of ", n, " samples is shorter than one frame (", config_.ReceptiveField(),
              " samples)");
  const int64_t hop = config_.FrameHop(), rf = config_.ReceptiveField();
  const int64_t chunk = chunk_frames > 0 ? chunk_frames : kAutoFeatureChunkFrames;
  std::vector<at::Tensor> pieces;
  for (int64_t a = 0; a < total; a += chunk) {
    const int64_t b = std::min(total, a + chunk);
    // Frames [a, b) see samples [a·hop, (b-1)·hop + rf): the encoder is local, so this is exact.
    at::Tensor h = x.slice(2, a * hop, std::min(n, (b - 1) * hop + rf));
    for (size_t i = 0; i < config_.conv_dim.size(); ++i) {
      const std::string c = std::string(kPrefix) + "feature_extractor.conv_layers." + std::to_string(i) + ".";
      h = at::conv1d(h, W(w, c + "conv.weight"), OptionalBias(w, c + "conv.bias"), {config_.conv_stride[i]});
      if (config_.feat_extract_norm == "layer") {
        // LayerNorm over channels: [1, C, t] -> [1, t, C] -> norm -> back.
        h = LayerNorm(h.transpose(1, 2), w, c + "layer_norm", kConvNormEps).transpose(1, 2);
      } else if (i == 0) {
        // GroupNorm with one group per channel (normalises each channel over time): not local in time.
        TORCH_CHECK(a == 0 && b == total, "wav2vec2: feat_extract_norm \"group\" cannot be chunked");
        h = at::group_norm(h.to(at::kFloat), config_.conv_dim[0], W(w, c + "layer_norm.weight").to(at::kFloat),
                           W(w, c + "layer_norm.bias").to(at::kFloat), kConvNormEps)
                .to(dtype);
      }
      h = Gelu(h);
    }
    TORCH_CHECK(h.size(2) == b - a, "wav2vec2 feature chunk produced ", h.size(2), " frames, expected ", b - a);
    pieces.push_back(h.transpose(1, 2));
  }
  return pieces.size() == 1 ? pieces[0].contiguous() : at::cat(pieces, 1);
}

at::Tensor Wav2Vec2::FeatureProjection(const at::Tensor& features) const {
  // features: [1, T, C] -> [1, T, H]
  const std::string p = std::string(kPrefix) + "feature_projection.";
  return Linear(LayerNorm(features, weights_, p + "layer_norm", config_.layer_norm_eps), weights_, p + "projection");
}

at::Tensor Wav2Vec2::EncoderStack(const at::Tensor& hidden, int64_t attention_query_chunk) const {
  // hidden: [1, T, H] -> [L + 1, T, H]
  const auto& w = weights_;
  const int64_t t = hidden.size(1), h = config_.hidden_size, heads = config_.num_attention_heads;
  const double eps = config_.layer_norm_eps;
  // Positional conv: Conv1d(H, H, K, padding K/2, groups G) -> drop the last frame when K is even -> GELU.
  const int64_t k = config_.num_conv_pos_embeddings;
  at::Tensor pos = at::conv1d(hidden.transpose(1, 2), W(w, std::string(kPosConv) + "weight"),
                              W(w, std::string(kPosConv) + "bias"), {1}, {k / 2}, {1},
                              config_.num_conv_pos_embedding_groups);
  if (k % 2 == 0) pos = pos.slice(2, 0, pos.size(2) - 1);
  at::Tensor x = hidden + Gelu(pos).transpose(1, 2);
  if (!config_.do_stable_layer_norm) x = LayerNorm(x, w, std::string(kPrefix) + "encoder.layer_norm", eps);

  int64_t q_chunk = attention_query_chunk;
  if (q_chunk <= 0) q_chunk = std::max<int64_t>(1, kAttentionLogitBudgetBytes / (4 * heads * std::max<int64_t>(t, 1)));
  auto self_attention = [&](const at::Tensor& in, const std::string& l) {
    // in: [1, T, H] -> [1, T, H]; q/k/v: [1, T, heads, head_dim]
    const auto q = Linear(in, w, l + "attention.q_proj").view({1, t, heads, h / heads});
    const auto kk = Linear(in, w, l + "attention.k_proj").view({1, t, heads, h / heads});
    const auto v = Linear(in, w, l + "attention.v_proj").view({1, t, heads, h / heads});
    at::Tensor o;
    if (q_chunk >= t) {
      o = Attention(q, kk, v);
    } else {  // exact: every query chunk attends to all keys
      std::vector<at::Tensor> parts;
      for (int64_t s = 0; s < t; s += q_chunk) parts.push_back(Attention(q.slice(1, s, std::min(t, s + q_chunk)), kk, v));
      o = at::cat(parts, 1);
    }
    return Linear(o.reshape({1, t, h}), w, l + "attention.out_proj");
  };
  auto feed_forward = [&](const at::Tensor& in, const std::string& l) {
    return Linear(Gelu(Linear(in, w, l + "feed_forward.intermediate_dense")), w, l + "feed_forward.output_dense");
  };

  std::vector<at::Tensor> states;
  states.reserve(static_cast<size_t>(config_.num_hidden_layers + 1));
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    const std::string l = L(i);
    states.push_back(x[0]);
    if (config_.do_stable_layer_norm) {  // pre-LN (xlsr)
      x = x + self_attention(LayerNorm(x, w, l + "layer_norm", eps), l);
      x = x + feed_forward(LayerNorm(x, w, l + "final_layer_norm", eps), l);
    } else {  // post-LN
      x = LayerNorm(x + self_attention(x, l), w, l + "layer_norm", eps);
      x = LayerNorm(x + feed_forward(x, l), w, l + "final_layer_norm", eps);
    }
  }
  // transformers <= 4.51.3: the last stacked state is the final encoder LayerNorm output (stable layer norm).
  if (config_.do_stable_layer_norm) x = LayerNorm(x, w, std::string(kPrefix) + "encoder.layer_norm", eps);
  states.push_back(x[0]);
  return at::stack(states, 0);
}

at::Tensor Wav2Vec2::LmHead(const at::Tensor& last_hidden) const {
  TORCH_CHECK(has_lm_head(), "wav2vec2: this checkpoint has no lm_head");
  return Linear(last_hidden.reshape({1, -1, config_.hidden_size}), weights_, "lm_head");
}

Wav2Vec2Output Wav2Vec2::Forward(const at::Tensor& input_values, const Wav2Vec2RunOptions& run) const {
  Wav2Vec2Output out;
  const at::Tensor hidden = FeatureProjection(FeatureEncoder(input_values, run.feature_chunk_frames));
  out.hidden_states = EncoderStack(hidden, run.attention_query_chunk);
  if (run.compute_logits) out.logits = LmHead(out.hidden_states[-1]);
  return out;
}

Wav2Vec2Output Wav2Vec2::ForwardWindowed(const at::Tensor& input_values, const Wav2Vec2LongAudioOptions& long_opts,
                                         const Wav2Vec2RunOptions& run) const {
  const int64_t win = long_opts.window_frames, ov = long_opts.overlap_frames;
  TORCH_CHECK(ov >= 0 && win > 2 * ov, "wav2vec2 windowed: need window_frames > 2 * overlap_frames >= 0 (got ", win,
              ", ", ov, ")");
  // The conv features are local: computed once for the whole clip, exactly.
  const at::Tensor hidden = FeatureProjection(FeatureEncoder(input_values, run.feature_chunk_frames));
  const int64_t t = hidden.size(1);
  Wav2Vec2Output out;
  if (t <= win) {
    out.hidden_states = EncoderStack(hidden, run.attention_query_chunk);
  } else {
    out.hidden_states = at::empty({config_.num_hidden_layers + 1, t, config_.hidden_size}, hidden.options());
    const int64_t stride = win - 2 * ov;
    for (int64_t core_begin = 0; core_begin < t; core_begin += stride) {
      const int64_t core_end = std::min(t, core_begin + stride);
      int64_t begin = std::max<int64_t>(0, core_begin - ov), end = std::min(t, core_end + ov);
      // Give edge windows their full length of context on the inner side.
      if (begin == 0) end = std::min(t, win);
      if (end == t) begin = std::max<int64_t>(0, t - win);
      const at::Tensor states = EncoderStack(hidden.slice(1, begin, end), run.attention_query_chunk);
      out.hidden_states.slice(1, core_begin, core_end).copy_(states.slice(1, core_begin - begin, core_end - begin));
    }
  }
  if (run.compute_logits) out.logits = LmHead(out.hidden_states[-1]);
  return out;
}

StatusOr<Wav2Vec2Output> Wav2Vec2::Encode(const at::Tensor& waveform, const Wav2Vec2LongAudioOptions& long_opts,
                                          const Wav2Vec2RunOptions& run) const {
  if (!waveform.defined() || !(waveform.dim() == 1 || (waveform.dim() == 2 && waveform.size(0) == 1))) {
    return Status::InvalidArgument("wav2vec2: the waveform must be a [N] or [1, N] tensor");
  }
  const int64_t n = waveform.numel();
  const int64_t frames = config_.NumFrames(n);
  if (frames <= 0) {
    return Status::InvalidArgument("wav2vec2: the audio has " + std::to_string(n) + " samples; at least " +
                                   std::to_string(config_.ReceptiveField()) + " (one frame at " +
                                   std::to_string(config_.sampling_rate) + " Hz) are needed");
  }
  if (run.compute_logits && !has_lm_head()) return Status::InvalidArgument("wav2vec2: logits requested but no lm_head");
  const at::Tensor x = config_.do_normalize ? NormalizeWaveform(waveform) : waveform.reshape({1, -1}).to(at::kFloat);
  if (frames <= long_opts.one_shot_max_frames) return Forward(x, run);
  if (long_opts.overlap_frames < 0 || long_opts.window_frames <= 2 * long_opts.overlap_frames) {
    return Status::InvalidArgument("wav2vec2: window_frames must exceed 2 * overlap_frames >= 0");
  }
  return ForwardWindowed(x, long_opts, run);
}

}  // namespace liveavatar::models::audio
