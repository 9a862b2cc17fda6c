// Options of one generation run, grouped like `liveavatar generate --help` (style.md habit 12, after LevelDB's
// options.h): every field states its default and its effect. The CLI flag table (apps/liveavatar/cli_flags.cpp)
// fills these structs; flags keep the reference entry point's names (minimal_inference/s2v_streaming_interact.py)
// and the defaults of its launch scripts (infinite_inference_{single,multi}_gpu.sh). Fields marked
// "reference ignores" are accepted for command-line compatibility and have no effect, exactly as upstream.
//
// Plain values; safe to copy between threads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "liveavatar/core/status.h"

namespace liveavatar::pipeline {

// Inputs, model selection and sampling.
struct GenerateOptions {
  // ---- Inputs ----
  // Reference image (jpg/png). Required by `generate`; its aspect ratio decides the output shape.
  std::string image;
  // Driving speech (wav/mp3/flac). Required by `generate`; its length caps the number of clips.
  std::string audio;
  // Text prompt fed to umT5. Default: empty prompt.
  std::string prompt;
  // Pose video driving the cond encoder. Default: none (the reference then adds cond_encoder.bias only).
  // Not supported yet: a warning is logged and it is ignored.
  std::string pose_video;
  // Batch mode only: json/yaml dict {name: {prompt, image, audio, num_clip}} (reference batch_eval.py).
  std::string sample_list;

  // ---- Model ----
  // Task name; the reference asserts "s2v-14B" for this entry point. Default "s2v-14B" (launch scripts).
  std::string task = "s2v-14B";
  // Wan2.2-S2V-14B checkpoint directory (layout in docs/checkpoints.md). Default "ckpt/Wan2.2-S2V-14B/".
  std::string ckpt_dir = "ckpt/Wan2.2-S2V-14B/";
  // Merge the DMD LoRA of `lora_path_dmd` into the DiT before sampling. Default true (launch scripts).
  bool load_lora = true;
  // LoRA file (PEFT layout, .safetensors). The reference's default is the HF id "Quark-Vision/Live-Avatar",
  // which liveavatar resolves to ckpt/LiveAvatar/liveavatar.safetensors (no downloads).
  std::string lora_path_dmd = "Quark-Vision/Live-Avatar";
  // Training config supplying lora_rank/lora_alpha/lora_target_modules (yaml or json). Default empty: the
  // values of the reference's s2v_causal_sft.yaml (r=128, alpha=64, targets q,k,v,o,ffn.0,ffn.2).
  std::string training_config;
  // Reference ignores: --lora_path, --using_merged_ckpt.
  std::string lora_path;
  bool using_merged_ckpt = false;

  // ---- Sampling ----
  // Target output area "W*H", one of SupportedSizes(); only its pixel area is used (the shape follows the
  // image). Default empty = "704*384" on one GPU, "720*400" with TPP (the launch scripts' values).
  std::string size;
  // Clips to generate (each infer_frames frames), capped by the audio length. Default 10000 (= whole audio).
  int64_t num_clip = 10000;
  // Frames per clip, a positive multiple of 4. Default 48 (launch scripts; argparse default 80).
  int64_t infer_frames = 48;
  // Longest audio accepted, in seconds (its header is checked before decoding work grows). Default one hour.
  double max_audio_s = 3600;
  // Denoising steps per block; with TPP it must be divisible by the number of stages (docs/parallel.md). Default 4.
  int64_t sample_steps = 4;
  // Sampler; only "euler" is implemented upstream (others raise there); accepted values euler, unipc, dpm++.
  std::string sample_solver = "euler";
  // Noise seed: clip r uses base_seed + r; -1 draws a random seed. Default 420 (launch scripts).
  int64_t base_seed = 420;
  // Rolling-sink offset d (the reference draws random.randint(4, 30) per forward call, unseeded). -1 (default):
  // draw d from a generator seeded with base_seed, so runs are reproducible; 4..30: use this d for every call.
  int64_t rolling_sink_d = -1;
  // Reference ignores (scheduler shift hard-coded to 3, no CFG, s2v has no frame_num): accepted with a warning.
  std::optional<double> sample_shift;        // argparse None -> 3
  std::optional<double> sample_guide_scale;  // scripts pass 0; argparse None -> 4.5
  std::optional<int64_t> frame_num;          // argparse None -> 81
  bool start_from_ref = false;
  bool drop_motion_noisy = false;
  bool use_dataset = false;
  int64_t dataset_sample_idx = 0;
  // Prompt extension and TTS (reference features that need Qwen/DashScope/CosyVoice): not supported, warned.
  bool use_prompt_extend = false;
  std::string prompt_extend_method = "local_qwen";  // dashscope | local_qwen
  std::string prompt_extend_model;
  std::string prompt_extend_target_lang = "zh";  // zh | en
  bool enable_tts = false;
  std::string tts_prompt_audio;
  std::string tts_prompt_text;
  std::string tts_text;
};

// Process layout (pipeline/topology.h, docs/parallel.md): num_gpus_dit DiT ranks as stages x ulysses_size, plus
// VAE rank(s) with enable_vae_parallel. Upstream runs either one process or TPP with 5 ranks (4 DiT + 1 VAE).
struct ParallelOptions {
  // DiT ranks (stages x ulysses_size; each stage owns a contiguous share of the steps). Default 4; forced to 1
  // on one process.
  int64_t num_gpus_dit = 4;
  // Ulysses sequence-parallel degree. Default 1 (the reference asserts 1).
  int64_t ulysses_size = 1;
  // Decode on the ranks after the num_gpus_dit DiT ranks (several: spatially split); without it the last stage
  // decodes. Default false.
  bool enable_vae_parallel = false;
  // Single-GPU pipeline. Default false; forced from the world size like upstream.
  bool single_gpu = false;
  // Shard T5 / the DiT with FSDP across all ranks. Default false (unused by every upstream launcher).
  bool t5_fsdp = false;
  bool dit_fsdp = false;
  // FSDP blocks gathered ahead of the running one (overlaps the all-gather with compute). Default 1.
  int64_t fsdp_prefetch = 1;
  // Processes to start on this node (built-in launcher, like torchrun --nproc_per_node). Default 1.
  int64_t nproc_per_node = 1;
  // CPU threads for LibTorch intra-op parallelism. Default 0 = LIVEAVATAR_NUM_THREADS or all cores.
  int64_t threads = 0;
};

// Placement and number formats.
struct MemoryOptions {
  // Stream the DiT blocks from (pinned) host memory one block ahead (docs/offload.md). Default unset = false.
  std::optional<bool> offload_model;
  // Keep only the running step's KV cache on the device, the others in host memory (docs/offload.md).
  bool offload_kv_cache = false;
  // Run T5 on the CPU. Default false.
  bool t5_cpu = false;
  // FP8 (e4m3, per-tensor scales) weights for the DiT linears the reference quantises, dequantised per block
  // (docs/fp8.md). Default false, as the reference's argparse; the launch scripts pass --fp8.
  bool fp8 = false;
  // Cast the DiT to bf16 (a no-op after bf16 loading). Default true (launch scripts).
  bool convert_model_dtype = true;
  // Decode clip 0 immediately and refresh the sink from it (single GPU only). Default false.
  bool enable_online_decode = false;
  // Per-GPU memory budget for the planner in GiB. Default 0 = the device's free memory.
  double max_gpu_mem_gb = 0;
  // Host memory budget for all ranks of this machine together, in GiB. Default 0 = MemAvailable.
  double max_host_mem_gb = 0;
  // Let the memory planner choose offload / FSDP / FP8 to fit the budget. Default false.
  bool auto_plan = false;
  // Decode the VAE in spatial tiles to bound its activation memory. Default false.
  bool vae_tiling = false;
};

// Where and how the result is written.
struct OutputOptions {
  // Output video path. Default empty = <save_dir>/<time>_<steps>step_<prompt[:50]>.mp4 (reference naming).
  std::string save_file;
  // Output directory. Default "./output/".
  std::string save_dir = "./output/";
  // libx264 constant rate factor. Default 10 (what the reference's imageio quality=8 maps to).
  int64_t crf = 10;
  // libx264 preset. Default "medium".
  std::string preset = "medium";
  // Write a JSON run report (timings, plan, memory) to this path. Default empty = none.
  std::string report;
  // Batch mode: regenerate samples whose output already exists. Default false (skip them).
  bool overwrite = false;
};

// Everything a run needs.
struct RunOptions {
  GenerateOptions generate;
  ParallelOptions parallel;
  MemoryOptions memory;
  OutputOptions output;
};

// The reference's SIZE_CONFIGS keys, "W*H", in upstream order.
const std::vector<std::string>& SupportedSizes();
// "W*H" -> {W, H}. InvalidArgument naming --size and listing SupportedSizes() for any other string.
StatusOr<std::pair<int64_t, int64_t>> ParseSize(const std::string& size);
// The size used when GenerateOptions::size is empty: "704*384" for one process, "720*400" for more.
std::string DefaultSize(int world_size);
// The reference's str2bool: yes/true/t/y/1 and no/false/f/n/0, any case. InvalidArgument naming `flag`.
StatusOr<bool> ParseBool(const std::string& value, const std::string& flag);
// Checks value ranges and choices (size, infer_frames multiple of 4, positive counts, solver, task, sink d,
// ulysses, crf, ...). Returns one InvalidArgument naming every bad flag. Does not touch the file system.
Status ValidateRunOptions(const RunOptions& options);
// Messages for flags given that the reference ignores or this engine does not support (one per flag).
std::vector<std::string> IgnoredFlagWarnings(const RunOptions& options);

}  // namespace liveavatar::pipeline
