// FP8 (OCP e4m3fn, torch.float8_e4m3fn) storage for linear weights, after the reference's
// liveavatar/utils/fp8_linear.py: one per-tensor scale s = min(448 / max(amax|x|, 1e-12), 448) (fp32), codes =
// e4m3fn(clamp(x·s, ±448)) with round-to-nearest-even, and the reciprocal 1/s kept for dequantisation
// (x ≈ decode(code) · (1/s)). The reference's GEMM is torch._scaled_mm(x_fp8, W_fp8ᵀ, 1/s_x, 1/s_w, bias,
// out_dtype=bf16) with the same dynamic per-tensor scaling of the activation on every call.
//
// LibTorch 1.13 has no Float8 dtype, so codes live in uint8 tensors and the format is implemented here
// bit-exactly (c10::Float8_e4m3fn semantics of LibTorch >= 2.1):
//   code = s eeee mmm; e = 0: subnormal (m/8)·2^-6; e = 15, m = 7: NaN (no infinities); else (1 + m/8)·2^(e-7).
//   Largest finite 448 (0x7E). Conversion from fp32 rounds to nearest, ties to even; without saturation (torch's
//   cast) |x| >= 464 rounds to NaN (480 is past the format) and ±inf/NaN become NaN (0x7F | sign); with
//   saturation (the reference's clamp before the cast) finite and infinite values clamp to ±448, NaN stays NaN.
//
// Devices: encoding runs on the CPU (a tight loop; a tensor elsewhere is copied to the CPU and its codes copied
// back); decoding is a 256-entry table lookup (index_select) that runs on the tensor's device in any dtype.
// The fused FP8 GEMM (Fp8LinearScaledMm) is a documented extension point: NotSupported in this build.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include "liveavatar/core/status.h"

namespace liveavatar::models {

constexpr float kFp8E4m3Max = 448.0f;          // torch.finfo(torch.float8_e4m3fn).max
constexpr float kFp8ScaleAmaxFloor = 1e-12f;   // the reference's clamp(amax, min=1e-12)
constexpr uint8_t kFp8E4m3NaN = 0x7F;          // canonical NaN code (sign bit may be set)

// One value <-> one code (scalar reference; the tensor functions use the same arithmetic).
float Fp8E4m3ToFloat(uint8_t code);
uint8_t FloatToFp8E4m3(float value, bool saturate);

// Codes of a floating tensor (any float dtype, computed from its fp32 value): uint8, same shape and device.
at::Tensor EncodeFp8E4m3(const at::Tensor& x, bool saturate);
// Values of uint8 codes as `dtype` (exact: every e4m3 value is representable in fp32/bf16/fp16), same device.
at::Tensor DecodeFp8E4m3(const at::Tensor& codes, c10::ScalarType dtype = c10::kFloat);

// A per-tensor scaled FP8 tensor (the reference's FP8ScaleLinear buffers weight_fp8 / weight_scale).
struct Fp8Tensor {
  at::Tensor codes;      // uint8 e4m3fn codes, shape of the source tensor
  float scale_inv = 1;   // 1/s: value ≈ decode(code) · scale_inv (fp32 arithmetic)
  int64_t nbytes() const;  // storage bytes (the codes)
};

// The reference's scale for a tensor of absolute maximum `amax`: min(448 / max(amax, 1e-12), 448) in fp32.
float Fp8Scale(float amax);

// Per-tensor quantisation (quant_fp8): amax over |x| in fp32, s = Fp8Scale(amax), codes = e4m3(clamp(x·s)).
// x is read as fp32 (a bf16 tensor is quantised from its bf16 values). REQUIRES: x floating, finite.
Fp8Tensor QuantizeFp8PerTensor(const at::Tensor& x);

// The two halves of QuantizeFp8PerTensor, for a tensor whose parts live in different places (an FSDP slice per
// rank: each rank takes the amax of its part, a max all-reduce gives the tensor's, and each rank encodes its part
// with the common scale; the codes equal QuantizeFp8PerTensor's of the whole tensor).
// max |x| in fp32 (0 for an empty tensor; NaN if x holds a NaN, inf if it holds an inf). x floating, any device.
float Fp8AbsMax(const at::Tensor& x);
// Codes e4m3(clamp(x·scale, ±448)) of x read as fp32; uint8, same shape and device.
at::Tensor EncodeFp8Scaled(const at::Tensor& x, float scale);
// decode(codes)·scale_inv computed in fp32 and rounded once to `dtype`, on the codes' device.
at::Tensor DequantizeFp8(const Fp8Tensor& q, c10::ScalarType dtype);

// Numerical emulation of the reference's FP8 linear on any device: x quantised per tensor on every call,
// y = (decode(x_q)·x_scale_inv) @ (decode(W_q)·w_scale_inv)ᵀ accumulated in fp32, + bias, rounded to
// `out_dtype` (the reference: bf16). x: [..., in]; w.codes: [out, in]; bias [out] or undefined.
// This is the CPU reference for a fused GEMM, not a fast path.
at::Tensor Fp8LinearEmulated(const at::Tensor& x, const Fp8Tensor& w, const at::Tensor& bias,
                             c10::ScalarType out_dtype = c10::kBFloat16);

// Extension point for the fused GEMM (torch._scaled_mm, CUDA with LibTorch >= 2.1 and an sm_89+ GPU): not
// implemented in this build; returns NotSupported naming what is missing. Callers fall back to
// DequantizeFp8 + a dense GEMM (weights stored in FP8, dequantised per block).
StatusOr<at::Tensor> Fp8LinearScaledMm(const at::Tensor& x, const Fp8Tensor& w, const at::Tensor& bias,
                                       c10::ScalarType out_dtype = c10::kBFloat16);
// Whether Fp8LinearScaledMm can run on `x`'s device in this build (false everywhere for now).
bool Fp8ScaledMmAvailable(const at::Tensor& x);

}  // namespace liveavatar::models
