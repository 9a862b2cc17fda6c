// Engine: the single-process Live Avatar pipeline. Loads every model of a checkpoint directory once, then
// renders any number of requests (image + audio + prompt -> video), streaming: each finished block of latents
// goes through the streaming VAE decoder straight into the video writer, so host memory stays flat however long
// the audio is. Every request starts from reset stream state (caches, decoder), so batch rendering is safe.
//
// Semantics follow the reference's TPP pipeline (causal_s2v_pipeline_tpp.py), which a multi-GPU run must
// reproduce frame for frame: the reference latent is the VAE encode of the single preprocessed image, the
// motion latents the encode of that image repeated 73 times, the sink is refreshed before clip 1 with the first
// generated latent frame, the decoder is primed with the first 7 motion latents (25 discarded frames), and the
// first 3 frames of clip 0 are dropped: 48·clips − 3 frames at 25 fps.
//
// Thread safety: one Generate() at a time per Engine.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "liveavatar/core/status.h"
#include "liveavatar/pipeline/scheduler.h"
#include "liveavatar/pipeline/streaming_denoiser.h"

namespace liveavatar::models::vae {
struct WanVae;
class SpatialParallel;
}

namespace liveavatar::pipeline {

struct EngineOptions {
  std::string ckpt_dir;                   // checkpoint directory (docs/checkpoints.md)
  bool load_lora = true;                  // merge the LoRA into the DiT
  std::string lora_path;                  // LoRA file; empty = <ckpt_dir>/lora/liveavatar.safetensors if present
  std::string training_config;            // LoRA rank/alpha source; empty = next to the LoRA, else r=128 a=64
  c10::ScalarType dtype = c10::kFloat;    // DiT / T5 / VAE compute dtype (fp32 or bf16)
  c10::Device device = c10::Device(c10::kCPU);
  bool t5_cpu = false;                    // run T5 on the CPU whatever `device` is
  // Models to load (a TPP rank loads only what its role needs). Generate() needs all of them; Encode() needs
  // the encoders and the VAE.
  bool load_dit = true;
  bool load_encoders = true;              // umT5 + wav2vec2
  bool load_vae = true;
  // Memory modes (docs/fp8.md, docs/offload.md); the planner predicts each.
  bool fp8 = false;               // FP8 e4m3 DiT linear weights, dequantised per block
  bool offload_blocks = false;    // DiT blocks streamed from (pinned) host memory, one block ahead
  bool offload_kv_cache = false;  // only the running step's KV cache on the device (ring residency)
  // Called by Load() after each model is in place ("dit" with its LoRA, "t5", "wav2vec2", "vae") with the
  // seconds it took (`liveavatar bench --load`).
  std::function<void(const std::string& component, double seconds)> on_loaded;
};

struct GenerationRequest {
  std::string image;
  std::string audio;
  std::string prompt;
  std::string output;              // final path ("-" = MPEG-TS on stdout; URLs allowed with FFmpeg)
  std::string size = "704*384";    // target area, one of io::SizeOptions()
  int64_t num_clip = 10000;        // capped by the audio length
  int64_t infer_frames = 48;       // multiple of 4
  double max_audio_s = 3600;       // --max_audio_s: longer audio is refused before it is resampled
  int64_t sample_steps = 4;
  int64_t base_seed = 420;         // clip r uses base_seed + r
  int64_t rolling_sink_d = -1;     // -1: seeded per call; 4..30: fixed
  bool sink_refresh = true;        // TPP semantics (refresh the sink before clip 1)
  int crf = 10;
  std::string preset = "medium";
  bool raw_video = false;          // force y4m + wav output
};

// Progress of a running generation, reported after every block.
struct Progress {
  int64_t clip = 0, num_clips = 0;
  int64_t block = 0, blocks_per_clip = 0;
  int64_t frames_written = 0, total_frames = 0;
  double elapsed_s = 0;
};
using ProgressFn = std::function<void(const Progress&)>;

struct BlockTiming {
  int64_t clip = 0, block = 0;
  double denoise_ms = 0, decode_ms = 0, write_ms = 0;
};

struct GenerationResult {
  std::vector<std::string> outputs;  // files written
  int64_t height = 0, width = 0;     // resolved pixel size
  int64_t num_clips = 0;
  int64_t frames = 0;
  double fps = 25.0;
  int64_t seed = 0;
  double encode_ms = 0;              // prompt + audio + reference encodes
  double total_ms = 0;
  std::vector<BlockTiming> blocks;
  at::Tensor final_latents;          // latents of the last block (tests)
};

// The LoRA of a run: the file (EngineOptions::lora_path, the reference's hub id resolved to local copies) and
// its alpha / rank (EngineOptions::training_config, else training_config_lora.json beside the file, else the
// reference's r=128 alpha=64). NotFound naming --lora_path_dmd when the file does not exist.
struct LoraChoice {
  std::string path;
  std::optional<double> alpha;
  std::optional<int> rank;
};
StatusOr<LoraChoice> ResolveLora(const EngineOptions& options);

// The encoded inputs of one request: everything the DiT needs (shared by Engine and the TPP driver).
struct EncodedInputs {
  int64_t height = 0, width = 0;  // resolved pixel size
  int64_t num_clips = 0;          // request's num_clip capped by the audio length
  at::Tensor context;             // [L, text_dim], prompt embedding
  at::Tensor audio_emb;           // [1, 25, audio_dim, N] wav2vec2 features
  at::Tensor ref_latents;         // [1, 16, 1, h, w], VAE encode of the image
  at::Tensor motion_latents;      // [1, 16, 19, h, w], VAE encode of the image repeated 73 times
  double encode_ms = 0;
};

// Checks the request's numbers (infer_frames, sample_steps, rolling_sink_d, num_clip) and its --size (one of
// io::SizeOptions()). Touches no file.
Status ValidateRequest(const GenerationRequest& request);
// Checks the request's files before any model work: --image and --audio are regular files, the output passes
// io::CheckVideoOutput (container, folder, writable). What `generate` and `batch` run before loading.
Status CheckRequestFiles(const GenerationRequest& request);
// The streaming geometry of a request whose reference latent is [1, C, 1, h, w]. InvalidArgument when
// infer_frames gives a latent frame count per clip that is not a multiple of the block size.
StatusOr<StreamGeometry> MakeStreamGeometry(const GenerationRequest& request, const at::Tensor& ref_latents);
// The sampler schedule of a request (flow-match Euler, shift 3).
FlowMatchEulerScheduler MakeScheduler(const GenerationRequest& request);
// --offload_kv_cache: one device step cache (what the memory planner assumes).
RingResidency KvCacheResidency();
// The rolling-sink offset source of a request: fixed d, or seeded by base_seed.
RelativeDistSource MakeRelativeDist(const GenerationRequest& request);
// Noise of latent block `block` of clip `clip`: frames of randn([in_dim, latent_frames_per_clip, h, w]) drawn
// from a CPU generator seeded with base_seed + clip -> [in_dim, frames_per_block, h, w] fp32 on the CPU.
at::Tensor BlockNoise(int64_t in_dim, const StreamGeometry& geometry, int64_t base_seed, int64_t clip, int64_t block);
// The wav2vec2 features of block (clip, block): [1, 25, audio_dim, video frames of a block].
at::Tensor BlockAudio(const at::Tensor& audio_emb, const StreamGeometry& geometry, int64_t clip, int64_t block);
// The sink-refresh latent (first latent frame) of the finished latents [C, F, h, w] of clip 0 / block 0.
at::Tensor SinkRefreshLatent(const at::Tensor& block_latents);

// FrameSink: the decode-and-write end of the pipeline. Primes the streaming VAE decoder with the first motion
// latents, opens the video writer (NAME.partial, renamed on Close) and then turns every finished block of
// latents into frames, dropping the reference's first frames of clip 0, and reports progress.
// Errors remove the partial output. Thread safety: one owner.
// With `parallel` (the VAE ranks of --enable_vae_parallel) the decode is split by rows across its ranks: every
// rank of the group opens a sink and makes the same Consume calls; only the one with `write_output` opens and
// writes the video (the others decode and drop the frames; their Close fills timings only).
// REQUIRES with `parallel`: CheckSpatialSplit(vae->config, geometry.latent_h, parallel->world()) is OK.
class FrameSink {
 public:
  // `vae` (and `parallel`) must outlive the sink.
  static StatusOr<std::unique_ptr<FrameSink>> Open(const models::vae::WanVae* vae, const GenerationRequest& request,
                                                   const EncodedInputs& inputs, const StreamGeometry& geometry,
                                                   c10::Device device, ProgressFn progress = {},
                                                   std::shared_ptr<models::vae::SpatialParallel> parallel = nullptr,
                                                   bool write_output = true);
  ~FrameSink();
  // Decodes and writes the finished latents [C, 3, h, w] of (clip, block); blocks arrive in order.
  // `denoise_ms` is recorded in the block's timing.
  Status Consume(int64_t clip, int64_t block, const at::Tensor& latents, double denoise_ms = 0);
  // Finalises the output and fills `result` (outputs, frames, sizes, timings).
  Status Close(GenerationResult* result);
  // Drops the partial output. Idempotent.
  void Abort();

 private:
  struct State;
  explicit FrameSink(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

class Engine {
 public:
  // Loads and validates the models EngineOptions asks for (all by default); errors name the file and the fix.
  static StatusOr<std::unique_ptr<Engine>> Load(const EngineOptions& options);
  ~Engine();

  // Renders one request. On any error the partial output is removed and the error names the input at fault.
  StatusOr<GenerationResult> Generate(const GenerationRequest& request, const ProgressFn& progress = {});

  // Lower-level pieces (tests and the TPP driver reuse them).
  // Image, audio and prompt of a request -> the DiT's inputs (needs the encoders and the VAE).
  StatusOr<EncodedInputs> Encode(const GenerationRequest& request) const;
  // The loaded models (nullptr when EngineOptions left them out).
  const models::dit::CausalWanS2V* dit() const;
  models::dit::CausalWanS2V* mutable_dit();  // e.g. to install sequence parallelism
  const models::vae::WanVae* vae() const;
  const EngineOptions& options() const;
  // Image -> [3, H, W] in [−1, 1] at the resolved size.
  StatusOr<at::Tensor> PrepareImage(const std::string& path, const std::string& size) const;
  // Audio file -> audio_emb [1, 25, C, N] and the clip count of the reference's rule.
  StatusOr<std::pair<at::Tensor, int64_t>> PrepareAudio(const std::string& path, int64_t infer_frames,
                                                        double max_audio_s = 3600) const;
  // Prompt -> context [L, text_dim].
  StatusOr<at::Tensor> PreparePrompt(const std::string& prompt) const;

  struct Impl;

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The reference's default output name: <save_dir>/<YYYYMMDD_HHMMSS>_<steps>step_<prompt[:50]>.mp4, with
// characters that are unsafe in file names replaced by '_'.
std::string DefaultOutputName(const std::string& save_dir, int64_t steps, const std::string& prompt);

}  // namespace liveavatar::pipeline
