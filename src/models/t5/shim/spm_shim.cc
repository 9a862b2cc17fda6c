// liveavatar_spm_shim: SentencePiece behind the plain C ABI of spm_shim.h. Built only when SentencePiece is
// found (src/CMakeLists.txt) and loaded at run time by src/models/t5/spm_library.cpp; never linked into the engine.
#include "models/t5/shim/spm_shim.h"

#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

struct la_spm_processor {
  sentencepiece::SentencePieceProcessor sp;
};

namespace {

thread_local std::string g_last_error;

int Fail(std::string message) {
  g_last_error = std::move(message);
  return -1;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int la_spm_abi_version(void) { return LA_SPM_SHIM_ABI_VERSION; }

__attribute__((visibility("default"))) la_spm_processor* la_spm_load(const char* model_path) {
  if (model_path == nullptr) {
    Fail("la_spm_load: null path");
    return nullptr;
  }
  try {
    auto processor = std::make_unique<la_spm_processor>();
    const auto status = processor->sp.Load(model_path);
    if (!status.ok()) {
      Fail(status.ToString());
      return nullptr;
    }
    return processor.release();
  } catch (const std::exception& e) {
    Fail(std::string("exception while loading: ") + e.what());
    return nullptr;
  }
}

__attribute__((visibility("default"))) void la_spm_free(la_spm_processor* processor) { delete processor; }

__attribute__((visibility("default"))) int la_spm_encode(const la_spm_processor* processor, const char* text,
                                                         size_t text_len, int32_t* ids, size_t capacity,
                                                         size_t* count) {
  if (processor == nullptr || count == nullptr || (text == nullptr && text_len > 0)) {
    return Fail("la_spm_encode: null argument");
  }
  try {
    std::vector<int> pieces;
    const auto status = processor->sp.Encode(std::string(text == nullptr ? "" : text, text_len), &pieces);
    if (!status.ok()) return Fail(status.ToString());
    *count = pieces.size();
    for (size_t i = 0; i < pieces.size() && i < capacity; ++i) ids[i] = static_cast<int32_t>(pieces[i]);
    return 0;
  } catch (const std::exception& e) {
    return Fail(std::string("exception while encoding: ") + e.what());
  }
}

__attribute__((visibility("default"))) int la_spm_piece_size(const la_spm_processor* processor) {
  return processor == nullptr ? Fail("la_spm_piece_size: null processor") : processor->sp.GetPieceSize();
}

__attribute__((visibility("default"))) int la_spm_eos_id(const la_spm_processor* processor) {
  return processor == nullptr ? Fail("la_spm_eos_id: null processor") : processor->sp.eos_id();
}

__attribute__((visibility("default"))) int la_spm_unk_id(const la_spm_processor* processor) {
  return processor == nullptr ? Fail("la_spm_unk_id: null processor") : processor->sp.unk_id();
}

__attribute__((visibility("default"))) int la_spm_pad_id(const la_spm_processor* processor) {
  return processor == nullptr ? Fail("la_spm_pad_id: null processor") : processor->sp.pad_id();
}

__attribute__((visibility("default"))) int la_spm_piece_to_id(const la_spm_processor* processor,
                                                              const char* piece) {
  if (processor == nullptr || piece == nullptr) return Fail("la_spm_piece_to_id: null argument");
  return processor->sp.PieceToId(piece);
}

__attribute__((visibility("default"))) int la_spm_train(const char* args) {
  if (args == nullptr) return Fail("la_spm_train: null arguments");
  try {
    const auto status = sentencepiece::SentencePieceTrainer::Train(args);
    if (!status.ok()) return Fail(status.ToString());
    return 0;
  } catch (const std::exception& e) {
    return Fail(std::string("exception while training: ") + e.what());
  }
}

__attribute__((visibility("default"))) const char* la_spm_last_error(void) { return g_last_error.c_str(); }

}  // extern "C"
