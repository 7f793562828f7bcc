#!/usr/bin/env bash
# Sets up (packages, configure, build) and runs every test through ctest.
# Tests labelled `cuda` report "skipped" on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
shift || true
scripts/setup.sh "$build_dir" "$@"
ctest --test-dir "$build_dir" --output-on-failure -j 2
