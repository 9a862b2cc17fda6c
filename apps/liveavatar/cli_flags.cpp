#include "cli_flags.h"

#include <optional>
#include <utility>

#include <CLI/CLI.hpp>

#include "cli_parse.h"
#include "liveavatar/pipeline/options.h"

namespace liveavatar::cli {

namespace {

using Binder = std::function<CLI::Option*(CLI::App&, const FlagDef&, ParsedCommand&)>;

// Binders: each takes a getter returning the field of ParsedCommand the flag fills.
template <typename Get>
Binder Value(Get get) {
  return [get](CLI::App& app, const FlagDef& d, ParsedCommand& t) {
    return app.add_option(d.name, get(t), d.help)->capture_default_str();
  };
}

template <typename Get>
Binder Required(Get get) {
  return [get](CLI::App& app, const FlagDef& d, ParsedCommand& t) {
    return app.add_option(d.name, get(t), d.help)->required();
  };
}

template <typename Get>
Binder Switch(Get get) {
  return [get](CLI::App& app, const FlagDef& d, ParsedCommand& t) { return app.add_flag(d.name, get(t), d.help); };
}

// An optional<T> filled only when the flag is given (argparse default None).
template <typename T, typename Get>
Binder Optional(Get get) {
  return [get](CLI::App& app, const FlagDef& d, ParsedCommand& t) {
    std::optional<T>* field = &get(t);
    return app.add_option_function<T>(d.name, [field](const T& v) { *field = v; }, d.help);
  };
}

// The reference's str2bool into an optional<bool>.
template <typename Get>
Binder Str2Bool(Get get) {
  return [get](CLI::App& app, const FlagDef& d, ParsedCommand& t) {
    std::optional<bool>* field = &get(t);
    const std::string flag = d.name;
    return app.add_option_function<std::string>(
        d.name,
        [field, flag](const std::string& v) {
          auto parsed = pipeline::ParseBool(v, flag);
          if (!parsed.ok()) throw CLI::ValidationError(parsed.status().message());
          *field = *parsed;
        },
        d.help);
  };
}

#define LA_FIELD(expr) [](ParsedCommand& t) -> auto& { return t.expr; }

const char* kInputs = "Inputs";
const char* kModel = "Model";
const char* kSampling = "Sampling";
const char* kParallel = "Parallelism";
const char* kMemory = "Memory";
const char* kOutput = "Output";
const char* kLogging = "Logging";

std::vector<FlagDef> BuildTable() {
  std::vector<FlagDef> t;
  auto add = [&t](std::string name, const char* group, std::string hint, unsigned subs, std::string help,
                  Binder bind, std::string env = "") {
    t.push_back(FlagDef{std::move(name), group, std::move(hint), std::move(help), std::move(env), subs,
                        std::move(bind)});
  };
  const std::string kRefIgnores = " [reference ignores; accepted with a warning]";
  const std::string kUnsupported = " [not supported; accepted with a warning]";

  // ---- Inputs ----
  add("--image", kInputs, "PATH", kSubRun, "Reference image (jpg/png); its aspect ratio sets the output shape",
      Value(LA_FIELD(run.generate.image)));
  add("--audio", kInputs, "PATH", kSubRun, "Driving speech (wav/mp3/flac); its length caps the clip count",
      Value(LA_FIELD(run.generate.audio)));
  add("--prompt", kInputs, "TEXT", kSubRun, "Text prompt for the umT5 encoder", Value(LA_FIELD(run.generate.prompt)));
  add("config", kInputs, "CONFIG", kSubBatch,
      "Batch config (JSON): a list of jobs [{image, audio, prompt, output, <generate flags>}] or the reference's "
      "sample_list dict {name: {prompt, image, audio, num_clip}}",
      Value(LA_FIELD(run.generate.sample_list)));
  add("--sample_list", kInputs, "PATH", kSubBatch, "Same as the CONFIG argument (reference batch_eval.py spelling)",
      Value(LA_FIELD(run.generate.sample_list)));
  add("--pose_video", kInputs, "PATH", kSubRun, "DW-pose driving video" + kUnsupported,
      Value(LA_FIELD(run.generate.pose_video)));
  add("--use_prompt_extend", kInputs, "", kSubRun, "Rewrite the prompt with Qwen/DashScope" + kUnsupported,
      Switch(LA_FIELD(run.generate.use_prompt_extend)));
  add("--prompt_extend_method", kInputs, "dashscope|local_qwen", kSubRun, "Prompt extension backend" + kUnsupported,
      Value(LA_FIELD(run.generate.prompt_extend_method)));
  add("--prompt_extend_model", kInputs, "NAME", kSubRun, "Prompt extension model" + kUnsupported,
      Value(LA_FIELD(run.generate.prompt_extend_model)));
  add("--prompt_extend_target_lang", kInputs, "zh|en", kSubRun, "Prompt extension language" + kUnsupported,
      Value(LA_FIELD(run.generate.prompt_extend_target_lang)));
  add("--enable_tts", kInputs, "", kSubRun, "Synthesise the audio with CosyVoice" + kUnsupported,
      Switch(LA_FIELD(run.generate.enable_tts)));
  add("--tts_prompt_audio", kInputs, "PATH", kSubRun, "TTS voice prompt audio" + kUnsupported,
      Value(LA_FIELD(run.generate.tts_prompt_audio)));
  add("--tts_prompt_text", kInputs, "TEXT", kSubRun, "TTS voice prompt transcript" + kUnsupported,
      Value(LA_FIELD(run.generate.tts_prompt_text)));
  add("--tts_text", kInputs, "TEXT", kSubRun, "Text to synthesise" + kUnsupported,
      Value(LA_FIELD(run.generate.tts_text)));
  add("--use_dataset", kInputs, "", kSubRun, "Read inputs from the training dataset" + kRefIgnores,
      Switch(LA_FIELD(run.generate.use_dataset)));
  add("--dataset_sample_idx", kInputs, "N", kSubRun, "Dataset sample index" + kRefIgnores,
      Value(LA_FIELD(run.generate.dataset_sample_idx)));
  add("input", kInputs, "IN", kSubConvert, "Input tensor file: .safetensors, .safetensors.index.json, .pth, .pt, .bin",
      Required(LA_FIELD(convert.input)));
  add("output", kInputs, "OUT", kSubConvert, "Output .safetensors file", Required(LA_FIELD(convert.output)));
  add("--config", kInputs, "PATH", kSubMakeTiny,
      "Tiny model config (default: configs/tiny.json in the working directory, else in the source tree)",
      Value(LA_FIELD(make_tiny.config)));
  add("--corpus", kInputs, "PATH", kSubMakeTiny,
      "Text the tiny SentencePiece model is trained on (default: configs/tiny_corpus.txt, found like --config)",
      Value(LA_FIELD(make_tiny.corpus)));

  // ---- Model ----
  add("--task", kModel, "NAME", kSubRun, "Task; only s2v-14B is supported (reference choices t2v-A14B, "
      "i2v-A14B, ti2v-5B, s2v-14B)", Value(LA_FIELD(run.generate.task)));
  add("--ckpt_dir", kModel, "DIR", kSubRun, "Wan2.2-S2V-14B checkpoint directory (docs/checkpoints.md)",
      Value(LA_FIELD(run.generate.ckpt_dir)), "LIVEAVATAR_CKPT_DIR");
  add("--load_lora,!--no_load_lora", kModel, "", kSubRun,
      "Merge the DMD LoRA of --lora_path_dmd into the DiT (default on, as in the launch scripts)",
      Switch(LA_FIELD(run.generate.load_lora)));
  add("--lora_path_dmd", kModel, "PATH", kSubRun,
      "LoRA .safetensors (PEFT layout); the HF id Quark-Vision/Live-Avatar means "
      "ckpt/LiveAvatar/liveavatar.safetensors", Value(LA_FIELD(run.generate.lora_path_dmd)));
  add("--training_config", kModel, "PATH", kSubRun,
      "yaml/json with lora_rank, lora_alpha, lora_target_modules (default: r=128, alpha=64, q,k,v,o,ffn.0,ffn.2)",
      Value(LA_FIELD(run.generate.training_config)));
  add("--lora_path", kModel, "PATH", kSubRun, "Generic LoRA path" + kRefIgnores, Value(LA_FIELD(run.generate.lora_path)));
  add("--using_merged_ckpt", kModel, "", kSubRun, "Checkpoint already has the LoRA merged" + kRefIgnores,
      Switch(LA_FIELD(run.generate.using_merged_ckpt)));
  add("--out", kModel, "DIR", kSubMakeTiny, "Directory to write the tiny checkpoint into",
      Required(LA_FIELD(make_tiny.out)));
  add("--seed", kModel, "N", kSubMakeTiny, "Seed of the random weights", Value(LA_FIELD(make_tiny.seed)));
  add("--dims", kModel, "tiny|real", kSubMakeTiny,
      "tiny: configs/tiny.json (random weights); real: configs/real_dims.json, the real 14B tensor shapes and key "
      "names with zero-filled weights and a 4-shard DiT (use with --layers)",
      Value(LA_FIELD(make_tiny.dims)));
  add("--layers", kModel, "N", kSubMakeTiny,
      "Keep N DiT blocks and N T5 layers (default: the config's); the DiT's audio injectors keep the layers below "
      "N; wav2vec2 keeps its depth (the DiT mixes all of its hidden states)", Value(LA_FIELD(make_tiny.layers)));
  add("--dtype", kModel, "bf16|fp16|fp32", kSubConvert,
      "Convert floating tensors to this type (default: keep each tensor's type)", Value(LA_FIELD(convert.dtype)));

  // ---- Sampling ----
  add("--size", kSampling, "W*H", kSubRun,
      "Target area, one of 720*1280 1280*720 480*832 832*480 704*1280 1280*704 1024*704 704*1024 720*400 704*384 "
      "688*368 384*256; the shape follows the image (default: 704*384 on one GPU, 720*400 with TPP)",
      Value(LA_FIELD(run.generate.size)));
  add("--num_clip", kSampling, "N", kSubRun, "Clips to generate, capped by the audio length",
      Value(LA_FIELD(run.generate.num_clip)));
  add("--infer_frames", kSampling, "N", kSubRun, "Frames per clip, a multiple of 4",
      Value(LA_FIELD(run.generate.infer_frames)));
  add("--max_audio_s", kInputs, "SECONDS", kSubRun,
      "Longest --audio accepted (default 3600); a file's header is checked against it (and its rate against "
      "8-384 kHz, its channels against 32) before any resampling",
      Value(LA_FIELD(run.generate.max_audio_s)));
  add("--sample_steps", kSampling, "N", kSubRun, "Denoising steps (TPP: one per DiT GPU)",
      Value(LA_FIELD(run.generate.sample_steps)));
  add("--sample_solver", kSampling, "euler|unipc|dpm++", kSubRun,
      "Sampler; only euler exists (others: warning, euler used)", Value(LA_FIELD(run.generate.sample_solver)));
  add("--base_seed", kSampling, "N", kSubRun, "Noise seed (clip r uses base_seed + r); -1 = random",
      Value(LA_FIELD(run.generate.base_seed)));
  add("--rolling_sink_d", kSampling, "D", kSubRun,
      "Rolling-sink offset d in 4..30 for every call; -1 = draw d from an RNG seeded by --base_seed "
      "(the reference draws it unseeded)", Value(LA_FIELD(run.generate.rolling_sink_d)));
  add("--sample_shift", kSampling, "X", kSubRun, "Flow-matching shift (fixed at 3)" + kRefIgnores,
      Optional<double>(LA_FIELD(run.generate.sample_shift)));
  add("--sample_guide_scale", kSampling, "X", kSubRun, "CFG scale (no CFG is run)" + kRefIgnores,
      Optional<double>(LA_FIELD(run.generate.sample_guide_scale)));
  add("--frame_num", kSampling, "N", kSubRun, "Frame count 4n+1 (s2v uses --infer_frames)" + kRefIgnores,
      Optional<int64_t>(LA_FIELD(run.generate.frame_num)));
  add("--start_from_ref", kSampling, "", kSubRun, "Use the image as the first frame" + kRefIgnores,
      Switch(LA_FIELD(run.generate.start_from_ref)));
  add("--drop_motion_noisy", kSampling, "", kSubRun, "Drop noisy motion frames" + kRefIgnores,
      Switch(LA_FIELD(run.generate.drop_motion_noisy)));

  // ---- Parallelism ----
  add("--num_gpus_dit", kParallel, "N", kSubRun, "GPUs running DiT steps in TPP (forced to 1 on one process)",
      Value(LA_FIELD(run.parallel.num_gpus_dit)));
  add("--ulysses_size", kParallel, "N", kSubRun, "Ulysses sequence-parallel degree",
      Value(LA_FIELD(run.parallel.ulysses_size)));
  add("--enable_vae_parallel", kParallel, "", kSubRun, "Decode on the ranks after the DiT ranks (several split the frame); else the last DiT stage decodes",
      Switch(LA_FIELD(run.parallel.enable_vae_parallel)));
  add("--single_gpu", kParallel, "", kSubRun, "Single-GPU pipeline (forced from the world size)",
      Switch(LA_FIELD(run.parallel.single_gpu)));
  add("--t5_fsdp", kParallel, "", kSubRun, "Shard T5 with FSDP", Switch(LA_FIELD(run.parallel.t5_fsdp)));
  add("--dit_fsdp", kParallel, "", kSubRun, "Shard the DiT with FSDP across all ranks",
      Switch(LA_FIELD(run.parallel.dit_fsdp)));
  add("--fsdp_prefetch", kParallel, "N", kSubRun, "FSDP blocks gathered ahead of the running one",
      Value(LA_FIELD(run.parallel.fsdp_prefetch)));
  add("--nproc_per_node", kParallel, "N", kSubRun, "Processes to launch on this node (like torchrun)",
      Value(LA_FIELD(run.parallel.nproc_per_node)));
  add("--threads", kParallel, "N", kSubAll, "CPU threads for LibTorch; 0 = LIVEAVATAR_NUM_THREADS or all cores",
      Value(LA_FIELD(run.parallel.threads)));

  // ---- Memory ----
  add("--offload_model", kMemory, "BOOL", kSubRun,
      "Keep the DiT blocks (with --dit_fsdp: this rank's slices) in (pinned) host memory, copied in one block ahead: "
      "True/False (docs/offload.md; default False)",
      Str2Bool(LA_FIELD(run.memory.offload_model)));
  add("--offload_kv_cache", kMemory, "", kSubRun, "Only the running step's KV cache on the device, the rest in host memory (docs/offload.md)",
      Switch(LA_FIELD(run.memory.offload_kv_cache)));
  add("--t5_cpu", kMemory, "", kSubRun, "Run T5 on the CPU", Switch(LA_FIELD(run.memory.t5_cpu)));
  add("--fp8,!--no_fp8", kMemory, "", kSubRun,
      "FP8 (e4m3, per-tensor scale) DiT linear weights, dequantised per block; ~2x less DiT memory, small quality cost (docs/fp8.md; default off)",
      Switch(LA_FIELD(run.memory.fp8)));
  add("--convert_model_dtype,!--no_convert_model_dtype", kMemory, "", kSubRun,
      "Cast the DiT to bf16 (default on; a no-op after bf16 loading)", Switch(LA_FIELD(run.memory.convert_model_dtype)));
  add("--enable_online_decode", kMemory, "", kSubRun, "Decode clip 0 at once and refresh the sink (single GPU)",
      Switch(LA_FIELD(run.memory.enable_online_decode)));
  add("--max_gpu_mem_gb", kMemory, "GB", kSubRun,
      "Per-GPU memory budget in GiB for the memory planner (0 = the device's free memory; on CUDA also the "
      "caching allocator's cap; with more local ranks than GPUs they share them, collectives staged through host "
      "memory)",
      Value(LA_FIELD(run.memory.max_gpu_mem_gb)));
  add("--max_host_mem_gb", kMemory, "GB", kSubRun,
      "Host memory budget in GiB for all processes of this machine together (0 = MemAvailable); the planner "
      "refuses a plan whose predicted host peak (private memory + mapped checkpoint pages) exceeds it",
      Value(LA_FIELD(run.memory.max_host_mem_gb)));
  add("--auto_plan", kMemory, "", kSubRun,
      "Let the planner pick the fastest full-quality placement/topology that fits (offload, FSDP, Ulysses; never "
      "FP8 or a smaller size)",
      Switch(LA_FIELD(run.memory.auto_plan)));
  add("--json", kOutput, "", kSubPlan, "Print the plan as JSON", Switch(LA_FIELD(plan.json)));
  add("--model_config", kModel, "PATH", kSubPlan,
      "Model config to plan for without its weights: a DiT config.json (e.g. configs/wan2.2_s2v_14b.json) or a "
      "sectioned file like configs/tiny.json (default: the configs of --ckpt_dir, else the 14B defaults)",
      Value(LA_FIELD(plan.model_config)));
  add("--device", kModel, "cuda|cpu", kSubPlan,
      "Plan for this device kind (cuda: bf16, CUDA overhead; cpu: fp32) instead of this machine's; with "
      "--max_gpu_mem_gb it plans a GPU run from any machine",
      Value(LA_FIELD(plan.device)));
  add("--vae_tiling", kMemory, "", kSubRun, "Decode the VAE in spatial tiles", Switch(LA_FIELD(run.memory.vae_tiling)));

  // ---- Output ----
  add("--save_file", kOutput, "PATH", kSubGenerate | kSubBench,
      "Output video (default: <save_dir>/<time>_<steps>step_<prompt[:50]>.mp4)", Value(LA_FIELD(run.output.save_file)));
  add("--save_dir", kOutput, "DIR", kSubRun, "Output directory", Value(LA_FIELD(run.output.save_dir)));
  add("--crf", kOutput, "N", kSubRun, "libx264 CRF (10 = the reference's imageio quality 8)",
      Value(LA_FIELD(run.output.crf)));
  add("--preset", kOutput, "NAME", kSubRun, "libx264 preset", Value(LA_FIELD(run.output.preset)));
  add("--report", kOutput, "PATH", kSubRun, "Write a JSON run report (timings, plan, memory)",
      Value(LA_FIELD(run.output.report)));
  add("--overwrite", kOutput, "", kSubBatch | kSubGenerate,
      "Replace an existing output (generate) / re-render samples whose output exists (batch); without it an "
      "existing output is refused (generate) or skipped (batch)",
      Switch(LA_FIELD(run.output.overwrite)));
  add("--json", kOutput, "", kSubDoctor, "Print the checks as one JSON object instead of text lines",
      Switch(LA_FIELD(doctor.json)));

  // ---- bench (apps/liveavatar/cli_bench.cpp) ----
  add("--model_config", kModel, "PATH", kSubBench,
      "Model config: a DiT config.json or a sectioned file like configs/tiny.json (dit, vae); default: the 14B DiT "
      "and the Wan2.1 VAE (GPU sizes)", Value(LA_FIELD(bench.model_config)));
  add("--tiny", kModel, "", kSubBench, "Use configs/tiny.json (runs anywhere in seconds)", Switch(LA_FIELD(bench.tiny)));
  add("--layers", kModel, "N", kSubBench, "Override the DiT's num_layers (0 = the config's)",
      Value(LA_FIELD(bench.layers)));
  add("--shape", kSampling, "W*H", kSubBench,
      "Exact video shape to time, any multiples of 64 (default: --size, else 704*384)", Value(LA_FIELD(bench.shape)));
  add("--device", kModel, "cuda|cpu", kSubBench, "Device to run on (default: cuda when available, else cpu)",
      Value(LA_FIELD(bench.device)));
  add("--dtype", kModel, "bf16|fp32", kSubBench, "Model dtype", Value(LA_FIELD(bench.dtype)));
  add("--warmup", kOutput, "N", kSubBench, "Untimed runs of each measured call", Value(LA_FIELD(bench.warmup)));
  add("--iters", kOutput, "N", kSubBench, "Timed runs of each measured call (the median is reported)",
      Value(LA_FIELD(bench.iters)));
  add("--vae,!--no_vae", kOutput, "", kSubBench, "Also time the VAE decode of one 12-frame block (default on)",
      Switch(LA_FIELD(bench.vae)));
  add("--with_fp8", kModel, "", kSubBench,
      "Also time the DiT block call with FP8 weights dequantised per block (docs/fp8.md)",
      Switch(LA_FIELD(bench.with_fp8)));
  add("--json", kOutput, "", kSubBench, "Print the results as one JSON object", Switch(LA_FIELD(bench.json)));
  add("--load", kModel, "", kSubBench,
      "Time loading --ckpt_dir (with its LoRA) as generate does: per model seconds, GB/s read, peak RSS, and the "
      "plan's predicted host peak beside it; plus the LoRA merge rate against this machine's fp32 GEMM rate",
      Switch(LA_FIELD(bench.load)));

  // ---- Logging ----
  add("--log-level", kLogging, "LEVEL", kSubAll, "trace, debug, info, warn, error or off",
      Value(LA_FIELD(log_level)), "LIVEAVATAR_LOG_LEVEL");
  return t;
}

#undef LA_FIELD

}  // namespace

const std::vector<FlagDef>& FlagTable() {
  static const std::vector<FlagDef> kTable = BuildTable();
  return kTable;
}

}  // namespace liveavatar::cli
