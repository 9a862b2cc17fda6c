// liveavatar: command-line entry point. Parses (cli_parse.cpp), sets up logging and threads, dispatches to the
// subcommand (cli_*.cpp) and turns any escaped error into one message and a non-zero exit status.
#include <cstdio>
#include <cstdlib>
#include <exception>

#include <c10/util/Exception.h>

#include "cli_commands.h"
#include "cli_parse.h"
#include "liveavatar/core/logging.h"
#include "liveavatar/core/threads.h"

namespace {

int Dispatch(const liveavatar::cli::ParsedCommand& cmd, int argc, char** argv) {
  using liveavatar::cli::Command;
  if ((cmd.command == Command::kGenerate || cmd.command == Command::kBatch) && cmd.run.parallel.nproc_per_node > 1) {
    return liveavatar::cli::RunLocalLaunch(cmd, argc, argv);
  }
  switch (cmd.command) {
    case Command::kHelp:
      std::fputs(cmd.help_text.c_str(), stdout);
      return 0;
    case Command::kDoctor:
      return liveavatar::cli::RunDoctor(cmd);
    case Command::kConvert:
      return liveavatar::cli::RunConvert(cmd);
    case Command::kMakeTiny:
      return liveavatar::cli::RunMakeTiny(cmd);
    case Command::kGenerate:
      return liveavatar::cli::RunGenerate(cmd);
    case Command::kBatch:
      return liveavatar::cli::RunBatch(cmd);
    case Command::kPlan:
      return liveavatar::cli::RunPlan(cmd);
    case Command::kBench:
      return liveavatar::cli::RunBench(cmd);
  }
  LA_LOG_ERROR("{}: not yet implemented", cmd.name);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  liveavatar::ReexecWithSingleThreadedBlas(argv);
  liveavatar::InitLogging();
  auto parsed = liveavatar::cli::ParseCommandLine(argc, argv);
  if (!parsed.ok()) {
    LA_LOG_ERROR("{}", parsed.status().message());
    return 2;
  }
  const liveavatar::cli::ParsedCommand& cmd = *parsed;
  if (auto s = liveavatar::SetLogLevel(cmd.log_level); !s.ok()) {
    LA_LOG_ERROR("{}", s.message());
    return 2;
  }
  // Processes started by a launcher (torchrun-style RANK / WORLD_SIZE) prefix every log line with their rank.
  const char* rank = std::getenv("RANK");
  const char* world = std::getenv("WORLD_SIZE");
  if (rank != nullptr && world != nullptr && std::atoi(world) > 1) {
    liveavatar::SetRankPrefix(std::atoi(rank), std::atoi(world));
  }
  if (cmd.command != liveavatar::cli::Command::kHelp) {
    const int threads = liveavatar::InitCpuThreads(static_cast<int>(cmd.run.parallel.threads));
    LA_LOG_DEBUG("{}: {} CPU threads", cmd.name, threads);
  }
  for (const auto& w : cmd.warnings) LA_LOG_WARN("{}", w);
  try {
    return Dispatch(cmd, argc, argv);
  } catch (const liveavatar::StatusError& e) {
    LA_LOG_ERROR("{}: {}", cmd.name, e.status().message());
  } catch (const c10::Error& e) {
    LA_LOG_ERROR("{}: {}", cmd.name, e.what_without_backtrace());
  } catch (const std::exception& e) {
    LA_LOG_ERROR("{}: {}", cmd.name, e.what());
  }
  return 1;
}
