// umT5 prompt tokenizer: SentencePiece (google/umt5-xxl `spiece.model`) with the reference's text cleaning,
// producing what the reference's HuggingfaceTokenizer(seq_len=512, clean='whitespace') returns from
// AutoTokenizer(..., padding='max_length', truncation=True, max_length=L, add_special_tokens=True):
//   ids  [B, L] int64: pieces of CleanPromptText(text) (text_clean.h), truncated to L-1 pieces, then the EOS id,
//                      then pad id (0) up to L;
//   mask [B, L] int64: 1 on the pieces and the EOS, 0 on padding.
// As in HF, truncation keeps the EOS: a text of >= L-1 pieces yields L-1 pieces followed by EOS.
// (For L == 1 HF itself degenerates; here the single slot holds the EOS.)
//
// SentencePiece is reached through the dlopen()ed liveavatar_spm_shim (never linked into the engine; see
// src/models/t5/shim/spm_shim.h). Builds without SentencePiece return NotSupported from Load/Train.
// Known differences from HF's fast tokenizer (tokenizer.json): special-token strings written in the prompt
// ("</s>", "<pad>", "<extra_id_0>") are encoded as plain text rather than as their special ids.
//
// Thread safety: a loaded Tokenizer is immutable; Encode() may be called concurrently. Copies share the model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"

namespace liveavatar::models::t5 {

struct TokenizedBatch {
  at::Tensor ids;   // [B, max_len] int64, CPU
  at::Tensor mask;  // [B, max_len] int64, CPU
};

class Tokenizer {
 public:
  // Loads a SentencePiece model file. NotFound naming the path when it does not exist, Corruption naming it when
  // SentencePiece cannot parse it, NotSupported / NotFound (listing searched paths) when the shim is unavailable.
  static StatusOr<Tokenizer> Load(const std::string& spiece_model_path);

  // Cleans (when `clean`), tokenizes, appends EOS, truncates and pads to `max_len` as described above.
  // InvalidArgument when max_len < 1.
  StatusOr<TokenizedBatch> Encode(const std::vector<std::string>& texts, int64_t max_len = 512,
                                  bool clean = true) const;

  // Raw SentencePiece ids of `text` as given (no cleaning, no EOS).
  StatusOr<std::vector<int64_t>> EncodePieces(const std::string& text) const;

  int64_t vocab_size() const { return vocab_size_; }  // number of pieces
  int64_t eos_id() const { return eos_id_; }
  int64_t pad_id() const { return pad_id_; }
  int64_t unk_id() const { return unk_id_; }
  const std::string& path() const { return path_; }

 private:
  struct Impl;
  Tokenizer() = default;
  std::shared_ptr<Impl> impl_;
  std::string path_;
  int64_t vocab_size_ = 0;
  int64_t eos_id_ = 1;
  int64_t pad_id_ = 0;
  int64_t unk_id_ = 2;
};

struct SentencePieceTrainOptions {
  int64_t vocab_size = 100;  // upper bound: with hard_vocab_limit=false a small corpus may yield fewer pieces
  // Passed through verbatim as extra "--flag=value" arguments (must not contain whitespace).
  std::vector<std::string> extra_args;
};

// Trains a unigram SentencePiece model with T5's special ids (pad 0, eos 1, unk 2, no bos), NFKC normalization,
// character_coverage 1.0 and hard_vocab_limit=false, so a few KB of text suffice. Writes <model_prefix>.model
// and <model_prefix>.vocab. InvalidArgument when a path contains whitespace (SentencePiece's argument syntax
// cannot quote it); NotFound when the corpus is missing; Internal with SentencePiece's message on failure;
// InvalidArgument when the trained model has more than vocab_size pieces (every distinct character of the corpus
// becomes a piece). On success the model loads with Tokenizer::Load and has at most vocab_size pieces.
Status TrainSentencePiece(const std::string& corpus_path, const std::string& model_prefix,
                          const SentencePieceTrainOptions& options = {});

}  // namespace liveavatar::models::t5
