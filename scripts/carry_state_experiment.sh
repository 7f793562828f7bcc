#!/usr/bin/env bash
# Does carrying the recurrent state across training windows help? Two runs of the same toy
# RWKV-6 (same seed, steps, schedule and bytes), one with random windows and a zero initial
# state per window, one with --carry-state (each batch row reads the text contiguously and
# starts from the state the previous window ended in). Prints both final validation losses.
# Usage: scripts/carry_state_experiment.sh out-dir [train_rwkv binary] [extra flags...]
set -euo pipefail
out=${1:?out-dir}
train=${2:-build/examples/train_rwkv}
shift 2 || shift $#
mkdir -p "$out"
"$train" --steps 1200 --log "$out/random_windows.jsonl" "$@" > "$out/random_windows.out" &
"$train" --steps 1200 --carry-state --log "$out/carry_state.jsonl" "$@" > "$out/carry_state.out" &
wait
for run in random_windows carry_state; do echo "$run: $(grep '^done:' "$out/$run.out")"; done
