// The all-reduce of dist/mpi.hpp: bytes/s against buffer size, as data-parallel training uses
// it (float sums, in place), and the bucketed reduction of a whole model's gradients.
//
//   mpiexec -n 2 build/bench/bench_allreduce                # add --allow-run-as-root as root
//
// Every rank runs every benchmark (a collective needs all of them), with a fixed iteration count
// (Google Benchmark's adaptive count could differ between ranks and leave one waiting); rank 0
// reports. algbw = buffer bytes / time; busbw = algbw · 2(n−1)/n, the bytes each rank's link
// carries in a ring all-reduce (as nccl-tests reports it), comparable across rank counts.
#include <benchmark/benchmark.h>

#include <memory>
#include <span>
#include <vector>

#include "linrec/dist/buckets.hpp"
#include "linrec/dist/mpi.hpp"

namespace {

std::shared_ptr<linrec::dist::mpi_communicator> comm;

void set_bandwidth(benchmark::State& state, std::size_t bytes) {
  const double n = comm->size();
  state.counters["algbw"] = benchmark::Counter(double(bytes), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["busbw"] =
      benchmark::Counter(double(bytes) * 2 * (n - 1) / n, benchmark::Counter::kIsIterationInvariantRate);
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(bytes));
}

void all_reduce(benchmark::State& state) {
  std::vector<float> buffer(std::size_t(state.range(0)) / sizeof(float), 1.0f);
  for (auto _ : state) {
    comm->all_reduce_sum(std::span<float>(buffer));
    benchmark::DoNotOptimize(buffer.data());
  }
  set_bandwidth(state, buffer.size() * sizeof(float));
}

// A model's gradients: 4 MB buckets over tensors of mixed sizes (the default RWKV-6 has 2.3 MB
// of parameters in 34 tensors; this is 4× that in 136).
void bucketed_gradients(benchmark::State& state) {
  const std::size_t total = std::size_t(state.range(0)) / sizeof(float);
  std::vector<std::vector<float>> tensors;
  for (std::size_t left = total, i = 0; left > 0; ++i) {
    const std::size_t n = std::min(left, i % 4 == 0 ? total / 12 : total / 200 + 1);
    tensors.emplace_back(n, 1.0f);
    left -= n;
  }
  std::vector<std::span<float>> spans(tensors.begin(), tensors.end());
  linrec::dist::bucketed_all_reduce<float> reduce;
  for (auto _ : state) reduce.mean(*comm, std::span<const std::span<float>>(spans));
  set_bandwidth(state, total * sizeof(float));
  state.counters["tensors"] = double(tensors.size());
}

// Fixed iterations (a benchmark has one count, so one registration per size): about 256 MB
// moved per size, at least 20 calls.
void register_benchmarks() {
  for (std::int64_t bytes = 4 << 10; bytes <= (64 << 20); bytes *= 4)
    benchmark::RegisterBenchmark("all_reduce", all_reduce)
        ->Arg(bytes)
        ->Iterations(std::max<std::int64_t>(20, (std::int64_t(256) << 20) / bytes))
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  for (const std::int64_t bytes : {std::int64_t(9) << 20, std::int64_t(36) << 20})
    benchmark::RegisterBenchmark("bucketed_gradients", bucketed_gradients)
        ->Arg(bytes)
        ->Iterations(50)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  comm = std::make_shared<linrec::dist::mpi_communicator>(&argc, &argv);
  register_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (comm->rank() == 0) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    benchmark::BenchmarkReporter* quiet = nullptr;
    struct null_reporter : benchmark::BenchmarkReporter {
      bool ReportContext(const Context&) override { return true; }
      void ReportRuns(const std::vector<Run>&) override {}
    } silent;
    quiet = &silent;
    benchmark::RunSpecifiedBenchmarks(quiet);
  }
  benchmark::Shutdown();
  comm.reset();  // MPI_Finalize before the program's static objects go
  return 0;
}
