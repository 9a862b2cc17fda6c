// Tokenizer on a tiny SentencePiece model trained at test time from configs/tiny_corpus.txt, through the
// dlopen()ed shim, inside a process that links LibTorch (the shim exists so that this does not crash).
#include "liveavatar/models/t5/tokenizer.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/models/t5/text_clean.h"
#include "liveavatar/testing/golden.h"
#include "models/t5/spm_library.h"

namespace liveavatar::models::t5 {
namespace {

namespace fs = std::filesystem;

std::string CorpusPath() { return liveavatar::testing::SourceDir() + "/configs/tiny_corpus.txt"; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class T5Tokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
#ifdef LIVEAVATAR_HAVE_SENTENCEPIECE
    dir_ = new std::string(fs::temp_directory_path() / ("la_t5_tok_" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
    const Status st = TrainSentencePiece(CorpusPath(), *dir_ + "/spiece", {/*vocab_size=*/100, {}});
    ASSERT_TRUE(st.ok()) << st.ToString();
#endif
  }
  static void TearDownTestSuite() {
    if (dir_ != nullptr) {
      std::error_code ec;
      fs::remove_all(*dir_, ec);
      delete dir_;
      dir_ = nullptr;
    }
  }
  void SetUp() override {
#ifndef LIVEAVATAR_HAVE_SENTENCEPIECE
    GTEST_SKIP() << "built without SentencePiece";
#endif
  }
  static std::string ModelPath() { return *dir_ + "/spiece.model"; }
  static Tokenizer LoadOrDie() {
    auto tok = Tokenizer::Load(ModelPath());
    if (!tok.ok()) throw StatusError(tok.status());
    return tok.value();
  }
  static std::string* dir_;
};
std::string* T5Tokenizer::dir_ = nullptr;

TEST_F(T5Tokenizer, TrainedModelLoadsWithT5SpecialIds) {
  EXPECT_TRUE(fs::exists(*dir_ + "/spiece.vocab"));
  Tokenizer tok = LoadOrDie();
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.eos_id(), 1);
  EXPECT_EQ(tok.unk_id(), 2);
  EXPECT_GT(tok.vocab_size(), 10);
  EXPECT_LE(tok.vocab_size(), 100);
  auto pieces = tok.EncodePieces("the woman talks to the camera");
  ASSERT_TRUE(pieces.ok()) << pieces.status().ToString();
  ASSERT_FALSE(pieces->empty());
  for (int64_t id : *pieces) {
    EXPECT_GE(id, 3);  // ordinary pieces, no specials
    EXPECT_LT(id, tok.vocab_size());
  }
  // LibTorch keeps working next to the shim's protobuf.
  auto t = at::tensor(*pieces, at::kLong);
  EXPECT_EQ(t.sum().item<int64_t>(), [&] {
    int64_t s = 0;
    for (int64_t id : *pieces) s += id;
    return s;
  }());
}

TEST_F(T5Tokenizer, EncodeAppendsEosAndPadsWithZeros) {
  Tokenizer tok = LoadOrDie();
  const std::vector<std::string> texts = {"A man talks.", "", "The cat sings a song on a small stage"};
  auto batch = tok.Encode(texts, 32);
  ASSERT_TRUE(batch.ok()) << batch.status().ToString();
  ASSERT_EQ(batch->ids.sizes(), (std::vector<int64_t>{3, 32}));
  ASSERT_EQ(batch->mask.sizes(), (std::vector<int64_t>{3, 32}));
  EXPECT_EQ(batch->ids.scalar_type(), at::kLong);
  EXPECT_EQ(batch->mask.scalar_type(), at::kLong);
  for (size_t b = 0; b < texts.size(); ++b) {
    auto pieces = tok.EncodePieces(CleanPromptText(texts[b])).value();
    const auto n = static_cast<int64_t>(pieces.size());
    ASSERT_LT(n, 31);
    auto ids = batch->ids[b];
    auto mask = batch->mask[b];
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(ids[i].item<int64_t>(), pieces[i]);
    EXPECT_EQ(ids[n].item<int64_t>(), 1) << "EOS after the pieces";
    EXPECT_EQ(mask.narrow(0, 0, n + 1).sum().item<int64_t>(), n + 1);
    EXPECT_EQ(mask.narrow(0, n + 1, 32 - n - 1).abs().sum().item<int64_t>(), 0);
    EXPECT_EQ(ids.narrow(0, n + 1, 32 - n - 1).abs().sum().item<int64_t>(), 0) << "pad id 0";
  }
  // The empty text is just EOS.
  EXPECT_EQ(batch->ids[1][0].item<int64_t>(), 1);
  EXPECT_EQ(batch->mask[1].sum().item<int64_t>(), 1);
}

TEST_F(T5Tokenizer, TruncationKeepsEosAtTheEnd) {
  Tokenizer tok = LoadOrDie();
  const std::string corpus = ReadFile(CorpusPath());
  const std::string cleaned = CleanPromptText(corpus);
  auto pieces = tok.EncodePieces(cleaned).value();
  ASSERT_GT(pieces.size(), 600u) << "the corpus must exceed 512 pieces for this test";
  for (int64_t max_len : {512, 5, 2, 1}) {
    auto batch = tok.Encode({corpus}, max_len).value();
    ASSERT_EQ(batch.ids.size(1), max_len);
    EXPECT_EQ(batch.mask.sum().item<int64_t>(), max_len) << "no padding when truncated";
    EXPECT_EQ(batch.ids[0][max_len - 1].item<int64_t>(), 1) << "EOS kept at max_len " << max_len;
    for (int64_t i = 0; i + 1 < max_len; ++i) {
      ASSERT_EQ(batch.ids[0][i].item<int64_t>(), pieces[i]) << "position " << i << " of max_len " << max_len;
    }
  }
  EXPECT_FALSE(tok.Encode({corpus}, 0).ok());
}

TEST_F(T5Tokenizer, EncodeCleansTextFirst) {
  Tokenizer tok = LoadOrDie();
  auto dirty = tok.Encode({"  The  caf\u00c3\u00a9 &amp; the \u201ccat\u201d\n\n talk  "}, 24).value();
  auto clean = tok.Encode({"The café & the \"cat\" talk"}, 24).value();
  EXPECT_TRUE(at::equal(dirty.ids, clean.ids));
  EXPECT_TRUE(at::equal(dirty.mask, clean.mask));
  auto raw = tok.Encode({"  The  caf\u00c3\u00a9 &amp; the \u201ccat\u201d\n\n talk  "}, 24, /*clean=*/false).value();
  EXPECT_FALSE(at::equal(raw.ids, clean.ids));
}

TEST_F(T5Tokenizer, MissingModelNamesThePath) {
  const std::string missing = *dir_ + "/no_such_spiece.model";
  auto tok = Tokenizer::Load(missing);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), Status::Code::kNotFound);
  EXPECT_NE(tok.status().message().find(missing), std::string::npos) << tok.status().ToString();
}

TEST_F(T5Tokenizer, CorruptModelNamesThePath) {
  const std::string corrupt = *dir_ + "/corrupt_spiece.model";
  {
    std::ofstream out(corrupt, std::ios::binary);
    out << "this is not a protobuf \x01\x02\x03\xff\xfe garbage garbage";
  }
  auto tok = Tokenizer::Load(corrupt);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), Status::Code::kCorruption);
  EXPECT_NE(tok.status().message().find(corrupt), std::string::npos) << tok.status().ToString();
  // Truncated real model.
  const std::string truncated = *dir_ + "/truncated_spiece.model";
  const std::string bytes = ReadFile(ModelPath());
  {
    std::ofstream out(truncated, std::ios::binary);
    out << bytes.substr(0, bytes.size() / 3);
  }
  auto tok2 = Tokenizer::Load(truncated);
  ASSERT_FALSE(tok2.ok());
  EXPECT_NE(tok2.status().message().find(truncated), std::string::npos) << tok2.status().ToString();
}

TEST_F(T5Tokenizer, TrainingErrorsAreStatuses) {
  auto st = TrainSentencePiece(*dir_ + "/missing_corpus.txt", *dir_ + "/m");
  EXPECT_EQ(st.code(), Status::Code::kNotFound);
  EXPECT_NE(st.message().find("missing_corpus.txt"), std::string::npos);
  st = TrainSentencePiece(CorpusPath(), *dir_ + "/with space/m");
  EXPECT_EQ(st.code(), Status::Code::kInvalidArgument);
  st = TrainSentencePiece(CorpusPath(), *dir_ + "/bad", {100, {"--no_such_flag=1"}});
  EXPECT_EQ(st.code(), Status::Code::kInternal);
  EXPECT_NE(st.message().find("no_such_flag"), std::string::npos) << st.ToString();
}

TEST_F(T5Tokenizer, TrainedVocabNeverExceedsTheLimit) {
  for (int64_t vocab : {40, 80}) {
    const std::string prefix = *dir_ + "/v" + std::to_string(vocab);
    const Status st = TrainSentencePiece(CorpusPath(), prefix, {vocab, {}});
    if (st.ok()) {
      auto tok = Tokenizer::Load(prefix + ".model");
      ASSERT_TRUE(tok.ok()) << tok.status().ToString();
      EXPECT_LE(tok->vocab_size(), vocab);
    } else {
      // SentencePiece itself refuses a vocab smaller than the corpus's characters (Internal, naming vocab_size).
      EXPECT_TRUE(st.code() == Status::Code::kInvalidArgument || st.code() == Status::Code::kInternal)
          << st.ToString();
      EXPECT_NE(st.message().find("vocab_size"), std::string::npos) << st.ToString();
    }
  }
}

#ifndef LIVEAVATAR_HAVE_SENTENCEPIECE
TEST(T5TokenizerWithoutSentencePiece, LoadAndTrainAreNotSupported) {
  const std::string any_file = CorpusPath();  // exists, so the shim check is reached
  auto tok = Tokenizer::Load(any_file);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), Status::Code::kNotSupported);
  EXPECT_NE(tok.status().message().find("SentencePiece"), std::string::npos);
  EXPECT_EQ(TrainSentencePiece(CorpusPath(), "/tmp/la_t5_unused").code(), Status::Code::kNotSupported);
}
#endif

TEST(T5SpmShim, SearchOrder) {
  ::setenv("LIVEAVATAR_SPM_SHIM", "/nonexistent/custom_shim.so", 1);
  const auto candidates = internal::SpmShimCandidates();
  ::unsetenv("LIVEAVATAR_SPM_SHIM");
  ASSERT_GE(candidates.size(), 3u);
  EXPECT_EQ(candidates[0], "/nonexistent/custom_shim.so");
  const std::string exe_dir = fs::read_symlink("/proc/self/exe").parent_path().string();
  EXPECT_EQ(candidates[1], exe_dir + "/../lib/libliveavatar_spm_shim.so");
  EXPECT_EQ(candidates[2], exe_dir + "/libliveavatar_spm_shim.so");
}

#ifdef LIVEAVATAR_HAVE_SENTENCEPIECE
TEST(T5SpmShim, MissingShimListsEverySearchedPath) {
  auto api = internal::OpenSpmShim({"/nonexistent/a/libliveavatar_spm_shim.so", "/nonexistent/b/shim.so"});
  ASSERT_FALSE(api.ok());
  EXPECT_EQ(api.status().code(), Status::Code::kNotFound);
  EXPECT_NE(api.status().message().find("/nonexistent/a/libliveavatar_spm_shim.so"), std::string::npos);
  EXPECT_NE(api.status().message().find("/nonexistent/b/shim.so"), std::string::npos);
  EXPECT_NE(api.status().message().find("LIVEAVATAR_SPM_SHIM"), std::string::npos);
}

TEST(T5SpmShim, UnloadableShimIsAnError) {
  auto api = internal::OpenSpmShim({CorpusPath()});  // exists, but is not a shared object
  ASSERT_FALSE(api.ok());
  EXPECT_NE(api.status().message().find(CorpusPath()), std::string::npos) << api.status().ToString();
}

TEST(T5SpmShim, BuildTreeShimLoads) {
  auto api = internal::GetSpmApi();
  ASSERT_TRUE(api.ok()) << api.status().ToString();
  EXPECT_FALSE(api.value()->path.empty());
}
#endif

}  // namespace
}  // namespace liveavatar::models::t5
