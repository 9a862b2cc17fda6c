#include "liveavatar/models/t5/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <system_error>

#include <ATen/ATen.h>

#include "liveavatar/models/t5/text_clean.h"
#include "models/t5/spm_library.h"

namespace liveavatar::models::t5 {

using internal::GetSpmApi;
using internal::SpmApi;

struct Tokenizer::Impl {
  const SpmApi* api = nullptr;
  la_spm_processor* processor = nullptr;
  ~Impl() {
    if (processor != nullptr) api->free(processor);
  }
};

StatusOr<Tokenizer> Tokenizer::Load(const std::string& spiece_model_path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(spiece_model_path, ec)) {
    return Status::NotFound("SentencePiece model " + spiece_model_path +
                            " does not exist or is not a file (expected the tokenizer's spiece.model, e.g. "
                            "<ckpt>/google/umt5-xxl/spiece.model)");
  }
  LA_ASSIGN_OR_RETURN(const SpmApi* api, GetSpmApi());
  auto impl = std::make_shared<Impl>();
  impl->api = api;
  impl->processor = api->load(spiece_model_path.c_str());
  if (impl->processor == nullptr) {
    return Status::Corruption("cannot load SentencePiece model " + spiece_model_path + ": " + api->last_error() +
                              " (is it a valid spiece.model?)");
  }
  Tokenizer tok;
  tok.path_ = spiece_model_path;
  tok.vocab_size_ = api->piece_size(impl->processor);
  // Special ids as HF resolves them: the tokens "</s>", "<pad>", "<unk>" of the vocabulary.
  const int eos = api->eos_id(impl->processor);
  const int pad = api->pad_id(impl->processor);
  const int unk = api->unk_id(impl->processor);
  tok.unk_id_ = unk;
  tok.eos_id_ = eos >= 0 ? eos : api->piece_to_id(impl->processor, "</s>");
  tok.pad_id_ = pad >= 0 ? pad : api->piece_to_id(impl->processor, "<pad>");
  if (tok.eos_id_ < 0 || tok.eos_id_ == unk) {
    return Status::Corruption("SentencePiece model " + spiece_model_path + " has no EOS piece '</s>'");
  }
  if (tok.pad_id_ < 0 || tok.pad_id_ == unk) {
    return Status::Corruption("SentencePiece model " + spiece_model_path + " has no padding piece '<pad>'");
  }
  tok.impl_ = std::move(impl);
  return tok;
}

StatusOr<std::vector<int64_t>> Tokenizer::EncodePieces(const std::string& text) const {
  TORCH_CHECK(impl_ != nullptr, "Tokenizer used before Load()");
  std::vector<int32_t> buffer(text.size() + 16);
  size_t count = 0;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (impl_->api->encode(impl_->processor, text.data(), text.size(), buffer.data(), buffer.size(), &count) != 0) {
      return Status::Internal("SentencePiece (" + path_ + ") failed to encode text: " + impl_->api->last_error());
    }
    if (count <= buffer.size()) break;
    buffer.resize(count);
  }
  return std::vector<int64_t>(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(count));
}

StatusOr<TokenizedBatch> Tokenizer::Encode(const std::vector<std::string>& texts, int64_t max_len,
                                           bool clean) const {
  if (max_len < 1) {
    return Status::InvalidArgument("Tokenizer::Encode: max_len must be >= 1, got " + std::to_string(max_len));
  }
  const auto batch = static_cast<int64_t>(texts.size());
  at::Tensor ids = at::full({batch, max_len}, pad_id_, at::kLong);
  at::Tensor mask = at::zeros({batch, max_len}, at::kLong);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const auto& raw = texts[static_cast<size_t>(b)];
    LA_ASSIGN_OR_RETURN(std::vector<int64_t> pieces, EncodePieces(clean ? CleanPromptText(raw) : raw));
    const int64_t kept = std::min<int64_t>(static_cast<int64_t>(pieces.size()), max_len - 1);
    for (int64_t i = 0; i < kept; ++i) {
      ids_a[b][i] = pieces[static_cast<size_t>(i)];
      mask_a[b][i] = 1;
    }
    ids_a[b][kept] = eos_id_;
    mask_a[b][kept] = 1;
  }
  return TokenizedBatch{ids, mask};
}

Status TrainSentencePiece(const std::string& corpus_path, const std::string& model_prefix,
                          const SentencePieceTrainOptions& options) {
  auto has_space = [](const std::string& s) {
    return std::any_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c) != 0; });
  };
  if (has_space(corpus_path) || has_space(model_prefix)) {
    return Status::InvalidArgument("TrainSentencePiece: paths must not contain whitespace (corpus '" +
                                   corpus_path + "', model prefix '" + model_prefix + "')");
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(corpus_path, ec)) {
    return Status::NotFound("TrainSentencePiece: corpus " + corpus_path + " does not exist");
  }
  if (options.vocab_size < 8) {
    return Status::InvalidArgument("TrainSentencePiece: vocab_size must be >= 8, got " +
                                   std::to_string(options.vocab_size));
  }
  LA_ASSIGN_OR_RETURN(const SpmApi* api, GetSpmApi());
  std::string args = "--input=" + corpus_path + " --model_prefix=" + model_prefix +
                     " --vocab_size=" + std::to_string(options.vocab_size) +
                     " --model_type=unigram --character_coverage=1.0 --hard_vocab_limit=false"
                     " --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1 --normalization_rule_name=nmt_nfkc"
                     " --byte_fallback=false --num_threads=1 --minloglevel=2";
  for (const auto& extra : options.extra_args) {
    if (has_space(extra)) {
      return Status::InvalidArgument("TrainSentencePiece: extra argument '" + extra + "' contains whitespace");
    }
    args += " " + extra;
  }
  if (api->train(args.c_str()) != 0) {
    return Status::Internal("SentencePiece training on " + corpus_path + " failed: " + api->last_error());
  }
  // The limit is soft (hard_vocab_limit=false) so that small corpora train; it must still bound the ids, since
  // the encoder's embedding has exactly vocab_size rows.
  LA_ASSIGN_OR_RETURN(Tokenizer trained, Tokenizer::Load(model_prefix + ".model"));
  if (trained.vocab_size() > options.vocab_size) {
    return Status::InvalidArgument("SentencePiece model trained on " + corpus_path + " has " +
                                   std::to_string(trained.vocab_size()) + " pieces, more than vocab_size " +
                                   std::to_string(options.vocab_size) +
                                   " (the corpus has more distinct characters than that): raise vocab_size or use "
                                   "a corpus with fewer distinct characters");
  }
  return Status::Ok();
}

}  // namespace liveavatar::models::t5
