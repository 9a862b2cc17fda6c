// The flag table of the `liveavatar` CLI (style.md habit 12): every flag is declared once, with its name, help
// group, value hint, help text, environment variable, the subcommands it applies to and the field it fills.
// cli_parse.cpp walks the table to build each CLI11 subcommand. Internal to apps/liveavatar.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace liveavatar::cli {

struct ParsedCommand;

// Subcommand bit masks.
enum SubcommandMask : unsigned {
  kSubGenerate = 1u << 0,
  kSubBatch = 1u << 1,
  kSubPlan = 1u << 2,
  kSubBench = 1u << 3,
  kSubDoctor = 1u << 4,
  kSubConvert = 1u << 5,
  kSubMakeTiny = 1u << 6,
  // Flags of a run; `doctor` takes them too, to check what that run would use.
  kSubRun = kSubGenerate | kSubBatch | kSubPlan | kSubBench | kSubDoctor,
  kSubAll = 0x7fu,
};

struct FlagDef {
  std::string name;   // CLI11 name list, e.g. "--fp8,!--no_fp8" or a positional "input"
  std::string group;  // help group: Inputs, Model, Sampling, Parallelism, Memory, Output, Logging
  std::string hint;   // value placeholder shown in help ("W*H"); empty for switches
  std::string help;
  std::string env;    // environment variable read when the flag is absent; empty for none
  unsigned subcommands = 0;
  // Adds the option to `app`, bound to its field of `target`.
  std::function<CLI::Option*(CLI::App& app, const FlagDef& def, ParsedCommand& target)> bind;
};

// The table, in help order.
const std::vector<FlagDef>& FlagTable();

}  // namespace liveavatar::cli
