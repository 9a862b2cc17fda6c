// Reference-image preprocessing (see image_preprocess.h). The resize re-expresses Pillow's two-pass resampler
// (libImaging/Resample.c: precompute_coeffs, normalize_coeffs_8bpc, ImagingResampleHorizontal/Vertical_8bpc)
// so the uint8 output is bit-identical to PIL's Image.resize(..., BILINEAR).
#include "liveavatar/io/image_preprocess.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <utility>

#include "liveavatar/io/image_reader.h"

namespace liveavatar::io {
namespace {

struct AreaConfig {
  const char* name;
  int64_t area;
};

// MAX_AREA_CONFIGS (wan_2_2/configs/__init__.py): key "W*H" -> W*H. The last four are LiveAvatar additions.
constexpr AreaConfig kAreaConfigs[] = {
    {"720*1280", 720 * 1280}, {"1280*720", 1280 * 720}, {"480*832", 480 * 832},   {"832*480", 832 * 480},
    {"704*1280", 704 * 1280}, {"1280*704", 1280 * 704}, {"1024*704", 1024 * 704}, {"704*1024", 704 * 1024},
    {"720*400", 720 * 400},   {"704*384", 704 * 384},   {"688*368", 688 * 368},   {"384*256", 384 * 256},
};

// Pillow: PRECISION_BITS = 32 - 8 - 2.
constexpr int kPrecisionBits = 22;

// Triangle (bilinear) filter of support 1.
double TriangleFilter(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Per output sample: first input index, tap count, and fixed-point weights (ksize per sample).
struct ResampleCoeffs {
  int64_t ksize = 0;
  std::vector<int64_t> first;
  std::vector<int64_t> count;
  std::vector<int32_t> weights;
};

ResampleCoeffs PrecomputeCoeffs(int64_t in_size, int64_t out_size) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = 1.0 * filter_scale;
  ResampleCoeffs c;
  c.ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(static_cast<size_t>(out_size * c.ksize), 0);
  std::vector<double> w(static_cast<size_t>(c.ksize));
  const double inv_filter_scale = 1.0 / filter_scale;
  for (int64_t o = 0; o < out_size; ++o) {
    const double center = (static_cast<double>(o) + 0.5) * scale;
    // (int) casts truncate toward zero, as in C.
    int64_t lo = static_cast<int64_t>(center - support + 0.5);
    if (lo < 0) lo = 0;
    int64_t hi = static_cast<int64_t>(center + support + 0.5);
    if (hi > in_size) hi = in_size;
    const int64_t n = hi - lo;
    double total = 0.0;
    for (int64_t k = 0; k < n; ++k) {
      w[k] = TriangleFilter((static_cast<double>(k + lo) - center + 0.5) * inv_filter_scale);
      total += w[k];
    }
    for (int64_t k = 0; k < n; ++k) {
      const double v = total != 0.0 ? w[k] / total : w[k];
      const double fixed = v * static_cast<double>(1 << kPrecisionBits);
      c.weights[o * c.ksize + k] = static_cast<int32_t>(v < 0 ? -0.5 + fixed : 0.5 + fixed);
    }
    c.first[o] = lo;
    c.count[o] = n;
  }
  return c;
}

inline uint8_t Clip8(int64_t acc) {
  if (acc >= (int64_t{1} << kPrecisionBits << 8)) return 255;
  if (acc <= 0) return 0;
  return static_cast<uint8_t>(acc >> kPrecisionBits);
}

// Python's round() on a double: half to even.
int64_t RoundHalfEven(double x) {
  const double r = std::round(x);
  if (std::fabs(x - std::trunc(x)) == 0.5) return static_cast<int64_t>(2.0 * std::round(x / 2.0));
  return static_cast<int64_t>(r);
}

}  // namespace

const std::vector<std::string>& SizeOptions() {
  static const std::vector<std::string> options = [] {
    std::vector<std::string> v;
    for (const auto& c : kAreaConfigs) v.emplace_back(c.name);
    return v;
  }();
  return options;
}

StatusOr<int64_t> MaxAreaForSize(const std::string& size) {
  for (const auto& c : kAreaConfigs) {
    if (size == c.name) return c.area;
  }
  std::ostringstream msg;
  msg << "--size '" << size << "' is not one of:";
  for (const auto& c : kAreaConfigs) msg << ' ' << c.name;
  return Status::InvalidArgument(msg.str());
}

GenSize SizeLessThanArea(int64_t height, int64_t width, int64_t area, int64_t divisor) {
  TORCH_CHECK(height > 0 && width > 0 && area > 0 && divisor > 0, "SizeLessThanArea: bad arguments ", height, "x",
              width, " area ", area, " divisor ", divisor);
  const double h = static_cast<double>(height);
  const double w = static_cast<double>(width);
  const double hw = static_cast<double>(height * width);
  double min_scale = 0.1;
  double max_scale = 1.0;
  if (height * width > area) {
    // Bounds of the scale search: max_scale keeps the unpadded area within `area`; min_scale is where even the
    // worst-case padding (divisor-1 per side) fits. The reference's root uses b^2 - 2ac (not 4ac); we keep it.
    const double d = static_cast<double>(divisor - 1);
    const double b = d * (h + w);
    const double a = hw;
    const double c = d * d - static_cast<double>(area);
    min_scale = (-b + std::sqrt(b * b - 2.0 * a * c)) / (2.0 * a);
    max_scale = std::sqrt(static_cast<double>(area) / hw);
  }
  for (int i = 0; i < 100; ++i) {
    const double scale = max_scale - (max_scale - min_scale) * static_cast<double>(i) / 100.0;
    const int64_t nh = static_cast<int64_t>(h * scale);
    const int64_t nw = static_cast<int64_t>(w * scale);
    // The reference pads to multiples of 64 here regardless of `divisor`.
    const int64_t ph = nh + (64 - nh % 64) % 64;
    const int64_t pw = nw + (64 - nw % 64) % 64;
    if (ph * pw <= area) return {ph, pw};
  }
  // Fallback: the aspect-preserving size rounded down to multiples of `divisor`, never above the original.
  const double aspect = w / h;
  const double ad = static_cast<double>(area);
  const double dv = static_cast<double>(divisor);
  int64_t tw = static_cast<int64_t>(std::floor(std::sqrt(ad * aspect) / dv) * dv);
  int64_t th = static_cast<int64_t>(std::floor(std::sqrt(ad / aspect) / dv) * dv);
  if (tw >= width || th >= height) {
    tw = width / divisor * divisor;
    th = height / divisor * divisor;
  }
  return {th, tw};
}

StatusOr<GenSize> ResolveGenSize(int64_t img_h, int64_t img_w, const std::string& size) {
  LA_ASSIGN_OR_RETURN(const int64_t area, MaxAreaForSize(size));
  if (img_h <= 0 || img_w <= 0) {
    return Status::InvalidArgument("reference image has no pixels (" + std::to_string(img_w) + "x" +
                                   std::to_string(img_h) + ")");
  }
  GenSize s = SizeLessThanArea(img_h, img_w, area);
  if (s.height <= 0 || s.width <= 0) {
    return Status::InvalidArgument("reference image " + std::to_string(img_w) + "x" + std::to_string(img_h) +
                                   " is too small for --size " + size + " (needs at least 64 pixels per side)");
  }
  return s;
}

at::Tensor ResizeBilinearPil(const at::Tensor& rgb, int64_t out_h, int64_t out_w) {
  TORCH_CHECK(rgb.dim() == 3 && rgb.scalar_type() == at::kByte, "ResizeBilinearPil: expected uint8 [H, W, C], got ",
              rgb.sizes(), " ", rgb.scalar_type());
  TORCH_CHECK(out_h > 0 && out_w > 0, "ResizeBilinearPil: bad output size ", out_h, "x", out_w);
  TORCH_CHECK(rgb.size(0) > 0 && rgb.size(1) > 0, "ResizeBilinearPil: empty input ", rgb.sizes());
  at::Tensor src = rgb.to(at::kCPU).contiguous();
  const int64_t in_h = src.size(0);
  const int64_t in_w = src.size(1);
  const int64_t ch = src.size(2);
  const bool need_h = out_w != in_w;
  const bool need_v = out_h != in_h;
  if (!need_h && !need_v) return src.clone();

  const ResampleCoeffs cx = PrecomputeCoeffs(in_w, out_w);
  const ResampleCoeffs cy = PrecomputeCoeffs(in_h, out_h);
  // Pillow resamples horizontally only the rows the vertical pass reads.
  const int64_t row_first = need_h ? cy.first[0] : 0;
  const int64_t row_last = need_h ? cy.first[out_h - 1] + cy.count[out_h - 1] : in_h;

  at::Tensor tmp = src;
  if (need_h) {
    tmp = at::empty({row_last - row_first, out_w, ch}, at::kByte);
    const uint8_t* in = src.data_ptr<uint8_t>();
    uint8_t* out = tmp.data_ptr<uint8_t>();
    for (int64_t y = 0; y < row_last - row_first; ++y) {
      const uint8_t* in_row = in + (y + row_first) * in_w * ch;
      uint8_t* out_row = out + y * out_w * ch;
      for (int64_t x = 0; x < out_w; ++x) {
        const int32_t* k = &cx.weights[x * cx.ksize];
        const int64_t lo = cx.first[x];
        for (int64_t c = 0; c < ch; ++c) {
          int64_t acc = int64_t{1} << (kPrecisionBits - 1);
          for (int64_t t = 0; t < cx.count[x]; ++t) acc += int64_t{in_row[(lo + t) * ch + c]} * k[t];
          out_row[x * ch + c] = Clip8(acc);
        }
      }
    }
  }
  if (!need_v) return tmp;

  at::Tensor dst = at::empty({out_h, out_w, ch}, at::kByte);
  const uint8_t* in = tmp.data_ptr<uint8_t>();
  uint8_t* out = dst.data_ptr<uint8_t>();
  const int64_t row = out_w * ch;
  for (int64_t y = 0; y < out_h; ++y) {
    const int32_t* k = &cy.weights[y * cy.ksize];
    const int64_t lo = cy.first[y] - row_first;
    for (int64_t i = 0; i < row; ++i) {
      int64_t acc = int64_t{1} << (kPrecisionBits - 1);
      for (int64_t t = 0; t < cy.count[y]; ++t) acc += int64_t{in[(lo + t) * row + i]} * k[t];
      out[y * row + i] = Clip8(acc);
    }
  }
  return dst;
}

GenSize ShorterSideResize(int64_t height, int64_t width, int64_t size) {
  TORCH_CHECK(height > 0 && width > 0 && size > 0, "ShorterSideResize: bad arguments");
  const bool width_short = width <= height;
  const int64_t shrt = width_short ? width : height;
  const int64_t lng = width_short ? height : width;
  const int64_t new_long =
      static_cast<int64_t>(static_cast<double>(size * lng) / static_cast<double>(shrt));
  return width_short ? GenSize{new_long, size} : GenSize{size, new_long};
}

at::Tensor CenterCropPad(const at::Tensor& rgb, int64_t out_h, int64_t out_w) {
  TORCH_CHECK(rgb.dim() == 3, "CenterCropPad: expected [H, W, C], got ", rgb.sizes());
  TORCH_CHECK(out_h > 0 && out_w > 0, "CenterCropPad: bad crop size ", out_h, "x", out_w);
  at::Tensor img = rgb;
  int64_t h = img.size(0);
  int64_t w = img.size(1);
  if (out_h > h || out_w > w) {
    const int64_t pad_l = out_w > w ? (out_w - w) / 2 : 0;
    const int64_t pad_t = out_h > h ? (out_h - h) / 2 : 0;
    const int64_t pad_r = out_w > w ? (out_w - w + 1) / 2 : 0;
    const int64_t pad_b = out_h > h ? (out_h - h + 1) / 2 : 0;
    at::Tensor padded = at::zeros({h + pad_t + pad_b, w + pad_l + pad_r, img.size(2)}, img.options());
    padded.narrow(0, pad_t, h).narrow(1, pad_l, w).copy_(img);
    img = padded;
    h = img.size(0);
    w = img.size(1);
  }
  const int64_t top = RoundHalfEven(static_cast<double>(h - out_h) / 2.0);
  const int64_t left = RoundHalfEven(static_cast<double>(w - out_w) / 2.0);
  return img.narrow(0, top, out_h).narrow(1, left, out_w).contiguous();
}

at::Tensor PreprocessImage(const at::Tensor& rgb, int64_t out_h, int64_t out_w) {
  TORCH_CHECK(rgb.dim() == 3 && rgb.size(2) == 3 && rgb.scalar_type() == at::kByte,
              "PreprocessImage: expected uint8 [H, W, 3], got ", rgb.sizes(), " ", rgb.scalar_type());
  TORCH_CHECK(out_h > 0 && out_w > 0, "PreprocessImage: bad output size ", out_h, "x", out_w);
  const GenSize r = ShorterSideResize(rgb.size(0), rgb.size(1), std::min(out_h, out_w));
  at::Tensor resized = ResizeBilinearPil(rgb, r.height, r.width);
  at::Tensor cropped = CenterCropPad(resized, out_h, out_w);
  // ToTensor: HWC uint8 -> CHW float / 255; then * 2 - 1.
  return cropped.permute({2, 0, 1}).to(at::kFloat).div(255.0f).mul(2.0f).sub(1.0f).contiguous();
}

StatusOr<ReferenceImage> LoadReferenceImage(const std::string& path, const std::string& size) {
  LA_ASSIGN_OR_RETURN(at::Tensor rgb, ReadImage(path));
  ReferenceImage out;
  out.source = GenSize{rgb.size(0), rgb.size(1)};
  StatusOr<GenSize> gen = ResolveGenSize(out.source.height, out.source.width, size);
  if (!gen.ok()) return gen.status().WithPrefix("image '" + path + "'");
  out.size = gen.value();
  out.pixels = PreprocessImage(rgb, out.size.height, out.size.width);
  return out;
}

}  // namespace liveavatar::io
