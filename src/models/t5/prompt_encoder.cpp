#include "liveavatar/models/t5/prompt_encoder.h"

#include <ATen/ATen.h>

namespace liveavatar::models::t5 {

StatusOr<PromptEncoder> PromptEncoder::Load(const std::string& spiece_model_path, const std::string& weights_path,
                                            const T5Config& config, const LoadOptions& options, int64_t text_len) {
  LA_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::Load(spiece_model_path));
  if (tokenizer.vocab_size() > config.vocab) {
    return Status::InvalidArgument("tokenizer " + spiece_model_path + " has " +
                                   std::to_string(tokenizer.vocab_size()) + " pieces but the T5 encoder " +
                                   weights_path + " embeds only " + std::to_string(config.vocab) + " ids");
  }
  LA_ASSIGN_OR_RETURN(T5Encoder encoder, T5Encoder::Load(weights_path, config, options));
  return PromptEncoder(std::move(tokenizer), std::move(encoder), text_len);
}

StatusOr<std::vector<at::Tensor>> PromptEncoder::EncodePrompt(const std::vector<std::string>& texts) const {
  LA_ASSIGN_OR_RETURN(TokenizedBatch batch, tokenizer_.Encode(texts, text_len_));
  return encoder_.EncodeTrimmed(batch);
}

}  // namespace liveavatar::models::t5
