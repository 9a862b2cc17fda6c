// Still-image decoding (see image_reader.h): magic-byte dispatch to the built-in PPM/PGM parser, libjpeg,
// libpng or FFmpeg. libpng/libjpeg report errors through longjmp, so each of those decoders keeps only plain
// data in the frame that calls setjmp and owns its buffers through a context struct allocated by the caller.
#include "liveavatar/io/image_reader.h"

#include <ATen/ATen.h>

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#ifdef LIVEAVATAR_HAVE_PNG
#include <png.h>
#endif
#ifdef LIVEAVATAR_HAVE_JPEG
// jpeglib.h needs size_t and FILE declared first.
#include <jpeglib.h>
#include <jerror.h>
#endif
#ifdef LIVEAVATAR_HAVE_FFMPEG
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>
}
#endif

namespace liveavatar::io {
namespace {

// Limits that keep a hostile header from asking for absurd allocations (~ 268 Mpx).
constexpr int64_t kMaxPixels = int64_t{1} << 28;

enum class ImageKind { kUnknown, kPnm, kPng, kJpeg, kWebp, kOther };

ImageKind Sniff(const uint8_t* d, size_t n) {
  if (n >= 2 && d[0] == 'P' && (d[1] == '5' || d[1] == '6')) return ImageKind::kPnm;
  if (n >= 8 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return ImageKind::kPng;
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return ImageKind::kJpeg;
  if (n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0) return ImageKind::kWebp;
  if ((n >= 2 && d[0] == 'B' && d[1] == 'M') || (n >= 4 && std::memcmp(d, "GIF8", 4) == 0) ||
      (n >= 4 && (std::memcmp(d, "II*\0", 4) == 0 || std::memcmp(d, "MM\0*", 4) == 0)) ||
      (n >= 4 && std::memcmp(d, "qoif", 4) == 0)) {
    return ImageKind::kOther;
  }
  return ImageKind::kUnknown;
}

[[maybe_unused]] const char* KindName(ImageKind k) {
  switch (k) {
    case ImageKind::kPnm: return "PPM/PGM";
    case ImageKind::kPng: return "PNG";
    case ImageKind::kJpeg: return "JPEG";
    case ImageKind::kWebp: return "WebP";
    case ImageKind::kOther: return "image";
    case ImageKind::kUnknown: break;
  }
  return "unknown";
}

Status CheckDims(int64_t w, int64_t h, const std::string& name) {
  if (w <= 0 || h <= 0 || w * h > kMaxPixels) {
    return Status::Corruption("image '" + name + "' has invalid dimensions " + std::to_string(w) + "x" +
                              std::to_string(h));
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------------
// Binary PPM (P6) / PGM (P5), maxval 1..65535 (16-bit samples are big-endian; values rescaled to 0..255).

StatusOr<at::Tensor> DecodePnm(const uint8_t* d, size_t n, const std::string& name) {
  size_t pos = 2;
  auto next_int = [&](int64_t* out) -> bool {
    while (pos < n) {
      if (d[pos] == '#') {
        while (pos < n && d[pos] != '\n') ++pos;
      } else if (std::isspace(d[pos])) {
        ++pos;
      } else {
        break;
      }
    }
    if (pos >= n || !std::isdigit(d[pos])) return false;
    int64_t v = 0;
    while (pos < n && std::isdigit(d[pos])) {
      v = v * 10 + (d[pos] - '0');
      if (v > (int64_t{1} << 31)) return false;
      ++pos;
    }
    *out = v;
    return true;
  };
  const bool color = d[1] == '6';
  int64_t w = 0, h = 0, maxval = 0;
  if (!next_int(&w) || !next_int(&h) || !next_int(&maxval) || pos >= n || !std::isspace(d[pos])) {
    return Status::Corruption("image '" + name + "': malformed PPM/PGM header");
  }
  ++pos;  // the single whitespace byte before the raster
  LA_RETURN_IF_ERROR(CheckDims(w, h, name));
  if (maxval <= 0 || maxval > 65535) {
    return Status::Corruption("image '" + name + "': PPM/PGM maxval " + std::to_string(maxval) + " out of range");
  }
  const int64_t ch = color ? 3 : 1;
  const int64_t bps = maxval > 255 ? 2 : 1;
  const int64_t need = w * h * ch * bps;
  if (static_cast<int64_t>(n - pos) < need) {
    return Status::Corruption("image '" + name + "': PPM/PGM raster truncated (" + std::to_string(n - pos) +
                              " of " + std::to_string(need) + " bytes)");
  }
  at::Tensor out = at::empty({h, w, 3}, at::kByte);
  uint8_t* o = out.data_ptr<uint8_t>();
  const uint8_t* r = d + pos;
  for (int64_t i = 0; i < w * h; ++i) {
    for (int64_t c = 0; c < 3; ++c) {
      const int64_t s = (i * ch + (color ? c : 0)) * bps;
      int64_t v = bps == 2 ? (int64_t{r[s]} << 8 | r[s + 1]) : r[s];
      if (maxval != 255) v = (v * 255 + maxval / 2) / maxval;
      o[i * 3 + c] = static_cast<uint8_t>(std::min<int64_t>(v, 255));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
#ifdef LIVEAVATAR_HAVE_PNG
struct PngContext {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  char error[256] = {0};
  std::vector<uint8_t> pixels;  // rows of `rowbytes`
  std::vector<png_bytep> rows;
  uint32_t width = 0, height = 0;
  size_t rowbytes = 0;
  int channels = 0;
};

void PngRead(png_structp png, png_bytep out, png_size_t len) {
  auto* ctx = static_cast<PngContext*>(png_get_io_ptr(png));
  if (ctx->size - ctx->pos < len) png_error(png, "unexpected end of data (truncated file)");
  std::memcpy(out, ctx->data + ctx->pos, len);
  ctx->pos += len;
}

void PngError(png_structp png, png_const_charp msg) {
  auto* ctx = static_cast<PngContext*>(png_get_error_ptr(png));
  std::snprintf(ctx->error, sizeof(ctx->error), "%s", msg);
  png_longjmp(png, 1);
}

void PngWarning(png_structp, png_const_charp) {}

// Returns false with ctx->error set on failure. Only plain data lives in this frame across setjmp.
bool PngDecodeInto(PngContext* ctx) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx, PngError, PngWarning);
  if (png == nullptr) {
    std::snprintf(ctx->error, sizeof(ctx->error), "out of memory");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    std::snprintf(ctx->error, sizeof(ctx->error), "out of memory");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, ctx, PngRead);
  png_read_info(png, info);
  const png_uint_32 w = png_get_image_width(png, info);
  const png_uint_32 h = png_get_image_height(png, info);
  if (w == 0 || h == 0 || static_cast<int64_t>(w) * h > kMaxPixels) png_error(png, "invalid image dimensions");
  const int color_type = png_get_color_type(png, info);
  // PIL's convert('RGB'): palette expanded, grey replicated, alpha dropped, 16-bit keeps the high byte.
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY) png_set_expand_gray_1_2_4_to_8(png);
  if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_strip_16(png);
  png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  ctx->width = w;
  ctx->height = h;
  ctx->channels = png_get_channels(png, info);
  ctx->rowbytes = png_get_rowbytes(png, info);
  if ((ctx->channels != 3 && ctx->channels != 4) || ctx->rowbytes != static_cast<size_t>(w) * ctx->channels) {
    png_error(png, "unsupported PNG pixel layout");
  }
  ctx->pixels.resize(ctx->rowbytes * h);
  ctx->rows.resize(h);
  for (png_uint_32 y = 0; y < h; ++y) ctx->rows[y] = ctx->pixels.data() + y * ctx->rowbytes;
  png_read_image(png, ctx->rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

StatusOr<at::Tensor> DecodePng(const uint8_t* d, size_t n, const std::string& name) {
  PngContext ctx;
  ctx.data = d;
  ctx.size = n;
  if (!PngDecodeInto(&ctx)) return Status::Corruption("image '" + name + "': PNG decode failed: " + ctx.error);
  const int64_t h = ctx.height, w = ctx.width;
  at::Tensor out = at::empty({h, w, 3}, at::kByte);
  uint8_t* o = out.data_ptr<uint8_t>();
  for (int64_t i = 0; i < h * w; ++i) {
    std::memcpy(o + i * 3, ctx.pixels.data() + i * ctx.channels, 3);
  }
  return out;
}
#endif  // LIVEAVATAR_HAVE_PNG

// ---------------------------------------------------------------------------------------------------------
#ifdef LIVEAVATAR_HAVE_JPEG
struct JpegContext {
  jpeg_error_mgr err;  // first member: libjpeg hands back a pointer to it
  jmp_buf jump;
  char error[JMSG_LENGTH_MAX] = {0};
  bool truncated = false;
  std::vector<uint8_t> pixels;
  int64_t width = 0, height = 0;
  int channels = 0;
  bool adobe_inverted = false;
};

void JpegErrorExit(j_common_ptr cinfo) {
  auto* ctx = reinterpret_cast<JpegContext*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, ctx->error);
  std::longjmp(ctx->jump, 1);
}

void JpegEmitMessage(j_common_ptr cinfo, int level) {
  auto* ctx = reinterpret_cast<JpegContext*>(cinfo->err);
  // PIL refuses truncated JPEGs ("image file is truncated"); libjpeg only warns and pads with grey.
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) ctx->truncated = true;
}

bool JpegDecodeInto(JpegContext* ctx, const uint8_t* d, size_t n) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&ctx->err);
  ctx->err.error_exit = JpegErrorExit;
  ctx->err.emit_message = JpegEmitMessage;
  if (setjmp(ctx->jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, const_cast<unsigned char*>(d), static_cast<unsigned long>(n));
  jpeg_read_header(&cinfo, TRUE);
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  // Defaults otherwise (islow IDCT, fancy upsampling), as PIL's decoder uses them.
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  ctx->adobe_inverted = cmyk && cinfo.saw_Adobe_marker;
  jpeg_start_decompress(&cinfo);
  if (cinfo.output_width == 0 || cinfo.output_height == 0 ||
      static_cast<int64_t>(cinfo.output_width) * cinfo.output_height > kMaxPixels) {
    std::snprintf(ctx->error, sizeof(ctx->error), "invalid image dimensions");
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  ctx->width = cinfo.output_width;
  ctx->height = cinfo.output_height;
  ctx->channels = cinfo.output_components;
  const size_t stride = static_cast<size_t>(ctx->width) * ctx->channels;
  ctx->pixels.resize(stride * ctx->height);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = ctx->pixels.data() + stride * cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

StatusOr<at::Tensor> DecodeJpeg(const uint8_t* d, size_t n, const std::string& name) {
  auto ctx = std::make_unique<JpegContext>();
  if (!JpegDecodeInto(ctx.get(), d, n)) {
    return Status::Corruption("image '" + name + "': JPEG decode failed: " + ctx->error);
  }
  if (ctx->truncated) return Status::Corruption("image '" + name + "': JPEG data is truncated");
  const int64_t px = ctx->width * ctx->height;
  at::Tensor out = at::empty({ctx->height, ctx->width, 3}, at::kByte);
  uint8_t* o = out.data_ptr<uint8_t>();
  const uint8_t* p = ctx->pixels.data();
  if (ctx->channels == 3) {
    std::memcpy(o, p, static_cast<size_t>(px) * 3);
  } else if (ctx->channels == 1) {
    for (int64_t i = 0; i < px; ++i) o[i * 3] = o[i * 3 + 1] = o[i * 3 + 2] = p[i];
  } else if (ctx->channels == 4) {
    // CMYK -> RGB the way Pillow does it (Adobe files store inverted CMYK).
    for (int64_t i = 0; i < px; ++i) {
      int v[4];
      for (int c = 0; c < 4; ++c) v[c] = ctx->adobe_inverted ? 255 - p[i * 4 + c] : p[i * 4 + c];
      const int nk = 255 - v[3];
      for (int c = 0; c < 3; ++c) {
        const int t = v[c] * nk + 128;
        const int r = nk - (((t >> 8) + t) >> 8);
        o[i * 3 + c] = static_cast<uint8_t>(std::clamp(r, 0, 255));
      }
    }
  } else {
    return Status::NotSupported("image '" + name + "': JPEG with " + std::to_string(ctx->channels) +
                                " components");
  }
  return out;
}
#endif  // LIVEAVATAR_HAVE_JPEG

// ---------------------------------------------------------------------------------------------------------
#ifdef LIVEAVATAR_HAVE_FFMPEG
std::string AvError(int err) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(err, buf, sizeof(buf));
  return buf;
}

struct MemReader {
  const uint8_t* data;
  size_t size;
  size_t pos;
};

int MemRead(void* opaque, uint8_t* buf, int len) {
  auto* r = static_cast<MemReader*>(opaque);
  const size_t left = r->size - r->pos;
  if (left == 0) return AVERROR_EOF;
  const size_t n = std::min(left, static_cast<size_t>(len));
  std::memcpy(buf, r->data + r->pos, n);
  r->pos += n;
  return static_cast<int>(n);
}

int64_t MemSeek(void* opaque, int64_t offset, int whence) {
  auto* r = static_cast<MemReader*>(opaque);
  if (whence == AVSEEK_SIZE) return static_cast<int64_t>(r->size);
  int64_t base = 0;
  switch (whence & ~AVSEEK_FORCE) {
    case SEEK_SET: base = 0; break;
    case SEEK_CUR: base = static_cast<int64_t>(r->pos); break;
    case SEEK_END: base = static_cast<int64_t>(r->size); break;
    default: return AVERROR(EINVAL);
  }
  const int64_t p = base + offset;
  if (p < 0 || p > static_cast<int64_t>(r->size)) return AVERROR(EINVAL);
  r->pos = static_cast<size_t>(p);
  return p;
}

// Owns every FFmpeg object of one decode; the destructor frees what was made.
struct FfDecode {
  MemReader reader{};
  AVIOContext* avio = nullptr;
  AVFormatContext* fmt = nullptr;
  AVCodecContext* dec = nullptr;
  AVPacket* pkt = nullptr;
  AVFrame* frame = nullptr;
  SwsContext* sws = nullptr;
  ~FfDecode() {
    sws_freeContext(sws);
    av_frame_free(&frame);
    av_packet_free(&pkt);
    avcodec_free_context(&dec);
    avformat_close_input(&fmt);  // does not free the custom AVIO
    if (avio != nullptr) av_freep(&avio->buffer);
    avio_context_free(&avio);
  }
};

StatusOr<at::Tensor> DecodeWithFfmpeg(const uint8_t* d, size_t n, const std::string& name) {
  FfDecode s;
  s.reader = MemReader{d, n, 0};
  constexpr int kBuf = 1 << 16;
  auto* buf = static_cast<uint8_t*>(av_malloc(kBuf));
  if (buf == nullptr) return Status::OutOfMemory("image '" + name + "': av_malloc failed");
  s.avio = avio_alloc_context(buf, kBuf, 0, &s.reader, MemRead, nullptr, MemSeek);
  if (s.avio == nullptr) {
    av_free(buf);
    return Status::OutOfMemory("image '" + name + "': avio_alloc_context failed");
  }
  s.fmt = avformat_alloc_context();
  if (s.fmt == nullptr) return Status::OutOfMemory("image '" + name + "': avformat_alloc_context failed");
  s.fmt->pb = s.avio;
  s.fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
  int err = avformat_open_input(&s.fmt, nullptr, nullptr, nullptr);
  if (err < 0) {
    s.fmt = nullptr;  // freed by avformat_open_input on failure
    return Status::Corruption("image '" + name + "': not a recognised image (" + AvError(err) + ")");
  }
  const std::string demuxer = s.fmt->iformat != nullptr ? s.fmt->iformat->name : "";
  if (demuxer.find("_pipe") == std::string::npos && demuxer != "gif" && demuxer != "image2") {
    return Status::Corruption("image '" + name + "': not a recognised image (FFmpeg probed it as '" + demuxer +
                              "')");
  }
  err = avformat_find_stream_info(s.fmt, nullptr);
  if (err < 0) return Status::Corruption("image '" + name + "': cannot read stream info (" + AvError(err) + ")");
  const int stream = av_find_best_stream(s.fmt, AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  if (stream < 0) return Status::Corruption("image '" + name + "': contains no picture");
  const AVCodecParameters* par = s.fmt->streams[stream]->codecpar;
  const AVCodec* codec = avcodec_find_decoder(par->codec_id);
  if (codec == nullptr) {
    return Status::NotSupported("image '" + name + "': FFmpeg has no decoder for codec '" +
                                avcodec_get_name(par->codec_id) + "'");
  }
  s.dec = avcodec_alloc_context3(codec);
  s.pkt = av_packet_alloc();
  s.frame = av_frame_alloc();
  if (s.dec == nullptr || s.pkt == nullptr || s.frame == nullptr) {
    return Status::OutOfMemory("image '" + name + "': FFmpeg allocation failed");
  }
  if ((err = avcodec_parameters_to_context(s.dec, par)) < 0 || (err = avcodec_open2(s.dec, codec, nullptr)) < 0) {
    return Status::Corruption("image '" + name + "': cannot open decoder (" + AvError(err) + ")");
  }
  bool got = false;
  bool flushing = false;
  while (!got) {
    if (!flushing) {
      err = av_read_frame(s.fmt, s.pkt);
      if (err < 0) {
        flushing = true;
        avcodec_send_packet(s.dec, nullptr);
      } else {
        if (s.pkt->stream_index == stream) {
          err = avcodec_send_packet(s.dec, s.pkt);
          if (err < 0 && err != AVERROR(EAGAIN)) {
            av_packet_unref(s.pkt);
            return Status::Corruption("image '" + name + "': decode failed (" + AvError(err) + ")");
          }
        }
        av_packet_unref(s.pkt);
      }
    }
    err = avcodec_receive_frame(s.dec, s.frame);
    if (err == 0) {
      got = true;
    } else if (err == AVERROR(EAGAIN) && !flushing) {
      continue;
    } else {
      return Status::Corruption("image '" + name + "': no picture could be decoded (" + AvError(err) + ")");
    }
  }
  const int w = s.frame->width, h = s.frame->height;
  LA_RETURN_IF_ERROR(CheckDims(w, h, name));
  s.sws = sws_getContext(w, h, static_cast<AVPixelFormat>(s.frame->format), w, h, AV_PIX_FMT_RGB24,
                         SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, nullptr, nullptr, nullptr);
  if (s.sws == nullptr) {
    return Status::NotSupported("image '" + name + "': cannot convert pixel format '" +
                                av_get_pix_fmt_name(static_cast<AVPixelFormat>(s.frame->format)) + "' to RGB");
  }
  at::Tensor out = at::empty({h, w, 3}, at::kByte);
  uint8_t* dst[4] = {out.data_ptr<uint8_t>(), nullptr, nullptr, nullptr};
  int dst_stride[4] = {3 * w, 0, 0, 0};
  sws_scale(s.sws, s.frame->data, s.frame->linesize, 0, h, dst, dst_stride);
  return out;
}
#endif  // LIVEAVATAR_HAVE_FFMPEG

}  // namespace

StatusOr<at::Tensor> DecodeImage(const uint8_t* data, size_t size, const std::string& name) {
  if (data == nullptr || size == 0) return Status::Corruption("image '" + name + "' is empty");
  const ImageKind kind = Sniff(data, size);
  switch (kind) {
    case ImageKind::kPnm:
      return DecodePnm(data, size, name);
    case ImageKind::kPng:
#ifdef LIVEAVATAR_HAVE_PNG
      return DecodePng(data, size, name);
#else
      break;
#endif
    case ImageKind::kJpeg:
#ifdef LIVEAVATAR_HAVE_JPEG
      return DecodeJpeg(data, size, name);
#else
      break;
#endif
    default:
      break;
  }
#ifdef LIVEAVATAR_HAVE_FFMPEG
  return DecodeWithFfmpeg(data, size, name);
#else
  if (kind == ImageKind::kUnknown) {
    return Status::Corruption("image '" + name + "' is not a PNG, JPEG or PPM/PGM file");
  }
  return Status::NotSupported(std::string("image '") + name + "' is " + KindName(kind) +
                              ", which this build cannot decode (built without FFmpeg" +
                              (kind == ImageKind::kPng ? "/libpng" : kind == ImageKind::kJpeg ? "/libjpeg" : "") +
                              "); convert it to PNG, JPEG or PPM");
#endif
}

std::string ImageDecoderName(const uint8_t* data, size_t size) {
  if (data == nullptr || size == 0) return "";
  const ImageKind kind = Sniff(data, size);
  if (kind == ImageKind::kPnm) return "ppm";
#ifdef LIVEAVATAR_HAVE_PNG
  if (kind == ImageKind::kPng) return "libpng";
#endif
#ifdef LIVEAVATAR_HAVE_JPEG
  if (kind == ImageKind::kJpeg) return "libjpeg";
#endif
#ifdef LIVEAVATAR_HAVE_FFMPEG
  return "ffmpeg";
#else
  return "";
#endif
}

StatusOr<at::Tensor> ReadImage(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::NotFound("image '" + path + "' does not exist");
    return Status::IOError("image '" + path + "': " + std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) return Status::InvalidArgument("image '" + path + "' is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IOError("image '" + path + "' cannot be opened: " + std::strerror(errno));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return Status::IOError("image '" + path + "': read error");
  if (bytes.empty()) return Status::Corruption("image '" + path + "' is empty");
  return DecodeImage(bytes.data(), bytes.size(), path);
}

Status WritePpm(const std::string& path, const at::Tensor& rgb) {
  if (!rgb.defined() || rgb.dim() != 3 || rgb.size(2) != 3 || rgb.scalar_type() != at::kByte || rgb.size(0) <= 0 ||
      rgb.size(1) <= 0) {
    return Status::InvalidArgument("WritePpm '" + path + "': expected uint8 [H, W, 3]");
  }
  at::Tensor c = rgb.to(at::kCPU).contiguous();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return Status::IOError("cannot create '" + path + "': " + std::strerror(errno));
  const std::string header = "P6\n" + std::to_string(c.size(1)) + " " + std::to_string(c.size(0)) + "\n255\n";
  const size_t n = static_cast<size_t>(c.numel());
  const bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
                  std::fwrite(c.data_ptr<uint8_t>(), 1, n, f) == n;
  if (std::fclose(f) != 0 || !ok) return Status::IOError("write to '" + path + "' failed");
  return Status::Ok();
}

}  // namespace liveavatar::io
