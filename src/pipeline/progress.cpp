#include "liveavatar/pipeline/progress.h"

#include <cstdio>
#include <fstream>
#include <string>

#include <unistd.h>

#include "liveavatar/core/logging.h"

namespace liveavatar::pipeline {

int64_t PeakRssBytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

ProgressReporter::ProgressReporter(double log_interval_s) : tty_(::isatty(2) == 1), log_interval_s_(log_interval_s) {}

ProgressReporter::~ProgressReporter() { Finish(); }

void ProgressReporter::operator()(const Progress& p) {
  const double fps = p.elapsed_s > 0 ? p.frames_written / p.elapsed_s : 0.0;
  const double eta = fps > 0 ? (p.total_frames - p.frames_written) / fps : 0.0;
  const double frac = p.total_frames > 0 ? static_cast<double>(p.frames_written) / p.total_frames : 0.0;
  const double rss_gb = PeakRssBytes() / 1e9;
  const bool last = p.frames_written >= p.total_frames;
  if (tty_) {
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(frac * kWidth);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::fprintf(stderr, "\r[%s] clip %lld/%lld block %lld/%lld  %lld/%lld frames  %.1f fps  ETA %.0fs  peak RSS %.2f GB ",
                 bar.c_str(), static_cast<long long>(p.clip + 1), static_cast<long long>(p.num_clips),
                 static_cast<long long>(p.block + 1), static_cast<long long>(p.blocks_per_clip),
                 static_cast<long long>(p.frames_written), static_cast<long long>(p.total_frames), fps, eta, rss_gb);
    std::fflush(stderr);
    drawn_ = true;
    return;
  }
  if (last || p.elapsed_s - last_log_s_ >= log_interval_s_) {
    last_log_s_ = p.elapsed_s;
    LA_LOG_INFO("progress: clip {}/{} block {}/{}, {}/{} frames ({:.0f}%), {:.2f} fps, ETA {:.0f} s, peak RSS {:.2f} GB",
                p.clip + 1, p.num_clips, p.block + 1, p.blocks_per_clip, p.frames_written, p.total_frames,
                100.0 * frac, fps, eta, rss_gb);
  }
}

void ProgressReporter::Finish() {
  if (tty_ && drawn_) {
    std::fprintf(stderr, "\n");
    drawn_ = false;
  }
}

ProgressFn ProgressReporter::AsFn() {
  return [this](const Progress& p) { (*this)(p); };
}

}  // namespace liveavatar::pipeline
