// Checkpoint pre-flight checks (see checkpoint_checks.h).
#include "liveavatar/pipeline/checkpoint_checks.h"

#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>

#include "liveavatar/io/checkpoint_dir.h"
#include "liveavatar/models/audio/wav2vec2.h"
#include "liveavatar/models/dit/config.h"
#include "liveavatar/models/dit/weights.h"
#include "liveavatar/models/lora.h"
#include "liveavatar/models/vae/weights.h"
#include "liveavatar/models/weights.h"

namespace liveavatar::pipeline {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSection = "checkpoint";
constexpr const char* kHubLoraId = "Quark-Vision/Live-Avatar";
// The reference's training yaml (s2v_causal_sft.yaml), used when no training config accompanies the LoRA.
constexpr int kDefaultLoraRank = 128;
constexpr size_t kListed = 3;  // offending keys named per list; the rest are counted

io::CheckResult Pass(std::string what) { return {io::CheckLevel::kPass, kSection, std::move(what), ""}; }
io::CheckResult Fail(std::string what, std::string fix) {
  return {io::CheckLevel::kFail, kSection, std::move(what), std::move(fix)};
}
io::CheckResult Skip(std::string what) { return {io::CheckLevel::kSkip, kSection, std::move(what), ""}; }

// "12.3 KiB", "4.0 MiB", "30.12 GiB".
std::string HumanBytes(uint64_t bytes) {
  char buf[32];
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024.0 * 1024.0) {
    std::snprintf(buf, sizeof(buf), "%.2f GiB", b / (1024.0 * 1024.0 * 1024.0));
  } else if (b >= 1024.0 * 1024.0) {
    std::snprintf(buf, sizeof(buf), "%.1f MiB", b / (1024.0 * 1024.0));
  } else if (b >= 1024.0) {
    std::snprintf(buf, sizeof(buf), "%.1f KiB", b / 1024.0);
  } else {
    std::snprintf(buf, sizeof(buf), "%llu B", static_cast<unsigned long long>(bytes));
  }
  return buf;
}

// "a; b; c (and 4 more)".
std::string FirstFew(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size() && i < kListed; ++i) out += (i ? "; " : "") + v[i];
  if (v.size() > kListed) out += " (and " + std::to_string(v.size() - kListed) + " more)";
  return out;
}

// The fix for a piece io::InspectCheckpointDir flagged.
std::string PieceFix(const io::CheckpointCheck& c) {
  if (c.what == "checkpoint directory") {
    return "pass the Wan2.2-S2V-14B directory with --ckpt_dir (or LIVEAVATAR_CKPT_DIR); layout in docs/checkpoints.md";
  }
  if (c.what == "LoRA") {
    return "pass the local liveavatar.safetensors with --lora_path_dmd, or run without it (--no_load_lora)";
  }
  if (c.problem.rfind("missing", 0) == 0 || c.problem.find(" missing") != std::string::npos) {
    return "download the missing file(s) into the checkpoint directory (docs/checkpoints.md)";
  }
  return "re-download the named file: it is truncated or damaged (compare its size with the hub listing)";
}

uint64_t TotalBytes(const io::TensorStore& store) {
  uint64_t total = 0;
  for (const auto& k : store.Keys()) {
    auto m = store.Meta(k);
    if (m.ok()) total += m->nbytes();
  }
  return total;
}

// Keys and shapes of `store` against `specs`: one PASS or FAIL line for `what`.
io::CheckResult SpecCheck(const std::string& what, const io::TensorStore& store,
                          const std::vector<models::WeightSpec>& specs, const std::string& config_source) {
  auto check = models::CheckWeights(store, specs);
  if (!check.ok()) {
    return Fail(what + " " + store.path() + ": cannot read tensor metadata: " + check.status().message(),
                "re-download the file");
  }
  if (check->ok()) {
    return Pass(what + " " + store.path() + ": " + std::to_string(check->matched) + " tensors match " + config_source +
                " (" + HumanBytes(TotalBytes(store)) + ")");
  }
  std::string problems;
  auto add = [&problems](const char* label, const std::vector<std::string>& v) {
    if (v.empty()) return;
    problems += (problems.empty() ? "" : "; ") + std::to_string(v.size()) + " " + label + ": " + FirstFew(v);
  };
  add("missing", check->missing);
  add("shape mismatch(es)", check->mismatched);
  add("unexpected", check->unexpected);
  return Fail(what + " " + store.path() + " does not match " + config_source + ": " + problems,
              "use the checkpoint that goes with this config (a different model size or a partial download?), "
              "or restore the original " + config_source);
}

}  // namespace

std::string ResolveLoraFile(const std::string& ckpt_dir, const std::string& lora_path) {
  if (!lora_path.empty() && lora_path != kHubLoraId) return lora_path;
  for (const fs::path& p : {fs::path(ckpt_dir) / io::kTinyLoraFile, fs::path("ckpt/LiveAvatar/liveavatar.safetensors")}) {
    std::error_code ec;
    if (fs::exists(p, ec)) return p.string();
  }
  return lora_path;
}

StatusOr<models::t5::T5Config> InferT5ConfigFromWeights(const io::TensorStore& store) {
  models::t5::T5Config c;
  LA_ASSIGN_OR_RETURN(io::TensorMeta emb, store.Meta("token_embedding.weight"));
  LA_ASSIGN_OR_RETURN(io::TensorMeta q, store.Meta("blocks.0.attn.q.weight"));
  LA_ASSIGN_OR_RETURN(io::TensorMeta fc1, store.Meta("blocks.0.ffn.fc1.weight"));
  LA_ASSIGN_OR_RETURN(io::TensorMeta pos, store.Meta("blocks.0.pos_embedding.embedding.weight"));
  if (emb.shape.size() != 2 || q.shape.size() != 2 || fc1.shape.size() != 2 || pos.shape.size() != 2) {
    return Status::Corruption(store.path() + ": unexpected T5 weight ranks");
  }
  c.vocab = emb.shape[0];
  c.dim = emb.shape[1];
  c.dim_attn = q.shape[0];
  c.dim_ffn = fc1.shape[0];
  c.num_buckets = pos.shape[0];
  c.num_heads = pos.shape[1];
  int64_t layers = 0;
  while (store.Contains("blocks." + std::to_string(layers) + ".attn.q.weight")) ++layers;
  c.num_layers = layers;
  return c;
}

StatusOr<models::vae::VaeConfig> InferVaeConfigFromWeights(const io::TensorStore& store) {
  models::vae::VaeConfig c;
  LA_ASSIGN_OR_RETURN(io::TensorMeta conv1, store.Meta("encoder.conv1.weight"));
  LA_ASSIGN_OR_RETURN(io::TensorMeta conv2, store.Meta("conv2.weight"));
  if (conv1.shape.empty() || conv2.shape.empty()) return Status::Corruption(store.path() + ": unexpected VAE weights");
  c.dim = conv1.shape[0];
  c.z_dim = conv2.shape[0];
  return c;
}

bool CheckpointReport::failed() const {
  for (const auto& r : results) {
    if (r.failed()) return true;
  }
  return false;
}

Status CheckpointReport::ToStatus() const {
  std::string msg;
  size_t n = 0;
  for (const auto& r : results) {
    if (!r.failed()) continue;
    ++n;
    msg += "\n  " + r.what + (r.fix.empty() ? "" : "\n      fix: " + r.fix);
  }
  if (n == 0) return Status::Ok();
  return Status::Corruption("checkpoint pre-flight (file headers only, nothing loaded) found " + std::to_string(n) +
                            " problem(s):" + msg);
}

CheckpointReport CheckCheckpoint(const CheckpointCheckOptions& options) {
  CheckpointReport report;
  std::vector<io::CheckResult>& out = report.results;
  const std::string& root = options.ckpt_dir;
  const std::string lora = options.load_lora ? ResolveLoraFile(root, options.lora_path) : "";
  if (options.load_lora && lora.empty()) {
    out.push_back(Fail("LoRA: no --lora_path_dmd given and no liveavatar.safetensors found",
                       "pass the local liveavatar.safetensors with --lora_path_dmd, or run without it (--no_load_lora)"));
  }

  // 1. Presence and headers.
  std::map<std::string, bool> piece_ok;
  for (const auto& c : io::InspectCheckpointDir(root, lora)) {
    piece_ok[c.what] = c.ok;
    if (c.ok) {
      std::error_code ec;
      const auto size = fs::file_size(c.path, ec);
      out.push_back(Pass(c.what + " " + c.path + (ec ? "" : " (" + HumanBytes(size) + ")")));
    } else {
      out.push_back(Fail(c.what + " " + c.path + ": " + c.problem, PieceFix(c)));
    }
  }
  if (piece_ok.count("checkpoint directory")) return report;  // the directory itself is missing
  auto ok = [&piece_ok](const char* what) { return piece_ok.count(what) && piece_ok.at(what); };
  const io::CheckpointDir dir = io::CheckpointDir::At(root, lora);

  // 2. Shapes against the configuration.
  std::optional<models::dit::DitConfig>& dit_config = report.dit;
  std::map<std::string, std::vector<int64_t>> dit_shapes;
  const bool dit_weights_ok = ok("DiT weights") || ok("DiT weights (sharded)");
  if (ok("DiT config") && dit_weights_ok) {
    auto cfg = models::dit::LoadDitConfig(dir.dit_config);
    if (!cfg.ok()) {
      out.push_back(Fail("DiT config " + dir.dit_config + ": " + cfg.status().message(),
                         "restore the checkpoint's original config.json"));
    } else {
      dit_config = *cfg;
      const std::string& path = dir.dit_weights;  // the file models::dit::LoadDitCheckpoint reads
      auto store = io::OpenTensorStore(path);
      const auto specs = models::dit::DitWeightSpecs(*dit_config);
      for (const auto& s : specs) dit_shapes[s.key] = s.shape;
      if (!store.ok()) {
        out.push_back(Fail("DiT weights " + path + ": " + store.status().message(), "re-download the file"));
      } else {
        out.push_back(SpecCheck("DiT weights", **store, specs, "config.json"));
      }
    }
  } else {
    out.push_back(Skip("DiT shapes: not checked (see the DiT config/weights lines above)"));
  }

  if (ok("T5 weights")) {
    auto store = io::OpenTensorStore(dir.t5_weights);
    auto cfg = store.ok() ? InferT5ConfigFromWeights(**store) : StatusOr<models::t5::T5Config>(store.status());
    if (!cfg.ok()) {
      out.push_back(Fail("T5 weights " + dir.t5_weights + ": " + cfg.status().message(),
                         "re-download " + std::string(io::kT5File)));
    } else {
      report.t5 = *cfg;
      out.push_back(SpecCheck("T5 weights", **store, models::t5::T5WeightSpecs(*cfg), "the umT5 layout"));
      if (dit_config && cfg->dim != dit_config->text_dim) {
        out.push_back(Fail("T5 dim " + std::to_string(cfg->dim) + " (" + dir.t5_weights + ") != DiT text_dim " +
                               std::to_string(dit_config->text_dim) + " (" + dir.dit_config + ")",
                           "use the T5 encoder shipped with this DiT checkpoint"));
      }
    }
  } else {
    out.push_back(Skip("T5 shapes: not checked (see the T5 weights line above)"));
  }

  if (ok("VAE weights")) {
    auto store = io::OpenTensorStore(dir.vae_weights);
    auto cfg = store.ok() ? InferVaeConfigFromWeights(**store) : StatusOr<models::vae::VaeConfig>(store.status());
    if (!cfg.ok()) {
      out.push_back(Fail("VAE weights " + dir.vae_weights + ": " + cfg.status().message(),
                         "re-download " + std::string(io::kVaeFile)));
    } else {
      report.vae = *cfg;
      out.push_back(SpecCheck("VAE weights", **store, models::vae::VaeWeightSpecs(*cfg), "the Wan2.1 VAE layout"));
    }
  } else {
    out.push_back(Skip("VAE shapes: not checked (see the VAE weights line above)"));
  }

  if (ok("wav2vec2 config") && ok("wav2vec2 weights") && ok("wav2vec2 preprocessor config")) {
    auto cfg = models::audio::LoadWav2Vec2Config(dir.wav2vec2_dir);
    auto store = io::OpenTensorStore(dir.wav2vec2_weights);
    if (!cfg.ok() || !store.ok()) {
      out.push_back(Fail("wav2vec2 " + dir.wav2vec2_dir + ": " + (!cfg.ok() ? cfg.status() : store.status()).message(),
                         "re-download " + std::string(io::kWav2Vec2Dir)));
    } else {
      report.wav2vec2 = *cfg;
      auto specs = models::audio::Wav2Vec2WeightSpecs(*cfg);
      // transformers >= 4.46 may save the positional conv's weight norm as a parametrization (as FromStore accepts).
      const std::string pos = "wav2vec2.encoder.pos_conv_embed.conv.";
      if (!(*store)->Contains(pos + "weight_g") && (*store)->Contains(pos + "parametrizations.weight.original0")) {
        for (auto& s : specs) {
          if (s.key == pos + "weight_g") s.key = pos + "parametrizations.weight.original0";
          if (s.key == pos + "weight_v") s.key = pos + "parametrizations.weight.original1";
        }
      }
      out.push_back(SpecCheck("wav2vec2 weights", **store, specs, "its config.json"));
      if (dit_config && cfg->hidden_size != dit_config->audio_dim) {
        out.push_back(Fail("wav2vec2 hidden size " + std::to_string(cfg->hidden_size) + " (" + dir.wav2vec2_config +
                               ") != DiT audio_dim " + std::to_string(dit_config->audio_dim) + " (" +
                               dir.dit_config + ")",
                           "use wav2vec2-large-xlsr-53-english, the audio encoder this DiT was trained with"));
      }
      // The DiT's audio encoder mixes every hidden state of wav2vec2 (layers + 1, the input embedding included).
      for (const auto& [key, shape] : dit_shapes) {
        const std::string suffix = "audio_encoder.weights";
        if (key.size() < suffix.size() || key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0 ||
            shape.size() < 2 || shape[1] == cfg->num_hidden_layers + 1) {
          continue;
        }
        out.push_back(Fail("wav2vec2 has " + std::to_string(cfg->num_hidden_layers) + " layers (" +
                               dir.wav2vec2_config + ") but the DiT's " + key + " mixes " + std::to_string(shape[1]) +
                               " hidden states, i.e. " + std::to_string(shape[1] - 1) + " layers (" + dir.dit_config +
                               ")",
                           "use the full wav2vec2-large-xlsr-53-english (24 layers)"));
      }
    }
  } else {
    out.push_back(Skip("wav2vec2 shapes: not checked (see the wav2vec2 lines above)"));
  }

  // 3. LoRA keys against the DiT.
  if (!options.load_lora) {
    out.push_back(Skip("LoRA: --no_load_lora, nothing to merge"));
  } else if (!lora.empty() && ok("LoRA") && dit_config) {
    const fs::path next_to = fs::path(lora).parent_path() / "training_config_lora.json";
    const fs::path rank_source = options.training_config.empty() ? next_to : fs::path(options.training_config);
    int rank = kDefaultLoraRank;
    std::string rank_from = "the reference default";
    std::vector<std::string> targets = models::DefaultLoraTargets();
    std::optional<io::CheckResult> config_problem;
    for (const fs::path& p : {rank_source, next_to}) {
      std::error_code ec;
      if (!fs::exists(p, ec)) continue;
      auto tc = models::LoadLoraTrainingConfig(p.string());
      if (!tc.ok()) {
        config_problem = Fail("LoRA training config " + p.string() + ": " + tc.status().message(),
                              "fix or remove the training config (lora_rank, lora_alpha, lora_target_modules)");
        break;
      }
      if (p == rank_source) {
        rank = tc->rank;
        rank_from = p.string();
      }
      if (p == next_to) targets = tc->targets;  // MergeLoraFile takes the targets from next to the LoRA
    }
    report.lora_rank = rank;
    if (config_problem) {
      out.push_back(*config_problem);
    } else {
      auto store = io::OpenTensorStore(lora);
      auto match = store.ok() ? models::MatchLora(**store, dit_shapes, rank, targets)
                              : StatusOr<models::LoraMatch>(store.status());
      if (!match.ok()) {
        out.push_back(Fail("LoRA " + lora + ": " + match.status().message(), "re-download the LoRA file"));
      } else if (!match->errors.empty()) {
        out.push_back(Fail("LoRA " + lora + ": " + std::to_string(match->errors.size()) +
                               " key(s) match no DiT weight: " + FirstFew(match->errors),
                           "use the LoRA trained for this DiT (rank " + std::to_string(rank) + " from " + rank_from +
                               "); a different model or rank gives unmatched keys"));
      } else if (match->pairs.empty()) {
        out.push_back(Fail("LoRA " + lora + ": holds no lora_A/lora_B pairs", "re-download the LoRA file"));
      } else {
        out.push_back(Pass("LoRA " + lora + ": all " + std::to_string(match->pairs.size()) +
                           " A/B pairs match DiT weights (rank " + std::to_string(rank) + " from " + rank_from + ")"));
      }
    }
  } else if (options.load_lora && !lora.empty()) {
    out.push_back(Skip("LoRA keys: not checked (see the LoRA / DiT lines above)"));
  }
  return report;
}

}  // namespace liveavatar::pipeline
