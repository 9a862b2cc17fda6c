// FP8 e4m3fn encode/decode and per-tensor quantisation (models/fp8.h), checked against tables derived here from
// the format definition (1 sign, 4 exponent bits with bias 7, 3 mantissa bits; exponent 0 subnormal; S.1111.111
// NaN; no infinities) — not against the implementation's own arithmetic.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/core/compat.h"
#include "liveavatar/models/fp8.h"

namespace liveavatar::models {
namespace {

// Value of `code` straight from the definition, in double.
double DefinitionValue(int code) {
  const int sign = code >> 7, exp = (code >> 3) & 15, mant = code & 7;
  if (exp == 15 && mant == 7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = exp == 0 ? (mant / 8.0) * std::pow(2.0, -6) : (1.0 + mant / 8.0) * std::pow(2.0, exp - 7);
  return sign ? -mag : mag;
}

// Positive finite codes 0x00..0x7E in increasing value order (the encoding is monotonic in the code).
std::vector<int> PositiveCodes() {
  std::vector<int> c;
  for (int i = 0; i <= 0x7E; ++i) c.push_back(i);
  return c;
}

// Independent oracle: nearest finite value, ties to the even code (mantissa LSB 0); saturating clamps to 448.
uint8_t OracleEncode(double x, bool saturate) {
  if (std::isnan(x)) return std::signbit(x) ? 0xFF : 0x7F;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  double a = std::fabs(x);
  if (saturate) a = std::min(a, 448.0);
  if (!saturate && a >= 464.0 && a != 464.0) return sign | 0x7F;  // rounds past 448 (the next step would be 480)
  int best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  for (int c : PositiveCodes()) {
    const double d = std::fabs(DefinitionValue(c) - a);
    if (d < best_d || (d == best_d && (c & 1) == 0)) {
      best = c;
      best_d = d;
    }
  }
  return static_cast<uint8_t>(sign | best);
}

TEST(Fp8E4m3, AllCodesDecodeToTheDefinition) {
  auto codes = at::arange(256, at::kInt).to(at::kByte);
  auto decoded = DecodeFp8E4m3(codes, at::kFloat);
  auto decoded_bf16 = DecodeFp8E4m3(codes, at::kBFloat16).to(at::kFloat);
  ASSERT_EQ(decoded.sizes(), codes.sizes());
  int nans = 0;
  for (int c = 0; c < 256; ++c) {
    const double want = DefinitionValue(c);
    const float got = decoded[c].item<float>();
    const float got_scalar = Fp8E4m3ToFloat(static_cast<uint8_t>(c));
    if (std::isnan(want)) {
      ++nans;
      EXPECT_TRUE(std::isnan(got) && std::isnan(got_scalar)) << "code " << c;
      continue;
    }
    EXPECT_EQ(static_cast<double>(got), want) << "code " << c;
    EXPECT_EQ(static_cast<double>(got_scalar), want) << "code " << c;
    EXPECT_EQ(static_cast<double>(decoded_bf16[c].item<float>()), want) << "bf16, code " << c;
    EXPECT_EQ(std::signbit(got), (c & 0x80) != 0) << "code " << c;
  }
  EXPECT_EQ(nans, 2);  // 0x7F and 0xFF only
  EXPECT_EQ(Fp8E4m3ToFloat(0x7E), 448.0f);
  EXPECT_EQ(Fp8E4m3ToFloat(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(Fp8E4m3ToFloat(0x08), std::ldexp(1.0f, -6));
}

TEST(Fp8E4m3, EveryValueRoundTrips) {
  std::vector<float> values;
  std::vector<uint8_t> want;
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7F) == 0x7F) continue;
    values.push_back(static_cast<float>(DefinitionValue(c)));
    want.push_back(static_cast<uint8_t>(c));
  }
  const auto x = at::tensor(values);
  for (bool saturate : {false, true}) {
    auto enc = EncodeFp8E4m3(x, saturate);
    ASSERT_EQ(enc.scalar_type(), at::kByte);
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_EQ(enc[static_cast<int64_t>(i)].item<uint8_t>(), want[i]) << values[i];
      EXPECT_EQ(FloatToFp8E4m3(values[i], saturate), want[i]) << values[i];
    }
  }
}

TEST(Fp8E4m3, TiesRoundToEvenAndNeighboursRoundToNearest) {
  const auto codes = PositiveCodes();
  int checked = 0;
  for (size_t i = 0; i + 1 < codes.size(); ++i) {
    const int lo = codes[i], hi = codes[i + 1];
    const double mid = 0.5 * (DefinitionValue(lo) + DefinitionValue(hi));
    const auto midf = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(midf), mid) << "midpoint not exact in fp32";
    const int even = (lo & 1) == 0 ? lo : hi;
    for (float sign : {1.0f, -1.0f}) {
      const uint8_t s = sign < 0 ? 0x80 : 0;
      for (bool saturate : {false, true}) {
        EXPECT_EQ(FloatToFp8E4m3(sign * midf, saturate), s | even) << sign * midf;
        EXPECT_EQ(FloatToFp8E4m3(sign * std::nextafter(midf, 1e9f), saturate), s | hi) << sign * midf;
        EXPECT_EQ(FloatToFp8E4m3(sign * std::nextafter(midf, 0.0f), saturate), s | lo) << sign * midf;
      }
    }
    ++checked;
  }
  EXPECT_EQ(checked, 126);
  // Subnormal ties spelled out: 2^-10 -> 0, 3·2^-10 -> 2·2^-9, 15·2^-10 -> the smallest normal (0x08).
  EXPECT_EQ(FloatToFp8E4m3(std::ldexp(1.0f, -10), false), 0x00);
  EXPECT_EQ(FloatToFp8E4m3(std::ldexp(3.0f, -10), false), 0x02);
  EXPECT_EQ(FloatToFp8E4m3(std::ldexp(15.0f, -10), false), 0x08);
  EXPECT_EQ(FloatToFp8E4m3(-1e-30f, false), 0x80);
  EXPECT_EQ(FloatToFp8E4m3(-0.0f, true), 0x80);
}

TEST(Fp8E4m3, SaturationAndNaN) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    float x;
    uint8_t sat, nonsat;
  };
  // 464 is the tie between 448 (even) and the NaN slot: it rounds to 448; anything above rounds to NaN unless
  // saturated (torch's cast), and the reference's clamp saturates first.
  for (const Case& c : std::vector<Case>{{448.0f, 0x7E, 0x7E},
                                         {463.9f, 0x7E, 0x7E},
                                         {464.0f, 0x7E, 0x7E},
                                         {464.5f, 0x7E, 0x7F},
                                         {480.0f, 0x7E, 0x7F},
                                         {1e30f, 0x7E, 0x7F},
                                         {inf, 0x7E, 0x7F},
                                         {-inf, 0xFE, 0xFF},
                                         {-500.0f, 0xFE, 0xFF},
                                         {nan, 0x7F, 0x7F},
                                         {-nan, 0xFF, 0xFF}}) {
    EXPECT_EQ(FloatToFp8E4m3(c.x, true), c.sat) << c.x;
    EXPECT_EQ(FloatToFp8E4m3(c.x, false), c.nonsat) << c.x;
  }
}

TEST(Fp8E4m3, RandomTensorsMatchTheNearestValueOracle) {
  at::manual_seed(7);
  // Log-uniform magnitudes over the whole range (subnormals to past the max), random signs, plus bf16 inputs.
  auto mag = at::exp2(at::rand({20000}) * 22.0 - 12.0);
  auto sign = at::where(at::rand({20000}) < 0.5, at::full({1}, -1.0), at::full({1}, 1.0));
  auto x = (mag * sign).to(at::kFloat);
  for (bool saturate : {false, true}) {
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      const auto xin = x.to(dtype);
      const auto enc = EncodeFp8E4m3(xin, saturate);
      const auto xd = xin.to(at::kFloat);
      const float* p = xd.data_ptr<float>();
      const uint8_t* e = enc.data_ptr<uint8_t>();
      int mismatches = 0;
      for (int64_t i = 0; i < xd.numel(); ++i) {
        if (e[i] != OracleEncode(p[i], saturate) && ++mismatches < 5) {
          ADD_FAILURE() << "x=" << p[i] << " saturate=" << saturate << " got " << int(e[i]) << " want "
                        << int(OracleEncode(p[i], saturate));
        }
      }
      EXPECT_EQ(mismatches, 0);
    }
  }
}

#if LIVEAVATAR_HAS_FLOAT8
// LibTorch >= 2.1 (e.g. the GPU machine): the uint8 implementation equals torch's own float8_e4m3fn cast.
TEST(Fp8E4m3, MatchesTorchFloat8Cast) {
  at::manual_seed(11);
  const float inf = std::numeric_limits<float>::infinity();
  auto specials = at::tensor(std::vector<float>{0.0f, -0.0f, 448.0f, 463.9f, 464.0f, 464.5f, 479.0f, 480.0f, 1e30f,
                                                inf, -inf, std::ldexp(1.0f, -10), std::ldexp(3.0f, -10), 1e-30f});
  auto x = at::cat({specials, at::exp2(at::rand({50000}) * 24.0 - 14.0) * (at::rand({50000}) - 0.5).sign()});
  const auto native = x.to(at::kFloat8_e4m3fn).view(at::kByte);
  EXPECT_TRUE(at::equal(native, EncodeFp8E4m3(x, /*saturate=*/false)));
  const auto codes = at::arange(256, at::kInt).to(at::kByte);
  const auto want = codes.view(at::kFloat8_e4m3fn).to(at::kFloat);
  const auto got = DecodeFp8E4m3(codes);
  EXPECT_TRUE(at::equal(want.isnan(), got.isnan()));
  EXPECT_TRUE(at::equal(at::nan_to_num(want), at::nan_to_num(got)));
}
#endif

TEST(Fp8Quantize, ScaleRuleAndCodes) {
  EXPECT_FLOAT_EQ(Fp8Scale(2.0f), 224.0f);
  EXPECT_EQ(Fp8Scale(0.5f), 448.0f);  // 896 clamped to 448: small tensors are not scaled up further
  EXPECT_EQ(Fp8Scale(0.0f), 448.0f);
  EXPECT_EQ(Fp8Scale(448.0f), 1.0f);
  at::manual_seed(3);
  auto w = at::randn({64, 96}) * 3.0;
  auto q = QuantizeFp8PerTensor(w);
  const float amax = w.abs().max().item<float>();
  const float s = 448.0f / amax;
  EXPECT_FLOAT_EQ(q.scale_inv, 1.0f / s);
  EXPECT_EQ(q.nbytes(), 64 * 96);
  // codes == saturating encode of w·s (computed in fp32), and the amax element maps to ±448.
  EXPECT_TRUE(at::equal(q.codes, EncodeFp8E4m3(w * s, true)));
  EXPECT_EQ(DecodeFp8E4m3(q.codes).abs().max().item<float>(), 448.0f);
  // Dequantised error: at most half a step, i.e. 2^-4 relative in the normal range, 2^-10 / s absolute below.
  auto deq = DequantizeFp8(q, at::kFloat);
  auto err = (deq - w).abs();
  auto bound = at::maximum(w.abs() * (1.0 / 16), at::full({1}, std::ldexp(1.0, -10) / s)) * (1 + 1e-6);
  EXPECT_TRUE((err <= bound).all().item<bool>());
  const double rel = ((deq - w).norm() / w.norm()).item<double>();
  EXPECT_LT(rel, 0.04);  // e4m3 carries 4 significant bits: ~2-3% rel L2 on a Gaussian
  EXPECT_GT(rel, 1e-3);
  // bf16 dequantisation rounds each fp32 value once.
  EXPECT_TRUE(at::equal(DequantizeFp8(q, at::kBFloat16), deq.to(at::kBFloat16)));
  // All-zero tensors quantise to zeros.
  auto z = QuantizeFp8PerTensor(at::zeros({3, 3}));
  EXPECT_EQ(z.codes.sum().item<int64_t>(), 0);
  EXPECT_FLOAT_EQ(z.scale_inv, 1.0f / 448.0f);
}

TEST(Fp8Quantize, QuantisesBf16TensorsFromTheirBf16Values) {
  at::manual_seed(4);
  auto w = (at::randn({32, 32}) * 0.05).to(at::kBFloat16);
  auto q = QuantizeFp8PerTensor(w);
  auto qf = QuantizeFp8PerTensor(w.to(at::kFloat));
  EXPECT_TRUE(at::equal(q.codes, qf.codes));
  EXPECT_EQ(q.scale_inv, qf.scale_inv);
  EXPECT_FLOAT_EQ(q.scale_inv, 1.0f / 448.0f);  // amax < 1: scale clamped at 448
}

TEST(Fp8Quantize, RejectsNonFiniteTensors) {
  auto w = at::ones({4});
  w[2] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(QuantizeFp8PerTensor(w), c10::Error);
  EXPECT_THROW(QuantizeFp8PerTensor(at::ones({4}, at::kInt)), c10::Error);
}

TEST(Fp8Linear, EmulatedGemmMatchesItsDefinitionAndStaysClose) {
  at::manual_seed(5);
  auto x = at::randn({2, 7, 48});
  auto w = at::randn({24, 48}) * 0.1;
  auto b = at::randn({24}) * 0.1;
  auto wq = QuantizeFp8PerTensor(w);
  auto y = Fp8LinearEmulated(x, wq, b, at::kFloat);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 7, 24}));
  // Definition: both operands quantised per tensor, fp32 GEMM of the dequantised values.
  auto xq = QuantizeFp8PerTensor(x.reshape({-1, 48}));
  auto want = at::linear(DequantizeFp8(xq, at::kFloat), DequantizeFp8(wq, at::kFloat), b).view({2, 7, 24});
  EXPECT_LT(((y - want).norm() / want.norm()).item<double>(), 1e-6);
  auto exact = at::linear(x, w, b);
  const double rel = ((y - exact).norm() / exact.norm()).item<double>();
  EXPECT_LT(rel, 0.06);
  EXPECT_EQ(Fp8LinearEmulated(x, wq, b).scalar_type(), at::kBFloat16);
}

TEST(Fp8Linear, FusedGemmIsAnExtensionPoint) {
  auto x = at::randn({4, 8});
  auto wq = QuantizeFp8PerTensor(at::randn({8, 8}));
  EXPECT_FALSE(Fp8ScaledMmAvailable(x));
  auto r = Fp8LinearScaledMm(x, wq, at::Tensor());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kNotSupported);
}

}  // namespace
}  // namespace liveavatar::models
