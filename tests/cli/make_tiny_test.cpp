// make-tiny (apps/liveavatar/make_tiny.h): the written directory passes the checkpoint check, every file reloads
// bit-identically to a regeneration with the same seed, another seed gives other weights, and the pieces load
// strictly into the models (DiT through the sharded index, LoRA merge, tokenizer).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>

#include <ATen/ATen.h>

#include "liveavatar/io/checkpoint_dir.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/dit/weights.h"
#include "liveavatar/models/lora.h"
#include "liveavatar/models/t5/encoder.h"
#include "liveavatar/models/t5/tokenizer.h"
#include "liveavatar/models/vae/config.h"
#include "liveavatar/models/vae/weights.h"
#include "make_tiny.h"

namespace liveavatar::cli {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSeed = 5;

std::string MakeTempDir(const char* stem) {
  std::string tmpl = (fs::temp_directory_path() / (std::string(stem) + "_XXXXXX")).string();
  return mkdtemp(tmpl.data());
}

nlohmann::json TinyConfig() {
  auto c = LoadTinyConfig(FindDataFile("", "configs/tiny.json"));
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? *c : nlohmann::json();
}

// Writes one tiny checkpoint for the whole suite.
class MakeTiny : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir("la_make_tiny"));
    MakeTinyArgs args;
    args.out = *dir_;
    args.seed = kSeed;
    write_status_ = new Status(WriteTinyCheckpoint(args));
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
    delete write_status_;
  }
  void SetUp() override { ASSERT_TRUE(write_status_->ok()) << write_status_->ToString(); }
  static std::string Path(const std::string& rel) { return (fs::path(*dir_) / rel).string(); }

  static std::string* dir_;
  static Status* write_status_;
};
std::string* MakeTiny::dir_ = nullptr;
Status* MakeTiny::write_status_ = nullptr;

TEST(MakeTinyRandom, DeterministicBySeedAndKey) {
  models::WeightSpec spec{"blocks.0.self_attn.q.weight", {8, 16}};
  auto a = RandomTensor(spec, 1);
  auto b = RandomTensor(spec, 1);
  auto c = RandomTensor(spec, 2);
  models::WeightSpec other = spec;
  other.key = "blocks.1.self_attn.q.weight";
  auto d = RandomTensor(other, 1);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && d.ok());
  EXPECT_TRUE(at::equal(*a, *b));
  EXPECT_FALSE(at::equal(*a, *c));
  EXPECT_FALSE(at::equal(*a, *d));
  EXPECT_NE(TensorSeed(1, spec.key), TensorSeed(2, spec.key));
  EXPECT_NE(TensorSeed(1, spec.key), TensorSeed(1, other.key));
}

TEST(MakeTinyRandom, InitKinds) {
  auto ones = RandomTensor({"norm.weight", {4}, false, "ones"}, 0);
  auto zeros = RandomTensor({"bias", {3, 2}, false, "zeros"}, 0);
  ASSERT_TRUE(ones.ok() && zeros.ok());
  EXPECT_TRUE(at::equal(*ones, at::ones({4})));
  EXPECT_TRUE(at::equal(*zeros, at::zeros({3, 2})));
  auto bad = RandomTensor({"x.weight", {2}, false, "uniform"}, 0);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("x.weight"), std::string::npos);
  // normal: std ~ 1/sqrt(fan_in) with fan_in = 256.
  auto big = RandomTensor({"w", {512, 256}}, 0);
  ASSERT_TRUE(big.ok());
  EXPECT_NEAR(big->std().item<double>(), 1.0 / 16.0, 0.002);
  auto w = RandomWeights({{"a", {2, 2}}, {"b", {3}}}, 0, at::kBFloat16);
  ASSERT_TRUE(w.ok());
  ASSERT_EQ(w->size(), 2u);
  EXPECT_EQ((*w)[0].first, "a");
  EXPECT_EQ((*w)[1].second.scalar_type(), at::kBFloat16);
}

TEST_F(MakeTiny, PassesTheCheckpointCheck) {
  const Status s = io::CheckCheckpointDir(*dir_, Path(io::kTinyLoraFile));
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(io::CheckpointDir::At(*dir_).dit_sharded);
}

TEST_F(MakeTiny, ReloadsBitIdentically) {
  auto files = BuildTinyTensorFiles(TinyConfig(), kSeed);
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  size_t tensors = 0;
  for (const auto& f : *files) {
    auto store = io::OpenTensorStore(Path(f.relpath));
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    std::set<std::string> expected_keys;
    for (const auto& [key, t] : f.tensors) {
      expected_keys.insert(key);
      auto got = (*store)->Get(key);
      ASSERT_TRUE(got.ok()) << f.relpath << ": " << got.status().ToString();
      EXPECT_EQ(got->scalar_type(), t.scalar_type()) << key;
      EXPECT_EQ(got->sizes(), t.sizes()) << key;
      EXPECT_TRUE(at::equal(*got, t)) << f.relpath << ": " << key << " differs from the regenerated tensor";
      ++tensors;
    }
    const auto keys = (*store)->Keys();
    EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()), expected_keys) << f.relpath;
  }
  EXPECT_GT(tensors, 100u);
}

TEST_F(MakeTiny, OtherSeedGivesOtherWeights) {
  auto a = BuildTinyTensorFiles(TinyConfig(), kSeed);
  auto b = BuildTinyTensorFiles(TinyConfig(), kSeed + 1);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->size(), b->size());
  size_t random = 0;
  for (size_t i = 0; i < a->size(); ++i) {
    ASSERT_EQ((*a)[i].tensors.size(), (*b)[i].tensors.size());
    for (size_t j = 0; j < (*a)[i].tensors.size(); ++j) {
      const auto& [key, x] = (*a)[i].tensors[j];
      const at::Tensor& y = (*b)[i].tensors[j].second;
      ASSERT_EQ(key, (*b)[i].tensors[j].first);
      // Constant inits (ones / zeros: norm gammas, biases) are seed-independent; every random tensor differs.
      const at::Tensor xf = x.to(at::kFloat);
      const bool constant = xf.numel() > 0 && (xf.eq(0).all().item<bool>() || xf.eq(1).all().item<bool>());
      if (constant) {
        EXPECT_TRUE(at::equal(x, y)) << key;
      } else {
        ++random;
        EXPECT_FALSE(at::equal(x, y)) << key << " is the same for seeds " << kSeed << " and " << kSeed + 1;
      }
    }
  }
  EXPECT_GT(random, 400u);
}

TEST_F(MakeTiny, DitLoadsStrictlyThroughTheIndexAndMergesTheLora) {
  auto config = models::dit::LoadDitConfig(Path(io::kDitConfigFile));
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->dim, TinyConfig()["dit"]["dim"].get<int64_t>());
  auto store = io::OpenTensorStore(Path(io::kDitIndexFile));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto weights = models::LoadWeights(**store, models::dit::DitWeightSpecs(*config), models::LoadOptions{});
  ASSERT_TRUE(weights.ok()) << weights.status().ToString();
  EXPECT_EQ(static_cast<int64_t>(weights->size()), models::dit::DitWeightCount(*config));
  // Two shards, each holding part of the model.
  EXPECT_TRUE(fs::exists(Path("diffusion_pytorch_model-00001-of-00002.safetensors")));
  EXPECT_TRUE(fs::exists(Path("diffusion_pytorch_model-00002-of-00002.safetensors")));

  auto targets = LoraTargets(TinyConfig());
  ASSERT_TRUE(targets.ok());
  const at::Tensor before = models::W(*weights, "blocks.0.self_attn.q.weight").clone();
  auto merged = models::MergeLoraFile(*weights, Path(io::kTinyLoraFile), std::nullopt, std::nullopt);
  ASSERT_TRUE(merged.ok()) << merged.status().ToString();
  EXPECT_EQ(static_cast<size_t>(*merged), targets->size());
  EXPECT_FALSE(at::equal(before, models::W(*weights, "blocks.0.self_attn.q.weight")));
}

TEST_F(MakeTiny, T5AndVaePthLoadStrictly) {
  const auto cfg = TinyConfig();
  auto t5 = models::t5::T5Config::FromJsonText(cfg["t5"].dump(), "tiny.json");
  ASSERT_TRUE(t5.ok());
  auto t5_store = io::OpenTensorStore(Path(io::kT5File));
  ASSERT_TRUE(t5_store.ok()) << t5_store.status().ToString();
  auto t5_meta = (*t5_store)->Meta("token_embedding.weight");
  ASSERT_TRUE(t5_meta.ok());
  EXPECT_EQ(t5_meta->dtype, io::DType::kBF16);  // like models_t5_umt5-xxl-enc-bf16.pth
  EXPECT_TRUE(models::LoadWeights(**t5_store, models::t5::T5WeightSpecs(*t5), {}).ok());

  auto vae = models::vae::VaeConfigFromJson(cfg["vae"], "tiny.json");
  ASSERT_TRUE(vae.ok());
  auto vae_store = io::OpenTensorStore(Path(io::kVaeFile));
  ASSERT_TRUE(vae_store.ok()) << vae_store.status().ToString();
  EXPECT_EQ((*vae_store)->Meta("encoder.conv1.weight")->dtype, io::DType::kF32);
  EXPECT_TRUE(models::LoadWeights(**vae_store, models::vae::VaeWeightSpecs(*vae), {}).ok());
}

TEST_F(MakeTiny, TokenizerAndJsonFiles) {
  const auto cfg = TinyConfig();
  auto tok = models::t5::Tokenizer::Load(Path(io::kTokenizerFile));
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  EXPECT_GT(tok->vocab_size(), 3);
  EXPECT_LE(tok->vocab_size(), cfg["t5"]["vocab"].get<int64_t>());
  auto ids = tok->Encode({"a person talking"}, 16);
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  EXPECT_LT(ids->ids.max().item<int64_t>(), cfg["t5"]["vocab"].get<int64_t>());

  auto read_json = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return nlohmann::json::parse(ss.str());
  };
  EXPECT_EQ(read_json(Path(io::kDitConfigFile)), cfg["dit"]);
  const std::string w2v = Path(io::kWav2Vec2Dir);
  EXPECT_EQ(read_json(w2v + "/config.json"), cfg["wav2vec2"]["config"]);
  EXPECT_EQ(read_json(w2v + "/preprocessor_config.json"), cfg["wav2vec2"]["preprocessor_config"]);
  const auto training = read_json(Path(io::kTinyTrainingConfigFile));
  EXPECT_EQ(training["lora_rank"], cfg["lora"]["lora_rank"]);
  EXPECT_EQ(training["lora_alpha"], cfg["lora"]["lora_alpha"]);
  EXPECT_EQ(training["lora_target_modules"], cfg["lora"]["lora_target_modules"]);
}

TEST_F(MakeTiny, LoraUsesThePeftLayout) {
  auto store = io::OpenTensorStore(Path(io::kTinyLoraFile));
  ASSERT_TRUE(store.ok());
  const auto keys = (*store)->Keys();
  ASSERT_FALSE(keys.empty());
  const int64_t rank = TinyConfig()["lora"]["lora_rank"].get<int64_t>();
  for (const auto& k : keys) {
    const bool a = k.find(".lora_A.default.weight") != std::string::npos;
    const bool b = k.find(".lora_B.default.weight") != std::string::npos;
    EXPECT_TRUE(a || b) << k;
    auto meta = (*store)->Meta(k);
    ASSERT_TRUE(meta.ok());
    EXPECT_EQ(a ? meta->shape[0] : meta->shape[1], rank) << k;
  }
  // Every block's self/cross attention, ffn and every audio injector are targeted.
  EXPECT_TRUE((*store)->Contains("blocks.0.cross_attn.o.lora_B.default.weight"));
  EXPECT_TRUE((*store)->Contains("blocks.0.ffn.2.lora_A.default.weight"));
  EXPECT_TRUE((*store)->Contains("audio_injector.injector.0.q.lora_A.default.weight"));
}

TEST(MakeTinyBinary, CommandLineRoundTrip) {
  const char* bin = std::getenv("LIVEAVATAR_BINARY");
  if (bin == nullptr) bin = LIVEAVATAR_CLI_BINARY;
  ASSERT_TRUE(fs::exists(bin)) << bin << " missing: build the liveavatar target";
  const std::string dir = MakeTempDir("la_make_tiny_bin");
  const std::string b = std::string("'") + bin + "'";
  const std::string q = "'" + dir + "'";
  EXPECT_EQ(std::system((b + " make-tiny --log-level warn --out " + q + " --seed 9").c_str()), 0);
  EXPECT_EQ(std::system((b + " doctor --log-level warn --ckpt_dir " + q + " --lora_path_dmd " + q +
                         "/lora/liveavatar.safetensors > /dev/null").c_str()),
            0);
  fs::remove(fs::path(dir) / io::kVaeFile);
  EXPECT_NE(std::system((b + " doctor --log-level off --ckpt_dir " + q + " > /dev/null").c_str()), 0);
  // Usage errors (a required input missing) exit with status 2; bad flags exit non-zero.
  EXPECT_EQ(WEXITSTATUS(std::system((b + " generate --log-level off").c_str())), 2);
  EXPECT_EQ(WEXITSTATUS(std::system((b + " plan --log-level off --ulysses_size 0").c_str())), 2);
  EXPECT_NE(std::system((b + " generate --log-level off --size 1*1").c_str()), 0);
  EXPECT_NE(std::system((b + " doctor --log-level nonsense --ckpt_dir " + q).c_str()), 0);
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace
}  // namespace liveavatar::cli
