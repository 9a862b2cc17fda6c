// CpuMemoryTracker: counts the bytes of live CPU tensor storage and their high-water mark, by installing a
// c10 CPU allocator that forwards to the allocator it replaces (c10::SetCPUAllocator) and wraps every block's
// deleter. What it sees: every allocation LibTorch makes through the CPU allocator (at::empty and everything
// built on it: op outputs, temporaries, im2col buffers of the native CPU convolutions, copies). What it does not
// see: tensors over foreign memory (at::from_blob over mmapped safetensors, zero-copy reads), allocations of
// third-party kernels that bypass c10 (oneDNN scratchpads, BLAS packing buffers), and plain heap use (std::vector).
//
// It is the measurement the memory planner's CPU prediction is checked against (docs/memory.md).
//
// Thread safety: counters are atomics; Install()/Uninstall() must not race with each other. Blocks allocated
// while installed are counted off when freed, even after Uninstall() (the wrapper outlives every block).
#pragma once

#include <cstdint>

namespace liveavatar::runtime {

class CpuMemoryTracker {
 public:
  // Installs the tracking allocator (idempotent) and resets the peak to the current live bytes.
  static void Install();
  // Restores the previous CPU allocator; counting of already tracked blocks continues until they are freed.
  static void Uninstall();
  static bool installed();

  // Bytes of tracked blocks alive now / the maximum since the last ResetPeak() (or Install()).
  static int64_t live_bytes();
  static int64_t peak_bytes();
  // peak := live.
  static void ResetPeak();
};

// The process's resident memory from /proc/self/status (Linux; zeros elsewhere): RSS now and its high-water mark,
// split into private (anonymous) pages and file-backed pages (mapped checkpoint files, the binary, libraries).
struct ProcessMemory {
  int64_t rss = 0, peak_rss = 0;  // VmRSS, VmHWM
  int64_t rss_anon = 0, rss_file = 0;
};
ProcessMemory ReadProcessMemory();
// Resets the kernel's VmHWM to the current RSS (/proc/self/clear_refs); false when the kernel refuses.
bool ResetPeakRss();

}  // namespace liveavatar::runtime
