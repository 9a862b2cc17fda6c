#include "cli_parse.h"

#include <memory>

#include <CLI/CLI.hpp>

#include "cli_flags.h"

namespace liveavatar::cli {

namespace {

struct SubcommandDef {
  const char* name;
  Command command;
  unsigned mask;
  const char* description;
};

const std::vector<SubcommandDef>& Subcommands() {
  static const std::vector<SubcommandDef> kSubs = {
      {"generate", Command::kGenerate, kSubGenerate,
       "Render a talking-avatar video from an image, speech and a prompt (default subcommand)"},
      {"batch", Command::kBatch, kSubBatch, "Render every sample of a --sample_list"},
      {"plan", Command::kPlan, kSubPlan, "Print the memory/placement plan of a generate command without running it"},
      {"doctor", Command::kDoctor, kSubDoctor,
       "Check the inputs, memory, distribution and checkpoint of a generate command (PASS/WARN/FAIL with fixes)"},
      {"convert", Command::kConvert, kSubConvert, "Convert a .pth/.bin/.safetensors(.index.json) file to safetensors"},
      {"make-tiny", Command::kMakeTiny, kSubMakeTiny,
       "Write a tiny random checkpoint directory in the real layout (tests, demo)"},
      {"bench", Command::kBench, kSubBench,
       "Time the DiT and VAE on random weights of any config (no checkpoint): ms per block, TFLOP/s, peak memory"},
  };
  return kSubs;
}

// Builds the whole CLI11 tree bound to `target`.
std::unique_ptr<CLI::App> BuildApp(ParsedCommand& target) {
  auto app = std::make_unique<CLI::App>(
      "liveavatar: streaming talking-avatar video generation (Live Avatar / Wan2.2-S2V-14B) on LibTorch.\n"
      "Run `liveavatar <subcommand> --help` for its flags; a first argument that is a flag means `generate`.",
      "liveavatar");
  app->require_subcommand(1);
  app->get_formatter()->column_width(34);
  for (const SubcommandDef& s : Subcommands()) {
    CLI::App* sub = app->add_subcommand(s.name, s.description);
    sub->get_formatter()->column_width(34);
    for (const FlagDef& f : FlagTable()) {
      if ((f.subcommands & s.mask) == 0) continue;
      CLI::Option* opt = f.bind(*sub, f, target);
      opt->group(f.group);
      if (!f.hint.empty()) opt->type_name(f.hint);
      if (!f.env.empty()) opt->envname(f.env);
    }
  }
  return app;
}

std::vector<std::string> WithDefaultSubcommand(std::vector<std::string> args) {
  if (!args.empty() && args[0].size() > 1 && args[0][0] == '-' && args[0] != "-h" && args[0] != "--help") {
    args.insert(args.begin(), "generate");
  }
  return args;
}

}  // namespace

const std::vector<std::string>& SubcommandNames() {
  static const std::vector<std::string> kNames = [] {
    std::vector<std::string> n;
    for (const auto& s : Subcommands()) n.push_back(s.name);
    return n;
  }();
  return kNames;
}

std::string HelpText(const std::string& subcommand) {
  std::vector<std::string> args;
  if (!subcommand.empty()) args.push_back(subcommand);
  args.push_back("--help");
  auto parsed = ParseCommandLine(args);
  return parsed.ok() ? parsed->help_text : parsed.status().message();
}

StatusOr<ParsedCommand> ParseCommandLine(const std::vector<std::string>& raw_args) {
  const std::vector<std::string> args = WithDefaultSubcommand(raw_args);
  ParsedCommand result;
  auto app = BuildApp(result);
  if (args.empty()) {
    return Status::InvalidArgument("no subcommand given; run `liveavatar --help` (subcommands: generate, batch, "
                                   "plan, doctor, convert, make-tiny, bench)");
  }
  // CLI11 parses a reversed vector (last argument first).
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app->parse(reversed);
  } catch (const CLI::CallForHelp&) {
    result.command = Command::kHelp;
    result.help_text = app->help();  // delegates to the selected subcommand
    for (const auto& s : Subcommands()) {
      if (app->got_subcommand(s.name)) result.name = s.name;
    }
    return result;
  } catch (const CLI::CallForAllHelp&) {
    result.command = Command::kHelp;
    result.help_text = app->help("", CLI::AppFormatMode::All);
    return result;
  } catch (const CLI::ParseError& e) {
    std::string where;
    for (const auto& s : Subcommands()) {
      if (app->got_subcommand(s.name)) where = std::string(s.name) + ": ";
    }
    return Status::InvalidArgument(where + e.what());
  }
  for (const SubcommandDef& s : Subcommands()) {
    if (app->got_subcommand(s.name)) {
      result.command = s.command;
      result.name = s.name;
    }
  }
  if (result.name.empty()) return Status::InvalidArgument("no subcommand given; run `liveavatar --help`");
  const bool run_like = result.command == Command::kGenerate || result.command == Command::kBatch ||
                        result.command == Command::kPlan || result.command == Command::kBench ||
                        result.command == Command::kDoctor;
  if (run_like) {
    Status s = pipeline::ValidateRunOptions(result.run);
    if (!s.ok()) return s.WithPrefix(result.name);
    result.warnings = pipeline::IgnoredFlagWarnings(result.run);
  }
  if (result.command == Command::kDoctor) {
    result.doctor.ckpt_dir = result.run.generate.ckpt_dir;
    result.doctor.lora_path = result.run.generate.lora_path_dmd;
  }
  if (result.command == Command::kBatch && result.run.generate.sample_list.empty()) {
    return Status::InvalidArgument("batch: a CONFIG file (or --sample_list) is required");
  }
  if (result.command == Command::kConvert && !result.convert.dtype.empty()) {
    const std::string& d = result.convert.dtype;
    if (d != "bf16" && d != "fp16" && d != "fp32") {
      return Status::InvalidArgument("convert: --dtype must be bf16, fp16 or fp32 (got '" + d + "')");
    }
  }
  if (result.run.parallel.threads < 0) {
    return Status::InvalidArgument(result.name + ": --threads must be >= 0");
  }
  return result;
}

StatusOr<ParsedCommand> ParseCommandLine(int argc, const char* const* argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return ParseCommandLine(args);
}

}  // namespace liveavatar::cli
