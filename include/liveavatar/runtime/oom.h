// Out-of-memory reporting (issue 9): an allocation that fails although the memory plan said the run fits is not
// left as a bare allocator message. Where a run ends (cli generate, the TPP driver), the exception is recognised
// and turned into Status::OutOfMemory carrying the allocator's numbers (this helper), and the CLI adds the plan's
// prediction for the failing rank next to them (cli_generate.cpp).
//
// Thread safety: pure functions apart from reading allocator counters.
#pragma once

#include <cstdint>
#include <exception>
#include <string>

#include <c10/core/Device.h>

#include "liveavatar/core/status.h"

namespace liveavatar::runtime {

// Whether `e` is an allocator's out-of-memory error: c10::OutOfMemoryError (the CUDA caching allocator), a
// c10::Error from the CPU allocator ("can't allocate memory" / "not enough memory"), or std::bad_alloc.
bool IsOutOfMemory(const std::exception& e);

// Allocator counters of `device` now; -1 where unknown. CUDA: the caching allocator's aggregate allocated /
// reserved bytes and their peaks, the device's total memory and the allocator's cap (--max_gpu_mem_gb; -1 when
// uncapped). CPU: the bytes counted by runtime::CpuMemoryTracker when it is installed, and the process's resident
// set (VmRSS / VmHWM) otherwise.
struct AllocatorStats {
  std::string device;  // "cuda:0", "cpu"
  int64_t allocated = -1, peak_allocated = -1;
  int64_t reserved = -1, peak_reserved = -1;
  int64_t total = -1;  // device memory (CUDA) / physical memory (CPU)
  int64_t limit = -1;  // the allocator's cap
};
AllocatorStats ReadAllocatorStats(const c10::Device& device, int64_t limit_bytes = -1);
// One line: "allocated 12.3 GiB (peak 20.1 GiB), reserved 21.0 GiB (peak 22.0 GiB) of 79.1 GiB, capped at 24.0 GiB".
std::string FormatAllocatorStats(const AllocatorStats& stats);

// OutOfMemory "<during> on <device>: <first line of the allocator's message>; allocator: <stats>", where the
// device is the CPU for host allocation failures (std::bad_alloc, the CPU allocator) and `device` otherwise.
// Counters are read when this is called: after unwinding, "current" may be below what failed; peaks are kept.
// REQUIRES: IsOutOfMemory(e).
Status OutOfMemoryStatus(const std::exception& e, const c10::Device& device, const std::string& during,
                         int64_t limit_bytes = -1);

}  // namespace liveavatar::runtime
