#!/usr/bin/env bash
# infinite_inference_multi_gpu.sh: the reference's launcher of the same name, with its flags (5 processes,
# --num_gpus_dit 4 --ulysses_size 1 --enable_vae_parallel --offload_model False --size 720*400
# --sample_guide_scale 0 --fp8 ...), run through liveavatar's built-in launcher: the TPP layout of
# scripts/run_5gpu_tpp.sh.
#
# Needs: 5 GPUs on one node, as scripts/run_5gpu_tpp.sh (about 57 GB per DiT rank bf16, 41 GB with --fp8).
#
# Usage: scripts/infinite_inference_multi_gpu.sh [more `liveavatar generate` flags]
# Environment: as scripts/run_single_gpu.sh --help (SIZE defaults to 720*400); TRAINING_CONFIG as in
#   scripts/infinite_inference_single_gpu.sh --help.
# Multi-node or another launcher: run the same command under torchrun / srun / mpirun with 5 processes in all.

source "$(dirname "${BASH_SOURCE[0]}")/run_common.sh"
[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && la_run_help "${BASH_SOURCE[0]}"
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}" NCCL_DEBUG_SUBSYS="${NCCL_DEBUG_SUBSYS:-OFF}"
if [[ -z "${TRAINING_CONFIG:-}" && -f liveavatar/configs/s2v_causal_sft.yaml ]]; then
  TRAINING_CONFIG=liveavatar/configs/s2v_causal_sft.yaml
fi
LA_SCRIPT_NPROC=5
LA_DEFAULT_SIZE="720*400"
LA_LAYOUT_FLAGS="--ulysses_size 1 --task s2v-14B --offload_model False --convert_model_dtype --load_lora
  --sample_guide_scale 0 --num_gpus_dit 4 --sample_solver euler --enable_vae_parallel"
la_run_generate "$@"
