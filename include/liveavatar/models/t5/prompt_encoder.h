// Prompt -> text context, the reference's T5EncoderModel.__call__ (Wan2.2 `modules/t5.py`): clean + tokenize
// (padding to text_len = 512, EOS, truncation; tokenizer.h), run the umT5 encoder (encoder.h) and keep each
// text's first mask-length rows. The DiT zero-pads each context back to text_len itself.
//
// Owns a Tokenizer and a T5Encoder; immutable after Load, so EncodePrompt() may run concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"
#include "liveavatar/models/t5/encoder.h"
#include "liveavatar/models/t5/tokenizer.h"

namespace liveavatar::models::t5 {

class PromptEncoder {
 public:
  static constexpr int64_t kTextLen = 512;  // the reference's text_len

  PromptEncoder(Tokenizer tokenizer, T5Encoder encoder, int64_t text_len = kTextLen)
      : tokenizer_(std::move(tokenizer)), encoder_(std::move(encoder)), text_len_(text_len) {}

  // Loads spiece.model and the encoder weights (see Tokenizer::Load, T5Encoder::Load). InvalidArgument when the
  // tokenizer has more pieces than config.vocab.
  static StatusOr<PromptEncoder> Load(const std::string& spiece_model_path, const std::string& weights_path,
                                      const T5Config& config, const LoadOptions& options = {},
                                      int64_t text_len = kTextLen);

  // One context per text: [L_valid, dim] (L_valid = pieces + EOS, at most text_len), in the encoder's dtype and
  // device. Errors come from tokenization.
  StatusOr<std::vector<at::Tensor>> EncodePrompt(const std::vector<std::string>& texts) const;

  const Tokenizer& tokenizer() const { return tokenizer_; }
  const T5Encoder& encoder() const { return encoder_; }

 private:
  Tokenizer tokenizer_;
  T5Encoder encoder_;
  int64_t text_len_;
};

}  // namespace liveavatar::models::t5
