#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole ctest suite (docs/testing.md). CI (.ci/run) runs exactly
# this with CI=true, which turns warnings into errors.
#   bash scripts/test.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LA_ROOT"

la_install_deps
la_build "$LA_ROOT/build"
# In-process tests get the same single-threaded OpenBLAS that the CLI sets for itself (core/threads.h).
export OPENBLAS_NUM_THREADS=1
ctest --test-dir "$LA_ROOT/build" --output-on-failure -j2
