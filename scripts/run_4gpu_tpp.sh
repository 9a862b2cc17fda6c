#!/usr/bin/env bash
# run_4gpu_tpp.sh: 4 GPUs: one TPP stage of 3 DiT ranks running every denoising step in lockstep with Ulysses
# sequence parallelism (each rank holds the full DiT, a third of the tokens and of the attention heads, and that
# share of every KV ring), plus a VAE rank (rank 3) that encodes the inputs, decodes and writes the video.
#
# Needs: 4 GPUs on one node. Per DiT rank at 720*400: about 50 GB with the bf16 DiT (DiT 32.6 + a third of the
# 4 KV rings 13.8 + cond cache share + activations), about 34 GB with --fp8; the VAE rank about 12 GB (T5 bf16,
# wav2vec2, VAE). Heads need not divide by 3 (40 heads: 14/13/13).
#
# Usage: scripts/run_4gpu_tpp.sh [more `liveavatar generate` flags]
# Environment: as scripts/run_single_gpu.sh --help (SIZE defaults to 720*400).
# Multi-node or another launcher: run the same command under torchrun / srun / mpirun with 4 processes in all.

source "$(dirname "${BASH_SOURCE[0]}")/run_common.sh"
[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && la_run_help "${BASH_SOURCE[0]}"
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
LA_SCRIPT_NPROC=4
LA_DEFAULT_SIZE="720*400"
LA_LAYOUT_FLAGS="--num_gpus_dit 3 --ulysses_size 3 --enable_vae_parallel"
la_run_generate "$@"
