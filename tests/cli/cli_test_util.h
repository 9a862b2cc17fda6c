// Helpers shared by the CLI tests that run the `liveavatar` binary: where the sources and the binary are, shell
// quoting and exit status, and reading a whole file.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "make_tiny.h"

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

// The per-process temp folder `<tmp>/<stem>_<pid>` with a make-tiny checkpoint of `seed` in its "ckpt"
// subfolder, for a test suite's SetUpTestSuite; the Status of make-tiny (the folder exists either way).
inline Status MakeTinySuiteRoot(const std::string& stem, uint64_t seed, std::string* root) {
  namespace fs = std::filesystem;
  *root = (fs::temp_directory_path() / (stem + "_" + std::to_string(::getpid()))).string();
  fs::create_directories(*root);
  MakeTinyArgs args;
  args.out = *root + "/ckpt";
  args.seed = seed;
  return WriteTinyCheckpoint(args);
}

}  // namespace liveavatar::cli::testutil
