#include "liveavatar/pipeline/options.h"

#include <algorithm>
#include <cctype>

namespace liveavatar::pipeline {

namespace {

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string JoinSizes() {
  std::string out;
  for (const auto& s : SupportedSizes()) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out;
}

}  // namespace

const std::vector<std::string>& SupportedSizes() {
  static const std::vector<std::string> kSizes = {"720*1280", "1280*720", "480*832", "832*480",
                                                  "704*1280", "1280*704", "1024*704", "704*1024",
                                                  "720*400",  "704*384",  "688*368",  "384*256"};
  return kSizes;
}

StatusOr<std::pair<int64_t, int64_t>> ParseSize(const std::string& size) {
  const auto& sizes = SupportedSizes();
  if (std::find(sizes.begin(), sizes.end(), size) == sizes.end()) {
    return Status::InvalidArgument("--size: '" + size + "' is not a supported size; valid sizes (W*H): " +
                                   JoinSizes());
  }
  const size_t star = size.find('*');
  return std::make_pair(static_cast<int64_t>(std::stoll(size.substr(0, star))),
                        static_cast<int64_t>(std::stoll(size.substr(star + 1))));
}

std::string DefaultSize(int world_size) { return world_size > 1 ? "720*400" : "704*384"; }

StatusOr<bool> ParseBool(const std::string& value, const std::string& flag) {
  const std::string v = Lower(value);
  if (v == "yes" || v == "true" || v == "t" || v == "y" || v == "1") return true;
  if (v == "no" || v == "false" || v == "f" || v == "n" || v == "0") return false;
  return Status::InvalidArgument(flag + ": boolean value expected (True/False/true/false/1/0), got '" + value +
                                 "'");
}

Status ValidateRunOptions(const RunOptions& options) {
  const GenerateOptions& g = options.generate;
  const ParallelOptions& p = options.parallel;
  const MemoryOptions& m = options.memory;
  const OutputOptions& o = options.output;
  std::vector<std::string> errors;
  auto check = [&errors](bool ok, std::string msg) {
    if (!ok) errors.push_back(std::move(msg));
  };

  if (!g.size.empty()) {
    auto parsed = ParseSize(g.size);
    if (!parsed.ok()) errors.push_back(parsed.status().message());
  }
  check(g.task == "s2v-14B", "--task: only s2v-14B is supported by this entry point (got '" + g.task + "')");
  check(g.max_audio_s > 0, "--max_audio_s: must be positive (got " + std::to_string(g.max_audio_s) + ")");
  check(g.infer_frames > 0 && g.infer_frames % 4 == 0,
        "--infer_frames: must be a positive multiple of 4 (got " + std::to_string(g.infer_frames) + ")");
  check(g.num_clip > 0, "--num_clip: must be positive (got " + std::to_string(g.num_clip) + ")");
  check(g.sample_steps > 0, "--sample_steps: must be positive (got " + std::to_string(g.sample_steps) + ")");
  check(g.sample_solver == "euler" || g.sample_solver == "unipc" || g.sample_solver == "dpm++",
        "--sample_solver: must be one of euler, unipc, dpm++ (got '" + g.sample_solver + "')");
  check(g.base_seed >= -1, "--base_seed: must be >= 0, or -1 for a random seed (got " +
                               std::to_string(g.base_seed) + ")");
  check(g.rolling_sink_d == -1 || (g.rolling_sink_d >= 4 && g.rolling_sink_d <= 30),
        "--rolling_sink_d: must be -1 (seeded draw) or within 4..30 (got " + std::to_string(g.rolling_sink_d) + ")");
  check(g.prompt_extend_method == "dashscope" || g.prompt_extend_method == "local_qwen",
        "--prompt_extend_method: must be dashscope or local_qwen (got '" + g.prompt_extend_method + "')");
  check(g.prompt_extend_target_lang == "zh" || g.prompt_extend_target_lang == "en",
        "--prompt_extend_target_lang: must be zh or en (got '" + g.prompt_extend_target_lang + "')");
  check(g.dataset_sample_idx >= 0, "--dataset_sample_idx: must be >= 0");
  check(!g.ckpt_dir.empty(), "--ckpt_dir: must not be empty");

  check(p.num_gpus_dit >= 1, "--num_gpus_dit: must be >= 1 (got " + std::to_string(p.num_gpus_dit) + ")");
  check(p.ulysses_size >= 1, "--ulysses_size: must be >= 1 (got " + std::to_string(p.ulysses_size) + ")");
  check(p.fsdp_prefetch >= 0, "--fsdp_prefetch: must be >= 0 (got " + std::to_string(p.fsdp_prefetch) + ")");
  check(p.nproc_per_node >= 1, "--nproc_per_node: must be >= 1 (got " + std::to_string(p.nproc_per_node) + ")");
  check(p.threads >= 0, "--threads: must be >= 0 (got " + std::to_string(p.threads) + ")");

  check(m.max_gpu_mem_gb >= 0, "--max_gpu_mem_gb: must be >= 0 (got " + std::to_string(m.max_gpu_mem_gb) + ")");

  check(o.crf >= 0 && o.crf <= 51, "--crf: must be within 0..51 (got " + std::to_string(o.crf) + ")");
  static const char* kPresets[] = {"ultrafast", "superfast", "veryfast", "faster", "fast",
                                   "medium",    "slow",      "slower",   "veryslow", "placebo"};
  check(std::find(std::begin(kPresets), std::end(kPresets), o.preset) != std::end(kPresets),
        "--preset: not an x264 preset (got '" + o.preset + "'; expected ultrafast..placebo, e.g. medium)");

  if (errors.empty()) return Status::Ok();
  std::string msg = errors.front();
  for (size_t i = 1; i < errors.size(); ++i) msg += "; " + errors[i];
  return Status::InvalidArgument(msg);
}

std::vector<std::string> IgnoredFlagWarnings(const RunOptions& options) {
  const GenerateOptions& g = options.generate;
  std::vector<std::string> w;
  const std::string kIgnored = " is ignored by the reference (and by liveavatar)";
  if (g.sample_shift) w.push_back("--sample_shift" + kIgnored + ": the scheduler shift is fixed at 3");
  if (g.sample_guide_scale) w.push_back("--sample_guide_scale" + kIgnored + ": the distilled sampler runs no CFG");
  if (g.sample_solver != "euler") {
    w.push_back("--sample_solver " + g.sample_solver + kIgnored +
                ": only the flow-match Euler sampler exists (the reference raises NotImplementedError); using "
                "euler");
  }
  if (g.frame_num) w.push_back("--frame_num" + kIgnored + ": s2v uses --infer_frames");
  if (!g.lora_path.empty()) w.push_back("--lora_path" + kIgnored + ": use --lora_path_dmd");
  if (g.using_merged_ckpt) w.push_back("--using_merged_ckpt" + kIgnored);
  if (g.start_from_ref) w.push_back("--start_from_ref" + kIgnored);
  if (g.drop_motion_noisy) w.push_back("--drop_motion_noisy" + kIgnored);
  if (g.use_dataset) w.push_back("--use_dataset" + kIgnored + " at inference");
  if (g.dataset_sample_idx != 0) w.push_back("--dataset_sample_idx" + kIgnored + " at inference");
  const std::string kUnsupported = " is not supported by liveavatar; ignored";
  if (g.use_prompt_extend) w.push_back("--use_prompt_extend" + kUnsupported + " (the prompt is used as given)");
  if (!g.prompt_extend_model.empty()) w.push_back("--prompt_extend_model" + kUnsupported);
  if (g.enable_tts) w.push_back("--enable_tts" + kUnsupported + " (pass speech with --audio)");
  if (!g.tts_prompt_audio.empty()) w.push_back("--tts_prompt_audio" + kUnsupported);
  if (!g.tts_prompt_text.empty()) w.push_back("--tts_prompt_text" + kUnsupported);
  if (!g.tts_text.empty()) w.push_back("--tts_text" + kUnsupported);
  if (!g.pose_video.empty()) w.push_back("--pose_video" + kUnsupported + " (cond_encoder gets zero input)");
  return w;
}

}  // namespace liveavatar::pipeline
