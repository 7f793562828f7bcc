#!/usr/bin/env bash
# train_rwkv under mpirun: 2 ranks × --batch 2 follow 1 process × --batch 4 (per-step losses and
# validation within 1e-6 relative) for RWKV-4, RWKV-6 and RWKV-6 with carried state; a
# checkpoint written by 2 ranks resumes on 1 rank and on 2 ranks (bitwise there) to the same
# losses; a rank that cannot read its data, or that is killed, ends the whole job with the
# message (no hang) and leaves the last good checkpoint; --dist none under a launcher refuses.
# Usage: test_train_rwkv_mpi.sh path/to/train_rwkv path/to/mpiexec
set -euo pipefail
train=$1
mpiexec=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# Root in CI containers, 2 ranks on 2 cores, and no ptrace for the single-copy path there.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
head -c 120000 /dev/urandom | base64 > corpus.txt
fail() { echo "FAIL: $*"; exit 1; }
mpirun2() { timeout 300 "$mpiexec" -n 2 "$@"; }
# --data is not in `common`: the failure case gives each rank its own (CLI11 refuses a repeat).
common=(--steps 8 --eval-every 4 --eval-tokens 2048 --ctx 32 --dim 32 --layers 2 --head-size 16 --ckpt-every 4
        --threads 1 --seed 5)

# Column 1: the step; 2: train_loss; 3: val_loss (null between evaluations).
losses() { grep -o '"step":[0-9]*\|"train_loss":[^,}]*\|"val_loss":[^,}]*' "$1" | cut -d: -f2 | paste - - - ; }
# Same steps, and every loss within 1e-6 relative.
same_losses() {  # same_losses a.jsonl b.jsonl what
  paste <(losses "$1") <(losses "$2") | awk -v what="$3" '
    function off(x, y) { d = x - y; if (d < 0) d = -d; m = (x < 0 ? -x : x); return d > 1e-6 * m }
    { n++; if ($1 != $4 || off($2, $5) || ($3 != "null" && off($3, $6)) || ($3 == "null") != ($6 == "null")) {
        print "FAIL: " what ": " $0; bad = 1 } }
    END { if (n == 0) { print "FAIL: " what ": nothing logged"; bad = 1 }; exit bad }'
}

for mode in "--version 6" "--version 4" "--version 6 --carry-state --accum 2"; do
  rm -rf one two resumed1 resumed2 ./*.jsonl
  # shellcheck disable=SC2086
  "$train" "${common[@]}" --data corpus.txt $mode --batch 4 --log one.jsonl > /dev/null
  # shellcheck disable=SC2086
  mpirun2 "$train" "${common[@]}" --data corpus.txt $mode --batch 2 --log two.jsonl --ckpt two --check-replicas \
    > two.txt
  grep -q "data-parallel: 2 ranks x batch 2" two.txt || { cat two.txt; fail "$mode: the 2-rank run does not say so"; }
  [ "$(losses two.jsonl | wc -l)" -eq 8 ] || fail "$mode: 2 ranks logged $(losses two.jsonl | wc -l) steps, not 8 once"
  same_losses one.jsonl two.jsonl "$mode: 2 ranks x batch 2 vs 1 process x batch 4" || exit 1
  # Random windows: the training losses bit for bit (docs/distributed.md, "Exactness").
  if [[ "$mode" != *carry* ]]; then
    train_losses() { grep -o '"train_loss":[^,}]*' "$1"; }
    diff <(train_losses one.jsonl) <(train_losses two.jsonl) > /dev/null ||
      fail "$mode: 2 ranks x batch 2 and 1 process x batch 4 differ in their training losses' bits"
  fi
  echo "ok: $mode: 2 ranks x batch 2 == 1 process x batch 4 (losses within 1e-6, bitwise for random windows; replicas checked every step)"

  # Interrupted at step 3 by 2 ranks, then resumed by 2 ranks and by 1 process.
  for resume in 1 2; do
    rm -rf part && head -3 two.jsonl > part.jsonl
    # shellcheck disable=SC2086
    mpirun2 "$train" "${common[@]}" --data corpus.txt $mode --batch 2 --ckpt part --stop-at 3 > /dev/null
    if [ "$resume" = 2 ]; then
      # shellcheck disable=SC2086
      mpirun2 "$train" "${common[@]}" --data corpus.txt $mode --batch 2 --ckpt part --log part.jsonl --resume > /dev/null
      diff <(losses two.jsonl) <(losses part.jsonl) > /dev/null ||
        { diff <(losses two.jsonl) <(losses part.jsonl); fail "$mode: a 2-rank resume left the 2-rank trajectory"; }
      echo "ok: $mode: checkpoint of 2 ranks at step 3, resumed on 2 ranks: bitwise the same losses"
    else
      # shellcheck disable=SC2086
      "$train" "${common[@]}" --data corpus.txt $mode --batch 4 --ckpt part --log part.jsonl --resume > /dev/null
      same_losses two.jsonl part.jsonl "$mode: 2-rank checkpoint resumed on 1 process" || exit 1
      echo "ok: $mode: checkpoint of 2 ranks at step 3, resumed on 1 process x batch 4: the same losses (1e-6)"
    fi
  done
done

# Another global batch is refused by name.
if "$train" "${common[@]}" --data corpus.txt --version 6 --carry-state --accum 2 --batch 2 --ckpt part --resume \
  > /dev/null 2> err.txt; then
  fail "a resume with half the global batch was accepted"
fi
grep -q "global batch of 4" err.txt || { cat err.txt; fail "the refusal does not name the global batch"; }
echo "ok: a resume with another global batch (1 x 2 instead of 2 x 2) is refused by name"

# A rank that cannot read its data ends the job, naming the file; nothing is written.
rm -rf bad && set +e
timeout 120 "$mpiexec" -n 1 "$train" "${common[@]}" --batch 2 --data corpus.txt --ckpt bad : \
  -n 1 "$train" "${common[@]}" --batch 2 --data missing.txt --ckpt bad > bad.txt 2>&1
status=$?
set -e
[ "$status" -ne 0 ] || fail "a rank without its data: the job exited 0"
[ "$status" -ne 124 ] || { cat bad.txt; fail "a rank without its data: the job hung"; }
grep -q "rank 1 of 2: train_rwkv: .*missing.txt" bad.txt || { cat bad.txt; fail "the failing rank's message is missing"; }
[ ! -e bad/latest.safetensors ] || fail "a checkpoint was written by a job that failed at the start"
echo "ok: a rank with a missing --data ends the job (exit $status) with its message, no checkpoint"

# A rank killed mid-run ends the job; the last checkpoint written stays loadable and resumes.
long=(--data corpus.txt --steps 100000 --eval-every 50 --eval-tokens 2048 --ctx 32 --dim 32 --layers 2 --head-size 16
      --ckpt-every 2 --threads 1 --seed 5 --ckpt killed)
rm -rf killed && set +e
timeout 300 "$mpiexec" -n 2 "$train" "${long[@]}" --batch 2 > killed.txt 2>&1 &
job=$!
for _ in $(seq 600); do [ -e killed/latest.safetensors ] && break; sleep 0.1; done
victim=""
for pid in $(pgrep -f "train_rwkv.*--ckpt killed"); do
  tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1" && victim=$pid
done
[ -n "$victim" ] || { kill "$job"; fail "could not find rank 1 of the running job"; }
kill -KILL "$victim"
wait "$job"
status=$?
set -e
[ "$status" -ne 0 ] && [ "$status" -ne 124 ] || { cat killed.txt; fail "a killed rank: the job exited $status"; }
"$train" "${long[@]}" --batch 4 --resume --stop-at 1 > after.txt 2>&1 || true
grep -q "resumed from killed/latest.safetensors" after.txt || { cat killed.txt after.txt; fail "no resumable checkpoint after a rank was killed"; }
echo "ok: a killed rank ends the job (exit $status); its last checkpoint resumes on 1 process"

# Under a launcher, --dist none would make N independent runs: refused.
if mpirun2 "$train" "${common[@]}" --data corpus.txt --batch 2 --dist none > none.txt 2>&1; then
  fail "--dist none under mpiexec -n 2 was accepted"
fi
grep -q "dist none, but an MPI launcher started 2 processes" none.txt || { cat none.txt; fail "--dist none: no message"; }
echo "ok: --dist none under a launcher of 2 processes is refused"
