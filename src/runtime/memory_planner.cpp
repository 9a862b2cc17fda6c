#include "liveavatar/runtime/memory_planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "liveavatar/runtime/kv_cache.h"

namespace liveavatar::runtime {

namespace {

constexpr int64_t kGiB = int64_t{1} << 30;
constexpr int64_t kMiB = int64_t{1} << 20;

bool StartsWith(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool EndsWith(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}
int64_t Numel(const models::WeightSpec& s) {
  int64_t n = 1;
  for (int64_t d : s.shape) n *= d;
  return n;
}
int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t Bytes(PlanDtype d) { return d == PlanDtype::kBFloat16 ? 2 : 4; }
int64_t ParamCount(const std::vector<models::WeightSpec>& specs) {
  int64_t n = 0;
  for (const auto& s : specs) {
    if (!s.optional) n += Numel(s);
  }
  return n;
}

// The DiT's fp32 islands (models::dit::CausalWanS2V::WeightDtype): kept in fp32 whatever the compute dtype.
bool DitFp32Island(const std::string& key) {
  return StartsWith(key, "time_embedding.") || StartsWith(key, "time_projection.") || StartsWith(key, "head.") ||
         StartsWith(key, "casual_audio_encoder.") || EndsWith(key, ".modulation") || EndsWith(key, "norm3.weight") ||
         EndsWith(key, "norm3.bias");
}
// Linears swapped for FP8 (upstream fp8_linear.py): every Linear weight of the blocks and of the audio injectors
// (q/k/v/o self + cross, ffn.0/2, injector q/k/v/o, adain linear). Embeddings, time MLPs, head and the audio
// encoder's final_linear stay in the compute dtype.
bool DitFp8(const models::WeightSpec& s) {
  return s.shape.size() == 2 && EndsWith(s.key, ".weight") &&
         (StartsWith(s.key, "blocks.") || StartsWith(s.key, "audio_injector."));
}
// PEFT targets of the Live Avatar LoRA: q, k, v, o, ffn.0, ffn.2 (blocks) and the injectors' q, k, v, o.
bool LoraTarget(const models::WeightSpec& s) {
  if (s.shape.size() != 2 || !EndsWith(s.key, ".weight")) return false;
  for (const char* t : {".q.weight", ".k.weight", ".v.weight", ".o.weight", ".ffn.0.weight", ".ffn.2.weight"}) {
    if (EndsWith(s.key, t)) return StartsWith(s.key, "blocks.") || StartsWith(s.key, "audio_injector.injector.");
  }
  return false;
}
// Layer index of a "blocks.<i>." key, -1 otherwise.
int64_t BlockIndex(const std::string& key) {
  if (!StartsWith(key, "blocks.")) return -1;
  return std::atoll(key.c_str() + 7);
}

struct DitBytes {
  int64_t total = 0;          // every tensor in its device format
  int64_t blocks = 0;         // "blocks.<i>." tensors
  int64_t largest_block = 0;  // one layer
  int64_t largest_lora_out_in = 0, largest_lora_out = 0, largest_lora_in = 0;
  // fp8: one layer's FP8 linears dequantised to the compute dtype (block + its largest injector), the transient
  // of dequantising per block (this build has no FP8 GEMM).
  int64_t fp8_dequant = 0;
};

DitBytes DitWeightBytes(const PlanInputs& in) {
  DitBytes r;
  std::map<int64_t, int64_t> per_block, fp8_block;
  std::map<std::string, int64_t> fp8_injector;  // injector index j -> dense bytes
  const int64_t c = Bytes(in.dtype);
  for (const auto& s : in.models.dit_specs) {
    if (s.optional) continue;
    const int64_t n = Numel(s);
    int64_t b;
    if (in.fp8 && DitFp8(s)) {
      b = n + 4;  // e4m3 payload + one fp32 scale
    } else if (DitFp32Island(s.key)) {
      b = 4 * n;
    } else {
      b = c * n;
    }
    r.total += b;
    if (in.fp8 && DitFp8(s)) {
      const int64_t fblk = BlockIndex(s.key);
      if (fblk >= 0) {
        fp8_block[fblk] += c * n;
      } else {
        // injector j = audio_injector.injector.<j>.* and audio_injector.injector_adain_layers.<j>.*
        const size_t digit = s.key.find_first_of("0123456789");
        fp8_injector[s.key.substr(digit, s.key.find('.', digit) - digit)] += c * n;
      }
    }
    const int64_t blk = BlockIndex(s.key);
    if (blk >= 0) {
      r.blocks += b;
      per_block[blk] += b;
    }
    if (in.load_lora && LoraTarget(s) && n > r.largest_lora_out_in) {
      r.largest_lora_out_in = n;
      r.largest_lora_out = s.shape[0];
      r.largest_lora_in = s.shape[1];
    }
  }
  for (const auto& [i, b] : per_block) r.largest_block = std::max(r.largest_block, b);
  int64_t largest_fp8_block = 0, largest_fp8_injector = 0;
  for (const auto& [i, b] : fp8_block) largest_fp8_block = std::max(largest_fp8_block, b);
  for (const auto& [k, b] : fp8_injector) largest_fp8_injector = std::max(largest_fp8_injector, b);
  r.fp8_dequant = largest_fp8_block + largest_fp8_injector;
  return r;
}

// VAE stage geometry: channels and spatial/temporal size at each level of the decoder / encoder.
struct VaeLevels {
  std::vector<int64_t> enc_channels;  // input channels of the level-i residual blocks (encoder)
  std::vector<int64_t> dec_channels;  // output channels of decoder level i (dim·mult reversed)
};

// Bytes of the causal feature cache of a VAE pass: every CausalConv3d with a 3-frame kernel keeps its last 2
// input frames ([C_in, 2, h, w]); time_conv of a 3-D resample keeps the last frame (down) / 2 frames (up).
// `levels`: (channels in, spatial scale) of each residual block conv; computed from the layer tables below.
int64_t VaeEncodeCacheBytes(const models::vae::VaeConfig& v, int64_t H, int64_t W, int64_t act) {
  // Encoder: conv1 (3 ch at full res), then per level i (scale 2^i) num_res_blocks residual blocks with two
  // 3x3x3 convs each (inputs: in_dim then out_dim), a downsample (3-D: time_conv cache of 1 frame).
  int64_t total = 3 * 2 * H * W * act;
  std::vector<int64_t> dims = {v.dim};
  for (auto m : v.dim_mult) dims.push_back(v.dim * m);
  const int64_t n = v.num_levels();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t hw = (H >> i) * (W >> i);
    int64_t in_dim = dims[i];
    for (int64_t r = 0; r < v.num_res_blocks; ++r) {
      total += (in_dim + dims[i + 1]) * 2 * hw * act;
      in_dim = dims[i + 1];
    }
    if (i != n - 1 && v.temperal_downsample[static_cast<size_t>(i)]) {
      total += dims[i + 1] * ((H >> (i + 1)) * (W >> (i + 1))) * act;
    }
  }
  // Middle (2 residual blocks at the last level) + head conv.
  const int64_t last = dims.back();
  const int64_t hw_last = (H >> (n - 1)) * (W >> (n - 1));
  total += (4 * last + last) * 2 * hw_last * act;
  return total;
}

int64_t VaeDecodeCacheBytes(const models::vae::VaeConfig& v, int64_t H, int64_t W, int64_t act) {
  // Decoder: conv1 (z_dim at latent res), middle (2 residual blocks), then level i (scale 2^(i+1-n) of the
  // output) with num_res_blocks+1 residual blocks, an upsample (3-D: time_conv cache of 2 frames), head conv.
  const int64_t n = v.num_levels();
  const int64_t lh = H >> (n - 1), lw = W >> (n - 1);
  std::vector<int64_t> dims = {v.dim * v.dim_mult.back()};
  for (auto it = v.dim_mult.rbegin(); it != v.dim_mult.rend(); ++it) dims.push_back(v.dim * *it);
  int64_t total = v.z_dim * 2 * lh * lw * act;
  total += 4 * dims[0] * 2 * lh * lw * act;
  const auto up3d = v.temperal_upsample();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t hw = (lh << i) * (lw << i);
    int64_t in_dim = i >= 1 ? dims[i] / 2 : dims[i];
    for (int64_t r = 0; r < v.num_res_blocks + 1; ++r) {
      total += (in_dim + dims[i + 1]) * 2 * hw * act;
      in_dim = dims[i + 1];
    }
    if (i != n - 1 && up3d[static_cast<size_t>(i)]) total += dims[i + 1] * 2 * hw * act;
  }
  total += dims.back() * 2 * H * W * act;  // head conv input
  return total;
}

// One CausalConv3d stage of a VAE residual block at level-0 size (the peak of a VAE pass): `a` = bytes of one
// fp32 activation [C, T, H, W], `cin` its channels, `c` the weight dtype bytes. Live: the block input (kept for
// the shortcut) and the normalised input (2a, fp32), the cast input (c != 4), the input with its 2 history frames
// (1.5a), the old and new cached history (a), the conv output (a·c/4, plus its fp32 copy when c != 4), and the
// convolution's own buffer: on the CPU the native vol2col columns [27·cin, T·H·W] fp32 when cin < 16 (LibTorch
// uses oneDNN from 16 input channels: a blocked copy of input and output, 2.5a), on CUDA none (cuDNN workspace
// is part of the allocator slack).
int64_t VaeConvStageBytes(int64_t a, int64_t cin, int64_t c, PlanDeviceKind device) {
  const double k = static_cast<double>(c) / 4.0;
  int64_t live = 2 * a + (c != 4 ? a * c / 4 : 0) + static_cast<int64_t>(1.5 * k * a) + static_cast<int64_t>(k * a) +
                 (c != 4 ? static_cast<int64_t>(k * a) + a : a);
  if (device == PlanDeviceKind::kCpu) live += cin < 16 ? 27 * a : a * 5 / 2;
  return live;
}

// VAE encode of the motion frames: input video (fp32), the causal cache, the latents so far, and the conv stage
// of a level-0 residual block on a 4-frame chunk (dim channels at full resolution).
int64_t VaeEncodeWorkBytes(const PlanInputs& in) {
  const auto& v = in.models.vae;
  const int64_t a = v.dim * 4 * in.height * in.width * 4;
  const int64_t latents = (1 + (in.motion_frames - 1) / 4) * 2 * v.z_dim * (in.height / 8) * (in.width / 8) * 4;
  return VaeConvStageBytes(a, v.dim, Bytes(in.dtype), in.device) + latents;
}

// Decoding one latent frame: the conv stage of a last-level residual block (dim·mult[0] channels at full
// resolution, 4 frames).
int64_t VaeDecodeWorkBytes(const PlanInputs& in) {
  const auto& v = in.models.vae;
  const int64_t ch = v.dim * v.dim_mult.front();
  const int64_t a = ch * 4 * in.height * in.width * 4;
  return VaeConvStageBytes(a, ch, Bytes(in.dtype), in.device);
}

// The decoded frames of one block: the frames of the block's earlier latents (2 x [3, 4, H, W] fp32) while the
// last one decodes.
int64_t VaeBlockFramesBytes(const PlanInputs& in) {
  return (in.frames_per_block - 1) * 3 * 4 * in.height * in.width * 4;
}

struct Geometry {
  int64_t lat_h = 0, lat_w = 0, fs = 0, lat_clip = 0, ring = 0, sink = 0, cond_rows = 0, block = 0;
  int64_t blocks_per_clip = 0;
};

Geometry MakeGeometry(const PlanInputs& in) {
  Geometry g;
  const auto& d = in.models.dit;
  const int64_t stride = int64_t{1} << (in.models.vae.num_levels() - 1);
  g.lat_h = in.height / stride;
  g.lat_w = in.width / stride;
  g.fs = d.FrameSeqLen(g.lat_h, g.lat_w);
  g.lat_clip = LatentFramesPerClip(in.infer_frames, in.motion_frames, in.latent_motion_frames);
  g.ring = g.lat_clip * g.fs;
  g.sink = SinkTokenCount(g.lat_h, g.lat_w, d.patch_size[1], d.patch_size[2]);
  g.cond_rows = in.cond_capacity > 0 ? in.cond_capacity : g.sink;
  g.block = in.frames_per_block * g.fs;
  g.blocks_per_clip = in.frames_per_block > 0 ? g.lat_clip / in.frames_per_block : 0;
  return g;
}

std::string Fmt(const char* fmt, double a, double b = 0, double c = 0, double d = 0) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), fmt, a, b, c, d);
  return buf;
}

// Peak bytes of one DiT block call (the sink prefill or a streaming block, whichever is larger): the fp32
// residual, the attention path (projections, Ulysses all-to-all copies, RoPE, the key/value concatenation with
// the cond cache, the scores on the CPU / the softmax statistics of the fused kernel on CUDA) or the FFN path.
int64_t DitActivationBytes(const PlanInputs& in, const Geometry& g, int64_t u, std::string* detail) {
  const auto& d = in.models.dit;
  const int64_t c = Bytes(in.dtype);
  // Ulysses splits heads unevenly (the first H % u ranks hold one more); plan the largest share.
  const int64_t heads_local = (d.num_heads + u - 1) / u, dim = d.dim, dim_local = heads_local * d.head_dim();
  int64_t worst = 0;
  std::string worst_name;
  // (queries, keys) of the two calls: stream block over ring + cond, sink prefill over the sink itself.
  const std::pair<int64_t, int64_t> calls[] = {{g.block, g.ring + g.cond_rows}, {g.sink, g.sink}};
  for (int call = 0; call < 2; ++call) {
    const int64_t nq = calls[call].first, nk = calls[call].second;
    const int64_t n_local = CeilDiv(nq, u);
    const int64_t residual = 2 * n_local * dim * 4;   // x and the new x (fp32)
    const int64_t norm_in = n_local * dim * (4 + c);  // modulated LN input (fp32) + its cast
    // q, k, v (local sequence) + full-sequence local-head copies after the all-to-all + roped q, k.
    int64_t attn = 3 * n_local * dim * c + (u > 1 ? 3 * nq * dim_local * c : 0) + 2 * nq * dim_local * c;
    attn += 2 * nk * dim_local * c;  // concatenated keys / values (ring + roped cond)
    if (in.device == PlanDeviceKind::kCpu) {
      attn += 2 * heads_local * nq * nk * 4;  // logits + probabilities (fp32)
    } else {
      attn += heads_local * nq * 4;  // fused kernel: log-sum-exp per query
    }
    attn += nq * dim_local * c + n_local * dim * c;  // output + all-to-all back
    const int64_t ffn = n_local * d.ffn_dim * c * 2 + n_local * dim * c;
    const int64_t total = residual + norm_in + std::max(attn, ffn);
    if (total > worst) {
      worst = total;
      worst_name = call == 0 ? "stream block" : "sink prefill";
    }
  }
  if (detail != nullptr) {
    *detail = worst_name + (in.device == PlanDeviceKind::kCpu ? ", attention scores materialised (CPU)"
                                                              : ", fused attention (CUDA)");
  }
  return worst;
}

// umT5 over text_len tokens: hidden states, FFN intermediates, position bias + scores (fp32).
int64_t T5ActivationBytes(const PlanInputs& in) {
  const auto& t = in.models.t5;
  const int64_t c = Bytes(in.dtype);
  const int64_t L = in.models.dit.text_len;
  return L * (4 * t.dim + 3 * t.dim_ffn) * c + 3 * t.num_heads * L * L * 4;
}

// wav2vec2 over the whole audio (fp32): the L+1 stacked hidden states (list + stacked copy), per-layer
// intermediates, attention logits bounded by the 256 MiB query-chunk budget, and the audio embedding.
int64_t Wav2Vec2FramesOf(const PlanInputs& in) {
  const auto& w = in.models.wav2vec2;
  int64_t hop = 1;
  for (auto s : w.conv_stride) hop *= s;
  const double samples = in.audio_seconds * static_cast<double>(w.sampling_rate);
  return std::max<int64_t>(1, static_cast<int64_t>(samples / static_cast<double>(hop)));
}

int64_t Wav2Vec2ActivationBytes(const PlanInputs& in) {
  const auto& w = in.models.wav2vec2;
  const int64_t t = Wav2Vec2FramesOf(in);
  const int64_t states = 2 * (w.num_hidden_layers + 1) * t * w.hidden_size * 4;
  const int64_t layer = t * (6 * w.hidden_size + 2 * w.intermediate_size) * 4;
  const int64_t logits = std::min<int64_t>(256 * kMiB, 4 * w.num_attention_heads * t * t) * 2;
  int64_t conv0 = 0;
  if (!w.conv_dim.empty()) conv0 = 2 * w.conv_dim[0] * std::min<int64_t>(t, 3000) * w.conv_stride[0] * 4;
  return states + std::max(layer + logits, conv0);
}

// The audio embedding kept for the whole run: [1, 25, audio_dim, clips·infer_frames] fp32 at 25 fps.
int64_t AudioEmbeddingBytes(const PlanInputs& in) {
  const int64_t frames25 = static_cast<int64_t>(in.audio_seconds * 25.0) + in.infer_frames;
  return 25 * in.models.dit.audio_dim * frames25 * 4;
}

}  // namespace

int64_t HostOverheadBytes(PlanDeviceKind kind) {
  // CPU: the liveavatar binary with LibTorch, OpenBLAS, FFmpeg and SentencePiece mapped and initialised, measured
  // as the RSS of a tiny-checkpoint `generate` before its first tensor loads (docs/memory.md). CUDA adds the CUDA
  // runtime, cuBLAS/cuDNN and the context's host-side allocations (~2.5 GiB with LibTorch 2.x).
  return kind == PlanDeviceKind::kCuda ? 3 * kGiB : 400 * kMiB;
}

int64_t DeviceOverheadBytes(PlanDeviceKind kind) {
  // CUDA: context + cuBLAS/cuDNN handles and workspaces (~0.6 GiB measured on H100 with LibTorch 2.x) plus
  // caching-allocator rounding/fragmentation (~0.4 GiB). CPU: nothing beyond tensor bytes.
  return kind == PlanDeviceKind::kCuda ? 1 * kGiB : 0;
}

std::string FormatBytes(int64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.2f GiB", static_cast<double>(bytes) / static_cast<double>(kGiB));
  return buf;
}

MemoryPlan MemoryPlanner::Plan(const PlanInputs& in) {
  MemoryPlan p;
  p.world_size = in.world_size;
  p.ulysses_size = in.ulysses_size;
  p.capacity_bytes = in.capacity_bytes;
  const auto& d = in.models.dit;
  auto fail = [&p](std::string msg) {
    p.error = std::move(msg);
    p.fits = false;
    return p;
  };
  if (in.world_size < 1) return fail("world size must be >= 1");
  if (in.ulysses_size < 1) return fail("--ulysses_size must be >= 1");
  if (in.sample_steps < 1) return fail("--sample_steps must be >= 1");
  if (in.models.dit_specs.empty()) return fail("no DiT weight specs given");
  if (in.height <= 0 || in.width <= 0 || in.height % 64 != 0 || in.width % 64 != 0) {
    return fail("the generated size must be positive multiples of 64 (got " + std::to_string(in.width) + "x" +
                std::to_string(in.height) + ")");
  }
  const bool vae_rank = in.vae_rank && in.world_size > 1;
  if (vae_rank && (in.vae_ranks < 1 || in.vae_ranks >= in.world_size)) {
    return fail("--enable_vae_parallel: " + std::to_string(in.vae_ranks) + " VAE ranks do not fit world size " +
                std::to_string(in.world_size));
  }
  const int64_t dit_ranks = in.world_size - (vae_rank ? in.vae_ranks : 0);
  if (dit_ranks % in.ulysses_size != 0) {
    return fail(std::to_string(dit_ranks) + " DiT ranks are not a multiple of --ulysses_size " +
                std::to_string(in.ulysses_size));
  }
  const int64_t u = in.ulysses_size;
  const int64_t stages = dit_ranks / u;
  if (in.sample_steps % stages != 0) {
    return fail(std::to_string(stages) + " pipeline stages (" + std::to_string(dit_ranks) + " DiT ranks / ulysses " +
                std::to_string(u) + ") do not divide --sample_steps " + std::to_string(in.sample_steps));
  }
  if (u > d.num_heads) {
    return fail("--ulysses_size " + std::to_string(u) + " exceeds the " + std::to_string(d.num_heads) +
                " attention heads (each Ulysses rank needs at least one)");
  }
  if (in.dit_fsdp && u == 1 && stages > 1) {
    return fail(
        "--dit_fsdp needs ranks that run the same blocks in lockstep: with pipeline stages the FSDP group "
        "is the Ulysses group, so use --ulysses_size > 1");
  }
  if (in.offload_dit_blocks && in.fp8 && !(in.dit_fsdp && u > 1)) {
    return fail("--offload_model True with --fp8: not supported together without --dit_fsdp (both supply the DiT "
                "blocks); choose one");
  }
  p.dit_stages = stages;
  const Geometry g = MakeGeometry(in);
  if (g.lat_clip <= 0 || g.lat_clip % in.frames_per_block != 0) {
    return fail("--infer_frames " + std::to_string(in.infer_frames) + " gives " + std::to_string(g.lat_clip) +
                " latent frames per clip, not a positive multiple of " + std::to_string(in.frames_per_block));
  }
  p.latent_h = g.lat_h;
  p.latent_w = g.lat_w;
  p.frame_seqlen = g.fs;
  p.ring_tokens = g.ring;
  p.sink_tokens = g.sink;
  p.block_tokens = g.block;
  p.dit_params = ParamCount(in.models.dit_specs);
  p.t5_params = ParamCount(in.models.t5_specs);
  p.wav2vec2_params = ParamCount(in.models.wav2vec2_specs);
  p.vae_params = ParamCount(in.models.vae_specs);

  const int64_t c = Bytes(in.dtype);
  const int64_t steps_per_rank = in.sample_steps / stages;
  const bool fsdp = in.dit_fsdp && u > 1;
  const DitBytes dit = DitWeightBytes(in);
  const int64_t head_dim = d.head_dim();
  const int64_t heads_local = (d.num_heads + u - 1) / u;  // the largest uneven share
  const int64_t overhead = DeviceOverheadBytes(in.device);

  // ---- per-rank components shared by the DiT roles ----
  auto dit_role = [&](int64_t stage, bool decodes) {
    RankPlan r;
    r.role = decodes ? "dit+decode" : "dit";
    r.first_step = stage * steps_per_rank;
    r.num_steps = steps_per_rank;
    r.decodes = decodes;
    // `decode` < 0: the same as `denoise` (held across the whole streaming loop).
    auto add = [&r](std::string name, std::string detail, int64_t load, int64_t encode, int64_t denoise,
                    int64_t decode = -1) {
      r.components.push_back(
          {std::move(name), std::move(detail), load, encode, denoise, decode < 0 ? denoise : decode});
    };
    // DiT weights.
    if (fsdp) {
      if (in.offload_dit_blocks) {
        // --offload_model with FSDP: the slices stay on the host; (1 + prefetch) staging slices on the device.
        const int64_t on_device = dit.total - dit.blocks + (1 + in.fsdp_prefetch) * CeilDiv(dit.largest_block, u);
        add("dit_weights",
            Fmt("root %.2f GiB + (1 + prefetch) staging slices; FSDP slices %.2f GiB / %.0f in host memory",
                (dit.total - dit.blocks) / double(kGiB), dit.blocks / double(kGiB), double(u)),
            on_device, in.encoders_first ? 0 : on_device, on_device);
      } else {
        const int64_t shard = dit.total - dit.blocks + CeilDiv(dit.blocks, u);
        add("dit_weights",
            Fmt("FSDP shard: blocks %.2f GiB / %.0f + root %.2f GiB", dit.blocks / double(kGiB), u,
                (dit.total - dit.blocks) / double(kGiB)),
            shard, in.encoders_first ? 0 : shard, shard);
      }
      const int64_t unshard = (1 + in.fsdp_prefetch) * dit.largest_block;
      add("fsdp_unshard",
          Fmt("(1 + prefetch %.0f) x one gathered block %.3f GiB", double(in.fsdp_prefetch),
              dit.largest_block / double(kGiB)),
          0, 0, unshard);
    } else if (in.offload_dit_blocks) {
      const int64_t on_device =
          dit.total - dit.blocks + std::min<int64_t>(1 + in.offload_lookahead, d.num_layers) * dit.largest_block;
      add("dit_weights",
          Fmt("--offload_model: root %.2f GiB + (1 + lookahead %.0f) blocks of %.3f GiB; %.2f GiB of blocks in host "
              "memory",
              (dit.total - dit.blocks) / double(kGiB), double(in.offload_lookahead), dit.largest_block / double(kGiB),
              dit.blocks / double(kGiB)),
          on_device, in.encoders_first ? 0 : on_device, on_device);
    } else {
      add("dit_weights",
          Fmt("%.3f B params, ", p.dit_params / 1e9) +
              (in.fp8                             ? "FP8 linears"
               : in.dtype == PlanDtype::kBFloat16 ? "bf16"
                                                  : "fp32") +
              " + fp32 islands",
          dit.total, in.encoders_first ? 0 : dit.total, dit.total);
    }
    if (dit.fp8_dequant > 0) {
      add("fp8_dequant", "one layer's FP8 linears dequantised per block call (no FP8 GEMM in this build)", 0, 0,
          dit.fp8_dequant);
    }
    // LoRA merge temporaries, where the weight lands (the streaming load merges each target on its way to the
    // device; per slice with FSDP; on the host for blocks kept there): an fp32 copy of the largest target, the
    // merged result before its dtype conversion, and the A/B pair.
    if (in.load_lora && dit.largest_lora_out_in > 0 && !(in.offload_dit_blocks && !fsdp)) {
      const int64_t div = fsdp ? u : 1;
      const int64_t tmp = 2 * CeilDiv(dit.largest_lora_out_in, div) * 4 +
                          (dit.largest_lora_out + dit.largest_lora_in) * in.lora_rank * 4;
      add("lora_merge",
          Fmt("largest target %.0fx%.0f: fp32 W + B.A + A,B (r=%.0f)", double(dit.largest_lora_out),
              double(dit.largest_lora_in), double(in.lora_rank)),
          tmp, 0, 0);
    }
    // Encoders.
    const int64_t t5_bytes = p.t5_params * c;
    if (!in.t5_cpu) {
      const bool resident = !in.offload_model;
      add("t5", Fmt("%.2f B params, ", p.t5_params / 1e9) + (resident ? "resident" : "released after encoding"),
          resident || !in.encoders_first ? t5_bytes : 0, t5_bytes + T5ActivationBytes(in), resident ? t5_bytes : 0);
    } else {
      add("t5", "on the CPU (--t5_cpu)", 0, 0, 0);
    }
    const int64_t w2v_bytes = p.wav2vec2_params * 4;
    const bool w2v_resident = in.keep_wav2vec2 && !in.offload_model;
    add("wav2vec2",
        Fmt("%.3f B params fp32, %.1f s audio, ", p.wav2vec2_params / 1e9, in.audio_seconds) +
            (w2v_resident ? "resident" : "released after encoding"),
        w2v_resident || !in.encoders_first ? w2v_bytes : 0, w2v_bytes + Wav2Vec2ActivationBytes(in),
        w2v_resident ? w2v_bytes : 0);
    const int64_t audio_emb = AudioEmbeddingBytes(in);
    add("audio_embedding",
        Fmt("[25, %.0f, %.0f] fp32 at 25 fps", double(d.audio_dim), audio_emb / (100.0 * d.audio_dim)),
        in.encoders_first ? audio_emb : 0, audio_emb, audio_emb);
    // VAE: every DiT rank encodes the reference and the motion frames.
    const int64_t vae_bytes = p.vae_params * c;
    const int64_t video_in = 3 * in.motion_frames * in.height * in.width * 4;
    const int64_t enc_cache = VaeEncodeCacheBytes(in.models.vae, in.height, in.width, c);
    const int64_t enc_work = VaeEncodeWorkBytes(in);
    add("vae", Fmt("%.3f B params", p.vae_params / 1e9), vae_bytes, vae_bytes,
        (decodes || !in.offload_model) ? vae_bytes : 0);
    add("vae_encode", Fmt("%.0f motion frames fp32 + causal cache + level-0 workspace", double(in.motion_frames)), 0,
        video_in + enc_cache + enc_work, 0);
    if (decodes) {
      // The u ranks of the last stage decode spatially in parallel (dist/parallel_vae.h): each holds 1/u of the
      // rows of the causal cache and of the workspace, and the gathered frames of the block in full.
      const int64_t dec_cache = CeilDiv(VaeDecodeCacheBytes(in.models.vae, in.height, in.width, c), u);
      add("vae_decode_cache", Fmt("causal feature cache / %.0f rank(s)", double(u)), 0, 0, dec_cache);
      add("vae_decode", Fmt("one latent frame's conv stage / %.0f rank(s) + the block's frames", double(u)), 0, 0, 0,
          CeilDiv(VaeDecodeWorkBytes(in), u) + VaeBlockFramesBytes(in));
    }
    // KV rings and cond caches.
    const int64_t ring_step = d.num_layers * 2 * g.ring * heads_local * head_dim * c;
    const int64_t cond_step = d.num_layers * 2 * g.cond_rows * heads_local * head_dim * c;
    const int64_t rings_on_device = in.offload_kv_cache ? 1 : steps_per_rank;
    const int64_t conds_on_device = in.share_cond_cache || in.offload_kv_cache ? 1 : steps_per_rank;
    add("kv_rings",
        Fmt("%.0f x %.3f GiB (ring %.0f tokens, %.0f local heads)", double(rings_on_device), ring_step / double(kGiB),
            double(g.ring), double(heads_local)) +
            (in.offload_kv_cache ? ", active step only" : ""),
        0, 0, rings_on_device * ring_step);
    add("cond_cache",
        Fmt("%.0f x %.3f GiB (%.0f rows)", double(conds_on_device), cond_step / double(kGiB), double(g.cond_rows)), 0,
        0, conds_on_device * cond_step);
    std::string act_detail;
    const int64_t act = DitActivationBytes(in, g, u, &act_detail);
    add("activations", act_detail, 0, 0, act, 0);
    // Communication: Ulysses all-to-all staging (q, k, v, out of one block) / TPP block latent send + receive.
    int64_t comm = 0;
    if (u > 1) comm += 4 * CeilDiv(g.block, u) * d.dim * c;
    if (stages > 1 || vae_rank) comm += 2 * in.models.dit.in_dim * in.frames_per_block * g.lat_h * g.lat_w * 4;
    if (comm > 0) add("comm_buffers", "all-to-all staging / block latents", 0, 0, comm, 0);
    if (overhead > 0)
      add("device_overhead", "CUDA context + allocator slack (constant per device kind)", overhead, overhead, overhead);
    return r;
  };

  auto vae_role = [&]() {
    RankPlan r;
    r.role = "vae";
    r.decodes = true;
    // `decode` < 0: the same as `denoise` (held across the whole streaming loop).
    auto add = [&r](std::string name, std::string detail, int64_t load, int64_t encode, int64_t denoise,
                    int64_t decode = -1) {
      r.components.push_back(
          {std::move(name), std::move(detail), load, encode, denoise, decode < 0 ? denoise : decode});
    };
    const int64_t vae_bytes = p.vae_params * c;
    add("vae", Fmt("%.3f B params", p.vae_params / 1e9), vae_bytes, vae_bytes, vae_bytes);
    const int64_t video_in = 3 * in.motion_frames * in.height * in.width * 4;
    add("vae_encode", "motion frames for the decoder priming", 0,
        video_in + VaeEncodeCacheBytes(in.models.vae, in.height, in.width, c) + VaeEncodeWorkBytes(in), 0);
    add("vae_decode_cache", "causal feature cache", 0, 0, VaeDecodeCacheBytes(in.models.vae, in.height, in.width, c));
    add("vae_decode", "one latent frame's conv stage + the block's frames", 0, 0, 0,
        VaeDecodeWorkBytes(in) + VaeBlockFramesBytes(in));
    add("comm_buffers", "block latents received", 0, 0,
        2 * in.models.dit.in_dim * in.frames_per_block * g.lat_h * g.lat_w * 4);
    if (overhead > 0) add("device_overhead", "CUDA context + allocator slack", overhead, overhead, overhead);
    return r;
  };

  for (int64_t s = 0; s < stages; ++s) {
    const bool decodes = !vae_rank && s == stages - 1;
    RankPlan r = dit_role(s, decodes);
    for (int64_t k = 0; k < u; ++k) r.ranks.push_back(s * u + k);
    // Stages with the same role and numbers are merged into one row.
    if (!p.roles.empty() && p.roles.back().role == r.role && !decodes) {
      p.roles.back().ranks.insert(p.roles.back().ranks.end(), r.ranks.begin(), r.ranks.end());
      continue;
    }
    p.roles.push_back(std::move(r));
  }
  if (vae_rank) {
    RankPlan r = vae_role();
    for (int64_t k = dit_ranks; k < in.world_size; ++k) r.ranks.push_back(k);
    p.roles.push_back(std::move(r));
  }
  // ---- host memory ----
  // Checkpoint files as stored (the real layout): DiT, T5 and LoRA in bf16, VAE and wav2vec2 in fp32.
  struct File {
    const char* name;
    int64_t bytes = 0, largest = 0;
  };
  auto file_of = [](const char* name, const std::vector<models::WeightSpec>& specs, int64_t elem) {
    File f{name};
    for (const auto& s : specs) {
      if (s.optional) continue;
      f.bytes += Numel(s) * elem;
      f.largest = std::max(f.largest, Numel(s) * elem);
    }
    return f;
  };
  const File dit_file = file_of("DiT", in.models.dit_specs, 2), t5_file = file_of("T5", in.models.t5_specs, 2),
             vae_file = file_of("VAE", in.models.vae_specs, 4),
             w2v_file = file_of("wav2vec2", in.models.wav2vec2_specs, 4);
  File lora_file{"LoRA"};
  if (in.load_lora) {
    for (const auto& s : in.models.dit_specs) {
      if (!LoraTarget(s)) continue;
      lora_file.bytes += (s.shape[0] + s.shape[1]) * in.lora_rank * 2;
      lora_file.largest = std::max(lora_file.largest, s.shape[0] * in.lora_rank * 2);
    }
  }
  const int64_t host_overhead = HostOverheadBytes(in.device);
  const bool cpu = in.device == PlanDeviceKind::kCpu;
  auto host_plan = [&](const RankPlan& r) {
    HostPlan h;
    auto add = [&h](std::string name, std::string detail, int64_t anon, int64_t mapped = 0) {
      h.components.push_back({std::move(name), std::move(detail), anon, mapped});
    };
    const bool dit_rank = r.role != "vae";
    std::vector<const File*> files = {&vae_file};
    if (dit_rank) files.insert(files.end(), {&dit_file, &t5_file, &w2v_file, &lora_file});
    int64_t largest = 0;
    for (const File* f : files) {
      h.page_cache += f->bytes;
      largest = std::max(largest, f->largest);
    }
    add("runtime", "binary + LibTorch" + std::string(cpu ? "" : " + CUDA runtime/context (host side)"),
        host_overhead);
    if (cpu) {
      // The host is the device: every tensor of the device plan is host memory. The load phase also maps the
      // tensor being converted.
      const int64_t rest = std::max<int64_t>(0, r.peak - r.load_peak);
      add("device_mirror", "the device plan (" + r.peak_phase + " peak); on the CPU it is host memory", r.load_peak);
      if (rest > largest) {
        add("after_load", "what the " + r.peak_phase + " phase holds beyond the loaded models", rest);
      } else {
        add("streaming_load", "the largest stored tensor mapped while it converts", 0, largest);
      }
    } else {
      add("streaming_load", "the largest stored tensor mapped while it is copied to the device", 0, largest);
      if (dit_rank && in.offload_dit_blocks) {
        const int64_t blocks = fsdp ? CeilDiv(dit.blocks, u) : dit.blocks;
        add("dit_blocks_offloaded",
            fsdp ? "this rank's FSDP slices of the blocks (pinned)" : "every DiT block in its final dtype (pinned)",
            blocks);
      } else if (dit_rank && fsdp) {
        add("fsdp_read", "one block's slice converted on the host before it moves", CeilDiv(dit.largest_block, u));
      }
      if (dit_rank && in.t5_cpu) {
        add("t5_cpu", Fmt("--t5_cpu: %.2f B params + the encoder's activations", p.t5_params / 1e9),
            p.t5_params * c + T5ActivationBytes(in));
      }
    }
    for (const auto& comp : h.components) {
      h.anon_peak += comp.anon;
      h.mapped_peak += comp.mapped;
    }
    h.peak = h.anon_peak + h.mapped_peak;
    return h;
  };

  for (auto& r : p.roles) {
    for (const auto& comp : r.components) {
      r.load_peak += comp.load;
      r.encode_peak += comp.encode;
      r.denoise_peak += comp.denoise;
      r.decode_peak += comp.decode;
    }
    if (!r.decodes) r.decode_peak = 0;
    r.peak = std::max({r.load_peak, r.encode_peak, r.denoise_peak, r.decode_peak});
    r.peak_phase = r.peak == r.denoise_peak  ? "denoise"
                   : r.peak == r.decode_peak ? "decode"
                   : r.peak == r.encode_peak ? "encode"
                                             : "load";
    p.peak_bytes = std::max(p.peak_bytes, r.peak);
    r.host = host_plan(r);
  }
  p.device_fits = in.capacity_bytes <= 0 || p.peak_bytes <= in.capacity_bytes;

  // Hosts: ranks_per_host consecutive ranks each; the fullest one decides.
  p.ranks_per_host = in.ranks_per_host > 0 ? std::min(in.ranks_per_host, in.world_size) : in.world_size;
  std::vector<const RankPlan*> role_of(static_cast<size_t>(in.world_size), nullptr);
  for (const auto& r : p.roles) {
    for (int64_t k : r.ranks) {
      if (k >= 0 && k < in.world_size) role_of[static_cast<size_t>(k)] = &r;
    }
  }
  for (int64_t first = 0; first < in.world_size; first += p.ranks_per_host) {
    int64_t total = 0, anon = 0;
    bool reads_dit = false;
    for (int64_t k = first; k < std::min(in.world_size, first + p.ranks_per_host); ++k) {
      const RankPlan* r = role_of[static_cast<size_t>(k)];
      if (r == nullptr) continue;
      total += r->host.peak;
      anon += r->host.anon_peak;
      reads_dit = reads_dit || r->role != "vae";
    }
    if (total > p.host_peak_bytes) {
      p.host_peak_bytes = total;
      p.host_anon_bytes = anon;
      // Each file once: the page cache is shared by the host's processes.
      p.host_page_cache_bytes =
          vae_file.bytes + (reads_dit ? dit_file.bytes + t5_file.bytes + w2v_file.bytes + lora_file.bytes : 0);
    }
  }
  p.host_capacity_bytes = in.host_capacity_bytes;
  p.host_fits = in.host_capacity_bytes <= 0 || p.host_peak_bytes <= in.host_capacity_bytes;
  p.fits = p.device_fits && p.host_fits;
  return p;
}

namespace {

// Reference SIZE_CONFIGS ("W*H"), largest area first, for the "smaller --size" alternatives.
const char* const kSizes[] = {"1280*720", "720*1280", "1280*704", "704*1280", "1024*704", "704*1024",
                              "832*480",  "480*832",  "720*400",  "704*384",  "688*368",  "384*256"};

// Pixel size the planner uses for a "W*H" target without an image: each side rounded down to a multiple of 64.
bool SizeDims(const std::string& size, int64_t* w, int64_t* h) {
  const auto star = size.find('*');
  if (star == std::string::npos) return false;
  *w = std::atoll(size.c_str()) / 64 * 64;
  *h = std::atoll(size.c_str() + star + 1) / 64 * 64;
  return *w > 0 && *h > 0;
}

// "Fastest" = lowest cost (docs/memory.md): each memory-saving measure adds a fixed penalty reflecting its
// steady-state cost; ties go to the lower peak.
int SpeedCost(const PlanInputs& in) {
  int cost = 0;
  if (in.offload_model) cost += 1;     // encoders re-uploaded per request
  if (in.ulysses_size > 1) cost += 2;  // two all-to-alls per layer
  if (in.t5_cpu) cost += 3;            // prompt encoded on the CPU
  if (in.dit_fsdp) cost += 4;          // one all-gather per block per step
  if (in.offload_kv_cache) cost += 8;  // the step cache crosses PCIe every step
  if (in.offload_dit_blocks) cost += 16;  // every block's weights cross PCIe every step
  return cost;
}

std::string FlagsOf(const PlanInputs& base, const PlanInputs& c) {
  std::string f;
  auto add = [&f](const std::string& s) { f += (f.empty() ? "" : " ") + s; };
  if (c.world_size != base.world_size) add("--nproc_per_node " + std::to_string(c.world_size));
  if (c.ulysses_size != base.ulysses_size) add("--ulysses_size " + std::to_string(c.ulysses_size));
  if (c.vae_rank != base.vae_rank) add(c.vae_rank ? "--enable_vae_parallel" : "(no --enable_vae_parallel)");
  if (c.dit_fsdp != base.dit_fsdp) add(c.dit_fsdp ? "--dit_fsdp" : "(no --dit_fsdp)");
  if (c.fp8 != base.fp8) add(c.fp8 ? "--fp8" : "--no_fp8");
  // This engine's --offload_model streams the DiT blocks (and the full design also releases the encoders).
  if (c.offload_model != base.offload_model || c.offload_dit_blocks != base.offload_dit_blocks) {
    add(std::string("--offload_model ") + (c.offload_model || c.offload_dit_blocks ? "True" : "False"));
  }
  if (c.t5_cpu != base.t5_cpu) add(c.t5_cpu ? "--t5_cpu" : "(no --t5_cpu)");
  if (c.offload_kv_cache != base.offload_kv_cache)
    add(c.offload_kv_cache ? "--offload_kv_cache" : "(no --offload_kv_cache)");
  if (c.width != base.width || c.height != base.height) {
    add("--size " + std::to_string(c.width) + "*" + std::to_string(c.height));
  }
  return f.empty() ? "(as given)" : f;
}

// Every topology / placement variation of `base` on `world` GPUs with the given fp8 and size.
std::vector<PlanInputs> Variations(const PlanInputs& base, int64_t world) {
  std::vector<PlanInputs> out;
  const PlanFeatures& f = base.features;
  if (world > 1 && !f.multi_process) return out;
  for (int vae = 0; vae <= (world > 1 ? 1 : 0); ++vae) {
    const int64_t dit_ranks = world - vae;
    for (int64_t u = 1; u <= dit_ranks; ++u) {
      if (dit_ranks % u != 0 || u > base.models.dit.num_heads) continue;
      if (base.sample_steps % (dit_ranks / u) != 0) continue;
      for (int fsdp = 0; fsdp <= (u > 1 ? 1 : 0); ++fsdp) {
        for (int om = 0; om <= (f.offload_model || f.offload_dit_blocks ? 1 : 0); ++om) {
          // --offload_model: blocks (or FSDP slices) streamed where the engine can (not FP8 without FSDP), encoders released
          // where it implements that. A flag that changes nothing is not a variation.
          const bool blocks = om == 1 && f.offload_dit_blocks && (fsdp == 1 || !base.fp8);
          const bool encoders = om == 1 && f.offload_model;
          if (om == 1 && !blocks && !encoders) continue;
          for (int t5c = 0; t5c <= (f.t5_cpu ? 1 : 0); ++t5c) {
            for (int kv = 0; kv <= (f.offload_kv_cache ? 1 : 0); ++kv) {
              PlanInputs c = base;
              c.world_size = world;
              c.vae_rank = vae == 1;
              c.ulysses_size = u;
              c.dit_fsdp = fsdp == 1;
              c.offload_model = encoders;
              c.offload_dit_blocks = blocks;
              c.t5_cpu = t5c == 1;
              c.offload_kv_cache = kv == 1;
              out.push_back(std::move(c));
            }
          }
        }
      }
    }
  }
  return out;
}

// The fastest fitting variation on `world` GPUs, if any.
bool Fastest(const PlanInputs& base, const PlanInputs& seed, int64_t world, PlanAlternative* best) {
  bool found = false;
  for (PlanInputs& c : Variations(seed, world)) {
    const MemoryPlan p = MemoryPlanner::Plan(c);
    if (!p.error.empty() || !p.fits) continue;
    const int cost = SpeedCost(c);
    if (!found || cost < best->speed_rank || (cost == best->speed_rank && p.peak_bytes < best->peak_bytes)) {
      best->flags = FlagsOf(base, c);
      best->peak_bytes = p.peak_bytes;
      best->speed_rank = cost;
      best->full_quality = c.fp8 == base.fp8 && c.width == base.width && c.height == base.height;
      best->inputs = std::move(c);
      found = true;
    }
  }
  return found;
}

}  // namespace

MemoryPlanner::Auto MemoryPlanner::AutoPlan(const PlanInputs& in) {
  Auto a;
  a.ok = Fastest(in, in, in.world_size, &a.choice);
  return a;
}

std::vector<PlanAlternative> MemoryPlanner::Alternatives(const PlanInputs& in, int64_t max_world) {
  std::vector<PlanAlternative> out;
  if (in.capacity_bytes <= 0) return out;
  if (max_world <= 0) max_world = std::max<int64_t>(in.world_size, 8);
  PlanAlternative a;
  // 1. Full quality on the same GPUs.
  if (Fastest(in, in, in.world_size, &a)) out.push_back(a);
  // 2. Full quality on more GPUs: the smallest world that fits.
  for (int64_t w = in.world_size + 1; w <= max_world; ++w) {
    if (Fastest(in, in, w, &a)) {
      out.push_back(a);
      break;
    }
  }
  // 3. FP8 weights on the same GPUs (lower quality).
  if (!in.fp8 && in.features.fp8 && in.device == PlanDeviceKind::kCuda) {
    PlanInputs f = in;
    f.fp8 = true;
    if (Fastest(in, f, in.world_size, &a)) out.push_back(a);
  }
  // 4. The largest smaller --size on the same GPUs (lower resolution).
  for (const char* s : kSizes) {
    int64_t w = 0, h = 0;
    if (!SizeDims(s, &w, &h) || w * h >= in.width * in.height) continue;
    PlanInputs f = in;
    f.width = w;
    f.height = h;
    if (Fastest(in, f, in.world_size, &a)) {
      const std::string dims = "--size " + std::to_string(w) + "*" + std::to_string(h);
      const auto at = a.flags.find(dims);
      if (at != std::string::npos) a.flags.replace(at, dims.size(), std::string("--size ") + s);
      out.push_back(a);
      break;
    }
  }
  return out;
}

}  // namespace liveavatar::runtime
