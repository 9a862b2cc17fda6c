#include "liveavatar/pipeline/engine.h"

#include "liveavatar/pipeline/checkpoint_checks.h"

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include "liveavatar/core/logging.h"
#include "liveavatar/io/audio_reader.h"
#include "liveavatar/io/checkpoint_dir.h"
#include "liveavatar/io/image_preprocess.h"
#include "liveavatar/io/image_reader.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/io/video_writer.h"
#include "liveavatar/models/audio/audio_features.h"
#include "liveavatar/models/audio/wav2vec2.h"
#include "liveavatar/models/dit/block_offload.h"
#include "liveavatar/models/dit/fp8_weights.h"
#include "liveavatar/models/dit/model.h"
#include "liveavatar/models/lora.h"
#include "liveavatar/models/t5/prompt_encoder.h"
#include "liveavatar/models/weights.h"
#include "liveavatar/models/vae/vae.h"
#include "liveavatar/pipeline/scheduler.h"

namespace fs = std::filesystem;

namespace liveavatar::pipeline {

namespace {

using Clock = std::chrono::steady_clock;
double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

constexpr int64_t kMotionFrames = 73;        // pixel frames of FramePack history (reference motion_frames[0])
constexpr int64_t kLatentMotionFrames = 19;  // their latent count
constexpr int64_t kDecoderPrimeLatents = 7;  // the TPP VAE rank primes its decoder with motion_latents[:, :, :7]
constexpr int64_t kDroppedFirstFrames = 3;   // the reference drops the first 3 frames of clip 0
constexpr double kFps = 25.0;
// The reference's training yaml (s2v_causal_sft.yaml) when no training config accompanies the LoRA.
constexpr int kDefaultLoraRank = 128;
constexpr double kDefaultLoraAlpha = 64.0;

}  // namespace

struct Engine::Impl {
  EngineOptions options;
  std::unique_ptr<models::t5::PromptEncoder> t5;
  std::unique_ptr<models::audio::Wav2Vec2> wav2vec2;
  std::unique_ptr<models::vae::WanVae> vae;
  std::unique_ptr<models::dit::CausalWanS2V> dit;
  std::unique_ptr<models::dit::BlockOffloader> dit_offload;  // --offload_model: owns the model instead of `dit`
  models::dit::CausalWanS2V* Dit() const { return dit ? dit.get() : dit_offload ? &dit_offload->model() : nullptr; }
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

const models::dit::CausalWanS2V* Engine::dit() const { return impl_->Dit(); }
models::dit::CausalWanS2V* Engine::mutable_dit() { return impl_->Dit(); }

StatusOr<LoraChoice> ResolveLora(const EngineOptions& options) {
  LoraChoice c;
  c.path = ResolveLoraFile(options.ckpt_dir, options.lora_path);
  if (c.path.empty() || !fs::exists(c.path)) {
    return Status::NotFound("--lora_path_dmd: LoRA file '" + c.path +
                            "' not found (pass a local .safetensors path, or --load_lora false to run without it)");
  }
  const fs::path cfg = options.training_config.empty() ? fs::path(c.path).parent_path() / "training_config_lora.json"
                                                       : fs::path(options.training_config);
  if (fs::exists(cfg)) {
    LA_ASSIGN_OR_RETURN(models::LoraTrainingConfig tc, models::LoadLoraTrainingConfig(cfg.string()));
    c.alpha = tc.alpha;
    c.rank = tc.rank;
  } else {
    c.alpha = kDefaultLoraAlpha;
    c.rank = kDefaultLoraRank;
    LA_LOG_INFO("LoRA: no training config at {}, using the reference's r={} alpha={}", cfg.string(), *c.rank, *c.alpha);
  }
  return c;
}
const models::vae::WanVae* Engine::vae() const { return impl_->vae.get(); }
const EngineOptions& Engine::options() const { return impl_->options; }

StatusOr<std::unique_ptr<Engine>> Engine::Load(const EngineOptions& options) {
  // Pre-flight from headers: every piece, key, shape and cross-model dimension, all mismatches in one error,
  // before any tensor data is read.
  CheckpointCheckOptions cco;
  cco.ckpt_dir = options.ckpt_dir;
  cco.load_lora = options.load_dit && options.load_lora;
  cco.lora_path = options.lora_path;
  cco.training_config = options.training_config;
  LA_RETURN_IF_ERROR(CheckCheckpoint(cco).ToStatus());
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  const fs::path dir(options.ckpt_dir);
  const auto t0 = Clock::now();

  // DiT (+ LoRA, merged in fp32 before the dtype conversion). Its config is needed to check the encoders.
  models::dit::DitConfig dit_config;
  if (!options.load_dit) {
    LA_ASSIGN_OR_RETURN(dit_config, models::dit::LoadDitConfig((dir / io::kDitConfigFile).string()));
  } else {
    if (options.fp8 && options.offload_blocks) {
      return Status::InvalidArgument("--fp8 with --offload_model True: not supported together yet (both supply "
                                     "the DiT blocks); choose one");
    }
    // Streaming load: each tensor from the mapped file to its final dtype, on the device the model runs on (the
    // host for offloaded blocks), its LoRA delta added on the way.
    LA_ASSIGN_OR_RETURN(dit_config, models::dit::LoadDitConfig((dir / io::kDitConfigFile).string()));
    std::optional<models::LoraApplier> lora;
    if (options.load_lora) {
      LA_ASSIGN_OR_RETURN(LoraChoice choice, ResolveLora(options));
      LA_ASSIGN_OR_RETURN(lora, models::LoraApplier::Open(choice.path, models::dit::DitBaseShapes(dit_config),
                                                          choice.alpha, choice.rank));
    }
    models::dit::DitLoadOptions dlo;
    dlo.dtype = options.dtype;
    dlo.device = options.offload_blocks ? c10::Device(c10::kCPU) : options.device;
    dlo.lora = lora ? &*lora : nullptr;
    const auto t_dit = Clock::now();
    LA_ASSIGN_OR_RETURN(models::dit::DitCheckpoint ckpt, models::dit::LoadDitCheckpoint(options.ckpt_dir, dlo));
    if (lora) LA_LOG_INFO("LoRA: merged {} pairs from {} while loading", lora->pairs(), lora->path());
    LA_LOG_INFO("DiT: streamed to {} in {:.1f} s", dlo.device.str(), MsSince(t_dit) / 1000.0);
    if (options.on_loaded) options.on_loaded("dit", MsSince(t_dit) / 1000.0);
    if (options.offload_blocks) {
      models::dit::OffloadOptions oo;
      oo.dtype = options.dtype;
      oo.device = options.device;
      LA_ASSIGN_OR_RETURN(impl->dit_offload, models::dit::BlockOffloader::Create(ckpt.config, std::move(ckpt.weights), oo));
      LA_LOG_INFO("--offload_model: DiT blocks stream from host memory, {} block(s) ahead", oo.lookahead);
    } else {
      LA_ASSIGN_OR_RETURN(models::dit::CausalWanS2V dit, models::dit::CausalWanS2V::Create(
                                                             ckpt.config, std::move(ckpt.weights), options.dtype, options.device));
      impl->dit = std::make_unique<models::dit::CausalWanS2V>(std::move(dit));
      if (options.fp8) {  // the hooks keep the codes alive; the model is not moved after this
        LA_ASSIGN_OR_RETURN(auto fp8, models::dit::Fp8DitWeights::Attach(impl->dit.get()));
        LA_LOG_INFO("--fp8: DiT linear weights stored as FP8 e4m3, dequantised per block");
      }
    }
  }

  if (options.load_encoders) {
    auto t_comp = Clock::now();
    // T5.
    const std::string t5_path = (dir / io::kT5File).string();
    LA_ASSIGN_OR_RETURN(auto store, io::OpenTensorStore(t5_path));
    // Its dim against the DiT's text_dim (and wav2vec2's against audio_dim) was checked by the pre-flight.
    LA_ASSIGN_OR_RETURN(models::t5::T5Config t5cfg, InferT5ConfigFromWeights(*store));
    models::LoadOptions lo;
    lo.dtype = options.dtype;
    lo.device = options.t5_cpu ? c10::Device(c10::kCPU) : options.device;
    LA_ASSIGN_OR_RETURN(models::t5::PromptEncoder pe,
                        models::t5::PromptEncoder::Load((dir / io::kTokenizerFile).string(), t5_path, t5cfg, lo,
                                                        dit_config.text_len));
    impl->t5 = std::make_unique<models::t5::PromptEncoder>(std::move(pe));
    if (options.on_loaded) options.on_loaded("t5", MsSince(t_comp) / 1000.0);
    t_comp = Clock::now();

    // wav2vec2 (fp32 on the compute device: the reference keeps the audio path in fp32 islands downstream).
    models::LoadOptions wlo;
    wlo.device = options.device;
    LA_ASSIGN_OR_RETURN(models::audio::Wav2Vec2 w, models::audio::Wav2Vec2::Load((dir / io::kWav2Vec2Dir).string(), wlo));
    impl->wav2vec2 = std::make_unique<models::audio::Wav2Vec2>(std::move(w));
    if (options.on_loaded) options.on_loaded("wav2vec2", MsSince(t_comp) / 1000.0);
  }
  if (options.load_vae) {
    const auto t_vae = Clock::now();
    const std::string vae_path = (dir / io::kVaeFile).string();
    LA_ASSIGN_OR_RETURN(auto store, io::OpenTensorStore(vae_path));
    LA_ASSIGN_OR_RETURN(models::vae::VaeConfig vcfg, InferVaeConfigFromWeights(*store));
    models::LoadOptions lo;
    lo.dtype = options.dtype;
    lo.device = options.device;
    LA_ASSIGN_OR_RETURN(models::vae::WanVae vae, models::vae::LoadWanVae(*store, vcfg, lo));
    impl->vae = std::make_unique<models::vae::WanVae>(std::move(vae));
    if (options.on_loaded) options.on_loaded("vae", MsSince(t_vae) / 1000.0);
  }
  LA_LOG_INFO("models loaded from {} in {:.1f} s", options.ckpt_dir, MsSince(t0) / 1000.0);
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

StatusOr<at::Tensor> Engine::PrepareImage(const std::string& path, const std::string& size) const {
  LA_ASSIGN_OR_RETURN(at::Tensor rgb, io::ReadImage(path));
  LA_ASSIGN_OR_RETURN(io::GenSize gs, io::ResolveGenSize(rgb.size(0), rgb.size(1), size));
  return io::PreprocessImage(rgb, gs.height, gs.width);
}

StatusOr<std::pair<at::Tensor, int64_t>> Engine::PrepareAudio(const std::string& path, int64_t infer_frames,
                                                              double max_audio_s) const {
  if (!impl_->wav2vec2) return Status::Internal("Engine::PrepareAudio: wav2vec2 was not loaded");
  io::AudioReadOptions ro;
  ro.target_rate = impl_->wav2vec2->config().sampling_rate;
  ro.max_seconds = max_audio_s;
  LA_ASSIGN_OR_RETURN(io::AudioClip clip, io::ReadAudio(path, ro));
  if (clip.samples.numel() == 0) return Status::InvalidArgument("--audio: " + path + " holds no samples");
  const double peak = clip.samples.abs().max().item<double>();
  if (peak == 0.0) return Status::InvalidArgument("--audio: " + path + " is silent (all samples are zero)");
  auto out = impl_->wav2vec2->Encode(clip.samples.to(impl_->options.device));
  if (!out.ok()) return out.status().WithPrefix("--audio: " + path);
  const models::audio::AudioEmbedding emb =
      models::audio::ComputeAudioEmbedding(out.value().hidden_states.to(at::kFloat), infer_frames, kFps);
  return std::make_pair(emb.audio_emb, emb.num_clips);
}

StatusOr<at::Tensor> Engine::PreparePrompt(const std::string& prompt) const {
  if (!impl_->t5) return Status::Internal("Engine::PreparePrompt: T5 was not loaded");
  LA_ASSIGN_OR_RETURN(std::vector<at::Tensor> ctx, impl_->t5->EncodePrompt({prompt}));
  return ctx.at(0).to(impl_->options.device);
}

StatusOr<EncodedInputs> Engine::Encode(const GenerationRequest& req) const {
  if (!impl_->vae) return Status::Internal("Engine::Encode: the VAE was not loaded");
  const auto& opt = impl_->options;
  EncodedInputs in;
  LA_ASSIGN_OR_RETURN(at::Tensor image, PrepareImage(req.image, req.size));
  in.height = image.size(1);
  in.width = image.size(2);
  const auto t_enc = Clock::now();
  LA_ASSIGN_OR_RETURN(auto audio, PrepareAudio(req.audio, req.infer_frames, req.max_audio_s));
  in.audio_emb = audio.first;
  in.num_clips = std::min<int64_t>(std::max<int64_t>(req.num_clip, 1), audio.second);
  LA_ASSIGN_OR_RETURN(in.context, PreparePrompt(req.prompt));
  const auto& vae = *impl_->vae;
  const at::Tensor img = image.to(opt.device).unsqueeze(0).unsqueeze(2);  // [1, 3, 1, H, W]
  in.ref_latents = models::vae::Encode(vae, img);                         // [1, 16, 1, h, w]
  in.motion_latents =
      models::vae::Encode(vae, img.expand({1, 3, kMotionFrames, in.height, in.width}).contiguous());
  in.encode_ms = MsSince(t_enc);
  return in;
}

Status ValidateRequest(const GenerationRequest& req) {
  if (req.infer_frames <= 0 || req.infer_frames % 4 != 0) {
    return Status::InvalidArgument("--infer_frames must be a positive multiple of 4, got " + std::to_string(req.infer_frames));
  }
  if (req.sample_steps < 1) return Status::InvalidArgument("--sample_steps must be >= 1");
  if (req.rolling_sink_d != -1 && (req.rolling_sink_d < 4 || req.rolling_sink_d > 30)) {
    return Status::InvalidArgument("--rolling_sink_d must be -1 or within [4, 30]");
  }
  if (req.num_clip < 1) return Status::InvalidArgument("--num_clip must be >= 1, got " + std::to_string(req.num_clip));
  const auto& sizes = io::SizeOptions();
  if (std::find(sizes.begin(), sizes.end(), req.size) == sizes.end()) {
    std::string list;
    for (const auto& s : sizes) list += (list.empty() ? "" : ", ") + s;
    return Status::InvalidArgument("--size '" + req.size + "' is not supported (one of: " + list + ")");
  }
  return Status::Ok();
}

Status CheckRequestFiles(const GenerationRequest& req) {
  for (const auto& [flag, path] : {std::pair<const char*, const std::string&>{"--image", req.image},
                                   std::pair<const char*, const std::string&>{"--audio", req.audio}}) {
    std::error_code ec;
    if (path.empty()) return Status::InvalidArgument(std::string(flag) + " is required");
    if (!fs::exists(path, ec)) return Status::NotFound(std::string(flag) + " " + path + ": no such file");
    if (!fs::is_regular_file(path, ec)) {
      return Status::InvalidArgument(std::string(flag) + " " + path + ": not a regular file");
    }
  }
  return io::CheckVideoOutput(req.output, req.raw_video);
}

StatusOr<StreamGeometry> MakeStreamGeometry(const GenerationRequest& req, const at::Tensor& ref_latents) {
  StreamGeometry geo;
  geo.latent_h = ref_latents.size(3);
  geo.latent_w = ref_latents.size(4);
  geo.infer_frames = req.infer_frames;
  geo.motion_frames = kMotionFrames;
  geo.latent_motion_frames = kLatentMotionFrames;
  if (geo.latent_frames_per_clip() <= 0 || geo.latent_frames_per_clip() % geo.frames_per_block != 0) {
    return Status::InvalidArgument("--infer_frames " + std::to_string(req.infer_frames) +
                                   " gives " + std::to_string(geo.latent_frames_per_clip()) +
                                   " latent frames per clip, not a multiple of 3 (use 48 or 80, ...)");
  }
  return geo;
}

RingResidency KvCacheResidency() {
  RingResidency r;
  r.enabled = true;
  r.device_slots = 1;
  return r;
}

FlowMatchEulerScheduler MakeScheduler(const GenerationRequest& req) {
  FlowMatchEulerScheduler scheduler(1000, 3.0);
  scheduler.SetTimesteps(req.sample_steps);
  return scheduler;
}

RelativeDistSource MakeRelativeDist(const GenerationRequest& req) {
  return req.rolling_sink_d >= 0 ? FixedRelativeDist(req.rolling_sink_d)
                                 : SeededRelativeDist(static_cast<uint64_t>(req.base_seed));
}

at::Tensor BlockNoise(int64_t in_dim, const StreamGeometry& geo, int64_t base_seed, int64_t clip, int64_t block) {
  // The whole clip's noise is drawn (the reference's randn shape), then the block's frames are kept.
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(base_seed + clip));
  const at::Tensor noise = at::randn({in_dim, geo.latent_frames_per_clip(), geo.latent_h, geo.latent_w}, gen,
                                     at::TensorOptions().dtype(at::kFloat));
  return noise.narrow(1, block * geo.frames_per_block, geo.frames_per_block).contiguous();
}

at::Tensor BlockAudio(const at::Tensor& audio_emb, const StreamGeometry& geo, int64_t clip, int64_t block) {
  return models::audio::AudioBlockSlice(audio_emb, clip, block, geo.infer_frames, geo.video_frames_per_block());
}

at::Tensor SinkRefreshLatent(const at::Tensor& block_latents) {
  return block_latents.narrow(1, 0, 1).unsqueeze(0).clone();
}

// ---- FrameSink ----

struct FrameSink::State {
  const models::vae::WanVae* vae = nullptr;
  c10::Device device = c10::Device(c10::kCPU);
  StreamGeometry geo;
  std::unique_ptr<models::vae::StreamingDecoder> decoder;
  std::unique_ptr<io::VideoWriter> writer;  // null on a non-writing VAE rank
  bool open = true;                         // false after Close/Abort
  std::string output;
  ProgressFn progress;
  Clock::time_point t_start;
  GenerationResult result;
  Progress prog;
};

FrameSink::FrameSink(std::unique_ptr<State> state) : state_(std::move(state)) {}
FrameSink::~FrameSink() {
  if (state_ && state_->writer) state_->writer->Abort();
}

StatusOr<std::unique_ptr<FrameSink>> FrameSink::Open(const models::vae::WanVae* vae, const GenerationRequest& req,
                                                     const EncodedInputs& in, const StreamGeometry& geo,
                                                     c10::Device device, ProgressFn progress,
                                                     std::shared_ptr<models::vae::SpatialParallel> parallel,
                                                     bool write_output) {
  if (vae == nullptr) return Status::Internal("FrameSink: the VAE was not loaded");
  auto st = std::make_unique<State>();
  st->t_start = Clock::now();
  st->vae = vae;
  st->device = device;
  st->geo = geo;
  st->output = req.output;
  st->progress = std::move(progress);
  st->decoder = std::make_unique<models::vae::StreamingDecoder>(vae, std::move(parallel));
  (void)st->decoder->Decode(
      in.motion_latents.narrow(2, 0, std::min<int64_t>(kDecoderPrimeLatents, in.motion_latents.size(2))));

  GenerationResult& r = st->result;
  r.height = in.height;
  r.width = in.width;
  r.num_clips = in.num_clips;
  r.seed = req.base_seed;
  r.encode_ms = in.encode_ms;
  r.fps = kFps;
  st->prog.num_clips = in.num_clips;
  st->prog.blocks_per_clip = geo.blocks_per_clip();
  st->prog.total_frames = in.num_clips * req.infer_frames - kDroppedFirstFrames;
  if (!write_output) return std::unique_ptr<FrameSink>(new FrameSink(std::move(st)));

  // Output (written to NAME.partial by the writer and renamed on Close()).
  io::VideoWriterOptions wopt;
  wopt.fps = static_cast<int>(kFps);
  wopt.crf = req.crf;
  wopt.preset = req.preset;
  wopt.raw = req.raw_video;
  io::AudioTrack track;
  LA_ASSIGN_OR_RETURN(io::AudioClip pcm, io::ReadAudio(req.audio, 16000));
  track.samples = pcm.samples;
  track.sample_rate = 16000;
  if (req.output != "-" && req.output.find("://") == std::string::npos) {
    const fs::path parent = fs::path(req.output).parent_path();
    std::error_code ec;
    if (!parent.empty()) fs::create_directories(parent, ec);
  }
  LA_ASSIGN_OR_RETURN(st->writer, io::VideoWriter::Open(req.output, static_cast<int>(in.width),
                                                        static_cast<int>(in.height), wopt, track));
  return std::unique_ptr<FrameSink>(new FrameSink(std::move(st)));
}

Status FrameSink::Consume(int64_t clip, int64_t block, const at::Tensor& latents, double denoise_ms) {
  State& st = *state_;
  if (!st.open) return Status::Internal("FrameSink::Consume after Close/Abort");
  const int64_t frames_per_block = st.geo.video_frames_per_block();
  BlockTiming bt{clip, block};
  bt.denoise_ms = denoise_ms;
  // A NaN/Inf here (non-finite weights or inputs that the load checks missed, an overflow) would decode to a
  // black video that exits 0: stop the run, naming where it appeared; the partial output is removed by Abort().
  LA_RETURN_IF_ERROR(models::CheckFinite(latents, "denoised latents of clip " + std::to_string(clip) + ", block " +
                                                      std::to_string(block))
                         .WithPrefix("generation stopped"));
  auto t0 = Clock::now();
  at::Tensor frames = st.decoder->Decode(latents.to(st.device).unsqueeze(0));  // [1, 3, F, H, W]
  frames = frames.narrow(2, frames.size(2) - frames_per_block, frames_per_block);
  if (clip == 0 && block == 0) frames = frames.narrow(2, kDroppedFirstFrames, frames_per_block - kDroppedFirstFrames);
  frames = models::vae::ClampVideo(frames).to(at::kCPU);  // [3, F, H, W]
  bt.decode_ms = MsSince(t0);
  if (st.writer) {
    t0 = Clock::now();
    Status ws = st.writer->AddFrames(frames);
    if (!ws.ok()) {
      Abort();
      return ws.WithPrefix("writing " + st.output);
    }
    bt.write_ms = MsSince(t0);
  }
  st.result.blocks.push_back(bt);
  st.result.final_latents = latents;
  st.prog.clip = clip;
  st.prog.block = block;
  st.prog.frames_written += frames.size(1);
  st.prog.elapsed_s = MsSince(st.t_start) / 1000.0;
  if (st.progress) st.progress(st.prog);
  return Status::Ok();
}

Status FrameSink::Close(GenerationResult* result) {
  State& st = *state_;
  if (!st.open) return Status::Internal("FrameSink::Close after Close/Abort");
  if (st.writer) {
    Status s = st.writer->Close().WithPrefix("finalising " + st.output);
    if (!s.ok()) {
      Abort();
      return s;
    }
    st.result.outputs = st.writer->output_paths();
    st.writer.reset();
  }
  st.open = false;
  st.result.frames = st.prog.frames_written;
  *result = std::move(st.result);
  return Status::Ok();
}

void FrameSink::Abort() {
  state_->open = false;
  if (state_->writer) {
    state_->writer->Abort();
    state_->writer.reset();
  }
}

// ---- Engine::Generate ----

StatusOr<GenerationResult> Engine::Generate(const GenerationRequest& req, const ProgressFn& progress) {
  const auto t_start = Clock::now();
  if (!impl_->Dit() || !impl_->t5 || !impl_->wav2vec2 || !impl_->vae) {
    return Status::Internal("Engine::Generate needs every model (EngineOptions load_* all true)");
  }
  const auto& opt = impl_->options;
  const auto& dit = *impl_->Dit();
  LA_RETURN_IF_ERROR(ValidateRequest(req));
  LA_ASSIGN_OR_RETURN(EncodedInputs in, Encode(req));
  LA_ASSIGN_OR_RETURN(StreamGeometry geo, MakeStreamGeometry(req, in.ref_latents));

  const FlowMatchEulerScheduler scheduler = MakeScheduler(req);
  StreamingDenoiser denoiser(&dit, &scheduler, geo, at::TensorOptions().dtype(dit.dtype()).device(opt.device),
                             MakeRelativeDist(req));
  if (opt.offload_kv_cache) denoiser.set_ring_residency(KvCacheResidency());
  denoiser.Prefill(in.context, in.ref_latents, in.motion_latents);
  LA_ASSIGN_OR_RETURN(std::unique_ptr<FrameSink> sink,
                      FrameSink::Open(impl_->vae.get(), req, in, geo, opt.device, progress));

  at::Tensor refresh_latent;
  for (int64_t r = 0; r < in.num_clips; ++r) {
    if (r == 1 && req.sink_refresh) denoiser.RefreshSink(refresh_latent);
    for (int64_t b = 0; b < geo.blocks_per_clip(); ++b) {
      const auto t0 = Clock::now();
      const at::Tensor x = BlockNoise(dit.config().in_dim, geo, req.base_seed, r, b).to(opt.device);
      at::Tensor latents = denoiser.DenoiseBlock(r, b, x, BlockAudio(in.audio_emb, geo, r, b));  // [16, 3, h, w] fp32
      if (r == 0 && b == 0) refresh_latent = SinkRefreshLatent(latents);
      LA_RETURN_IF_ERROR(sink->Consume(r, b, latents, MsSince(t0)));
    }
  }
  GenerationResult result;
  LA_RETURN_IF_ERROR(sink->Close(&result));
  result.total_ms = MsSince(t_start);
  return result;
}

std::string DefaultOutputName(const std::string& save_dir, int64_t steps, const std::string& prompt) {
  std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%d_%H%M%S", std::localtime(&now));
  std::string p = prompt.substr(0, 50);
  for (char& c : p) {
    if (c == '/' || c == '\\' || c == ' ' || c == ':' || c == '*' || c == '?' || c == '"' || c == '<' || c == '>' ||
        c == '|' || static_cast<unsigned char>(c) < 32) {
      c = '_';
    }
  }
  return (fs::path(save_dir.empty() ? "./output/" : save_dir) /
          (std::string(stamp) + "_" + std::to_string(steps) + "step_" + p + ".mp4"))
      .string();
}

}  // namespace liveavatar::pipeline
