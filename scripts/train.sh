#!/usr/bin/env bash
# Sets up (packages, configure, build) and runs the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
./build/examples/scan_demo "$@"
