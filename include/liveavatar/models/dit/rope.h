// 3-D rotary position embedding of the S2V DiT (golden README §1.4; upstream rope_params + rope_precompute +
// rope_apply). head_dim d holds c = d/2 complex pairs split [c − 2⌊c/3⌋, ⌊c/3⌋, ⌊c/3⌋] over (frame, row, column).
// Angle of pair i of an axis with d_a dims at position p: p · 10000^(−2i/d_a), evaluated in float64; cos/sin are
// rounded to float16 (upstream stores them in a complex32 tensor); the rotation runs in float64. A negative
// position uses the conjugate factor.
//
// Thread safety: pure functions.
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>

namespace liveavatar::models::dit {

// numpy.linspace(start, stop, num).astype(int) (truncation toward zero).
std::vector<int64_t> LinspaceInt(double start, double stop, int64_t num);

// Positions of one token group on one axis, from upstream's grid triple (start, count = end − start, range):
// start >= 0: linspace(start, start + range − 1, count); start < 0: −linspace(−start, −start − range + 1, count)
// (negative = conjugate factor).
std::vector<int64_t> RopeAxisPositions(int64_t start, int64_t count, int64_t range);

// A token group: tokens ordered frame-major, then row, then column over the given per-axis positions.
struct RopeGroup {
  std::vector<int64_t> frames, rows, cols;
  int64_t size() const { return static_cast<int64_t>(frames.size() * rows.size() * cols.size()); }
};

// Noisy block tokens: frames [f0, f0 + num_frames), rows [0, hp), columns [0, wp).
RopeGroup BlockRopeGroup(int64_t f0, int64_t num_frames, int64_t hp, int64_t wp);

// Sink (cond) token groups for a token grid hp x wp (latent H = 2·hp for patch 2) and the reference frame
// position `ref_frame` (30 + R): [reference, FramePack post, 2x, 4x] with the motion bucket sizes (1, 2, 16);
// `n2_h/n2_w`, `n4_h/n4_w` are the 2x/4x conv output sizes (latent H/4, H/8).
std::vector<RopeGroup> SinkRopeGroups(int64_t ref_frame, int64_t hp, int64_t wp, int64_t n2_h, int64_t n2_w,
                                      int64_t n4_h, int64_t n4_w);

// Rolling-sink shift R of the reference frame in a streaming call: max(0, f0 − (ref_frame − d)), with f0 the
// block's absolute first latent frame and d the call's relative_dist.
int64_t RollingSinkShift(int64_t f0, int64_t relative_dist, int64_t ref_frame);

// Per-token factors: cos, sin [L, c] float64 (fp16-rounded values) on `device`, groups concatenated in order.
struct RopeFactors {
  at::Tensor cos, sin;
  int64_t size() const { return cos.size(0); }
};
RopeFactors ComputeRopeFactors(const std::vector<RopeGroup>& groups, int64_t head_dim, const c10::Device& device);

// Rotates x [B, L, H, head_dim] by `f` (L rows). Computes in float64, returns x's dtype (fp32 in the reference).
at::Tensor ApplyRope(const at::Tensor& x, const RopeFactors& f);

// Debug layout of the factors, [1, L, heads, c, 2] (cos, sin) as float32 (the fixtures' dbg.rope.*).
at::Tensor RopeFactorsDebug(const RopeFactors& f, int64_t num_heads);

}  // namespace liveavatar::models::dit
