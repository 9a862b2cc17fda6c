#include "liveavatar/runtime/oom.h"

#include <cstdio>
#include <fstream>
#include <new>
#include <sstream>

#include <c10/util/Exception.h>
#include <unistd.h>

#include "liveavatar/runtime/cpu_memory_tracker.h"

#if LIVEAVATAR_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace liveavatar::runtime {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

std::string Gib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f GiB", static_cast<double>(bytes) / kGiB);
  return buf;
}

// "VmRSS:  123456 kB" -> bytes; -1 when absent.
int64_t ProcStatusBytes(const std::string& field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.compare(0, field.size() + 1, field + ":") == 0) {
      return std::atoll(line.c_str() + field.size() + 1) * 1024;
    }
  }
  return -1;
}

std::string FirstLine(const std::string& s) { return s.substr(0, s.find('\n')); }

}  // namespace

bool IsOutOfMemory(const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) return true;
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) return true;
  const auto* err = dynamic_cast<const c10::Error*>(&e);
  if (err == nullptr) return false;
  const std::string msg = err->what_without_backtrace();
  // LibTorch 1.13's CPU allocator: "DefaultCPUAllocator: can't allocate memory: ..." (later: "not enough memory").
  for (const char* sign : {"can't allocate memory", "not enough memory", "out of memory", "Cannot allocate memory"}) {
    if (msg.find(sign) != std::string::npos) return true;
  }
  return false;
}

AllocatorStats ReadAllocatorStats(const c10::Device& device, int64_t limit_bytes) {
  AllocatorStats s;
  s.device = device.str();
  s.limit = limit_bytes;
#if LIVEAVATAR_HAVE_CUDA
  if (device.is_cuda()) {
    try {  // the allocator throws when it was never initialised on this device
      const int index = device.has_index() ? device.index() : 0;
      const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
      const auto& allocated = stats.allocated_bytes[0];  // StatType::AGGREGATE
      const auto& reserved = stats.reserved_bytes[0];
      s.allocated = allocated.current;
      s.peak_allocated = allocated.peak;
      s.reserved = reserved.current;
      s.peak_reserved = reserved.peak;
      s.total = static_cast<int64_t>(at::cuda::getDeviceProperties(index)->totalGlobalMem);
    } catch (const std::exception&) {
    }
    return s;
  }
#endif
  if (CpuMemoryTracker::installed()) {
    s.allocated = CpuMemoryTracker::live_bytes();
    s.peak_allocated = CpuMemoryTracker::peak_bytes();
  }
  s.reserved = ProcStatusBytes("VmRSS");
  s.peak_reserved = ProcStatusBytes("VmHWM");
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) s.total = static_cast<int64_t>(pages) * page;
  return s;
}

std::string FormatAllocatorStats(const AllocatorStats& s) {
  std::ostringstream o;
  const bool cpu = s.device.compare(0, 3, "cpu") == 0;
  auto pair = [&](const char* name, int64_t now, int64_t peak) {
    if (now < 0) return;
    if (o.tellp() > 0) o << ", ";
    o << name << " " << Gib(now);
    if (peak >= 0) o << " (peak " << Gib(peak) << ")";
  };
  pair(cpu ? "tensors" : "allocated", s.allocated, s.peak_allocated);
  pair(cpu ? "resident set" : "reserved", s.reserved, s.peak_reserved);
  if (s.total >= 0) o << (o.tellp() > 0 ? " of " : "") << Gib(s.total) << (cpu ? " RAM" : "");
  if (s.limit >= 0) o << ", capped at " << Gib(s.limit) << " (--max_gpu_mem_gb)";
  const std::string text = o.str();
  return text.empty() ? "no allocator counters" : text;
}

Status OutOfMemoryStatus(const std::exception& e, const c10::Device& device, const std::string& during,
                         int64_t limit_bytes) {
  const auto* err = dynamic_cast<const c10::Error*>(&e);
  const std::string what = err != nullptr ? err->what_without_backtrace() : e.what();
  // Host memory ran out (std::bad_alloc, the CPU allocator): report the host, whatever the run's device.
  const bool host = dynamic_cast<const std::bad_alloc*>(&e) != nullptr ||
                    what.find("CPUAllocator") != std::string::npos;
  const c10::Device where = host ? c10::Device(c10::kCPU) : device;
  return Status::OutOfMemory(during + " on " + where.str() + ": " + FirstLine(what) + "\n  allocator: " +
                             FormatAllocatorStats(ReadAllocatorStats(where, host ? -1 : limit_bytes)));
}

}  // namespace liveavatar::runtime
