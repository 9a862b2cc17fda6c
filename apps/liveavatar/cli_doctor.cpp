// `liveavatar doctor --ckpt_dir DIR [--lora_path_dmd FILE]`: one PASS/FAIL line per checkpoint piece
// (io::InspectCheckpointDir), exit 0 only when every piece passes.
#include <cstdio>

#include "cli_commands.h"
#include "liveavatar/core/logging.h"
#include "liveavatar/io/checkpoint_dir.h"

namespace liveavatar::cli {

int RunDoctor(const ParsedCommand& cmd) {
  const auto checks = io::InspectCheckpointDir(cmd.doctor.ckpt_dir, cmd.doctor.lora_path);
  int failed = 0;
  for (const auto& c : checks) {
    if (c.ok) {
      std::printf("PASS  %-30s %s\n", c.what.c_str(), c.path.c_str());
    } else {
      ++failed;
      std::printf("FAIL  %-30s %s: %s\n", c.what.c_str(), c.path.c_str(), c.problem.c_str());
    }
  }
  std::fflush(stdout);
  if (failed > 0) {
    LA_LOG_ERROR("doctor: {} of {} checks failed for {}", failed, checks.size(), cmd.doctor.ckpt_dir);
    return 1;
  }
  LA_LOG_INFO("doctor: checkpoint directory {} is complete", cmd.doctor.ckpt_dir);
  return 0;
}

}  // namespace liveavatar::cli
