// Still-image input: decodes the reference image (--image) into an RGB uint8 tensor.
//
// Decoders, picked from the file's magic bytes (not its extension):
//   * binary PPM/PGM (P6/P5, maxval <= 255): built in, needs no library.
//   * JPEG: libjpeg when built in (LIVEAVATAR_HAVE_JPEG) -- the same decoder and defaults (islow IDCT, fancy
//     upsampling) PIL uses, so pixels match the reference's `Image.open(path).convert('RGB')`; else FFmpeg.
//   * PNG: libpng when built in (LIVEAVATAR_HAVE_PNG), else FFmpeg. 16-bit samples keep their high byte,
//     palettes are expanded, grey is replicated to RGB and alpha is dropped (PIL's convert('RGB')).
//   * anything else FFmpeg's image demuxers know (WebP, BMP, TIFF, GIF first frame, ...) when built with FFmpeg
//     (LIVEAVATAR_HAVE_FFMPEG).
// EXIF orientation is ignored, as PIL's Image.open ignores it.
//
// Thread safety: free functions without shared state; safe to call concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"

namespace liveavatar::io {

// Reads and decodes the image at `path`.
// Returns a contiguous CPU uint8 tensor [H, W, 3] (RGB).
// Errors (all naming `path`): NotFound (missing file), IOError (unreadable), Corruption (empty, truncated or
// undecodable data), NotSupported (a format no built-in decoder handles, e.g. WebP without FFmpeg).
StatusOr<at::Tensor> ReadImage(const std::string& path);

// Same as ReadImage on an in-memory encoded image; `name` is used in error messages only.
StatusOr<at::Tensor> DecodeImage(const uint8_t* data, size_t size, const std::string& name);

// The decoder DecodeImage would use for these bytes: "ppm", "libpng", "libjpeg", "ffmpeg", or "" when this
// build has none for them. For logs and tests.
std::string ImageDecoderName(const uint8_t* data, size_t size);

// Writes a binary PPM (P6) from a uint8 [H, W, 3] tensor (any device/contiguity). For tests and debugging.
// REQUIRES: rgb is uint8 [H, W, 3] with H, W > 0 (InvalidArgument otherwise). IOError names `path`.
Status WritePpm(const std::string& path, const at::Tensor& rgb);

}  // namespace liveavatar::io
