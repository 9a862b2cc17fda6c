#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a short while on its seed corpus.
#
#   scripts/fuzz_smoke.sh [seconds per target, default 30] [build dir, default build-fuzz]
#
# New inputs found during the run go to a scratch corpus under the build dir (the committed seeds in
# fuzz/corpus/ are only read). A crash leaves crash-* / leak-* files in the build dir and fails the script.
set -euo pipefail

SECONDS_PER_TARGET="${1:-30}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${2:-${ROOT}/build-fuzz}"
TARGETS=(fuzz_safetensors_header fuzz_pickle_state_dict fuzz_pth_archive)

cmake -S "${ROOT}" -B "${BUILD}" -G Ninja \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLIVEAVATAR_BUILD_FUZZERS=ON -DLIVEAVATAR_BUILD_TESTS=ON >/dev/null
ninja -C "${BUILD}" "${TARGETS[@]}"

status=0
for t in "${TARGETS[@]}"; do
  seeds="${ROOT}/fuzz/corpus/${t#fuzz_}"
  work="${BUILD}/fuzz-work/${t}"
  mkdir -p "${work}/corpus"
  dict=()
  [[ -f "${ROOT}/fuzz/${t#fuzz_}.dict" ]] && dict=(-dict="${ROOT}/fuzz/${t#fuzz_}.dict")
  echo "== ${t}: ${SECONDS_PER_TARGET}s on ${seeds}"
  # LibTorch's own static allocations are not ours to fix: leaks are checked per input by libFuzzer only.
  if ! (cd "${work}" && ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
        "${BUILD}/fuzz/${t}" "${dict[@]}" -max_total_time="${SECONDS_PER_TARGET}" -max_len=65536 -timeout=10 \
        -rss_limit_mb=4096 -print_final_stats=1 "${work}/corpus" "${seeds}" 2>&1 | tail -n 25); then
    echo "!! ${t} FAILED (artifacts in ${work})"
    status=1
  fi
done
exit "${status}"
