# shellcheck shell=bash
# Shared part of the launch scripts run_*.sh and infinite_inference_*.sh (docs/parallel.md). Source it after
# setting LA_SCRIPT_NPROC (processes of the layout) and the layout flags in LA_LAYOUT_FLAGS; it does not run by
# itself.
#
#   la_run_help FILE       print FILE's header comment (the lines after the shebang up to the first blank
#                          line) and exit 0: what every script does for -h / --help
#   la_run_generate ARGS   run `liveavatar generate` with the environment's settings, the layout flags and ARGS
#
# The binary is LIVEAVATAR_BIN, else build/apps/liveavatar/liveavatar of this checkout, else `liveavatar` on
# PATH. With LA_SCRIPT_NPROC > 1 the built-in launcher starts the processes (--nproc_per_node), unless an external
# launcher already made this process one rank of a world (WORLD_SIZE from torchrun, OMPI_COMM_WORLD_SIZE from
# mpirun, SLURM_NTASKS > 1 from srun): then the same command runs that one rank (multi-node).

set -euo pipefail

LA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

la_run_help() {
  sed -n '2,/^$/{/^#/s/^# \{0,1\}//p}' "$1"
  exit 0
}

la_run_binary() {
  if [[ -n "${LIVEAVATAR_BIN:-}" ]]; then
    echo "$LIVEAVATAR_BIN"
  elif [[ -x "$LA_ROOT/build/apps/liveavatar/liveavatar" ]]; then
    echo "$LA_ROOT/build/apps/liveavatar/liveavatar"
  elif command -v liveavatar >/dev/null 2>&1; then
    command -v liveavatar
  else
    echo "liveavatar binary not found: build it (scripts/quickstart.sh) or set LIVEAVATAR_BIN" >&2
    return 1
  fi
}

# True when an external launcher made this process one rank of a multi-process world.
la_run_external_world() {
  [[ -n "${WORLD_SIZE:-}" || -n "${OMPI_COMM_WORLD_SIZE:-}" ]] && return 0
  [[ -n "${SLURM_PROCID:-}" && "${SLURM_NTASKS:-1}" -gt 1 ]] && return 0
  return 1
}

la_run_generate() {
  local bin
  bin="$(la_run_binary)"
  local -a cmd=("$bin" generate)
  if [[ "${LA_SCRIPT_NPROC:-1}" -gt 1 ]] && ! la_run_external_world; then
    cmd+=(--nproc_per_node "$LA_SCRIPT_NPROC")
  fi
  # shellcheck disable=SC2206
  cmd+=(${LA_LAYOUT_FLAGS:-})
  cmd+=(--ckpt_dir "${CKPT_DIR:-ckpt/Wan2.2-S2V-14B/}")
  cmd+=(--lora_path_dmd "${LORA:-Quark-Vision/Live-Avatar}")
  [[ -n "${TRAINING_CONFIG:-}" ]] && cmd+=(--training_config "$TRAINING_CONFIG")
  cmd+=(--image "${IMAGE:-$LA_ROOT/examples/face.png}" --audio "${AUDIO:-$LA_ROOT/examples/speech.wav}")
  cmd+=(--prompt "${PROMPT:-A friendly person talking to the camera, natural expressions, soft light}")
  cmd+=(--size "${SIZE:-$LA_DEFAULT_SIZE}" --infer_frames "${INFER_FRAMES:-48}" --num_clip "${NUM_CLIP:-10000}")
  cmd+=(--sample_steps "${SAMPLE_STEPS:-4}" --base_seed "${BASE_SEED:-420}")
  [[ -n "${SAVE_FILE:-}" ]] && cmd+=(--save_file "$SAVE_FILE")
  [[ -n "${SAVE_DIR:-}" ]] && cmd+=(--save_dir "$SAVE_DIR")
  if [[ "${FP8:-1}" == "1" ]]; then cmd+=(--fp8); else cmd+=(--no_fp8); fi
  cmd+=("$@")
  printf '[liveavatar] %s\n' "${cmd[*]}" >&2
  exec "${cmd[@]}"
}
