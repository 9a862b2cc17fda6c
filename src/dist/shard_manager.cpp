#include "liveavatar/dist/shard_manager.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <sstream>

#include <ATen/ATen.h>

#include "liveavatar/io/checkpoint_dir.h"
#include "liveavatar/models/dit/fp8_weights.h"
#include "liveavatar/models/dit/weights.h"
#include "liveavatar/models/fp8.h"

namespace liveavatar::dist {

namespace {

using models::WeightSpec;
using models::dit::BlockIndex;
using models::dit::CausalWanS2V;
using models::dit::DitConfig;

struct Units {
  std::vector<std::vector<WeightSpec>> blocks;
  std::vector<WeightSpec> root;
};

Units SplitUnits(const DitConfig& config, const std::vector<WeightSpec>& specs) {
  Units u;
  u.blocks.resize(static_cast<size_t>(config.num_layers));
  for (const auto& s : specs) {
    const int64_t i = BlockIndex(s.key);
    if (i >= 0 && i < config.num_layers) {
      u.blocks[static_cast<size_t>(i)].push_back(s);
    } else {
      u.root.push_back(s);
    }
  }
  return u;
}

// Strict key check of the checkpoint against the model's specs (one error listing every problem).
Status CheckStore(const io::TensorStore& store, const std::vector<WeightSpec>& specs) {
  LA_ASSIGN_OR_RETURN(models::WeightCheck check, models::CheckWeights(store, specs));
  if (check.ok()) return Status::Ok();
  return Status::InvalidArgument(models::WeightCheckReport(store.path(), check));
}

std::function<c10::ScalarType(const std::string&)> DtypeOf(c10::ScalarType dtype) {
  return [dtype](const std::string& key) { return CausalWanS2V::WeightDtype(key, dtype); };
}

Status CheckOptions(const ShardOptions& options) {
  if (options.prefetch < 0) {
    return Status::InvalidArgument("--fsdp_prefetch: must be >= 0, got " + std::to_string(options.prefetch));
  }
  if (options.dtype != at::kFloat && options.dtype != at::kBFloat16) {
    return Status::InvalidArgument(std::string("ShardManager: unsupported model dtype ") +
                                   c10::toString(options.dtype) + " (use float32 or bfloat16)");
  }
  return Status::Ok();
}

std::function<bool(const std::string&)> Fp8Of(const ShardOptions& options) {
  if (!options.fp8) return {};
  return [](const std::string& key) { return models::dit::IsFp8LinearWeight(key); };
}

FlatLayout BlockLayout(const std::vector<WeightSpec>& block, const ShardOptions& options, int group_size) {
  return MakeFlatLayout(block, DtypeOf(options.dtype), group_size, Fp8Of(options));
}

// Root layout: one flat unit over the group when sharded, a group of one (the whole unit) when replicated.
FlatLayout RootLayout(const std::vector<WeightSpec>& root, const ShardOptions& options, int group_size) {
  return MakeFlatLayout(root, DtypeOf(options.dtype), options.shard_root ? group_size : 1, Fp8Of(options));
}

// Per layer, the dense bytes of the FP8 weights its hooks dequantise (block and injectors).
std::vector<int64_t> DequantBytesPerLayer(const DitConfig& config, const std::vector<FlatLayout>& units) {
  std::vector<int64_t> bytes(static_cast<size_t>(config.num_layers), 0);
  for (const auto& layout : units) {
    for (const auto& p : layout.params) {
      if (!p.fp8) continue;
      const int64_t layer = models::dit::Fp8KeyLayer(config, p.key);
      if (layer >= 0) bytes[static_cast<size_t>(layer)] += p.numel * int64_t(c10::elementSize(p.value_dtype));
    }
  }
  return bytes;
}

}  // namespace

ShardManager::ShardManager(CommunicatorPtr group, const ShardOptions& options)
    : group_(std::move(group)), options_(options) {}

ShardManager::~ShardManager() {
  // No waiting here: a peer may be gone. Buffers still targeted by an in-flight NCCL gather are protected by the
  // communicator (it marks them in use on its stream for the caching allocator). Host-to-device copies into
  // staging slices are local: wait for them before the slices are freed.
  if (transfer_) transfer_->Synchronize();
  pending_.clear();
}

ShardAccounting ShardManager::Plan(const DitConfig& config, const ShardOptions& options, int group_size) {
  TORCH_CHECK(group_size >= 1, "ShardManager::Plan: group_size must be >= 1");
  const Units units = SplitUnits(config, models::dit::DitWeightSpecs(config));
  ShardAccounting a;
  if (units.blocks.empty()) return a;
  const FlatLayout block = BlockLayout(units.blocks[0], options, group_size);
  const FlatLayout root = RootLayout(units.root, options, group_size);
  std::vector<FlatLayout> all;
  for (const auto& b : units.blocks) all.push_back(BlockLayout(b, options, 1));
  all.push_back(root);
  for (int64_t b : DequantBytesPerLayer(config, all)) a.dequant_bytes = std::max(a.dequant_bytes, b);
  const int64_t layers = static_cast<int64_t>(units.blocks.size());
  a.total_param_bytes = block.param_bytes * layers + root.param_bytes;
  a.block_bytes = block.padded_bytes;
  a.resident_shard_bytes = options.offload_shards ? 0 : block.shard_bytes * layers;
  a.host_shard_bytes = options.offload_shards ? block.shard_bytes * layers : 0;
  a.staging_bytes = options.offload_shards ? std::min<int64_t>(options.prefetch + 1, layers) * block.shard_bytes : 0;
  a.root_bytes = root.padded_bytes;
  a.unshard_buffer_bytes = std::min<int64_t>(options.prefetch + 1, layers) * block.padded_bytes;
  a.peak_unshard_buffer_bytes = a.unshard_buffer_bytes;
  a.peak_unshard_in_use_bytes = a.unshard_buffer_bytes;
  const int64_t load_peak = a.resident_shard_bytes + a.root_bytes + (options.shard_root ? root.shard_bytes : 0);
  a.peak_bytes = std::max(a.resident_bytes() + a.dequant_bytes, load_peak);
  return a;
}

StatusOr<std::unique_ptr<ShardManager>> ShardManager::Create(const DitConfig& config, const io::TensorStore& store,
                                                            CommunicatorPtr group, const ShardOptions& options) {
  if (group == nullptr) return Status::InvalidArgument("ShardManager: no communicator group");
  LA_RETURN_IF_ERROR(config.Validate());
  LA_RETURN_IF_ERROR(CheckOptions(options));
  const std::vector<WeightSpec> specs = models::dit::DitWeightSpecs(config);
  LA_RETURN_IF_ERROR(CheckStore(store, specs));
  std::optional<SliceLora> lora;
  if (!options.lora_path.empty()) {
    LA_ASSIGN_OR_RETURN(lora, OpenSliceLora(options.lora_path, options.lora_alpha, options.lora_rank, specs));
  }
  const SliceLora* lora_ptr = lora ? &*lora : nullptr;

  std::unique_ptr<ShardManager> m(new ShardManager(group, options));
  const int size = group->Size();
  const int rank = group->Rank();
  const Units units = SplitUnits(config, specs);
  m->num_layers_ = config.num_layers;
  for (const auto& b : units.blocks) m->layouts_.push_back(BlockLayout(b, options, size));
  m->root_layout_ = RootLayout(units.root, options, size);
  ShardAccounting& a = m->acct_;
  a.block_bytes = m->layouts_.front().padded_bytes;
  a.total_param_bytes = m->root_layout_.param_bytes;
  for (const auto& l : m->layouts_) {
    TORCH_CHECK(l.padded_bytes == a.block_bytes, "ShardManager: blocks have different layouts");
    a.total_param_bytes += l.param_bytes;
  }

  // Block slices: filled on the host one block at a time, then moved to the device (or kept on the host, in
  // page-locked slabs, with offload_shards).
  const int64_t shard_bytes = m->layouts_.front().shard_bytes;
  const auto byte_opts = at::TensorOptions().dtype(at::kByte);
  if (options.offload_shards) {
    std::vector<runtime::HostTensorSpec> specs(static_cast<size_t>(m->num_layers_), {{shard_bytes}, at::kByte});
    m->host_shards_ = runtime::AllocateHostTensors(specs, /*pinned=*/options.device.is_cuda()).tensors;
    a.host_shard_bytes = shard_bytes * m->num_layers_;
    m->transfer_ = std::make_unique<runtime::TransferStream>(options.device);
  } else {
    m->shards_ = at::empty({m->num_layers_, shard_bytes}, byte_opts.device(options.device));
    a.resident_shard_bytes = m->shards_.numel();
  }
  const bool on_host = options.device.is_cpu() || options.offload_shards;
  at::Tensor staging = on_host ? at::Tensor() : at::empty({shard_bytes}, byte_opts);
  for (int64_t i = 0; i < m->num_layers_; ++i) {
    at::Tensor dst = options.offload_shards ? m->host_shards_[static_cast<size_t>(i)]
                     : on_host             ? m->shards_.select(0, i)
                                           : staging;
    LA_RETURN_IF_ERROR(m->LoadUnit(m->layouts_[static_cast<size_t>(i)], rank, size > 1, store, lora_ptr, dst,
                                   "block " + std::to_string(i)));
    if (!on_host) m->shards_.select(0, i).copy_(staging);
  }
  staging.reset();

  // Root unit: replicated (read whole) or sharded and gathered once.
  const FlatLayout& root = m->root_layout_;
  at::Tensor root_shard = at::empty({root.shard_bytes}, byte_opts);
  const int root_rank = options.shard_root ? rank : 0;
  LA_RETURN_IF_ERROR(m->LoadUnit(root, root_rank, root.group_size > 1, store, lora_ptr, root_shard, "root unit"));
  root_shard = root_shard.to(options.device);
  if (root.group_size > 1) {
    m->root_ = at::empty({root.padded_bytes}, byte_opts.device(options.device));
    a.root_bytes = m->root_.numel();
    a.peak_bytes = std::max(a.peak_bytes, a.resident_shard_bytes + a.root_bytes + root_shard.numel());
    Status s = group->AllGatherIntoTensor(m->root_, root_shard)->Wait();
    if (!s.ok()) return s.WithPrefix("ShardManager: all-gather of the root unit");
  } else {
    m->root_ = root_shard;
    a.root_bytes = m->root_.numel();
  }
  root_shard.reset();
  a.peak_bytes = std::max(a.peak_bytes, a.resident_bytes());

  models::WeightMap root_views = ViewParams(root, m->root_);
  if (options.fp8) {
    std::vector<FlatLayout> all = m->layouts_;
    all.push_back(root);
    for (int64_t b : DequantBytesPerLayer(config, all)) a.dequant_bytes = std::max(a.dequant_bytes, b);
    // The injectors' codes stay in the root buffer; the model sees placeholders until their layer runs.
    m->root_fp8_.resize(static_cast<size_t>(config.num_layers));
    for (const auto& p : root.params) {
      if (!p.fp8) continue;
      const int64_t layer = models::dit::Fp8KeyLayer(config, p.key);
      TORCH_CHECK(layer >= 0, "ShardManager: FP8 key ", p.key, " has no layer");
      m->root_fp8_[static_cast<size_t>(layer)][p.key] = root_views.at(p.key);
      root_views[p.key] = at::empty({0}, at::TensorOptions().dtype(p.value_dtype).device(options.device));
    }
  }
  LA_ASSIGN_OR_RETURN(CausalWanS2V model, CausalWanS2V::CreateWithExternalBlocks(config, std::move(root_views),
                                                                                 options.dtype, options.device));
  m->model_ = std::make_unique<CausalWanS2V>(std::move(model));
  ShardManager* self = m.get();
  m->model_->set_block_hooks({[self](int64_t i) { self->Before(i); }, [self](int64_t i) { self->After(i); }});
  return m;
}

StatusOr<std::unique_ptr<ShardManager>> ShardManager::Open(const std::string& ckpt_dir, CommunicatorPtr group,
                                                          const ShardOptions& options) {
  const io::CheckpointDir layout = io::CheckpointDir::At(ckpt_dir, "");
  LA_ASSIGN_OR_RETURN(DitConfig config, models::dit::LoadDitConfig(layout.dit_config));
  LA_ASSIGN_OR_RETURN(std::shared_ptr<io::TensorStore> store, io::OpenTensorStore(layout.dit_weights));
  return Create(config, *store, std::move(group), options);
}

Status ShardManager::LoadUnit(const FlatLayout& layout, int rank, bool collective, const io::TensorStore& store,
                              const SliceLora* lora, const at::Tensor& dst, const std::string& unit) {
  ShardAccounting& a = acct_;
  StatusOr<std::vector<ShardPiece>> pieces = Status::Internal("not read");
  try {  // an exception must not skip the collective below (the other ranks would wait for it)
    pieces = ReadShard(layout, rank, store, lora, &a.bytes_read, &a.lora_bytes_read);
  } catch (const c10::Error& e) {
    pieces = Status::Internal(std::string("reading the slice: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    pieces = Status::Internal(std::string("reading the slice: ") + e.what());
  }
  if (!HasFp8(layout)) {
    if (!pieces.ok()) return pieces.status().WithPrefix(unit);
    return WriteShard(layout, *pieces, {}, dst).WithPrefix(unit);
  }
  // amax per FP8 tensor over the ranks holding parts of it; the last entry flags a rank that failed to read.
  static const std::vector<ShardPiece> kNone;
  at::Tensor amax = Fp8AbsMaxOfPieces(layout, pieces.ok() ? *pieces : kNone, /*extra=*/1);
  if (!pieces.ok()) amax[amax.numel() - 1] = 1.0f;
  if (collective) {  // on the group's device (NCCL needs CUDA tensors)
    at::Tensor wire = amax.to(options_.device);
    Status s = group_->AllReduceMax(wire)->Wait();
    if (!s.ok()) return s.WithPrefix(unit + ": FP8 amax all-reduce");
    amax = wire.to(at::kCPU).contiguous();
  }
  if (!pieces.ok()) return pieces.status().WithPrefix(unit);
  if (amax[amax.numel() - 1].item<float>() != 0.0f) {
    return Status::Unavailable(unit + ": another rank failed to read its slice (see its error)");
  }
  Fp8Scales scales;
  const float* am = amax.data_ptr<float>();
  int64_t k = 0;
  for (const auto& p : layout.params) {
    if (!p.fp8) continue;
    const float m = am[k++];
    if (!std::isfinite(m)) return Status::Corruption(unit + ": FP8 weight " + p.key + " has non-finite values");
    scales[p.key] = models::Fp8Scale(m);
    fp8_scale_inv_[p.key] = 1.0f / scales[p.key];
  }
  return WriteShard(layout, *pieces, scales, dst).WithPrefix(unit);
}

void ShardManager::Dequantize(int64_t layer, const models::WeightMap& block_views) {
  models::WeightMap* w = model_->mutable_weights();
  auto materialize = [&](const std::string& key, const at::Tensor& codes) {
    models::Fp8Tensor q;
    q.codes = codes;
    q.scale_inv = fp8_scale_inv_.at(key);
    (*w)[key] = models::DequantizeFp8(q, CausalWanS2V::WeightDtype(key, model_->dtype()));
  };
  for (const auto& p : layouts_[static_cast<size_t>(layer)].params) {
    if (p.fp8) materialize(p.key, block_views.at(p.key));
  }
  if (root_fp8_.empty()) return;
  for (const auto& [key, codes] : root_fp8_[static_cast<size_t>(layer)]) materialize(key, codes);
}

void ShardManager::ResetPeaks() {
  acct_.peak_unshard_in_use_bytes = acct_.unshard_in_use_bytes;
  acct_.peak_unshard_buffer_bytes = acct_.unshard_buffer_bytes;
  acct_.peak_bytes = acct_.resident_bytes();
  peak_buffers_in_use_ = static_cast<int>(pending_.size());
}

void ShardManager::NoteUsage() {
  acct_.unshard_buffer_bytes = buffers_allocated_ * acct_.block_bytes;
  acct_.staging_bytes = staging_allocated_ * layouts_.front().shard_bytes;
  acct_.unshard_in_use_bytes = static_cast<int64_t>(pending_.size()) * acct_.block_bytes;
  acct_.peak_unshard_in_use_bytes = std::max(acct_.peak_unshard_in_use_bytes, acct_.unshard_in_use_bytes);
  acct_.peak_unshard_buffer_bytes = std::max(acct_.peak_unshard_buffer_bytes, acct_.unshard_buffer_bytes);
  bool dequantized = false;
  for (const auto& kv : pending_) dequantized = dequantized || kv.second.installed;
  acct_.peak_bytes = std::max(acct_.peak_bytes, acct_.resident_bytes() + (dequantized ? acct_.dequant_bytes : 0));
  peak_buffers_in_use_ = std::max(peak_buffers_in_use_, static_cast<int>(pending_.size()));
}

void ShardManager::Issue(int64_t layer) {
  at::Tensor buffer;
  if (!free_buffers_.empty()) {
    buffer = std::move(free_buffers_.back());
    free_buffers_.pop_back();
  } else {
    TORCH_CHECK(buffers_allocated_ < options_.prefetch + 1, "ShardManager: unshard pool exhausted (",
                buffers_allocated_, " buffers in use)");
    buffer = at::empty({acct_.block_bytes}, at::TensorOptions().dtype(at::kByte).device(options_.device));
    ++buffers_allocated_;
  }
  Pending p;
  at::Tensor input;
  if (options_.offload_shards) {
    if (!free_staging_.empty()) {
      p.staging = std::move(free_staging_.back());
      free_staging_.pop_back();
    } else {
      p.staging = at::empty({layouts_.front().shard_bytes},
                            at::TensorOptions().dtype(at::kByte).device(options_.device));
      ++staging_allocated_;
    }
    // The staging slice may still be read by an earlier all-gather the compute stream has waited for.
    transfer_->WaitForCompute();
    transfer_->Copy(p.staging, host_shards_[static_cast<size_t>(layer)]);
    transfer_->MakeComputeWait(transfer_->Record());  // the all-gather is ordered after the compute stream
    input = p.staging;
  } else {
    input = shards_.select(0, layer);
  }
  p.work = group_->AllGatherIntoTensor(buffer, input);
  p.buffer = std::move(buffer);
  pending_[layer] = std::move(p);
  ++acct_.gathers;
  NoteUsage();
}

void ShardManager::Release(int64_t layer) {
  auto it = pending_.find(layer);
  if (it == pending_.end()) return;
  if (it->second.installed) {
    models::WeightMap* w = model_->mutable_weights();
    for (const auto& p : layouts_[static_cast<size_t>(layer)].params) w->erase(p.key);
    if (!root_fp8_.empty()) {
      for (const auto& [key, codes] : root_fp8_[static_cast<size_t>(layer)]) {
        (*w)[key] = at::empty({0}, at::TensorOptions()
                                       .dtype(CausalWanS2V::WeightDtype(key, model_->dtype()))
                                       .device(options_.device));
      }
    }
  }
  free_buffers_.push_back(std::move(it->second.buffer));
  if (it->second.staging.defined()) free_staging_.push_back(std::move(it->second.staging));
  pending_.erase(it);
  NoteUsage();
}

void ShardManager::Drain(bool quiet) {
  Status first;
  while (!pending_.empty()) {
    auto it = pending_.begin();
    if (!it->second.installed) {
      Status s = it->second.work->Wait();
      if (!s.ok() && first.ok()) first = s.WithPrefix("FSDP all-gather of block " + std::to_string(it->first));
    }
    Release(it->first);
  }
  next_layer_ = 0;
  if (!quiet && !first.ok()) throw StatusError(first);
}

void ShardManager::Before(int64_t layer) {
  TORCH_CHECK(layer >= 0 && layer < num_layers_, "ShardManager: block index ", layer, " out of range");
  bool stale = layer != next_layer_;
  for (const auto& kv : pending_) stale = stale || kv.second.installed;
  if (stale && !pending_.empty()) Drain(/*quiet=*/false);
  if (!pending_.count(layer)) Issue(layer);
  const int64_t last = std::min<int64_t>(layer + options_.prefetch, num_layers_ - 1);
  for (int64_t j = layer + 1; j <= last; ++j) {
    if (!pending_.count(j)) Issue(j);
  }
  Pending& p = pending_.at(layer);
  Status s = p.work->Synchronize();
  if (!s.ok()) {
    const Status err = s.WithPrefix("FSDP all-gather of block " + std::to_string(layer));
    Drain(/*quiet=*/true);
    throw StatusError(err);
  }
  models::WeightMap* w = model_->mutable_weights();
  models::WeightMap views = ViewParams(layouts_[static_cast<size_t>(layer)], p.buffer);
  p.installed = true;  // first: a throw below (e.g. OOM while dequantising) must still be cleaned up by Release
  for (const auto& [key, view] : views) (*w)[key] = view;
  if (options_.fp8) Dequantize(layer, views);
  NoteUsage();
}

void ShardManager::After(int64_t layer) {
  Release(layer);
  next_layer_ = layer + 1 == num_layers_ ? 0 : layer + 1;
}

}  // namespace liveavatar::dist
