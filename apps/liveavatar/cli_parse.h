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

// `liveavatar doctor`: check a checkpoint directory (and a LoRA file).
struct DoctorArgs {
  std::string ckpt_dir;   // --ckpt_dir (required)
  std::string lora_path;  // --lora_path_dmd (optional)
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
};

struct ParsedCommand {
  Command command = Command::kHelp;
  std::string name;       // subcommand name ("generate", ...); "" for top-level help
  std::string help_text;  // Command::kHelp only
  pipeline::RunOptions run;  // generate, batch, plan, bench
  DoctorArgs doctor;
  ConvertArgs convert;
  MakeTinyArgs make_tiny;
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
