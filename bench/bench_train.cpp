// One optimizer step of the byte-level RWKV language model (train/trainer.hpp: micro-batches,
// backward, clip, AdamW), as train_rwkv runs it, beside the machine's practical FLOP ceiling.
// Names are a contract (docs/benchmarks.md reads them):
//   train_step/<model>/<threads>   model ∈ default (RWKV-6, 2 × 128, ctx 64, batch 16: the README
//                                  run until 2026-12, pinned here as the reference of the speed
//                                  comparisons), wide (4× its width: 2 × 512, head size 64),
//                                  readme (train_rwkv's defaults today, the README run's model);
//                                  threads = the trainer's cpu{threads} (0: all)
//   train_step/<model>/<threads>/loaded   the same while another thread spins on a core (a
//                                  shared machine): its time against the idle one's
//   gemm/<n>                       Eigen fp32 C = A·B, n × n × n: the FLOP rate a large product
//                                  reaches on this machine, the ceiling for the step's GEMMs
// Counters: tokens_per_second (bytes of text trained per second), gflops (model FLOPs: 6 × the
// matrix parameters × tokens, the usual estimate of forward + backward GEMM work; the WKV,
// norms and elementwise ops are not counted, so this understates the work done).
#include <benchmark/benchmark.h>

#include <atomic>
#include <thread>
#include <vector>

#include "linrec/tensor/eigen.hpp"
#include "linrec/train/trainer.hpp"

namespace {

using namespace linrec;

std::vector<std::uint8_t> text_of(std::size_t n) {
  rng gen(3);
  std::vector<std::uint8_t> text(n);
  // Letters with a little structure; the speed of a step does not depend on the bytes.
  for (auto& c : text) c = static_cast<std::uint8_t>("etaoin shrdlu\n"[gen.below(14)]);
  return text;
}

enum class model_kind { default_model, wide, readme };

const char* name_of(model_kind kind) {
  switch (kind) {
    case model_kind::default_model:
      return "default";
    case model_kind::wide:
      return "wide";
    case model_kind::readme:
      return "readme";
  }
  return "?";
}

train::train_config model_config(model_kind kind) {
  train::train_config c;  // train_rwkv's defaults: the readme model
  if (kind != model_kind::readme) {
    c.model = {.version = 6, .vocab = 256, .dim = 128, .layers = 2, .head_size = 32};
    c.ctx = 64;
    c.batch = 16;
    c.accum = 1;
  }
  if (kind == model_kind::wide) {
    c.model.dim *= 4;
    c.model.head_size = 64;
  }
  c.steps = 1000000;  // the schedule's length does not change a step's cost
  return c;
}

// 6 × (matrix parameters used in products) per token: every rank-2 parameter but the
// embedding table, which is a lookup.
double flops_per_token(const train::trainer& t) {
  double n = 0;
  for (const auto& p : t.model().parameters())
    if (p.value().rank() >= 2 && p.name() != "emb.weight") n += double(p.value().numel());
  return 6 * n;
}

// A thread that keeps one core busy until stopped (another process's work on a shared machine).
class busy_core {
 public:
  busy_core()
      : thread_([this] {
          volatile std::uint64_t x = 0;
          while (!stop_.load(std::memory_order_relaxed)) x = x + 1;
        }) {}
  ~busy_core() {
    stop_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

void train_step(benchmark::State& state, model_kind kind, int threads, bool loaded) {
  static const auto text = text_of(1 << 20);
  train::trainer t(model_config(kind), text, cpu{threads});
  t.step();  // first-touch allocations out of the timing
  std::optional<busy_core> busy;
  if (loaded) busy.emplace();
  for (auto _ : state) benchmark::DoNotOptimize(t.step().loss);
  const double tokens = double(t.config().batch * t.config().accum * t.config().ctx);
  state.counters["tokens_per_second"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["gflops"] =
      benchmark::Counter(tokens * flops_per_token(t) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["shards"] = t.shards();
}

void gemm(benchmark::State& state) {
  const index_t n = state.range(0);
  rng gen(5);
  const auto a = Tensor::randn({n, n}, gen), b = Tensor::randn({n, n}, gen);
  auto c = Tensor::zeros({n, n});
  for (auto _ : state) {
    as_matrix(c).noalias() = as_matrix(a) * as_matrix(b);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["gflops"] =
      benchmark::Counter(2.0 * double(n) * double(n) * double(n) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

void register_all() {
  const int cores = std::max(1, int(std::thread::hardware_concurrency()));
  for (const model_kind kind : {model_kind::default_model, model_kind::wide, model_kind::readme})
    for (const int threads : {1, cores}) {
      const std::string name = std::string("train_step/") + name_of(kind) + "/" + std::to_string(threads);
      benchmark::RegisterBenchmark(name.c_str(), train_step, kind, threads, false)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      if (kind != model_kind::wide && threads == cores && cores > 1)
        benchmark::RegisterBenchmark((name + "/loaded").c_str(), train_step, kind, threads, true)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
    }
  benchmark::RegisterBenchmark("gemm", gemm)->Arg(2048)->UseRealTime()->Unit(benchmark::kMillisecond);
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
