// VideoWriter backend on libavformat/libavcodec: H.264 (libx264, else mpeg4) + AAC in one pass, with the
// audio pulled from PCM samples or decoded from a file as the video advances (see video_writer.h).
#include <ATen/ATen.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "liveavatar/core/logging.h"
#include "video_writer_internal.h"

#ifdef LIVEAVATAR_HAVE_FFMPEG
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/audio_fifo.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>
#include <libswscale/swscale.h>
}
#if LIBAVUTIL_VERSION_INT < AV_VERSION_INT(57, 24, 100)
#error "the FFmpeg video writer needs FFmpeg >= 5.1 (AVChannelLayout API); configure with -DLIVEAVATAR_WITH_FFMPEG=OFF"
#endif
#endif

namespace liveavatar::io::video_internal {

#ifndef LIVEAVATAR_HAVE_FFMPEG

StatusOr<std::unique_ptr<VideoWriter::Impl>> OpenFfmpeg(const std::string& path, int, int,
                                                        const VideoWriterOptions&, const at::Tensor&, int,
                                                        const std::string&) {
  return Status::NotSupported("video '" + path + "': this build has no FFmpeg (H.264/AAC output)");
}

bool KnowsContainer(const std::string&) { return true; }

#else

namespace {

std::string AvError(int err) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(err, buf, sizeof(buf));
  return buf;
}

bool StartsWith(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// Sample rates the AAC encoder accepts.
int SupportedAacRate(int rate) {
  static const int kRates[] = {96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350};
  for (int r : kRates) {
    if (r == rate) return rate;
  }
  return 48000;
}

class FfmpegWriter : public VideoWriter::Impl {
 public:
  ~FfmpegWriter() override { Abort(); }

  Status Init(const std::string& path, int width, int height, const VideoWriterOptions& options, const at::Tensor& pcm,
              int pcm_rate, const std::string& audio_path) {
    // libx264 reports statistics at AV_LOG_INFO; keep the engine's stderr clean unless asked otherwise.
    if (av_log_get_level() >= AV_LOG_INFO) av_log_set_level(AV_LOG_WARNING);
    width_ = width;
    height_ = height;
    fps_ = options.fps;
    name_ = path;
    LA_RETURN_IF_ERROR(OpenContainer(path, options));
    LA_RETURN_IF_ERROR(OpenVideo(options));
    if (pcm.defined()) {
      pcm_ = pcm;
      LA_RETURN_IF_ERROR(OpenAudio(pcm_rate, 1, options));
      const AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
      LA_RETURN_IF_ERROR(MakeResampler(&mono, AV_SAMPLE_FMT_FLT, pcm_rate));
    } else if (!audio_path.empty()) {
      LA_RETURN_IF_ERROR(OpenAudioFile(audio_path, options));
    }
    if (!(oc_->oformat->flags & AVFMT_NOFILE)) {
      const int err = avio_open2(&oc_->pb, url_.c_str(), AVIO_FLAG_WRITE, nullptr, nullptr);
      if (err < 0) return Status::IOError("video '" + path + "': cannot open '" + url_ + "': " + AvError(err));
    }
    const int err = avformat_write_header(oc_, nullptr);
    if (err < 0) return Status::IOError("video '" + path + "': cannot write the header: " + AvError(err));
    header_written_ = true;
    return Status::Ok();
  }

  Status WriteFrame(const uint8_t* rgb) override {
    if (has_audio()) {
      // -shortest: a frame that starts at or after the end of the audio is dropped.
      const int64_t start = SamplesForFrames(frames_written, out_rate_, fps_);
      LA_RETURN_IF_ERROR(FillFifo(start - samples_encoded_ + 1));
      if (audio_eof_ && (samples_encoded_ + av_audio_fifo_size(fifo_)) * fps_ <= frames_written * out_rate_) {
        ++frames_dropped;
        return Status::Ok();
      }
    }
    int err = av_frame_make_writable(vframe_);
    if (err < 0) return Status::OutOfMemory("video '" + name_ + "': " + AvError(err));
    const uint8_t* src[4] = {rgb, nullptr, nullptr, nullptr};
    const int src_stride[4] = {3 * width_, 0, 0, 0};
    sws_scale(sws_, src, src_stride, 0, height_, vframe_->data, vframe_->linesize);
    vframe_->pts = frames_written;
    LA_RETURN_IF_ERROR(Encode(venc_, vst_, vframe_));
    ++frames_written;
    if (has_audio()) LA_RETURN_IF_ERROR(EncodeAudio(SamplesForFrames(frames_written, out_rate_, fps_), false));
    return Status::Ok();
  }

  Status Finish() override {
    if (has_audio()) {
      LA_RETURN_IF_ERROR(EncodeAudio(SamplesForFrames(frames_written, out_rate_, fps_), true));
      LA_RETURN_IF_ERROR(Encode(aenc_, ast_, nullptr));
    }
    LA_RETURN_IF_ERROR(Encode(venc_, vst_, nullptr));
    int err = av_write_trailer(oc_);
    if (err < 0) return Status::IOError("video '" + name_ + "': cannot write the trailer: " + AvError(err));
    if (!(oc_->oformat->flags & AVFMT_NOFILE)) {
      err = avio_closep(&oc_->pb);
      if (err < 0) return Status::IOError("video '" + name_ + "': closing '" + url_ + "' failed: " + AvError(err));
    }
    if (!partial_.empty()) {
      if (std::rename(partial_.c_str(), name_.c_str()) != 0) {
        return Status::IOError("cannot rename '" + partial_ + "' to '" + name_ + "': " + std::strerror(errno));
      }
    }
    finished_ = true;
    Release();
    return Status::Ok();
  }

  void Abort() override {
    if (oc_ != nullptr && oc_->pb != nullptr && !(oc_->oformat->flags & AVFMT_NOFILE)) avio_closep(&oc_->pb);
    Release();
    if (!finished_ && !partial_.empty()) std::remove(partial_.c_str());
  }

 private:
  bool has_audio() const { return aenc_ != nullptr; }

  void Release() {
    sws_freeContext(sws_);
    sws_ = nullptr;
    swr_free(&swr_);
    if (fifo_ != nullptr) av_audio_fifo_free(fifo_);
    fifo_ = nullptr;
    av_frame_free(&vframe_);
    av_frame_free(&aframe_);
    av_frame_free(&in_frame_);
    av_packet_free(&pkt_);
    av_packet_free(&in_pkt_);
    avcodec_free_context(&venc_);
    avcodec_free_context(&aenc_);
    avcodec_free_context(&adec_);
    avformat_close_input(&in_fmt_);
    if (oc_ != nullptr) {
      if (oc_->pb != nullptr && !(oc_->oformat->flags & AVFMT_NOFILE)) avio_closep(&oc_->pb);
      avformat_free_context(oc_);
      oc_ = nullptr;
    }
  }

  Status OpenContainer(const std::string& path, const VideoWriterOptions& options) {
    std::string format = options.format;
    if (path == "-") {
      url_ = "pipe:1";
      if (format.empty()) format = "mpegts";
    } else if (path.find("://") != std::string::npos || StartsWith(path, "pipe:") || StartsWith(path, "file:")) {
      url_ = path;
      if (format.empty()) {
        if (StartsWith(path, "rtmp")) format = "flv";
        else if (StartsWith(path, "udp:") || StartsWith(path, "tcp:") || StartsWith(path, "srt:") ||
                 StartsWith(path, "rtp:") || StartsWith(path, "pipe:")) format = "mpegts";
      }
      if (path.find("://") != std::string::npos) avformat_network_init();
    } else {
      partial_ = path + ".partial";
      url_ = partial_;
    }
    const AVOutputFormat* ofmt = nullptr;
    if (!format.empty()) {
      ofmt = av_guess_format(format.c_str(), nullptr, nullptr);
      if (ofmt == nullptr) return Status::InvalidArgument("video '" + path + "': unknown container '" + format + "'");
    } else {
      ofmt = av_guess_format(nullptr, StartsWith(path, "file:") ? path.substr(5).c_str() : path.c_str(), nullptr);
      if (ofmt == nullptr) {
        return Status::InvalidArgument("video '" + path +
                                       "': cannot tell the container from the name; use .mp4/.mkv/.ts or set a format");
      }
    }
    const int err = avformat_alloc_output_context2(&oc_, ofmt, nullptr, url_.c_str());
    if (err < 0 || oc_ == nullptr) return Status::Internal("video '" + path + "': " + AvError(err));
    pkt_ = av_packet_alloc();
    if (pkt_ == nullptr) return Status::OutOfMemory("video '" + path + "': av_packet_alloc failed");
    return Status::Ok();
  }

  Status OpenVideo(const VideoWriterOptions& options) {
    const AVCodec* codec = avcodec_find_encoder_by_name("libx264");
    bool x264 = codec != nullptr;
    if (!x264) {
      codec = avcodec_find_encoder(AV_CODEC_ID_MPEG4);
      if (codec == nullptr) return Status::NotSupported("video '" + name_ + "': FFmpeg has neither libx264 nor mpeg4");
      LA_LOG_WARN("video '{}': libx264 is not available in this FFmpeg; falling back to the mpeg4 encoder", name_);
    }
    encoder_name = codec->name;
    venc_ = avcodec_alloc_context3(codec);
    if (venc_ == nullptr) return Status::OutOfMemory("video: avcodec_alloc_context3 failed");
    venc_->width = width_;
    venc_->height = height_;
    venc_->time_base = AVRational{1, fps_};
    venc_->framerate = AVRational{fps_, 1};
    venc_->pix_fmt = AV_PIX_FMT_YUV420P;
    venc_->sample_aspect_ratio = AVRational{1, 1};
    if (x264) {
      av_opt_set(venc_->priv_data, "preset", options.preset.c_str(), 0);
      av_opt_set(venc_->priv_data, "crf", std::to_string(options.crf).c_str(), 0);
    } else {
      venc_->flags |= AV_CODEC_FLAG_QSCALE;
      venc_->global_quality = FF_QP2LAMBDA * 7;  // imageio: int((1 - 8/10) * 30) + 1
    }
    if (oc_->oformat->flags & AVFMT_GLOBALHEADER) venc_->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    int err = avcodec_open2(venc_, codec, nullptr);
    if (err < 0) {
      return Status::InvalidArgument("video '" + name_ + "': cannot open the " + codec->name +
                                     " encoder (preset '" + options.preset + "'?): " + AvError(err));
    }
    vst_ = avformat_new_stream(oc_, nullptr);
    if (vst_ == nullptr) return Status::OutOfMemory("video: avformat_new_stream failed");
    err = avcodec_parameters_from_context(vst_->codecpar, venc_);
    if (err < 0) return Status::Internal("video: " + AvError(err));
    vst_->time_base = venc_->time_base;
    vst_->avg_frame_rate = venc_->framerate;
    vframe_ = av_frame_alloc();
    if (vframe_ == nullptr) return Status::OutOfMemory("video: av_frame_alloc failed");
    vframe_->format = AV_PIX_FMT_YUV420P;
    vframe_->width = width_;
    vframe_->height = height_;
    err = av_frame_get_buffer(vframe_, 0);
    if (err < 0) return Status::OutOfMemory("video: " + AvError(err));
    // The ffmpeg CLI's default scaler (bicubic), BT.601 limited range, as imageio's rgb24 pipe gets.
    sws_ = sws_getContext(width_, height_, AV_PIX_FMT_RGB24, width_, height_, AV_PIX_FMT_YUV420P, SWS_BICUBIC,
                          nullptr, nullptr, nullptr);
    if (sws_ == nullptr) return Status::Internal("video: sws_getContext failed");
    return Status::Ok();
  }

  Status OpenAudio(int in_rate, int channels, const VideoWriterOptions& options) {
    const AVCodec* codec = avcodec_find_encoder(AV_CODEC_ID_AAC);
    if (codec == nullptr) return Status::NotSupported("video '" + name_ + "': FFmpeg has no AAC encoder");
    aenc_ = avcodec_alloc_context3(codec);
    if (aenc_ == nullptr) return Status::OutOfMemory("video: avcodec_alloc_context3 failed");
    out_rate_ = SupportedAacRate(in_rate);
    aenc_->sample_rate = out_rate_;
    aenc_->sample_fmt = AV_SAMPLE_FMT_FLTP;
    av_channel_layout_default(&aenc_->ch_layout, channels);
    // The native AAC encoder allows at most 6144 bits per channel per 1024-sample frame.
    const int64_t cap = int64_t{6144} * out_rate_ / 1024 * channels;
    aenc_->bit_rate = std::min<int64_t>(options.audio_bitrate, cap);
    aenc_->time_base = AVRational{1, out_rate_};
    if (oc_->oformat->flags & AVFMT_GLOBALHEADER) aenc_->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    int err = avcodec_open2(aenc_, codec, nullptr);
    if (err < 0) return Status::Internal("video '" + name_ + "': cannot open the AAC encoder: " + AvError(err));
    ast_ = avformat_new_stream(oc_, nullptr);
    if (ast_ == nullptr) return Status::OutOfMemory("video: avformat_new_stream failed");
    err = avcodec_parameters_from_context(ast_->codecpar, aenc_);
    if (err < 0) return Status::Internal("video: " + AvError(err));
    ast_->time_base = aenc_->time_base;
    frame_size_ = aenc_->frame_size > 0 ? aenc_->frame_size : 1024;
    small_last_frame_ = (codec->capabilities & AV_CODEC_CAP_SMALL_LAST_FRAME) != 0;
    aframe_ = av_frame_alloc();
    if (aframe_ == nullptr) return Status::OutOfMemory("video: av_frame_alloc failed");
    aframe_->format = AV_SAMPLE_FMT_FLTP;
    aframe_->sample_rate = out_rate_;
    av_channel_layout_copy(&aframe_->ch_layout, &aenc_->ch_layout);
    aframe_->nb_samples = frame_size_;
    err = av_frame_get_buffer(aframe_, 0);
    if (err < 0) return Status::OutOfMemory("video: " + AvError(err));
    fifo_ = av_audio_fifo_alloc(AV_SAMPLE_FMT_FLTP, channels, frame_size_);
    if (fifo_ == nullptr) return Status::OutOfMemory("video: av_audio_fifo_alloc failed");
    channels_ = channels;
    return Status::Ok();
  }

  Status MakeResampler(const AVChannelLayout* in_layout, AVSampleFormat in_fmt, int in_rate) {
    // FFmpeg 5.1 declares the layouts non-const (6.0+ const); they are only read.
    int err = swr_alloc_set_opts2(&swr_, &aenc_->ch_layout, AV_SAMPLE_FMT_FLTP, out_rate_,
                                  const_cast<AVChannelLayout*>(in_layout), in_fmt, in_rate, 0, nullptr);
    if (err < 0 || swr_ == nullptr) return Status::Internal("video: swr_alloc_set_opts2 failed: " + AvError(err));
    err = swr_init(swr_);
    if (err < 0) return Status::Internal("video: swr_init failed: " + AvError(err));
    return Status::Ok();
  }

  Status OpenAudioFile(const std::string& audio_path, const VideoWriterOptions& options) {
    audio_name_ = audio_path;
    struct stat st;
    if (::stat(audio_path.c_str(), &st) != 0) {
      return Status::NotFound("audio file '" + audio_path + "' does not exist");
    }
    int err = avformat_open_input(&in_fmt_, audio_path.c_str(), nullptr, nullptr);
    if (err < 0) return Status::Corruption("audio file '" + audio_path + "' cannot be opened: " + AvError(err));
    err = avformat_find_stream_info(in_fmt_, nullptr);
    if (err < 0) return Status::Corruption("audio file '" + audio_path + "': " + AvError(err));
    in_stream_ = av_find_best_stream(in_fmt_, AVMEDIA_TYPE_AUDIO, -1, -1, nullptr, 0);
    if (in_stream_ < 0) return Status::Corruption("audio file '" + audio_path + "' has no audio stream");
    const AVCodecParameters* par = in_fmt_->streams[in_stream_]->codecpar;
    const AVCodec* dec = avcodec_find_decoder(par->codec_id);
    if (dec == nullptr) {
      return Status::NotSupported("audio file '" + audio_path + "': no decoder for " + avcodec_get_name(par->codec_id));
    }
    adec_ = avcodec_alloc_context3(dec);
    if (adec_ == nullptr) return Status::OutOfMemory("audio: avcodec_alloc_context3 failed");
    if ((err = avcodec_parameters_to_context(adec_, par)) < 0 || (err = avcodec_open2(adec_, dec, nullptr)) < 0) {
      return Status::Corruption("audio file '" + audio_path + "': cannot open the decoder: " + AvError(err));
    }
    if (adec_->sample_rate <= 0 || adec_->ch_layout.nb_channels <= 0) {
      return Status::Corruption("audio file '" + audio_path + "': no sample rate / channel count");
    }
    // Keep the file's rate and (up to two) channels, as `ffmpeg -c:a aac` does.
    LA_RETURN_IF_ERROR(OpenAudio(adec_->sample_rate, std::min(adec_->ch_layout.nb_channels, 2), options));
    AVChannelLayout in_layout;
    if (adec_->ch_layout.order == AV_CHANNEL_ORDER_UNSPEC) {
      av_channel_layout_default(&in_layout, adec_->ch_layout.nb_channels);
    } else {
      av_channel_layout_copy(&in_layout, &adec_->ch_layout);
    }
    Status s = MakeResampler(&in_layout, adec_->sample_fmt, adec_->sample_rate);
    av_channel_layout_uninit(&in_layout);
    LA_RETURN_IF_ERROR(s);
    in_pkt_ = av_packet_alloc();
    in_frame_ = av_frame_alloc();
    if (in_pkt_ == nullptr || in_frame_ == nullptr) return Status::OutOfMemory("audio: allocation failed");
    return Status::Ok();
  }

  // Converts `count` input samples (nullptr input = flush the resampler) and appends them to the fifo.
  Status Resample(const uint8_t** in, int count) {
    const int cap = swr_get_out_samples(swr_, count);
    if (cap <= 0) return Status::Ok();
    planes_.resize(channels_);
    uint8_t* out[8] = {nullptr};
    for (int c = 0; c < channels_; ++c) {
      planes_[c].resize(cap);
      out[c] = reinterpret_cast<uint8_t*>(planes_[c].data());
    }
    const int n = swr_convert(swr_, out, cap, in, count);
    if (n < 0) return Status::Internal("audio resampling failed: " + AvError(n));
    if (n > 0 && av_audio_fifo_write(fifo_, reinterpret_cast<void**>(out), n) < n) {
      return Status::OutOfMemory("audio fifo write failed");
    }
    return Status::Ok();
  }

  // Pulls more source audio into the fifo; sets audio_eof_ when the source is exhausted.
  Status PullAudio() {
    if (pcm_.defined()) {
      constexpr int64_t kChunk = 4096;
      const int64_t left = pcm_.numel() - pcm_pos_;
      if (left <= 0) {
        LA_RETURN_IF_ERROR(Resample(nullptr, 0));
        audio_eof_ = true;
        return Status::Ok();
      }
      const int n = static_cast<int>(std::min(left, kChunk));
      const uint8_t* in[1] = {reinterpret_cast<const uint8_t*>(pcm_.data_ptr<float>() + pcm_pos_)};
      pcm_pos_ += n;
      return Resample(in, n);
    }
    // Audio file: one packet (or the decoder flush) at a time.
    int err = 0;
    if (!in_draining_) {
      err = av_read_frame(in_fmt_, in_pkt_);
      if (err == AVERROR_EOF) {
        in_draining_ = true;
        avcodec_send_packet(adec_, nullptr);
      } else if (err < 0) {
        return Status::Corruption("audio file '" + audio_name_ + "': read error: " + AvError(err));
      } else {
        if (in_pkt_->stream_index == in_stream_) err = avcodec_send_packet(adec_, in_pkt_);
        av_packet_unref(in_pkt_);
        if (err < 0 && err != AVERROR(EAGAIN) && err != AVERROR_INVALIDDATA) {
          return Status::Corruption("audio file '" + audio_name_ + "': decode error: " + AvError(err));
        }
      }
    }
    while (true) {
      err = avcodec_receive_frame(adec_, in_frame_);
      if (err == AVERROR(EAGAIN)) break;
      if (err == AVERROR_EOF) {
        LA_RETURN_IF_ERROR(Resample(nullptr, 0));
        audio_eof_ = true;
        break;
      }
      if (err < 0) return Status::Corruption("audio file '" + audio_name_ + "': decode error: " + AvError(err));
      Status s = Resample(const_cast<const uint8_t**>(in_frame_->extended_data), in_frame_->nb_samples);
      av_frame_unref(in_frame_);
      LA_RETURN_IF_ERROR(s);
    }
    return Status::Ok();
  }

  Status FillFifo(int64_t need) {
    while (!audio_eof_ && av_audio_fifo_size(fifo_) < need) LA_RETURN_IF_ERROR(PullAudio());
    return Status::Ok();
  }

  // Encodes audio up to sample `limit` (clamped to the end of the source). Whole encoder frames only unless
  // `final`, when the remainder goes out as a short last frame.
  Status EncodeAudio(int64_t limit, bool final) {
    while (samples_encoded_ < limit) {
      const int64_t want = std::min<int64_t>(frame_size_, limit - samples_encoded_);
      if (want < frame_size_ && !final) break;
      LA_RETURN_IF_ERROR(FillFifo(want));
      const int n = static_cast<int>(std::min<int64_t>(want, av_audio_fifo_size(fifo_)));
      if (n <= 0) break;
      int err = av_frame_make_writable(aframe_);
      if (err < 0) return Status::OutOfMemory("audio: " + AvError(err));
      if (av_audio_fifo_read(fifo_, reinterpret_cast<void**>(aframe_->data), n) < n) {
        return Status::Internal("audio fifo read failed");
      }
      aframe_->nb_samples = n;
      if (n < frame_size_ && !small_last_frame_) {
        for (int c = 0; c < channels_; ++c) {
          std::fill(reinterpret_cast<float*>(aframe_->data[c]) + n,
                    reinterpret_cast<float*>(aframe_->data[c]) + frame_size_, 0.0f);
        }
        aframe_->nb_samples = frame_size_;
      }
      aframe_->pts = samples_encoded_;
      samples_encoded_ += n;
      LA_RETURN_IF_ERROR(Encode(aenc_, ast_, aframe_));
      aframe_->nb_samples = frame_size_;
      if (n < want) break;  // source exhausted
    }
    return Status::Ok();
  }

  // Sends `frame` (nullptr = flush) and writes every packet the encoder returns.
  Status Encode(AVCodecContext* enc, AVStream* st, AVFrame* frame) {
    int err = avcodec_send_frame(enc, frame);
    if (err < 0 && !(frame == nullptr && err == AVERROR_EOF)) {
      return Status::IOError("video '" + name_ + "': encoding failed: " + AvError(err));
    }
    while (true) {
      err = avcodec_receive_packet(enc, pkt_);
      if (err == AVERROR(EAGAIN) || err == AVERROR_EOF) break;
      if (err < 0) return Status::IOError("video '" + name_ + "': encoding failed: " + AvError(err));
      av_packet_rescale_ts(pkt_, enc->time_base, st->time_base);
      pkt_->stream_index = st->index;
      err = av_interleaved_write_frame(oc_, pkt_);
      if (err < 0) return Status::IOError("video '" + name_ + "': writing to '" + url_ + "' failed: " + AvError(err));
    }
    return Status::Ok();
  }

  int width_ = 0, height_ = 0, fps_ = 25;
  std::string name_, url_, partial_, audio_name_;
  bool header_written_ = false, finished_ = false;

  AVFormatContext* oc_ = nullptr;
  AVPacket* pkt_ = nullptr;
  AVCodecContext* venc_ = nullptr;
  AVStream* vst_ = nullptr;
  AVFrame* vframe_ = nullptr;
  SwsContext* sws_ = nullptr;

  AVCodecContext* aenc_ = nullptr;
  AVStream* ast_ = nullptr;
  AVFrame* aframe_ = nullptr;
  AVAudioFifo* fifo_ = nullptr;
  SwrContext* swr_ = nullptr;
  int out_rate_ = 0, channels_ = 0, frame_size_ = 1024;
  bool small_last_frame_ = false;
  int64_t samples_encoded_ = 0;
  bool audio_eof_ = false;
  std::vector<std::vector<float>> planes_;

  at::Tensor pcm_;
  int64_t pcm_pos_ = 0;

  AVFormatContext* in_fmt_ = nullptr;
  AVCodecContext* adec_ = nullptr;
  AVPacket* in_pkt_ = nullptr;
  AVFrame* in_frame_ = nullptr;
  int in_stream_ = -1;
  bool in_draining_ = false;
};

}  // namespace

StatusOr<std::unique_ptr<VideoWriter::Impl>> OpenFfmpeg(const std::string& path, int width, int height,
                                                        const VideoWriterOptions& options, const at::Tensor& pcm,
                                                        int sample_rate, const std::string& audio_path) {
  auto w = std::make_unique<FfmpegWriter>();
  Status s = w->Init(path, width, height, options, pcm, sample_rate, audio_path);
  if (!s.ok()) {
    w->Abort();
    return s;
  }
  w->output_paths.push_back(path);
  return std::unique_ptr<VideoWriter::Impl>(std::move(w));
}

bool KnowsContainer(const std::string& path) {
  const std::string name = path.rfind("file:", 0) == 0 ? path.substr(5) : path;
  return av_guess_format(nullptr, name.c_str(), nullptr) != nullptr;
}

#endif  // LIVEAVATAR_HAVE_FFMPEG

}  // namespace liveavatar::io::video_internal
