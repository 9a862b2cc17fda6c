// Batch rendering: many generation jobs with models loaded once (`liveavatar batch CONFIG`).
//
// CONFIG is JSON: either a list of jobs [{"image", "audio", "prompt", "output", <generate overrides>}], or the
// reference's sample_list form {name: {"prompt", "image", "audio", "num_clip"}} (batch_eval.py), whose output is
// <save_dir>/<name>.mp4. Override keys: size, num_clip, infer_frames, sample_steps, base_seed, rolling_sink_d,
// crf, preset, save_file (= output). Relative image/audio paths resolve against the config file's folder.
// Unknown keys are errors naming the job and the key.
//
// A job without "output" writes <save_dir>/<name>.mp4: its name must be a plain file name (no '/', "..", empty
// name or control character); a relative "output" stays inside save_dir (io::PathInside); two jobs writing the
// same file are refused when the config loads. Jobs whose output already exists are skipped unless `overwrite`; a
// job whose inputs or numbers are bad fails before anything renders; a failing job is reported and the others
// continue. Outputs are written as NAME.partial and renamed on success, so an interrupted run never leaves a
// file that a rerun mistakes for a finished one.
#pragma once

#include <string>
#include <vector>

#include "liveavatar/core/status.h"
#include "liveavatar/pipeline/engine.h"

namespace liveavatar::pipeline {

struct BatchJob {
  std::string name;
  GenerationRequest request;
};

// `defaults` supplies every field a job does not set; `save_dir` names outputs of jobs without "output".
StatusOr<std::vector<BatchJob>> LoadBatchJobs(const std::string& config_path, const GenerationRequest& defaults,
                                              const std::string& save_dir);

struct BatchSummary {
  int done = 0;
  int skipped = 0;
  int failed = 0;
  std::vector<std::string> errors;  // "<job>: <message>" per failed job
};

// ValidateRequest() + CheckRequestFiles() of every job, in order (no model needed): run before loading so a bad
// job fails in seconds.
std::vector<Status> ValidateBatchJobs(const std::vector<BatchJob>& jobs);

// Runs every job on `engine` in order; jobs that fail ValidateBatchJobs() are counted failed without rendering.
// Never throws for a job's failure.
BatchSummary RunBatch(Engine& engine, const std::vector<BatchJob>& jobs, bool overwrite, const ProgressFn& progress = {});

}  // namespace liveavatar::pipeline
