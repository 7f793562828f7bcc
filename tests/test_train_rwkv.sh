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
small=(--data corpus.txt --version 6 --steps 2 --batch 2 --ctx 8 --dim 32 --layers 1)  # default --head-size 32 divides --dim
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
# --- Runs are owned: no silent overwrite, no resume of another run, no resume on other data ---
# (CLI11 refuses a flag given twice: cases that change a flag start from `base`, not `tiny`.)
base=(--data corpus.txt --version 6 --batch 2 --dim 16 --layers 1 --head-size 8 --eval-every 3 --threads 2)
tiny=("${base[@]}" --steps 6 --ctx 16 --eval-tokens 256 --ckpt-every 2)
rm -rf own && "$train" "${tiny[@]}" --ckpt own --log own.jsonl > /dev/null
expect_error "--overwrite replaces it" "$train" "${tiny[@]}" --seed 2 --ckpt own
"$train" "${tiny[@]}" --ckpt own --overwrite > /dev/null || fail "--overwrite did not start a new run"
rm -rf own && "$train" "${tiny[@]}" --ckpt own --log own.jsonl --stop-at 4 > /dev/null
expect_error "clip = 1.0, this run has 2.0" "$train" "${tiny[@]}" --ckpt own --resume --clip 2
expect_error "min_lr_ratio" "$train" "${tiny[@]}" --ckpt own --resume --min-lr-ratio 0.5
expect_error "other data" "$train" "${tiny[@]}" --ckpt own --resume --val-fraction 0.1
cp corpus.txt same_length.txt && printf 'Z' | dd of=same_length.txt bs=1 seek=1000 conv=notrunc 2> /dev/null
expect_error "other data" "$train" "${tiny[@]/corpus.txt/same_length.txt}" --ckpt own --resume

# --- The log follows the checkpoint: steps after it, and a partial line, are cut on resume ---
rm -rf cut straight && "$train" "${tiny[@]}" --ckpt straight --log straight.jsonl > /dev/null
"$train" "${tiny[@]}" --ckpt cut --log cut.jsonl --stop-at 4 > /dev/null
sed -n 5,5p straight.jsonl >> cut.jsonl        # a step the crashed run logged after its checkpoint
printf '{"step":6,"train_lo' >> cut.jsonl      # and a line a full disk cut short
"$train" "${tiny[@]}" --ckpt cut --log cut.jsonl --resume > cut.txt
grep -q "cut cut.jsonl back to step 4 (2 lines" cut.txt || { cat cut.txt; fail "the resume did not cut the log back"; }
diff <(losses straight.jsonl) <(losses cut.jsonl) > /dev/null ||
  { diff <(losses straight.jsonl) <(losses cut.jsonl); fail "the resumed log does not hold every step once"; }
echo "ok: the log is cut back to the checkpoint on resume (every step once, no partial line)"

# --- Interrupted saves leave no temporaries; two runs on one folder; SIGTERM saves ---
touch cut/.latest.safetensors.tmp.AbC123
"$train" "${tiny[@]}" --ckpt cut --overwrite > /dev/null
[ -e cut/.latest.safetensors.tmp.AbC123 ] && fail "a stale temporary file of an interrupted save was kept"
rm -rf busy  # (its own line: `a && b &` would background a subshell, and $! would not be train_rwkv)
"$train" "${base[@]}" --ctx 16 --eval-tokens 256 --ckpt-every 2 --steps 100000 --max-seconds 60 --ckpt busy --log busy.jsonl > busy.txt 2> busy.err &
first=$!
for _ in $(seq 50); do [ -s busy.jsonl ] && break; sleep 0.1; done
expect_error "another process is using" "$train" "${tiny[@]}" --ckpt busy
kill -TERM "$first"
rc=0; wait "$first" || rc=$?
[ "$rc" -eq 143 ] || { cat busy.err; fail "SIGTERM: exit code $rc, expected 143"; }
grep -q "terminated (SIGTERM) at step [0-9]*: busy/latest.safetensors saved" busy.err || { cat busy.err; fail "SIGTERM message"; }
last=$(tail -1 busy.jsonl | grep -o '"step":[0-9]*' | cut -d: -f2)
"$train" "${base[@]}" --ctx 16 --eval-tokens 256 --ckpt-every 2 --steps 100000 --max-seconds 60 --ckpt busy --resume --stop-at $((last + 1)) > busy2.txt ||
  fail "the checkpoint saved at SIGTERM does not resume"
grep -q "at step $last\$" busy2.txt || { cat busy2.txt; fail "SIGTERM did not save the step it stopped at ($last)"; }
echo "ok: SIGTERM saves at the step boundary (step $last) and exits 143; a second run on the folder is refused"

# --- A non-finite loss keeps the last checkpoint whose loss was finite, and says which ---
# The committed corpus keeps the divergence deterministic (this script's corpus.txt is random).
rm -rf nan && "$train" "${base[@]/corpus.txt/$legacy/corpus.txt}" --ctx 16 --eval-tokens 256 --steps 30 --warmup 0 --lr 10 --clip 1e30 --ckpt-every 1 --ckpt nan > /dev/null \
  2> nan.err && fail "lr 10 did not diverge: the non-finite loss case is not exercised"
grep -Eq "(loss|gradient norm) became .* at step 4( \(loss [0-9.]*\))?; stopping: kept the checkpoint of step 2" nan.err || { cat nan.err; fail "NaN stop"; }
[ "$("$train" --ckpt nan --steps 0 --sample 3 --prompt ab | wc -c)" -eq 6 ] || fail "the kept checkpoint does not load"
echo "ok: NaN stop: $(cat nan.err)"

# --- Outputs never alias the data; errors that used to come after training time ---
mkdir -p datadir && cp corpus.txt datadir/
expect_error "the training data or inside it" "$train" "${tiny[@]}" --log corpus.txt
expect_error "the training data or inside it" "$train" "${tiny[@]/corpus.txt/datadir}" --log datadir/log.jsonl
expect_error "the training data or inside it" "$train" "${tiny[@]/corpus.txt/datadir}" --ckpt datadir/ck
head -c 300 corpus.txt > short.txt
expect_error "validation split" "$train" "${base[@]/corpus.txt/short.txt}" --steps 6 --eval-tokens 256 --ctx 32 \
  --log short.jsonl
[ -s short.jsonl ] && fail "a validation split shorter than --ctx was found only after training steps"
expect_error "--eval-tokens 8 is shorter" "$train" "${base[@]}" --steps 6 --ctx 16 --eval-tokens 8
touch afile
expect_error "--ckpt afile is not a folder" "$train" "${tiny[@]}" --ckpt afile
expect_error "give --ckpt" "$train" --steps 0 --sample 5

# --- Inputs that are not regular files, and damaged checkpoints, fail at once with the path ---
expect_error "/dev/zero: is not a regular file" timeout 20 "$train" "${tiny[@]/corpus.txt//dev/zero}"
mkfifo fifo.txt
expect_error "fifo.txt: is not a regular file" timeout 20 "$train" "${tiny[@]/corpus.txt/fifo.txt}"
mkdir -p zero && ln -sf /dev/zero zero/latest.safetensors
expect_error "zero/latest.safetensors: is not a regular file" timeout 20 "$train" --ckpt zero --steps 0 --sample 3
rm -rf flip && "$train" "${tiny[@]}" --ckpt flip > /dev/null
size=$(stat -c %s flip/latest.safetensors)
# One bit of the last tensor's data (the end of the file), flipped: the checksum names the damage.
byte=$(od -An -tu1 -j $((size - 3)) -N1 flip/latest.safetensors | tr -d ' ')
printf "$(printf '\\%03o' $((byte ^ 16)))" | dd of=flip/latest.safetensors bs=1 seek=$((size - 3)) conv=notrunc 2> /dev/null
expect_error "flip/latest.safetensors.*fails its checksum" "$train" "${tiny[@]}" --ckpt flip --resume

echo "all train_rwkv checks passed"
