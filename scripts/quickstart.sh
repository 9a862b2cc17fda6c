#!/usr/bin/env bash
# One-command setup on a fresh Debian 12 (docs/build.md): installs the apt dependencies, builds Release into
# build/, writes a tiny random checkpoint (docs/checkpoints.md) and checks it file by file.
#   bash scripts/quickstart.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LA_ROOT"

la_install_deps
la_build "$LA_ROOT/build"

LA_BIN="$LA_ROOT/build/apps/liveavatar/liveavatar"
LA_TINY="$LA_ROOT/build/tiny_ckpt"
"$LA_BIN" make-tiny --out "$LA_TINY" --seed 0
"$LA_BIN" doctor --ckpt_dir "$LA_TINY" --lora_path_dmd "$LA_TINY/lora/liveavatar.safetensors"
# The demo render (`liveavatar generate` on the tiny checkpoint) is added here once generation lands.
la_log "quickstart done: binary $LA_BIN, tiny checkpoint $LA_TINY"
