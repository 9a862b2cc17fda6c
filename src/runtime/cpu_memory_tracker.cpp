#include "liveavatar/runtime/cpu_memory_tracker.h"

#include <fstream>
#include <sstream>
#include <string>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "liveavatar/core/compat.h"

namespace liveavatar::runtime {

namespace {

std::atomic<int64_t> g_live{0};
std::atomic<int64_t> g_peak{0};

void AddLive(int64_t n) {
  const int64_t now = g_live.fetch_add(n) + n;
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}

// Sizes of the live tracked blocks by address. The context of a tracked DataPtr is its data pointer (oneDNN
// allocates through Allocator::raw_allocate, which requires that), so the size is looked up here on free.
std::mutex& SizesMutex() {
  static auto* m = new std::mutex();
  return *m;
}
std::unordered_map<void*, std::pair<int64_t, c10::DeleterFnPtr>>& Sizes() {
  static auto* m = new std::unordered_map<void*, std::pair<int64_t, c10::DeleterFnPtr>>();
  return *m;
}

void DeleteBlock(void* ptr) {
  int64_t bytes = 0;
  c10::DeleterFnPtr inner = nullptr;
  {
    std::lock_guard<std::mutex> lock(SizesMutex());
    auto it = Sizes().find(ptr);
    if (it != Sizes().end()) {
      bytes = it->second.first;
      inner = it->second.second;
      Sizes().erase(it);
    }
  }
  g_live.fetch_sub(bytes);
  if (inner != nullptr) inner(ptr);
}

class TrackingAllocator final : public c10::Allocator {
 public:
  void set_inner(c10::Allocator* inner) { inner_ = inner; }
  c10::Allocator* inner() const { return inner_; }

  LIVEAVATAR_ALLOCATOR_ALLOCATE_QUALIFIER {
    c10::DeleterFnPtr inner_deleter = inner_->raw_deleter();
    TORCH_CHECK(inner_deleter != nullptr, "CpuMemoryTracker: the CPU allocator has no raw deleter");
    void* data = n == 0 ? nullptr : inner_->raw_allocate(n);
    if (data != nullptr) {
      std::lock_guard<std::mutex> lock(SizesMutex());
      Sizes()[data] = {static_cast<int64_t>(n), inner_deleter};
    }
    AddLive(data != nullptr ? static_cast<int64_t>(n) : 0);
    return c10::DataPtr(data, data, &DeleteBlock, c10::Device(c10::kCPU));
  }
  c10::DeleterFnPtr raw_deleter() const override { return &DeleteBlock; }
#if LIVEAVATAR_ALLOCATOR_HAS_COPY_DATA
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
#endif

 private:
  c10::Allocator* inner_ = nullptr;
};

// Never destroyed: blocks may be freed during static destruction.
TrackingAllocator* Tracker() {
  static auto* t = new TrackingAllocator();
  return t;
}

std::mutex g_mu;
bool g_installed = false;

}  // namespace

void CpuMemoryTracker::Install() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_installed) {
    Tracker()->set_inner(c10::GetCPUAllocator());
    // Priority above the default (0) so later default registrations do not displace it.
    c10::SetCPUAllocator(Tracker(), /*priority=*/100);
    g_installed = true;
  }
  g_peak.store(g_live.load());
}

void CpuMemoryTracker::Uninstall() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_installed) return;
  c10::SetCPUAllocator(Tracker()->inner(), /*priority=*/100);
  g_installed = false;
}

bool CpuMemoryTracker::installed() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_installed;
}

int64_t CpuMemoryTracker::live_bytes() { return g_live.load(); }
int64_t CpuMemoryTracker::peak_bytes() { return g_peak.load(); }
void CpuMemoryTracker::ResetPeak() { g_peak.store(g_live.load()); }

ProcessMemory ReadProcessMemory() {
  ProcessMemory m;
  std::ifstream in("/proc/self/status");
  std::string key;
  int64_t kib = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    if (!(ls >> key >> kib)) continue;
    const int64_t bytes = kib * 1024;
    if (key == "VmRSS:") m.rss = bytes;
    if (key == "VmHWM:") m.peak_rss = bytes;
    if (key == "RssAnon:") m.rss_anon = bytes;
    if (key == "RssFile:") m.rss_file = bytes;
  }
  return m;
}

bool ResetPeakRss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace liveavatar::runtime
