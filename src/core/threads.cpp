#include "liveavatar/core/threads.h"

#include <cstdlib>
#include <thread>

#include <ATen/Parallel.h>

namespace liveavatar {

int InitCpuThreads(int n) {
  if (n <= 0) {
    if (const char* env = std::getenv("LIVEAVATAR_NUM_THREADS")) n = std::atoi(env);
  }
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  at::set_num_threads(n);
  return n;
}

}  // namespace liveavatar
