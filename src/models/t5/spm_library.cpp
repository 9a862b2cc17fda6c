#include "models/t5/spm_library.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <system_error>

namespace liveavatar::models::t5::internal {
namespace {

constexpr const char* kShimFileName = "libliveavatar_spm_shim.so";
constexpr const char* kEnvVar = "LIVEAVATAR_SPM_SHIM";

std::string ExecutableDir() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  return exe.parent_path().string();
}

template <typename Fn>
bool Resolve(void* handle, const char* name, Fn* out, std::string* missing) {
  void* sym = dlsym(handle, name);
  if (sym == nullptr) {
    if (!missing->empty()) *missing += ", ";
    *missing += name;
    return false;
  }
  *out = reinterpret_cast<Fn>(sym);
  return true;
}

}  // namespace

StatusOr<const SpmApi*> OpenSpmShim(const std::vector<std::string>& candidates) {
#ifndef LIVEAVATAR_HAVE_SENTENCEPIECE
  (void)candidates;
  return Status::NotSupported(
      "this build of liveavatar has no SentencePiece support, so prompts cannot be tokenized: install "
      "libsentencepiece-dev and reconfigure (LIVEAVATAR_WITH_SENTENCEPIECE=AUTO or ON)");
#else
  std::string searched;
  for (const auto& candidate : candidates) {
    searched += "\n  " + candidate;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(candidate, ec)) {
      searched += " (not found)";
      continue;
    }
    void* handle = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle == nullptr) {
      const char* err = dlerror();
      return Status::Internal("cannot open the SentencePiece shim " + candidate + ": " +
                              (err != nullptr ? err : "unknown dlopen error"));
    }
    auto* api = new SpmApi();  // lives for the process, like the library
    api->path = candidate;
    std::string missing;
    int (*abi_version)() = nullptr;
    Resolve(handle, "la_spm_abi_version", &abi_version, &missing);
    Resolve(handle, "la_spm_load", &api->load, &missing);
    Resolve(handle, "la_spm_free", &api->free, &missing);
    Resolve(handle, "la_spm_encode", &api->encode, &missing);
    Resolve(handle, "la_spm_piece_size", &api->piece_size, &missing);
    Resolve(handle, "la_spm_eos_id", &api->eos_id, &missing);
    Resolve(handle, "la_spm_unk_id", &api->unk_id, &missing);
    Resolve(handle, "la_spm_pad_id", &api->pad_id, &missing);
    Resolve(handle, "la_spm_piece_to_id", &api->piece_to_id, &missing);
    Resolve(handle, "la_spm_train", &api->train, &missing);
    Resolve(handle, "la_spm_last_error", &api->last_error, &missing);
    if (!missing.empty()) {
      delete api;
      dlclose(handle);
      return Status::Internal("SentencePiece shim " + candidate + " lacks symbols: " + missing +
                              " (stale build? rebuild target liveavatar_spm_shim)");
    }
    if (abi_version() != LA_SPM_SHIM_ABI_VERSION) {
      const int found = abi_version();
      delete api;
      dlclose(handle);
      return Status::Internal("SentencePiece shim " + candidate + " has ABI version " + std::to_string(found) +
                              ", expected " + std::to_string(LA_SPM_SHIM_ABI_VERSION) +
                              " (stale build? rebuild target liveavatar_spm_shim)");
    }
    return static_cast<const SpmApi*>(api);
  }
  return Status::NotFound(std::string("SentencePiece shim ") + kShimFileName + " not found; searched:" + searched +
                          "\nset $" + kEnvVar + " to its path or install it next to the executable (../lib/)");
#endif
}

std::vector<std::string> SpmShimCandidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv(kEnvVar); env != nullptr && env[0] != '\0') out.emplace_back(env);
  const std::string exe_dir = ExecutableDir();
  if (!exe_dir.empty()) {
    out.push_back(exe_dir + "/../lib/" + kShimFileName);
    out.push_back(exe_dir + "/" + kShimFileName);
  }
#ifdef LIVEAVATAR_SPM_SHIM_BUILD_PATH
  out.emplace_back(LIVEAVATAR_SPM_SHIM_BUILD_PATH);
#endif
  return out;
}

StatusOr<const SpmApi*> GetSpmApi() {
  // Success is cached for the process lifetime; a failure is not, so fixing $LIVEAVATAR_SPM_SHIM and retrying works.
  static std::mutex mu;
  static const SpmApi* loaded = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (loaded != nullptr) return loaded;
  auto result = OpenSpmShim(SpmShimCandidates());
  if (result.ok()) loaded = result.value();
  return result;
}

}  // namespace liveavatar::models::t5::internal
