// CUDA scan throughput. Same contract as bench_scan (names and arguments are compared across
// versions): copy (device-to-device), scan_forward/{sequential,parallel,auto},
// scan_backward/{sequential,parallel,auto}; arguments batch, time, channels; bytes = the
// minimum each must move (copy 8, forward 12, backward 20 per element), so bytes_per_second
// reads against `copy`. Names ending in /bct use the [B,C,T] layout (time contiguous), the
// others [B,T,C]. `auto` is the dispatcher's own choice. Timing: CUDA events around each
// iteration (manual time); inputs are random (never zeros), generated on the device.
//
// LINREC_BENCH_L2 = cold (default) | warm: what L2 holds when a timed call starts. `cold` first
// reads a buffer of 4× the L2 size (L2 then holds only clean lines of other data; the TLB is
// swept too) and waits for that read, so every call, `copy` included, reads its inputs from
// DRAM. `warm` is whatever the previous iteration left there. Why cold is the default: at 4M
// elements warm L2 holds all of `copy`'s working set (2 × 16 MB in the H100's 50 MB L2), whose
// device time there is at or above HBM3's peak rate, but not the forward scan's 48 MB or the
// backward's 80 MB (each call also writes back the previous call's outputs:
// probe_scan_cuda_timing), so a warm % of copy at those shapes compares L2 with DRAM.
// nvbench's cold measurements and triton's do_bench also empty L2 before every timed call,
// with a different method (a memset, and the launch kept out of the timing).
// At the 200 MB+ shapes the two modes agree within 3 points. The event timing, launch latency
// included, is the same in both modes. The JSON context records the mode.
//
// Another tuning, same names: built with -DLINREC_BENCH_CUDA_POLICY='"file.cuh"' (tools/gpu_check.sh
// BENCH_VARIANTS="name=policy:file.cuh"), every scan runs under policy_chain<bench_policy>, where
// the header defines bench_policy as a policy of linrec/scan/detail/cuda_policy.cuh with the
// members it changes, e.g.
//   struct bench_policy : linrec::detail::cuda_scan::policy_sm90 {
//     struct forward : policy_sm90::forward { using rows = linrec::detail::cuda_scan::tile_size<2, 6>; };
//   };
// Its kernels are other instantiations (tile_tuning), so no build setting changes what the
// library's headers mean. The JSON context records the header.
#define EIGEN_NO_CUDA
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_bench_support.cuh"
#include "linrec/scan/cuda.cuh"
#ifdef LINREC_BENCH_CUDA_POLICY
#include LINREC_BENCH_CUDA_POLICY
#endif

namespace {

using linrec::index_t;
using linrec::scan_algorithm;
using linrec::scan_shape;
using linrec::strides3;
using linrec::bench::device_floats;

struct shape_entry {
  std::int64_t batch, time, channels;
  bool bct;
  bool sequential;  // false where one thread per sequence would run for many seconds
};

// (B, T, C) as arguments; the /bct shapes are the issue's (B, C, T) = (8,1536,4096),
// (8,1536,65536), (1,64,65536).
const std::vector<shape_entry> shapes = {{8, 4096, 1536, false, true}, {64, 1024, 1024, false, true},
                                         {1, 65536, 64, false, true},  {1, 67108864, 1, false, false},
                                         {8, 4096, 1536, true, true},  {8, 65536, 1536, true, true},
                                         {1, 65536, 64, true, true}};

// The scans under test: the public entry points, or the variant's policy.
template <class Args>
void run_scan(const Args& args, scan_algorithm algorithm) {
#ifdef LINREC_BENCH_CUDA_POLICY
  linrec::detail::cuda_scan::dispatch<linrec::detail::cuda_scan::policy_chain<bench_policy>>(linrec::cuda{}, args,
                                                                                             algorithm);
#else
  if constexpr (std::is_same_v<Args, linrec::scan_forward_args<linrec::real_op<float>>>)
    linrec::scan_forward(linrec::cuda{}, args, algorithm);
  else
    linrec::scan_backward(linrec::cuda{}, args, algorithm);
#endif
}

scan_shape shape_of(const benchmark::State& state) { return {state.range(0), state.range(1), state.range(2)}; }

bool cold_l2 = true;

// One per process: 4× L2 of device memory, allocated on first use.
linrec::bench::l2_filler& l2() {
  static linrec::bench::l2_filler instance;
  return instance;
}

// Times `run` with CUDA events, one warm-up call first.
template <class Run>
void time_iterations(benchmark::State& state, Run run) {
  linrec::bench::event_timer timer;
  run();
  LINREC_CUDA_CHECK(cudaDeviceSynchronize());
  for (auto _ : state) {
    if (cold_l2) {
      l2().clean();
      LINREC_CUDA_CHECK(cudaDeviceSynchronize());  // so that the events time the call alone
    }
    state.SetIterationTime(double(timer.milliseconds(run)) / 1e3);
  }
}

void copy(benchmark::State& state) {
  const index_t n = shape_of(state).elements();
  const device_floats src(n, -1, 1, 1), dst(n, 0, 1, 2);
  time_iterations(state, [&] {
    LINREC_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), std::size_t(n) * sizeof(float), cudaMemcpyDeviceToDevice));
  });
  state.SetBytesProcessed(state.iterations() * n * 8);
}

void scan_forward(benchmark::State& state, scan_algorithm algorithm, bool bct) {
  const scan_shape shape = shape_of(state);
  const index_t n = shape.elements();
  const device_floats a(n, 0.5f, 1.0f, 3), b(n, -1, 1, 4), h(n, 0, 1, 5);
  const strides3 st = bct ? strides3::bct(shape) : strides3::btc(shape);
  const linrec::scan_forward_args<linrec::real_op<float>> args{shape, a.get(), st, b.get(), st, h.get(), st};
  time_iterations(state, [&] { run_scan(args, algorithm); });
  state.SetBytesProcessed(state.iterations() * n * 12);
}

void scan_backward(benchmark::State& state, scan_algorithm algorithm, bool bct) {
  const scan_shape shape = shape_of(state);
  const index_t n = shape.elements();
  const device_floats a(n, 0.5f, 1.0f, 6), h(n, -1, 1, 7), dh(n, -1, 1, 8), da(n, 0, 1, 9), db(n, 0, 1, 10);
  const strides3 st = bct ? strides3::bct(shape) : strides3::btc(shape);
  const linrec::scan_backward_args<linrec::real_op<float>> args{
      shape, a.get(), st, h.get(), st, nullptr, dh.get(), st, nullptr, da.get(), st, db.get(), st};
  time_iterations(state, [&] { run_scan(args, algorithm); });
  state.SetBytesProcessed(state.iterations() * n * 20);
}

void register_all() {
  const struct {
    const char* name;
    scan_algorithm algorithm;
  } algorithms[] = {{"sequential", scan_algorithm::sequential},
                    {"parallel", scan_algorithm::parallel},
                    {"auto", scan_algorithm::automatic}};
  auto setup = [](benchmark::internal::Benchmark* bench, const shape_entry& s) {
    bench->Args({s.batch, s.time, s.channels})->UseManualTime()->Unit(benchmark::kMillisecond);
  };
  for (const auto& s : shapes) {
    const std::string suffix = s.bct ? "/bct" : "";
    setup(benchmark::RegisterBenchmark(("copy" + suffix).c_str(), copy), s);
    for (const auto& alg : algorithms) {
      if (alg.algorithm == scan_algorithm::sequential && !s.sequential) continue;
      setup(benchmark::RegisterBenchmark((std::string("scan_forward/") + alg.name + suffix).c_str(), scan_forward,
                                         alg.algorithm, s.bct),
            s);
      setup(benchmark::RegisterBenchmark((std::string("scan_backward/") + alg.name + suffix).c_str(), scan_backward,
                                         alg.algorithm, s.bct),
            s);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const char* l2 = std::getenv("LINREC_BENCH_L2");
  const std::string l2_mode = l2 && *l2 ? l2 : "cold";
  if (l2_mode != "warm" && l2_mode != "cold") {
    std::fprintf(stderr, "bench_scan_cuda: LINREC_BENCH_L2 is '%s'; expected cold or warm\n", l2_mode.c_str());
    return 1;
  }
  cold_l2 = l2_mode == "cold";
  if (!linrec::bench::has_cuda_device("bench_scan_cuda")) return 1;
  register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("l2", l2_mode);
#ifdef LINREC_BENCH_CUDA_POLICY
  benchmark::AddCustomContext("cuda_policy", LINREC_BENCH_CUDA_POLICY);
#endif
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
