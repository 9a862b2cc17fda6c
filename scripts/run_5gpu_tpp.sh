#!/usr/bin/env bash
# run_5gpu_tpp.sh: the reference's 5-GPU TPP layout (infinite_inference_multi_gpu.sh): 4 DiT ranks, each owning
# one denoising step and its KV ring (4 pipeline stages), plus a VAE rank (rank 4) that decodes blocks as they
# arrive and writes the video. In steady state stage s works on block n-s: 12 frames per max(step, decode) time.
#
# Needs: 5 GPUs on one node (CUDA_VISIBLE_DEVICES with 5 devices). Per DiT rank at 720*400: about 57 GB with the
# bf16 DiT (DiT 32.6 + 1 KV ring 10.4 + cond cache 2.5 + activations), about 41 GB with --fp8; 80 GB GPUs are
# the reference's requirement. The VAE rank also runs T5/wav2vec2 once (about 12 GB bf16) and the VAE decoder.
#
# Usage: scripts/run_5gpu_tpp.sh [more `liveavatar generate` flags]
# Environment: as scripts/run_single_gpu.sh --help (SIZE defaults to 720*400). SAMPLE_STEPS must be a multiple
#   of 4 (each stage owns SAMPLE_STEPS/4 steps).
# Multi-node or another launcher: run the same command under torchrun / srun / mpirun with 5 processes in all;
#   the script then runs one rank instead of starting 5 (docs/distributed.md).

source "$(dirname "${BASH_SOURCE[0]}")/run_common.sh"
[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && la_run_help "${BASH_SOURCE[0]}"
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
LA_SCRIPT_NPROC=5
LA_DEFAULT_SIZE="720*400"
LA_LAYOUT_FLAGS="--num_gpus_dit 4 --ulysses_size 1 --enable_vae_parallel"
la_run_generate "$@"
