#include "liveavatar/io/checkpoint_dir.h"

#include "liveavatar/io/path_rules.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "liveavatar/io/safetensors.h"
#include "liveavatar/io/tensor_store.h"

namespace liveavatar::io {

namespace fs = std::filesystem;

namespace {

std::string Join(const std::string& a, const std::string& b) { return (fs::path(a) / b).string(); }

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// "" when `path` is a non-empty regular file, else the problem.
std::string FileProblem(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return "missing";
  if (!fs::is_regular_file(path, ec)) return "not a regular file";
  const auto size = fs::file_size(path, ec);
  if (ec) return "cannot stat (" + ec.message() + ")";
  if (size == 0) return "empty file";
  return "";
}

StatusOr<nlohmann::json> ReadJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::IOError(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::Corruption(path + ": not valid JSON");
  if (!j.is_object()) return Status::Corruption(path + ": JSON is not an object");
  return j;
}

std::string JsonProblem(const std::string& path) {
  std::string p = FileProblem(path);
  if (!p.empty()) return p;
  auto j = ReadJson(path);
  return j.ok() ? "" : "invalid: " + j.status().message();
}

// Opens a tensor file (format by extension) to validate its header.
std::string TensorFileProblem(const std::string& path) {
  std::string p = FileProblem(path);
  if (!p.empty()) return p;
  if (EndsWith(path, ".safetensors")) {
    auto r = SafetensorsReader::Open(path);
    return r.ok() ? "" : "truncated or invalid: " + r.status().message();
  }
  auto s = OpenTensorStore(path);
  return s.ok() ? "" : "truncated or invalid: " + s.status().message();
}

// Validates a sharded index: JSON with a weight_map whose shards exist, open, and hold the mapped keys.
std::string IndexProblem(const std::string& index_path) {
  std::string p = FileProblem(index_path);
  if (!p.empty()) return p;
  auto j = ReadJson(index_path);
  if (!j.ok()) return "invalid: " + j.status().message();
  auto it = j->find("weight_map");
  if (it == j->end() || !it->is_object() || it->empty()) return "invalid: no non-empty \"weight_map\" object";
  std::map<std::string, std::vector<std::string>> keys_by_shard;
  for (auto kv = it->begin(); kv != it->end(); ++kv) {
    if (!kv.value().is_string()) return "invalid: weight_map value of '" + kv.key() + "' is not a string";
    keys_by_shard[kv.value().get<std::string>()].push_back(kv.key());
  }
  const std::string dir = fs::path(index_path).parent_path().string();
  std::vector<std::string> problems;
  for (const auto& [shard, keys] : keys_by_shard) {
    auto inside = PathInside(dir, shard, "weight_map shard of '" + Printable(keys.front()) + "'");
    if (!inside.ok()) {
      problems.push_back(inside.status().message());
      continue;
    }
    const std::string shard_path = *inside;
    std::string sp = FileProblem(shard_path);
    if (!sp.empty()) {
      problems.push_back("shard " + shard_path + " " + sp);
      continue;
    }
    auto reader = SafetensorsReader::Open(shard_path);
    if (!reader.ok()) {
      problems.push_back("shard truncated or invalid: " + reader.status().message());
      continue;
    }
    size_t missing = 0;
    std::string first_missing;
    for (const auto& k : keys) {
      if (!(*reader)->Contains(k)) {
        if (missing++ == 0) first_missing = k;
      }
    }
    if (missing > 0) {
      problems.push_back("shard " + shard_path + " lacks " + std::to_string(missing) +
                         " tensor(s) the index maps to it (first: '" + first_missing + "')");
    }
  }
  std::string out;
  for (const auto& s : problems) out += (out.empty() ? "" : "; ") + s;
  return out;
}

std::string LoraProblem(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec) && path.find('/') != std::string::npos && !fs::path(path).has_extension()) {
    return "missing (looks like a Hugging Face id; liveavatar never downloads: pass the local path of "
           "liveavatar.safetensors)";
  }
  std::string p = TensorFileProblem(path);
  if (!p.empty()) return p;
  auto store = OpenTensorStore(path);
  if (!store.ok()) return "invalid: " + store.status().message();
  for (const auto& k : (*store)->Keys()) {
    if (k.find("lora_A") != std::string::npos) return "";
  }
  return "holds no lora_A tensors (expected the PEFT layout <module>.lora_A.default.weight)";
}

}  // namespace

CheckpointDir CheckpointDir::At(const std::string& root, const std::string& lora_path) {
  CheckpointDir d;
  d.root = root;
  d.dit_config = Join(root, kDitConfigFile);
  const std::string index = Join(root, kDitIndexFile);
  std::error_code ec;
  d.dit_sharded = fs::exists(index, ec);
  d.dit_weights = d.dit_sharded ? index : Join(root, kDitSingleFile);
  d.t5_weights = Join(root, kT5File);
  d.vae_weights = Join(root, kVaeFile);
  d.tokenizer = Join(root, kTokenizerFile);
  d.wav2vec2_dir = Join(root, kWav2Vec2Dir);
  d.wav2vec2_config = Join(d.wav2vec2_dir, kWav2Vec2ConfigFile);
  const std::string w2v_st = Join(d.wav2vec2_dir, kWav2Vec2SafetensorsFile);
  const std::string w2v_bin = Join(d.wav2vec2_dir, kWav2Vec2BinFile);
  d.wav2vec2_weights = (fs::exists(w2v_st, ec) || !fs::exists(w2v_bin, ec)) ? w2v_st : w2v_bin;
  d.wav2vec2_preprocessor = Join(d.wav2vec2_dir, kWav2Vec2PreprocessorFile);
  d.lora = lora_path;
  return d;
}

std::vector<CheckpointCheck> InspectCheckpointDir(const std::string& root, const std::string& lora_path) {
  std::vector<CheckpointCheck> checks;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    checks.push_back({"checkpoint directory", root, false, "missing or not a directory"});
    return checks;
  }
  const CheckpointDir d = CheckpointDir::At(root, lora_path);
  auto add = [&checks](const std::string& what, const std::string& path, const std::string& problem) {
    checks.push_back({what, path, problem.empty(), problem});
  };
  add("DiT config", d.dit_config, JsonProblem(d.dit_config));
  if (d.dit_sharded) {
    add("DiT weights (sharded)", d.dit_weights, IndexProblem(d.dit_weights));
  } else {
    std::string p = TensorFileProblem(d.dit_weights);
    if (p == "missing") p = "missing (neither " + std::string(kDitSingleFile) + " nor " + kDitIndexFile + ")";
    add("DiT weights", d.dit_weights, p);
  }
  add("T5 weights", d.t5_weights, TensorFileProblem(d.t5_weights));
  add("VAE weights", d.vae_weights, TensorFileProblem(d.vae_weights));
  add("T5 tokenizer", d.tokenizer, FileProblem(d.tokenizer));
  add("wav2vec2 config", d.wav2vec2_config, JsonProblem(d.wav2vec2_config));
  {
    std::string p = TensorFileProblem(d.wav2vec2_weights);
    if (p == "missing") {
      p = "missing (neither " + std::string(kWav2Vec2SafetensorsFile) + " nor " + kWav2Vec2BinFile + ")";
    }
    add("wav2vec2 weights", d.wav2vec2_weights, p);
  }
  add("wav2vec2 preprocessor config", d.wav2vec2_preprocessor, JsonProblem(d.wav2vec2_preprocessor));
  if (!lora_path.empty()) add("LoRA", lora_path, LoraProblem(lora_path));
  return checks;
}

Status CheckCheckpointDir(const std::string& root, const std::string& lora_path) {
  const auto checks = InspectCheckpointDir(root, lora_path);
  std::string msg;
  size_t bad = 0;
  bool any_missing_only = true;
  for (const auto& c : checks) {
    if (c.ok) continue;
    ++bad;
    if (c.problem.rfind("missing", 0) != 0) any_missing_only = false;
    msg += "\n  " + c.what + " (" + c.path + "): " + c.problem;
  }
  if (bad == 0) return Status::Ok();
  msg = "checkpoint directory " + root + ": " + std::to_string(bad) + " problem(s):" + msg;
  return any_missing_only ? Status::NotFound(msg) : Status::Corruption(msg);
}

}  // namespace liveavatar::io
