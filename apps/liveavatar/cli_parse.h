// Command-line parsing for the `liveavatar` executable: argv -> ParsedCommand (the options structs of
// pipeline/options.h plus the arguments of the utility subcommands). Pure: no logging, no file access, no
// process exit, so tests can check every flag. The flags themselves are declared once, in cli_flags.cpp.
//
// Subcommands: generate (default when the first argument is a flag), batch, plan, doctor, convert, make-tiny,
// bench. `--help` on any of them yields Command::kHelp with the grouped help text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "liveavatar/core/status.h"
#include "liveavatar/pipeline/options.h"

namespace liveavatar::cli {

enum class Command { kHelp, kGenerate, kBatch, kPlan, kDoctor, kConvert, kMakeTiny, kBench };

// `liveavatar doctor [generate flags]`: pre-flight checks of what that run would use (docs/doctor.md). It takes
// every flag of a run (ParsedCommand::run); these copy the two it needs most.
struct DoctorArgs {
  std::string ckpt_dir;   // = run.generate.ckpt_dir (--ckpt_dir)
  std::string lora_path;  // = run.generate.lora_path_dmd (--lora_path_dmd)
  bool json = false;      // --json: one JSON object instead of text lines
};

// `liveavatar convert IN OUT [--dtype D]`: any tensor file -> one .safetensors.
struct ConvertArgs {
  std::string input;
  std::string output;
  std::string dtype;  // "" keeps each tensor's dtype; bf16 | fp16 | fp32 convert floating tensors
};

// `liveavatar make-tiny --out DIR [--seed N]`: write a tiny random checkpoint in the real layout.
struct MakeTinyArgs {
  std::string out;
  uint64_t seed = 0;
  std::string config;  // configs/tiny.json (found relative to the cwd, then the source tree)
  std::string corpus;  // configs/tiny_corpus.txt, likewise
  std::string dims = "tiny";  // --dims tiny|real: configs/tiny.json, or configs/real_dims.json (real shapes, zeros)
  int64_t layers = 0;         // --layers N > 0: N DiT blocks and T5 layers (0: the config's)
};

// `liveavatar plan [generate flags] [--json] [--model_config PATH]`: print the memory plan.
struct PlanArgs {
  bool json = false;         // machine-readable output
  std::string model_config;  // DiT config.json, or a sectioned file like configs/tiny.json (dit, t5, vae,
                             // wav2vec2); default: the configs of --ckpt_dir, else the 14B defaults
  std::string device;        // "cuda" | "cpu": plan for that device kind; default: this machine's
};

// `liveavatar bench [--model_config PATH | --tiny] [--layers N] [--size W*H] [--json]`: DiT/VAE timings on random
// weights created on the device (apps/liveavatar/cli_bench.cpp, docs/performance.md).
struct BenchArgs {
  std::string model_config;  // DiT config.json or a sectioned file (dit, vae); default: the 14B DiT + Wan2.1 VAE
  bool tiny = false;         // configs/tiny.json (found like make-tiny's --config)
  int64_t layers = 0;        // override num_layers (0: the config's)
  std::string shape;         // "W*H" exact video shape (multiples of 64); default: --size (704*384)
  std::string device;        // "cuda" | "cpu"; default: cuda when available
  std::string dtype = "bf16";  // bf16 | fp32
  int64_t warmup = 1;        // untimed runs of each measured call
  int64_t iters = 5;         // timed runs; the median is reported
  bool vae = true;           // --no_vae skips the VAE decode timing
  bool with_fp8 = false;     // also time the DiT with FP8 weights dequantised per block
  bool json = false;         // one JSON object on stdout
  bool load = false;         // --load: time loading --ckpt_dir the way generate does (cli_bench_load.cpp)
};

struct ParsedCommand {
  Command command = Command::kHelp;
  std::string name;       // subcommand name ("generate", ...); "" for top-level help
  std::string help_text;  // Command::kHelp only
  pipeline::RunOptions run;  // generate, batch, plan, bench, doctor
  DoctorArgs doctor;
  ConvertArgs convert;
  MakeTinyArgs make_tiny;
  BenchArgs bench;
  PlanArgs plan;
  std::string log_level = "info";  // --log-level
  // One line per flag the reference ignores or this engine does not support (to be logged as warnings).
  std::vector<std::string> warnings;
};

// Parses argv (argv[0] is the program name). InvalidArgument with one message naming the flag for unknown
// flags, missing values, bad --size / --infer_frames / str2bool values, etc.
StatusOr<ParsedCommand> ParseCommandLine(int argc, const char* const* argv);
StatusOr<ParsedCommand> ParseCommandLine(const std::vector<std::string>& args);  // args without argv[0]

// The grouped --help text of `subcommand` ("" for the top level), as printed by `liveavatar [sub] --help`.
std::string HelpText(const std::string& subcommand);
// Every subcommand name, in help order.
const std::vector<std::string>& SubcommandNames();

}  // namespace liveavatar::cli
