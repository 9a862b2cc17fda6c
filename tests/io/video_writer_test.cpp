// Tests for VideoWriter: H.264 + AAC through FFmpeg (reopened with libavformat to check frame count, size,
// fps, audio presence and -shortest trimming), the .partial/rename/Abort rules, the reference's float -> uint8
// conversion, and the library-free y4m + wav writer (forced with options.raw).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <unistd.h>
#include <vector>

#include "liveavatar/io/video_writer.h"

#ifdef LIVEAVATAR_HAVE_FFMPEG
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libswscale/swscale.h>
}
#endif

namespace liveavatar::io {
namespace {

namespace fs = std::filesystem;

constexpr int kW = 64;
constexpr int kH = 48;

// A smooth gradient frame whose colours shift with `i`, uint8 [kH, kW, 3].
at::Tensor GradientFrame(int i) {
  at::Tensor f = at::empty({kH, kW, 3}, at::kByte);
  uint8_t* p = f.data_ptr<uint8_t>();
  for (int y = 0; y < kH; ++y)
    for (int x = 0; x < kW; ++x) {
      p[(y * kW + x) * 3 + 0] = static_cast<uint8_t>(x * 3 + i * 5);
      p[(y * kW + x) * 3 + 1] = static_cast<uint8_t>(y * 4);
      p[(y * kW + x) * 3 + 2] = static_cast<uint8_t>(128 + i * 3);
    }
  return f;
}

at::Tensor Sine(double seconds, int rate) {
  const int64_t n = static_cast<int64_t>(seconds * rate);
  return at::sin(at::arange(n, at::kFloat) * static_cast<float>(2 * M_PI * 440.0 / rate)) * 0.5f;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class VideoWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("la_video_writer_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string P(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

#ifdef LIVEAVATAR_HAVE_FFMPEG
struct Probe {
  bool ok = false;
  int width = 0, height = 0;
  AVRational fps{0, 1};
  std::string video_codec;
  int64_t video_packets = 0;
  double video_seconds = 0;
  bool has_audio = false;
  std::string audio_codec;
  int audio_rate = 0;
  double audio_seconds = 0;
  double first_frame_mean_abs_diff = -1;  // vs `reference` (RGB) when given
};

Probe ProbeFile(const std::string& path, const at::Tensor& reference = at::Tensor()) {
  Probe r;
  AVFormatContext* fmt = nullptr;
  if (avformat_open_input(&fmt, path.c_str(), nullptr, nullptr) < 0) return r;
  if (avformat_find_stream_info(fmt, nullptr) < 0) {
    avformat_close_input(&fmt);
    return r;
  }
  const int vs = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  const int as = av_find_best_stream(fmt, AVMEDIA_TYPE_AUDIO, -1, -1, nullptr, 0);
  AVCodecContext* dec = nullptr;
  if (vs >= 0) {
    const AVStream* st = fmt->streams[vs];
    r.width = st->codecpar->width;
    r.height = st->codecpar->height;
    r.fps = st->avg_frame_rate;
    r.video_codec = avcodec_get_name(st->codecpar->codec_id);
    const AVCodec* codec = avcodec_find_decoder(st->codecpar->codec_id);
    dec = avcodec_alloc_context3(codec);
    avcodec_parameters_to_context(dec, st->codecpar);
    avcodec_open2(dec, codec, nullptr);
  }
  int64_t audio_samples = 0;
  if (as >= 0) {
    r.has_audio = true;
    r.audio_codec = avcodec_get_name(fmt->streams[as]->codecpar->codec_id);
    r.audio_rate = fmt->streams[as]->codecpar->sample_rate;
  }
  AVPacket* pkt = av_packet_alloc();
  AVFrame* frame = av_frame_alloc();
  bool decoded_first = false;
  int64_t video_end = 0;
  auto take_frame = [&]() {
    while (!decoded_first && avcodec_receive_frame(dec, frame) == 0) {
      decoded_first = true;
      if (reference.defined()) {
        at::Tensor rgb = at::empty({r.height, r.width, 3}, at::kByte);
        SwsContext* sws = sws_getContext(r.width, r.height, static_cast<AVPixelFormat>(frame->format), r.width,
                                         r.height, AV_PIX_FMT_RGB24, SWS_BICUBIC, nullptr, nullptr, nullptr);
        uint8_t* dst[4] = {rgb.data_ptr<uint8_t>(), nullptr, nullptr, nullptr};
        int stride[4] = {3 * r.width, 0, 0, 0};
        sws_scale(sws, frame->data, frame->linesize, 0, r.height, dst, stride);
        sws_freeContext(sws);
        r.first_frame_mean_abs_diff = (rgb.to(at::kFloat) - reference.to(at::kFloat)).abs().mean().item<float>();
      }
    }
  };
  while (av_read_frame(fmt, pkt) >= 0) {
    if (pkt->stream_index == vs) {
      ++r.video_packets;
      const AVRational tb = fmt->streams[vs]->time_base;
      video_end = std::max<int64_t>(video_end, pkt->pts + pkt->duration);
      r.video_seconds = static_cast<double>(video_end) * tb.num / tb.den;
      if (!decoded_first && dec != nullptr) {
        avcodec_send_packet(dec, pkt);
        take_frame();
      }
    } else if (pkt->stream_index == as) {
      audio_samples += pkt->duration;  // in the stream time base
    }
    av_packet_unref(pkt);
  }
  if (!decoded_first && dec != nullptr) {
    avcodec_send_packet(dec, nullptr);
    take_frame();
  }
  if (as >= 0) {
    const AVRational tb = fmt->streams[as]->time_base;
    r.audio_seconds = static_cast<double>(audio_samples) * tb.num / tb.den;
  }
  av_frame_free(&frame);
  av_packet_free(&pkt);
  avcodec_free_context(&dec);
  avformat_close_input(&fmt);
  r.ok = true;
  return r;
}

TEST_F(VideoWriterTest, Mp4WithPcmAudioIsTrimmedToTheVideo) {
  const std::string path = P("out.mp4");
  VideoWriterOptions opt;
  AudioTrack audio;
  audio.samples = Sine(1.0, 16000);  // 1 s of audio, 0.4 s of video
  audio.sample_rate = 16000;
  auto w = VideoWriter::Open(path, kW, kH, opt, audio);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_FALSE((*w)->raw());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*w)->AddFrame(GradientFrame(i)).ok());
  EXPECT_TRUE(fs::exists(path + ".partial"));
  EXPECT_FALSE(fs::exists(path));
  ASSERT_TRUE((*w)->Close().ok());
  EXPECT_FALSE(fs::exists(path + ".partial"));
  ASSERT_TRUE(fs::exists(path));
  EXPECT_EQ((*w)->frames_written(), 10);
  EXPECT_EQ((*w)->frames_dropped(), 0);
  ASSERT_EQ((*w)->output_paths(), std::vector<std::string>{path});

  const Probe p = ProbeFile(path, GradientFrame(0));
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.width, kW);
  EXPECT_EQ(p.height, kH);
  EXPECT_EQ(p.fps.num, 25);
  EXPECT_EQ(p.fps.den, 1);
  EXPECT_EQ(p.video_packets, 10);
  EXPECT_EQ(p.video_codec, (*w)->encoder_name() == "libx264" ? "h264" : "mpeg4");
  EXPECT_NEAR(p.video_seconds, 0.4, 1e-6);
  ASSERT_TRUE(p.has_audio);
  EXPECT_EQ(p.audio_codec, "aac");
  EXPECT_EQ(p.audio_rate, 16000);
  // -shortest: audio ends with the video (AAC frames are 1024 samples = 64 ms at 16 kHz).
  EXPECT_NEAR(p.audio_seconds, p.video_seconds, 0.07) << "audio " << p.audio_seconds;
  // Colour path sanity: decoded first frame close to what went in (yuv420p + crf 10).
  EXPECT_GE(p.first_frame_mean_abs_diff, 0.0);
  EXPECT_LT(p.first_frame_mean_abs_diff, 4.0);
}

TEST_F(VideoWriterTest, ShortAudioDropsLateFrames) {
  const std::string path = P("short.mp4");
  AudioTrack audio;
  audio.samples = Sine(0.2, 16000);  // 0.2 s = 5 frames at 25 fps
  auto w = VideoWriter::Open(path, kW, kH, {}, audio);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*w)->AddFrame(GradientFrame(i)).ok());
  ASSERT_TRUE((*w)->Close().ok());
  EXPECT_EQ((*w)->frames_written(), 5);
  EXPECT_EQ((*w)->frames_dropped(), 5);
  const Probe p = ProbeFile(path);
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.video_packets, 5);
  ASSERT_TRUE(p.has_audio);
  EXPECT_NEAR(p.audio_seconds, 0.2, 0.07);
}

TEST_F(VideoWriterTest, AudioFileIsDecodedAndMuxed) {
  // Make a 44.1 kHz mono WAV with the raw writer, then mux it from the file like the reference's ffmpeg step.
  const std::string wav_stem = P("src");
  {
    VideoWriterOptions raw;
    raw.raw = true;
    AudioTrack a;
    a.samples = Sine(1.0, 44100);
    a.sample_rate = 44100;
    auto w = VideoWriter::Open(wav_stem + ".mp4", kW, kH, raw, a);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    for (int i = 0; i < 25; ++i) ASSERT_TRUE((*w)->AddFrame(GradientFrame(i)).ok());
    ASSERT_TRUE((*w)->Close().ok());
  }
  const std::string path = P("from_file.mp4");
  AudioTrack audio;
  audio.path = wav_stem + ".wav";
  auto w = VideoWriter::Open(path, kW, kH, {}, audio);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  for (int i = 0; i < 8; ++i) ASSERT_TRUE((*w)->AddFrame(GradientFrame(i)).ok());
  ASSERT_TRUE((*w)->Close().ok());
  const Probe p = ProbeFile(path);
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.video_packets, 8);
  ASSERT_TRUE(p.has_audio);
  EXPECT_EQ(p.audio_rate, 44100);
  EXPECT_NEAR(p.audio_seconds, 8.0 / 25.0, 0.03);
}

TEST_F(VideoWriterTest, MissingAudioFileFailsNamingIt) {
  AudioTrack audio;
  audio.path = P("missing.wav");
  auto w = VideoWriter::Open(P("x.mp4"), kW, kH, {}, audio);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), Status::Code::kNotFound);
  EXPECT_NE(w.status().message().find(audio.path), std::string::npos);
  EXPECT_FALSE(fs::exists(P("x.mp4.partial")));
  EXPECT_FALSE(fs::exists(P("x.mp4")));
}

TEST_F(VideoWriterTest, AbortAndDestructorLeaveNoFile) {
  const std::string path = P("aborted.mp4");
  {
    auto w = VideoWriter::Open(path, kW, kH);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    ASSERT_TRUE((*w)->AddFrame(GradientFrame(0)).ok());
    (*w)->Abort();
    EXPECT_FALSE((*w)->AddFrame(GradientFrame(1)).ok());
    EXPECT_FALSE((*w)->Close().ok());
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".partial"));
  {
    auto w = VideoWriter::Open(path, kW, kH);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->AddFrame(GradientFrame(0)).ok());
  }  // destroyed without Close()
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".partial"));
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(VideoWriterTest, MpegTsByFormatOverrideWithoutAudio) {
  const std::string path = P("clip.ts");
  VideoWriterOptions opt;
  opt.format = "mpegts";
  opt.preset = "veryfast";
  auto w = VideoWriter::Open(path, kW, kH, opt);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_TRUE((*w)->AddFrames(at::stack({GradientFrame(0), GradientFrame(1), GradientFrame(2)})).ok());
  ASSERT_TRUE((*w)->Close().ok());
  const Probe p = ProbeFile(path);
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.video_packets, 3);
  EXPECT_FALSE(p.has_audio);
}
#endif  // LIVEAVATAR_HAVE_FFMPEG

TEST_F(VideoWriterTest, RejectsBadArguments) {
  EXPECT_FALSE(VideoWriter::Open(P("a.mp4"), 63, 48).ok());
  EXPECT_FALSE(VideoWriter::Open(P("a.mp4"), 0, 48).ok());
  VideoWriterOptions bad_fps;
  bad_fps.fps = 0;
  EXPECT_FALSE(VideoWriter::Open(P("a.mp4"), kW, kH, bad_fps).ok());
  AudioTrack stereo;
  stereo.samples = at::zeros({2, 100});
  EXPECT_FALSE(VideoWriter::Open(P("a.mp4"), kW, kH, {}, stereo).ok());
  VideoWriterOptions raw;
  raw.raw = true;
  auto w = VideoWriter::Open(P("a.mp4"), kW, kH, raw);
  ASSERT_TRUE(w.ok());
  auto s = (*w)->AddFrame(at::zeros({kH, kW, 4}, at::kByte));
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("expected"), std::string::npos);
}

TEST_F(VideoWriterTest, RawY4mAndWav) {
  VideoWriterOptions opt;
  opt.raw = true;
  AudioTrack audio;
  audio.samples = Sine(1.0, 16000);
  const std::string path = P("raw.mp4");
  auto w = VideoWriter::Open(path, kW, kH, opt, audio);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_TRUE((*w)->raw());
  EXPECT_EQ((*w)->encoder_name(), "y4m");
  // Frame 0: float [3, H, W] at 0.5 -> trunc((0.5 + 1) / 2 * 255) = 191 grey; frame 1: -3 clamps to -1 -> 0;
  // frame 2: uint8 white.
  ASSERT_TRUE((*w)->AddFrame(at::full({3, kH, kW}, 0.5f)).ok());
  ASSERT_TRUE((*w)->AddFrame(at::full({3, kH, kW}, -3.0f)).ok());
  ASSERT_TRUE((*w)->AddFrame(at::full({kH, kW, 3}, 255, at::kByte)).ok());
  EXPECT_TRUE(fs::exists(P("raw.y4m.partial")));
  EXPECT_TRUE(fs::exists(P("raw.wav.partial")));
  ASSERT_TRUE((*w)->Close().ok());
  EXPECT_EQ((*w)->output_paths(), (std::vector<std::string>{P("raw.y4m"), P("raw.wav")}));
  EXPECT_FALSE(fs::exists(P("raw.y4m.partial")));
  EXPECT_FALSE(fs::exists(P("raw.wav.partial")));

  const std::string y4m = ReadAll(P("raw.y4m"));
  const std::string header = "YUV4MPEG2 W64 H48 F25:1 Ip A1:1 C420jpeg XYSCSS=420JPEG\n";
  ASSERT_EQ(y4m.compare(0, header.size(), header), 0) << y4m.substr(0, 80);
  const size_t frame_bytes = kW * kH * 3 / 2;
  ASSERT_EQ(y4m.size(), header.size() + 3 * (6 + frame_bytes));
  auto luma = [&](int f) {
    return static_cast<uint8_t>(y4m[header.size() + f * (6 + frame_bytes) + 6]);
  };
  auto chroma = [&](int f) {
    return static_cast<uint8_t>(y4m[header.size() + f * (6 + frame_bytes) + 6 + kW * kH]);
  };
  // BT.601 limited range: Y = ((66 R + 129 G + 25 B + 128) >> 8) + 16.
  EXPECT_EQ(luma(0), ((66 + 129 + 25) * 191 + 128) / 256 + 16);
  EXPECT_EQ(luma(1), 16);
  EXPECT_EQ(luma(2), 235);
  EXPECT_EQ(chroma(0), 128);

  const std::string wav = ReadAll(P("raw.wav"));
  ASSERT_GE(wav.size(), 44u);
  EXPECT_EQ(wav.compare(0, 4, "RIFF"), 0);
  EXPECT_EQ(wav.compare(8, 4, "WAVE"), 0);
  uint32_t data_bytes = 0, rate = 0;
  std::memcpy(&data_bytes, wav.data() + 40, 4);
  std::memcpy(&rate, wav.data() + 24, 4);
  EXPECT_EQ(rate, 16000u);
  // 3 frames at 25 fps = 0.12 s = 1920 samples (-shortest), 16-bit mono.
  EXPECT_EQ(data_bytes, 1920u * 2);
  EXPECT_EQ(wav.size(), 44u + data_bytes);
}

TEST_F(VideoWriterTest, RawAbortLeavesNoFiles) {
  VideoWriterOptions opt;
  opt.raw = true;
  AudioTrack audio;
  audio.samples = Sine(0.1, 16000);
  auto w = VideoWriter::Open(P("r.mp4"), kW, kH, opt, audio);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->AddFrame(GradientFrame(0)).ok());
  (*w)->Abort();
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(VideoWriterTest, RawShortAudioDropsFrames) {
  VideoWriterOptions opt;
  opt.raw = true;
  AudioTrack audio;
  audio.samples = Sine(0.1, 16000);  // 2.5 frames -> frames 0, 1, 2 start before its end
  auto w = VideoWriter::Open(P("d.mp4"), kW, kH, opt, audio);
  ASSERT_TRUE(w.ok());
  for (int i = 0; i < 6; ++i) ASSERT_TRUE((*w)->AddFrame(GradientFrame(i)).ok());
  ASSERT_TRUE((*w)->Close().ok());
  EXPECT_EQ((*w)->frames_written(), 3);
  EXPECT_EQ((*w)->frames_dropped(), 3);
}

TEST_F(VideoWriterTest, StreamingTargetsNeedFfmpeg) {
  VideoWriterOptions opt;
  opt.raw = true;
  auto w = VideoWriter::Open("-", kW, kH, opt);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), Status::Code::kNotSupported);
}

}  // namespace
}  // namespace liveavatar::io
