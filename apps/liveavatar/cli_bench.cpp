// `liveavatar bench`: times the DiT (and the VAE decoder) on random weights of any config, created directly on
// the device (no checkpoint), at one video size, and reports medians after warm-up (docs/performance.md):
//   * DiT streaming call in steady state: one 3-latent-frame block of one denoising step attending to a full
//     4-block ring plus the cond (sink) cache — at 704*384: 3168 queries over 12 672 + 2 640 = 15 312 keys;
//   * the sink prefill;
//   * VAE decode of one block (3 latents -> 12 frames) after the first latent (steady-state causal cache);
//   * achieved TFLOP/s against runtime/flops.h's count, peak device memory, and frames per second per pipeline
//     stage (12 frames / block time: with TPP every DiT rank runs one step per block; the VAE rank decodes it).
// Defaults target the GPU (the 14B DiT, bf16, CUDA when available); on a CPU use --tiny, --model_config or
// --layers.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#if defined(LIVEAVATAR_HAVE_CUDA) && __has_include(<c10/cuda/CUDACachingAllocator.h>)
#include <c10/cuda/CUDACachingAllocator.h>
#define LIVEAVATAR_BENCH_CUDA 1
#else
#define LIVEAVATAR_BENCH_CUDA 0
#endif

#include "cli_commands.h"
#include "liveavatar/core/json_file.h"
#include "liveavatar/core/logging.h"
#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/dit/fp8_weights.h"
#include "liveavatar/models/dit/model.h"
#include "liveavatar/models/dit/weights.h"
#include "liveavatar/models/vae/config.h"
#include "liveavatar/models/vae/vae.h"
#include "liveavatar/models/vae/weights.h"
#include "liveavatar/runtime/cpu_memory_tracker.h"
#include "liveavatar/runtime/flops.h"
#include "liveavatar/runtime/kv_cache.h"
#include "make_tiny.h"

namespace liveavatar::cli {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int64_t kBlockLatentFrames = 3;  // latent frames per streaming block (12 video frames)
constexpr int64_t kRingLatentFrames = 12;  // 4 blocks: one 48-frame clip
constexpr int64_t kBlockVideoFrames = 12;

struct BenchConfigs {
  models::dit::DitConfig dit;
  models::vae::VaeConfig vae;
  std::string source;
};

StatusOr<BenchConfigs> ResolveConfigs(const BenchArgs& a) {
  BenchConfigs c;
  c.source = "Wan2.2-S2V-14B DiT + Wan2.1 VAE defaults";
  std::string path = a.model_config;
  if (a.tiny) path = FindDataFile("", "configs/tiny.json");
  if (!path.empty()) {
    LA_ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(path, a.tiny ? "--tiny config" : "--model_config"));
    if (j.is_object() && j.contains("dit")) {
      LA_ASSIGN_OR_RETURN(c.dit, models::dit::DitConfigFromJson(j["dit"], path + " [dit]"));
      if (j.contains("vae")) {
        LA_ASSIGN_OR_RETURN(c.vae, models::vae::VaeConfigFromJson(j["vae"], path + " [vae]"));
      }
    } else {
      LA_ASSIGN_OR_RETURN(c.dit, models::dit::DitConfigFromJson(j, path));
    }
    c.source = path;
  }
  if (a.layers > 0) {
    c.dit.num_layers = a.layers;
    auto& inj = c.dit.audio_inject_layers;
    inj.erase(std::remove_if(inj.begin(), inj.end(), [&](int64_t l) { return l >= a.layers; }), inj.end());
  }
  LA_RETURN_IF_ERROR(c.dit.Validate().WithPrefix("bench: DiT config " + c.source));
  return c;
}

Status ValidateArgs(const BenchArgs& a) {
  std::string bad;
  if (a.tiny && !a.model_config.empty()) bad += "\n  --tiny and --model_config are exclusive";
  if (a.layers < 0) bad += "\n  --layers must be >= 0";
  if (a.iters < 1) bad += "\n  --iters must be >= 1";
  if (a.warmup < 0) bad += "\n  --warmup must be >= 0";
  if (a.dtype != "bf16" && a.dtype != "fp32") bad += "\n  --dtype must be bf16 or fp32 (got '" + a.dtype + "')";
  if (!a.device.empty() && a.device != "cuda" && a.device != "cpu") {
    bad += "\n  --device must be cuda or cpu (got '" + a.device + "')";
  }
  if (a.device == "cuda" && !at::hasCUDA()) bad += "\n  --device cuda: this build/machine has no CUDA device";
  if (!bad.empty()) return Status::InvalidArgument("bench:" + bad);
  return Status::Ok();
}

// Random weights for `specs`, created on `device` in each key's dtype (never materialised on the host for a
// GPU): "normal" = N(0, 1)/sqrt(fan_in), "ones", "zeros" (make-tiny's rule).
template <typename DtypeOf>
models::WeightMap RandomWeightsOn(const std::vector<models::WeightSpec>& specs, const c10::Device& device,
                                  DtypeOf dtype_of) {
  models::WeightMap w;
  for (const auto& spec : specs) {
    const auto opts = at::TensorOptions().device(device).dtype(dtype_of(spec.key));
    at::Tensor t;
    if (spec.init == "ones") {
      t = at::ones(spec.shape, opts);
    } else if (spec.init == "zeros") {
      t = at::zeros(spec.shape, opts);
    } else {
      int64_t numel = 1;
      for (int64_t d : spec.shape) numel *= d;
      const int64_t fan_in = spec.shape.size() >= 2 ? numel / std::max<int64_t>(spec.shape[0], 1) : numel;
      t = at::randn(spec.shape, opts).mul_(1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(fan_in, 1))));
    }
    w.emplace(spec.key, std::move(t));
  }
  return w;
}

int64_t Bytes(const models::WeightMap& w) {
  int64_t b = 0;
  for (const auto& [k, t] : w) b += t.numel() * static_cast<int64_t>(t.element_size());
  return b;
}

// Waits for the device: reading one value back synchronises the stream (portable across LibTorch versions).
void Sync(const at::Tensor& t) {
  if (t.defined() && t.numel() > 0) (void)t.reshape({-1})[0].item<double>();
}

// Runs `fn` warmup + iters times; returns the timed durations in ms (sorted).
template <typename Fn>
std::vector<double> Time(int64_t warmup, int64_t iters, Fn fn) {
  for (int64_t i = 0; i < warmup; ++i) Sync(fn());
  std::vector<double> ms;
  for (int64_t i = 0; i < iters; ++i) {
    const auto t0 = Clock::now();
    Sync(fn());
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms;
}

double Median(const std::vector<double>& sorted) {
  const size_t n = sorted.size();
  return n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
}

void ResetPeak(const c10::Device& device) {
  if (device.is_cpu()) {
    runtime::CpuMemoryTracker::Install();
    runtime::CpuMemoryTracker::ResetPeak();
  }
#if LIVEAVATAR_BENCH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#endif
}

int64_t PeakBytes(const c10::Device& device) {
  if (device.is_cpu()) return runtime::CpuMemoryTracker::peak_bytes();
#if LIVEAVATAR_BENCH_CUDA
  if (device.is_cuda()) {
    // allocated_bytes[0] = the aggregate pool (StatType::AGGREGATE in every LibTorch version).
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return stats.allocated_bytes[0].peak;
  }
#endif
  return 0;
}

runtime::DitFlopShape FlopShape(const models::dit::DitConfig& c) {
  runtime::DitFlopShape s;
  s.dim = c.dim;
  s.ffn_dim = c.ffn_dim;
  s.num_layers = c.num_layers;
  s.num_injected_layers = c.num_audio_injectors();
  s.in_dim = c.in_dim;
  s.cond_dim = c.cond_dim;
  s.out_dim = c.out_dim;
  s.patch_t = c.patch_size[0];
  s.patch_h = c.patch_size[1];
  s.patch_w = c.patch_size[2];
  s.text_len = c.text_len;
  s.text_dim = c.text_dim;
  s.freq_dim = c.freq_dim;
  s.num_audio_token = c.num_audio_token;
  return s;
}

nlohmann::json Timing(const std::vector<double>& ms) {
  return nlohmann::json{{"median_ms", Median(ms)}, {"min_ms", ms.front()}, {"max_ms", ms.back()}, {"runs_ms", ms}};
}

}  // namespace

StatusOr<nlohmann::json> Bench(const ParsedCommand& cmd) {
  const BenchArgs& a = cmd.bench;
  LA_RETURN_IF_ERROR(ValidateArgs(a));
  LA_ASSIGN_OR_RETURN(BenchConfigs cfg, ResolveConfigs(a));
  const auto& dc = cfg.dit;
  const c10::Device device((a.device.empty() ? (at::hasCUDA() ? "cuda" : "cpu") : a.device) == "cuda" ? c10::kCUDA
                                                                                                      : c10::kCPU);
  const c10::ScalarType dtype = a.dtype == "fp32" ? at::kFloat : at::kBFloat16;
  std::string size = cmd.run.generate.size.empty() ? pipeline::DefaultSize(1) : cmd.run.generate.size;
  std::pair<int64_t, int64_t> wh;
  if (!a.shape.empty()) {
    size = a.shape;
    long long w = 0, h = 0;
    char tail = 0;
    if (std::sscanf(size.c_str(), "%lld*%lld%c", &w, &h, &tail) != 2 || w <= 0 || h <= 0) {
      return Status::InvalidArgument("bench: --shape must be W*H (got '" + size + "')");
    }
    wh = {w, h};
  } else {
    LA_ASSIGN_OR_RETURN(wh, pipeline::ParseSize(size));
  }
  const int64_t lat_h = wh.second / 8, lat_w = wh.first / 8;
  if (wh.first % 64 != 0 || wh.second % 64 != 0) {
    // The reference only produces multiples of 64 (FramePack's 4x projection has an 8x8 latent kernel); bench
    // takes --size as the exact video shape W*H.
    return Status::InvalidArgument("bench: the video shape " + size + " (--size/--shape, W*H) must be multiples "
                                   "of 64 (e.g. 704*384, 384*256, 128*128)");
  }
  LA_LOG_INFO("bench: {} ({} layers, dim {}), {} on {}, size {} (latent {}x{}), {} warm-up + {} timed runs",
              cfg.source, dc.num_layers, dc.dim, a.dtype, device.str(), size, lat_h, lat_w, a.warmup, a.iters);
  at::NoGradGuard no_grad;
  // Random weights drive some activations into the subnormal range, which costs x10-100 on x86 CPUs; real
  // checkpoints do not, so the CPU timing flushes subnormals to zero (no effect on GPUs).
  at::globalContext().setFlushDenormal(true);
  at::manual_seed(0);
  ResetPeak(device);

  nlohmann::json out;
  out["config_source"] = cfg.source;
  out["device"] = device.str();
  out["dtype"] = a.dtype;
  out["size"] = size;
  out["latent_hw"] = {lat_h, lat_w};
  out["warmup"] = a.warmup;
  out["iters"] = a.iters;
  out["dit"] = {{"dim", dc.dim}, {"ffn_dim", dc.ffn_dim}, {"num_heads", dc.num_heads}, {"num_layers", dc.num_layers},
                {"num_audio_injectors", dc.num_audio_injectors()}};

  // ---- DiT ----
  {
    auto weights = RandomWeightsOn(models::dit::DitWeightSpecs(dc), device, [&](const std::string& key) {
      return models::dit::CausalWanS2V::WeightDtype(key, dtype);
    });
    const int64_t weight_bytes = Bytes(weights);
    LA_ASSIGN_OR_RETURN(auto model, models::dit::CausalWanS2V::Create(dc, std::move(weights), dtype, device));
    const auto geometry = model.CacheGeometry(lat_h, lat_w, kRingLatentFrames);
    runtime::DitStepCache cache(geometry, at::TensorOptions().dtype(dtype).device(device));
    const auto fopts = at::TensorOptions().dtype(at::kFloat).device(device);
    models::dit::SinkInputs sink{at::randn({1, dc.in_dim, 1, lat_h, lat_w}, fopts),
                                 at::randn({1, dc.in_dim, 19, lat_h, lat_w}, fopts),
                                 at::randn({dc.text_len, dc.text_dim}, fopts)};
    const auto sink_ms = Time(a.warmup, a.iters, [&] {
      model.SinkPrefill(sink, cache);
      return cache.layer(dc.num_layers - 1).cond_k;
    });
    // Steady state: current_start past the first ring wrap, so the whole ring (4 blocks) is attended, plus the
    // sink's cond rows.
    models::dit::StreamInputs in;
    in.x = at::randn({dc.in_dim, kBlockLatentFrames, lat_h, lat_w}, fopts);
    in.timestep = at::full({1, kBlockLatentFrames}, 1000.0, fopts);
    in.context = sink.context;
    in.audio_input = at::randn({1, 25, dc.audio_dim, 4 * kBlockLatentFrames}, fopts);
    in.current_start = geometry.ring_tokens + kBlockLatentFrames * geometry.frame_seqlen;
    in.relative_dist = 10;
    const auto plan = runtime::PlanRing(in.current_start, kBlockLatentFrames * geometry.frame_seqlen,
                                        geometry.ring_tokens);
    const int64_t keys = plan.active_end + cache.layer(0).cond_end;
    const auto block_ms = Time(a.warmup, a.iters, [&] { return model.StreamBlock(in, cache); });

    const auto shape = FlopShape(dc);
    const int64_t queries = kBlockLatentFrames * geometry.frame_seqlen;
    const auto block_flops = runtime::DitStreamCallFlops(shape, kBlockLatentFrames, lat_h, lat_w, keys);
    const auto sink_flops = runtime::DitSinkPrefillFlops(shape, lat_h, lat_w);
    const double block_med = Median(block_ms), sink_med = Median(sink_ms);
    out["dit_weight_bytes"] = weight_bytes;
    out["frame_tokens"] = geometry.frame_seqlen;
    out["block_queries"] = queries;
    out["block_keys"] = keys;
    out["sink_tokens"] = runtime::DitSinkTokens(shape, lat_h, lat_w);
    out["dit_block"] = Timing(block_ms);
    out["dit_block"]["gflop"] = block_flops.total() / 1e9;
    out["dit_block"]["gflop_linear"] = block_flops.linear / 1e9;
    out["dit_block"]["gflop_attention"] = block_flops.attention / 1e9;
    out["dit_block"]["gflop_conv"] = block_flops.conv / 1e9;
    out["dit_block"]["tflops"] = block_flops.total() / (block_med * 1e-3) / 1e12;
    out["dit_block"]["ms_per_layer"] = block_med / static_cast<double>(dc.num_layers);
    out["dit_block"]["fps_per_stage"] = kBlockVideoFrames / (block_med * 1e-3);
    out["sink_prefill"] = Timing(sink_ms);
    out["sink_prefill"]["gflop"] = sink_flops.total() / 1e9;
    out["sink_prefill"]["tflops"] = sink_flops.total() / (sink_med * 1e-3) / 1e12;
    out["dit_peak_bytes"] = PeakBytes(device);
    if (a.with_fp8) {
      // The same model with its FP8 linears quantised in place and dequantised per block by hooks (docs/fp8.md).
      LA_ASSIGN_OR_RETURN(auto fp8, models::dit::Fp8DitWeights::Attach(&model));
      const auto fp8_ms = Time(a.warmup, a.iters, [&] { return model.StreamBlock(in, cache); });
      const auto st = fp8->stats();
      out["dit_block_fp8"] = Timing(fp8_ms);
      out["dit_block_fp8"]["overhead_vs_dense"] = Median(fp8_ms) / block_med - 1.0;
      out["dit_block_fp8"]["fp8_bytes"] = st.fp8_bytes;
      out["dit_block_fp8"]["dense_bytes_replaced"] = st.dense_bytes;
      out["dit_block_fp8"]["max_layer_dense_bytes"] = st.max_layer_dense_bytes;
    }
  }

  // ---- VAE decoder ----
  if (a.vae) {
    models::vae::WanVae vae;
    vae.config = cfg.vae;
    vae.weights =
        RandomWeightsOn(models::vae::VaeWeightSpecs(cfg.vae), device, [&](const std::string&) { return dtype; });
    const auto fopts = at::TensorOptions().dtype(at::kFloat).device(device);
    models::vae::StreamingDecoder decoder(&vae);
    auto first = decoder.Decode(at::randn({1, cfg.vae.z_dim, 1, lat_h, lat_w}, fopts));  // causal start
    Sync(first);
    const auto latents = at::randn({1, cfg.vae.z_dim, kBlockLatentFrames, lat_h, lat_w}, fopts);
    int64_t frames = 0;
    const auto vae_ms = Time(a.warmup, a.iters, [&] {
      auto video = decoder.Decode(latents);
      frames = video.size(2);
      return video;
    });
    out["vae_decode"] = Timing(vae_ms);
    out["vae_decode"]["frames"] = frames;
    out["vae_decode"]["fps_per_stage"] = static_cast<double>(frames) / (Median(vae_ms) * 1e-3);
    out["vae_weight_bytes"] = Bytes(vae.weights);
  }
  out["peak_device_bytes"] = PeakBytes(device);
  out["peak_device_note"] = device.is_cpu() ? "CPU tensor storage through the c10 allocator (CpuMemoryTracker)"
                                            : "CUDA caching allocator peak allocated bytes";
  return out;
}

int RunBench(const ParsedCommand& cmd) {
  if (cmd.bench.load) return RunBenchLoad(cmd);
  auto result = Bench(cmd);
  if (!result.ok()) {
    LA_LOG_ERROR("{}", result.status().message());
    return result.status().code() == Status::Code::kInvalidArgument ? 2 : 1;
  }
  const nlohmann::json& r = *result;
  if (cmd.bench.json) {
    std::printf("%s\n", r.dump(2).c_str());
    return 0;
  }
  std::printf("liveavatar bench: %s, %s on %s, size %s (latent %lldx%lld)\n",
              r["config_source"].get<std::string>().c_str(), r["dtype"].get<std::string>().c_str(),
              r["device"].get<std::string>().c_str(), r["size"].get<std::string>().c_str(),
              static_cast<long long>(r["latent_hw"][0].get<int64_t>()),
              static_cast<long long>(r["latent_hw"][1].get<int64_t>()));
  const auto& b = r["dit_block"];
  std::printf("  DiT block call (1 step, %lld queries over %lld keys): %9.2f ms median  %8.1f GFLOP  %7.3f TFLOP/s  "
              "%6.2f frames/s per stage\n",
              static_cast<long long>(r["block_queries"].get<int64_t>()),
              static_cast<long long>(r["block_keys"].get<int64_t>()), b["median_ms"].get<double>(),
              b["gflop"].get<double>(), b["tflops"].get<double>(), b["fps_per_stage"].get<double>());
  const auto& s = r["sink_prefill"];
  std::printf("  DiT sink prefill (%lld tokens):                    %9.2f ms median  %8.1f GFLOP  %7.3f TFLOP/s\n",
              static_cast<long long>(r["sink_tokens"].get<int64_t>()), s["median_ms"].get<double>(),
              s["gflop"].get<double>(), s["tflops"].get<double>());
  if (r.contains("dit_block_fp8")) {
    const auto& f = r["dit_block_fp8"];
    std::printf("  DiT block call, FP8 weights dequantised per block:  %9.2f ms median  (%+.1f%% vs dense; %.3f GiB of "
                "codes)\n",
                f["median_ms"].get<double>(), 100.0 * f["overhead_vs_dense"].get<double>(),
                f["fp8_bytes"].get<int64_t>() / 1073741824.0);
  }
  if (r.contains("vae_decode")) {
    const auto& v = r["vae_decode"];
    std::printf("  VAE decode (3 latents -> %lld frames):             %9.2f ms median  %6.2f frames/s per stage\n",
                static_cast<long long>(v["frames"].get<int64_t>()), v["median_ms"].get<double>(),
                v["fps_per_stage"].get<double>());
  }
  std::printf("  peak device memory: %.3f GiB (%s)\n", r["peak_device_bytes"].get<int64_t>() / 1073741824.0,
              r["peak_device_note"].get<std::string>().c_str());
  return 0;
}

}  // namespace liveavatar::cli
