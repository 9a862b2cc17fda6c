// Subcommand bodies of the `liveavatar` executable. Each takes the parsed command, does its work, logs, and
// returns the process exit status (0 success, 1 failure, 2 usage / not yet implemented). Internal to
// apps/liveavatar; main.cpp dispatches and catches exceptions once.
#pragma once

#include <nlohmann/json.hpp>

#include "cli_parse.h"
#include "liveavatar/core/status.h"
#include "liveavatar/pipeline/engine.h"
#include "liveavatar/pipeline/options.h"
#include "liveavatar/runtime/memory_planner.h"

namespace liveavatar::cli {

int RunDoctor(const ParsedCommand& cmd);    // cli_doctor.cpp
int RunConvert(const ParsedCommand& cmd);   // cli_convert.cpp
int RunMakeTiny(const ParsedCommand& cmd);  // cli_make_tiny.cpp
int RunGenerate(const ParsedCommand& cmd);  // cli_generate.cpp
// `--nproc_per_node N` (N > 1): checks the layout and inputs, then runs N workers of this same command line
// through dist::LaunchLocal (docs/parallel.md). cli_generate.cpp.
int RunLocalLaunch(const ParsedCommand& cmd, int argc, const char* const* argv);
// Exit status = number of failed jobs (capped at 125).
int RunBatch(const ParsedCommand& cmd);     // cli_generate.cpp
// DiT/VAE timings on random weights (cli_bench.cpp): Bench() returns the --json object, RunBench() prints it.
StatusOr<nlohmann::json> Bench(const ParsedCommand& cmd);
int RunBench(const ParsedCommand& cmd);     // exit 0 ok, 1 failure, 2 bad flags
// The engine options of `run` (device and dtype of this machine; `local_rank` selects the GPU of a rank).
pipeline::EngineOptions EngineOptionsFrom(const pipeline::RunOptions& run, int local_rank = 0);
// `bench --load` (cli_bench_load.cpp): load timings and memory of --ckpt_dir as one JSON object.
StatusOr<nlohmann::json> BenchLoad(const ParsedCommand& cmd);
int RunBenchLoad(const ParsedCommand& cmd);
// Prints the memory plan (table or --json). Exit status 0 fits, 1 does not fit (alternatives listed), 2 invalid
// topology.
int RunPlan(const ParsedCommand& cmd);      // cli_plan.cpp

// The planner inputs of `run` (cli_plan.cpp): architecture from `model_config` / --ckpt_dir / the 14B defaults,
// size from --size (+ --image), audio length from --audio, topology from the flags and the world size,
// `device` "cuda" | "cpu" | "" (this machine). `for_generate`: only measures this build's engine implements.
StatusOr<runtime::PlanInputs> PlanInputsForRun(const pipeline::RunOptions& run, const std::string& model_config,
                                               bool for_generate, const std::string& device = "");
// Memory preflight of `generate` (cli_plan.cpp): plans what this build's engine will do with `run` on this
// machine (CUDA device 0 in bf16, else the CPU in fp32; budget --max_gpu_mem_gb, else the free device memory /
// RAM) before anything is loaded. OutOfMemory listing alternatives that fit, each with its predicted peak, when
// the plan does not fit; InvalidArgument for an impossible topology.
Status PreflightPlan(const pipeline::RunOptions& run);
// One line for an out-of-memory error of rank `rank`: the plan's predicted peak for that rank's role, its phase
// and largest components, and the budget (cli_plan.cpp). Never fails (says "not available" instead).
std::string PlanPredictionText(const pipeline::RunOptions& run, int rank);
// --auto_plan: `run` with the fastest full-quality placement/topology that fits on the same number of
// processes (offload, T5 on the CPU, FSDP, Ulysses, VAE rank); OutOfMemory when none fits.
StatusOr<pipeline::RunOptions> ApplyAutoPlan(const pipeline::RunOptions& run);
// --max_gpu_mem_gb on CUDA: caps LibTorch's caching allocator on `device_index` at that many GiB
// (setMemoryFraction). `ranks_sharing` ranks use that device (each with the same cap): InvalidArgument when
// their caps together exceed it. No-op without the flag or in a CPU build.
Status ApplyGpuMemoryCap(const pipeline::RunOptions& run, int device_index, int ranks_sharing = 1);

}  // namespace liveavatar::cli
