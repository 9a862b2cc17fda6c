// `liveavatar make-tiny --out DIR [--seed N]`: see make_tiny.h.
#include "cli_commands.h"
#include "liveavatar/core/logging.h"
#include "make_tiny.h"

namespace liveavatar::cli {

int RunMakeTiny(const ParsedCommand& cmd) {
  Status s = WriteTinyCheckpoint(cmd.make_tiny);
  if (!s.ok()) {
    LA_LOG_ERROR("make-tiny: {}", s.message());
    return 1;
  }
  return 0;
}

}  // namespace liveavatar::cli
