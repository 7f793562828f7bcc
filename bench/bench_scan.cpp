// CPU scan throughput. Names and arguments are a contract (results are compared across
// versions): copy, copy/single_thread, scan_forward/{sequential,parallel},
// scan_backward/{sequential,parallel}; arguments batch, time, channels; bytes = the minimum each
// must move (copy 8, forward 12, backward 20 per element), so bytes_per_second of the scans
// reads against `copy`.
//
// `copy` runs on as many threads as the scans (OpenMP's default team, like cpu{}): the
// machine's copy bandwidth, which the parallel scans are measured against. Until 2026-12 it
// was one thread's memcpy, against which the parallel scans "reached" 170-180 %; that one is
// kept as `copy/single_thread`.
//
// Every buffer comes from the allocator tensor storage uses (host_buffer, 64-byte aligned), so
// the rows are laid out as a model's activations are.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "linrec/scan/scan.hpp"
#include "linrec/tensor/host_cache.hpp"

namespace {

using linrec::index_t;
using linrec::scan_shape;

const std::vector<std::vector<std::int64_t>> shapes = {
    {1, 16777216, 1}, {8, 4096, 1024}, {64, 1024, 256}, {4, 65536, 16}};

scan_shape shape_of(const benchmark::State& state) { return {state.range(0), state.range(1), state.range(2)}; }

using buffer = linrec::host_buffer<float>;

buffer random_vector(index_t n, float lo, float hi, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  buffer v(static_cast<std::size_t>(n));
  for (auto& x : v) x = u(rng);
  return v;
}

void copy_single_thread(benchmark::State& state) {
  const index_t n = shape_of(state).elements();
  const auto src = random_vector(n, -1, 1, 1);
  buffer dst(src.size(), 0.0f);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), src.size() * sizeof(float));
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 8);
}

// Each thread copies one contiguous share with memcpy (the same static split every iteration,
// so each thread's pages stay in its caches and NUMA node, as the scans' chunks do).
void copy(benchmark::State& state) {
  const index_t n = shape_of(state).elements();
  const auto src = random_vector(n, -1, 1, 1);
  buffer dst(src.size(), 0.0f);
  const int threads = omp_get_max_threads();
  for (auto _ : state) {
#pragma omp parallel num_threads(threads)
    {
      const index_t t = omp_get_thread_num(), count = omp_get_num_threads();
      const index_t begin = n * t / count, end = n * (t + 1) / count;
      std::memcpy(dst.data() + begin, src.data() + begin, std::size_t(end - begin) * sizeof(float));
    }
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 8);
  state.counters["threads"] = threads;
}

void scan_forward(benchmark::State& state, linrec::scan_algorithm algorithm) {
  const scan_shape shape = shape_of(state);
  const index_t n = shape.elements();
  const auto a = random_vector(n, 0.5f, 1.0f, 2);
  const auto b = random_vector(n, -1, 1, 3);
  buffer h(a.size(), 0.0f);
  const auto btc = linrec::strides3::btc(shape);
  const linrec::scan_forward_args<linrec::real_op<float>> args{shape, a.data(), btc, b.data(), btc, h.data(), btc};
  for (auto _ : state) {
    linrec::scan_forward(linrec::cpu{}, args, algorithm);
    benchmark::DoNotOptimize(h.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 12);
}

void scan_backward(benchmark::State& state, linrec::scan_algorithm algorithm) {
  const scan_shape shape = shape_of(state);
  const index_t n = shape.elements();
  const auto a = random_vector(n, 0.5f, 1.0f, 4);
  const auto h = random_vector(n, -1, 1, 5);
  const auto dh = random_vector(n, -1, 1, 6);
  buffer da(a.size(), 0.0f), db(a.size(), 0.0f);
  const auto btc = linrec::strides3::btc(shape);
  const linrec::scan_backward_args<linrec::real_op<float>> args{
      shape, a.data(), btc, h.data(), btc, nullptr, dh.data(), btc, nullptr, da.data(), btc, db.data(), btc};
  for (auto _ : state) {
    linrec::scan_backward(linrec::cpu{}, args, algorithm);
    benchmark::DoNotOptimize(db.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 20);
}

void register_all() {
  using linrec::scan_algorithm;
  auto with_shapes = [](benchmark::internal::Benchmark* bench) {
    for (const auto& s : shapes) bench->Args(s);
    bench->UseRealTime()->Unit(benchmark::kMillisecond);
  };
  with_shapes(benchmark::RegisterBenchmark("copy", copy));
  with_shapes(benchmark::RegisterBenchmark("copy/single_thread", copy_single_thread));
  with_shapes(benchmark::RegisterBenchmark("scan_forward/sequential", scan_forward, scan_algorithm::sequential));
  with_shapes(benchmark::RegisterBenchmark("scan_forward/parallel", scan_forward, scan_algorithm::parallel));
  with_shapes(benchmark::RegisterBenchmark("scan_backward/sequential", scan_backward, scan_algorithm::sequential));
  with_shapes(benchmark::RegisterBenchmark("scan_backward/parallel", scan_backward, scan_algorithm::parallel));
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
