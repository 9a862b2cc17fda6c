#!/usr/bin/env bash
# run_4x24gb.sh: 4 GPUs of 24 GB: one TPP stage of 4 ranks with Ulysses sequence parallelism and the DiT
# FSDP-sharded across them (each rank keeps a quarter of every block and all-gathers one block ahead of the one
# running), T5 on the CPU. Rank 0 also encodes the inputs, decodes and writes the video.
#
# Needs: 4 GPUs with >= 24 GB on one node. Per rank at 704*384 (estimate): DiT shard 8.2 GB (bf16) + 2 unshard
# block buffers 1.6 GB + a quarter of the 4 KV rings 10.4 GB + cond cache share 0.6 GB + activations; rank 0
# adds the VAE and wav2vec2 (about 1 GB). Plan a run with `liveavatar plan` first; if it does not fit, lower
# --size or --fsdp_prefetch 0.
#
# Usage: scripts/run_4x24gb.sh [more `liveavatar generate` flags]
# Environment: as scripts/run_single_gpu.sh --help (SIZE defaults to 704*384).
# Multi-node or another launcher: run the same command under torchrun / srun / mpirun with 4 processes in all.

source "$(dirname "${BASH_SOURCE[0]}")/run_common.sh"
[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && la_run_help "${BASH_SOURCE[0]}"
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
LA_SCRIPT_NPROC=4
LA_DEFAULT_SIZE="704*384"
LA_LAYOUT_FLAGS="--num_gpus_dit 4 --ulysses_size 4 --dit_fsdp --t5_cpu"
la_run_generate "$@"
