#!/usr/bin/env bash
# One-command setup on a fresh Debian 12 (docs/build.md): installs the apt dependencies, builds Release into
# build/, writes a tiny random checkpoint (docs/checkpoints.md), checks it file by file and renders
# output/demo.mp4 (output/demo.y4m + .wav in a build without FFmpeg).
#   bash scripts/quickstart.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LA_ROOT"

la_install_deps
la_build "$LA_ROOT/build"

LA_BIN="$LA_ROOT/build/apps/liveavatar/liveavatar"
LA_TINY="$LA_ROOT/build/tiny_ckpt"
"$LA_BIN" make-tiny --out "$LA_TINY" --seed 0
"$LA_BIN" doctor --ckpt_dir "$LA_TINY" --lora_path_dmd "$LA_TINY/lora/liveavatar.safetensors"
# The demo: the bundled drawn face and synthesised speech (examples/README.md) at 384*256 on the tiny model.
mkdir -p "$LA_ROOT/output"
"$LA_BIN" generate --ckpt_dir "$LA_TINY" --lora_path_dmd "$LA_TINY/lora/liveavatar.safetensors" --no_fp8 \
  --image "$LA_ROOT/examples/face.png" --audio "$LA_ROOT/examples/speech.wav" \
  --prompt "A friendly cartoon person talking to the camera" --size 384*256 --num_clip 2 \
  --save_file "$LA_ROOT/output/demo.mp4"
la_log "quickstart done: binary $LA_BIN, tiny checkpoint $LA_TINY"
la_log "demo video: $(ls "$LA_ROOT"/output/demo.* | tr '\n' ' ')"
