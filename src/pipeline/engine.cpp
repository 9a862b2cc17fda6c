#include "liveavatar/pipeline/engine.h"

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>

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
#include "liveavatar/models/dit/model.h"
#include "liveavatar/models/lora.h"
#include "liveavatar/models/t5/prompt_encoder.h"
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

// T5 architecture from the weight shapes (the checkpoint directory carries no T5 config.json).
StatusOr<models::t5::T5Config> InferT5Config(const io::TensorStore& store) {
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

// VAE architecture from the weight shapes (Wan2.1_VAE.pth has no config): base width and latent channels;
// the level structure is Wan2.1's (strict loading reports any other layout key by key).
StatusOr<models::vae::VaeConfig> InferVaeConfig(const io::TensorStore& store) {
  models::vae::VaeConfig c;
  LA_ASSIGN_OR_RETURN(io::TensorMeta conv1, store.Meta("encoder.conv1.weight"));
  LA_ASSIGN_OR_RETURN(io::TensorMeta conv2, store.Meta("conv2.weight"));
  if (conv1.shape.empty() || conv2.shape.empty()) return Status::Corruption(store.path() + ": unexpected VAE weights");
  c.dim = conv1.shape[0];
  c.z_dim = conv2.shape[0];
  return c;
}

std::string ResolveLoraPath(const EngineOptions& o) {
  if (!o.lora_path.empty() && o.lora_path != "Quark-Vision/Live-Avatar") return o.lora_path;
  // The reference's default is a hub id; offline it resolves to local copies.
  for (const fs::path& p : {fs::path(o.ckpt_dir) / io::kTinyLoraFile, fs::path("ckpt/LiveAvatar/liveavatar.safetensors")}) {
    if (fs::exists(p)) return p.string();
  }
  return o.lora_path;
}

}  // namespace

struct Engine::Impl {
  EngineOptions options;
  std::unique_ptr<models::t5::PromptEncoder> t5;
  std::unique_ptr<models::audio::Wav2Vec2> wav2vec2;
  models::vae::WanVae vae;
  std::unique_ptr<models::dit::CausalWanS2V> dit;
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

StatusOr<std::unique_ptr<Engine>> Engine::Load(const EngineOptions& options) {
  LA_RETURN_IF_ERROR(io::CheckCheckpointDir(options.ckpt_dir, ""));
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  const fs::path dir(options.ckpt_dir);
  const auto t0 = Clock::now();

  // DiT (+ LoRA, merged in fp32 before the dtype conversion).
  LA_ASSIGN_OR_RETURN(models::dit::DitCheckpoint ckpt, models::dit::LoadDitCheckpoint(options.ckpt_dir));
  if (options.load_lora) {
    const std::string lora = ResolveLoraPath(options);
    if (lora.empty() || !fs::exists(lora)) {
      return Status::NotFound("--lora_path_dmd: LoRA file '" + lora +
                              "' not found (pass a local .safetensors path, or --load_lora false to run without it)");
    }
    std::optional<double> alpha;
    std::optional<int> rank;
    const fs::path cfg = options.training_config.empty()
                             ? fs::path(lora).parent_path() / "training_config_lora.json"
                             : fs::path(options.training_config);
    if (fs::exists(cfg)) {
      LA_ASSIGN_OR_RETURN(models::LoraTrainingConfig tc, models::LoadLoraTrainingConfig(cfg.string()));
      alpha = tc.alpha;
      rank = tc.rank;
    } else {
      alpha = kDefaultLoraAlpha;
      rank = kDefaultLoraRank;
      LA_LOG_INFO("LoRA: no training config at {}, using the reference's r={} alpha={}", cfg.string(), *rank, *alpha);
    }
    LA_ASSIGN_OR_RETURN(int pairs, models::MergeLoraFile(ckpt.weights, lora, alpha, rank));
    LA_LOG_INFO("LoRA: merged {} pairs from {}", pairs, lora);
  }
  LA_ASSIGN_OR_RETURN(models::dit::CausalWanS2V dit, models::dit::CausalWanS2V::Create(
                                                         ckpt.config, std::move(ckpt.weights), options.dtype, options.device));
  impl->dit = std::make_unique<models::dit::CausalWanS2V>(std::move(dit));

  // T5.
  {
    const std::string t5_path = (dir / io::kT5File).string();
    LA_ASSIGN_OR_RETURN(auto store, io::OpenTensorStore(t5_path));
    LA_ASSIGN_OR_RETURN(models::t5::T5Config t5cfg, InferT5Config(*store));
    if (t5cfg.dim != impl->dit->config().text_dim) {
      return Status::Corruption(t5_path + ": T5 dim " + std::to_string(t5cfg.dim) + " != DiT text_dim " +
                                std::to_string(impl->dit->config().text_dim));
    }
    models::LoadOptions lo;
    lo.dtype = options.dtype;
    lo.device = options.t5_cpu ? c10::Device(c10::kCPU) : options.device;
    LA_ASSIGN_OR_RETURN(models::t5::PromptEncoder pe,
                        models::t5::PromptEncoder::Load((dir / io::kTokenizerFile).string(), t5_path, t5cfg, lo,
                                                        impl->dit->config().text_len));
    impl->t5 = std::make_unique<models::t5::PromptEncoder>(std::move(pe));
  }
  // wav2vec2 (fp32 on the compute device: the reference keeps the audio path in fp32 islands downstream).
  {
    models::LoadOptions lo;
    lo.device = options.device;
    LA_ASSIGN_OR_RETURN(models::audio::Wav2Vec2 w, models::audio::Wav2Vec2::Load((dir / io::kWav2Vec2Dir).string(), lo));
    if (w.config().hidden_size != impl->dit->config().audio_dim) {
      return Status::Corruption((dir / io::kWav2Vec2Dir).string() + ": wav2vec2 hidden size " +
                                std::to_string(w.config().hidden_size) + " != DiT audio_dim " +
                                std::to_string(impl->dit->config().audio_dim));
    }
    impl->wav2vec2 = std::make_unique<models::audio::Wav2Vec2>(std::move(w));
  }
  // VAE.
  {
    const std::string vae_path = (dir / io::kVaeFile).string();
    LA_ASSIGN_OR_RETURN(auto store, io::OpenTensorStore(vae_path));
    LA_ASSIGN_OR_RETURN(models::vae::VaeConfig vcfg, InferVaeConfig(*store));
    models::LoadOptions lo;
    lo.dtype = options.dtype;
    lo.device = options.device;
    LA_ASSIGN_OR_RETURN(impl->vae, models::vae::LoadWanVae(*store, vcfg, lo));
  }
  LA_LOG_INFO("models loaded from {} in {:.1f} s", options.ckpt_dir, MsSince(t0) / 1000.0);
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

StatusOr<at::Tensor> Engine::PrepareImage(const std::string& path, const std::string& size) const {
  LA_ASSIGN_OR_RETURN(at::Tensor rgb, io::ReadImage(path));
  LA_ASSIGN_OR_RETURN(io::GenSize gs, io::ResolveGenSize(rgb.size(0), rgb.size(1), size));
  return io::PreprocessImage(rgb, gs.height, gs.width);
}

StatusOr<std::pair<at::Tensor, int64_t>> Engine::PrepareAudio(const std::string& path, int64_t infer_frames) const {
  LA_ASSIGN_OR_RETURN(io::AudioClip clip, io::ReadAudio(path, impl_->wav2vec2->config().sampling_rate));
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
  LA_ASSIGN_OR_RETURN(std::vector<at::Tensor> ctx, impl_->t5->EncodePrompt({prompt}));
  return ctx.at(0).to(impl_->options.device);
}

StatusOr<GenerationResult> Engine::Generate(const GenerationRequest& req, const ProgressFn& progress) {
  const auto t_start = Clock::now();
  const auto& opt = impl_->options;
  const auto& dit = *impl_->dit;
  if (req.infer_frames <= 0 || req.infer_frames % 4 != 0) {
    return Status::InvalidArgument("--infer_frames must be a positive multiple of 4, got " + std::to_string(req.infer_frames));
  }
  if (req.sample_steps < 1) return Status::InvalidArgument("--sample_steps must be >= 1");
  if (req.rolling_sink_d != -1 && (req.rolling_sink_d < 4 || req.rolling_sink_d > 30)) {
    return Status::InvalidArgument("--rolling_sink_d must be -1 or within [4, 30]");
  }

  // Inputs.
  LA_ASSIGN_OR_RETURN(at::Tensor image, PrepareImage(req.image, req.size));
  const int64_t H = image.size(1), W = image.size(2);
  const auto t_enc = Clock::now();
  LA_ASSIGN_OR_RETURN(auto audio, PrepareAudio(req.audio, req.infer_frames));
  const at::Tensor audio_emb = audio.first;
  const int64_t num_clips = std::min<int64_t>(std::max<int64_t>(req.num_clip, 1), audio.second);
  LA_ASSIGN_OR_RETURN(at::Tensor context, PreparePrompt(req.prompt));

  const auto& vae = impl_->vae;
  const at::Tensor img = image.to(opt.device).unsqueeze(0).unsqueeze(2);  // [1, 3, 1, H, W]
  const at::Tensor ref_latents = models::vae::Encode(vae, img);           // [1, 16, 1, h, w]
  const at::Tensor motion_latents = models::vae::Encode(vae, img.expand({1, 3, kMotionFrames, H, W}).contiguous());
  const double encode_ms = MsSince(t_enc);

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
  const int64_t blocks = geo.blocks_per_clip();
  const int64_t frames_per_block = geo.video_frames_per_block();

  FlowMatchEulerScheduler scheduler(1000, 3.0);
  scheduler.SetTimesteps(req.sample_steps);
  const int64_t seed = req.base_seed;
  RelativeDistSource d = req.rolling_sink_d >= 0 ? FixedRelativeDist(req.rolling_sink_d)
                                                 : SeededRelativeDist(static_cast<uint64_t>(seed));
  StreamingDenoiser denoiser(&dit, &scheduler, geo, at::TensorOptions().dtype(dit.dtype()).device(opt.device), d);
  denoiser.Prefill(context, ref_latents, motion_latents);

  models::vae::StreamingDecoder decoder(&vae);
  (void)decoder.Decode(motion_latents.narrow(2, 0, std::min<int64_t>(kDecoderPrimeLatents, motion_latents.size(2))));

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
  LA_ASSIGN_OR_RETURN(std::unique_ptr<io::VideoWriter> writer,
                      io::VideoWriter::Open(req.output, static_cast<int>(W), static_cast<int>(H), wopt, track));

  GenerationResult result;
  result.height = H;
  result.width = W;
  result.num_clips = num_clips;
  result.seed = seed;
  result.encode_ms = encode_ms;
  result.fps = kFps;
  Progress prog;
  prog.num_clips = num_clips;
  prog.blocks_per_clip = blocks;
  prog.total_frames = num_clips * req.infer_frames - kDroppedFirstFrames;

  at::Tensor refresh_latent;
  const int64_t lat_clip = geo.latent_frames_per_clip();
  for (int64_t r = 0; r < num_clips; ++r) {
    if (r == 1 && req.sink_refresh) denoiser.RefreshSink(refresh_latent);
    auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seed + r));
    const at::Tensor noise = at::randn({dit.config().in_dim, lat_clip, geo.latent_h, geo.latent_w}, gen,
                                       at::TensorOptions().dtype(at::kFloat));
    for (int64_t b = 0; b < blocks; ++b) {
      BlockTiming bt{r, b};
      auto t0 = Clock::now();
      const at::Tensor x = noise.narrow(1, b * geo.frames_per_block, geo.frames_per_block).to(opt.device);
      const at::Tensor audio_block = models::audio::AudioBlockSlice(audio_emb, r, b, req.infer_frames, frames_per_block);
      at::Tensor latents = denoiser.DenoiseBlock(r, b, x, audio_block);  // [16, 3, h, w] fp32
      if (r == 0 && b == 0) refresh_latent = latents.narrow(1, 0, 1).unsqueeze(0).clone();
      bt.denoise_ms = MsSince(t0);
      t0 = Clock::now();
      at::Tensor frames = decoder.Decode(latents.unsqueeze(0));  // [1, 3, F, H, W]
      frames = frames.narrow(2, frames.size(2) - frames_per_block, frames_per_block);
      if (r == 0 && b == 0) frames = frames.narrow(2, kDroppedFirstFrames, frames_per_block - kDroppedFirstFrames);
      frames = models::vae::ClampVideo(frames).to(at::kCPU);  // [3, F, H, W]
      bt.decode_ms = MsSince(t0);
      t0 = Clock::now();
      Status ws = writer->AddFrames(frames);
      if (!ws.ok()) {
        writer->Abort();
        return ws.WithPrefix("writing " + req.output);
      }
      bt.write_ms = MsSince(t0);
      result.blocks.push_back(bt);
      result.final_latents = latents;
      prog.clip = r;
      prog.block = b;
      prog.frames_written += frames.size(1);
      prog.elapsed_s = MsSince(t_start) / 1000.0;
      if (progress) progress(prog);
    }
  }
  result.frames = prog.frames_written;
  LA_RETURN_IF_ERROR(writer->Close().WithPrefix("finalising " + req.output));
  result.outputs = writer->output_paths();
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
