// Helpers shared by the CLI tests that run the `liveavatar` binary: where the sources and the binary are, shell
// quoting and exit status, and reading a whole file.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace liveavatar::cli::testutil {

// The source tree (LIVEAVATAR_SOURCE_DIR, else the configure-time path).
inline std::string Src() {
  const char* e = std::getenv("LIVEAVATAR_SOURCE_DIR");
  return e != nullptr && *e ? e : LIVEAVATAR_SOURCE_DIR_DEFAULT;
}
// The liveavatar binary under test.
inline std::string Bin() { return LIVEAVATAR_CLI_BINARY; }
// Single-quotes `s` for /bin/sh (paths here carry no single quotes).
inline std::string Q(const std::string& s) { return "'" + s + "'"; }
// Runs `cmd` through /bin/sh; its exit status, or 128 when it was killed by a signal.
inline int Shell(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}
// The whole file (empty when it cannot be read).
inline std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace liveavatar::cli::testutil
