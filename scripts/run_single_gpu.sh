#!/usr/bin/env bash
# run_single_gpu.sh: Live Avatar on one GPU (or the CPU): one process runs every denoising step (4 KV rings),
# the encoders, the streaming VAE decode and the writer.
#
# Needs: 1 GPU. At 704*384 with the bf16 DiT about 76 GB (DiT 32.6 + 4 KV rings 41.5 + cond cache 2.3),
# about 61 GB with --fp8 (FP8 DiT 16.7 GB); T5/wav2vec2/VAE are small or offloaded. docs/parallel.md.
#
# Usage: scripts/run_single_gpu.sh [more `liveavatar generate` flags]
# Environment (default): LIVEAVATAR_BIN (build/apps/liveavatar/liveavatar), CKPT_DIR (ckpt/Wan2.2-S2V-14B/),
#   LORA (Quark-Vision/Live-Avatar = ckpt/LiveAvatar/liveavatar.safetensors), TRAINING_CONFIG (none),
#   IMAGE (examples/face.png), AUDIO (examples/speech.wav), PROMPT, SIZE (704*384), INFER_FRAMES (48),
#   NUM_CLIP (10000 = the whole audio), SAMPLE_STEPS (4), BASE_SEED (420), SAVE_FILE / SAVE_DIR (output/...),
#   FP8 (1; 0 passes --no_fp8).
# Example: CKPT_DIR=build/tiny_ckpt LORA=build/tiny_ckpt/lora/liveavatar.safetensors FP8=0 SIZE=384*256 \
#   NUM_CLIP=2 scripts/run_single_gpu.sh --save_file output/demo.mp4

source "$(dirname "${BASH_SOURCE[0]}")/run_common.sh"
[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && la_run_help "${BASH_SOURCE[0]}"
LA_SCRIPT_NPROC=1
LA_DEFAULT_SIZE="704*384"
LA_LAYOUT_FLAGS=""
la_run_generate "$@"
