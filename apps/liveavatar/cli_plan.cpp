// `liveavatar plan`, the preflight check `generate` runs before loading, --auto_plan and the CUDA allocator cap.
// The arithmetic is runtime::MemoryPlanner's; this file turns the command line into its inputs (model
// architecture from --model_config / the checkpoint's configs / the 14B defaults, size from --size and --image,
// audio length from --audio) and renders the result.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <ATen/Context.h>
#include <nlohmann/json.hpp>
#include <unistd.h>
#ifdef LIVEAVATAR_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#endif

#include "cli_commands.h"
#include "liveavatar/core/logging.h"
#include "liveavatar/io/audio_reader.h"
#include "liveavatar/io/checkpoint_dir.h"
#include "liveavatar/io/image_preprocess.h"
#include "liveavatar/io/image_reader.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/audio/wav2vec2.h"
#include "liveavatar/models/dit/weights.h"
#include "liveavatar/models/lora.h"
#include "liveavatar/models/vae/weights.h"
#include "liveavatar/pipeline/checkpoint_checks.h"

namespace fs = std::filesystem;

namespace liveavatar::cli {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kAssumedAudioSeconds = 10.0;

// What this build's single-process engine implements (cli_generate.cpp / pipeline::Engine). The preflight plans
// what generate will actually do and proposes only these measures; flip a switch when its feature lands.
runtime::PlanFeatures EngineFeatures() {
  runtime::PlanFeatures f;
  f.fp8 = true;                // EngineOptions::fp8 (Fp8DitWeights)
  f.offload_model = false;     // the engine keeps T5 / wav2vec2 loaded (use --t5_cpu to keep T5 off the GPU)
  f.offload_dit_blocks = true; // EngineOptions::offload_blocks: --offload_model streams DiT blocks
  f.offload_kv_cache = true;   // EngineOptions::offload_kv_cache (one device step cache)
  f.t5_cpu = true;             // EngineOptions::t5_cpu
  f.multi_process = true;      // TPP stages, Ulysses, FSDP, a VAE rank (pipeline/tpp_driver.h)
  return f;
}

std::string ReadText(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

StatusOr<nlohmann::json> ReadJson(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return Status::NotFound("--model_config: " + path + ": no such file");
  try {
    return nlohmann::json::parse(ReadText(path));
  } catch (const std::exception& e) {
    return Status::InvalidArgument("--model_config: " + path + ": not valid JSON: " + e.what());
  }
}


struct ModelSource {
  runtime::PlanModels models;
  std::string from;  // where the architecture came from (printed)
  int64_t lora_rank = 128;
};

void FillSpecs(runtime::PlanModels* m) {
  m->dit_specs = models::dit::DitWeightSpecs(m->dit);
  m->t5_specs = models::t5::T5WeightSpecs(m->t5);
  m->wav2vec2_specs = models::audio::Wav2Vec2WeightSpecs(m->wav2vec2);
  m->vae_specs = models::vae::VaeWeightSpecs(m->vae);
}

StatusOr<ModelSource> LoadModels(const pipeline::RunOptions& run, const std::string& model_config) {
  ModelSource src;
  runtime::PlanModels& m = src.models;
  if (!model_config.empty()) {
    LA_ASSIGN_OR_RETURN(nlohmann::json j, ReadJson(model_config));
    if (j.is_object() && j.contains("dit")) {  // sectioned (configs/tiny.json)
      LA_ASSIGN_OR_RETURN(m.dit, models::dit::DitConfigFromJson(j["dit"], model_config + " [dit]"));
      if (j.contains("t5")) {
        LA_ASSIGN_OR_RETURN(m.t5, models::t5::T5Config::FromJsonText(j["t5"].dump(), model_config + " [t5]"));
      }
      if (j.contains("vae")) {
        LA_ASSIGN_OR_RETURN(m.vae, models::vae::VaeConfigFromJson(j["vae"], model_config + " [vae]"));
      }
      if (j.contains("wav2vec2")) {
        const auto& w = j["wav2vec2"];
        const nlohmann::json cfg = w.contains("config") ? w["config"] : w;
        const nlohmann::json pre = w.contains("preprocessor_config") ? w["preprocessor_config"] : nlohmann::json();
        LA_ASSIGN_OR_RETURN(m.wav2vec2, models::audio::Wav2Vec2ConfigFromJson(cfg, pre, model_config + " [wav2vec2]"));
      }
      if (j.contains("lora") && j["lora"].contains("lora_rank")) src.lora_rank = j["lora"]["lora_rank"].get<int64_t>();
    } else {
      LA_ASSIGN_OR_RETURN(m.dit, models::dit::DitConfigFromJson(j, model_config));
    }
    src.from = model_config;
  } else {
    const fs::path dir(run.generate.ckpt_dir);
    std::error_code ec;
    if (fs::is_regular_file(dir / io::kDitConfigFile, ec)) {
      LA_ASSIGN_OR_RETURN(m.dit, models::dit::LoadDitConfig((dir / io::kDitConfigFile).string()));
      if (fs::is_regular_file(dir / io::kT5File, ec)) {
        LA_ASSIGN_OR_RETURN(auto store, io::OpenTensorStore((dir / io::kT5File).string()));
        LA_ASSIGN_OR_RETURN(m.t5, pipeline::InferT5ConfigFromWeights(*store));
      }
      if (fs::is_regular_file(dir / io::kVaeFile, ec)) {
        LA_ASSIGN_OR_RETURN(auto store, io::OpenTensorStore((dir / io::kVaeFile).string()));
        LA_ASSIGN_OR_RETURN(m.vae, pipeline::InferVaeConfigFromWeights(*store));
      }
      if (fs::is_directory(dir / io::kWav2Vec2Dir, ec)) {
        LA_ASSIGN_OR_RETURN(m.wav2vec2, models::audio::LoadWav2Vec2Config((dir / io::kWav2Vec2Dir).string()));
      }
      src.from = run.generate.ckpt_dir;
      // LoRA rank: the training config next to the LoRA (engine rule), else the reference's 128.
      for (const fs::path& cfg : {fs::path(run.generate.training_config),
                                  (dir / io::kTinyLoraFile).parent_path() / "training_config_lora.json"}) {
        if (!cfg.empty() && fs::is_regular_file(cfg, ec)) {
          auto tc = models::LoadLoraTrainingConfig(cfg.string());
          if (tc.ok()) src.lora_rank = tc->rank;
          break;
        }
      }
    } else {
      src.from = "Wan2.2-S2V-14B defaults (no " + (dir / io::kDitConfigFile).string() + ")";
    }
  }
  FillSpecs(&m);
  return src;
}

int64_t WorldSize(const pipeline::RunOptions& run) {
  if (run.parallel.nproc_per_node > 1) return run.parallel.nproc_per_node;
  const char* w = std::getenv("WORLD_SIZE");
  return w != nullptr && std::atoi(w) > 0 ? std::atoi(w) : 1;
}

int64_t PhysicalMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
}

// MemAvailable of /proc/meminfo (free memory plus what the kernel can reclaim, the page cache among it); 0 when
// it cannot be read.
int64_t MemAvailableBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

// Budget of this host's memory: --max_host_mem_gb when given, else MemAvailable.
int64_t HostCapacity(const pipeline::RunOptions& run) {
  if (run.memory.max_host_mem_gb > 0) return static_cast<int64_t>(run.memory.max_host_mem_gb * kGiB);
  return MemAvailableBytes();
}

// Capacity of one device: --max_gpu_mem_gb when given, else the free memory of CUDA device 0, else (CPU) RAM.
int64_t DeviceCapacity(const pipeline::RunOptions& run, runtime::PlanDeviceKind kind) {
  if (run.memory.max_gpu_mem_gb > 0) return static_cast<int64_t>(run.memory.max_gpu_mem_gb * kGiB);
#ifdef LIVEAVATAR_HAVE_CUDA
  if (kind == runtime::PlanDeviceKind::kCuda) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) return static_cast<int64_t>(free_b);
    return 0;
  }
#endif
  return kind == runtime::PlanDeviceKind::kCpu ? PhysicalMemoryBytes() : 0;
}

struct PlanContext {
  runtime::PlanInputs inputs;
  std::string model_source;
  std::string size_note;
  std::string audio_note;
  std::vector<std::string> notes;
};

StatusOr<PlanContext> BuildInputs(const pipeline::RunOptions& run, const std::string& model_config, bool for_generate,
                                  const std::string& device = "") {
  PlanContext ctx;
  runtime::PlanInputs& in = ctx.inputs;
  LA_ASSIGN_OR_RETURN(ModelSource src, LoadModels(run, model_config));
  in.models = std::move(src.models);
  ctx.model_source = src.from;
  in.load_lora = run.generate.load_lora;
  in.lora_rank = src.lora_rank;

  in.world_size = WorldSize(run);
  in.ulysses_size = run.parallel.ulysses_size;
  in.vae_rank = run.parallel.enable_vae_parallel && in.world_size > 1;
  // Every rank after the --num_gpus_dit DiT ranks decodes (the topology refuses a layout that leaves none).
  if (in.vae_rank) in.vae_ranks = std::max<int64_t>(1, in.world_size - run.parallel.num_gpus_dit);
  in.dit_fsdp = run.parallel.dit_fsdp;
  in.fsdp_prefetch = run.parallel.fsdp_prefetch;
  in.infer_frames = run.generate.infer_frames;
  in.sample_steps = run.generate.sample_steps;

  // Device and number formats: the engine runs bf16 on CUDA and fp32 on the CPU.
  if (!device.empty() && device != "cuda" && device != "cpu") {
    return Status::InvalidArgument("--device: must be cuda or cpu (got '" + device + "')");
  }
  in.device = (device.empty() ? at::hasCUDA() : device == "cuda") ? runtime::PlanDeviceKind::kCuda
                                                                  : runtime::PlanDeviceKind::kCpu;
  in.dtype = in.device == runtime::PlanDeviceKind::kCuda ? runtime::PlanDtype::kBFloat16 : runtime::PlanDtype::kFloat32;
  in.features = for_generate ? EngineFeatures() : runtime::PlanFeatures();
  in.fp8 = run.memory.fp8 && in.features.fp8;  // stored FP8 and dequantised per block on any device
  // --offload_model (default False, as generate): the DiT blocks (with --dit_fsdp: the rank's slices) stay in host
  // memory; the full design also releases the encoders after encoding.
  const bool offload = run.memory.offload_model.value_or(false);
  in.offload_dit_blocks = offload && in.features.offload_dit_blocks;
  in.offload_model = offload && in.features.offload_model;
  if (offload && !in.features.offload_model) {
    ctx.notes.push_back("--offload_model: the engine streams the DiT blocks from host memory and keeps T5 and wav2vec2 "
                        "loaded (use --t5_cpu for T5)");
  }
  in.offload_kv_cache = run.memory.offload_kv_cache && in.features.offload_kv_cache;
  if (run.memory.offload_kv_cache && !in.offload_kv_cache) {
    ctx.notes.push_back("--offload_kv_cache: not implemented by the engine; planned with every step cache resident");
  }
  in.t5_cpu = run.memory.t5_cpu;
  // This build's Engine::Load loads every model before encoding.
  if (for_generate) in.encoders_first = false;
  if (!for_generate) {
    const runtime::PlanFeatures engine = EngineFeatures();
    std::string missing;
    if (in.fp8 && !engine.fp8) missing += " FP8 weights,";
    if (in.offload_model && !engine.offload_model) missing += " releasing the encoders after encoding,";
    if (in.offload_kv_cache && !engine.offload_kv_cache) missing += " --offload_kv_cache,";
    if (in.world_size > 1 && !engine.multi_process) missing += " multi-process topologies,";
    missing += " encoders before the DiT load,";
    missing.pop_back();
    ctx.notes.push_back("this plan assumes the full design; this build's `generate` lacks" + missing +
                        " and plans (preflight) without them");
  }

  // Size: --size (default by world size) resolved against --image when given.
  const std::string size =
      run.generate.size.empty() ? pipeline::DefaultSize(static_cast<int>(in.world_size)) : run.generate.size;
  LA_ASSIGN_OR_RETURN(auto wh, pipeline::ParseSize(size));
  in.width = wh.first / 64 * 64;
  in.height = wh.second / 64 * 64;
  ctx.size_note = "--size " + size + " without --image: each side rounded down to a multiple of 64";
  std::error_code ec;
  if (!run.generate.image.empty() && fs::is_regular_file(run.generate.image, ec)) {
    auto rgb = io::ReadImage(run.generate.image);
    if (rgb.ok()) {
      auto gs = io::ResolveGenSize(rgb->size(0), rgb->size(1), size);
      if (gs.ok()) {
        in.width = gs->width;
        in.height = gs->height;
        ctx.size_note = "--size " + size + " resolved against " + run.generate.image;
      }
    }
  }
  // Audio length: wav2vec2 runs over the whole file.
  in.audio_seconds = kAssumedAudioSeconds;
  ctx.audio_note = "assumed; pass --audio";
  if (!run.generate.audio.empty() && fs::is_regular_file(run.generate.audio, ec)) {
    auto clip = io::ReadAudio(run.generate.audio, static_cast<int>(in.models.wav2vec2.sampling_rate));
    if (clip.ok() && clip->sample_rate > 0) {
      in.audio_seconds = static_cast<double>(clip->samples.numel()) / clip->sample_rate;
      ctx.audio_note = run.generate.audio;
    }
  }
  in.capacity_bytes = DeviceCapacity(run, in.device);
  // This host's MemAvailable budgets a plan for this machine; planning another machine's run (--device other
  // than this one's) needs --max_host_mem_gb to check the host.
  const bool this_machine = device.empty() || (device == "cuda") == at::hasCUDA();
  in.host_capacity_bytes = run.memory.max_host_mem_gb > 0 || this_machine ? HostCapacity(run) : 0;
  // The launcher starts --nproc_per_node ranks on this host; under torchrun/Slurm LOCAL_WORLD_SIZE says it.
  in.ranks_per_host = in.world_size;
  if (const char* l = std::getenv("LOCAL_WORLD_SIZE"); l != nullptr && std::atoi(l) > 0 && run.parallel.nproc_per_node <= 1) {
    in.ranks_per_host = std::atoi(l);
  }
  return ctx;
}

std::string Gib(int64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f", static_cast<double>(b) / kGiB);
  return buf;
}

std::string RankList(const std::vector<int64_t>& r) {
  if (r.empty()) return "-";
  if (r.size() == 1) return std::to_string(r[0]);
  bool contiguous = true;
  for (size_t i = 1; i < r.size(); ++i) contiguous = contiguous && r[i] == r[i - 1] + 1;
  if (contiguous) return std::to_string(r.front()) + "-" + std::to_string(r.back());
  std::string s;
  for (size_t i = 0; i < r.size(); ++i) s += (i ? "," : "") + std::to_string(r[i]);
  return s;
}

nlohmann::json ToJson(const PlanContext& ctx, const runtime::MemoryPlan& p,
                      const std::vector<runtime::PlanAlternative>& alts) {
  const auto& in = ctx.inputs;
  nlohmann::json j;
  j["fits"] = p.fits;
  j["error"] = p.error;
  j["peak_bytes"] = p.peak_bytes;
  j["capacity_bytes"] = p.capacity_bytes;
  j["device"] = in.device == runtime::PlanDeviceKind::kCuda ? "cuda" : "cpu";
  j["dtype"] = in.dtype == runtime::PlanDtype::kBFloat16 ? "bf16" : "fp32";
  j["fp8"] = in.fp8;
  j["model_source"] = ctx.model_source;
  j["notes"] = ctx.notes;
  j["topology"] = {{"world_size", p.world_size},
                   {"dit_stages", p.dit_stages},
                   {"ulysses_size", p.ulysses_size},
                   {"vae_rank", in.vae_rank},
                   {"dit_fsdp", in.dit_fsdp},
                   {"fsdp_prefetch", in.fsdp_prefetch},
                   {"offload_model", in.offload_model},
                   {"offload_dit_blocks", in.offload_dit_blocks},
                   {"offload_kv_cache", in.offload_kv_cache},
                   {"t5_cpu", in.t5_cpu}};
  j["work"] = {{"width", in.width},
               {"height", in.height},
               {"infer_frames", in.infer_frames},
               {"sample_steps", in.sample_steps},
               {"audio_seconds", in.audio_seconds}};
  j["geometry"] = {{"latent_h", p.latent_h},       {"latent_w", p.latent_w},       {"frame_seqlen", p.frame_seqlen},
                   {"ring_tokens", p.ring_tokens}, {"sink_tokens", p.sink_tokens}, {"block_tokens", p.block_tokens}};
  j["params"] = {{"dit", p.dit_params}, {"t5", p.t5_params}, {"wav2vec2", p.wav2vec2_params}, {"vae", p.vae_params}};
  j["device_fits"] = p.device_fits;
  j["host"] = {{"fits", p.host_fits},
               {"peak_bytes", p.host_peak_bytes},
               {"anon_bytes", p.host_anon_bytes},
               {"page_cache_bytes", p.host_page_cache_bytes},
               {"capacity_bytes", p.host_capacity_bytes},
               {"ranks_per_host", p.ranks_per_host}};
  j["roles"] = nlohmann::json::array();
  for (const auto& r : p.roles) {
    nlohmann::json jr;
    nlohmann::json hc = nlohmann::json::array();
    for (const auto& c : r.host.components) {
      hc.push_back({{"name", c.name}, {"detail", c.detail}, {"anon", c.anon}, {"mapped", c.mapped}});
    }
    jr["host"] = {{"peak_bytes", r.host.peak},
                  {"anon_peak_bytes", r.host.anon_peak},
                  {"mapped_peak_bytes", r.host.mapped_peak},
                  {"page_cache_bytes", r.host.page_cache},
                  {"components", hc}};
    jr["role"] = r.role;
    jr["ranks"] = r.ranks;
    jr["first_step"] = r.first_step;
    jr["num_steps"] = r.num_steps;
    jr["peak_bytes"] = r.peak;
    jr["peak_phase"] = r.peak_phase;
    jr["phase_peaks"] = {
        {"load", r.load_peak}, {"encode", r.encode_peak}, {"denoise", r.denoise_peak}, {"decode", r.decode_peak}};
    jr["components"] = nlohmann::json::array();
    for (const auto& c : r.components) {
      jr["components"].push_back({{"name", c.name},
                                  {"detail", c.detail},
                                  {"load", c.load},
                                  {"encode", c.encode},
                                  {"denoise", c.denoise},
                                  {"decode", c.decode}});
    }
    j["roles"].push_back(jr);
  }
  j["alternatives"] = nlohmann::json::array();
  for (const auto& a : alts) {
    j["alternatives"].push_back({{"flags", a.flags},
                                 {"peak_bytes", a.peak_bytes},
                                 {"full_quality", a.full_quality},
                                 {"speed_rank", a.speed_rank}});
  }
  return j;
}

std::string AlternativesText(const std::vector<runtime::PlanAlternative>& alts) {
  std::string s;
  for (const auto& a : alts) {
    const runtime::MemoryPlan ap = runtime::MemoryPlanner::Plan(a.inputs);
    s += "  " + a.flags + "  -> peak " + Gib(a.peak_bytes) + " GiB per rank, host " + Gib(ap.host_peak_bytes) +
         " GiB" + (a.full_quality ? "" : " (lower quality)") + "\n";
  }
  return s;
}

// Why `p` does not fit, naming the budget(s) it exceeds.
std::string OverBudgetText(const runtime::MemoryPlan& p) {
  std::string s;
  if (!p.device_fits) {
    s = "the memory plan needs " + Gib(p.peak_bytes) + " GiB per rank but the device budget is " +
        Gib(p.capacity_bytes) + " GiB";
  }
  if (!p.host_fits) {
    s += std::string(s.empty() ? "" : "; and ") + "the " + std::to_string(p.ranks_per_host) +
         " process(es) of this host need " + Gib(p.host_peak_bytes) + " GiB of host memory but the host budget is " +
         Gib(p.host_capacity_bytes) + " GiB (--max_host_mem_gb, else MemAvailable)";
  }
  return s;
}

std::string ToText(const PlanContext& ctx, const runtime::MemoryPlan& p,
                   const std::vector<runtime::PlanAlternative>& alts) {
  const auto& in = ctx.inputs;
  std::ostringstream o;
  o << "plan: " << in.width << "x" << in.height << " (" << ctx.size_note << "), " << in.infer_frames << " frames/clip, "
    << in.sample_steps << " steps, audio " << in.audio_seconds << " s (" << ctx.audio_note << ")\n";
  o << "model: " << ctx.model_source << " (DiT " << p.dit_params << ", T5 " << p.t5_params << ", wav2vec2 "
    << p.wav2vec2_params << ", VAE " << p.vae_params << " params)\n";
  o << "device: " << (in.device == runtime::PlanDeviceKind::kCuda ? "cuda" : "cpu") << ", "
    << (in.fp8 ? "FP8 DiT linears, " : "") << (in.dtype == runtime::PlanDtype::kBFloat16 ? "bf16" : "fp32")
    << ", capacity " << (p.capacity_bytes > 0 ? Gib(p.capacity_bytes) + " GiB" : std::string("unknown")) << "\n";
  o << "topology: world " << p.world_size << " = " << p.dit_stages << " stage(s) x ulysses " << p.ulysses_size
    << (in.vae_rank ? " + " + std::to_string(in.vae_ranks) + " VAE rank" + (in.vae_ranks > 1 ? "s" : "") : "")
    << (in.dit_fsdp ? ", FSDP (prefetch " + std::to_string(in.fsdp_prefetch) + ")" : "")
    << (in.offload_model ? ", encoders released" : "")
    << (in.offload_dit_blocks ? (in.dit_fsdp ? ", FSDP slices in host memory" : ", DiT blocks in host memory") : "")
    << (in.offload_kv_cache ? ", offload_kv_cache" : "")
    << (in.t5_cpu ? ", t5_cpu" : "") << "\n";
  for (const auto& n : ctx.notes) o << "note: " << n << "\n";
  if (!p.error.empty()) {
    o << "error: " << p.error << "\n";
    return o.str();
  }
  o << "geometry: latent " << p.latent_h << "x" << p.latent_w << ", " << p.frame_seqlen << " tokens/frame, block "
    << p.block_tokens << ", ring " << p.ring_tokens << ", sink " << p.sink_tokens << "\n";
  for (const auto& r : p.roles) {
    o << "\nranks " << RankList(r.ranks) << " (" << r.role;
    if (r.num_steps > 0) o << ", steps " << r.first_step << "-" << (r.first_step + r.num_steps - 1);
    o << ")   [GiB]\n";
    char line[512];
    std::snprintf(line, sizeof(line), "  %-16s %8s %8s %8s %8s  %s\n", "component", "encode", "load", "denoise",
                  "decode", "detail");
    o << line;
    for (const auto& c : r.components) {
      std::snprintf(line, sizeof(line), "  %-16s %8s %8s %8s %8s  %s\n", c.name.c_str(), Gib(c.encode).c_str(),
                    Gib(c.load).c_str(), Gib(c.denoise).c_str(), r.decodes ? Gib(c.decode).c_str() : "-",
                    c.detail.c_str());
      o << line;
    }
    std::snprintf(line, sizeof(line), "  %-16s %8s %8s %8s %8s  peak %s GiB (%s)\n", "phase total",
                  Gib(r.encode_peak).c_str(), Gib(r.load_peak).c_str(), Gib(r.denoise_peak).c_str(),
                  r.decodes ? Gib(r.decode_peak).c_str() : "-", Gib(r.peak).c_str(), r.peak_phase.c_str());
    o << line;
    o << "  host per rank: peak " << Gib(r.host.peak) << " GiB (private " << Gib(r.host.anon_peak) << ", mapped "
      << Gib(r.host.mapped_peak) << "); reads " << Gib(r.host.page_cache) << " GiB of checkpoint files\n";
    for (const auto& c : r.host.components) {
      std::snprintf(line, sizeof(line), "    %-20s %8s %8s  %s\n", c.name.c_str(), Gib(c.anon).c_str(),
                    Gib(c.mapped).c_str(), c.detail.c_str());
      o << line;
    }
  }
  o << "\nhost: " << Gib(p.host_peak_bytes) << " GiB for the " << p.ranks_per_host << " rank(s) of one host (private "
    << Gib(p.host_anon_bytes) << "), page cache " << Gib(p.host_page_cache_bytes) << " GiB (shared, reclaimable)";
  if (p.host_capacity_bytes > 0) o << (p.host_fits ? " <= " : " > ") << Gib(p.host_capacity_bytes) << " GiB";
  o << "\n";
  o << "\nverdict: " << (p.fits ? "fits" : "does NOT fit") << " (device peak " << Gib(p.peak_bytes) << " GiB per rank";
  if (p.capacity_bytes > 0) o << (p.device_fits ? " <= " : " > ") << Gib(p.capacity_bytes) << " GiB";
  o << "; host " << Gib(p.host_peak_bytes) << " GiB";
  if (p.host_capacity_bytes > 0) o << (p.host_fits ? " <= " : " > ") << Gib(p.host_capacity_bytes) << " GiB";
  o << ")\n";
  if (!p.fits) o << "over budget: " << OverBudgetText(p) << "\n";
  if (!p.fits && !alts.empty()) o << "alternatives that fit:\n" << AlternativesText(alts);
  return o.str();
}

}  // namespace

StatusOr<runtime::PlanInputs> PlanInputsForRun(const pipeline::RunOptions& run, const std::string& model_config,
                                               bool for_generate, const std::string& device) {
  LA_ASSIGN_OR_RETURN(PlanContext ctx, BuildInputs(run, model_config, for_generate, device));
  return ctx.inputs;
}

int RunPlan(const ParsedCommand& cmd) {
  auto ctx = BuildInputs(cmd.run, cmd.plan.model_config, /*for_generate=*/false, cmd.plan.device);
  if (!ctx.ok()) {
    LA_LOG_ERROR("plan: {}", ctx.status().message());
    return 1;
  }
  const runtime::MemoryPlan p = runtime::MemoryPlanner::Plan(ctx->inputs);
  std::vector<runtime::PlanAlternative> alts;
  if (!p.fits && p.error.empty()) alts = runtime::MemoryPlanner::Alternatives(ctx->inputs);
  const std::string out = cmd.plan.json ? ToJson(*ctx, p, alts).dump(2) + "\n" : ToText(*ctx, p, alts);
  std::fputs(out.c_str(), stdout);
  if (!p.error.empty()) return 2;
  return p.fits ? 0 : 1;
}

Status PreflightPlan(const pipeline::RunOptions& run) {
  LA_ASSIGN_OR_RETURN(PlanContext ctx, BuildInputs(run, "", /*for_generate=*/true));
  const runtime::MemoryPlan p = runtime::MemoryPlanner::Plan(ctx.inputs);
  if (!p.error.empty()) return Status::InvalidArgument("memory plan: " + p.error);
  LA_LOG_INFO("memory plan: peak {} GiB per rank ({}), capacity {} GiB", Gib(p.peak_bytes),
              p.roles.empty() ? "" : p.roles.front().peak_phase,
              p.capacity_bytes > 0 ? Gib(p.capacity_bytes) : std::string("unknown"));
  if (p.fits) return Status::Ok();
  const auto alts = runtime::MemoryPlanner::Alternatives(ctx.inputs);
  std::string msg = OverBudgetText(p) + " (run `liveavatar plan` with the same flags for the table)";
  if (alts.empty()) {
    msg += "; no alternative fits on up to 8 GPUs";
  } else {
    msg += "; alternatives that fit:\n" + AlternativesText(alts);
  }
  return Status::OutOfMemory(msg);
}

std::string PlanPredictionText(const pipeline::RunOptions& run, int rank) {
  auto ctx = BuildInputs(run, "", /*for_generate=*/true);
  if (!ctx.ok()) return "plan: not available (" + ctx.status().message() + ")";
  const runtime::MemoryPlan p = runtime::MemoryPlanner::Plan(ctx->inputs);
  if (!p.error.empty()) return "plan: not available (" + p.error + ")";
  const runtime::RankPlan* role = p.roles.empty() ? nullptr : &p.roles.front();
  for (const auto& r : p.roles) {
    if (std::find(r.ranks.begin(), r.ranks.end(), rank) != r.ranks.end()) role = &r;
  }
  if (role == nullptr) return "plan: not available (no role for rank " + std::to_string(rank) + ")";
  // The three largest components of the peak phase.
  auto in_phase = [&](const runtime::PlanComponent& c) {
    return role->peak_phase == "load"     ? c.load
           : role->peak_phase == "encode" ? c.encode
           : role->peak_phase == "decode" ? c.decode
                                          : c.denoise;
  };
  std::vector<const runtime::PlanComponent*> parts;
  for (const auto& c : role->components) parts.push_back(&c);
  std::sort(parts.begin(), parts.end(), [&](auto* a, auto* b) { return in_phase(*a) > in_phase(*b); });
  std::string top;
  for (size_t i = 0; i < parts.size() && i < 3; ++i) {
    top += (i ? ", " : "") + parts[i]->name + " " + Gib(in_phase(*parts[i])) + " GiB";
  }
  return "plan: rank " + std::to_string(rank) + " (" + role->role + ") was predicted to peak at " +
         Gib(role->peak) + " GiB in the " + role->peak_phase + " phase (" + top + "), budget " +
         (p.capacity_bytes > 0 ? Gib(p.capacity_bytes) + " GiB" : std::string("unknown")) +
         "; `liveavatar plan` with the same flags prints the whole table, and --max_gpu_mem_gb below the device "
         "size leaves room for what the plan does not see";
}

StatusOr<pipeline::RunOptions> ApplyAutoPlan(const pipeline::RunOptions& run) {
  LA_ASSIGN_OR_RETURN(PlanContext ctx, BuildInputs(run, "", /*for_generate=*/true));
  const runtime::MemoryPlanner::Auto a = runtime::MemoryPlanner::AutoPlan(ctx.inputs);
  if (!a.ok) {
    return Status::OutOfMemory("--auto_plan: no full-quality plan fits " + Gib(ctx.inputs.capacity_bytes) +
                               " GiB per device on " + std::to_string(ctx.inputs.world_size) + " process(es)");
  }
  pipeline::RunOptions out = run;
  const runtime::PlanInputs& c = a.choice.inputs;
  out.parallel.ulysses_size = c.ulysses_size;
  out.parallel.dit_fsdp = c.dit_fsdp;
  out.parallel.enable_vae_parallel = c.vae_rank;
  out.memory.offload_model = c.offload_dit_blocks || c.offload_model;
  out.memory.offload_kv_cache = c.offload_kv_cache;
  out.memory.t5_cpu = c.t5_cpu;
  LA_LOG_INFO("--auto_plan: {} (peak {} GiB per rank)", a.choice.flags, Gib(a.choice.peak_bytes));
  return out;
}

Status ApplyGpuMemoryCap(const pipeline::RunOptions& run, int device_index, int ranks_sharing) {
  if (run.memory.max_gpu_mem_gb <= 0) return Status::Ok();
#ifdef LIVEAVATAR_HAVE_CUDA
  if (!at::hasCUDA()) return Status::Ok();
  const auto* props = at::cuda::getDeviceProperties(device_index);
  const double total = static_cast<double>(props->totalGlobalMem);
  const double cap = run.memory.max_gpu_mem_gb * kGiB;
  // Each process also holds a CUDA context outside the allocator's cap.
  constexpr double kContextBytes = 0.5 * kGiB;
  if ((cap + (ranks_sharing > 1 ? kContextBytes : 0.0)) * ranks_sharing > total) {
    return Status::InvalidArgument("--max_gpu_mem_gb " + std::to_string(run.memory.max_gpu_mem_gb) +
                                   (ranks_sharing > 1 ? " x " + std::to_string(ranks_sharing) +
                                                            " ranks (+ 0.5 GiB CUDA context each)"
                                                      : "") +
                                   " exceeds the " + Gib(static_cast<int64_t>(total)) + " GiB of cuda:" +
                                   std::to_string(device_index));
  }
  c10::cuda::CUDACachingAllocator::setMemoryFraction(cap / total, device_index);
  return Status::Ok();
#else
  (void)device_index;
  (void)ranks_sharing;
  return Status::Ok();  // CPU build: the cap only feeds the planner
#endif
}

}  // namespace liveavatar::cli
