// Logging through spdlog with one engine-wide logger. `SetLogLevel` takes trace|debug|info|warn|error|off;
// `SetRankPrefix` adds "[rank r/n] " to every line once ranks exist. Thread-safe (spdlog's mt sinks).
#pragma once

#include <string>

#include <spdlog/spdlog.h>

#include "liveavatar/core/status.h"

namespace liveavatar {

// Installs the stderr logger (idempotent). Called by the CLI and by tests.
void InitLogging();
// Returns InvalidArgument naming `--log-level` for an unknown level.
Status SetLogLevel(const std::string& level);
// rank < 0 removes the prefix.
void SetRankPrefix(int rank, int world_size);

}  // namespace liveavatar

#define LA_LOG_TRACE(...) SPDLOG_TRACE(__VA_ARGS__)
#define LA_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define LA_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define LA_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define LA_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
