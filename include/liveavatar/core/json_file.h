// Reading a JSON file into nlohmann::json with the engine's error conventions: NotFound naming the path and
// what the file is for when it cannot be opened, InvalidArgument naming the path when it is not valid JSON.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "liveavatar/core/status.h"

namespace liveavatar {

// `what` describes the file in errors, e.g. "DiT config.json".
StatusOr<nlohmann::json> ReadJsonFile(const std::string& path, const std::string& what);

}  // namespace liveavatar
