// Paths read from files (an index's shard names, batch job names and outputs) must stay where they belong. One
// rule for every reader: a relative path with no "..", no absolute root, no empty or control-character name.
#pragma once

#include <string>

#include "liveavatar/core/status.h"

namespace liveavatar::io {

// `root` / `relative` when `relative` is a plain relative path inside `root`; InvalidArgument naming `what` and
// the offending text otherwise (control characters shown as '?').
StatusOr<std::string> PathInside(const std::string& root, const std::string& relative, const std::string& what);

// A single file name (no '/', no "..", not empty, no control character): what a batch job name becomes inside
// --save_dir. InvalidArgument naming `what` otherwise.
Status CheckFileName(const std::string& name, const std::string& what);

// `bytes` as printable text for an error message: control and non-ASCII bytes as '?', at most `max` characters.
std::string Printable(const std::string& bytes, size_t max = 80);

}  // namespace liveavatar::io
