// End-to-end generation on the tiny checkpoint (issue: end-to-end generation): the engine in-process for frame
// counts, resolution and determinism, and the real binary for exit codes, batch rendering, bad inputs and the
// streaming-memory check.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <functional>
#include <string>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "liveavatar/core/threads.h"
#include "liveavatar/io/audio_reader.h"
#include "liveavatar/pipeline/engine.h"
#include "liveavatar/testing/synthetic.h"
#include "cli_test_util.h"
#include "make_tiny.h"

namespace fs = std::filesystem;

namespace liveavatar::cli {
namespace {

using testutil::Bin;
using testutil::Q;
using testutil::Shell;
using testutil::Slurp;
using testutil::Src;

// Writes `seconds` of the example speech, repeated, as 16 kHz 16-bit mono WAV.
void WriteLongSpeech(const std::string& path, double seconds) {
  auto clip = io::ReadAudio(Src() + "/examples/speech.wav", 16000);
  ASSERT_TRUE(clip.ok()) << clip.status().ToString();
  const int64_t n = static_cast<int64_t>(seconds * 16000);
  testing::WriteWav16(path, clip->samples.repeat({n / clip->samples.numel() + 1}).narrow(0, 0, n), 16000);
}

class Generate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    InitCpuThreads();
    root_ = (fs::temp_directory_path() / ("la_generate_test_" + std::to_string(::getpid()))).string();
    fs::create_directories(root_);
    MakeTinyArgs args;
    args.out = root_ + "/ckpt";
    args.seed = 3;
    Status s = WriteTinyCheckpoint(args);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  static pipeline::GenerationRequest Request(const std::string& out, int64_t seed) {
    pipeline::GenerationRequest r;
    r.image = Src() + "/examples/face.png";
    r.audio = Src() + "/examples/speech.wav";
    r.prompt = "a person talking";
    r.output = out;
    r.size = "384*256";
    r.num_clip = 2;
    r.base_seed = seed;
    r.raw_video = true;  // y4m: exact uint8 frames to compare
    return r;
  }
  static std::unique_ptr<pipeline::Engine> LoadEngine(
      const std::function<void(pipeline::EngineOptions&)>& adjust = {}) {
    pipeline::EngineOptions o;
    o.ckpt_dir = root_ + "/ckpt";
    if (adjust) adjust(o);
    auto e = pipeline::Engine::Load(o);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return e.ok() ? std::move(e).value() : nullptr;
  }
  static std::string root_;
};
std::string Generate::root_;

TEST_F(Generate, TwoClipsFrameCountSizeAndDeterminism) {
  auto engine = LoadEngine();
  ASSERT_NE(engine, nullptr);
  auto a = engine->Generate(Request(root_ + "/a.mp4", 11));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->frames, 48 * 2 - 3);
  EXPECT_EQ(a->width, 384);
  EXPECT_EQ(a->height, 256);
  EXPECT_EQ(a->num_clips, 2);
  ASSERT_EQ(a->outputs.size(), 2u);  // .y4m + .wav
  const std::string y4m = Slurp(a->outputs[0]);
  // YUV4MPEG2 header with the resolution and 25 fps, then one FRAME per video frame.
  EXPECT_NE(y4m.find("W384 H256 F25:1"), std::string::npos) << y4m.substr(0, 80);
  size_t frames = 0;
  for (size_t p = y4m.find("FRAME"); p != std::string::npos; p = y4m.find("FRAME", p + 5)) ++frames;
  EXPECT_EQ(frames, static_cast<size_t>(a->frames));
  // The audio track is trimmed to the video (93 frames at 25 fps = 3.72 s).
  auto wav = io::ReadAudio(a->outputs[1], 16000);
  ASSERT_TRUE(wav.ok()) << wav.status().ToString();
  EXPECT_NEAR(wav->samples.numel() / 16000.0, 93 / 25.0, 0.05);

  // Same seed: bit-identical frames; another seed: different frames (one clip each, to keep the suite short).
  auto one = [&](const std::string& name, int64_t seed) {
    auto r = Request(root_ + "/" + name + ".mp4", seed);
    r.num_clip = 1;
    auto g = engine->Generate(r);
    EXPECT_TRUE(g.ok()) << g.status().ToString();
    return g.ok() ? std::make_pair(g->final_latents, Slurp(g->outputs[0])) : std::make_pair(at::Tensor(), std::string());
  };
  const auto b1 = one("b1", 11), b2 = one("b2", 11), c = one("c", 12);
  ASSERT_TRUE(b1.first.defined() && b2.first.defined() && c.first.defined());
  EXPECT_TRUE(at::equal(b1.first, b2.first));
  EXPECT_EQ(b1.second, b2.second);
  EXPECT_FALSE(at::equal(b1.first, c.first));
  EXPECT_NE(b1.second, c.second);
  // The 1-clip video is the first 45 frames of the 2-clip one (streaming: later clips do not change earlier ones).
  const size_t header = y4m.find("FRAME");
  EXPECT_EQ(b1.second.substr(header), y4m.substr(header, b1.second.size() - header));
}

// The memory modes change where weights and caches live, never the result: block offload + KV-cache residency
// give bit-identical frames; FP8 weights change them a little (docs/fp8.md) and nothing else.
TEST_F(Generate, MemoryModesKeepTheResult) {
  auto run = [&](const std::string& name, const std::function<void(pipeline::EngineOptions&)>& adjust) {
    auto engine = LoadEngine(adjust);
    EXPECT_NE(engine, nullptr);
    if (engine == nullptr) return std::make_pair(at::Tensor(), std::string());
    auto r = Request(root_ + "/" + name + ".mp4", 5);
    r.num_clip = 1;
    r.infer_frames = 12;
    auto g = engine->Generate(r);
    EXPECT_TRUE(g.ok()) << g.status().ToString();
    return g.ok() ? std::make_pair(g->final_latents, Slurp(g->outputs[0])) : std::make_pair(at::Tensor(), std::string());
  };
  const auto plain = run("plain", nullptr);
  const auto offload = run("offload", [](pipeline::EngineOptions& o) {
    o.offload_blocks = true;
    o.offload_kv_cache = true;
  });
  const auto fp8 = run("fp8", [](pipeline::EngineOptions& o) { o.fp8 = true; });
  ASSERT_TRUE(plain.first.defined() && offload.first.defined() && fp8.first.defined());
  EXPECT_TRUE(at::equal(plain.first, offload.first));
  EXPECT_EQ(plain.second, offload.second);
  EXPECT_FALSE(at::equal(plain.first, fp8.first));
  const double rel = (fp8.first - plain.first).norm().item<double>() / plain.first.norm().item<double>();
  EXPECT_LT(rel, 0.1) << "FP8 latents drift " << rel << " from fp32";
  EXPECT_EQ(fp8.second.size(), plain.second.size());
  // Both together are refused at load, naming the flags.
  pipeline::EngineOptions both;
  both.ckpt_dir = root_ + "/ckpt";
  both.fp8 = both.offload_blocks = true;
  auto e = pipeline::Engine::Load(both);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("--fp8"), std::string::npos) << e.status().ToString();
}

TEST_F(Generate, Mp4WithAudioThroughTheBinary) {
  if (Shell("command -v ffprobe > /dev/null 2>&1") != 0) GTEST_SKIP() << "ffprobe not installed";
  const std::string out = root_ + "/bin/demo.mp4";
  const std::string report = root_ + "/bin/report.json";
  ASSERT_EQ(Shell(Q(Bin()) + " generate --log-level warn --ckpt_dir " + Q(root_ + "/ckpt") + " --image " +
                Q(Src() + "/examples/face.png") + " --audio " + Q(Src() + "/examples/speech.wav") +
                " --size 384*256 --num_clip 2 --no_fp8 --save_file " + Q(out) + " --report " + Q(report)),
            0);
  ASSERT_TRUE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out + ".partial"));
  const std::string probe = root_ + "/bin/probe.txt";
  ASSERT_EQ(Shell("ffprobe -v error -count_frames -show_entries stream=codec_type,width,height,r_frame_rate,"
                "nb_read_frames,duration -of default=nw=1 " + Q(out) + " > " + Q(probe)), 0);
  const std::string p = Slurp(probe);
  EXPECT_NE(p.find("codec_type=video"), std::string::npos) << p;
  EXPECT_NE(p.find("codec_type=audio"), std::string::npos) << p;
  EXPECT_NE(p.find("width=384"), std::string::npos) << p;
  EXPECT_NE(p.find("height=256"), std::string::npos) << p;
  EXPECT_NE(p.find("r_frame_rate=25/1"), std::string::npos) << p;
  EXPECT_NE(p.find("nb_read_frames=93"), std::string::npos) << p;
  auto j = nlohmann::json::parse(Slurp(report));
  EXPECT_EQ(j["frames"].get<int64_t>(), 93);
  EXPECT_EQ(j["blocks"].size(), 8u);
}

TEST_F(Generate, PeakMemoryStaysFlatAsTheVideoGrows) {
  const std::string audio = root_ + "/long.wav";
  WriteLongSpeech(audio, 6.0);  // enough audio for 10 clips of 12 frames (one block each)
  // One thread: the allocation order, hence the heap's high-water mark, is then reproducible (with two OpenMP
  // threads the peak of the same run varies by ~30 %), so any growth with the clip count is real.
  auto run = [&](int clips) -> int64_t {
    const std::string report = root_ + "/rss" + std::to_string(clips) + ".json";
    EXPECT_EQ(Shell(Q(Bin()) + " generate --log-level warn --ckpt_dir " + Q(root_ + "/ckpt") + " --image " +
                  Q(Src() + "/examples/face.png") + " --audio " + Q(audio) + " --size 384*256 --no_fp8 --infer_frames 12 --threads 1 --num_clip " +
                  std::to_string(clips) + " --save_file " + Q(root_ + "/rss" + std::to_string(clips) + ".mp4") +
                  " --report " + Q(report)),
              0);
    auto j = nlohmann::json::parse(Slurp(report));
    EXPECT_EQ(j["num_clips"].get<int64_t>(), clips);
    return j["peak_rss_bytes"].get<int64_t>();
  };
  const int64_t two = run(2), ten = run(10);
  ASSERT_GT(two, 0);
  EXPECT_LE(static_cast<double>(ten), 1.10 * static_cast<double>(two)) << "2 clips: " << two << " B, 10 clips: " << ten;
}

TEST_F(Generate, BatchRendersSkipsAndReportsFailures) {
  const std::string dir = root_ + "/batch";
  fs::create_directories(dir);
  nlohmann::json jobs = nlohmann::json::array();
  for (int i = 0; i < 3; ++i) {
    jobs.push_back({{"name", "job" + std::to_string(i)},
                    {"image", i == 1 ? dir + "/missing.png" : Src() + "/examples/face.png"},
                    {"audio", Src() + "/examples/speech.wav"},
                    {"prompt", "job " + std::to_string(i)},
                    {"num_clip", 1},
                    {"infer_frames", 12},
                    {"output", dir + "/out" + std::to_string(i) + ".mp4"}});
  }
  std::ofstream(dir + "/jobs.json") << jobs.dump(2);
  const std::string cmd = Q(Bin()) + " batch " + Q(dir + "/jobs.json") + " --log-level warn --ckpt_dir " +
                          Q(root_ + "/ckpt") + " --size 384*256 --no_fp8 2> " + Q(dir + "/log.txt");
  EXPECT_EQ(Shell(cmd), 1);  // one job failed
  EXPECT_TRUE(fs::exists(dir + "/out0.mp4"));
  EXPECT_FALSE(fs::exists(dir + "/out1.mp4"));
  EXPECT_TRUE(fs::exists(dir + "/out2.mp4"));
  EXPECT_NE(Slurp(dir + "/log.txt").find("missing.png"), std::string::npos) << Slurp(dir + "/log.txt");
  // A rerun skips finished outputs; a stale .partial (an interrupted run) is not mistaken for a finished one.
  const auto t0 = fs::last_write_time(dir + "/out0.mp4");
  fs::remove(dir + "/out2.mp4");
  std::ofstream(dir + "/out2.mp4.partial") << "interrupted";
  EXPECT_EQ(Shell(cmd), 1);
  EXPECT_EQ(fs::last_write_time(dir + "/out0.mp4"), t0);
  EXPECT_TRUE(fs::exists(dir + "/out2.mp4"));
  EXPECT_FALSE(fs::exists(dir + "/out2.mp4.partial"));
}

// `kill -9` of a batch while it renders its second job, then the same batch again: the finished output is kept
// (not re-rendered), the interrupted one is redone, and no temporary file is left.
TEST_F(Generate, KilledBatchResumesKeepingFinishedOutputs) {
  const std::string dir = root_ + "/resume";
  fs::create_directories(dir);
  nlohmann::json jobs = nlohmann::json::object();
  for (int i = 0; i < 3; ++i) {
    jobs["job" + std::to_string(i)] = {{"image", Src() + "/examples/face.png"},
                                       {"audio", Src() + "/examples/speech.wav"},
                                       {"prompt", "job " + std::to_string(i)},
                                       {"num_clip", 1},
                                       {"infer_frames", 12}};
  }
  std::ofstream(dir + "/jobs.json") << jobs.dump(2);
  const std::string cmd = Q(Bin()) + " batch " + Q(dir + "/jobs.json") + " --log-level warn --threads 1 --ckpt_dir " +
                          Q(root_ + "/ckpt") + " --size 384*256 --no_fp8 --save_dir " + Q(dir + "/out");
  const std::string first = dir + "/out/job0.mp4", second = dir + "/out/job1.mp4";
  const std::string script = cmd + " 2> " + Q(dir + "/log1.txt") + " & pid=$!; for i in $(seq 1 3000); do [ -e " +
                             Q(first) + " ] && [ -e " + Q(second + ".partial") +
                             " ] && break; kill -0 $pid 2> /dev/null || break; sleep 0.1; done; [ -e " +
                             Q(second + ".partial") + " ] || { wait $pid; exit 99; }; kill -9 $pid; wait $pid; exit 0";
  std::ofstream(dir + "/kill.sh") << script << "\n";
  ASSERT_EQ(Shell("bash " + Q(dir + "/kill.sh")), 0) << "the batch ended before its second job could be interrupted";
  ASSERT_TRUE(fs::exists(first));
  EXPECT_FALSE(fs::exists(second));
  const auto t_first = fs::last_write_time(first);
  EXPECT_EQ(Shell(cmd + " 2> " + Q(dir + "/log2.txt")), 0) << Slurp(dir + "/log2.txt");
  EXPECT_EQ(fs::last_write_time(first), t_first);  // kept, not redone
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(fs::exists(dir + "/out/job" + std::to_string(i) + ".mp4")) << i;
  for (const auto& e : fs::directory_iterator(dir + "/out")) {
    EXPECT_EQ(e.path().extension(), ".mp4") << "left behind: " << e.path();
  }
}

TEST_F(Generate, BadInputsFailWithoutOutput) {
  const std::string dir = root_ + "/bad";
  fs::create_directories(dir);
  std::ofstream(dir + "/not_an_image.png") << "this is text";
  std::ofstream(dir + "/empty.wav");
  const std::string silent = dir + "/silent.wav";
  testing::WriteWav16(silent, at::zeros({3 * 16000}), 16000);  // 3 s of digital silence
  const std::string base = Q(Bin()) + " generate --log-level off --no_fp8 --ckpt_dir " + Q(root_ + "/ckpt") +
                           " --size 384*256 --num_clip 1 ";
  const std::string face = Q(Src() + "/examples/face.png"), speech = Q(Src() + "/examples/speech.wav");
  struct Case {
    std::string name, args;
  } cases[] = {
      {"missing image", "--image " + Q(dir + "/nope.png") + " --audio " + speech},
      {"corrupt image", "--image " + Q(dir + "/not_an_image.png") + " --audio " + speech},
      {"empty audio", "--image " + face + " --audio " + Q(dir + "/empty.wav")},
      {"silent audio", "--image " + face + " --audio " + Q(silent)},
      {"missing audio", "--image " + face + " --audio " + Q(dir + "/nope.wav")},
  };
  int i = 0;
  for (const auto& c : cases) {
    const std::string out = dir + "/out" + std::to_string(i++) + ".mp4";
    EXPECT_NE(Shell(base + c.args + " --save_file " + Q(out)), 0) << c.name;
    EXPECT_FALSE(fs::exists(out)) << c.name;
    EXPECT_FALSE(fs::exists(out + ".partial")) << c.name;
  }
  const std::string no_size = Q(Bin()) + " generate --log-level off --no_fp8 --ckpt_dir " + Q(root_ + "/ckpt") + " ";
  EXPECT_NE(Shell(no_size + "--image " + face + " --audio " + speech + " --size 100*100 --save_file " + Q(dir + "/x.mp4")), 0);
  EXPECT_FALSE(fs::exists(dir + "/x.mp4"));
  EXPECT_NE(Shell(base + "--image " + face + " --audio " + speech + " --save_file /proc/liveavatar/x.mp4"), 0);
}

}  // namespace
}  // namespace liveavatar::cli
