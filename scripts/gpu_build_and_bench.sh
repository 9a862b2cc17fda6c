#!/usr/bin/env bash
# Configure, build, test and benchmark liveavatar on a GPU machine in one call (docs/performance.md).
#
# The GPU machine (/work/shared/reference/gpu_machine.md) has a CUDA LibTorch inside its python3 torch install,
# nvcc, NCCL, cmake and ninja, but no FFmpeg/libsndfile development files, no CLI11 or nlohmann/json, maybe no
# spdlog or GoogleTest, and no network. The header-only pieces travel with the working tree in the git-ignored
# folder third_party/_gpu_carry/, filled beforehand on a Debian development machine with
#   bash scripts/gpu_build_and_bench.sh --prepare-carry
# (copies of the Debian packages' headers + CMake configs, a header-only spdlog shim, the googletest sources;
# ~7 MB). On the GPU machine:
#   bash scripts/gpu_build_and_bench.sh            # build + GPU-relevant tests + bench, results under $OUT
# Environment:
#   LA_GPU_BUILD   build directory (default build-gpu)
#   LA_GPU_STAGES  comma list of build,test,bench (default all three)
#   LA_GPU_JOBS    build parallelism (default nproc)
#   OUT            where results go (default $LA_GPU_BUILD/results)
#   LA_GPU_CARRY   the carried dependencies (default third_party/_gpu_carry)
#   LIVEAVATAR_GOLDEN_DIR  fixture root (default: tests/golden, the copy kept in the repository)
# Exit status: non-zero when a stage fails; later stages still run where they can, and every log is kept.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
carry="${LA_GPU_CARRY:-$root/third_party/_gpu_carry}"

log() { printf '[gpu] %s\n' "$*" >&2; }

prepare_carry() {
  local inc
  log "filling $carry from this machine's Debian packages"
  if [[ -e "$carry" && ! -e "$carry/.la_gpu_carry" ]]; then
    log "$carry exists and was not made by this script; not touching it"
    return 1
  fi
  rm -rf "$carry"
  mkdir -p "$carry"
  touch "$carry/.la_gpu_carry"
  for inc in /usr/include/nlohmann /usr/include/CLI /usr/include/spdlog /usr/include/fmt /usr/src/googletest; do
    if [[ ! -e "$inc" ]]; then
      log "missing $inc: apt-get install nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libgtest-dev"
      return 1
    fi
  done
  mkdir -p "$carry/nlohmann/include" "$carry/nlohmann/share/cmake"
  cp -r /usr/include/nlohmann "$carry/nlohmann/include/"
  cp -r /usr/share/cmake/nlohmann_json "$carry/nlohmann/share/cmake/"
  mkdir -p "$carry/cli11/include"
  cp -r /usr/include/CLI "$carry/cli11/include/"
  # spdlog header-only over a header-only fmt: the engine links spdlog::spdlog, which this shim provides.
  mkdir -p "$carry/spdlog/include" "$carry/spdlog/lib/cmake/spdlog"
  cp -r /usr/include/spdlog /usr/include/fmt "$carry/spdlog/include/"
  cat >"$carry/spdlog/lib/cmake/spdlog/spdlogConfig.cmake" <<'EOF'
# Header-only spdlog + fmt shim for the GPU machine (scripts/gpu_build_and_bench.sh --prepare-carry).
get_filename_component(_la_spdlog_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET spdlog::spdlog)
  add_library(spdlog::spdlog INTERFACE IMPORTED)
  set_target_properties(spdlog::spdlog PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${_la_spdlog_prefix}/include"
    INTERFACE_COMPILE_DEFINITIONS "SPDLOG_HEADER_ONLY;SPDLOG_FMT_EXTERNAL;FMT_HEADER_ONLY")
endif()
set(spdlog_FOUND TRUE)
EOF
  cp -r /usr/src/googletest "$carry/googletest-src"
  du -sh "$carry" >&2
  log "done; name third_party/_gpu_carry in the device tool's carry list"
}

if [[ "${1:-}" == "--prepare-carry" ]]; then
  prepare_carry
  exit $?
fi

build="${LA_GPU_BUILD:-$root/build-gpu}"
stages="${LA_GPU_STAGES:-build,test,bench}"
jobs="${LA_GPU_JOBS:-$(nproc 2>/dev/null || echo 8)}"
out="${OUT:-$build/results}"
mkdir -p "$out"
status=0

has_stage() { [[ ",$stages," == *",$1,"* ]]; }

# A system header or CMake package of that name, in the usual prefixes.
system_has() {
  local d
  for d in /usr/include /usr/local/include; do
    [[ -e "$d/$1" ]] && return 0
  done
  return 1
}

configure_and_build() {
  local torch_prefix
  torch_prefix="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')" || {
    log "python3 cannot import torch: no LibTorch to build against"
    return 1
  }
  # H100/H200 are sm_90; saves LibTorch's CMake from probing the GPU.
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
  log "LibTorch: $torch_prefix ($(python3 -c 'import torch;print(torch.__version__, torch.version.cuda)'))"
  local -a args=(-S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
                 "-DCMAKE_PREFIX_PATH=$torch_prefix"
                 -DLIVEAVATAR_WITH_FFMPEG=OFF -DLIVEAVATAR_WITH_SNDFILE=OFF -DLIVEAVATAR_WITH_CUDA=ON)
  if ! system_has nlohmann/json.hpp; then
    [[ -d "$carry/nlohmann" ]] || { log "no nlohmann/json and no carry: run --prepare-carry first"; return 1; }
    args+=("-Dnlohmann_json_DIR=$carry/nlohmann/share/cmake/nlohmann_json")
  fi
  if ! system_has CLI/CLI.hpp; then
    [[ -d "$carry/cli11" ]] || { log "no CLI11 and no carry: run --prepare-carry first"; return 1; }
    args+=("-DCLI11_INCLUDE_DIR=$carry/cli11/include")
  fi
  if ! system_has spdlog/spdlog.h; then
    [[ -d "$carry/spdlog" ]] || { log "no spdlog and no carry: run --prepare-carry first"; return 1; }
    args+=("-Dspdlog_DIR=$carry/spdlog/lib/cmake/spdlog")
  fi
  if ! system_has gtest/gtest.h; then
    [[ -d "$carry/googletest-src" ]] || { log "no GoogleTest and no carry: run --prepare-carry first"; return 1; }
    local gt_build="$build/_googletest" gt_prefix="$build/_googletest_install"
    if [[ ! -d "$gt_prefix" ]]; then
      log "building GoogleTest from the carried sources"
      if ! { cmake -S "$carry/googletest-src" -B "$gt_build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_GMOCK=OFF \
               -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
               "-DCMAKE_INSTALL_PREFIX=$gt_prefix" &&
             cmake --build "$gt_build" -j "$jobs" && cmake --install "$gt_build"; } >"$out/googletest.log" 2>&1; then
        log "GoogleTest build failed (see $out/googletest.log)"
        return 1
      fi
    fi
    local gt_dir
    gt_dir="$(dirname "$(find "$gt_prefix" -name GTestConfig.cmake | head -n 1)")"
    args+=("-DGTest_DIR=$gt_dir")
  fi
  log "configuring $build"
  cmake "${args[@]}" >"$out/configure.log" 2>&1 || { log "configure failed (see $out/configure.log)"; tail -n 30 "$out/configure.log" >&2; return 1; }
  grep -E 'liveavatar: LibTorch' "$out/configure.log" >&2 || true
  log "building with $jobs jobs"
  cmake --build "$build" -j "$jobs" --target liveavatar test_nn test_dit test_runtime test_dist \
    >"$out/build.log" 2>&1 || { log "build failed (see $out/build.log)"; grep -E 'error' "$out/build.log" | head -n 30 >&2; return 1; }
}

run_tests() {
  export LIVEAVATAR_SOURCE_DIR="$root"
  local t rc=0
  # FP8 format + quantisation, the DiT (golden parity under LibTorch 2.x, FP8 quality), FLOP counter and memory
  # tracker, and the distributed layer (NCCL where built).
  for t in test_nn test_runtime test_dit test_dist; do
    if [[ ! -x "$build/tests/$t" ]]; then
      log "$t was not built"
      rc=1
      continue
    fi
    log "running $t"
    if "$build/tests/$t" --gtest_brief=1 >"$out/$t.log" 2>&1; then
      log "$t: passed"
    else
      log "$t: FAILED (see $out/$t.log)"
      grep -E '^\[  FAILED' "$out/$t.log" | head -n 20 >&2
      rc=1
    fi
  done
  return $rc
}

run_bench() {
  local bin="$build/apps/liveavatar/liveavatar" rc=0
  [[ -x "$bin" ]] || { log "liveavatar was not built"; return 1; }
  if ! python3 -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    log "no CUDA device visible: benchmarking the tiny config on the CPU only"
    "$bin" bench --tiny --device cpu --threads 1 --shape '128*128' --json >"$out/bench_tiny_cpu.json" 2>"$out/bench_tiny_cpu.log" || rc=1
    return $rc
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.csv" 2>/dev/null || true
  log "bench: tiny config on CUDA (smoke)"
  "$bin" bench --tiny --device cuda --json --iters 3 >"$out/bench_tiny_cuda.json" 2>"$out/bench_tiny_cuda.log" || rc=1
  log "bench: Wan2.2-S2V-14B DiT + Wan2.1 VAE, bf16, 704*384 (steady-state block over 15 312 keys), then FP8 weights"
  "$bin" bench --device cuda --dtype bf16 --size '704*384' --warmup 2 --iters 5 --with_fp8 --json \
    >"$out/bench_14b_704x384.json" 2>"$out/bench_14b_704x384.log" || rc=1
  log "bench: the same with 40 layers in fp32 is out of reach (56 GB of weights); a 10-layer fp32 run instead"
  "$bin" bench --device cuda --dtype fp32 --layers 10 --size '704*384' --warmup 2 --iters 5 --no_vae --json \
    >"$out/bench_14b_10layers_fp32.json" 2>"$out/bench_14b_10layers_fp32.log" || rc=1
  "$bin" bench --device cuda --dtype bf16 --size '704*384' --warmup 1 --iters 3 2>/dev/null | tee "$out/bench_14b.txt" >&2
  return $rc
}

if has_stage build; then
  configure_and_build || status=1
fi
if has_stage test; then
  run_tests || status=1
fi
if has_stage bench; then
  run_bench || status=1
fi
log "results in $out"
exit $status
