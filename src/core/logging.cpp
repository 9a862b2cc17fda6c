#include "liveavatar/core/logging.h"

#include <mutex>

#include <spdlog/sinks/stdout_color_sinks.h>

namespace liveavatar {

namespace {
std::once_flag g_init;
const char* kDefaultPattern = "[%H:%M:%S.%e] [%^%l%$] %v";
}  // namespace

void InitLogging() {
  std::call_once(g_init, [] {
    auto logger = spdlog::stderr_color_mt("liveavatar");
    logger->set_pattern(kDefaultPattern);
    spdlog::set_default_logger(logger);
    spdlog::set_level(spdlog::level::info);
  });
}

Status SetLogLevel(const std::string& level) {
  InitLogging();
  static const char* kLevels[] = {"trace", "debug", "info", "warn", "error", "off"};
  for (const char* l : kLevels) {
    if (level == l) {
      spdlog::set_level(spdlog::level::from_str(level));
      return Status::Ok();
    }
  }
  return Status::InvalidArgument("--log-level: unknown level '" + level +
                                 "' (expected trace, debug, info, warn, error or off)");
}

void SetRankPrefix(int rank, int world_size) {
  InitLogging();
  if (rank < 0) {
    spdlog::set_pattern(kDefaultPattern);
    return;
  }
  spdlog::set_pattern("[%H:%M:%S.%e] [rank " + std::to_string(rank) + "/" + std::to_string(world_size) +
                      "] [%^%l%$] %v");
}

}  // namespace liveavatar
