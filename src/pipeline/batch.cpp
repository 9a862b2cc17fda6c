#include "liveavatar/core/json_file.h"
#include "liveavatar/pipeline/batch.h"

#include <map>

#include "liveavatar/io/path_rules.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "liveavatar/core/logging.h"

namespace fs = std::filesystem;

namespace liveavatar::pipeline {

namespace {

std::string Resolve(const fs::path& base, const std::string& p) {
  if (p.empty() || fs::path(p).is_absolute()) return p;
  return (base / p).lexically_normal().string();
}

Status ApplyJob(const nlohmann::json& j, const std::string& job, const fs::path& base, GenerationRequest* r) {
  if (!j.is_object()) return Status::InvalidArgument("job '" + job + "' is not an object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const auto& v = it.value();
    try {
      if (k == "image") r->image = Resolve(base, v.get<std::string>());
      else if (k == "audio") r->audio = Resolve(base, v.get<std::string>());
      else if (k == "prompt") r->prompt = v.get<std::string>();
      else if (k == "output" || k == "save_file") r->output = v.get<std::string>();
      else if (k == "size") r->size = v.get<std::string>();
      else if (k == "num_clip") r->num_clip = v.get<int64_t>();
      else if (k == "infer_frames") r->infer_frames = v.get<int64_t>();
      else if (k == "sample_steps") r->sample_steps = v.get<int64_t>();
      else if (k == "base_seed") r->base_seed = v.get<int64_t>();
      else if (k == "rolling_sink_d") r->rolling_sink_d = v.get<int64_t>();
      else if (k == "crf") r->crf = v.get<int>();
      else if (k == "preset") r->preset = v.get<std::string>();
      else if (k == "name") continue;
      else return Status::InvalidArgument("job '" + job + "': unknown key '" + k + "'");
    } catch (const nlohmann::json::exception& e) {
      return Status::InvalidArgument("job '" + job + "': key '" + k + "' has the wrong type (" + e.what() + ")");
    }
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::vector<BatchJob>> LoadBatchJobs(const std::string& config_path, const GenerationRequest& defaults,
                                              const std::string& save_dir) {
  LA_ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(config_path, "the batch config"));
  const fs::path base = fs::path(config_path).parent_path();
  std::vector<BatchJob> jobs;
  std::map<std::string, std::string> output_of;  // normalised output -> the job that writes it
  auto add = [&](const std::string& name, const nlohmann::json& spec) -> Status {
    BatchJob job{name, defaults};
    job.request.output.clear();
    LA_RETURN_IF_ERROR(ApplyJob(spec, name, base, &job.request).WithPrefix(config_path));
    if (job.request.output.empty()) {
      // A job name becomes a file inside --save_dir, nowhere else.
      LA_RETURN_IF_ERROR(io::CheckFileName(name, "job name").WithPrefix(config_path));
      job.request.output = (fs::path(save_dir) / (name + ".mp4")).string();
    } else if (!fs::path(job.request.output).is_absolute()) {
      auto inside = io::PathInside(save_dir.empty() ? "." : save_dir, job.request.output,
                                   "job '" + io::Printable(name) + "' output");
      if (!inside.ok()) return inside.status().WithPrefix(config_path);
      job.request.output = *inside;
    }
    const std::string key = fs::absolute(job.request.output).lexically_normal().string();
    if (auto it = output_of.find(key); it != output_of.end()) {
      return Status::InvalidArgument(config_path + ": jobs '" + io::Printable(it->second) + "' and '" +
                                     io::Printable(name) + "' both write " + job.request.output +
                                     " (give each job its own name or output)");
    }
    output_of[key] = name;
    jobs.push_back(std::move(job));
    return Status::Ok();
  };
  if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) {
      std::string name = "job" + std::to_string(i);
      if (j[i].is_object() && j[i].contains("name") && j[i]["name"].is_string()) name = j[i]["name"].get<std::string>();
      LA_RETURN_IF_ERROR(add(name, j[i]));
    }
  } else if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) LA_RETURN_IF_ERROR(add(it.key(), it.value()));
  } else {
    return Status::InvalidArgument(config_path + ": expected a list of jobs or a {name: job} object");
  }
  if (jobs.empty()) return Status::InvalidArgument(config_path + ": no jobs");
  return jobs;
}

std::vector<Status> ValidateBatchJobs(const std::vector<BatchJob>& jobs) {
  std::vector<Status> out;
  out.reserve(jobs.size());
  for (const auto& job : jobs) {
    Status s = ValidateRequest(job.request);
    if (s.ok()) s = CheckRequestFiles(job.request);
    out.push_back(s);
  }
  return out;
}

BatchSummary RunBatch(Engine& engine, const std::vector<BatchJob>& jobs, bool overwrite, const ProgressFn& progress) {
  BatchSummary s;
  const std::vector<Status> valid = ValidateBatchJobs(jobs);
  for (size_t i = 0; i < jobs.size(); ++i) {
    const BatchJob& job = jobs[i];
    std::error_code ec;
    if (!valid[i].ok()) {  // refused before anything renders
      ++s.failed;
      s.errors.push_back(job.name + ": " + valid[i].ToString());
      LA_LOG_ERROR("[{}/{}] {}: refused: {}", i + 1, jobs.size(), job.name, valid[i].ToString());
      continue;
    }
    if (!overwrite && fs::exists(job.request.output, ec)) {
      LA_LOG_INFO("[{}/{}] {}: {} exists, skipped (--overwrite to redo)", i + 1, jobs.size(), job.name, job.request.output);
      ++s.skipped;
      continue;
    }
    LA_LOG_INFO("[{}/{}] {}: rendering {}", i + 1, jobs.size(), job.name, job.request.output);
    StatusOr<GenerationResult> r = Status::Internal("not run");
    try {
      r = engine.Generate(job.request, progress);
    } catch (const std::exception& e) {
      r = Status::Internal(e.what());
    }
    if (r.ok()) {
      ++s.done;
      LA_LOG_INFO("[{}/{}] {}: {} frames -> {}", i + 1, jobs.size(), job.name, r->frames, job.request.output);
    } else {
      ++s.failed;
      s.errors.push_back(job.name + ": " + r.status().ToString());
      LA_LOG_ERROR("[{}/{}] {}: failed: {}", i + 1, jobs.size(), job.name, r.status().ToString());
    }
  }
  return s;
}

}  // namespace liveavatar::pipeline
