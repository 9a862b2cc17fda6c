#include "liveavatar/models/fp8.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

namespace liveavatar::models {

namespace {

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

float FromBits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

constexpr uint32_t kF32AbsMask = 0x7FFFFFFFu;
constexpr uint32_t kF32Inf = 0x7F800000u;
constexpr uint32_t kF32Bits448 = 0x43E00000u;      // 448.0f
constexpr uint32_t kF32Bits480 = 0x43F00000u;      // 480.0f: first value past the e4m3 range
constexpr uint32_t kF32BitsMinNormal = 0x3C800000u;  // 2^-6: smallest normal e4m3 magnitude

// Encodes |f| given as fp32 bits (sign handled by the caller).
inline uint8_t EncodeMagnitude(uint32_t abs_bits, bool saturate) {
  if (abs_bits > kF32Inf) return kFp8E4m3NaN;  // NaN
  if (saturate && abs_bits > kF32Bits448) abs_bits = kF32Bits448;
  if (abs_bits >= kF32Bits480) return kFp8E4m3NaN;  // also +inf without saturation
  if (abs_bits < kF32BitsMinNormal) {
    // Subnormal range: the code is round_half_even(|f| / 2^-9); 8 rounds up into the smallest normal (0x08).
    const float v = FromBits(abs_bits) * 512.0f;  // exact (power-of-two scaling, no overflow)
    auto m = static_cast<uint32_t>(v);            // floor (v >= 0)
    const float frac = v - static_cast<float>(m);  // exact
    if (frac > 0.5f || (frac == 0.5f && (m & 1u))) ++m;
    return static_cast<uint8_t>(m);
  }
  // Normal: biased exponent e+7 in [1, 15], top 3 mantissa bits, round half to even on the 20 dropped bits; a
  // carry out of the mantissa correctly increments the exponent.
  const int32_t exp = static_cast<int32_t>(abs_bits >> 23) - 127;
  const uint32_t mant = abs_bits & 0x7FFFFFu;
  uint32_t q = (static_cast<uint32_t>(exp + 7) << 3) | (mant >> 20);
  const uint32_t rest = mant & 0xFFFFFu;
  constexpr uint32_t kHalf = 0x80000u;
  if (rest > kHalf || (rest == kHalf && (q & 1u))) ++q;
  // q == 0x7F only for |f| in (464, 480): NaN, as torch's non-saturating cast (unreachable when saturating).
  return static_cast<uint8_t>(q);
}

inline uint8_t EncodeOne(float f, bool saturate) {
  const uint32_t b = Bits(f);
  return static_cast<uint8_t>(((b >> 24) & 0x80u) | EncodeMagnitude(b & kF32AbsMask, saturate));
}

// out[i] = e4m3(in[i]·scale), parallel over the CPU threads.
void EncodeScaledCpu(const float* in, uint8_t* out, int64_t n, float scale, bool saturate) {
  at::parallel_for(0, n, 1 << 16, [&](int64_t begin, int64_t end) {
    if (scale == 1.0f) {
      for (int64_t i = begin; i < end; ++i) out[i] = EncodeOne(in[i], saturate);
    } else {
      for (int64_t i = begin; i < end; ++i) out[i] = EncodeOne(in[i] * scale, saturate);
    }
  });
}

// The 256 decoded values (fp32) on the CPU.
const at::Tensor& DecodeTableCpu() {
  static const at::Tensor table = [] {
    auto t = at::empty({256}, at::kFloat);
    float* p = t.data_ptr<float>();
    for (int c = 0; c < 256; ++c) p[c] = Fp8E4m3ToFloat(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

// Table lookup of `codes` (uint8, any device) in `table` ([256], already on the codes' device and in the output
// dtype).
at::Tensor Lookup(const at::Tensor& codes, const at::Tensor& table) {
  TORCH_CHECK(codes.scalar_type() == at::kByte, "FP8 codes must be uint8, got ", codes.scalar_type());
  auto flat = codes.reshape({-1}).to(at::kInt);
  return table.index_select(0, flat).view(codes.sizes());
}

// |x|max of a CPU fp32 contiguous buffer (NaN propagates).
float AbsMax(const float* p, int64_t n) {
  return at::parallel_reduce(
      0, n, 1 << 16, 0.0f,
      [&](int64_t begin, int64_t end, float acc) {
        for (int64_t i = begin; i < end; ++i) {
          const float a = std::fabs(p[i]);
          acc = (a > acc || std::isnan(a)) ? a : acc;
        }
        return acc;
      },
      [](float a, float b) { return (std::isnan(a) || a > b) ? a : b; });
}

}  // namespace

float Fp8E4m3ToFloat(uint8_t code) {
  const bool negative = (code & 0x80u) != 0;
  const int exp = (code >> 3) & 0xF;
  const int mant = code & 0x7;
  float mag;
  if (exp == 15 && mant == 7) {
    mag = std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    mag = std::ldexp(static_cast<float>(mant), -9);
  } else {
    mag = std::ldexp(static_cast<float>(8 + mant), exp - 10);
  }
  return negative ? -mag : mag;
}

uint8_t FloatToFp8E4m3(float value, bool saturate) { return EncodeOne(value, saturate); }

at::Tensor EncodeFp8E4m3(const at::Tensor& x, bool saturate) {
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "EncodeFp8E4m3: expected a floating tensor, got ",
              x.scalar_type());
  const auto xf = x.to(at::kCPU, at::kFloat).contiguous();
  auto out = at::empty(xf.sizes(), at::TensorOptions().dtype(at::kByte));
  EncodeScaledCpu(xf.data_ptr<float>(), out.data_ptr<uint8_t>(), xf.numel(), 1.0f, saturate);
  return x.device().is_cpu() ? out : out.to(x.device());
}

at::Tensor DecodeFp8E4m3(const at::Tensor& codes, c10::ScalarType dtype) {
  return Lookup(codes, DecodeTableCpu().to(codes.device(), dtype));
}

int64_t Fp8Tensor::nbytes() const { return codes.defined() ? codes.numel() : 0; }

float Fp8Scale(float amax) {
  // clamp(amax, min=1e-12), 448 / amax, clamp(max=448), all in fp32 like the reference.
  const float a = std::max(amax, kFp8ScaleAmaxFloor);
  return std::min(kFp8E4m3Max / a, kFp8E4m3Max);
}

float Fp8AbsMax(const at::Tensor& x) {
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "Fp8AbsMax: expected a floating tensor, got ", x.scalar_type());
  const auto xf = x.to(at::kCPU, at::kFloat).contiguous();
  return AbsMax(xf.data_ptr<float>(), xf.numel());
}

at::Tensor EncodeFp8Scaled(const at::Tensor& x, float scale) {
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "EncodeFp8Scaled: expected a floating tensor, got ",
              x.scalar_type());
  const auto xf = x.to(at::kCPU, at::kFloat).contiguous();
  at::Tensor codes = at::empty(xf.sizes(), at::TensorOptions().dtype(at::kByte));
  // clamp(x·s, ±448) then the cast == the saturating cast of x·s.
  EncodeScaledCpu(xf.data_ptr<float>(), codes.data_ptr<uint8_t>(), xf.numel(), scale, /*saturate=*/true);
  return x.device().is_cpu() ? codes : codes.to(x.device());
}

Fp8Tensor QuantizeFp8PerTensor(const at::Tensor& x) {
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "QuantizeFp8PerTensor: expected a floating tensor, got ",
              x.scalar_type());
  const float amax = Fp8AbsMax(x);
  TORCH_CHECK(std::isfinite(amax), "QuantizeFp8PerTensor: tensor has non-finite values");
  const float scale = Fp8Scale(amax);
  Fp8Tensor q;
  q.codes = EncodeFp8Scaled(x, scale);
  q.scale_inv = 1.0f / scale;
  return q;
}

at::Tensor DequantizeFp8(const Fp8Tensor& q, c10::ScalarType dtype) {
  // One rounding per value: table entries are fp32(decode·scale_inv) rounded to `dtype`.
  auto table = (DecodeTableCpu() * q.scale_inv).to(q.codes.device(), dtype);
  return Lookup(q.codes, table);
}

at::Tensor Fp8LinearEmulated(const at::Tensor& x, const Fp8Tensor& w, const at::Tensor& bias,
                             c10::ScalarType out_dtype) {
  TORCH_CHECK(w.codes.dim() == 2, "Fp8LinearEmulated: weight codes must be [out, in], got ", w.codes.sizes());
  const int64_t in = w.codes.size(1);
  TORCH_CHECK(x.size(-1) == in, "Fp8LinearEmulated: x ", x.sizes(), " does not end in ", in);
  const auto x2 = x.reshape({-1, in});
  const Fp8Tensor xq = QuantizeFp8PerTensor(x2);
  const auto xd = DecodeFp8E4m3(xq.codes, at::kFloat).to(x.device());
  const auto wd = DecodeFp8E4m3(w.codes, at::kFloat).to(x.device());
  // e4m3 products are exact in fp32; the sums accumulate in fp32; both scales are applied to the result.
  auto y = at::matmul(xd, wd.t()) * (xq.scale_inv * w.scale_inv);
  if (bias.defined()) y = y + bias.to(y.device(), at::kFloat);
  auto sizes = x.sizes().vec();
  sizes.back() = w.codes.size(0);
  return y.to(out_dtype).view(sizes);
}

bool Fp8ScaledMmAvailable(const at::Tensor& x) { return false; }

StatusOr<at::Tensor> Fp8LinearScaledMm(const at::Tensor& x, const Fp8Tensor& w, const at::Tensor& bias,
                                       c10::ScalarType out_dtype) {
  // Extension point: on CUDA with LibTorch >= 2.1 (core/compat.h: LIVEAVATAR_HAS_FLOAT8) and compute capability
  // >= 8.9, view the codes as at::kFloat8_e4m3fn and call at::_scaled_mm(x_q, W_qᵀ, scale_a, scale_b, bias,
  // out_dtype, use_fast_accum=true), with x quantised by the same per-tensor rule. Not written yet because no
  // GPU was available to test it; callers use DequantizeFp8 + a dense GEMM instead.
  return Status::NotSupported(std::string("FP8 GEMM (torch._scaled_mm) is not implemented in this build") +
                              (x.device().is_cuda() ? "" : "; it needs a CUDA device") +
                              "; weights are dequantised per block instead");
}

}  // namespace liveavatar::models
