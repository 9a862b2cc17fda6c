// Internal: the run-time binding to liveavatar_spm_shim (see shim/spm_shim.h for why SentencePiece lives in its
// own dlopen()ed library). The library is opened once per process and never closed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "liveavatar/core/status.h"
#include "models/t5/shim/spm_shim.h"

namespace liveavatar::models::t5::internal {

// Function table of a loaded shim.
struct SpmApi {
  std::string path;  // the shared object that was opened
  la_spm_processor* (*load)(const char*) = nullptr;
  void (*free)(la_spm_processor*) = nullptr;
  int (*encode)(const la_spm_processor*, const char*, size_t, int32_t*, size_t, size_t*) = nullptr;
  int (*piece_size)(const la_spm_processor*) = nullptr;
  int (*eos_id)(const la_spm_processor*) = nullptr;
  int (*unk_id)(const la_spm_processor*) = nullptr;
  int (*pad_id)(const la_spm_processor*) = nullptr;
  int (*piece_to_id)(const la_spm_processor*, const char*) = nullptr;
  int (*train)(const char*) = nullptr;
  const char* (*last_error)() = nullptr;
};

// Candidate paths, in search order: $LIVEAVATAR_SPM_SHIM; <exe dir>/../lib/<name>; <exe dir>/<name>; the build
// tree path compiled in (LIVEAVATAR_SPM_SHIM_BUILD_PATH), when defined.
std::vector<std::string> SpmShimCandidates();

// Opens the first existing file of `candidates` with RTLD_NOW|RTLD_LOCAL|RTLD_DEEPBIND and resolves every
// symbol (no caching; a successfully opened library stays open for the process lifetime).
// NotSupported when the build has no SentencePiece; NotFound listing every searched path when no candidate
// exists; Internal when a candidate exists but cannot be opened or lacks a symbol.
StatusOr<const SpmApi*> OpenSpmShim(const std::vector<std::string>& candidates);

// OpenSpmShim(SpmShimCandidates()), thread-safe; a success is cached for the process lifetime, a failure is not
// (fixing $LIVEAVATAR_SPM_SHIM and retrying works).
StatusOr<const SpmApi*> GetSpmApi();

}  // namespace liveavatar::models::t5::internal
