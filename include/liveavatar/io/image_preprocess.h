// Reference-image preprocessing: the generation size rule and the resize / center-crop / normalise chain the
// reference applies to the --image before VAE-encoding it (reference doc §2.1;
// causal_s2v_pipeline*.py get_size_less_than_area / get_gen_size and the torchvision transforms in generate()).
//
//   size  = ResolveGenSize(img_h, img_w, "--size")           // multiples of 64, H*W <= area(--size)
//   x     = PreprocessImage(ReadImage(path), size.height, size.width)   // float [3, H, W] in [-1, 1]
//
// PreprocessImage = transforms.Resize(min(H, W)) on a PIL image (shorter side, bilinear with PIL's
// antialiasing, 8-bit fixed point exactly as Pillow's Resample.c), then transforms.CenterCrop((H, W)) (zero
// padding when the resized image is smaller than the crop), then ToTensor() * 2 - 1.
//
// All functions are pure and CPU-only; safe to call concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"

namespace liveavatar::io {

struct GenSize {
  int64_t height = 0;
  int64_t width = 0;
};

// The accepted --size strings ("W*H", e.g. "720*400"), in the reference's MAX_AREA_CONFIGS order.
const std::vector<std::string>& SizeOptions();

// Target pixel area for a --size string (W*H; only the product matters, the aspect follows the image).
// InvalidArgument naming --size and listing SizeOptions() for anything else.
StatusOr<int64_t> MaxAreaForSize(const std::string& size);

// get_size_less_than_area: the largest (H, W), each a multiple of `divisor` (64), with H*W <= area that keeps
// the image's aspect. Searches 100 scales from max_scale down to min_scale; at each, int(H*s), int(W*s) are
// rounded up to multiples of 64 and the first pair within `area` wins; otherwise falls back to rounding down.
// REQUIRES: height, width, area > 0 (TORCH_CHECK).
GenSize SizeLessThanArea(int64_t height, int64_t width, int64_t area, int64_t divisor = 64);

// get_gen_size: SizeLessThanArea(img_h, img_w, MaxAreaForSize(size)). For the reference's 720x400 (W x H)
// example image and --size 720*400 this is {384, 704}. InvalidArgument for a bad --size or non-positive dims.
StatusOr<GenSize> ResolveGenSize(int64_t img_h, int64_t img_w, const std::string& size);

// PIL Image.resize((out_w, out_h), BILINEAR) on uint8 [H, W, 3]: separable triangle filter whose support is
// scaled by the downscale factor (antialiasing), horizontal pass first, 22-bit fixed-point coefficients and
// uint8 rounding after each pass, like Pillow. Returns uint8 [out_h, out_w, 3].
// REQUIRES: rgb is uint8 [H, W, C] on CPU; out_h, out_w > 0 (TORCH_CHECK).
at::Tensor ResizeBilinearPil(const at::Tensor& rgb, int64_t out_h, int64_t out_w);

// torchvision transforms.Resize(size) with an int: the shorter side becomes `size`, the longer one
// int(size * long / short). Returns {new_h, new_w}.
GenSize ShorterSideResize(int64_t height, int64_t width, int64_t size);

// torchvision CenterCrop((out_h, out_w)) on uint8 [H, W, C]: pads with zeros ((d)//2 before, (d+1)//2 after)
// where the image is smaller, then crops at round((H - out_h) / 2) (Python round, half to even).
at::Tensor CenterCropPad(const at::Tensor& rgb, int64_t out_h, int64_t out_w);

// Resize(min(H, W)) + CenterCrop((H, W)) + ToTensor()*2-1: uint8 [h, w, 3] -> float32 [3, H, W] in [-1, 1].
// REQUIRES: rgb is uint8 [h, w, 3]; out_h, out_w > 0 (TORCH_CHECK).
at::Tensor PreprocessImage(const at::Tensor& rgb, int64_t out_h, int64_t out_w);

// The reference image as the pipeline consumes it: ReadImage(path), ResolveGenSize(h, w, size) and
// PreprocessImage. Errors from either step (naming the path or --size) are passed through.
struct ReferenceImage {
  at::Tensor pixels;  // float32 [3, size.height, size.width] in [-1, 1]
  GenSize size;       // generation size (multiples of 64)
  GenSize source;     // decoded image size
};
StatusOr<ReferenceImage> LoadReferenceImage(const std::string& path, const std::string& size);

}  // namespace liveavatar::io
