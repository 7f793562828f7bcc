#!/usr/bin/env bash
# Sets up (packages, configure, build) and runs the main job: train the toy byte-level RWKV
# (train_rwkv's defaults: RWKV-4, 2 x 128, ctx 256, batch 4, 8000 steps) on the fortunes corpus
# (about 4 minutes on 2 cores), checkpoint it to runs/toy, and print a sample generated in
# recurrent mode. Extra arguments go to train_rwkv (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
mkdir -p runs/toy
# The schedule is train_rwkv's default --steps; --max-seconds caps the wall time on a slower
# machine. --eval-mode stateful reports the validation loss with the state carried across
# windows (val_loss_stateful) beside the windowed one (val_loss).
# --overwrite: this command starts the toy run afresh each time, replacing an earlier runs/toy
# checkpoint (train_rwkv refuses to replace another run's checkpoint unless told).
./build/examples/train_rwkv --max-seconds 270 --eval-mode stateful --ckpt runs/toy --log runs/toy/train.jsonl --overwrite \
  --sample 400 --prompt "The " "$@"
echo "checkpoint: runs/toy/latest.safetensors (more text: ./build/examples/train_rwkv --ckpt runs/toy --steps 0 --sample 1000)"
