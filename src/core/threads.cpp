#include "liveavatar/core/threads.h"

#include <cstdlib>
#include <thread>

#include <malloc.h>
#include <unistd.h>

#include <ATen/Parallel.h>

namespace liveavatar {

namespace {

// Keep freed activation buffers in the heap instead of mapping and unmapping them around every op: each fresh
// mapping costs page faults (tiny-model demo on 2 cores: 40 s with glibc's defaults, 29.6 s with this).
void KeepLargeBuffers() {
  ::mallopt(M_MMAP_MAX, 0);  // every allocation from the heap, which is only trimmed past 1 GiB free
  ::mallopt(M_TRIM_THRESHOLD, 1 << 30);
  ::mallopt(M_TOP_PAD, 64 << 20);
}

}  // namespace

int InitCpuThreads(int n) {
  if (n <= 0) {
    if (const char* env = std::getenv("LIVEAVATAR_NUM_THREADS")) n = std::atoi(env);
  }
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  KeepLargeBuffers();
  at::set_num_threads(n);
  return n;
}

void ReexecWithSingleThreadedBlas(char** argv) {
  if (std::getenv("OPENBLAS_NUM_THREADS") != nullptr) return;
  ::setenv("OPENBLAS_NUM_THREADS", "1", 1);
  ::execv("/proc/self/exe", argv);
  // execv returned: keep running with the threaded BLAS (slower, still correct).
}

}  // namespace liveavatar
