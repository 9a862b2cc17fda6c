// Process-wide CPU threading setup. LibTorch defaults to 1 intra-op thread on some Debian builds; the engine
// sets it from the core count (or LIVEAVATAR_NUM_THREADS / --threads) once at start-up.
#pragma once

namespace liveavatar {

// n <= 0: use LIVEAVATAR_NUM_THREADS if set, else std::thread::hardware_concurrency(). Returns the count set.
int InitCpuThreads(int n = 0);

}  // namespace liveavatar
