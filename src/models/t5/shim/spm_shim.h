// C ABI of liveavatar_spm_shim, the shared object that wraps SentencePiece (src/models/t5/shim/spm_shim.cc).
//
// Why a shim: Debian's libsentencepiece links a protobuf runtime that crashes when it shares one symbol namespace
// with LibTorch's. The engine never links SentencePiece; la_t5 dlopen()s this library with
// RTLD_LOCAL|RTLD_DEEPBIND (src/models/t5/spm_library.cpp), so SentencePiece and its protobuf resolve their own
// symbols first and nothing of them leaks into the process's global namespace. Only plain C types cross it.
//
// Conventions: functions returning int return 0 on success and -1 on failure; after a failure
// la_spm_last_error() returns a message (thread-local, valid until the next call on the same thread).
// A processor handle is safe to use from several threads for encoding (SentencePieceProcessor::Encode is const).
#ifndef LIVEAVATAR_MODELS_T5_SHIM_SPM_SHIM_H_
#define LIVEAVATAR_MODELS_T5_SHIM_SPM_SHIM_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Bumped whenever a signature below changes; the loader refuses a shim with another version.
#define LA_SPM_SHIM_ABI_VERSION 1

typedef struct la_spm_processor la_spm_processor;

int la_spm_abi_version(void);
// Loads a serialized SentencePiece model (spiece.model). NULL on failure (see la_spm_last_error()).
la_spm_processor* la_spm_load(const char* model_path);
void la_spm_free(la_spm_processor* processor);
// Encodes UTF-8 `text` (`text_len` bytes) to piece ids, without BOS/EOS. Writes at most `capacity` ids to
// `ids` and the full count to `*count`; call again with a larger buffer when *count > capacity.
int la_spm_encode(const la_spm_processor* processor, const char* text, size_t text_len, int32_t* ids,
                  size_t capacity, size_t* count);
int la_spm_piece_size(const la_spm_processor* processor);
int la_spm_eos_id(const la_spm_processor* processor);
int la_spm_unk_id(const la_spm_processor* processor);
int la_spm_pad_id(const la_spm_processor* processor);
// Id of `piece`, or the unk id when the piece is not in the vocabulary.
int la_spm_piece_to_id(const la_spm_processor* processor, const char* piece);
// Runs SentencePieceTrainer::Train with a command-line style argument string
// ("--input=a.txt --model_prefix=m --vocab_size=100 ...").
int la_spm_train(const char* args);
const char* la_spm_last_error(void);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // LIVEAVATAR_MODELS_T5_SHIM_SPM_SHIM_H_
