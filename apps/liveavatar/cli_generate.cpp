// `liveavatar generate` and `liveavatar batch`: build the engine from the parsed options, render, report.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>

#include <ATen/Context.h>

#include "cli_commands.h"
#include "liveavatar/core/logging.h"
#include "liveavatar/pipeline/batch.h"
#include "liveavatar/pipeline/engine.h"
#include "liveavatar/pipeline/progress.h"
#include "liveavatar/pipeline/report.h"

namespace fs = std::filesystem;

namespace liveavatar::cli {

namespace {

pipeline::EngineOptions EngineOptionsFrom(const pipeline::RunOptions& run) {
  pipeline::EngineOptions e;
  e.ckpt_dir = run.generate.ckpt_dir;
  e.load_lora = run.generate.load_lora;
  e.lora_path = run.generate.lora_path_dmd;
  e.training_config = run.generate.training_config;
  e.t5_cpu = run.memory.t5_cpu;
  if (at::hasCUDA()) {
    e.device = c10::Device(c10::kCUDA, 0);
    e.dtype = c10::kBFloat16;
  } else {
    // fp32 on the CPU: the reference numerics without bf16 rounding (the CPU path is for tests and demos).
    e.device = c10::Device(c10::kCPU);
    e.dtype = c10::kFloat;
  }
  if (run.memory.fp8) {
    LA_LOG_WARN("--fp8: FP8 weights are not implemented in this build yet; the DiT runs in {} "
                "(more memory, no quality loss). Pass --no_fp8 to silence this.",
                e.dtype == c10::kFloat ? "fp32" : "bf16");
  }
  return e;
}

pipeline::GenerationRequest RequestFrom(const pipeline::RunOptions& run) {
  pipeline::GenerationRequest r;
  const auto& g = run.generate;
  r.image = g.image;
  r.audio = g.audio;
  r.prompt = g.prompt;
  r.size = g.size.empty() ? pipeline::DefaultSize(1) : g.size;
  r.num_clip = g.num_clip;
  r.infer_frames = g.infer_frames;
  r.sample_steps = g.sample_steps;
  r.base_seed = g.base_seed;
  if (r.base_seed < 0) {
    r.base_seed = static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
    LA_LOG_INFO("--base_seed -1: drew seed {}", r.base_seed);
  }
  r.rolling_sink_d = g.rolling_sink_d;
  r.crf = static_cast<int>(run.output.crf);
  r.preset = run.output.preset;
  r.output = run.output.save_file.empty()
                 ? pipeline::DefaultOutputName(run.output.save_dir, r.sample_steps, r.prompt)
                 : run.output.save_file;
  return r;
}

// Multi-process topologies (TPP stages, Ulysses, FSDP) are not wired into generation yet: refuse them instead
// of silently rendering on one process.
Status CheckTopology(const pipeline::RunOptions& run) {
  const char* world = std::getenv("WORLD_SIZE");
  if (run.parallel.nproc_per_node > 1 || (world != nullptr && std::atoi(world) > 1)) {
    return Status::NotSupported("multi-process generation (--nproc_per_node / WORLD_SIZE > 1: TPP, Ulysses, FSDP) "
                                "is not implemented yet; run one process (it uses one GPU, or the CPU)");
  }
  if (run.parallel.ulysses_size > 1 || run.parallel.dit_fsdp) {
    return Status::NotSupported("--ulysses_size > 1 and --dit_fsdp need several processes, which generation does "
                                "not support yet; drop them to run on one process");
  }
  if (run.parallel.enable_vae_parallel) {
    LA_LOG_WARN("--enable_vae_parallel has no effect on one process (the reference forces it off too)");
  }
  return Status::Ok();
}

// Fails fast (before loading any model) on inputs that cannot work.
Status CheckInputs(const pipeline::GenerationRequest& r) {
  std::error_code ec;
  if (r.image.empty()) return Status::InvalidArgument("--image is required");
  if (r.audio.empty()) return Status::InvalidArgument("--audio is required");
  if (!fs::is_regular_file(r.image, ec)) return Status::NotFound("--image: " + r.image + ": no such file");
  if (!fs::is_regular_file(r.audio, ec)) return Status::NotFound("--audio: " + r.audio + ": no such file");
  if (r.output == "-" || r.output.find("://") != std::string::npos) return Status::Ok();
  const fs::path parent = fs::path(r.output).parent_path();
  if (!parent.empty()) {
    fs::create_directories(parent, ec);
    if (!fs::is_directory(parent, ec)) {
      return Status::IOError("--save_file/--save_dir: cannot create output directory " + parent.string());
    }
  }
  // Probe writability with the same .partial name the writer will use, and remove it again.
  const std::string probe = r.output + ".partial";
  std::FILE* f = std::fopen(probe.c_str(), "wb");
  if (f == nullptr) return Status::IOError("--save_file: cannot write to " + probe + " (output directory not writable?)");
  std::fclose(f);
  fs::remove(probe, ec);
  return Status::Ok();
}

}  // namespace

int RunGenerate(const ParsedCommand& cmd) {
  if (Status s = CheckTopology(cmd.run); !s.ok()) {
    LA_LOG_ERROR("generate: {}", s.message());
    return 2;
  }
  const pipeline::GenerationRequest req = RequestFrom(cmd.run);
  if (Status s = CheckInputs(req); !s.ok()) {
    LA_LOG_ERROR("generate: {}", s.message());
    return s.code() == Status::Code::kInvalidArgument ? 2 : 1;  // a missing required flag is a usage error
  }
  auto engine = pipeline::Engine::Load(EngineOptionsFrom(cmd.run));
  if (!engine.ok()) {
    LA_LOG_ERROR("generate: {}", engine.status().message());
    return 1;
  }
  pipeline::ProgressReporter progress;
  auto result = (*engine)->Generate(req, progress.AsFn());
  progress.Finish();
  if (!result.ok()) {
    LA_LOG_ERROR("generate: {}", result.status().message());
    return 1;
  }
  if (!cmd.run.output.report.empty()) {
    if (Status s = pipeline::WriteReport(cmd.run.output.report, req, *result); !s.ok()) {
      LA_LOG_ERROR("generate: {}", s.message());
      return 1;
    }
  }
  for (const auto& path : result->outputs) {
    LA_LOG_INFO("wrote {} ({} frames, {}x{}, {} clips, seed {}, {:.1f} s)", path, result->frames, result->width,
                result->height, result->num_clips, result->seed, result->total_ms / 1000.0);
  }
  return 0;
}

int RunBatch(const ParsedCommand& cmd) {
  if (Status s = CheckTopology(cmd.run); !s.ok()) {
    LA_LOG_ERROR("batch: {}", s.message());
    return 2;
  }
  pipeline::GenerationRequest defaults = RequestFrom(cmd.run);
  auto jobs = pipeline::LoadBatchJobs(cmd.run.generate.sample_list, defaults, cmd.run.output.save_dir);
  if (!jobs.ok()) {
    LA_LOG_ERROR("batch: {}", jobs.status().message());
    return 1;
  }
  auto engine = pipeline::Engine::Load(EngineOptionsFrom(cmd.run));
  if (!engine.ok()) {
    LA_LOG_ERROR("batch: {}", engine.status().message());
    return 1;
  }
  pipeline::ProgressReporter progress;
  const pipeline::BatchSummary s = pipeline::RunBatch(**engine, *jobs, cmd.run.output.overwrite, progress.AsFn());
  progress.Finish();
  LA_LOG_INFO("batch: {} rendered, {} skipped, {} failed", s.done, s.skipped, s.failed);
  for (const auto& e : s.errors) LA_LOG_ERROR("batch: {}", e);
  return s.failed > 125 ? 125 : s.failed;
}

}  // namespace liveavatar::cli
