#include "liveavatar/core/json_file.h"

#include <fstream>

namespace liveavatar {

StatusOr<nlohmann::json> ReadJsonFile(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) return Status::NotFound(path + ": cannot open " + what);
  nlohmann::json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    return Status::InvalidArgument(path + ": " + what + " is not valid JSON: " + e.what());
  }
  return j;
}

}  // namespace liveavatar
