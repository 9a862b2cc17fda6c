// Out-of-memory recognition and reporting (runtime/oom.h): a real CPU allocator failure, the CUDA allocator's
// exception type, std::bad_alloc, and the allocator line of the report.
#include <new>
#include <stdexcept>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/runtime/cpu_memory_tracker.h"
#include "liveavatar/runtime/oom.h"

namespace liveavatar::runtime {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

TEST(OutOfMemory, RecognisesTheAllocatorsErrorsAndNothingElse) {
  bool thrown = false;
  try {
    at::empty({int64_t{1} << 52}, at::kByte);  // 4 PiB: more than any address space here
  } catch (const std::exception& e) {
    thrown = true;
    EXPECT_TRUE(IsOutOfMemory(e)) << e.what();
    const Status s = OutOfMemoryStatus(e, c10::Device(c10::kCPU), "out of memory while testing");
    EXPECT_EQ(s.code(), Status::Code::kOutOfMemory);
    EXPECT_EQ(s.message().rfind("out of memory while testing on cpu: ", 0), 0u) << s.message();
    EXPECT_NE(s.message().find("\n  allocator: "), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("resident set"), std::string::npos) << s.message();
    EXPECT_EQ(s.message().find("Exception raised from"), std::string::npos) << "no backtrace: " << s.message();
  }
  ASSERT_TRUE(thrown) << "a 4 PiB allocation succeeded";
  const c10::OutOfMemoryError cuda({__func__, __FILE__, __LINE__},
                                   "CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail");
  EXPECT_TRUE(IsOutOfMemory(cuda));
  EXPECT_EQ(OutOfMemoryStatus(cuda, c10::Device(c10::kCPU), "x").message().find("more detail"), std::string::npos);
  EXPECT_TRUE(IsOutOfMemory(std::bad_alloc()));
  // A host allocation failure is reported on the host even when the run's device is a GPU.
  const Status host = OutOfMemoryStatus(std::bad_alloc(), c10::Device(c10::kCUDA, 1), "out of memory");
  EXPECT_EQ(host.message().rfind("out of memory on cpu: ", 0), 0u) << host.message();
  EXPECT_FALSE(IsOutOfMemory(std::runtime_error("out of range")));
  EXPECT_FALSE(IsOutOfMemory(c10::Error({__func__, __FILE__, __LINE__}, "shape mismatch")));
}

TEST(OutOfMemory, AllocatorLineNamesEveryKnownCounter) {
  AllocatorStats s;
  s.device = "cuda:0";
  s.allocated = 1 * kGiB;
  s.peak_allocated = 2 * kGiB;
  s.reserved = 3 * kGiB;
  s.peak_reserved = 4 * kGiB;
  s.total = 80 * kGiB;
  s.limit = 24 * kGiB;
  EXPECT_EQ(FormatAllocatorStats(s),
            "allocated 1.00 GiB (peak 2.00 GiB), reserved 3.00 GiB (peak 4.00 GiB) of 80.00 GiB, capped at 24.00 GiB "
            "(--max_gpu_mem_gb)");
  AllocatorStats none;
  none.device = "cuda:1";
  EXPECT_EQ(FormatAllocatorStats(none), "no allocator counters");
  // On the CPU the tracked tensor bytes appear once the tracker is installed.
  CpuMemoryTracker::Install();
  const at::Tensor t = at::ones({1 << 20});
  const AllocatorStats cpu = ReadAllocatorStats(c10::Device(c10::kCPU));
  EXPECT_GE(cpu.allocated, int64_t{4} << 20);
  EXPECT_GE(cpu.peak_allocated, cpu.allocated);
  EXPECT_GT(cpu.reserved, 0);
  EXPECT_GT(cpu.total, 0);
  EXPECT_NE(FormatAllocatorStats(cpu).find("tensors "), std::string::npos) << FormatAllocatorStats(cpu);
  CpuMemoryTracker::Uninstall();
}

}  // namespace
}  // namespace liveavatar::runtime
