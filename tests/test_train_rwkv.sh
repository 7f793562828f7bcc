#!/usr/bin/env bash
# train_rwkv as a tool: bitwise resume (straight run == interrupted + resumed run, also with
# --carry-state and --accum), atomic checkpoints, clear one-line errors for bad input.
# A checkpoint written by the previous release (tests/data/train_rwkv_v1) still resumes.
# Usage: test_train_rwkv.sh path/to/train_rwkv path/to/tests/data/train_rwkv_v1
set -euo pipefail
train=$1
legacy=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
head -c 200000 /dev/urandom | base64 > corpus.txt  # any bytes will do; ~270 KB of text
fail() { echo "FAIL: $*"; exit 1; }
common=(--data corpus.txt --steps 12 --eval-every 4 --eval-tokens 2048 --batch 4 --ctx 32 --dim 32 --layers 2
        --head-size 16 --ckpt-every 5 --threads 2)

losses() { grep -o '"step":[0-9]*\|"train_loss":[^,}]*' "$1" | paste - - ; }

for mode in "--version 6" "--version 4" "--version 6 --carry-state --accum 2"; do
  rm -rf a b a.jsonl b.jsonl
  # shellcheck disable=SC2086
  "$train" "${common[@]}" $mode --ckpt a --log a.jsonl > /dev/null
  # shellcheck disable=SC2086
  "$train" "${common[@]}" $mode --ckpt b --log b.jsonl --stop-at 7 > /dev/null
  # shellcheck disable=SC2086
  "$train" "${common[@]}" $mode --ckpt b --log b.jsonl --resume > resume.txt
  grep -q "resumed from b/latest.safetensors at step 7" resume.txt || { cat resume.txt; fail "$mode: resume does not say its step"; }
  [ "$(losses a.jsonl | wc -l)" -eq 12 ] || fail "$mode: straight run logged $(losses a.jsonl | wc -l) steps"
  diff <(losses a.jsonl) <(losses b.jsonl) > /dev/null || { diff <(losses a.jsonl) <(losses b.jsonl); fail "$mode: resumed losses differ"; }
  ls a | grep -q tmp && fail "$mode: a temporary checkpoint file was left behind"
  echo "ok: $mode: 12 steps straight == 7 + resume + 5, bitwise"
done

# Checkpoints of the previous release (commit 498fd65, tests/data/train_rwkv_v1/README.md) resume
# and continue that release's trajectory: its own log of steps 5-8 after the same resume. Within
# 1e-4 relative, not bitwise: a -march=native build contracts to FMAs where the release did not.
for run in "rwkv6_carry:--version 6 --carry-state --accum 2" "rwkv4:--version 4"; do
  name=${run%%:*}
  rm -rf legacy && mkdir -p legacy
  cp "$legacy/${name}_step4.safetensors" legacy/latest.safetensors
  head -4 "$legacy/$name.jsonl" > legacy.jsonl
  # shellcheck disable=SC2086
  "$train" --data "$legacy/corpus.txt" --steps 8 --eval-every 4 --eval-tokens 512 --batch 2 --ctx 16 --dim 16 \
    --layers 1 --head-size 8 --ckpt-every 4 --threads 2 --val-fraction 0.1 ${run#*:} --ckpt legacy --log legacy.jsonl \
    --resume > /dev/null
  paste <(losses "$legacy/$name.jsonl") <(losses legacy.jsonl) | awk -v name="$name" '
    { split($2, a, ":"); split($4, b, ":"); d = a[2] - b[2]; if (d < 0) d = -d
      if ($1 != $3 || d > 1e-4 * (a[2] < 0 ? -a[2] : a[2])) { print "FAIL: " name ": " $0; bad = 1 } ; n++ }
    END { if (n != 8) { print "FAIL: " name ": " n " steps logged, expected 8"; bad = 1 }; exit bad }' ||
    fail "$name: the previous release's checkpoint did not continue its trajectory"
  echo "ok: $name: the previous release's step-4 checkpoint resumes to its steps 5-8"
done

# Sampling from the checkpoint in recurrent mode.
# The sample is raw bytes from a barely trained model: count bytes, not characters of the
# locale (two bytes can make one UTF-8 character), and keep zero bytes out of a shell variable.
"$train" --ckpt a --steps 0 --sample 40 --prompt "ab" > sample.txt
[ "$(wc -c < sample.txt)" -eq 43 ] || fail "sample is $(wc -c < sample.txt) bytes, expected prompt 2 + 40 + newline"
[ "$(head -c 2 sample.txt)" = ab ] || fail "sample does not start with the prompt: $(head -c 2 sample.txt | od -c)"
echo "ok: sampling from a checkpoint"

# Bad input: one line on stderr, non-zero exit, nothing else.
expect_error() {  # expect_error "<pattern>" command...
  local pattern=$1; shift
  if "$@" > out.txt 2> err.txt; then fail "expected failure: $*"; fi
  grep -q -- "$pattern" err.txt || { cat err.txt; fail "message for '$*' lacks '$pattern'"; }
  [ "$(wc -l < err.txt)" -le 2 ] || { cat err.txt; fail "error for '$*' is not short"; }
  echo "ok: $* -> $(head -1 err.txt)"
}
: > empty.txt
expect_error "missing.txt" "$train" --data missing.txt --steps 1
expect_error "empty" "$train" --data empty.txt --steps 1
expect_error "--no-such-flag" "$train" --no-such-flag
expect_error "does not exist" "$train" --ckpt nowhere --steps 0 --sample 5
cp a/latest.safetensors good.safetensors
size=$(stat -c %s good.safetensors)
mkdir -p trunc && head -c $((size / 2)) good.safetensors > trunc/latest.safetensors
expect_error "trunc/latest.safetensors" "$train" --ckpt trunc --steps 0 --sample 5
mkdir -p corrupt && cp good.safetensors corrupt/latest.safetensors
printf 'XXXXXXXX' | dd of=corrupt/latest.safetensors bs=1 seek=12 conv=notrunc 2> /dev/null
expect_error "corrupt/latest.safetensors" "$train" --ckpt corrupt --steps 0 --sample 5
mkdir -p other && cp good.safetensors other/latest.safetensors
expect_error "checkpoint was trained with" "$train" --data corpus.txt --steps 12 --batch 4 --ctx 32 --dim 64 --layers 2 \
  --head-size 16 --ckpt other --resume
# Flags are validated at parse time: finite, in range, consistent with each other; NaN included
# (CLI11's own Range lets it through). Every case below used to start training or crash.
small=(--data corpus.txt --steps 2 --batch 2 --ctx 8 --dim 32 --layers 1)  # default --head-size 32 divides --dim
expect_error "head-size" "$train" "${small[@]}" --head-size 0
expect_error "must divide --dim" "$train" "${small[@]}" --head-size 12
for bad in "--lr nan" "--lr -1" "--lr inf" "--weight-decay nan" "--weight-decay -5" "--min-lr-ratio -3" \
           "--min-lr-ratio 5" "--min-lr-ratio nan" "--clip 0" "--temperature nan" "--top-p nan" "--max-seconds nan"; do
  # shellcheck disable=SC2086
  expect_error "${bad%% *}" "$train" "${small[@]}" $bad
  grep -q "expected a finite number" err.txt || { cat err.txt; fail "$bad: the message does not say what was expected"; }
  grep -q "[0-9]\{20\}" err.txt && { cat err.txt; fail "$bad: the message prints an unreadable bound"; }
done
expect_error "exceeds --steps" "$train" "${small[@]}" --warmup 5
expect_error "hardware threads" "$train" "${small[@]}" --threads 100000
expect_error "give --ckpt" "$train" "${small[@]}" --resume
# --resume with a --ckpt that holds no checkpoint (a typo) is an error, and the log is untouched.
printf '{"step":1}\n' > kept.jsonl
expect_error "nothing to resume" "$train" "${small[@]}" --resume --ckpt typo --log kept.jsonl
[ "$(cat kept.jsonl)" = '{"step":1}' ] || fail "a failed --resume changed the log"
echo "all train_rwkv checks passed"
