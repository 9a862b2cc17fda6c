// SequenceParallel: the model-side view of Ulysses sequence parallelism for the S2V DiT (issue 8). The DiT never
// calls collectives; when a SequenceParallel is installed (CausalWanS2V::set_sequence_parallel) it runs its blocks
// on this rank's chunk of the token sequence and asks this interface to
//   * Scatter: cut the full sequence [1, N, C] into P chunks of ceil(N / P) tokens (the last ones zero-padded)
//     and keep this rank's chunk (local, no communication);
//   * Gather: rebuild the full sequence from every rank's chunk and trim the padding (audio injector, head);
//   * Attention: turn local-sequence / all-heads q, k, v into full-sequence / local-heads tensors (all-to-all),
//     call `inner` on them (RoPE, KV cache writes and softmax attention happen there) and send the result back.
// Heads need not divide evenly: the first H mod P ranks own one head more (40 heads on 3 ranks: 14, 13, 13),
// rank r owning heads [HeadOffset(H), HeadOffset(H) + LocalHeads(H)).
//
// The arithmetic (chunking, padding, head split) lives here and is shared by every implementation; the
// communicating side is dist::MakeUlysses (include/liveavatar/dist/ulysses.h).
// Thread safety: an implementation issues collectives and is used by one thread; every rank of its group must
// make the same calls in the same order with the same N.
#pragma once

#include <cstdint>
#include <functional>

#include <ATen/core/Tensor.h>

namespace liveavatar::models::dit {

// Tokens per rank for a sequence of n tokens over `world` ranks: ceil(n / world). REQUIRES: n >= 0, world >= 1.
int64_t SequenceChunkLength(int64_t n, int64_t world);
// n rounded up to a multiple of `world` (= world · SequenceChunkLength(n, world)).
int64_t PaddedSequenceLength(int64_t n, int64_t world);
// Heads of rank `rank` when `heads` heads are split over `world` ranks: heads / world, plus one for the first
// heads mod world ranks. REQUIRES: 0 <= rank < world.
int64_t LocalHeadCount(int64_t heads, int64_t world, int64_t rank);
// First head of rank `rank` (sum of LocalHeadCount over the ranks before it).
int64_t LocalHeadOffset(int64_t heads, int64_t world, int64_t rank);

class SequenceParallel {
 public:
  // Receives full-sequence / local-heads q, k, v [1, n, LocalHeads(H), D] (n = the true length, padding
  // removed) and returns the attention output of the same shape.
  using AttentionInner = std::function<at::Tensor(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v)>;

  virtual ~SequenceParallel() = default;

  // Ranks of the sequence-parallel group (P) and this rank's position in it.
  virtual int world() const = 0;
  virtual int rank() const = 0;

  int64_t LocalHeads(int64_t heads) const { return LocalHeadCount(heads, world(), rank()); }
  int64_t HeadOffset(int64_t heads) const { return LocalHeadOffset(heads, world(), rank()); }
  // ceil(n / P): tokens of every rank's chunk (padding included).
  int64_t ChunkLength(int64_t n) const { return SequenceChunkLength(n, world()); }

  // x [1, n, ...] -> this rank's chunk [1, ChunkLength(n), ...] of x zero-padded to a multiple of P tokens
  // (contiguous). Local: no communication.
  at::Tensor Scatter(const at::Tensor& x) const;

  // Collective. local [1, ChunkLength(n), ...] (this rank's chunk) -> the full sequence [1, n, ...] (padding
  // trimmed), identical on every rank.
  virtual at::Tensor Gather(const at::Tensor& local, int64_t n) const = 0;

  // Collective. q, k, v [1, ChunkLength(n), H, D] (this rank's chunk, all heads) -> all-to-all ->
  // inner(q, k, v [1, n, LocalHeads(H), D]) -> all-to-all -> [1, ChunkLength(n), H, D] in inner's output dtype.
  // Rows of padding tokens in the result are unspecified.
  virtual at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t n,
                               const AttentionInner& inner) const = 0;
};

}  // namespace liveavatar::models::dit
