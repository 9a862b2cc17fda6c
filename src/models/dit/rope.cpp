#include "liveavatar/models/dit/rope.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>

namespace liveavatar::models::dit {

std::vector<int64_t> LinspaceInt(double start, double stop, int64_t num) {
  std::vector<int64_t> out;
  if (num <= 0) return out;
  out.reserve(static_cast<size_t>(num));
  if (num == 1) {
    out.push_back(static_cast<int64_t>(start));
    return out;
  }
  const double step = (stop - start) / static_cast<double>(num - 1);
  for (int64_t i = 0; i < num; ++i) {
    const double y = (i == num - 1) ? stop : static_cast<double>(i) * step + start;
    out.push_back(static_cast<int64_t>(y));  // truncation, like numpy astype(int)
  }
  return out;
}

std::vector<int64_t> RopeAxisPositions(int64_t start, int64_t count, int64_t range) {
  if (start >= 0) {
    return LinspaceInt(static_cast<double>(start), static_cast<double>(start + range - 1), count);
  }
  auto pos = LinspaceInt(static_cast<double>(-start), static_cast<double>(-start - range + 1), count);
  for (auto& p : pos) p = -p;
  return pos;
}

RopeGroup BlockRopeGroup(int64_t f0, int64_t num_frames, int64_t hp, int64_t wp) {
  RopeGroup g;
  g.frames = RopeAxisPositions(f0, num_frames, num_frames);
  g.rows = RopeAxisPositions(0, hp, hp);
  g.cols = RopeAxisPositions(0, wp, wp);
  return g;
}

std::vector<RopeGroup> SinkRopeGroups(int64_t ref_frame, int64_t hp, int64_t wp, int64_t n2_h, int64_t n2_w,
                                      int64_t n4_h, int64_t n4_w) {
  // FramePack buckets (nearest → farthest): 1 frame full res, 2 frames at 2x, 16 frames at 4x.
  constexpr int64_t kPost = 1, k2x = 2, k4x = 16;
  std::vector<RopeGroup> groups(4);
  groups[0] = BlockRopeGroup(ref_frame, 1, hp, wp);
  groups[1].frames = RopeAxisPositions(-kPost, kPost, kPost);
  groups[1].rows = RopeAxisPositions(0, hp, hp);
  groups[1].cols = RopeAxisPositions(0, wp, wp);
  groups[2].frames = RopeAxisPositions(-(kPost + k2x), k2x / 2, k2x);
  groups[2].rows = RopeAxisPositions(0, n2_h, hp);
  groups[2].cols = RopeAxisPositions(0, n2_w, wp);
  groups[3].frames = RopeAxisPositions(-(kPost + k2x + k4x), k4x / 4, k4x);
  groups[3].rows = RopeAxisPositions(0, n4_h, hp);
  groups[3].cols = RopeAxisPositions(0, n4_w, wp);
  return groups;
}

int64_t RollingSinkShift(int64_t f0, int64_t relative_dist, int64_t ref_frame) {
  return std::max<int64_t>(0, f0 - (ref_frame - relative_dist));
}

namespace {

// cos/sin of pos · 10000^(−2i/axis_dim), i < axis_dim/2, rounded to fp16 (via fp32, as torch converts), as double.
void AxisFactors(int64_t pos, int64_t axis_dim, double* cos_out, double* sin_out) {
  const int64_t p = pos < 0 ? -pos : pos;
  for (int64_t i = 0; i < axis_dim / 2; ++i) {
    const double inv_freq = 1.0 / std::pow(10000.0, static_cast<double>(2 * i) / static_cast<double>(axis_dim));
    const double angle = static_cast<double>(p) * inv_freq;
    const double c = std::cos(angle);
    const double s = std::sin(angle);
    cos_out[i] = static_cast<double>(static_cast<float>(c10::Half(static_cast<float>(c))));
    const double sh = static_cast<double>(static_cast<float>(c10::Half(static_cast<float>(s))));
    sin_out[i] = pos < 0 ? -sh : sh;
  }
}

}  // namespace

RopeFactors ComputeRopeFactors(const std::vector<RopeGroup>& groups, int64_t head_dim, const c10::Device& device) {
  TORCH_CHECK(head_dim % 2 == 0, "RoPE: head_dim must be even");
  const int64_t c = head_dim / 2;
  const int64_t c_hw = c / 3;
  const int64_t c_f = c - 2 * c_hw;
  int64_t total = 0;
  for (const auto& g : groups) total += g.size();
  auto cos_t = at::empty({total, c}, at::kDouble);
  auto sin_t = at::empty({total, c}, at::kDouble);
  double* cp = cos_t.data_ptr<double>();
  double* sp = sin_t.data_ptr<double>();
  std::vector<double> fc(c_f), fs(c_f), hc(c_hw), hs(c_hw), wc(c_hw), ws(c_hw);
  int64_t row = 0;
  for (const auto& g : groups) {
    for (auto f : g.frames) {
      AxisFactors(f, 2 * c_f, fc.data(), fs.data());
      for (auto r : g.rows) {
        AxisFactors(r, 2 * c_hw, hc.data(), hs.data());
        for (auto col : g.cols) {
          AxisFactors(col, 2 * c_hw, wc.data(), ws.data());
          double* crow = cp + row * c;
          double* srow = sp + row * c;
          for (int64_t i = 0; i < c_f; ++i) crow[i] = fc[i], srow[i] = fs[i];
          for (int64_t i = 0; i < c_hw; ++i) crow[c_f + i] = hc[i], srow[c_f + i] = hs[i];
          for (int64_t i = 0; i < c_hw; ++i) crow[c_f + c_hw + i] = wc[i], srow[c_f + c_hw + i] = ws[i];
          ++row;
        }
      }
    }
  }
  RopeFactors out;
  out.cos = cos_t.to(device);
  out.sin = sin_t.to(device);
  return out;
}

at::Tensor ApplyRope(const at::Tensor& x, const RopeFactors& f) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == f.size() && x.size(3) == 2 * f.cos.size(1),
              "ApplyRope: x ", x.sizes(), " does not match factors [", f.size(), ", ", f.cos.size(1), "]");
  const auto sizes = x.sizes().vec();
  auto xd = x.to(at::kDouble).reshape({x.size(0), x.size(1), x.size(2), f.cos.size(1), 2});
  auto xr = xd.select(-1, 0);
  auto xi = xd.select(-1, 1);
  auto c = f.cos.unsqueeze(0).unsqueeze(2);  // [1, L, 1, c]
  auto s = f.sin.unsqueeze(0).unsqueeze(2);
  auto out = at::stack({xr * c - xi * s, xr * s + xi * c}, -1);
  return out.reshape(sizes).to(x.scalar_type());
}

at::Tensor RopeFactorsDebug(const RopeFactors& f, int64_t num_heads) {
  auto t = at::stack({f.cos, f.sin}, -1).to(at::kFloat);  // [L, c, 2]
  return t.unsqueeze(0).unsqueeze(2).expand({1, f.size(), num_heads, f.cos.size(1), 2}).contiguous();
}

}  // namespace liveavatar::models::dit
