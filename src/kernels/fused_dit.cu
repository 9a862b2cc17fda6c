// Fused DiT kernels (include/liveavatar/kernels/fused_dit.h). One small translation unit, no LibTorch headers:
// compiled by nvcc in the CI compile check and linked into la_dit in CUDA LibTorch builds.
#include "liveavatar/kernels/fused_dit.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace liveavatar::kernels {
namespace {

using bf16 = __nv_bfloat16;

template <typename T>
__device__ __forceinline__ float ToF(T v);
template <>
__device__ __forceinline__ float ToF<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float ToF<bf16>(bf16 v) {
  return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T FromF(float v);
template <>
__device__ __forceinline__ float FromF<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ bf16 FromF<bf16>(float v) {
  return __float2bfloat16_rn(v);
}

// Rounds through T (what eager does when it stores an intermediate in T).
template <typename T>
__device__ __forceinline__ float RoundVia(float v) {
  return ToF<T>(FromF<T>(v));
}

// Complex rotation (a + ib)·(c + is) in fp64 with every product rounded (eager runs each op as its own kernel).
__device__ __forceinline__ double RotRe(double a, double b, double c, double s) {
  return __dsub_rn(__dmul_rn(a, c), __dmul_rn(b, s));
}
__device__ __forceinline__ double RotIm(double a, double b, double c, double s) {
  return __dadd_rn(__dmul_rn(a, s), __dmul_rn(b, c));
}

constexpr int kWarp = 32;

// Sum over the block; every thread gets the total. `scratch` holds >= 32 floats and may be reused right after.
__device__ float BlockSum(float v, float* scratch) {
  for (int off = kWarp / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / kWarp;
  if (threadIdx.x % kWarp == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.f;
  const int warps = (blockDim.x + kWarp - 1) / kWarp;
  for (int i = 0; i < warps; ++i) total += scratch[i];
  __syncthreads();
  return total;
}

// One block per row: LayerNorm (two-pass over a shared-memory copy of the row), then modulation.
template <typename TIn, typename TOut>
__global__ void ModulateKernel(const TIn* __restrict__ x, const float* __restrict__ shift,
                               const float* __restrict__ scale, int64_t mod_stride, TOut* __restrict__ out,
                               int64_t rows_per_frame, int dim, float eps) {
  extern __shared__ float smem[];
  float* row_cache = smem;
  float* scratch = smem + dim;
  const int64_t row = blockIdx.x;
  const TIn* xr = x + row * dim;
  float s = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = ToF<TIn>(xr[i]);
    row_cache[i] = v;
    s += v;
  }
  const float mean = BlockSum(s, scratch) / static_cast<float>(dim);
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float d = row_cache[i] - mean;
    ss += d * d;
  }
  const float rstd = rsqrtf(BlockSum(ss, scratch) / static_cast<float>(dim) + eps);
  const int64_t frame = row / rows_per_frame;
  const float* sh = shift + frame * mod_stride;
  const float* sc = scale + frame * mod_stride;
  TOut* o = out + row * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float n = __fmul_rn(row_cache[i] - mean, rstd);
    // Eager: (LN · (1 + scale)) + shift, each op rounded to fp32 (no contraction into FMAs).
    o[i] = FromF<TOut>(__fadd_rn(__fmul_rn(n, __fadd_rn(1.f, sc[i])), sh[i]));
  }
}

// One block per token: RMSNorm over the row, weight, optional RoPE per (head, pair).
template <typename TIn, typename TW, typename TOut>
__global__ void RmsNormRopeKernel(const TIn* __restrict__ x, const TW* __restrict__ w, TOut* __restrict__ out,
                                  int64_t seq_len, int dim, int half_head, float eps, const double* __restrict__ cos,
                                  const double* __restrict__ sin) {
  extern __shared__ float smem[];
  float* row_cache = smem;
  float* scratch = smem + dim;
  const int64_t row = blockIdx.x;
  const TIn* xr = x + row * dim;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = ToF<TIn>(xr[i]);
    row_cache[i] = v;
    ss += v * v;
  }
  const float r = rsqrtf(BlockSum(ss, scratch) / static_cast<float>(dim) + eps);
  TOut* o = out + row * dim;
  const int pairs = dim / 2;
  const int64_t table_row = (row % seq_len) * half_head;
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int e = 2 * p;
    const float n0 = RoundVia<TIn>(__fmul_rn(row_cache[e], r));
    const float n1 = RoundVia<TIn>(__fmul_rn(row_cache[e + 1], r));
    const float y0 = RoundVia<TOut>(__fmul_rn(n0, ToF<TW>(w[e])));
    const float y1 = RoundVia<TOut>(__fmul_rn(n1, ToF<TW>(w[e + 1])));
    if (cos != nullptr) {
      const int64_t t = table_row + p % half_head;
      const double c = cos[t], s = sin[t];
      o[e] = FromF<TOut>(static_cast<float>(RotRe(y0, y1, c, s)));
      o[e + 1] = FromF<TOut>(static_cast<float>(RotIm(y0, y1, c, s)));
    } else {
      o[e] = FromF<TOut>(y0);
      o[e + 1] = FromF<TOut>(y1);
    }
  }
}

template <typename T>
__global__ void RopeKernel(const T* __restrict__ x, T* __restrict__ out, int64_t total_pairs, int64_t seq_len,
                           int64_t heads, int64_t half_head, const double* __restrict__ cos,
                           const double* __restrict__ sin) {
  const int64_t pairs_per_token = heads * half_head;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < total_pairs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t l = (p / pairs_per_token) % seq_len;
    const int64_t t = l * half_head + p % half_head;
    const double a = ToF<T>(x[2 * p]), b = ToF<T>(x[2 * p + 1]);
    const double c = cos[t], s = sin[t];
    out[2 * p] = FromF<T>(static_cast<float>(RotRe(a, b, c, s)));
    out[2 * p + 1] = FromF<T>(static_cast<float>(RotIm(a, b, c, s)));
  }
}

template <typename TY>
__global__ void GatedResidualKernel(const float* __restrict__ x, const TY* __restrict__ y,
                                    const float* __restrict__ gate, int64_t gate_stride, float* out, int64_t total,
                                    int64_t rows_per_frame, int64_t dim) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / dim;
    const float g = gate[(row / rows_per_frame) * gate_stride + (i - row * dim)];
    out[i] = __fadd_rn(x[i], __fmul_rn(ToF<TY>(y[i]), g));
  }
}

constexpr int kElementwiseThreads = 256;
constexpr int64_t kMaxElementwiseBlocks = 65535;

// Threads for a row kernel: about 8 elements per thread, a multiple of the warp size, 64..1024.
int RowThreads(int64_t dim) {
  int64_t t = (dim / 8 + kWarp - 1) / kWarp * kWarp;
  if (t < 64) t = 64;
  if (t > 1024) t = 1024;
  return static_cast<int>(t);
}

size_t RowSmemBytes(int64_t dim) { return static_cast<size_t>(dim + kWarp) * sizeof(float); }

int ElementwiseBlocks(int64_t n) {
  int64_t b = (n + kElementwiseThreads - 1) / kElementwiseThreads;
  if (b > kMaxElementwiseBlocks) b = kMaxElementwiseBlocks;
  return static_cast<int>(b < 1 ? 1 : b);
}

int LastError() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? 0 : static_cast<int>(e);
}

constexpr int64_t kMaxGridX = 2147483647;

bool RowsOk(int64_t rows, int64_t dim) { return rows > 0 && rows <= kMaxGridX && dim > 0 && dim <= kFusedMaxRowDim; }

template <typename TIn, typename TOut>
int LaunchModulateT(const void* x, const float* shift, const float* scale, int64_t stride, void* out, int64_t rows,
                    int64_t rows_per_frame, int64_t dim, float eps, cudaStream_t s) {
  ModulateKernel<TIn, TOut><<<static_cast<unsigned>(rows), RowThreads(dim), RowSmemBytes(dim), s>>>(
      static_cast<const TIn*>(x), shift, scale, stride, static_cast<TOut*>(out), rows_per_frame,
      static_cast<int>(dim), eps);
  return LastError();
}

template <typename TIn, typename TW, typename TOut>
int LaunchRmsNormT(const void* x, const void* w, void* out, int64_t tokens, int64_t seq_len, int64_t dim,
                   int64_t half_head, float eps, const double* cos, const double* sin, cudaStream_t s) {
  RmsNormRopeKernel<TIn, TW, TOut><<<static_cast<unsigned>(tokens), RowThreads(dim), RowSmemBytes(dim), s>>>(
      static_cast<const TIn*>(x), static_cast<const TW*>(w), static_cast<TOut*>(out), seq_len, static_cast<int>(dim),
      static_cast<int>(half_head), eps, cos, sin);
  return LastError();
}

}  // namespace

int LaunchModulateLayerNorm(const void* x, FusedDtype x_dtype, const float* shift, const float* scale,
                            int64_t mod_row_stride, void* out, FusedDtype out_dtype, int64_t frames,
                            int64_t rows_per_frame, int64_t dim, float eps, void* stream) {
  if (frames <= 0 || rows_per_frame <= 0 || !RowsOk(frames * rows_per_frame, dim)) return kFusedUnsupported;
  const int64_t rows = frames * rows_per_frame;
  auto s = static_cast<cudaStream_t>(stream);
  const bool in_bf = x_dtype == FusedDtype::kBFloat16, out_bf = out_dtype == FusedDtype::kBFloat16;
  const int64_t st = mod_row_stride, rpf = rows_per_frame;
  if (in_bf && out_bf) return LaunchModulateT<bf16, bf16>(x, shift, scale, st, out, rows, rpf, dim, eps, s);
  if (in_bf) return LaunchModulateT<bf16, float>(x, shift, scale, st, out, rows, rpf, dim, eps, s);
  if (out_bf) return LaunchModulateT<float, bf16>(x, shift, scale, st, out, rows, rpf, dim, eps, s);
  return LaunchModulateT<float, float>(x, shift, scale, st, out, rows, rpf, dim, eps, s);
}

int LaunchRmsNormRope(const void* x, FusedDtype x_dtype, const void* weight, FusedDtype w_dtype, void* out,
                      int64_t tokens, int64_t seq_len, int64_t dim, int64_t half_head, float eps, const double* cos,
                      const double* sin, void* stream) {
  if (!RowsOk(tokens, dim) || dim % 2 != 0 || seq_len <= 0 || tokens % seq_len != 0) return kFusedUnsupported;
  if ((cos == nullptr) != (sin == nullptr)) return kFusedUnsupported;
  if (cos != nullptr && (half_head <= 0 || dim % (2 * half_head) != 0)) return kFusedUnsupported;
  if (cos == nullptr) half_head = 1;
  auto s = static_cast<cudaStream_t>(stream);
  const bool x_bf = x_dtype == FusedDtype::kBFloat16, w_bf = w_dtype == FusedDtype::kBFloat16;
  const int64_t len = seq_len, hh = half_head;
  if (x_bf && w_bf) return LaunchRmsNormT<bf16, bf16, bf16>(x, weight, out, tokens, len, dim, hh, eps, cos, sin, s);
  if (x_bf) return LaunchRmsNormT<bf16, float, float>(x, weight, out, tokens, len, dim, hh, eps, cos, sin, s);
  if (w_bf) return LaunchRmsNormT<float, bf16, float>(x, weight, out, tokens, len, dim, hh, eps, cos, sin, s);
  return LaunchRmsNormT<float, float, float>(x, weight, out, tokens, len, dim, hh, eps, cos, sin, s);
}

int LaunchRope(const void* x, void* out, FusedDtype dtype, int64_t batch, int64_t seq_len, int64_t heads,
               int64_t half_head, const double* cos, const double* sin, void* stream) {
  if (batch <= 0 || seq_len <= 0 || heads <= 0 || half_head <= 0 || cos == nullptr || sin == nullptr) {
    return kFusedUnsupported;
  }
  const int64_t pairs = batch * seq_len * heads * half_head;
  auto s = static_cast<cudaStream_t>(stream);
  const int blocks = ElementwiseBlocks(pairs);
  if (dtype == FusedDtype::kBFloat16) {
    RopeKernel<bf16><<<blocks, kElementwiseThreads, 0, s>>>(static_cast<const bf16*>(x), static_cast<bf16*>(out),
                                                            pairs, seq_len, heads, half_head, cos, sin);
  } else {
    RopeKernel<float><<<blocks, kElementwiseThreads, 0, s>>>(static_cast<const float*>(x), static_cast<float*>(out),
                                                             pairs, seq_len, heads, half_head, cos, sin);
  }
  return LastError();
}

int LaunchGatedResidual(const float* x, const void* y, FusedDtype y_dtype, const float* gate, int64_t gate_row_stride,
                        float* out, int64_t frames, int64_t rows_per_frame, int64_t dim, void* stream) {
  if (frames <= 0 || rows_per_frame <= 0 || dim <= 0) return kFusedUnsupported;
  const int64_t total = frames * rows_per_frame * dim;
  auto s = static_cast<cudaStream_t>(stream);
  const int blocks = ElementwiseBlocks(total);
  if (y_dtype == FusedDtype::kBFloat16) {
    GatedResidualKernel<bf16><<<blocks, kElementwiseThreads, 0, s>>>(x, static_cast<const bf16*>(y), gate,
                                                                     gate_row_stride, out, total, rows_per_frame, dim);
  } else {
    GatedResidualKernel<float><<<blocks, kElementwiseThreads, 0, s>>>(x, static_cast<const float*>(y), gate,
                                                                      gate_row_stride, out, total, rows_per_frame, dim);
  }
  return LastError();
}

const char* FusedErrorString(int code) {
  if (code == 0) return "success";
  if (code == kFusedUnsupported) return "unsupported shape or dtype for the fused kernel";
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}

}  // namespace liveavatar::kernels
