#!/usr/bin/env bash
# Installs the Debian packages linrec needs (only those missing) and configures + builds.
# Usage: scripts/setup.sh [build-dir] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# libopenmpi-dev + openmpi-bin: data-parallel training under mpirun and its tests (optional for
# the library: a machine without them builds everything else; see docs/distributed.md).
packages=(build-essential cmake pkg-config libeigen3-dev catch2 libbenchmark-dev libcli11-dev
          nlohmann-json3-dev fortunes fortunes-min libopenmpi-dev openmpi-bin)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing missing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

build_dir=${1:-build}
shift || true
# Our programs (tests, benchmarks, examples) are built for this machine's instruction set
# (-march=native): the portable build leaves the wide vector units of the CPU unused. Pass
# -DLINREC_NATIVE=OFF for a portable build. The installed headers assume no instruction set.
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DLINREC_NATIVE=ON "$@"
cmake --build "$build_dir" -j "$(nproc)"
