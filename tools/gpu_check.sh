#!/usr/bin/env bash
# The CUDA scan on a GPU machine, in one run: configure + build the CUDA targets (Release,
# sm_90), run the CUDA tests, compute-sanitizer memcheck + racecheck on them, the benchmark,
# and print a table last (GB/s and % of copy per shape).
#
#   tools/gpu_check.sh deps             # here, where the Debian packages are installed: copy
#                                       # Eigen, Catch2 and Google Benchmark into build-cuda-deps/
#   tools/gpu_check.sh [build-dir]      # on the GPU machine (carry build-cuda-deps; /build*/ is git-ignored)
#   tools/gpu_check.sh prebuild [dir]   # here: build the two CUDA programs with nvcc (no GPU
#                                       # needed; dir defaults to build-gpu-prebuilt), then on
#                                       # the GPU machine carry dir and build-cuda-deps and run
#                                       # PREBUILT=1 tools/gpu_check.sh [dir]: device time goes
#                                       # to running, not to a 16-core nvcc build. The programs
#                                       # must come from the same sources: a fingerprint of the
#                                       # CUDA sources is checked before they run.
#
# Environment: OUT (a folder for logs and bench.json; default build-dir), BENCH_FILTER
# (a --benchmark_filter regex), BENCH_MIN_TIME (seconds, default 0.1), SANITIZE=0 to skip
# compute-sanitizer, SANITIZE_TIMEOUT (seconds per tool, default 240), WARM=0 to skip the
# warm-L2 table (WARM_FILTER: its own regex, default copy and the parallel scans), TESTS=0 to skip the
# tests, SPREAD=N to also time copy and the parallel scans at the 4M-element shapes in N separate
# processes (min/median/max % of copy; their one-process numbers move by several points),
# BENCH_VARIANTS="name=policy:bench/my_policy.cuh;name2=-DFLAG=1 -DOTHER=2" to also build and
# time bench variants (nvcc directly) with VARIANT_FILTER: `policy:HEADER` times another tuning
# (HEADER defines bench_policy, a policy type: the top of bench/bench_scan_cuda.cu), anything
# else is passed to nvcc as flags. BASELINE=<another bench_scan_cuda> (e.g. built by `prebuild`
# from an older commit) times it and this tree's alternately, ROUNDS times each (default 3),
# and prints the change per benchmark (medians of the rounds; the device's numbers move by a
# few % between processes, so one process of each is not a comparison).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = deps ]; then
  set -e
  rm -rf build-cuda-deps && mkdir -p build-cuda-deps/include build-cuda-deps/share/eigen3 build-cuda-deps/lib/cmake build-cuda-deps/lib/x86_64-linux-gnu/cmake
  cp -r /usr/include/eigen3 /usr/include/catch2 /usr/include/benchmark build-cuda-deps/include/
  cp -r /usr/share/eigen3/cmake build-cuda-deps/share/eigen3/
  cp -r /usr/lib/cmake/Catch2 build-cuda-deps/lib/cmake/
  cp /usr/lib/libCatch2WithMain.a build-cuda-deps/lib/  # named by Catch2's exported targets
  cp -r /usr/lib/x86_64-linux-gnu/cmake/benchmark build-cuda-deps/lib/x86_64-linux-gnu/cmake/
  cp -a /usr/lib/x86_64-linux-gnu/libbenchmark.so* /usr/lib/x86_64-linux-gnu/libbenchmark_main.a build-cuda-deps/lib/x86_64-linux-gnu/
  # Header-only CLI11 + nlohmann/json and the fortunes corpus: train_rwkv and examples/batch_sweep
  # can then run on the GPU machine's CPU cores too (-DCMAKE_PREFIX_PATH=build-cuda-deps,
  # --data build-cuda-deps/fortunes).
  mkdir -p build-cuda-deps/share/cmake build-cuda-deps/fortunes
  cp -r /usr/include/CLI /usr/include/nlohmann build-cuda-deps/include/
  cp -r /usr/share/cmake/CLI11 /usr/share/cmake/nlohmann_json build-cuda-deps/share/cmake/
  cp -rL /usr/share/games/fortunes/. build-cuda-deps/fortunes/
  du -sh build-cuda-deps
  exit 0
fi

cuda_flags=(-std=c++20 -O3 -DNDEBUG -arch=sm_90 --expt-relaxed-constexpr -Iinclude -isystem build-cuda-deps/include
            -Xcompiler=-Wall,-Wextra,-Werror,-fopenmp --Werror=all-warnings)
bench_libs=(-Lbuild-cuda-deps/lib/x86_64-linux-gnu -lbenchmark)

# What the two CUDA programs are built from. No git needed: the device machine gets a copy of
# the working tree, which may lack .git. tools/ is not listed: neither program is built from
# it (the probes there are, and they are not run here).
# One line per file (hash, path), so a mismatch names the files that differ.
source_fingerprint() {
  find include bench tests -type f \( -name '*.cu' -o -name '*.cuh' -o -name '*.hpp' -o -name '*.h' \) -print0 |
    LC_ALL=C sort -z | xargs -0 sha256sum
}

if [ "${1:-}" = prebuild ]; then
  dir=${2:-build-gpu-prebuilt}
  mkdir -p "$dir"
  [ -d build-cuda-deps/include ] || { echo "gpu_check: run 'tools/gpu_check.sh deps' first" >&2; exit 1; }
  nvcc "${cuda_flags[@]}" tests/test_scan_cuda.cu -o "$dir/test_scan_cuda" || exit 1
  nvcc "${cuda_flags[@]}" bench/bench_scan_cuda.cu -o "$dir/bench_scan_cuda" "${bench_libs[@]}" || exit 1
  source_fingerprint >"$dir/SOURCES"
  du -sh "$dir"
  exit 0
fi

prebuilt=${PREBUILT:-0}
if [ "$prebuilt" = 1 ]; then build=${1:-build-gpu-prebuilt}; else build=${1:-build-gpu}; fi
out=${OUT:-$build}
spread=${SPREAD:-0}
[[ "$spread" =~ ^[0-9]+$ ]] || { echo "SPREAD is '$spread'; expected a number of processes"; exit 1; }
mkdir -p "$build" "$out"
status=0
step() { echo; echo "=== $* ==="; }

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
nvcc --version | tail -1

step "$([ "$prebuilt" = 1 ] && echo "prebuilt programs (nvcc -O3 -DNDEBUG, sm_90)" || echo "configure + build (Release, sm_90)")"
# The GPU machine's GCC 13 reports a false -Wmaybe-uninitialized inside the CPU scan's lane
# arrays (seen there, not with the project's GCC 12); -Werror would stop the build on it.
relax=-Xcompiler=-Wno-maybe-uninitialized
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ "$prebuilt" = 1 ]; then
  # Built by `tools/gpu_check.sh prebuild`; the benchmark library comes from the carried
  # build-cuda-deps.
  export LD_LIBRARY_PATH="$PWD/build-cuda-deps/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  test_bin=$build/test_scan_cuda
  bench_bin=$build/bench_scan_cuda
  [ -x "$test_bin" ] && [ -x "$bench_bin" ] || { echo "PREBUILT=1: $test_bin or $bench_bin missing"; exit 1; }
  # Exit 4 (not 1) so a caller can tell "built from other sources" from a failed check.
  if ! source_fingerprint | diff "$build/SOURCES" - >"$out/sources.diff"; then
    echo "PREBUILT=1: $build was built from other sources; run 'tools/gpu_check.sh prebuild $build' again. Differences (< built from, > this tree):"
    head -20 "$out/sources.diff"
    exit 4
  fi
  echo "sources: the $(wc -l <"$build/SOURCES") files $build was built from match this tree"
elif cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
     -DLINREC_BUILD_EXAMPLES=OFF -DCMAKE_PREFIX_PATH="$PWD/build-cuda-deps" -DCMAKE_CUDA_FLAGS="$relax" >"$out/configure.log" 2>&1 &&
   cmake --build "$build" -j "$(nproc)" --target test_scan_cuda bench_scan_cuda >"$out/build.log" 2>&1; then
  test_bin=$build/tests/test_scan_cuda
  bench_bin=$build/bench/bench_scan_cuda
else
  # The project's configure needs every test's sources; if someone's work in progress breaks
  # it, build the two CUDA programs directly with the same flags.
  echo "CMake configure/build failed (logs in $out); building the CUDA programs with nvcc directly"
  tail -5 "$out/configure.log" "$out/build.log" 2>/dev/null
  nvcc "${cuda_flags[@]}" "$relax" tests/test_scan_cuda.cu -o "$build/test_scan_cuda" &
  nvcc "${cuda_flags[@]}" "$relax" bench/bench_scan_cuda.cu -o "$build/bench_scan_cuda" "${bench_libs[@]}" \
    -Xlinker -rpath="$PWD/build-cuda-deps/lib/x86_64-linux-gnu" &
  wait %1 || status=1
  wait %2 || status=1
  test_bin=$build/test_scan_cuda
  bench_bin=$build/bench_scan_cuda
  ((status == 0)) || { echo "build failed"; exit 1; }
fi
echo "built $test_bin $bench_bin"

# Bench variants build in the background while the tests run.
if [ -n "${BENCH_VARIANTS:-}" ]; then
  IFS=';' read -ra variants <<<"$BENCH_VARIANTS"
  vflags=(-std=c++20 -O3 -arch=sm_90 --expt-relaxed-constexpr -Iinclude -isystem build-cuda-deps/include
          -Xcompiler=-Wall,-Wextra "$relax")
  for v in "${variants[@]}"; do
    name=${v%%=*}; spec=${v#*=}
    if [[ $spec == policy:* ]]; then
      defs=("-DLINREC_BENCH_CUDA_POLICY=\"$PWD/${spec#policy:}\"")
    else
      read -ra defs <<<"$spec"
    fi
    nvcc "${vflags[@]}" "${defs[@]}" bench/bench_scan_cuda.cu -o "$build/bench_$name" -Lbuild-cuda-deps/lib/x86_64-linux-gnu \
      -lbenchmark -Xlinker -rpath="$PWD/build-cuda-deps/lib/x86_64-linux-gnu" >"$out/build_$name.log" 2>&1 &
  done
fi

if [ "${TESTS:-1}" = 0 ]; then
  echo "(tests skipped: TESTS=0)"
elif [ "$prebuilt" != 1 ] && [ -f "$build/CTestTestfile.cmake" ]; then
  ctest --test-dir "$build" -L cuda -V >"$out/ctest.log" 2>&1 || status=1
  grep -E "test_scan_cuda:|All tests passed|test cases|assertions|FAILED|tests passed|Skipped|Failed" "$out/ctest.log" | tail -12
else
  "$test_bin" >"$out/test.log" 2>&1 || status=1
  tail -3 "$out/test.log"
fi

if [ "${SANITIZE:-1}" != 0 ] && [ "${TESTS:-1}" != 0 ]; then
  for tool in memcheck racecheck; do
    step "compute-sanitizer $tool (LINREC_TEST_QUICK=1: the largest cases left out)"
    # racecheck loses track of kernels launched from two host threads and hangs ("Internal
    # Sanitizer Error: Detected a failure to track a kernel launch"): the [threads] case runs
    # under memcheck and ctest only.
    filter="~[cuda_error]"
    [ "$tool" = racecheck ] && filter="~[cuda_error]~[threads]"
    LINREC_TEST_QUICK=1 timeout "${SANITIZE_TIMEOUT:-240}" compute-sanitizer --tool "$tool" --error-exitcode 3 "$test_bin" "$filter" \
      >"$out/sanitizer_$tool.log" 2>&1
    rc=$?
    tail -4 "$out/sanitizer_$tool.log"
    echo "compute-sanitizer $tool: exit $rc"
    ((rc == 0)) || status=1
  done
fi

table() {  # table <bench.json>
python3 - "$1" <<'PY'
import json, sys, collections
runs = json.load(open(sys.argv[1]))["benchmarks"]
rows = collections.OrderedDict()
for r in runs:
    parts = r["name"].split("/")
    layout = "bct" if "bct" in parts else "btc"
    args = [p for p in parts if p.isdigit()]
    kind = "/".join(p for p in parts if not p.isdigit() and p not in ("bct", "manual_time"))
    key = (layout, tuple(args))
    rows.setdefault(key, {})[kind] = r["bytes_per_second"] / 1e9
cols = ["scan_forward/sequential", "scan_forward/parallel", "scan_forward/auto",
        "scan_backward/sequential", "scan_backward/parallel", "scan_backward/auto"]
print("| shape (B,T,C) | layout | copy GB/s | " + " | ".join(c.replace("scan_", "") for c in cols) + " |")
print("|" + "---|" * (3 + len(cols)))
for (layout, args), v in rows.items():
    copy = v.get("copy")
    cells = []
    for c in cols:
        if c not in v: cells.append("—"); continue
        cells.append(f"{v[c]:.0f} ({100 * v[c] / copy:.0f}%)" if copy else f"{v[c]:.0f}")
    copy_cell = f"{copy:.0f}" if copy else "—"
    print(f"| {','.join(args)} | {layout} | {copy_cell} | " + " | ".join(cells) + " |")
# automatic vs the faster forced algorithm
for (layout, args), v in rows.items():
    for d in ("scan_forward", "scan_backward"):
        best = max(v.get(d + "/sequential", 0), v.get(d + "/parallel", 0))
        if best and d + "/auto" in v:
            ratio = v[d + "/auto"] / best
            flag = "" if ratio >= 0.9 else "  <-- automatic choice more than 10% off"
            print(f"auto/best {d:13s} {','.join(args):>16s} {layout}: {ratio:.2f}{flag}")
PY
}


step "benchmark"
wait  # bench variants
"$bench_bin" --benchmark_min_time="${BENCH_MIN_TIME:-0.1}" --benchmark_filter="${BENCH_FILTER:-.}" \
  --benchmark_out="$out/bench.json" --benchmark_out_format=json >"$out/bench.txt" 2>&1 || status=1
tail -3 "$out/bench.txt"

# The same copy and parallel scans back to back, L2 holding what the previous call left (see
# the top of bench/bench_scan_cuda.cu): at 4M elements `copy` then runs from L2.
if [ "${WARM:-1}" != 0 ]; then
  step "warm L2 (LINREC_BENCH_L2=warm): copy and parallel"
  LINREC_BENCH_L2=warm "$bench_bin" --benchmark_min_time="${BENCH_MIN_TIME:-0.1}" \
    --benchmark_filter="${WARM_FILTER:-^(copy|scan_forward/parallel|scan_backward/parallel)}" \
    --benchmark_out="$out/bench_warm.json" --benchmark_out_format=json >"$out/bench_warm.txt" 2>&1 || status=1
  table "$out/bench_warm.json" || status=1
fi

if [ -n "${BENCH_VARIANTS:-}" ]; then
  for v in "${variants[@]}"; do
    name=${v%%=*}
    step "variant $name: ${v#*=}"
    "$build/bench_$name" --benchmark_min_time="${BENCH_MIN_TIME:-0.1}" --benchmark_filter="${VARIANT_FILTER:-${BENCH_FILTER:-.}}" \
      --benchmark_out="$out/bench_$name.json" --benchmark_out_format=json >"$out/bench_$name.txt" 2>&1 || status=1
    table "$out/bench_$name.json" || status=1
  done
fi

if [ -n "${BASELINE:-}" ]; then
  rounds=${ROUNDS:-3}
  step "baseline $BASELINE against $bench_bin, alternately, $rounds rounds each"
  [ -x "$BASELINE" ] || { echo "BASELINE=$BASELINE is not an executable"; exit 1; }
  rm -f "$out"/ab_old_*.json "$out"/ab_new_*.json
  for ((i = 1; i <= rounds; i++)); do
    for side in old new; do
      bin=$bench_bin
      [ "$side" = old ] && bin=$BASELINE
      "$bin" --benchmark_min_time="${BENCH_MIN_TIME:-0.1}" --benchmark_filter="${BENCH_FILTER:-.}" \
        --benchmark_out="$out/ab_${side}_$i.json" --benchmark_out_format=json >/dev/null 2>&1 || status=1
    done
  done
  python3 - "$out" "$rounds" <<'PY' || status=1
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(side):
    runs = {}
    for i in range(1, rounds + 1):
        for r in json.load(open(f"{out}/ab_{side}_{i}.json"))["benchmarks"]:
            runs.setdefault(r["name"].replace("/manual_time", ""), []).append(r["bytes_per_second"] / 1e9)
    return runs
old, new = load("old"), load("new")
print("| benchmark | old GB/s: median (min-max) | new GB/s: median (min-max) | change of medians |")
print("|---|---|---|---|")
worst = None
for name in old:
    if name not in new: continue
    o, n = statistics.median(old[name]), statistics.median(new[name])
    change = 100 * (n / o - 1)
    flag = "  <-- more than 3 % slower" if change < -3 and not name.startswith("copy") else ""
    print(f"| {name} | {o:.0f} ({min(old[name]):.0f}-{max(old[name]):.0f}) | {n:.0f} ({min(new[name]):.0f}-{max(new[name]):.0f})"
          f" | {change:+.1f} % |{flag}")
    if not name.startswith("copy") and (worst is None or change < worst[1]): worst = (name, change)
if worst: print(f"largest loss (scans): {worst[0]} {worst[1]:+.1f} %")
PY
fi

if ((spread > 0)); then
  step "spread: copy and the parallel scans at the 4M-element shapes in $spread processes (default L2 mode)"
  rm -f "$build"/spread_*.json  # a longer earlier run's files would join the statistics
  for ((i = 1; i <= spread; i++)); do
    "$bench_bin" --benchmark_min_time="${BENCH_MIN_TIME:-0.1}" \
      --benchmark_filter='^(copy|scan_forward/parallel|scan_backward/parallel)(/bct)?/1/65536/64/' \
      --benchmark_out="$build/spread_$i.json" --benchmark_out_format=json >/dev/null 2>&1 || status=1
  done
  python3 - "$out/bench_spread.json" "$build"/spread_*.json <<'PY' || status=1
import json, statistics, sys
runs, unreadable = [], []
for f in sys.argv[2:]:
    try:
        runs.append(json.load(open(f)))
    except (OSError, ValueError):
        unreadable.append(f)
json.dump({"what": "bench_scan_cuda, copy and parallel scans at the 4M-element shapes, one process per run",
           "runs": [{"context": r["context"], "benchmarks": r["benchmarks"]} for r in runs]},
          open(sys.argv[1], "w"), indent=1)
ratios = {}
for run in runs:
    by_shape = {}
    for r in run["benchmarks"]:
        parts = r["name"].split("/")
        layout = "bct" if "bct" in parts else "btc"
        kind = "/".join(p for p in parts if not p.isdigit() and p not in ("bct", "manual_time"))
        by_shape.setdefault(layout, {})[kind] = r["bytes_per_second"]
    for layout, v in by_shape.items():
        for kind, bps in v.items():
            if kind != "copy" and "copy" in v:
                ratios.setdefault(f"{kind} {layout}", []).append(100 * bps / v["copy"])
print("| (1,65536,64) | processes | min % of copy | median | max |")
print("|---|---|---|---|---|")
for name, r in sorted(ratios.items()):
    print(f"| {name} | {len(r)} | {min(r):.1f} | {statistics.median(r):.1f} | {max(r):.1f} |")
if unreadable or not runs:
    sys.exit(f"spread: no results from {', '.join(unreadable) or 'any process'}")
PY
fi

step "table (cold L2, the default): GB/s (minimal bytes: copy 8, forward 12, backward 20 per element) and % of copy"
table "$out/bench.json" || status=1
echo
echo "gpu_check: $([ $status = 0 ] && echo PASS || echo FAIL)"
exit $status
