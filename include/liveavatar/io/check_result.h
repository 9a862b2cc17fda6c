// CheckResult: one finding of a pre-flight check (`liveavatar doctor`): a level, the section it belongs to,
// what was checked and found, and how to fix it. Produced by io/media_checks.h (inputs) and
// pipeline/checkpoint_checks.h (checkpoint); printed one per line by the CLI as
//   "PASS  <section>: <what>"   or   "WARN|FAIL  <section>: <what>  -> fix: <fix>".
// Plain values; safe to copy between threads.
#pragma once

#include <string>
#include <vector>

namespace liveavatar::io {

enum class CheckLevel {
  kPass,  // checked and fine
  kWarn,  // will run, but the output or the speed will likely suffer
  kFail,  // will not run, or the output will be broken
  kSkip,  // not checked (nothing to check, or not possible in this build)
};

// "PASS", "WARN", "FAIL", "SKIP".
inline const char* CheckLevelName(CheckLevel level) {
  switch (level) {
    case CheckLevel::kPass: return "PASS";
    case CheckLevel::kWarn: return "WARN";
    case CheckLevel::kFail: return "FAIL";
    case CheckLevel::kSkip: return "SKIP";
  }
  return "?";
}

struct CheckResult {
  CheckLevel level = CheckLevel::kPass;
  std::string section;  // "inputs", "memory", "distribution", "checkpoint"
  std::string what;     // one line: the item checked and what was measured / found
  std::string fix;      // what to do about it; empty for PASS

  bool failed() const { return level == CheckLevel::kFail; }
};

// Number of results at `level`.
inline size_t CountLevel(const std::vector<CheckResult>& results, CheckLevel level) {
  size_t n = 0;
  for (const auto& r : results) n += r.level == level ? 1 : 0;
  return n;
}

}  // namespace liveavatar::io
