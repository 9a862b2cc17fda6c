#include "liveavatar/io/path_rules.h"

#include <filesystem>

namespace liveavatar::io {

namespace fs = std::filesystem;

std::string Printable(const std::string& bytes, size_t max) {
  std::string s;
  for (size_t i = 0; i < bytes.size() && i < max; ++i) {
    const unsigned char c = static_cast<unsigned char>(bytes[i]);
    s += c < 0x20 || c >= 0x7F ? '?' : static_cast<char>(c);
  }
  if (bytes.size() > max) s += "...";
  return s;
}

namespace {
bool HasControl(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7F) return true;
  }
  return false;
}
}  // namespace

StatusOr<std::string> PathInside(const std::string& root, const std::string& relative, const std::string& what) {
  const fs::path p(relative);
  bool bad = relative.empty() || p.is_absolute() || HasControl(relative);
  for (const auto& part : p) bad = bad || part == "..";
  if (bad) {
    return Status::InvalidArgument(what + " '" + Printable(relative) + "' is not a relative path inside " + root);
  }
  return (fs::path(root) / p).string();
}

Status CheckFileName(const std::string& name, const std::string& what) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos || HasControl(name)) {
    return Status::InvalidArgument(what + " '" + Printable(name) +
                                   "' is not a plain file name (no '/', '..', empty name or control character)");
  }
  return Status::Ok();
}

}  // namespace liveavatar::io
