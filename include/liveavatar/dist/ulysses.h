// Ulysses sequence parallelism (DeepSpeed-Ulysses; upstream wan/distributed/ulysses.py) over a Communicator: the
// communicating implementation of models::dit::SequenceParallel (include/liveavatar/models/dit/parallel.h).
//
//   Attention: q, k, v [1, N/P, H, D] --all-to-all (heads scattered, sequence gathered)--> [1, N, H_r, D]
//              --inner (RoPE, local-head KV cache, softmax attention)--> [1, N, H_r, D]
//              --all-to-all (sequence scattered, heads gathered)--> [1, N/P, H, D]
//   Gather:    all-gather of the equal (padded) chunks, trimmed to N.
// The sequence is padded to a multiple of P (zeros) and the padding is removed before `inner` sees it. Heads need
// not divide by P: rank r owns LocalHeadCount(H, P, r) heads, exchanged with an uneven all-to-all (split sizes
// in heads; 40 heads on 3 ranks: 14, 13, 13). q, k and v travel in one all-to-all when they share a dtype.
//
// Errors: a failed collective (timeout, lost peer) throws StatusError carrying the communicator's Status (the
// model's forward has no Status path; the caller catches it at the rank's top level and exits).
// Thread safety: as the Communicator (one thread); every rank of `group` runs the same model calls.
#pragma once

#include <memory>

#include "liveavatar/dist/communicator.h"
#include "liveavatar/models/dit/parallel.h"

namespace liveavatar::dist {

// The ranks of `group` form one sequence-parallel group (P = group->Size()). Tensors must live on the
// communicator's device (CPU for Gloo, this rank's GPU for NCCL). REQUIRES: group != nullptr.
std::shared_ptr<models::dit::SequenceParallel> MakeUlysses(CommunicatorPtr group);

}  // namespace liveavatar::dist
