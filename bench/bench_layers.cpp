// Does training with a parallel scan beat sequential backprop-through-time, and from which
// sequence length on? One training step (fresh tape, forward, loss = mean(y), backward into
// the parameters' gradients) of every layer, in two time modes:
//   scan  the layer's parallel forward: one scan (or chunked WKV) over the whole sequence
//   bptt  layers/bptt.hpp: T single-token forwards unrolled on the tape, the state carried
// Names and arguments are a contract (bench/plot and docs/benchmarks.md read them):
//   layer/<name>/<mode>/<backend>   name ∈ rwkv4_tm, rwkv6_tm, channel_mix, lru, s4d,
//                                   selective_ssm; mode ∈ scan, bptt; backend = cpu
//   arguments batch, time, channels; counter tokens_per_second = B·T per step / wall time.
// Wall-clock time (UseRealTime): the scan, the WKV kernels and Eigen use every OpenMP thread.
//
// Sizes: B = 1, C = 64 (RWKV-6 head size 32, LRU P = 128 complex states, S4D N = 16,
// selective SSM N = 16); T ∈ {4, 16, 64, …, 16384} (4 and 16 locate the crossover where the
// scan already wins at 64). BPTT costs tens of µs per token, so its T = 16384 step takes
// seconds; Google Benchmark then measures one iteration (a step longer than
// --benchmark_min_time runs once), which keeps the whole suite to a few minutes on 2 cores.
// Scan and BPTT are registered alternately per T, so load from other processes on a shared
// machine hits both modes of one T at about the same time.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "linrec/layers/bptt.hpp"
#include "linrec/layers/diag_ssm.hpp"
#include "linrec/layers/lru.hpp"
#include "linrec/layers/rwkv4.hpp"
#include "linrec/layers/rwkv6.hpp"

namespace {

using namespace linrec;
using namespace linrec::layers;

constexpr index_t batch = 1, channels = 64;
constexpr index_t rwkv6_head_size = 32, lru_state = 128, s4d_state = 16, selective_state = 16;
const std::vector<index_t> sequence_lengths = {4, 16, 64, 256, 1024, 4096, 16384};

// One training step per iteration: fresh tape, forward in `mode`, mean loss, backward.
template <class Layer>
void train_step(benchmark::State& state, const Layer& layer, time_mode mode) {
  const index_t b = state.range(0), time = state.range(1), c = state.range(2);
  rng gen(2);
  const auto x = constant(Tensor::randn({b, time, c}, gen));
  auto params = layer.parameters();
  for (auto _ : state) {
    for (auto& p : params) p.zero_grad();
    Tape tape;
    const auto [y, final_state] = forward_in(mode, layer, tape, x, {});
    const auto loss = mean_all(tape, y);
    tape.backward(loss);
    benchmark::DoNotOptimize(loss.item());
  }
  state.counters["tokens_per_second"] =
      benchmark::Counter(double(state.iterations()) * double(b * time), benchmark::Counter::kIsRate);
}

// Registers layer/<name>/{scan,bptt}/cpu over every T; `make(C)` builds the layer.
template <class Make>
void register_layer(const std::string& name, Make make) {
  for (index_t time : sequence_lengths)
    for (time_mode mode : {time_mode::scan, time_mode::bptt}) {
      const std::string full = "layer/" + name + "/" + to_string(mode) + "/cpu";
      benchmark::RegisterBenchmark(full.c_str(),
                                   [make, mode](benchmark::State& state) {
                                     const auto layer = make(state.range(2));
                                     train_step(state, layer, mode);
                                   })
          ->ArgNames({"batch", "time", "channels"})
          ->Args({batch, time, channels})
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
}

void register_all() {
  register_layer("rwkv4_tm", [](index_t c) {
    rng gen(1);
    return rwkv4_time_mix<float>({.dim = c, .layer = 0, .layers = 2}, gen);
  });
  register_layer("rwkv6_tm", [](index_t c) {
    rng gen(1);
    return rwkv6_time_mix<float>({.dim = c, .layer = 0, .layers = 2, .head_size = rwkv6_head_size}, gen);
  });
  register_layer("channel_mix", [](index_t c) {  // RWKV-6 channel-mix, F = 3.5·C
    rng gen(1);
    return rwkv6_channel_mix<float>({.dim = c, .layer = 0, .layers = 2}, gen);
  });
  register_layer("lru", [](index_t c) {
    rng gen(1);
    return lru<float>({.dim = c, .state = lru_state}, gen);
  });
  register_layer("s4d", [](index_t c) {
    rng gen(1);
    return s4d<float>({.dim = c, .state = s4d_state}, gen);
  });
  register_layer("selective_ssm", [](index_t c) {
    rng gen(1);
    return selective_ssm<float>({.dim = c, .state = selective_state}, gen);
  });
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
