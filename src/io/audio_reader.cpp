#include "liveavatar/io/audio_reader.h"

#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include <ATen/ATen.h>

#ifdef LIVEAVATAR_HAVE_SNDFILE
#include <sndfile.h>
#endif

#ifdef LIVEAVATAR_HAVE_FFMPEG
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/error.h>
#include <libavutil/opt.h>
#include <libavutil/samplefmt.h>
#include <libswresample/swresample.h>
}
// FFmpeg 5.1 (libavutil 57.24) replaced the channel-count fields by AVChannelLayout.
#define LA_FFMPEG_HAS_CH_LAYOUT (LIBAVUTIL_VERSION_INT >= AV_VERSION_INT(57, 24, 100))
#endif

namespace liveavatar::io {

namespace {

// Mono samples at the file's rate, plus what the caller reports.
struct Decoded {
  std::vector<float> mono;
  int rate = 0;
  int channels = 0;
  std::string decoder;
};

// Appends the per-frame mean of `channels` interleaved float samples.
void MixInterleaved(const float* data, int64_t frames, int channels, std::vector<float>* out) {
  out->reserve(out->size() + static_cast<size_t>(frames));
  if (channels == 1) {
    out->insert(out->end(), data, data + frames);
    return;
  }
  const float inv = 1.0f / static_cast<float>(channels);
  for (int64_t f = 0; f < frames; ++f) {
    float acc = 0.0f;
    for (int c = 0; c < channels; ++c) acc += data[f * channels + c];
    out->push_back(acc * inv);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Built-in RIFF/WAVE parser.

uint16_t Le16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t Le32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

StatusOr<Decoded> DecodeWav(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open " + path);
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t n = bytes.size();
  if (n < 12 || std::memcmp(bytes.data(), "RIFF", 4) != 0 || std::memcmp(bytes.data() + 8, "WAVE", 4) != 0) {
    return Status::NotSupported("not a RIFF/WAVE file");
  }
  bool have_fmt = false;
  int format = 0, channels = 0, bits = 0;
  uint32_t rate = 0;
  const unsigned char* data = nullptr;
  size_t data_bytes = 0;
  size_t pos = 12;
  while (pos + 8 <= n) {
    const unsigned char* hdr = bytes.data() + pos;
    size_t size = Le32(hdr + 4);
    const size_t body = pos + 8;
    if (std::memcmp(hdr, "fmt ", 4) == 0) {
      if (size < 16 || body + size > n) return Status::Corruption("truncated 'fmt ' chunk");
      const unsigned char* f = bytes.data() + body;
      format = Le16(f);
      channels = Le16(f + 2);
      rate = Le32(f + 4);
      bits = Le16(f + 14);
      if (format == 0xFFFE) {  // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the real tag
        if (size < 40) return Status::Corruption("truncated WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk");
        format = Le16(f + 24);
      }
      have_fmt = true;
    } else if (std::memcmp(hdr, "data", 4) == 0) {
      // Streamed writers leave 0 or 0xFFFFFFFF; take what the file holds.
      if (size == 0 || body + size > n) size = n - body;
      data = bytes.data() + body;
      data_bytes = size;
      break;
    }
    pos = body + size + (size & 1);
  }
  if (!have_fmt) return Status::NotSupported("RIFF/WAVE file without a 'fmt ' chunk");
  if (data == nullptr) return Status::Corruption("RIFF/WAVE file without a 'data' chunk");
  if (channels <= 0 || rate == 0) return Status::Corruption("'fmt ' chunk with 0 channels or 0 Hz");
  const bool is_float = format == 3;
  if (!(format == 1 || is_float) || (is_float && bits != 32 && bits != 64) ||
      (!is_float && bits != 8 && bits != 16 && bits != 24 && bits != 32)) {
    return Status::NotSupported("WAV encoding format tag " + std::to_string(format) + " with " +
                                std::to_string(bits) +
                                " bits/sample (the built-in parser reads PCM 8/16/24/32-bit and float 32/64-bit)");
  }
  const size_t bytes_per_sample = static_cast<size_t>(bits / 8);
  const size_t frames = data_bytes / (bytes_per_sample * static_cast<size_t>(channels));
  std::vector<float> interleaved(frames * static_cast<size_t>(channels));
  for (size_t i = 0; i < interleaved.size(); ++i) {
    const unsigned char* p = data + i * bytes_per_sample;
    float v = 0.0f;
    if (is_float && bits == 32) {
      std::memcpy(&v, p, 4);
    } else if (is_float) {
      double d;
      std::memcpy(&d, p, 8);
      v = static_cast<float>(d);
    } else if (bits == 8) {
      v = (static_cast<float>(p[0]) - 128.0f) / 128.0f;  // 8-bit WAV is unsigned
    } else if (bits == 16) {
      v = static_cast<float>(static_cast<int16_t>(Le16(p))) / 32768.0f;
    } else if (bits == 24) {
      int32_t s = static_cast<int32_t>(static_cast<uint32_t>(p[0]) << 8 | static_cast<uint32_t>(p[1]) << 16 |
                                       static_cast<uint32_t>(p[2]) << 24) >> 8;
      v = static_cast<float>(s) / 8388608.0f;
    } else {
      v = static_cast<float>(static_cast<double>(static_cast<int32_t>(Le32(p))) / 2147483648.0);
    }
    interleaved[i] = v;
  }
  Decoded d;
  d.rate = static_cast<int>(rate);
  d.channels = channels;
  d.decoder = "wav";
  MixInterleaved(interleaved.data(), static_cast<int64_t>(frames), channels, &d.mono);
  return d;
}

// ---------------------------------------------------------------------------------------------------------
// libsndfile.

#ifdef LIVEAVATAR_HAVE_SNDFILE
StatusOr<Decoded> DecodeSndfile(const std::string& path) {
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  SNDFILE* file = sf_open(path.c_str(), SFM_READ, &info);
  if (file == nullptr) return Status::NotSupported(sf_strerror(nullptr));
  std::unique_ptr<SNDFILE, int (*)(SNDFILE*)> guard(file, &sf_close);
  if (info.channels <= 0 || info.samplerate <= 0) return Status::Corruption("0 channels or 0 Hz");
  Decoded d;
  d.rate = info.samplerate;
  d.channels = info.channels;
  d.decoder = "sndfile";
  constexpr sf_count_t kBlock = 16384;
  std::vector<float> buf(static_cast<size_t>(kBlock * info.channels));
  for (;;) {
    const sf_count_t got = sf_readf_float(file, buf.data(), kBlock);
    if (got <= 0) break;
    MixInterleaved(buf.data(), got, info.channels, &d.mono);
  }
  if (sf_error(file) != SF_ERR_NO_ERROR) return Status::Corruption(std::string("decode error: ") + sf_strerror(file));
  return d;
}
#endif

// ---------------------------------------------------------------------------------------------------------
// FFmpeg.

#ifdef LIVEAVATAR_HAVE_FFMPEG
std::string AvError(int err) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(err, buf, sizeof(buf));
  return buf;
}

int FrameChannels(const AVFrame* frame) {
#if LA_FFMPEG_HAS_CH_LAYOUT
  return frame->ch_layout.nb_channels;
#else
  return frame->channels;
#endif
}

// Sample `i` of channel `c` of a decoded frame, as float.
float FrameSample(const AVFrame* frame, int channels, int c, int i) {
  const auto fmt = static_cast<AVSampleFormat>(frame->format);
  const bool planar = av_sample_fmt_is_planar(fmt) != 0;
  const int bps = av_get_bytes_per_sample(fmt);
  const uint8_t* base = planar ? frame->extended_data[c] : frame->extended_data[0];
  const int64_t idx = planar ? i : static_cast<int64_t>(i) * channels + c;
  const uint8_t* p = base + idx * bps;
  switch (av_get_packed_sample_fmt(fmt)) {
    case AV_SAMPLE_FMT_U8: return (static_cast<float>(*p) - 128.0f) / 128.0f;
    case AV_SAMPLE_FMT_S16: { int16_t v; std::memcpy(&v, p, 2); return static_cast<float>(v) / 32768.0f; }
    case AV_SAMPLE_FMT_S32: { int32_t v; std::memcpy(&v, p, 4); return static_cast<float>(v / 2147483648.0); }
    case AV_SAMPLE_FMT_S64: { int64_t v; std::memcpy(&v, p, 8); return static_cast<float>(v / 9223372036854775808.0); }
    case AV_SAMPLE_FMT_FLT: { float v; std::memcpy(&v, p, 4); return v; }
    case AV_SAMPLE_FMT_DBL: { double v; std::memcpy(&v, p, 8); return static_cast<float>(v); }
    default: return 0.0f;
  }
}

StatusOr<Decoded> DecodeFfmpeg(const std::string& path) {
  AVFormatContext* fmt_raw = nullptr;
  int err = avformat_open_input(&fmt_raw, path.c_str(), nullptr, nullptr);
  if (err < 0) return Status::NotSupported("avformat_open_input: " + AvError(err));
  std::unique_ptr<AVFormatContext, void (*)(AVFormatContext*)> fmt(fmt_raw, [](AVFormatContext* f) {
    avformat_close_input(&f);
  });
  if ((err = avformat_find_stream_info(fmt.get(), nullptr)) < 0) {
    return Status::NotSupported("avformat_find_stream_info: " + AvError(err));
  }
  const int stream = av_find_best_stream(fmt.get(), AVMEDIA_TYPE_AUDIO, -1, -1, nullptr, 0);
  if (stream < 0) return Status::NotSupported("no audio stream in the container");
  const AVCodecParameters* par = fmt->streams[stream]->codecpar;
  const AVCodec* codec = avcodec_find_decoder(par->codec_id);
  if (codec == nullptr) {
    return Status::NotSupported(std::string("no decoder for codec ") + avcodec_get_name(par->codec_id));
  }
  std::unique_ptr<AVCodecContext, void (*)(AVCodecContext*)> ctx(avcodec_alloc_context3(codec), [](AVCodecContext* c) {
    avcodec_free_context(&c);
  });
  if (!ctx) return Status::OutOfMemory("avcodec_alloc_context3");
  if ((err = avcodec_parameters_to_context(ctx.get(), par)) < 0 || (err = avcodec_open2(ctx.get(), codec, nullptr)) < 0) {
    return Status::NotSupported(std::string("cannot open the ") + codec->name + " decoder: " + AvError(err));
  }
  std::unique_ptr<AVPacket, void (*)(AVPacket*)> pkt(av_packet_alloc(), [](AVPacket* p) { av_packet_free(&p); });
  std::unique_ptr<AVFrame, void (*)(AVFrame*)> frame(av_frame_alloc(), [](AVFrame* f) { av_frame_free(&f); });
  if (!pkt || !frame) return Status::OutOfMemory("av_packet_alloc/av_frame_alloc");

  Decoded d;
  d.decoder = "ffmpeg";
  Status failure = Status::Ok();
  auto drain = [&]() -> bool {
    for (;;) {
      const int r = avcodec_receive_frame(ctx.get(), frame.get());
      if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return true;
      if (r < 0) {
        failure = Status::Corruption("decode error: " + AvError(r));
        return false;
      }
      const int channels = FrameChannels(frame.get());
      if (channels <= 0 || frame->sample_rate <= 0) {
        failure = Status::Corruption("decoded frame with 0 channels or 0 Hz");
        return false;
      }
      if (d.rate == 0) {
        d.rate = frame->sample_rate;
        d.channels = channels;
      } else if (d.rate != frame->sample_rate || d.channels != channels) {
        failure = Status::NotSupported("the audio stream changes its sample rate or channel count mid-stream");
        return false;
      }
      const float inv = 1.0f / static_cast<float>(channels);
      for (int i = 0; i < frame->nb_samples; ++i) {
        float acc = 0.0f;
        for (int c = 0; c < channels; ++c) acc += FrameSample(frame.get(), channels, c, i);
        d.mono.push_back(acc * inv);
      }
      av_frame_unref(frame.get());
    }
  };
  while ((err = av_read_frame(fmt.get(), pkt.get())) >= 0) {
    bool ok = true;
    if (pkt->stream_index == stream) {
      const int r = avcodec_send_packet(ctx.get(), pkt.get());
      // Invalid data in one packet is skipped (as ffmpeg itself does); anything else is fatal.
      if (r < 0 && r != AVERROR_INVALIDDATA) {
        failure = Status::Corruption("avcodec_send_packet: " + AvError(r));
        ok = false;
      } else {
        ok = drain();
      }
    }
    av_packet_unref(pkt.get());
    if (!ok) return failure;
  }
  avcodec_send_packet(ctx.get(), nullptr);  // flush
  if (!drain()) return failure;
  return d;
}

StatusOr<at::Tensor> ResampleSwr(const at::Tensor& mono, int from_rate, int to_rate, int64_t out_len) {
  std::unique_ptr<SwrContext, void (*)(SwrContext*)> swr(swr_alloc(), [](SwrContext* s) { swr_free(&s); });
  if (!swr) return Status::OutOfMemory("swr_alloc");
#if LA_FFMPEG_HAS_CH_LAYOUT
  AVChannelLayout layout;
  av_channel_layout_default(&layout, 1);
  av_opt_set_chlayout(swr.get(), "in_chlayout", &layout, 0);
  av_opt_set_chlayout(swr.get(), "out_chlayout", &layout, 0);
#else
  av_opt_set_int(swr.get(), "in_channel_layout", AV_CH_LAYOUT_MONO, 0);
  av_opt_set_int(swr.get(), "out_channel_layout", AV_CH_LAYOUT_MONO, 0);
#endif
  av_opt_set_int(swr.get(), "in_sample_rate", from_rate, 0);
  av_opt_set_int(swr.get(), "out_sample_rate", to_rate, 0);
  av_opt_set_sample_fmt(swr.get(), "in_sample_fmt", AV_SAMPLE_FMT_FLT, 0);
  av_opt_set_sample_fmt(swr.get(), "out_sample_fmt", AV_SAMPLE_FMT_FLT, 0);
  int err = swr_init(swr.get());
  if (err < 0) return Status::Internal("swr_init: " + AvError(err));
  const int64_t n = mono.numel();
  std::vector<float> out(static_cast<size_t>(out_len + 4096));
  int64_t produced = 0;
  const float* src = mono.data_ptr<float>();
  // Feed in blocks so each call's output fits the buffer; swr buffers its filter history internally.
  constexpr int64_t kBlock = 1 << 16;
  for (int64_t off = 0; off <= n; off += kBlock) {
    const bool flush = off >= n;
    const int in_count = flush ? 0 : static_cast<int>(std::min<int64_t>(kBlock, n - off));
    const uint8_t* in_ptr = reinterpret_cast<const uint8_t*>(src + off);
    const int room = swr_get_out_samples(swr.get(), in_count);
    if (produced + room > static_cast<int64_t>(out.size())) out.resize(static_cast<size_t>(produced + room));
    uint8_t* out_ptr = reinterpret_cast<uint8_t*>(out.data() + produced);
    const int got = swr_convert(swr.get(), &out_ptr, room, flush ? nullptr : &in_ptr, in_count);
    if (got < 0) return Status::Internal("swr_convert: " + AvError(got));
    produced += got;
    if (flush) break;
  }
  out.resize(static_cast<size_t>(produced));
  out.resize(static_cast<size_t>(out_len), 0.0f);  // librosa length convention (a few samples' difference)
  at::Tensor t = at::empty({out_len}, at::kFloat);
  if (out_len > 0) std::memcpy(t.data_ptr<float>(), out.data(), static_cast<size_t>(out_len) * sizeof(float));
  return t;
}
#endif  // LIVEAVATAR_HAVE_FFMPEG

at::Tensor ResampleLinear(const at::Tensor& mono, int from_rate, int to_rate, int64_t out_len) {
  const int64_t n = mono.numel();
  at::Tensor out = at::zeros({out_len}, at::kFloat);
  if (n == 0) return out;
  const float* src = mono.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const double step = static_cast<double>(from_rate) / static_cast<double>(to_rate);
  for (int64_t i = 0; i < out_len; ++i) {
    const double pos = static_cast<double>(i) * step;
    const int64_t i0 = static_cast<int64_t>(pos);
    if (i0 >= n - 1) {
      dst[i] = src[n - 1];
      continue;
    }
    const double frac = pos - static_cast<double>(i0);
    dst[i] = static_cast<float>(src[i0] * (1.0 - frac) + src[i0 + 1] * frac);
  }
  return out;
}

}  // namespace

int64_t AudioClip::num_samples() const { return samples.defined() ? samples.numel() : 0; }

double AudioClip::duration_seconds() const {
  return sample_rate > 0 ? static_cast<double>(num_samples()) / sample_rate : 0.0;
}

bool AudioDecoderAvailable(AudioDecoder decoder) {
  switch (decoder) {
    case AudioDecoder::kSndfile:
#ifdef LIVEAVATAR_HAVE_SNDFILE
      return true;
#else
      return false;
#endif
    case AudioDecoder::kFfmpeg:
#ifdef LIVEAVATAR_HAVE_FFMPEG
      return true;
#else
      return false;
#endif
    default:
      return true;
  }
}

bool ResamplerAvailable(Resampler resampler) {
  if (resampler == Resampler::kSwresample) return AudioDecoderAvailable(AudioDecoder::kFfmpeg);
  return true;
}

StatusOr<at::Tensor> ResampleAudio(const at::Tensor& mono, int from_rate, int to_rate, Resampler resampler) {
  if (from_rate <= 0 || to_rate <= 0) {
    return Status::InvalidArgument("ResampleAudio: rates must be positive (got " + std::to_string(from_rate) +
                                   " -> " + std::to_string(to_rate) + ")");
  }
  if (!mono.defined() || mono.dim() != 1) return Status::InvalidArgument("ResampleAudio: expects a 1-D signal");
  at::Tensor x = mono.to(at::kCPU, at::kFloat).contiguous();
  if (from_rate == to_rate) return x;
  const int64_t out_len = static_cast<int64_t>(
      std::ceil(static_cast<double>(x.numel()) * static_cast<double>(to_rate) / static_cast<double>(from_rate)));
  if (resampler == Resampler::kLinear) return ResampleLinear(x, from_rate, to_rate, out_len);
#ifdef LIVEAVATAR_HAVE_FFMPEG
  return ResampleSwr(x, from_rate, to_rate, out_len);
#else
  if (resampler == Resampler::kSwresample) {
    return Status::NotSupported("ResampleAudio: libswresample requested but this build has no FFmpeg");
  }
  return ResampleLinear(x, from_rate, to_rate, out_len);
#endif
}

StatusOr<AudioClip> ReadAudio(const std::string& path, int target_rate) {
  AudioReadOptions options;
  options.target_rate = target_rate;
  return ReadAudio(path, options);
}

StatusOr<AudioClip> ReadAudio(const std::string& path, const AudioReadOptions& options) {
  const std::string where = "ReadAudio(" + path + ")";
  if (options.target_rate <= 0) {
    return Status::InvalidArgument(where + ": target rate must be positive, got " + std::to_string(options.target_rate));
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::NotFound(where + ": no such file");
  if (S_ISDIR(st.st_mode)) return Status::InvalidArgument(where + ": is a directory, not an audio file");
  if (st.st_size == 0) return Status::InvalidArgument(where + ": the file is empty (0 bytes)");
  {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) return Status::NotFound(where + ": cannot open the file for reading");
  }
  if (!AudioDecoderAvailable(options.decoder)) {
    return Status::NotSupported(where + ": the requested decoder was not built in (rebuild with libsndfile/FFmpeg)");
  }

  // Try the decoders in order; remember why each one refused the file.
  std::vector<std::string> refusals;
  StatusOr<Decoded> decoded = Status::NotSupported("no decoder tried");
  bool done = false;
  auto attempt = [&](const char* name, StatusOr<Decoded> r) {
    if (r.ok()) {
      decoded = std::move(r);
      done = true;
    } else if (r.status().code() == Status::Code::kNotSupported) {
      refusals.push_back(std::string(name) + ": " + r.status().message());
    } else {
      decoded = std::move(r);  // accepted the file but failed: report that error
      done = true;
    }
  };
  const AudioDecoder which = options.decoder;
#ifdef LIVEAVATAR_HAVE_SNDFILE
  if (!done && (which == AudioDecoder::kAuto || which == AudioDecoder::kSndfile)) attempt("libsndfile", DecodeSndfile(path));
#endif
#ifdef LIVEAVATAR_HAVE_FFMPEG
  if (!done && (which == AudioDecoder::kAuto || which == AudioDecoder::kFfmpeg)) attempt("FFmpeg", DecodeFfmpeg(path));
#endif
  if (!done && (which == AudioDecoder::kAuto || which == AudioDecoder::kBuiltinWav)) attempt("built-in WAV", DecodeWav(path));
  if (!done) {
    std::ostringstream o;
    o << where << ": not a decodable audio file";
    for (const auto& r : refusals) o << "; " << r;
#if !defined(LIVEAVATAR_HAVE_SNDFILE) && !defined(LIVEAVATAR_HAVE_FFMPEG)
    o << " (this build has neither libsndfile nor FFmpeg: only PCM/float WAV is readable)";
#endif
    return Status::NotSupported(o.str());
  }
  if (!decoded.ok()) return decoded.status().WithPrefix(where);
  Decoded d = std::move(decoded).value();
  if (d.mono.empty()) return Status::InvalidArgument(where + ": the file holds no audio samples");
  if (d.rate < kMinSourceRate || d.rate > kMaxSourceRate) {
    return Status::InvalidArgument(where + ": sample rate " + std::to_string(d.rate) + " Hz is outside " +
                                   std::to_string(kMinSourceRate) + "-" + std::to_string(kMaxSourceRate) +
                                   " Hz (a damaged header?)");
  }
  if (d.channels > kMaxChannels) {
    return Status::InvalidArgument(where + ": " + std::to_string(d.channels) + " channels (at most " +
                                   std::to_string(kMaxChannels) + ")");
  }
  const double seconds = static_cast<double>(d.mono.size()) / d.rate;
  if (seconds > options.max_seconds) {
    char buf[160];
    std::snprintf(buf, sizeof(buf), ": %.1f s of audio exceeds the %.0f s limit (--max_audio_s raises it)", seconds,
                  options.max_seconds);
    return Status::InvalidArgument(where + buf);
  }
  for (size_t i = 0; i < d.mono.size(); ++i) {
    if (!std::isfinite(d.mono[i])) {
      return Status::InvalidArgument(where + ": sample " + std::to_string(i) + " is " +
                                     (std::isnan(d.mono[i]) ? "NaN" : "infinite") + " (a damaged float WAV?)");
    }
  }

  at::Tensor native = at::empty({static_cast<int64_t>(d.mono.size())}, at::kFloat);
  std::memcpy(native.data_ptr<float>(), d.mono.data(), d.mono.size() * sizeof(float));
  auto resampled = ResampleAudio(native, d.rate, options.target_rate, options.resampler);
  if (!resampled.ok()) return resampled.status().WithPrefix(where);

  AudioClip clip;
  clip.samples = std::move(resampled).value();
  clip.sample_rate = options.target_rate;
  clip.source_rate = d.rate;
  clip.source_channels = d.channels;
  clip.decoder = d.decoder;
  return clip;
}

}  // namespace liveavatar::io
