# Shared helpers of scripts/quickstart.sh and scripts/test.sh (docs/build.md). Source it; do not run it.
#
#   la_install_deps   apt-get the Debian 12 packages below unless every one is already installed
#   la_build [DIR]    configure (Release, Ninja, ccache) and build into DIR (default: build)
#
# Environment: CI=true adds -DLIVEAVATAR_WERROR=ON; LIVEAVATAR_JOBS overrides the build parallelism;
# LIVEAVATAR_CMAKE_ARGS adds configure arguments.

set -euo pipefail

LA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Every apt dependency (docs/build.md says what each is for). ffmpeg/sox/espeak-ng make the demo inputs.
LA_APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libopenblas0-pthread
  libsentencepiece-dev libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libgtest-dev
  libavformat-dev libavcodec-dev libavutil-dev libswresample-dev libswscale-dev
  libsndfile1-dev libpng-dev libjpeg-dev libgloo-dev
  ffmpeg sox espeak-ng
)

la_log() { printf '[liveavatar] %s\n' "$*" >&2; }

# Prints the packages of LA_APT_PACKAGES that are not installed.
la_missing_packages() {
  local p status
  for p in "${LA_APT_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || printf '%s\n' "$p"
  done
}

la_install_deps() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    la_log "dpkg-query not found: not a Debian system; install the packages of scripts/lib.sh by hand"
    return 0
  fi
  local missing
  missing="$(la_missing_packages)"
  if [[ -z "$missing" ]]; then
    la_log "all ${#LA_APT_PACKAGES[@]} apt dependencies already installed"
    return 0
  fi
  local -a sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      la_log "missing packages and not root (no sudo):" $missing
      return 1
    fi
  fi
  la_log "installing:" $missing
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
  # shellcheck disable=SC2086
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${LA_APT_PACKAGES[@]}"
}

la_jobs() {
  if [[ -n "${LIVEAVATAR_JOBS:-}" ]]; then
    echo "$LIVEAVATAR_JOBS"
  else
    nproc 2>/dev/null || echo 2
  fi
}

la_build() {
  local dir="${1:-$LA_ROOT/build}"
  local -a args=(-S "$LA_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release)
  if command -v ccache >/dev/null 2>&1; then
    args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  fi
  if [[ "${CI:-}" == "true" ]]; then
    args+=(-DLIVEAVATAR_WERROR=ON)
  fi
  # shellcheck disable=SC2206
  args+=(${LIVEAVATAR_CMAKE_ARGS:-})
  la_log "configuring $dir"
  cmake "${args[@]}"
  la_log "building with $(la_jobs) jobs"
  cmake --build "$dir" -j "$(la_jobs)"
}
