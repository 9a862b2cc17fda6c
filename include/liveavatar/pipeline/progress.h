// Progress display for generation: a one-line terminal bar (clips, blocks, frames/s, ETA, peak RSS) redrawn in
// place when stderr is a TTY, otherwise a log line at most every `log_interval_s` seconds and at the end.
// Not thread-safe; one per run.
#pragma once

#include <cstdint>

#include "liveavatar/pipeline/engine.h"

namespace liveavatar::pipeline {

class ProgressReporter {
 public:
  explicit ProgressReporter(double log_interval_s = 10.0);
  ~ProgressReporter();
  void operator()(const Progress& p);
  // Ends the bar line (TTY) — call once after the run.
  void Finish();
  ProgressFn AsFn();

 private:
  bool tty_;
  double log_interval_s_;
  double last_log_s_ = -1e9;
  bool drawn_ = false;
};

// Peak resident set size of this process in bytes (VmHWM), 0 when unknown.
int64_t PeakRssBytes();

}  // namespace liveavatar::pipeline
