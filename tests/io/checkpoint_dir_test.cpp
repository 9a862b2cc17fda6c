// io::CheckpointDir / CheckCheckpointDir on temporary directories: a complete layout passes; every missing,
// empty or truncated piece is reported, all of them in one error.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include <ATen/ATen.h>

#include "liveavatar/io/checkpoint_dir.h"
#include "liveavatar/io/safetensors.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar::io {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "la_ckptdir_XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return (fs::path(path_) / rel).string(); }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

void WriteTensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& t) {
  fs::create_directories(fs::path(path).parent_path());
  ASSERT_TRUE(WriteSafetensors(path, t).ok()) << path;
}

void Truncate(const std::string& path, uintmax_t keep) { fs::resize_file(path, keep); }

// A complete directory: safetensors pieces written here, the .pth pieces copied from the fixtures (real
// torch.save archives), the DiT either single-file or sharded.
void MakeComplete(const TempDir& d, bool sharded) {
  WriteFile(d / kDitConfigFile, R"({"dim": 64, "num_layers": 4})");
  if (sharded) {
    WriteTensors(d / "diffusion_pytorch_model-00001-of-00002.safetensors", {{"a.weight", at::ones({2, 3})}});
    WriteTensors(d / "diffusion_pytorch_model-00002-of-00002.safetensors", {{"b.weight", at::zeros({4})}});
    WriteFile(d / kDitIndexFile, R"({"metadata": {"total_size": 40}, "weight_map": {
      "a.weight": "diffusion_pytorch_model-00001-of-00002.safetensors",
      "b.weight": "diffusion_pytorch_model-00002-of-00002.safetensors"}})");
  } else {
    WriteTensors(d / kDitSingleFile, {{"a.weight", at::ones({2, 3})}});
  }
  fs::copy_file(fs::path(testing::GoldenDir("t5")) / "models_t5_umt5-xxl-enc-bf16.pth", d / kT5File);
  fs::copy_file(fs::path(testing::GoldenDir("vae")) / "Wan2.1_VAE.pth", d / kVaeFile);
  WriteFile(d / kTokenizerFile, "not parsed by the check, only required non-empty");
  const std::string w2v = d / kWav2Vec2Dir;
  WriteFile(w2v + "/" + kWav2Vec2ConfigFile, R"({"hidden_size": 32})");
  WriteFile(w2v + "/" + kWav2Vec2PreprocessorFile, R"({"sampling_rate": 16000})");
  WriteTensors(w2v + "/" + kWav2Vec2SafetensorsFile, {{"lm_head.weight", at::ones({3, 2})}});
  WriteTensors(d / "lora.safetensors", {{"blocks.0.self_attn.q.lora_A.default.weight", at::ones({4, 8})},
                                        {"blocks.0.self_attn.q.lora_B.default.weight", at::ones({8, 4})}});
}

TEST(CheckpointDir, LayoutNames) {
  TempDir d;
  const CheckpointDir single = CheckpointDir::At(d.path());
  EXPECT_FALSE(single.dit_sharded);
  EXPECT_EQ(single.dit_weights, d / "diffusion_pytorch_model.safetensors");
  EXPECT_EQ(single.t5_weights, d / "models_t5_umt5-xxl-enc-bf16.pth");
  EXPECT_EQ(single.vae_weights, d / "Wan2.1_VAE.pth");
  EXPECT_EQ(single.tokenizer, d / "google/umt5-xxl/spiece.model");
  EXPECT_EQ(single.wav2vec2_weights, d / "wav2vec2-large-xlsr-53-english/model.safetensors");
  EXPECT_EQ(single.wav2vec2_config, d / "wav2vec2-large-xlsr-53-english/config.json");
  EXPECT_EQ(single.wav2vec2_preprocessor, d / "wav2vec2-large-xlsr-53-english/preprocessor_config.json");
  WriteFile(d / kDitIndexFile, "{}");
  WriteFile(d / "wav2vec2-large-xlsr-53-english/pytorch_model.bin", "x");
  const CheckpointDir sharded = CheckpointDir::At(d.path(), "l.safetensors");
  EXPECT_TRUE(sharded.dit_sharded);
  EXPECT_EQ(sharded.dit_weights, d / "diffusion_pytorch_model.safetensors.index.json");
  EXPECT_EQ(sharded.wav2vec2_weights, d / "wav2vec2-large-xlsr-53-english/pytorch_model.bin");
  EXPECT_EQ(sharded.lora, "l.safetensors");
}

TEST(CheckpointDir, CompleteSingleFileDirectoryPasses) {
  TempDir d;
  MakeComplete(d, /*sharded=*/false);
  Status s = CheckCheckpointDir(d.path(), d / "lora.safetensors");
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST(CheckpointDir, CompleteShardedDirectoryPasses) {
  TempDir d;
  MakeComplete(d, /*sharded=*/true);
  Status s = CheckCheckpointDir(d.path());
  EXPECT_TRUE(s.ok()) << s.ToString();
  for (const auto& c : InspectCheckpointDir(d.path())) EXPECT_TRUE(c.ok) << c.what << ": " << c.problem;
}

TEST(CheckpointDir, EmptyDirectoryListsEveryPieceInOneError) {
  TempDir d;
  Status s = CheckCheckpointDir(d.path(), d / "missing_lora.safetensors");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kNotFound);
  for (const char* piece : {"config.json", "diffusion_pytorch_model.safetensors", "models_t5_umt5-xxl-enc-bf16.pth",
                            "Wan2.1_VAE.pth", "google/umt5-xxl/spiece.model", "wav2vec2-large-xlsr-53-english/config.json",
                            "model.safetensors", "pytorch_model.bin", "preprocessor_config.json",
                            "missing_lora.safetensors"}) {
    EXPECT_NE(s.message().find(piece), std::string::npos) << piece << " not named in: " << s.message();
  }
  EXPECT_NE(s.message().find("9 problem(s)"), std::string::npos) << s.message();
}

TEST(CheckpointDir, MissingDirectory) {
  Status s = CheckCheckpointDir("/nonexistent/liveavatar/ckpt");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/nonexistent/liveavatar/ckpt"), std::string::npos);
}

TEST(CheckpointDir, TruncatedAndEmptyPiecesAreAllReported) {
  TempDir d;
  MakeComplete(d, /*sharded=*/false);
  Truncate(d / kDitSingleFile, 20);                 // header cut short
  Truncate(d / kVaeFile, fs::file_size(d / kVaeFile) / 2);  // zip central directory gone
  WriteFile(d / kTokenizerFile, "");                // empty
  WriteFile(d / kDitConfigFile, "{\"dim\": ");      // not JSON
  const std::string w2v = (fs::path(d / kWav2Vec2Dir) / kWav2Vec2SafetensorsFile).string();
  Truncate(w2v, fs::file_size(w2v) - 4);            // data section short
  Status s = CheckCheckpointDir(d.path());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kCorruption);
  EXPECT_NE(s.message().find("5 problem(s)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(d / kDitSingleFile), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(d / kVaeFile), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("empty file"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("not valid JSON"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(w2v), std::string::npos) << s.message();
  // The intact pieces are not mentioned.
  EXPECT_EQ(s.message().find(kT5File), std::string::npos) << s.message();
}

TEST(CheckpointDir, ShardProblems) {
  TempDir d;
  MakeComplete(d, /*sharded=*/true);
  fs::remove(d / "diffusion_pytorch_model-00002-of-00002.safetensors");
  Status s = CheckCheckpointDir(d.path());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("diffusion_pytorch_model-00002-of-00002.safetensors missing"), std::string::npos)
      << s.message();

  // A shard lacking a key its index maps to it.
  WriteTensors(d / "diffusion_pytorch_model-00002-of-00002.safetensors", {{"c.weight", at::zeros({4})}});
  s = CheckCheckpointDir(d.path());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("'b.weight'"), std::string::npos) << s.message();

  // An index without a weight_map.
  WriteFile(d / kDitIndexFile, R"({"metadata": {}})");
  s = CheckCheckpointDir(d.path());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("weight_map"), std::string::npos) << s.message();
}

// An index's shard names stay inside the checkpoint folder (the pre-check used to follow "..", and printed the
// target's first bytes as a header length); a non-safetensors file is named by its magic in hex only.
TEST(CheckpointDir, IndexShardOutsideTheFolderIsRefused) {
  TempDir d;
  MakeComplete(d, /*sharded=*/true);
  const std::string outside = fs::path(d.path()).parent_path() / ("la_outside_" + std::to_string(::getpid()));
  WriteFile(outside, "root:x:0:0:root:/root:/bin/bash\n");
  for (const std::string& shard : {"../" + fs::path(outside).filename().string(), outside, std::string("")}) {
    WriteFile(d / kDitIndexFile, R"({"weight_map": {"a.weight": ")" + shard +
                                     R"(", "b.weight": "diffusion_pytorch_model-00002-of-00002.safetensors"}})");
    Status s = CheckCheckpointDir(d.path());
    ASSERT_FALSE(s.ok()) << shard;
    EXPECT_NE(s.message().find("is not a relative path inside"), std::string::npos) << s.message();
    EXPECT_EQ(s.message().find("3475222254926655346"), std::string::npos) << s.message();
  }
  fs::remove(outside);

  // The same bytes as a shard inside the folder: "not a safetensors file", magic in hex, no bogus length.
  WriteFile(d / "diffusion_pytorch_model-00001-of-00002.safetensors", "root:x:0:0:root:/root:/bin/bash\n");
  WriteFile(d / kDitIndexFile, R"({"weight_map": {"a.weight": "diffusion_pytorch_model-00001-of-00002.safetensors",
      "b.weight": "diffusion_pytorch_model-00002-of-00002.safetensors"}})");
  Status s = CheckCheckpointDir(d.path());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("hex 726f6f743a783a30"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find("3475222254926655346"), std::string::npos) << s.message();
}

TEST(CheckpointDir, Wav2Vec2BinAlternative) {
  TempDir d;
  MakeComplete(d, /*sharded=*/false);
  const fs::path w2v = d / kWav2Vec2Dir;
  fs::remove(w2v / kWav2Vec2SafetensorsFile);
  // A truncated pytorch_model.bin is found and reported as such.
  WriteFile((w2v / kWav2Vec2BinFile).string(), "PK\x03\x04 not really a zip");
  Status s = CheckCheckpointDir(d.path());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("pytorch_model.bin"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("truncated or invalid"), std::string::npos) << s.message();
  // A real torch.save archive passes.
  fs::copy_file(fs::path(testing::GoldenDir("vae")) / "Wan2.1_VAE.pth", w2v / kWav2Vec2BinFile,
                fs::copy_options::overwrite_existing);
  s = CheckCheckpointDir(d.path());
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST(CheckpointDir, LoraProblems) {
  TempDir d;
  MakeComplete(d, /*sharded=*/false);
  Status s = CheckCheckpointDir(d.path(), "Quark-Vision/Live-Avatar");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("Hugging Face id"), std::string::npos) << s.message();
  WriteTensors(d / "not_a_lora.safetensors", {{"blocks.0.self_attn.q.weight", at::ones({2, 2})}});
  s = CheckCheckpointDir(d.path(), d / "not_a_lora.safetensors");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("lora_A"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace liveavatar::io
