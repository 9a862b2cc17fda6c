// Bad input against the real binary, table-driven: each case is a command on a tiny checkpoint (or a damaged copy
// of it) that must exit non-zero (below 128: an error, not a crash), print one line naming the file, key or flag,
// stay within a wall-time bound where the headers can tell, stay under a peak-RSS bound, and leave no output file
// behind. The regressions of the defects found by probing the binary (issue 21) are here.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "cli_test_util.h"
#include "liveavatar/io/checkpoint_dir.h"
#include "liveavatar/io/pth.h"
#include "liveavatar/io/safetensors.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/testing/synthetic.h"
#include "io/pth_pickle.h"
#include "liveavatar/io/zip_reader.h"
#include "make_tiny.h"

namespace liveavatar::cli {
namespace {

namespace fs = std::filesystem;
using testutil::Bin;
using testutil::Slurp;
using testutil::Src;

struct ChildResult {
  int exit_code = -1;  // 128 + signal when killed
  double seconds = 0;
  int64_t max_rss_bytes = 0;
};

// Runs `argv` (no shell) with stdout/stderr into `log`, waits for it and reports its own peak RSS (wait4).
ChildResult RunChild(const std::vector<std::string>& argv, const std::string& log) {
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    FILE* f = std::freopen(log.c_str(), "w", stderr);
    if (f == nullptr) _exit(126);
    ::dup2(::fileno(stderr), STDOUT_FILENO);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    _exit(127);
  }
  ChildResult r;
  int status = 0;
  struct rusage ru {};
  ::wait4(pid, &status, 0, &ru);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.max_rss_bytes = static_cast<int64_t>(ru.ru_maxrss) * 1024;
  return r;
}

class BadInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Status s = testutil::MakeTinySuiteRoot("la_bad_input", 11, &root_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  // A copy of the tiny checkpoint named `name`, changed by `edit`.
  static std::string DamagedCopy(const std::string& name, const std::function<void(const std::string&)>& edit) {
    const std::string dir = root_ + "/" + name;
    fs::remove_all(dir);
    fs::copy(root_ + "/ckpt", dir, fs::copy_options::recursive);
    edit(dir);
    return dir;
  }
  static std::string root_;
};
std::string BadInput::root_;

void EditJson(const std::string& path, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json j = nlohmann::json::parse(Slurp(path));
  edit(j);
  std::ofstream(path) << j.dump(2);
}

// Raw JSON text replacement (for numbers nlohmann would normalise, such as 2.5 or 1e9).
void ReplaceInFile(const std::string& path, const std::string& from, const std::string& to) {
  std::string s = Slurp(path);
  const auto at = s.find(from);
  ASSERT_NE(at, std::string::npos) << from << " in " << path;
  s.replace(at, from.size(), to);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << s;
}

// Rewrites one safetensors file with `key` replaced by `value` (same shape).
void ReplaceTensor(const std::string& path, const std::string& key, const std::function<at::Tensor(at::Tensor)>& f) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  {
    auto r = io::SafetensorsReader::Open(path);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    for (const auto& k : (*r)->Keys()) {
      at::Tensor t = (*r)->Get(k).value().clone();
      tensors.emplace_back(k, k == key ? f(t) : t);
    }
  }
  ASSERT_TRUE(io::WriteSafetensors(path, tensors).ok());
}

// The DiT shard holding `key`.
std::string ShardOf(const std::string& ckpt, const std::string& key) {
  const auto j = nlohmann::json::parse(Slurp(ckpt + "/" + io::kDitIndexFile));
  return ckpt + "/" + j["weight_map"][key].get<std::string>();
}

void WriteWavHeader(const std::string& path, int format, int channels, int rate, int bits,
                    const std::vector<uint8_t>& data) {
  auto le = [](std::ofstream& o, uint32_t v, int n) {
    for (int i = 0; i < n; ++i) o.put(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  std::ofstream o(path, std::ios::binary);
  o.write("RIFF", 4);
  le(o, static_cast<uint32_t>(36 + data.size()), 4);
  o.write("WAVEfmt ", 8);
  le(o, 16, 4);
  le(o, static_cast<uint32_t>(format), 2);
  le(o, static_cast<uint32_t>(channels), 2);
  le(o, static_cast<uint32_t>(rate), 4);
  le(o, static_cast<uint32_t>(rate * channels * bits / 8), 4);
  le(o, static_cast<uint32_t>(channels * bits / 8), 2);
  le(o, static_cast<uint32_t>(bits), 2);
  o.write("data", 4);
  le(o, static_cast<uint32_t>(data.size()), 4);
  o.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

struct Case {
  std::string name;
  std::vector<std::string> args;  // after the binary
  std::string needle;             // the error names this (file, key or flag)
  std::vector<std::string> no_files;  // must not exist afterwards (each also without a .partial)
  double max_seconds = 60;            // headers can tell: well under this on any machine
};

TEST_F(BadInput, EveryCaseFailsCleanlyNamingTheCulprit) {
  const std::string ckpt = root_ + "/ckpt";
  const std::string face = Src() + "/examples/face.png", speech = Src() + "/examples/speech.wav";
  const std::string d = root_ + "/in";
  fs::create_directories(d);
  auto gen = [&](const std::string& ck, std::vector<std::string> extra) {
    std::vector<std::string> a = {"generate", "--log-level", "error", "--ckpt_dir", ck, "--size", "384*256",
                                  "--num_clip", "1", "--infer_frames", "12"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  auto io_args = [&](const std::string& out) {
    return std::vector<std::string>{"--image", face, "--audio", speech, "--save_file", out};
  };
  auto with = [](std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };

  // ---- audio ----
  std::vector<uint8_t> pcm(120000, 0);
  for (size_t i = 0; i < pcm.size(); i += 2) pcm[i] = static_cast<uint8_t>(i % 251);
  WriteWavHeader(d + "/rate1.wav", 1, 1, 1, 16, pcm);
  WriteWavHeader(d + "/rate0.wav", 1, 1, 0, 16, pcm);
  WriteWavHeader(d + "/ch64.wav", 1, 64, 16000, 16, pcm);
  std::vector<uint8_t> fnan(16000 * 4);
  for (size_t i = 0; i < fnan.size(); i += 4) {
    const float v = i == 4000 ? std::nanf("") : 0.25f;
    std::memcpy(&fnan[i], &v, 4);
  }
  WriteWavHeader(d + "/nan.wav", 3, 1, 16000, 32, fnan);
  testing::WriteWav16(d + "/long.wav", at::full({16000 * 3}, 0.2), 16000);
  std::ofstream(d + "/text.wav") << "not audio at all";
  // ---- images ----
  std::ofstream(d + "/text.png") << "not an image";
  ASSERT_EQ(::mkfifo((d + "/fifo.png").c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo((d + "/fifo.safetensors").c_str(), 0600), 0);
  // ---- checkpoints ----
  const std::string nan_dit = DamagedCopy("nan_dit", [](const std::string& c) {
    ReplaceTensor(ShardOf(c, "blocks.0.self_attn.q.weight"), "blocks.0.self_attn.q.weight",
                  [](at::Tensor t) { return t.index_fill(0, at::zeros({1}, at::kLong), std::nan("")); });
  });
  const std::string inf_w2v = DamagedCopy("inf_w2v", [](const std::string& c) {
    const std::string p = c + "/" + io::kWav2Vec2Dir + "/" + io::kWav2Vec2SafetensorsFile;
    auto r = io::SafetensorsReader::Open(p);
    const std::string key = (*r)->Keys().back();
    r = StatusOr<std::shared_ptr<io::SafetensorsReader>>(Status::Internal("closed"));
    ReplaceTensor(p, key, [](at::Tensor t) { return at::full_like(t, std::numeric_limits<float>::infinity()); });
  });
  const std::string eps_neg = DamagedCopy("eps_neg", [](const std::string& c) {
    EditJson(c + "/config.json", [](nlohmann::json& j) { j["eps"] = -1; });
  });
  const std::string heads_frac = DamagedCopy("heads_frac", [](const std::string& c) {
    EditJson(c + "/config.json", [](nlohmann::json& j) { j["num_heads"] = "__HEADS__"; });
    ReplaceInFile(c + "/config.json", "\"__HEADS__\"", "2.5");
  });
  const std::string layers_huge = DamagedCopy("layers_huge", [](const std::string& c) {
    EditJson(c + "/config.json", [](nlohmann::json& j) { j["num_layers"] = "__LAYERS__"; });
    ReplaceInFile(c + "/config.json", "\"__LAYERS__\"", "1e9");
  });
  const std::string layers_more = DamagedCopy("layers_more", [](const std::string& c) {
    EditJson(c + "/config.json", [](nlohmann::json& j) { j["num_layers"] = j["num_layers"].get<int>() + 2; });
  });
  const std::string alpha_huge = DamagedCopy("alpha_huge", [](const std::string& c) {
    EditJson(c + "/" + io::kTinyTrainingConfigFile, [](nlohmann::json& j) { j["lora_alpha"] = 1e300; });
  });
  const std::string index_escape = DamagedCopy("index_escape", [](const std::string& c) {
    EditJson(c + "/" + io::kDitIndexFile, [](nlohmann::json& j) {
      j["weight_map"]["blocks.0.self_attn.q.weight"] = "../../../../../../etc/passwd";
    });
  });
  const std::string t5_mismatch = DamagedCopy("t5_mismatch", [](const std::string& c) {
    EditJson(c + "/config.json", [](nlohmann::json& j) { j["text_dim"] = j["text_dim"].get<int>() * 2; });
  });
  const std::string truncated = DamagedCopy("truncated", [](const std::string& c) {
    const std::string s = ShardOf(c, "blocks.0.self_attn.q.weight");
    fs::resize_file(s, fs::file_size(s) / 2);
  });
  const std::string no_t5 = DamagedCopy("no_t5", [](const std::string& c) { fs::remove(c + "/" + io::kT5File); });
  // A stride-0 .pth view: 1 stored element described as 16384 x 16384 (convert used to write 1 GiB from it).
  {
    std::vector<io::internal::PickledTensor> t(1);
    t[0].name = "bomb";
    t[0].storage_key = "0";
    t[0].storage_numel = 1;
    t[0].size = {16384, 16384};
    t[0].stride = {0, 0};
    const std::string pkl = io::internal::PickleStateDict(t).value();
    const float one = 1.0f;
    std::FILE* f = std::fopen((d + "/stride0.pth").c_str(), "wb");
    ASSERT_NE(f, nullptr);
    {
      io::ZipWriter zip(f, d + "/stride0.pth");
      ASSERT_TRUE(zip.Add("archive/data.pkl", pkl.data(), pkl.size()).ok());
      ASSERT_TRUE(zip.Add("archive/data/0", &one, 4).ok());
      ASSERT_TRUE(zip.Add("archive/version", "3\n", 2).ok());
      ASSERT_TRUE(zip.Finish().ok());
    }
    std::fclose(f);
  }
  // ---- batch configs ----
  auto job = [&](const std::string& size, int num_clip) {
    return nlohmann::json{{"prompt", "p"}, {"image", face}, {"audio", speech}, {"size", size}, {"num_clip", num_clip},
                          {"infer_frames", 12}};
  };
  std::ofstream(d + "/escape.json") << nlohmann::json{{"../../escaped_job", job("384*256", 1)}}.dump();
  std::ofstream(d + "/slash.json") << nlohmann::json{{"sub/dir", job("384*256", 1)}}.dump();
  std::ofstream(d + "/dupe.json") << nlohmann::json::array(
      {{{"name", "a"}, {"output", "same.mp4"}, {"prompt", "1"}, {"image", face}, {"audio", speech}},
       {{"name", "b"}, {"output", "same.mp4"}, {"prompt", "2"}, {"image", face}, {"audio", speech}}}).dump();
  std::ofstream(d + "/size.json") << nlohmann::json{{"tiny_size", job("1*1", 1)}}.dump();
  std::ofstream(d + "/negclip.json") << nlohmann::json{{"neg", job("384*256", -5)}}.dump();
  const std::string exists = d + "/exists.mp4";
  std::ofstream(exists) << "a finished video";
  const std::string out = root_ + "/out";
  fs::create_directories(out);

  const std::vector<Case> cases = {
      // Audio headers and samples.
      {"wav claims 1 Hz", gen(ckpt, with({"--image", face, "--audio", d + "/rate1.wav"}, {"--save_file", out + "/a1.mp4"})), "rate1.wav", {out + "/a1.mp4"}, 30},
      {"wav claims 0 Hz", gen(ckpt, with({"--image", face, "--audio", d + "/rate0.wav"}, {"--save_file", out + "/a2.mp4"})), "rate0.wav", {out + "/a2.mp4"}, 30},
      {"wav with 64 channels", gen(ckpt, with({"--image", face, "--audio", d + "/ch64.wav"}, {"--save_file", out + "/a3.mp4"})), "ch64.wav", {out + "/a3.mp4"}, 30},
      {"float wav with NaN", gen(ckpt, with({"--image", face, "--audio", d + "/nan.wav"}, {"--save_file", out + "/a4.mp4"})), "nan.wav", {out + "/a4.mp4"}, 30},
      {"audio over --max_audio_s", gen(ckpt, with({"--image", face, "--audio", d + "/long.wav", "--max_audio_s", "1"}, {"--save_file", out + "/a5.mp4"})), "--max_audio_s", {out + "/a5.mp4"}, 30},
      {"text as audio", gen(ckpt, with({"--image", face, "--audio", d + "/text.wav"}, {"--save_file", out + "/a6.mp4"})), "text.wav", {out + "/a6.mp4"}, 30},
      {"missing audio", gen(ckpt, with({"--image", face, "--audio", d + "/nope.wav"}, {"--save_file", out + "/a7.mp4"})), "nope.wav", {out + "/a7.mp4"}, 10},
      {"audio is a folder", gen(ckpt, with({"--image", face, "--audio", d}, {"--save_file", out + "/a8.mp4"})), "--audio", {out + "/a8.mp4"}, 10},
      {"--max_audio_s 0", gen(ckpt, with(io_args(out + "/a9.mp4"), {"--max_audio_s", "0"})), "--max_audio_s", {out + "/a9.mp4"}, 10},
      // Images.
      {"text as image", gen(ckpt, with({"--image", d + "/text.png", "--audio", speech}, {"--save_file", out + "/i1.mp4"})), "text.png", {out + "/i1.mp4"}, 30},
      {"FIFO as image", gen(ckpt, with({"--image", d + "/fifo.png", "--audio", speech}, {"--save_file", out + "/i2.mp4"})), "fifo.png", {out + "/i2.mp4"}, 10},
      {"missing image", gen(ckpt, with({"--image", d + "/nope.png", "--audio", speech}, {"--save_file", out + "/i3.mp4"})), "nope.png", {out + "/i3.mp4"}, 10},
      // Outputs, found before any rendering.
      {"--save_file is a folder", gen(ckpt, io_args(out)), "is a folder", {}, 10},
      {"--save_file without extension", gen(ckpt, io_args(out + "/noext")), "container", {out + "/noext"}, 10},
      {"--save_file exists", gen(ckpt, io_args(exists)), "--overwrite", {}, 10},
      {"--save_file in an unwritable place", gen(ckpt, io_args("/proc/liveavatar/x.mp4")), "--save_file", {}, 10},
      {"unsupported --size", with(gen(ckpt, io_args(out + "/s1.mp4")), {"--size", "1*1"}), "--size", {out + "/s1.mp4"}, 10},
      {"--num_clip -5", with(gen(ckpt, io_args(out + "/s2.mp4")), {"--num_clip", "-5"}), "--num_clip", {out + "/s2.mp4"}, 10},
      {"--infer_frames 13", with(gen(ckpt, io_args(out + "/s3.mp4")), {"--infer_frames", "13"}), "--infer_frames", {out + "/s3.mp4"}, 10},
      // Checkpoints: headers, configs, values.
      {"NaN in a DiT shard", gen(nan_dit, io_args(out + "/c1.mp4")), "blocks.0.self_attn.q.weight", {out + "/c1.mp4"}, 120},
      {"Inf in wav2vec2", gen(inf_w2v, io_args(out + "/c2.mp4")), "model.safetensors", {out + "/c2.mp4"}, 120},
      {"eps -1", gen(eps_neg, io_args(out + "/c3.mp4")), "eps", {out + "/c3.mp4"}, 30},
      {"num_heads 2.5", gen(heads_frac, io_args(out + "/c4.mp4")), "num_heads", {out + "/c4.mp4"}, 30},
      {"num_layers 1e9", gen(layers_huge, io_args(out + "/c5.mp4")), "num_layers", {out + "/c5.mp4"}, 30},
      {"num_layers beyond the weights", gen(layers_more, io_args(out + "/c6.mp4")), "missing", {out + "/c6.mp4"}, 30},
      {"lora_alpha 1e300", gen(alpha_huge, io_args(out + "/c7.mp4")), "lora_alpha", {out + "/c7.mp4"}, 30},
      {"index shard outside the folder", gen(index_escape, io_args(out + "/c8.mp4")), "not a relative path inside", {out + "/c8.mp4"}, 30},
      {"T5 dim != DiT text_dim", gen(t5_mismatch, io_args(out + "/c9.mp4")), "text_dim", {out + "/c9.mp4"}, 30},
      {"truncated DiT shard", gen(truncated, io_args(out + "/c10.mp4")), "diffusion_pytorch_model-", {out + "/c10.mp4"}, 30},
      {"missing T5", gen(no_t5, io_args(out + "/c11.mp4")), io::kT5File, {out + "/c11.mp4"}, 30},
      {"missing checkpoint folder", gen(root_ + "/nope", io_args(out + "/c12.mp4")), "nope", {out + "/c12.mp4"}, 30},
      {"doctor: index shard outside", {"doctor", "--log-level", "error", "--ckpt_dir", index_escape}, "not a relative path inside", {}, 30},
      {"doctor: num_layers 1e9", {"doctor", "--log-level", "error", "--ckpt_dir", layers_huge}, "num_layers", {}, 30},
      // convert.
      {"convert a FIFO", {"convert", "--log-level", "error", d + "/fifo.safetensors", out + "/f.safetensors"}, "fifo.safetensors", {out + "/f.safetensors"}, 10},
      {"convert a stride-0 view", {"convert", "--log-level", "error", d + "/stride0.pth", out + "/s0.safetensors"}, "stride-0", {out + "/s0.safetensors"}, 10},
      {"convert a truncated shard", {"convert", "--log-level", "error", ShardOf(truncated, "blocks.0.self_attn.q.weight"), out + "/t.safetensors"}, "diffusion_pytorch_model-", {out + "/t.safetensors"}, 10},
      // batch: job names, duplicates and bad jobs before any model loads.
      {"batch job name with ..", {"batch", d + "/escape.json", "--log-level", "error", "--ckpt_dir", ckpt, "--save_dir", out + "/b1"}, "escaped_job", {root_ + "/escaped_job.mp4", out + "/escaped_job.mp4"}, 10},
      {"batch job name with /", {"batch", d + "/slash.json", "--log-level", "error", "--ckpt_dir", ckpt, "--save_dir", out + "/b2"}, "sub/dir", {out + "/b2/sub/dir.mp4"}, 10},
      {"batch duplicate outputs", {"batch", d + "/dupe.json", "--log-level", "error", "--ckpt_dir", ckpt, "--save_dir", out + "/b3"}, "both write", {out + "/b3/same.mp4"}, 10},
      {"batch size 1*1", {"batch", d + "/size.json", "--log-level", "error", "--ckpt_dir", ckpt, "--save_dir", out + "/b4"}, "--size", {out + "/b4/tiny_size.mp4"}, 10},
      {"batch num_clip -5", {"batch", d + "/negclip.json", "--log-level", "error", "--ckpt_dir", ckpt, "--save_dir", out + "/b5"}, "--num_clip", {out + "/b5/neg.mp4"}, 10},
  };
  ASSERT_GE(cases.size(), 40u);
  constexpr int64_t kMaxRss = int64_t{2} << 30;  // the tiny checkpoint never needs more
  int i = 0;
  for (const auto& c : cases) {
    std::vector<std::string> argv = {Bin()};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    const std::string log = root_ + "/log" + std::to_string(i++) + ".txt";
    const ChildResult r = RunChild(argv, log);
    const std::string text = Slurp(log);
    EXPECT_NE(r.exit_code, 0) << c.name << "\n" << text;
    EXPECT_LT(r.exit_code, 128) << c.name << " (killed by a signal)\n" << text;
    if (!c.needle.empty()) {
      EXPECT_NE(text.find(c.needle), std::string::npos) << c.name << ": no '" << c.needle << "' in\n" << text;
    }
    EXPECT_LT(r.seconds, c.max_seconds) << c.name;
    EXPECT_LT(r.max_rss_bytes, kMaxRss) << c.name;
    for (const auto& f : c.no_files) {
      EXPECT_FALSE(fs::exists(f)) << c.name << ": left " << f;
      EXPECT_FALSE(fs::exists(f + ".partial")) << c.name << ": left " << f << ".partial";
    }
    std::printf("[bad-input] %-36s exit %d  %.2f s  %.0f MB\n", c.name.c_str(), r.exit_code, r.seconds,
                r.max_rss_bytes / 1e6);
  }
  // The existing output was not touched.
  EXPECT_EQ(Slurp(exists), "a finished video");
}

}  // namespace
}  // namespace liveavatar::cli
