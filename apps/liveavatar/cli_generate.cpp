// `liveavatar generate` and `liveavatar batch`: build the engine from the parsed options, render, report.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <ATen/Context.h>

#include "cli_commands.h"
#include "liveavatar/core/logging.h"
#include "liveavatar/dist/communicator.h"
#include "liveavatar/dist/launcher.h"
#include "liveavatar/dist/world.h"
#include "liveavatar/pipeline/batch.h"
#include "liveavatar/pipeline/checkpoint_checks.h"
#include "liveavatar/pipeline/engine.h"
#include "liveavatar/pipeline/progress.h"
#include "liveavatar/pipeline/report.h"
#include "liveavatar/pipeline/topology.h"
#include "liveavatar/pipeline/tpp_driver.h"
#include "liveavatar/runtime/oom.h"

namespace fs = std::filesystem;

namespace liveavatar::cli {

namespace {

// The CUDA device of local rank `local_rank`: one GPU per rank, or round-robin when more local ranks than GPUs
// share them (memory emulation with --max_gpu_mem_gb; the collectives are then staged through host memory over
// Gloo, dist::UsesHostStaging).
int DeviceIndexFor(int local_rank) {
  const int gpus = at::hasCUDA() ? static_cast<int>(at::getNumGPUs()) : 0;
  return gpus > 0 ? local_rank % gpus : local_rank;
}


pipeline::GenerationRequest RequestFrom(const pipeline::RunOptions& run, int world_size = 1) {
  pipeline::GenerationRequest r;
  const auto& g = run.generate;
  r.image = g.image;
  r.audio = g.audio;
  r.prompt = g.prompt;
  r.size = g.size.empty() ? pipeline::DefaultSize(world_size) : g.size;
  r.num_clip = g.num_clip;
  r.infer_frames = g.infer_frames;
  r.max_audio_s = g.max_audio_s;
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
  // NAME.y4m: uncompressed YUV4MPEG2 video + NAME.wav (exact uint8 frames, no FFmpeg needed).
  r.raw_video = fs::path(r.output).extension() == ".y4m";
  return r;
}

// The world this process belongs to and its layout; refuses layouts that cannot work (exit status 2).
struct Layout {
  dist::WorldInfo world;
  pipeline::Topology topology;
};
StatusOr<Layout> ResolveLayout(const pipeline::RunOptions& run) {
  Layout l;
  LA_ASSIGN_OR_RETURN(l.world, dist::DetectWorld());
  if (run.parallel.nproc_per_node > 1) {
    // main() launches the workers; a worker never sees the flag (dist::WorkerCommandLine strips it).
    return Status::InvalidArgument("--nproc_per_node " + std::to_string(run.parallel.nproc_per_node) +
                                   " inside a launched world (" + l.world.ToString() +
                                   "): use either the built-in launcher or torchrun/srun/mpirun, not both");
  }
  LA_ASSIGN_OR_RETURN(l.topology,
                      pipeline::MakeTopology(run.parallel, run.generate.sample_steps, l.world.world_size));
  return l;
}

// The output files a writer may leave as NAME.partial (the video, or the y4m + wav pair of raw mode).
std::vector<std::string> PartialPaths(const std::string& output) {
  if (output == "-" || output.find("://") != std::string::npos) return {};
  std::vector<std::string> p = {output + ".partial"};
  for (const char* ext : {".y4m", ".wav"}) p.push_back(fs::path(output).replace_extension(ext).string() + ".partial");
  return p;
}

void RemovePartials(const std::string& output) {
  std::error_code ec;
  for (const auto& p : PartialPaths(output)) fs::remove(p, ec);
}

// SIGTERM / SIGINT on the writer rank (the launcher stops every worker when one fails): remove the partial
// output, then die of the signal as before. The paths are fixed before the handler is installed.
constexpr int kMaxPartials = 4;
char g_partials[kMaxPartials][4096];
int g_num_partials = 0;
void RemovePartialsAndDie(int sig) {
  for (int i = 0; i < g_num_partials; ++i) ::unlink(g_partials[i]);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}
void CleanUpPartialsOnSignal(const std::string& output) {
  g_num_partials = 0;
  for (const auto& p : PartialPaths(output)) {
    if (g_num_partials == kMaxPartials || p.size() >= sizeof(g_partials[0])) break;
    std::memcpy(g_partials[g_num_partials], p.c_str(), p.size() + 1);
    ++g_num_partials;
  }
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = RemovePartialsAndDie;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

// The checkpoint pre-flight of Engine::Load (file headers only, every mismatch at once), run before planning so
// that a broken checkpoint is named as such rather than planned with default configs.
Status CheckCheckpointHeaders(const pipeline::RunOptions& run) {
  pipeline::CheckpointCheckOptions o;
  o.ckpt_dir = run.generate.ckpt_dir;
  o.load_lora = run.generate.load_lora;
  o.lora_path = run.generate.lora_path_dmd;
  o.training_config = run.generate.training_config;
  return pipeline::CheckCheckpoint(o).ToStatus();
}

// Fails fast (before loading any model) on inputs that cannot work: the request's numbers and size, its files,
// the output (container, folder, writable) and an existing output without --overwrite.
Status CheckInputs(const pipeline::GenerationRequest& r, bool overwrite) {
  std::error_code ec;
  LA_RETURN_IF_ERROR(pipeline::ValidateRequest(r));
  LA_RETURN_IF_ERROR(pipeline::CheckRequestFiles(r));
  if (r.output == "-" || r.output.find("://") != std::string::npos) return Status::Ok();
  if (!overwrite && fs::exists(r.output, ec)) {
    return Status::InvalidArgument("--save_file " + r.output +
                                   " exists; pass --overwrite to replace it (nothing was rendered)");
  }
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

// `local_rank` selects the GPU of a multi-process run.
pipeline::EngineOptions EngineOptionsFrom(const pipeline::RunOptions& run, int local_rank) {
  pipeline::EngineOptions e;
  e.ckpt_dir = run.generate.ckpt_dir;
  e.load_lora = run.generate.load_lora;
  e.lora_path = run.generate.lora_path_dmd;
  e.training_config = run.generate.training_config;
  e.t5_cpu = run.memory.t5_cpu;
  if (at::hasCUDA()) {
    e.device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(DeviceIndexFor(local_rank)));
    e.dtype = c10::kBFloat16;
  } else {
    // fp32 on the CPU: the reference numerics without bf16 rounding (the CPU path is for tests and demos).
    e.device = c10::Device(c10::kCPU);
    e.dtype = c10::kFloat;
  }
  e.fp8 = run.memory.fp8;
  e.offload_blocks = run.memory.offload_model.value_or(false);
  e.offload_kv_cache = run.memory.offload_kv_cache;
  return e;
}

namespace {

// --max_gpu_mem_gb in bytes on CUDA (the allocator's cap), -1 otherwise.
int64_t AllocatorCapBytes(const pipeline::RunOptions& run, const c10::Device& device) {
  if (!device.is_cuda() || run.memory.max_gpu_mem_gb <= 0) return -1;
  return static_cast<int64_t>(run.memory.max_gpu_mem_gb * 1024.0 * 1024.0 * 1024.0);
}

// Runs `body` (loading and generating); an allocator out-of-memory error thrown from it becomes OutOfMemory with
// the allocator's numbers (runtime/oom.h). Other exceptions pass through to main().
StatusOr<pipeline::GenerationResult> CatchOutOfMemory(
    const pipeline::RunOptions& run, const c10::Device& device,
    const std::function<StatusOr<pipeline::GenerationResult>()>& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    if (!runtime::IsOutOfMemory(e)) throw;
    return runtime::OutOfMemoryStatus(e, device, "out of memory", AllocatorCapBytes(run, device));
  }
}

int Finish(const ParsedCommand& cmd, const pipeline::GenerationRequest& req,
           const StatusOr<pipeline::GenerationResult>& result, bool writer, int rank = 0) {
  if (!result.ok()) {
    std::string msg = result.status().message();
    // An OOM although the plan said it fits: the plan's prediction goes next to the allocator's numbers.
    if (result.status().code() == Status::Code::kOutOfMemory) msg += "\n  " + PlanPredictionText(cmd.run, rank);
    LA_LOG_ERROR("generate: {}", msg);
    return 1;
  }
  if (!writer) return 0;
  if (!cmd.run.output.report.empty()) {
    if (Status s = pipeline::WriteReport(cmd.run.output.report, req, result.value()); !s.ok()) {
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

// One rank of a multi-process run (TPP stages, VAE rank; docs/parallel.md).
int RunGenerateRank(const ParsedCommand& cmd, const Layout& layout) {
  const dist::WorldInfo& w = layout.world;
  const pipeline::RankRole role = layout.topology.Role(w.rank);
  if (w.rank == 0) LA_LOG_INFO("generate: {}", layout.topology.ToString());
  pipeline::GenerationRequest req = RequestFrom(cmd.run, w.world_size);
  const pipeline::EngineOptions eopt = EngineOptionsFrom(cmd.run, w.local_rank);

  auto comm = dist::InitCommunicator(w);
  if (!comm.ok()) {
    LA_LOG_ERROR("generate: {}", comm.status().message());
    return 1;
  }
  dist::Communicator& c = **comm;
  // Rank 0's seed (and drawn seed) is everybody's, as the reference broadcasts base_seed.
  auto seed = pipeline::BroadcastValue(c, req.base_seed, 0, eopt.device);
  if (!seed.ok()) {
    LA_LOG_ERROR("generate: {}", seed.status().message());
    return 1;
  }
  req.base_seed = *seed;
  // Inputs are checked where they are read and written: on the writer.
  Status checked = role.is_writer ? CheckInputs(req, cmd.run.output.overwrite) : Status::Ok();
  if (Status s = pipeline::AgreeAcrossRanks(c, checked, "checking the inputs", eopt.device); !s.ok()) {
    LA_LOG_ERROR("generate: {}", s.message());
    return checked.code() == Status::Code::kInvalidArgument ? 2 : 1;
  }
  if (role.is_writer) CleanUpPartialsOnSignal(req.output);

  pipeline::ProgressReporter progress;
  auto result = CatchOutOfMemory(cmd.run, eopt.device, [&]() -> StatusOr<pipeline::GenerationResult> {
    LA_ASSIGN_OR_RETURN(auto driver, pipeline::TppDriver::Create(eopt, layout.topology, *comm));
    return driver->Generate(req, role.is_writer ? progress.AsFn() : pipeline::ProgressFn());
  });
  if (role.is_writer) progress.Finish();
  return Finish(cmd, req, result, role.is_writer, w.rank);
}

}  // namespace

// The memory plan comes before anything loads: --auto_plan may change the layout and memory modes, and a plan
// that does not fit the device stops the run with the alternatives that would (docs/memory.md).
StatusOr<pipeline::RunOptions> PlannedRun(const pipeline::RunOptions& run, const dist::WorldInfo& world) {
  pipeline::RunOptions out = run;
  // Ranks sharing a GPU only make sense as an emulation of smaller cards: each needs its own cap.
  const int gpus = at::hasCUDA() ? static_cast<int>(at::getNumGPUs()) : 0;
  int sharing = 1;
  if (gpus > 0 && world.local_world_size > gpus) {
    if (run.memory.max_gpu_mem_gb <= 0) {
      return Status::InvalidArgument(std::to_string(world.local_world_size) + " ranks on this node but " +
                                     std::to_string(gpus) + " GPU(s): ranks would share GPUs; pass --max_gpu_mem_gb "
                                     "to cap each rank (memory emulation; collectives then go through host memory "
                                     "over Gloo, slowly) or start at most " + std::to_string(gpus) + " ranks");
    }
    const int device = DeviceIndexFor(world.local_rank);
    sharing = world.local_world_size / gpus + (device < world.local_world_size % gpus ? 1 : 0);
  }
  if (run.memory.auto_plan) {
    LA_ASSIGN_OR_RETURN(out, ApplyAutoPlan(run));
  }
  LA_RETURN_IF_ERROR(PreflightPlan(out));
  LA_RETURN_IF_ERROR(ApplyGpuMemoryCap(out, DeviceIndexFor(world.local_rank), sharing));
  return out;
}

int RunGenerate(const ParsedCommand& parsed) {
  ParsedCommand cmd = parsed;
  for (const auto& [value, flag] : {std::make_pair(&cmd.run.generate.image, "--image"),
                                    std::make_pair(&cmd.run.generate.audio, "--audio")}) {
    if (value->empty()) {  // a usage error, before any planning or loading
      LA_LOG_ERROR("generate: {} is required", flag);
      return 2;
    }
  }
  {
    auto world = dist::DetectWorld();
    if (!world.ok() || !world->distributed()) {
      // One process: inputs and output are checked before planning or loading (a worker of a launched run is
      // checked by its launcher and its writer rank). The output name is fixed here (the default holds a time).
      const pipeline::GenerationRequest early = RequestFrom(cmd.run);
      if (Status s = CheckInputs(early, cmd.run.output.overwrite); !s.ok()) {
        LA_LOG_ERROR("generate: {}", s.message());
        return s.code() == Status::Code::kInvalidArgument ? 2 : 1;
      }
      cmd.run.output.save_file = early.output;
      if (Status s = CheckCheckpointHeaders(cmd.run); !s.ok()) {
        LA_LOG_ERROR("generate: {}", s.message());
        return 1;
      }
    }
    auto planned = PlannedRun(cmd.run, world.ok() ? *world : dist::WorldInfo{});
    if (!planned.ok()) {
      LA_LOG_ERROR("generate: {}", planned.status().message());
      return planned.status().code() == Status::Code::kInvalidArgument ? 2 : 1;
    }
    cmd.run = *planned;
  }
  auto layout = ResolveLayout(cmd.run);
  if (!layout.ok()) {
    LA_LOG_ERROR("generate: {}", layout.status().message());
    return 2;
  }
  for (const auto& w : layout->topology.warnings) {
    if (layout->world.rank == 0) LA_LOG_WARN("{}", w);
  }
  if (layout->world.distributed()) return RunGenerateRank(cmd, *layout);

  const pipeline::GenerationRequest req = RequestFrom(cmd.run);  // checked above, before planning
  const pipeline::EngineOptions eopt = EngineOptionsFrom(cmd.run);
  pipeline::ProgressReporter progress;
  auto result = CatchOutOfMemory(cmd.run, eopt.device, [&]() -> StatusOr<pipeline::GenerationResult> {
    LA_ASSIGN_OR_RETURN(auto engine, pipeline::Engine::Load(eopt));
    return engine->Generate(req, progress.AsFn());
  });
  progress.Finish();
  return Finish(cmd, req, result, true);
}

int RunLocalLaunch(const ParsedCommand& cmd, int argc, const char* const* argv) {
  const int nproc = static_cast<int>(cmd.run.parallel.nproc_per_node);
  if (std::getenv("LIVEAVATAR_LOCAL_LAUNCHER") != nullptr) {
    LA_LOG_ERROR("{}: --nproc_per_node in a worker of the built-in launcher", cmd.name);
    return 2;
  }
  if (cmd.command != Command::kGenerate) {
    LA_LOG_ERROR("{}: --nproc_per_node is supported by `generate` only (batch renders on one process)", cmd.name);
    return 2;
  }
  if (const char* ws = std::getenv("WORLD_SIZE"); ws != nullptr && std::atoi(ws) > 1) {
    LA_LOG_ERROR("generate: --nproc_per_node {} under an external launcher (WORLD_SIZE={}): use one or the other",
                 nproc, ws);
    return 2;
  }
  // Refuse a layout that cannot work, and bad inputs, before starting any worker.
  auto topology = pipeline::MakeTopology(cmd.run.parallel, cmd.run.generate.sample_steps, nproc);
  if (!topology.ok()) {
    LA_LOG_ERROR("generate: {}", topology.status().message());
    return 2;
  }
  const pipeline::GenerationRequest req = RequestFrom(cmd.run, nproc);
  if (Status s = CheckInputs(req, cmd.run.output.overwrite); !s.ok()) {
    LA_LOG_ERROR("generate: {}", s.message());
    return s.code() == Status::Code::kInvalidArgument ? 2 : 1;
  }
  if (Status s = CheckCheckpointHeaders(cmd.run); !s.ok()) {
    LA_LOG_ERROR("generate: {}", s.message());
    return 1;
  }
  if (!cmd.run.memory.auto_plan) {  // with --auto_plan every worker plans its own layout
    if (Status s = PreflightPlan(cmd.run); !s.ok()) {
      LA_LOG_ERROR("generate: {}", s.message());
      return s.code() == Status::Code::kInvalidArgument ? 2 : 1;
    }
  }
  // Every rank must agree on the output name (the default one holds a time stamp) and the seed (-1 draws one):
  // fix both here.
  std::vector<std::string> worker =
      dist::WorkerCommandLine(argc, argv, {"--nproc_per_node", "--save_file", "--base_seed"});
  worker.insert(worker.end(), {"--save_file", req.output, "--base_seed", std::to_string(req.base_seed)});
  LA_LOG_INFO("generate: launching {} workers ({})", nproc, topology->ToString());
  const dist::LaunchResult lr = dist::LaunchLocal(nproc, worker);
  if (!lr.status.ok()) {
    RemovePartials(req.output);  // a worker killed by SIGKILL cannot clean up after itself
    LA_LOG_ERROR("generate: {}", lr.status.message());
  }
  return lr.exit_code;
}

int RunBatch(const ParsedCommand& cmd) {
  if (auto layout = ResolveLayout(cmd.run); !layout.ok() || !layout->topology.single_process()) {
    LA_LOG_ERROR("batch: {}", layout.ok() ? std::string("batch renders on one process; use `generate` for "
                                                        "multi-process runs")
                                          : layout.status().message());
    return 2;
  }
  pipeline::GenerationRequest defaults = RequestFrom(cmd.run);
  auto jobs = pipeline::LoadBatchJobs(cmd.run.generate.sample_list, defaults, cmd.run.output.save_dir);
  if (!jobs.ok()) {
    LA_LOG_ERROR("batch: {}", jobs.status().message());
    return 1;
  }
  // Every job checked before the models load: a batch of bad jobs fails in seconds.
  const std::vector<Status> valid = pipeline::ValidateBatchJobs(*jobs);
  size_t bad = 0;
  for (size_t i = 0; i < valid.size(); ++i) {
    if (!valid[i].ok()) ++bad;
  }
  if (bad == jobs->size()) {
    for (size_t i = 0; i < valid.size(); ++i) LA_LOG_ERROR("batch: {}: {}", (*jobs)[i].name, valid[i].message());
    return bad > 125 ? 125 : static_cast<int>(bad);
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
