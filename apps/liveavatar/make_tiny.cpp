#include "make_tiny.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "liveavatar/core/logging.h"
#include "liveavatar/io/checkpoint_dir.h"
#include "liveavatar/io/pth.h"
#include "liveavatar/io/safetensors.h"
#include "liveavatar/models/audio/wav2vec2.h"
#include "liveavatar/models/audio/wav2vec2_config.h"
#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/dit/weights.h"
#include "liveavatar/models/t5/encoder.h"
#include "liveavatar/models/t5/tokenizer.h"
#include "liveavatar/models/vae/config.h"
#include "liveavatar/models/vae/weights.h"

namespace liveavatar::cli {

namespace fs = std::filesystem;

namespace {

constexpr const char* kDitShardPattern = "diffusion_pytorch_model-0000{}-of-0000{n}.safetensors";

// The config's "_fill": "zeros" (real-dims checkpoints: values do not matter, writing is fast) or "random".
bool ZeroFill(const nlohmann::json& config) { return config.value("_fill", std::string("random")) == "zeros"; }

// Weights of `specs` for `config`: RandomWeights(), or zeros in `dtype` when the config says so.
StatusOr<NamedTensors> ConfigWeights(const nlohmann::json& config, const std::vector<models::WeightSpec>& specs,
                                     uint64_t seed, c10::ScalarType dtype) {
  if (!ZeroFill(config)) return RandomWeights(specs, seed, dtype);
  NamedTensors out;
  out.reserve(specs.size());
  for (const auto& spec : specs) {
    // Norm gains stay one; so does a weight-normed direction (wav2vec2's positional conv: w = g·v/||v|| is 0/0
    // for v = 0, a NaN the reference would produce too).
    auto ends = [&spec](const std::string& x) {
      return spec.key.size() >= x.size() && spec.key.compare(spec.key.size() - x.size(), x.size(), x) == 0;
    };
    const bool one = spec.init == "ones" || ends(".weight_v") || ends(".original1");
    at::Tensor t = one ? at::ones(spec.shape, at::TensorOptions().dtype(dtype))
                       : at::zeros(spec.shape, at::TensorOptions().dtype(dtype));
    out.emplace_back(spec.key, std::move(t));
  }
  return out;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

StatusOr<nlohmann::json> Section(const nlohmann::json& config, const std::string& name) {
  auto it = config.find(name);
  if (it == config.end() || !it->is_object()) {
    return Status::InvalidArgument("tiny config: missing object \"" + name + "\"");
  }
  return *it;
}

Status WriteText(const std::string& path, const std::string& text) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  const std::string tmp = path + ".partial";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return Status::IOError(tmp + ": cannot open for writing");
    out << text;
    if (!out) return Status::IOError(tmp + ": write failed");
  }
  fs::rename(tmp, path, ec);
  if (ec) return Status::IOError(path + ": rename failed (" + ec.message() + ")");
  return Status::Ok();
}

Status WriteJson(const std::string& path, const nlohmann::json& j) { return WriteText(path, j.dump(2) + "\n"); }

std::string ShardName(int i, int n) {
  std::string s = kDitShardPattern;
  s.replace(s.find("{}"), 2, std::to_string(i));
  return s.replace(s.find("{n}"), 3, std::to_string(n));
}

std::vector<std::string> SplitCsv(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto b = item.find_first_not_of(' ');
    const auto e = item.find_last_not_of(' ');
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

uint64_t TensorSeed(uint64_t seed, const std::string& key) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over the key bytes
  for (unsigned char c : key) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return SplitMix64(h ^ SplitMix64(seed));
}

StatusOr<at::Tensor> RandomTensor(const models::WeightSpec& spec, uint64_t seed) {
  for (int64_t d : spec.shape) {
    if (d < 0) return Status::InvalidArgument("negative dimension in the spec of '" + spec.key + "'");
  }
  const auto options = at::TensorOptions().dtype(at::kFloat);
  if (spec.init == "ones") return at::ones(spec.shape, options);
  if (spec.init == "zeros") return at::zeros(spec.shape, options);
  if (spec.init != "normal") {
    return Status::InvalidArgument("unknown init '" + spec.init + "' for '" + spec.key +
                                   "' (expected normal, ones or zeros)");
  }
  at::Generator gen = at::detail::createCPUGenerator(TensorSeed(seed, spec.key));
  at::Tensor t = at::randn(spec.shape, gen, options);
  int64_t numel = 1;
  for (int64_t d : spec.shape) numel *= d;
  const int64_t fan_in = spec.shape.size() >= 2 && spec.shape[0] > 0 ? numel / spec.shape[0] : numel;
  if (fan_in > 1) t.mul_(1.0 / std::sqrt(static_cast<double>(fan_in)));
  return t;
}

StatusOr<NamedTensors> RandomWeights(const std::vector<models::WeightSpec>& specs, uint64_t seed,
                                     c10::ScalarType dtype) {
  NamedTensors out;
  out.reserve(specs.size());
  for (const auto& spec : specs) {
    LA_ASSIGN_OR_RETURN(at::Tensor t, RandomTensor(spec, seed));
    out.emplace_back(spec.key, t.to(dtype).contiguous());
  }
  return out;
}

StatusOr<nlohmann::json> LoadTinyConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound(path + ": cannot open the tiny config (pass --config)");
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Status::Corruption(path + ": not a JSON object");
  for (const char* s : {"dit", "vae", "t5", "tokenizer", "wav2vec2", "lora"}) {
    if (!j.contains(s) || !j[s].is_object()) return Status::Corruption(path + ": missing object \"" + s + "\"");
  }
  return j;
}

std::string FindDataFile(const std::string& explicit_path, const std::string& relpath) {
  if (!explicit_path.empty()) return explicit_path;
  std::error_code ec;
  if (fs::exists(relpath, ec)) return relpath;
  if (const char* env = std::getenv("LIVEAVATAR_SOURCE_DIR")) {
    const std::string p = (fs::path(env) / relpath).string();
    if (fs::exists(p, ec)) return p;
  }
#ifdef LIVEAVATAR_SOURCE_DIR_DEFAULT
  const std::string p = (fs::path(LIVEAVATAR_SOURCE_DIR_DEFAULT) / relpath).string();
  if (fs::exists(p, ec)) return p;
#endif
  return relpath;
}

StatusOr<std::vector<TinyTensorFile>> TinyDitFiles(const nlohmann::json& config, uint64_t seed) {
  LA_ASSIGN_OR_RETURN(nlohmann::json dit_json, Section(config, "dit"));
  LA_ASSIGN_OR_RETURN(models::dit::DitConfig dit, models::dit::DitConfigFromJson(dit_json, "tiny config: dit"));
  LA_ASSIGN_OR_RETURN(NamedTensors all, ConfigWeights(config, models::dit::DitWeightSpecs(dit), seed, at::kBFloat16));
  // Shards split in module order like the real 4-shard checkpoint ("_dit_shards", default 2).
  const int n = std::max(1, std::min<int>(config.value("_dit_shards", 2), static_cast<int>(all.size())));
  std::vector<TinyTensorFile> files(static_cast<size_t>(n));
  for (size_t i = 0; i < all.size(); ++i) files[i * static_cast<size_t>(n) / all.size()].tensors.push_back(std::move(all[i]));
  for (int i = 0; i < n; ++i) files[static_cast<size_t>(i)].relpath = ShardName(i + 1, n);
  return files;
}

StatusOr<TinyTensorFile> TinyT5File(const nlohmann::json& config, uint64_t seed) {
  LA_ASSIGN_OR_RETURN(nlohmann::json t5_json, Section(config, "t5"));
  LA_ASSIGN_OR_RETURN(models::t5::T5Config t5, models::t5::T5Config::FromJsonText(t5_json.dump(), "tiny config: t5"));
  TinyTensorFile file;
  file.relpath = io::kT5File;
  file.format = TinyTensorFile::Format::kPth;  // bf16 torch.save zip, like models_t5_umt5-xxl-enc-bf16.pth
  LA_ASSIGN_OR_RETURN(file.tensors, ConfigWeights(config, models::t5::T5WeightSpecs(t5), seed, at::kBFloat16));
  return file;
}

StatusOr<TinyTensorFile> TinyVaeFile(const nlohmann::json& config, uint64_t seed) {
  LA_ASSIGN_OR_RETURN(nlohmann::json vae_json, Section(config, "vae"));
  LA_ASSIGN_OR_RETURN(models::vae::VaeConfig vae, models::vae::VaeConfigFromJson(vae_json, "tiny config: vae"));
  TinyTensorFile file;
  file.relpath = io::kVaeFile;
  file.format = TinyTensorFile::Format::kPth;  // fp32 torch.save zip, like the real Wan2.1_VAE.pth
  LA_ASSIGN_OR_RETURN(file.tensors, ConfigWeights(config, models::vae::VaeWeightSpecs(vae), seed, at::kFloat));
  return file;
}

StatusOr<TinyTensorFile> TinyWav2Vec2File(const nlohmann::json& config, uint64_t seed) {
  LA_ASSIGN_OR_RETURN(nlohmann::json w2v_json, Section(config, "wav2vec2"));
  LA_ASSIGN_OR_RETURN(models::audio::Wav2Vec2Config w2v,
                      models::audio::Wav2Vec2ConfigFromJson(w2v_json.value("config", nlohmann::json::object()),
                                                            w2v_json.value("preprocessor_config", nlohmann::json()),
                                                            "tiny config: wav2vec2"));
  TinyTensorFile file;
  file.relpath = (fs::path(io::kWav2Vec2Dir) / io::kWav2Vec2SafetensorsFile).string();
  LA_ASSIGN_OR_RETURN(file.tensors, ConfigWeights(config, models::audio::Wav2Vec2WeightSpecs(w2v), seed, at::kFloat));
  return file;
}

StatusOr<std::vector<std::pair<std::string, std::vector<int64_t>>>> LoraTargets(const nlohmann::json& config) {
  LA_ASSIGN_OR_RETURN(nlohmann::json dit_json, Section(config, "dit"));
  LA_ASSIGN_OR_RETURN(nlohmann::json lora, Section(config, "lora"));
  LA_ASSIGN_OR_RETURN(models::dit::DitConfig dit, models::dit::DitConfigFromJson(dit_json, "tiny config: dit"));
  const auto targets = SplitCsv(lora.value("lora_target_modules", std::string("q,k,v,o,ffn.0,ffn.2")));
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  for (const auto& spec : models::dit::DitWeightSpecs(dit)) {
    if (spec.shape.size() != 2 || !EndsWith(spec.key, ".weight")) continue;
    const std::string module = spec.key.substr(0, spec.key.size() - 7);
    for (const auto& t : targets) {
      if (module == t || EndsWith(module, "." + t)) {
        out.emplace_back(module, spec.shape);
        break;
      }
    }
  }
  if (out.empty()) return Status::InvalidArgument("tiny config: lora_target_modules match no DiT linear");
  return out;
}

StatusOr<TinyTensorFile> TinyLoraFile(const nlohmann::json& config, uint64_t seed) {
  LA_ASSIGN_OR_RETURN(nlohmann::json lora, Section(config, "lora"));
  const int64_t rank = lora.value("lora_rank", int64_t{0});
  if (rank <= 0) return Status::InvalidArgument("tiny config: lora.lora_rank must be positive");
  const std::string prefix = lora.value("key_prefix", std::string());
  LA_ASSIGN_OR_RETURN(auto targets, LoraTargets(config));
  std::vector<models::WeightSpec> specs;
  for (const auto& [module, shape] : targets) {
    // W [out, in]: A [r, in], B [out, r] (PEFT adapter "default").
    specs.push_back({prefix + module + ".lora_A.default.weight", {rank, shape[1]}});
    specs.push_back({prefix + module + ".lora_B.default.weight", {shape[0], rank}});
  }
  TinyTensorFile file;
  file.relpath = io::kTinyLoraFile;
  LA_ASSIGN_OR_RETURN(file.tensors, ConfigWeights(config, specs, seed, at::kBFloat16));
  return file;
}

Status ApplyLayerCount(nlohmann::json* config, int64_t layers) {
  if (layers == 0) return Status::Ok();
  if (layers < 0) return Status::InvalidArgument("--layers must be positive (got " + std::to_string(layers) + ")");
  auto& dit = (*config)["dit"];
  dit["num_layers"] = layers;
  if (dit.contains("audio_inject_layers") && dit["audio_inject_layers"].is_array()) {
    nlohmann::json kept = nlohmann::json::array();
    for (const auto& l : dit["audio_inject_layers"]) {
      if (l.is_number_integer() && l.get<int64_t>() < layers) kept.push_back(l);
    }
    if (kept.empty()) kept.push_back(0);
    dit["audio_inject_layers"] = kept;
  }
  // wav2vec2 keeps its depth: the DiT's audio encoder mixes all of its hidden states (layers + 1).
  (*config)["t5"]["num_layers"] = layers;
  return Status::Ok();
}

StatusOr<std::vector<TinyTensorFile>> BuildTinyTensorFiles(const nlohmann::json& config, uint64_t seed) {
  std::vector<TinyTensorFile> files;
  LA_ASSIGN_OR_RETURN(files, TinyDitFiles(config, seed));
  LA_ASSIGN_OR_RETURN(TinyTensorFile t5, TinyT5File(config, seed));
  LA_ASSIGN_OR_RETURN(TinyTensorFile vae, TinyVaeFile(config, seed));
  LA_ASSIGN_OR_RETURN(TinyTensorFile w2v, TinyWav2Vec2File(config, seed));
  LA_ASSIGN_OR_RETURN(TinyTensorFile lora, TinyLoraFile(config, seed));
  files.push_back(std::move(t5));
  files.push_back(std::move(vae));
  files.push_back(std::move(w2v));
  files.push_back(std::move(lora));
  return files;
}

namespace {

Status WriteTensorFile(const std::string& root, const TinyTensorFile& file) {
  const std::string path = (fs::path(root) / file.relpath).string();
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec) return Status::IOError(path + ": cannot create its directory (" + ec.message() + ")");
  switch (file.format) {
    case TinyTensorFile::Format::kSafetensors:
      return io::WriteSafetensors(path, file.tensors, {{"format", "pt"}});
    case TinyTensorFile::Format::kPth:
      return io::WritePth(path, file.tensors);
  }
  return Status::Internal("unreachable");
}

nlohmann::json DitIndex(const std::vector<TinyTensorFile>& files) {
  nlohmann::json weight_map = nlohmann::json::object();
  uint64_t total = 0;
  for (const auto& f : files) {
    if (f.relpath.rfind("diffusion_pytorch_model-", 0) != 0) continue;
    for (const auto& [key, t] : f.tensors) {
      weight_map[key] = f.relpath;
      total += static_cast<uint64_t>(t.numel()) * t.element_size();
    }
  }
  return {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
}

// Trains the tiny SentencePiece model into <root>/google/umt5-xxl/spiece.model.
Status TrainTokenizer(const nlohmann::json& config, const std::string& corpus, const std::string& out_path) {
  const int64_t vocab = config["tokenizer"].value("vocab_size", int64_t{0});
  const int64_t t5_vocab = config["t5"].value("vocab", int64_t{0});
  if (vocab <= 0 || vocab > t5_vocab) {
    return Status::InvalidArgument("tiny config: tokenizer.vocab_size must be within 1..t5.vocab (" +
                                   std::to_string(t5_vocab) + ")");
  }
  std::error_code ec;
  fs::create_directories(fs::path(out_path).parent_path(), ec);
  std::string prefix = out_path;
  prefix = prefix.substr(0, prefix.size() - std::string(".model").size());
  models::t5::SentencePieceTrainOptions options;
  options.vocab_size = vocab;
  LA_RETURN_IF_ERROR(models::t5::TrainSentencePiece(corpus, prefix, options));
  fs::remove(prefix + ".vocab", ec);  // the real google/umt5-xxl folder has no .vocab file
  return Status::Ok();
}

}  // namespace

Status WriteTinyCheckpoint(const MakeTinyArgs& args) {
  if (args.out.empty()) return Status::InvalidArgument("--out is required");
  if (args.dims != "tiny" && args.dims != "real") {
    return Status::InvalidArgument("--dims must be tiny or real (got '" + args.dims + "')");
  }
  const std::string config_path =
      FindDataFile(args.config, args.dims == "real" ? "configs/real_dims.json" : "configs/tiny.json");
  const std::string corpus_path = FindDataFile(args.corpus, "configs/tiny_corpus.txt");
  LA_ASSIGN_OR_RETURN(nlohmann::json config, LoadTinyConfig(config_path));
  LA_RETURN_IF_ERROR(ApplyLayerCount(&config, args.layers));
  std::error_code ec;
  fs::create_directories(args.out, ec);
  if (ec) return Status::IOError(args.out + ": cannot create (" + ec.message() + ")");
  const fs::path root(args.out);
  size_t count = 0, nfiles = 0;
  // One piece in memory at a time (a real-dims T5 alone is GBs): build, write, drop.
  {
    LA_ASSIGN_OR_RETURN(auto dit_files, TinyDitFiles(config, args.seed));
    for (const auto& f : dit_files) {
      LA_RETURN_IF_ERROR(WriteTensorFile(args.out, f));
      count += f.tensors.size();
    }
    nfiles += dit_files.size();
    // A stale single-file DiT would shadow nothing (the index wins) but confuses readers: remove it.
    fs::remove(root / io::kDitSingleFile, ec);
    LA_RETURN_IF_ERROR(WriteJson((root / io::kDitIndexFile).string(), DitIndex(dit_files)));
  }
  for (auto piece : {TinyT5File, TinyVaeFile, TinyWav2Vec2File, TinyLoraFile}) {
    LA_ASSIGN_OR_RETURN(TinyTensorFile f, piece(config, args.seed));
    LA_RETURN_IF_ERROR(WriteTensorFile(args.out, f));
    count += f.tensors.size();
    ++nfiles;
  }
  LA_RETURN_IF_ERROR(WriteJson((root / io::kDitConfigFile).string(), config["dit"]));
  const fs::path w2v = root / io::kWav2Vec2Dir;
  LA_RETURN_IF_ERROR(WriteJson((w2v / io::kWav2Vec2ConfigFile).string(), config["wav2vec2"]["config"]));
  LA_RETURN_IF_ERROR(
      WriteJson((w2v / io::kWav2Vec2PreprocessorFile).string(), config["wav2vec2"]["preprocessor_config"]));
  nlohmann::json training = config["lora"];
  training.erase("key_prefix");
  training.erase("_comment");
  LA_RETURN_IF_ERROR(WriteJson((root / io::kTinyTrainingConfigFile).string(), training));
  LA_RETURN_IF_ERROR(TrainTokenizer(config, corpus_path, (root / io::kTokenizerFile).string()));
  nlohmann::json provenance = config;
  provenance["_made_by"] = {{"tool", "liveavatar make-tiny"}, {"seed", args.seed}, {"config", config_path}};
  LA_RETURN_IF_ERROR(WriteJson((root / "tiny_config.json").string(), provenance));
  LA_LOG_INFO("make-tiny: wrote {} tensors in {} files to {} (seed {}{})", count, nfiles, args.out, args.seed,
              ZeroFill(config) ? ", zero-filled" : "");
  return Status::Ok();
}

}  // namespace liveavatar::cli
