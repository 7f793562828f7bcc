// Delayed recall with one LRU layer: read a stream of random tokens and, at every step t,
// name the token seen `delay` steps earlier. The answer is a fixed linear filter of the past
// (a delay line), which the LRU's complex eigenvalues must learn to approximate; a model
// without memory stays at chance (1/vocab).
//
//   lru_task [--steps 600] [--delay 8] [--vocab 8] [--time 64] [--batch 32] [--dim 32]
//            [--state 64] [--lr 3e-3] [--seed 1] [--target 0.95] [--threads 2]
//
// Model: embedding [V,H] → LRU (H, P) → GELU → linear read-out [H,V]; AdamW; cross entropy on
// every position t ≥ delay. Prints progress, then the accuracy on fresh batches; exits 0
// when it reaches --target. The loop and the flags every task takes: task_loop.hpp.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "linrec/layers/lru.hpp"
#include "linrec/linrec.hpp"
#include "task_loop.hpp"

namespace {

using linrec_example::batch_data;

struct options : linrec_example::token_options {
  int steps = 600, state = 64;
  double lr = 3e-3;
};

options parse(int argc, char** argv) {
  options o;
  CLI::App app{"lru_task: delayed recall (name the token seen --delay steps earlier) with one LRU layer", "lru_task"};
  linrec_example::add_schedule_flags(app, o.steps, o.lr);
  app.add_option("--state", o.state, "LRU state size P")->capture_default_str()->check(CLI::Range(1, 4096));
  linrec_example::add_token_flags(app, o);
  linrec_example::parse_flags(app, argc, argv, [&] {
    // No position would have an answer, and the accuracy would be 0/0.
    if (o.delay >= o.time) throw CLI::ValidationError("--delay", "must be less than --time");
  });
  return o;
}

// Random tokens; target[t] = token[t − delay], −1 (ignored) before the first full delay.
batch_data make_batch(const options& o, linrec::rng& gen) {
  batch_data d;
  for (int b = 0; b < o.batch; ++b)
    for (int t = 0; t < o.time; ++t) {
      d.tokens.push_back(std::int32_t(gen.below(std::uint64_t(o.vocab))));
      d.targets.push_back(t >= o.delay ? d.tokens[d.tokens.size() - 1 - std::size_t(o.delay)] : -1);
    }
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  std::printf("delayed recall: vocab %d, delay %d, T %d, batch %d; LRU H=%d P=%d; chance %.1f%%\n", o.vocab, o.delay,
              o.time, o.batch, o.dim, o.state, 100.0 / o.vocab);
  return linrec_example::run_token_task(
      o, [&](linrec::rng& gen) { return linrec::layers::lru<float>({.dim = o.dim, .state = o.state}, gen, "lru."); },
      make_batch);
}
