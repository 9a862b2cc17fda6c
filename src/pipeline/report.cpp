#include "liveavatar/pipeline/report.h"

#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/version.h>

#include "liveavatar/pipeline/progress.h"

namespace liveavatar::pipeline {

Status WriteReport(const std::string& path, const GenerationRequest& req, const GenerationResult& res) {
  nlohmann::json j;
  j["inputs"] = {{"image", req.image}, {"audio", req.audio}, {"prompt", req.prompt}, {"size", req.size},
                 {"num_clip", req.num_clip}, {"infer_frames", req.infer_frames}, {"sample_steps", req.sample_steps},
                 {"rolling_sink_d", req.rolling_sink_d}};
  j["seed"] = res.seed;
  j["resolved_size"] = {{"height", res.height}, {"width", res.width}};
  j["num_clips"] = res.num_clips;
  j["frames"] = res.frames;
  j["fps"] = res.fps;
  j["outputs"] = res.outputs;
  nlohmann::json blocks = nlohmann::json::array();
  double denoise = 0, decode = 0, write = 0;
  for (const auto& b : res.blocks) {
    blocks.push_back({{"clip", b.clip}, {"block", b.block}, {"denoise_ms", b.denoise_ms}, {"decode_ms", b.decode_ms},
                      {"write_ms", b.write_ms}});
    denoise += b.denoise_ms;
    decode += b.decode_ms;
    write += b.write_ms;
  }
  j["timings_ms"] = {{"encode_inputs", res.encode_ms}, {"denoise", denoise}, {"decode", decode}, {"write", write},
                     {"total", res.total_ms}};
  j["blocks"] = blocks;
  j["peak_rss_bytes"] = PeakRssBytes();
  j["versions"] = {{"liveavatar", "0.1.0"}, {"libtorch", TORCH_VERSION}};
  const std::string tmp = path + ".partial";
  {
    std::ofstream out(tmp);
    if (!out) return Status::IOError("--report: cannot write " + tmp);
    out << j.dump(2) << "\n";
    if (!out) return Status::IOError("--report: write to " + tmp + " failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return Status::IOError("--report: cannot rename " + tmp + " to " + path);
  return Status::Ok();
}

}  // namespace liveavatar::pipeline
