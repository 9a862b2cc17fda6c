#!/usr/bin/env bash
# Regenerates docs/cli.md from `liveavatar [subcommand] --help` (docs/cli.md; style.md habit 15). The
# generator is test_cli's CliDoc.MatchesHelp, which otherwise fails when docs/cli.md is stale.
#   bash scripts/gen_cli_doc.sh [BUILD_DIR]   (default: build)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
cmake --build "$build" --target test_cli
LIVEAVATAR_UPDATE_DOCS=1 LIVEAVATAR_SOURCE_DIR="$root" "$build/tests/test_cli" --gtest_filter='CliDoc.MatchesHelp'
echo "wrote $root/docs/cli.md"
