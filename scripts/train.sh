#!/usr/bin/env bash
# Sets up (packages, configure, build) and runs the main job: train the toy byte-level RWKV-6
# on the fortunes corpus (about 4 minutes on 2 cores), checkpoint it to runs/toy, and print a
# sample generated in recurrent mode. Extra arguments go to train_rwkv (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
mkdir -p runs/toy
# --steps sets the cosine schedule; --max-seconds caps the wall time on a slower machine.
# --overwrite: this command starts the toy run afresh each time, replacing an earlier runs/toy
# checkpoint (train_rwkv refuses to replace another run's checkpoint unless told).
./build/examples/train_rwkv --steps 1200 --max-seconds 270 --ckpt runs/toy --log runs/toy/train.jsonl --overwrite \
  --sample 400 --prompt "The " "$@"
echo "checkpoint: runs/toy/latest.safetensors (more text: ./build/examples/train_rwkv --ckpt runs/toy --steps 0 --sample 1000)"
