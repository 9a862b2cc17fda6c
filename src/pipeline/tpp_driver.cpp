#include "liveavatar/pipeline/tpp_driver.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include <c10/util/Exception.h>

#include "liveavatar/core/logging.h"
#include "liveavatar/dist/parallel_vae.h"
#include "liveavatar/dist/shard_manager.h"
#include "liveavatar/runtime/oom.h"
#include "liveavatar/dist/ulysses.h"
#include "liveavatar/models/dit/model.h"
#include "liveavatar/models/vae/vae.h"
#include "liveavatar/pipeline/streaming_denoiser.h"

namespace liveavatar::pipeline {

namespace {

using Clock = std::chrono::steady_clock;
double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

constexpr int kMaxDims = 8;
constexpr dist::Milliseconds kSetupTimeout{std::chrono::hours(1)};

// P2P tag of global block n (Gloo matches by tag; NCCL by order).
int BlockTag(int64_t n) { return static_cast<int>(n & 0x3fffffff); }

}  // namespace

c10::Device CollectiveDevice(const dist::Communicator& comm, c10::Device device) {
  return std::string(comm.BackendName()) == "nccl" ? device : c10::Device(c10::kCPU);
}

Status AgreeAcrossRanks(dist::Communicator& comm, const Status& local, const std::string& phase, c10::Device device) {
  at::Tensor flags =
      at::zeros({comm.Size()}, at::TensorOptions().dtype(at::kLong).device(CollectiveDevice(comm, device)));
  if (!local.ok()) flags.narrow(0, comm.Rank(), 1).fill_(1);
  // Setup phases take as long as their slowest rank (loading a 14B DiT from a slow disk): wait at least an hour.
  dist::CollectiveOptions co;
  co.timeout = std::max<dist::Milliseconds>(comm.DefaultTimeout(), kSetupTimeout);
  Status cs = comm.AllReduceSum(flags, co)->Wait();
  if (!cs.ok()) return cs.WithPrefix("rank " + std::to_string(comm.Rank()) + ", " + phase);
  if (!local.ok()) return local;
  const at::Tensor host = flags.to(at::kCPU);
  for (int r = 0; r < comm.Size(); ++r) {
    if (host[r].item<int64_t>() != 0) {
      return Status::Unavailable("TPP rank " + std::to_string(r) + " failed while " + phase + " (see its error)");
    }
  }
  return Status::Ok();
}

StatusOr<int64_t> BroadcastValue(dist::Communicator& comm, int64_t value, int root, c10::Device device) {
  at::Tensor t = at::full({1}, value, at::TensorOptions().dtype(at::kLong).device(CollectiveDevice(comm, device)));
  dist::BroadcastOptions bo;
  bo.root = root;
  LA_RETURN_IF_ERROR(comm.Broadcast(t, bo)->Wait());
  return t.to(at::kCPU).item<int64_t>();
}

struct TppDriver::Impl {
  EngineOptions options;
  Topology topology;
  RankRole role;
  dist::CommunicatorPtr world;
  c10::Device comm_device = c10::Device(c10::kCPU);  // where collective tensors live (CUDA for NCCL)
  std::unique_ptr<Engine> engine;                    // the models of this rank's role
  dist::CommunicatorPtr stage_group;                 // this stage's Ulysses / FSDP group (ulysses_size > 1)
  std::unique_ptr<dist::ShardManager> shards;        // the FSDP-sharded DiT (--dit_fsdp)
  models::dit::CausalWanS2V* dit = nullptr;          // the DiT of a stage rank
  dist::CommunicatorPtr vae_group;                   // the VAE ranks (several with --enable_vae_parallel)
  std::shared_ptr<models::vae::SpatialParallel> vae_parallel;  // row split of the decode over vae_group

  // Loads this rank's models (no collective).
  Status LoadModels();

  Status Agree(const Status& local, const std::string& phase) {
    return AgreeAcrossRanks(*world, local, phase, options.device);
  }

  // Broadcasts `*t` (any shape up to kMaxDims, any dtype) from `root`; non-roots receive shape, dtype and data.
  // The result is on `device`.
  Status BroadcastTensor(at::Tensor* t, int root, c10::Device device) {
    at::Tensor header = at::zeros({2 + kMaxDims}, at::kLong);
    const bool is_root = world->Rank() == root;
    if (is_root) {
      TORCH_CHECK(t->dim() <= kMaxDims, "BroadcastTensor: too many dims");
      header[0] = static_cast<int64_t>(t->scalar_type());
      header[1] = t->dim();
      for (int64_t i = 0; i < t->dim(); ++i) header[2 + i] = t->size(i);
    }
    header = header.to(comm_device);
    dist::BroadcastOptions bo;
    bo.root = root;
    LA_RETURN_IF_ERROR(world->Broadcast(header, bo)->Wait());
    const at::Tensor h = header.to(at::kCPU);
    at::Tensor data;
    if (is_root) {
      data = t->to(comm_device).contiguous();
    } else {
      std::vector<int64_t> shape(static_cast<size_t>(h[1].item<int64_t>()));
      for (size_t i = 0; i < shape.size(); ++i) shape[i] = h[2 + static_cast<int64_t>(i)].item<int64_t>();
      data = at::empty(shape, at::TensorOptions()
                                  .dtype(static_cast<c10::ScalarType>(h[0].item<int64_t>()))
                                  .device(comm_device));
    }
    LA_RETURN_IF_ERROR(world->Broadcast(data, bo)->Wait());
    *t = data.to(device);
    return Status::Ok();
  }

  // Sends `t` (fp32 latents) to `dst`; waits for the previous send to `dst` first, so one send per peer is in
  // flight. Buffers of in-flight sends stay alive in `pending`.
  struct Pending {
    int dst;
    at::Tensor buffer;
    dist::WorkPtr work;
  };
  std::vector<Pending> pending;

  Status Send(const at::Tensor& t, int dst, int64_t n) {
    for (auto it = pending.begin(); it != pending.end(); ++it) {
      if (it->dst == dst) {
        Status s = it->work->Wait();
        pending.erase(it);
        LA_RETURN_IF_ERROR(s.WithPrefix("TPP rank " + std::to_string(role.rank) + ": send to rank " +
                                        std::to_string(dst)));
        break;
      }
    }
    Pending p;
    p.dst = dst;
    p.buffer = t.to(comm_device, at::kFloat).contiguous();
    dist::P2POptions po;
    po.tag = BlockTag(n);
    p.work = world->Send(p.buffer, dst, po);
    pending.push_back(std::move(p));
    return Status::Ok();
  }

  Status DrainSends() {
    Status first = Status::Ok();
    for (auto& p : pending) {
      Status s = p.work->Wait();
      if (first.ok() && !s.ok()) first = s.WithPrefix("TPP rank " + std::to_string(role.rank) + ": send");
    }
    pending.clear();
    return first;
  }

  StatusOr<at::Tensor> Recv(const std::vector<int64_t>& shape, int src, int64_t n) {
    at::Tensor buf = at::empty(shape, at::TensorOptions().dtype(at::kFloat).device(comm_device));
    dist::P2POptions po;
    po.tag = BlockTag(n);
    Status s = world->Recv(buf, src, po)->Wait();
    if (!s.ok()) {
      return s.WithPrefix("TPP rank " + std::to_string(role.rank) + ": receiving block " + std::to_string(n) +
                          " from rank " + std::to_string(src));
    }
    return buf.to(options.device);
  }

  StatusOr<GenerationResult> Run(const GenerationRequest& req, const ProgressFn& progress);
};

TppDriver::TppDriver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TppDriver::~TppDriver() = default;

const RankRole& TppDriver::role() const { return impl_->role; }
const Topology& TppDriver::topology() const { return impl_->topology; }

StatusOr<std::unique_ptr<TppDriver>> TppDriver::Create(const EngineOptions& options, const Topology& topology,
                                                       dist::CommunicatorPtr world) {
  if (world == nullptr) return Status::InvalidArgument("TppDriver: no communicator");
  if (world->Size() != topology.world_size) {
    return Status::InvalidArgument("TppDriver: communicator of " + std::to_string(world->Size()) +
                                   " ranks for a topology of " + std::to_string(topology.world_size));
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->topology = topology;
  impl->role = topology.Role(world->Rank());
  impl->world = std::move(world);
  impl->comm_device = CollectiveDevice(*impl->world, options.device);
  const RankRole& role = impl->role;

  if (topology.ulysses_size > 1) {
    // NewGroup is collective over the world: every rank creates every stage's group, in order.
    for (int st = 0; st < topology.num_stages; ++st) {
      auto g = impl->world->NewGroup(topology.StageRanks(st));
      if (!g.ok()) return g.status().WithPrefix("TPP: creating the group of stage " + std::to_string(st));
      if (*g) impl->stage_group = std::move(g).value();
    }
  }
  if (topology.num_vae_ranks > 1) {
    // Collective over the world as well: every rank creates the VAE group.
    auto g = impl->world->NewGroup(topology.VaeRanks());
    if (!g.ok()) return g.status().WithPrefix("TPP: creating the group of the VAE ranks");
    if (*g) impl->vae_group = std::move(g).value();
  }
  LA_RETURN_IF_ERROR(impl->Agree(impl->LoadModels(), "loading models"));
  if (role.is_dit()) {
    LA_LOG_INFO("TPP rank {}: stage {} of {} (steps {}..{}){}", role.rank, role.stage, topology.num_stages,
                role.first_step, role.first_step + role.num_steps - 1, role.is_writer ? ", writer" : "");
  } else {
    LA_LOG_INFO("TPP rank {}: VAE rank {} of {}{}", role.rank, role.rank - topology.vae_rank(),
                topology.num_vae_ranks, role.is_writer ? ", writer" : "");
  }
  return std::unique_ptr<TppDriver>(new TppDriver(std::move(impl)));
}

Status TppDriver::Impl::LoadModels() {
  EngineOptions eo = options;
  eo.load_dit = role.is_dit() && !topology.dit_fsdp;
  eo.load_encoders = role.is_writer;
  eo.load_vae = role.is_writer || role.is_vae_rank;
  LA_ASSIGN_OR_RETURN(engine, Engine::Load(eo));
  if (!role.is_dit()) {
    if (vae_group) {
      LA_ASSIGN_OR_RETURN(vae_parallel, dist::MakeSpatialParallel(vae_group));
    }
    return Status::Ok();
  }
  dit = engine->mutable_dit();
  if (topology.dit_fsdp) {
    dist::ShardOptions so;
    so.prefetch = static_cast<int>(topology.fsdp_prefetch);
    so.dtype = options.dtype;
    so.device = options.device;
    so.fp8 = options.fp8;
    so.offload_shards = options.offload_blocks;  // --offload_model True: this rank's slices stay on the host
    if (options.load_lora) {
      LA_ASSIGN_OR_RETURN(LoraChoice lora, ResolveLora(options));
      so.lora_path = lora.path;
      so.lora_alpha = lora.alpha;
      so.lora_rank = lora.rank;
    }
    LA_ASSIGN_OR_RETURN(shards, dist::ShardManager::Open(options.ckpt_dir, stage_group, so));
    dit = &shards->model();
    const auto acct = shards->accounting();
    LA_LOG_INFO("TPP rank {}: FSDP shard of the DiT over {} ranks: {:.1f} MB resident of {:.1f} MB", role.rank,
                topology.ulysses_size, acct.resident_bytes() / 1e6, acct.total_param_bytes / 1e6);
  }
  if (topology.ulysses_size > 1) {
    LA_RETURN_IF_ERROR(dit->set_sequence_parallel(dist::MakeUlysses(stage_group)));
  }
  return Status::Ok();
}

StatusOr<GenerationResult> TppDriver::Generate(const GenerationRequest& request, const ProgressFn& progress) {
  StatusOr<GenerationResult> result = Status::Internal("TPP: not run");
  // Collective failures inside the model (Ulysses, FSDP) are thrown; they end this rank's run with an error.
  try {
    result = impl_->Run(request, progress);
  } catch (const StatusError& e) {
    result = e.status().WithPrefix("TPP rank " + std::to_string(impl_->role.rank));
  } catch (const std::exception& e) {
    const std::string where = "TPP rank " + std::to_string(impl_->role.rank);
    if (runtime::IsOutOfMemory(e)) {
      result = runtime::OutOfMemoryStatus(e, impl_->options.device, where + ": out of memory");
    } else if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
      result = Status::Internal(where + ": " + c10_error->what_without_backtrace());
    } else {
      result = Status::Internal(where + ": " + e.what());
    }
  }
  // Whatever happened, no send may outlive this call (its buffer is owned here).
  Status drained = impl_->DrainSends();
  if (result.ok() && !drained.ok()) return drained;
  return result;
}

StatusOr<GenerationResult> TppDriver::Impl::Run(const GenerationRequest& req, const ProgressFn& progress) {
  const auto t_start = Clock::now();
  LA_RETURN_IF_ERROR(ValidateRequest(req));
  const Topology& topo = topology;
  const int writer = topo.writer_rank();
  const int last_stage = topo.num_stages - 1;

  // 1. The writer encodes the inputs; everybody receives them.
  EncodedInputs in;
  Status enc = Status::Ok();
  if (role.is_writer) {
    auto e = engine->Encode(req);
    if (e.ok()) {
      in = std::move(e).value();
    } else {
      enc = e.status();
    }
  }
  LA_RETURN_IF_ERROR(Agree(enc, "encoding the inputs"));
  {
    at::Tensor sizes = at::tensor({in.num_clips, in.height, in.width}, at::kLong);
    LA_RETURN_IF_ERROR(BroadcastTensor(&sizes, writer, c10::Device(c10::kCPU)));
    in.num_clips = sizes[0].item<int64_t>();
    in.height = sizes[1].item<int64_t>();
    in.width = sizes[2].item<int64_t>();
  }
  for (at::Tensor* t : {&in.context, &in.audio_emb, &in.ref_latents, &in.motion_latents}) {
    LA_RETURN_IF_ERROR(BroadcastTensor(t, writer, options.device));
  }
  LA_ASSIGN_OR_RETURN(StreamGeometry geo, MakeStreamGeometry(req, in.ref_latents));
  const int64_t blocks = geo.blocks_per_clip();
  const int64_t total_blocks = in.num_clips * blocks;
  const std::vector<int64_t> block_shape = {in.ref_latents.size(1), geo.frames_per_block, geo.latent_h, geo.latent_w};

  // The VAE ranks must be able to split the frame rows between them.
  Status split = Status::Ok();
  if (vae_parallel) {
    split = models::vae::CheckSpatialSplit(engine->vae()->config, geo.latent_h, vae_parallel->world())
                .WithPrefix("--enable_vae_parallel with " + std::to_string(topo.num_vae_ranks) + " VAE ranks");
  }
  LA_RETURN_IF_ERROR(Agree(split, "checking the VAE split"));

  // 2. Stages prefill their rings; the VAE ranks (or the writer) prime their decoders; the writer opens the output.
  const FlowMatchEulerScheduler scheduler = MakeScheduler(req);
  std::unique_ptr<StreamingDenoiser> denoiser;
  std::unique_ptr<FrameSink> sink;
  Status setup = Status::Ok();
  if (role.is_dit()) {
    denoiser = std::make_unique<StreamingDenoiser>(dit, &scheduler, geo,
                                                   at::TensorOptions().dtype(dit->dtype()).device(options.device),
                                                   MakeRelativeDist(req), role.first_step, role.num_steps);
    if (options.offload_kv_cache) denoiser->set_ring_residency(KvCacheResidency());
    denoiser->Prefill(in.context, in.ref_latents, in.motion_latents);
  }
  if (role.is_writer || role.is_vae_rank) {
    auto s = FrameSink::Open(engine->vae(), req, in, geo, options.device, progress, vae_parallel, role.is_writer);
    if (s.ok()) {
      sink = std::move(s).value();
    } else {
      setup = s.status();
    }
  }
  LA_RETURN_IF_ERROR(Agree(setup, "opening the output"));

  // 3. The pipeline: every rank walks the global blocks n = clip·blocks + block in order.
  GenerationResult result;
  result.height = in.height;
  result.width = in.width;
  result.num_clips = in.num_clips;
  result.seed = req.base_seed;
  at::Tensor refresh_latent;
  const bool refresh = req.sink_refresh && in.num_clips > 1;
  for (int64_t n = 0; n < total_blocks; ++n) {
    const int64_t r = n / blocks, b = n % blocks;
    if (refresh && n == blocks) {
      // The last stage's leader finished block 0 before reaching this block; every rank joins the broadcast.
      at::Tensor latent = refresh_latent.defined()
                              ? refresh_latent
                              : at::empty({1, block_shape[0], 1, geo.latent_h, geo.latent_w}, at::kFloat);
      Status bs = BroadcastTensor(&latent, topo.StageLeader(last_stage), options.device);
      if (!bs.ok()) {
        if (sink) sink->Abort();
        return bs.WithPrefix("broadcasting the sink-refresh latent");
      }
      if (denoiser) denoiser->RefreshSink(latent);
    }
    at::Tensor latents;
    double denoise_ms = 0;
    if (role.is_dit()) {
      const auto t0 = Clock::now();
      at::Tensor x;
      if (role.stage == 0) {
        x = BlockNoise(dit->config().in_dim, geo, req.base_seed, r, b).to(options.device);
      } else {
        auto rx = Recv(block_shape, topo.StageLeader(role.stage - 1), n);
        if (!rx.ok()) {
          if (sink) sink->Abort();
          return rx.status();
        }
        x = std::move(rx).value();
      }
      latents = denoiser->DenoiseBlock(r, b, x, BlockAudio(in.audio_emb, geo, r, b));
      denoise_ms = MsSince(t0);
      result.blocks.push_back(BlockTiming{r, b, denoise_ms, 0, 0});
      result.final_latents = latents;
      if (role.stage == last_stage && n == 0) refresh_latent = SinkRefreshLatent(latents);
      if (role.group_rank == 0) {
        if (role.stage < last_stage) {
          for (int dst : topo.StageRanks(role.stage + 1)) LA_RETURN_IF_ERROR(Send(latents, dst, n));
        } else {
          for (int dst : topo.VaeRanks()) LA_RETURN_IF_ERROR(Send(latents, dst, n));
        }
      }
    } else {
      auto rx = Recv(block_shape, topo.StageLeader(last_stage), n);
      if (!rx.ok()) {
        sink->Abort();
        return rx.status();
      }
      latents = std::move(rx).value();
    }
    if (sink) {
      Status cs = sink->Consume(r, b, latents, denoise_ms);
      if (!cs.ok()) return cs;
    }
  }
  LA_RETURN_IF_ERROR(DrainSends());

  // 4. The writer finalises; every rank learns whether the run succeeded.
  Status closed = Status::Ok();
  if (sink) {
    GenerationResult written;
    closed = sink->Close(&written);
    if (closed.ok()) {
      if (role.is_dit()) {  // keep this rank's denoise timings in the writer's per-block records
        for (size_t i = 0; i < written.blocks.size() && i < result.blocks.size(); ++i) {
          written.blocks[i].denoise_ms = result.blocks[i].denoise_ms;
        }
      }
      result = std::move(written);
    }
  }
  LA_RETURN_IF_ERROR(Agree(closed, "finalising the output"));
  result.total_ms = MsSince(t_start);
  return result;
}

}  // namespace liveavatar::pipeline
