#include "liveavatar/models/dit/block_offload.h"

#include <algorithm>
#include <sstream>

#include <ATen/ATen.h>

#include "liveavatar/models/dit/weights.h"

namespace liveavatar::models::dit {

namespace {

int64_t SpecBytes(const WeightSpec& s, c10::ScalarType model_dtype) {
  int64_t n = 1;
  for (int64_t d : s.shape) n *= d;
  return n * static_cast<int64_t>(c10::elementSize(CausalWanS2V::WeightDtype(s.key, model_dtype)));
}

Status CheckOptions(const OffloadOptions& options) {
  if (options.lookahead < 0) {
    return Status::InvalidArgument("--offload_model: lookahead must be >= 0, got " +
                                   std::to_string(options.lookahead));
  }
  if (options.dtype != at::kFloat && options.dtype != at::kBFloat16) {
    return Status::InvalidArgument(std::string("BlockOffloader: unsupported model dtype ") +
                                   c10::toString(options.dtype) + " (use float32 or bfloat16)");
  }
  return Status::Ok();
}

}  // namespace

OffloadAccounting BlockOffloader::Plan(const DitConfig& config, const OffloadOptions& options) {
  OffloadAccounting a;
  a.num_blocks = config.num_layers;
  std::vector<int64_t> per_layer(static_cast<size_t>(std::max<int64_t>(config.num_layers, 0)), 0);
  for (const auto& s : DitWeightSpecs(config)) {
    const int64_t i = BlockIndex(s.key);
    if (i >= 0 && i < config.num_layers) {
      per_layer[static_cast<size_t>(i)] += SpecBytes(s, options.dtype);
    } else {
      a.root_bytes += SpecBytes(s, options.dtype);
    }
  }
  for (int64_t b : per_layer) {
    a.block_bytes = std::max(a.block_bytes, b);
    a.host_block_bytes += b;
  }
  a.host_reserved_bytes = a.host_block_bytes;
  a.host_pinned = options.pin_memory && runtime::HostPinningAvailable() && options.device.is_cuda();
  const int blocks = static_cast<int>(std::min<int64_t>(options.lookahead + 1, config.num_layers));
  a.peak_device_blocks = blocks;
  a.peak_device_block_bytes = blocks * a.block_bytes;
  return a;
}

BlockOffloader::BlockOffloader(const OffloadOptions& options) : options_(options) {}

BlockOffloader::~BlockOffloader() {
  // Device copies may still be in flight on the transfer stream: let them finish before their memory goes.
  if (stream_) stream_->Synchronize();
  resident_.clear();
}

StatusOr<std::unique_ptr<BlockOffloader>> BlockOffloader::Create(const DitConfig& config, WeightMap weights,
                                                                  const OffloadOptions& options) {
  LA_RETURN_IF_ERROR(config.Validate());
  LA_RETURN_IF_ERROR(CheckOptions(options));
  std::unique_ptr<BlockOffloader> m(new BlockOffloader(options));
  m->num_layers_ = config.num_layers;
  m->keys_.resize(static_cast<size_t>(config.num_layers));
  m->host_.resize(static_cast<size_t>(config.num_layers));
  m->layer_bytes_.assign(static_cast<size_t>(config.num_layers), 0);

  // Strict check of the block keys (the non-block ones are checked by CreateWithExternalBlocks).
  std::vector<WeightSpec> block_specs;
  std::set<std::string> known;
  std::vector<std::string> missing, mismatched, unexpected;
  for (const auto& s : DitWeightSpecs(config)) {
    if (BlockIndex(s.key) < 0) continue;
    known.insert(s.key);
    auto it = weights.find(s.key);
    if (it == weights.end()) {
      missing.push_back(s.key);
    } else if (it->second.sizes() != at::IntArrayRef(s.shape)) {
      std::ostringstream o;
      o << s.key << ": " << it->second.sizes() << " vs expected " << at::IntArrayRef(s.shape);
      mismatched.push_back(o.str());
    } else {
      block_specs.push_back(s);
    }
  }
  for (const auto& kv : weights) {
    if (BlockIndex(kv.first) >= 0 && !known.count(kv.first)) unexpected.push_back(kv.first);
  }
  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
    std::ostringstream o;
    o << "BlockOffloader: block weights do not match the DiT config:";
    for (const auto& k : missing) o << "\n  missing " << k;
    for (const auto& k : mismatched) o << "\n  shape mismatch " << k;
    for (const auto& k : unexpected) o << "\n  unexpected " << k;
    return Status::InvalidArgument(o.str());
  }

  // Host slabs in the final dtypes; each source tensor is released once copied.
  std::vector<runtime::HostTensorSpec> host_specs;
  for (const auto& s : block_specs) host_specs.push_back({s.shape, CausalWanS2V::WeightDtype(s.key, options.dtype)});
  const bool pin = options.pin_memory && options.device.is_cuda();
  m->host_alloc_ = runtime::AllocateHostTensors(host_specs, pin);
  OffloadAccounting& a = m->acct_;
  for (size_t j = 0; j < block_specs.size(); ++j) {
    const auto& s = block_specs[j];
    const size_t layer = static_cast<size_t>(BlockIndex(s.key));
    at::Tensor& host = m->host_alloc_.tensors[j];
    auto it = weights.find(s.key);
    host.copy_(it->second.to(at::kCPU));
    weights.erase(it);
    m->keys_[layer].push_back(s.key);
    m->host_[layer].push_back(host);
    m->layer_bytes_[layer] += runtime::TensorBytes(host);
  }
  a.num_blocks = config.num_layers;
  for (int64_t b : m->layer_bytes_) {
    a.block_bytes = std::max(a.block_bytes, b);
    a.host_block_bytes += b;
  }
  a.host_reserved_bytes = m->host_alloc_.reserved_bytes;
  a.host_pinned = m->host_alloc_.pinned;

  LA_ASSIGN_OR_RETURN(CausalWanS2V model,
                      CausalWanS2V::CreateWithExternalBlocks(config, std::move(weights), options.dtype,
                                                             options.device));
  m->model_ = std::make_unique<CausalWanS2V>(std::move(model));
  for (const auto& kv : m->model_->weights()) a.root_bytes += runtime::TensorBytes(kv.second);
  m->stream_ = std::make_unique<runtime::TransferStream>(options.device);
  BlockOffloader* self = m.get();
  m->model_->set_block_hooks({[self](int64_t i) { self->Before(i); }, [self](int64_t i) { self->After(i); }});
  return m;
}

void BlockOffloader::ResetPeaks() {
  acct_.peak_device_block_bytes = acct_.device_block_bytes;
  acct_.peak_device_blocks = static_cast<int>(resident_.size());
}

void BlockOffloader::NoteUsage() {
  int64_t bytes = 0;
  for (const auto& kv : resident_) bytes += layer_bytes_[static_cast<size_t>(kv.first)];
  acct_.device_block_bytes = bytes;
  acct_.peak_device_block_bytes = std::max(acct_.peak_device_block_bytes, bytes);
  acct_.peak_device_blocks = std::max(acct_.peak_device_blocks, static_cast<int>(resident_.size()));
}

void BlockOffloader::Issue(int64_t layer) {
  const auto& host = host_[static_cast<size_t>(layer)];
  Resident r;
  r.tensors.reserve(host.size());
  // Allocated in compute-stream order; the transfer stream waits for the compute stream before writing them.
  for (const auto& h : host) {
    r.tensors.push_back(at::empty(h.sizes(), at::TensorOptions().dtype(h.scalar_type()).device(options_.device)));
  }
  stream_->WaitForCompute();
  for (size_t j = 0; j < host.size(); ++j) stream_->Copy(r.tensors[j], host[j]);
  r.ready = stream_->Record();
  resident_[layer] = std::move(r);
  ++acct_.copies;
  acct_.bytes_copied += layer_bytes_[static_cast<size_t>(layer)];
  NoteUsage();
}

void BlockOffloader::Drop(int64_t layer) {
  auto it = resident_.find(layer);
  if (it == resident_.end()) return;
  if (it->second.installed) {
    WeightMap* w = model_->mutable_weights();
    for (const auto& k : keys_[static_cast<size_t>(layer)]) w->erase(k);
  } else {
    // A prefetch that was never used: its copy must finish before the memory is reused by the compute stream.
    stream_->MakeComputeWait(it->second.ready);
  }
  resident_.erase(it);
  NoteUsage();
}

void BlockOffloader::Before(int64_t layer) {
  TORCH_CHECK(layer >= 0 && layer < num_layers_, "BlockOffloader: block index ", layer, " out of range");
  const int64_t window = std::min<int64_t>(options_.lookahead + 1, num_layers_);
  std::set<int64_t> wanted;
  for (int64_t k = 0; k < window; ++k) wanted.insert((layer + k) % num_layers_);
  // Leftovers of an abandoned call (or an out-of-order caller) first, so the peak stays within the window.
  std::vector<int64_t> stale;
  for (const auto& kv : resident_) {
    if (!wanted.count(kv.first)) stale.push_back(kv.first);
  }
  for (int64_t s : stale) Drop(s);
  for (int64_t k = 0; k < window; ++k) {
    const int64_t j = (layer + k) % num_layers_;
    if (!resident_.count(j)) Issue(j);
  }
  Resident& r = resident_.at(layer);
  stream_->MakeComputeWait(r.ready);
  if (!r.installed) {
    WeightMap* w = model_->mutable_weights();
    const auto& keys = keys_[static_cast<size_t>(layer)];
    for (size_t j = 0; j < keys.size(); ++j) (*w)[keys[j]] = r.tensors[j];
    r.installed = true;
  }
}

void BlockOffloader::After(int64_t layer) { Drop(layer); }

}  // namespace liveavatar::models::dit
