#!/usr/bin/env bash
# infinite_inference_single_gpu.sh: the reference's launcher of the same name, with its flags (one process,
# --single_gpu --num_gpus_dit 1 --offload_model True --size 704*384 --sample_guide_scale 0 --fp8 ...), run
# through liveavatar. Flags the reference ignores are accepted with a warning, as upstream ignores them.
#
# Needs: 1 GPU, as scripts/run_single_gpu.sh (about 76 GB bf16, 61 GB with --fp8 at 704*384).
#
# Usage: scripts/infinite_inference_single_gpu.sh [more `liveavatar generate` flags]
# Environment: as scripts/run_single_gpu.sh --help; TRAINING_CONFIG is the reference's
#   liveavatar/configs/s2v_causal_sft.yaml when that file exists (its LoRA r=128 alpha=64 are also the default).

source "$(dirname "${BASH_SOURCE[0]}")/run_common.sh"
[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && la_run_help "${BASH_SOURCE[0]}"
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}" NCCL_DEBUG_SUBSYS="${NCCL_DEBUG_SUBSYS:-OFF}"
if [[ -z "${TRAINING_CONFIG:-}" && -f liveavatar/configs/s2v_causal_sft.yaml ]]; then
  TRAINING_CONFIG=liveavatar/configs/s2v_causal_sft.yaml
fi
LA_SCRIPT_NPROC=1
LA_DEFAULT_SIZE="704*384"
LA_LAYOUT_FLAGS="--ulysses_size 1 --task s2v-14B --offload_model True --convert_model_dtype --load_lora
  --sample_guide_scale 0 --num_gpus_dit 1 --sample_solver euler --single_gpu"
la_run_generate "$@"
