#include "liveavatar/models/dit/parallel.h"

#include <algorithm>

#include <ATen/ATen.h>

namespace liveavatar::models::dit {

int64_t SequenceChunkLength(int64_t n, int64_t world) {
  TORCH_CHECK(n >= 0 && world >= 1, "SequenceChunkLength: n ", n, ", world ", world);
  return (n + world - 1) / world;
}

int64_t PaddedSequenceLength(int64_t n, int64_t world) { return SequenceChunkLength(n, world) * world; }

int64_t LocalHeadCount(int64_t heads, int64_t world, int64_t rank) {
  TORCH_CHECK(heads >= 0 && world >= 1 && rank >= 0 && rank < world, "LocalHeadCount: heads ", heads, ", world ",
              world, ", rank ", rank);
  return heads / world + (rank < heads % world ? 1 : 0);
}

int64_t LocalHeadOffset(int64_t heads, int64_t world, int64_t rank) {
  TORCH_CHECK(heads >= 0 && world >= 1 && rank >= 0 && rank <= world, "LocalHeadOffset: heads ", heads, ", world ",
              world, ", rank ", rank);
  return rank * (heads / world) + std::min(rank, heads % world);
}

at::Tensor SequenceParallel::Scatter(const at::Tensor& x) const {
  TORCH_CHECK(x.dim() >= 2 && x.size(0) == 1, "SequenceParallel::Scatter: x ", x.sizes(), " must be [1, N, ...]");
  const int64_t n = x.size(1);
  const int64_t chunk = ChunkLength(n);
  const int64_t begin = chunk * rank();
  const int64_t valid = std::max<int64_t>(0, std::min(chunk, n - begin));
  if (valid == chunk) return x.narrow(1, begin, chunk).contiguous();
  auto sizes = x.sizes().vec();
  sizes[1] = chunk;
  auto out = at::zeros(sizes, x.options());
  if (valid > 0) out.narrow(1, 0, valid).copy_(x.narrow(1, begin, valid));
  return out;
}

}  // namespace liveavatar::models::dit
