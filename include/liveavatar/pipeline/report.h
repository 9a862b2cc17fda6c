// `--report FILE.json`: a machine-readable record of one generation — inputs, resolved size, seed, frame count,
// timings per stage and per block, peak memory, and library versions.
#pragma once

#include <string>

#include "liveavatar/core/status.h"
#include "liveavatar/pipeline/engine.h"

namespace liveavatar::pipeline {

// Writes the report atomically (path + ".partial", then rename). IOError naming the path on failure.
Status WriteReport(const std::string& path, const GenerationRequest& request, const GenerationResult& result);

}  // namespace liveavatar::pipeline
