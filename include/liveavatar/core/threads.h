// Process-wide CPU threading setup. LibTorch defaults to 1 intra-op thread on some Debian builds; the engine
// sets it from the core count (or LIVEAVATAR_NUM_THREADS / --threads) once at start-up.
#pragma once

namespace liveavatar {

// n <= 0: use LIVEAVATAR_NUM_THREADS if set, else std::thread::hardware_concurrency(). Returns the count set.
int InitCpuThreads(int n = 0);

// A threaded OpenBLAS (Debian's libopenblas0-pthread, LibTorch's BLAS here) inside LibTorch's own OpenMP regions
// oversubscribes the cores and spins in sched_yield (measured: the tiny demo 42 s -> 28 s with one BLAS
// thread). OpenBLAS reads OPENBLAS_NUM_THREADS only when it is loaded, so the CLI calls this first thing in
// main(): when the variable is unset it sets it to 1 and re-executes the program (once). Returns normally
// when nothing needs doing or the re-exec fails.
void ReexecWithSingleThreadedBlas(char** argv);

}  // namespace liveavatar
