// Fused CUDA kernels for the element-wise / row-wise pieces of a Wan DiT block that eager mode splits into many
// launches (docs/performance.md, "Fused kernels"). Raw-pointer launchers with no LibTorch or CUDA types in the
// interface, so src/kernels/fused_dit.cu compiles with nvcc alone (the CI compile check) and the ATen adapter
// (src/models/dit/fused_ops_cuda.cpp) is the only caller in the engine.
//
// Contract shared by every launcher:
// - All pointers are device pointers of the current CUDA device; tensors are dense row-major unless a row
//   stride is given. `stream` is a cudaStream_t passed as void* (nullptr = the legacy default stream).
// - Arithmetic is fp32 (RoPE rotation fp64, like the eager reference); bf16 inputs/outputs are rounded to
//   nearest-even exactly where the eager composition rounds, so results differ from eager only by reduction
//   order (and fp32 vs fp64 in nothing but the tables' products).
// - Return 0 on success, kFusedUnsupported for shapes/dtypes the kernels do not handle (nothing launched: the
//   caller falls back to eager), or a positive cudaError_t from the launch.
// Thread safety: launchers are stateless; concurrent calls on different streams are fine.
#pragma once

#include <cstdint>

namespace liveavatar::kernels {

enum class FusedDtype : int { kFloat32 = 0, kBFloat16 = 1 };

constexpr int kFusedUnsupported = -1;

// Largest row width (elements) the row kernels cache in shared memory: 48 KiB of fp32 minus a 32-float
// reduction pad.
constexpr int64_t kFusedMaxRowDim = 12 * 1024 - 32;

// Modulated LayerNorm: out[r, :] = LN(x[r, :], eps, no affine)·(1 + scale[f, :]) + shift[f, :] with
// f = r / rows_per_frame, over x [frames·rows_per_frame, dim]. shift/scale are fp32 [frames, dim] rows
// `mod_row_stride` elements apart (last dim contiguous). The fp32 result is rounded to `out_dtype` once.
int LaunchModulateLayerNorm(const void* x, FusedDtype x_dtype, const float* shift, const float* scale,
                            int64_t mod_row_stride, void* out, FusedDtype out_dtype, int64_t frames,
                            int64_t rows_per_frame, int64_t dim, float eps, void* stream);

// WanRMSNorm over rows of x [tokens, dim] followed (when cos/sin are non-null) by RoPE on each head:
//   n = round_x(x·rsqrt(mean(x²) + eps)); y = round_out(n·weight)                (== models::RmsNorm)
//   out pair (y[2i], y[2i+1]) of head h rotated by (cos, sin)[t mod seq_len, i]   (== dit::ApplyRope)
// with out_dtype = promote(x_dtype, w_dtype) (fp32 unless both are bf16), dim = heads·2·half_head and the
// tables fp64 [seq_len, half_head] (rope.h RopeFactors layout). tokens = batch·seq_len.
int LaunchRmsNormRope(const void* x, FusedDtype x_dtype, const void* weight, FusedDtype w_dtype, void* out,
                      int64_t tokens, int64_t seq_len, int64_t dim, int64_t half_head, float eps, const double* cos,
                      const double* sin, void* stream);

// RoPE alone (== dit::ApplyRope): x, out [batch, seq_len, heads, 2·half_head] in `dtype`, tables as above.
int LaunchRope(const void* x, void* out, FusedDtype dtype, int64_t batch, int64_t seq_len, int64_t heads,
               int64_t half_head, const double* cos, const double* sin, void* stream);

// Gated residual: out[r, :] = x[r, :] + y[r, :]·gate[f, :] (fp32, f = r / rows_per_frame) over
// [frames·rows_per_frame, dim]; x/out fp32 (out may alias x), y in `y_dtype`, gate fp32 rows `gate_row_stride`
// elements apart.
int LaunchGatedResidual(const float* x, const void* y, FusedDtype y_dtype, const float* gate, int64_t gate_row_stride,
                        float* out, int64_t frames, int64_t rows_per_frame, int64_t dim, void* stream);

// Human-readable text for a launcher's return code.
const char* FusedErrorString(int code);

}  // namespace liveavatar::kernels
