#include "liveavatar/runtime/block_offload.h"

#include <algorithm>
#include <numeric>
#include <optional>

#include <ATen/ATen.h>

#if LIVEAVATAR_HAVE_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace liveavatar::runtime {

namespace {

constexpr int64_t kAlign = 64;

int64_t AlignUp(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

int64_t PowerOfTwoAtLeast(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

// A slab holds what was packed into it; the pinned allocator rounds it up to a power of two anyway.
int64_t SlabSize(int64_t fill, bool pinned) {
  const int64_t n = std::max<int64_t>(fill, 1);
  return pinned ? PowerOfTwoAtLeast(n) : n;
}

int64_t SpecBytes(const HostTensorSpec& s) {
  int64_t n = 1;
  for (int64_t d : s.shape) n *= d;
  return n * static_cast<int64_t>(c10::elementSize(s.dtype));
}

}  // namespace

bool HostPinningAvailable() {
#if LIVEAVATAR_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

int64_t TensorBytes(const at::Tensor& t) {
  return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0;
}

HostAllocation AllocateHostTensors(const std::vector<HostTensorSpec>& specs, bool pinned, int64_t slab_bytes) {
  TORCH_CHECK(slab_bytes > 0, "AllocateHostTensors: slab_bytes must be > 0");
  HostAllocation out;
  out.pinned = pinned && HostPinningAvailable();
  std::vector<int64_t> bytes(specs.size());
  int64_t largest = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    bytes[i] = SpecBytes(specs[i]);
    largest = std::max(largest, AlignUp(bytes[i]));
    out.used_bytes += bytes[i];
  }
  // First fit, largest first (ties in spec order, so the layout is deterministic).
  std::vector<size_t> order(specs.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return bytes[a] > bytes[b]; });
  struct Packing {
    int64_t slab = 0;
    std::vector<int64_t> fill;                          // bytes used per slab
    std::vector<std::pair<int64_t, int64_t>> where;     // per spec: (slab, offset)
    int64_t reserved = 0;
  };
  auto pack = [&](int64_t slab) {
    Packing p;
    p.slab = slab;
    p.where.resize(specs.size());
    for (size_t i : order) {
      const int64_t need = AlignUp(bytes[i]);
      size_t s = 0;
      while (s < p.fill.size() && p.fill[s] + need > slab) ++s;
      if (s == p.fill.size()) p.fill.push_back(0);
      p.where[i] = {static_cast<int64_t>(s), p.fill[s]};
      p.fill[s] += need;
    }
    for (int64_t f : p.fill) p.reserved += SlabSize(f, out.pinned);
    return p;
  };
  // Slab sizes from the smallest power of two that fits the largest tensor up to 8x that: the least reserved
  // wins (e.g. 130 MB KV rings waste half of a 256 MB slab but ~1% of a 1 GB one).
  const int64_t base = PowerOfTwoAtLeast(std::max(slab_bytes, largest));
  Packing best = pack(base);
  for (int k = 1; k <= 3 && !specs.empty(); ++k) {
    Packing p = pack(base << k);
    if (p.reserved < best.reserved) best = std::move(p);
  }
  const std::vector<int64_t>& fill = best.fill;
  const auto& where = best.where;
  auto options = at::TensorOptions().dtype(at::kByte);
  if (out.pinned) options = options.pinned_memory(true);
  for (int64_t f : fill) {
    out.slabs.push_back(at::empty({SlabSize(f, out.pinned)}, options));
    out.reserved_bytes += out.slabs.back().numel();
  }
  out.tensors.resize(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& slab_t = out.slabs[static_cast<size_t>(where[i].first)];
    out.tensors[i] = slab_t.narrow(0, where[i].second, bytes[i]).view(specs[i].dtype).view(specs[i].shape);
  }
  return out;
}

#if LIVEAVATAR_HAVE_CUDA
struct TransferStream::Impl {
  c10::DeviceIndex index = 0;
  std::optional<c10::cuda::CUDAStream> side;
  c10::cuda::CUDAStream Compute() const { return c10::cuda::getCurrentCUDAStream(index); }
};
#else
struct TransferStream::Impl {};
#endif

TransferStream::TransferStream(const c10::Device& device) : device_(device), impl_(std::make_unique<Impl>()) {
#if LIVEAVATAR_HAVE_CUDA
  if (device_.is_cuda()) {
    impl_->index = device_.has_index() ? device_.index() : c10::cuda::current_device();
    impl_->side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, impl_->index);
  }
#endif
}

TransferStream::~TransferStream() {
  // Buffers the pending copies read or write are usually freed right after the stream (by its owner).
  Synchronize();
}

bool TransferStream::asynchronous() const {
#if LIVEAVATAR_HAVE_CUDA
  return impl_->side.has_value();
#else
  return false;
#endif
}

void TransferStream::WaitForCompute() {
#if LIVEAVATAR_HAVE_CUDA
  if (!impl_->side) return;
  at::cuda::CUDAEvent event;
  event.record(impl_->Compute());
  event.block(*impl_->side);
#endif
}

void TransferStream::Copy(const at::Tensor& dst, const at::Tensor& src) {
#if LIVEAVATAR_HAVE_CUDA
  if (impl_->side) {
    c10::cuda::CUDAStreamGuard guard(*impl_->side);
    dst.copy_(src, /*non_blocking=*/true);
    return;
  }
#endif
  dst.copy_(src);
}

TransferEvent TransferStream::Record() {
  TransferEvent e;
#if LIVEAVATAR_HAVE_CUDA
  if (impl_->side) {
    auto event = std::make_shared<at::cuda::CUDAEvent>();
    event->record(*impl_->side);
    e.impl_ = std::move(event);
  }
#endif
  return e;
}

void TransferStream::MakeComputeWait(const TransferEvent& event) {
#if LIVEAVATAR_HAVE_CUDA
  if (event.impl_ && impl_->side) static_cast<at::cuda::CUDAEvent*>(event.impl_.get())->block(impl_->Compute());
#else
  (void)event;
#endif
}

void TransferStream::Synchronize() {
#if LIVEAVATAR_HAVE_CUDA
  if (impl_->side) impl_->side->synchronize();
#endif
}

}  // namespace liveavatar::runtime
