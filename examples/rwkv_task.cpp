// Multi-query associative recall with a small RWKV model, version 4 and/or 6. Each sequence
// first lists key–value pairs (every key once, in random order, each with a random value),
// then asks for keys at random; at every query the model must name that key's value. The
// answer depends on which pair, seen earlier, carried the queried key: a memory addressed
// by content. Chance is 1/values.
//
//   rwkv_task [--version 4|6|both] [--steps 600|300] [--lr 1e-2|3e-3] [--warmup 100|0] [--dim 96|64]
//             [--layers 2] [--head-size 16] [--keys 8] [--values 8] [--queries 16] [--batch 32]
//             [--seed 1] [--target 0.95] [--threads 2]          (a|b: the RWKV-4 | RWKV-6 default)
//
// Model: models::rwkv_lm — embedding → LN0 → blocks (x += TimeMix(LN1 x); x += ChannelMix(LN2 x))
// → LN_out → head, with RWKV-4 or RWKV-6 blocks in the reference initialisation; AdamW with a
// linear warm-up and cosine decay; cross entropy on the query positions only. Prints progress,
// then the accuracy on fresh batches per version; exits 0 when every trained version reaches
// --target. The loop and the flags every task takes: task_loop.hpp.
//
// Why the defaults differ: RWKV-6's state is a matrix per head (key index × value index), so a
// pair is written as k vᵀ and read back by the query's r — the textbook associative memory.
// RWKV-4's state is one (numerator, denominator) pair per channel and its attention weights e^k
// do not depend on the query: it must give each key its own channels (k large where that key
// precedes a value) and select them with σ(r). That needs more channels (C = 96) and a larger
// learning rate; without the warm-up some keys never get channels of their own.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "linrec/linrec.hpp"
#include "linrec/models/rwkv_lm.hpp"
#include "task_loop.hpp"

namespace {

using linrec_example::batch_data;

// Per-version settings; a flag given on the command line overrides both versions.
struct hyper {
  int steps, warmup, dim;
  double lr;
};
hyper defaults_for(int version) { return version == 4 ? hyper{600, 100, 96, 1e-2} : hyper{300, 0, 64, 3e-3}; }

struct options : linrec_example::common_options {
  std::string version = "both";
  int steps = -1, warmup = -1, dim = -1;  // −1: the version's default (the flags' checks exclude it)
  double lr = -1;
  int keys = 8, values = 8, queries = 16, layers = 2, head_size = 16;

  hyper settings(int version) const {
    hyper h = defaults_for(version);
    if (steps > 0) h.steps = steps;
    if (warmup >= 0) h.warmup = warmup;
    if (dim > 0) h.dim = dim;
    if (lr > 0) h.lr = lr;
    return h;
  }
  bool trains(int version) const { return this->version == "both" || this->version == std::to_string(version); }
};

options parse(int argc, char** argv) {
  options o;
  CLI::App app{
      "rwkv_task: multi-query associative recall with a small RWKV-4 and/or RWKV-6 model\n"
      "defaults: RWKV-4 600 steps, lr 1e-2, warm-up 100, C 96; RWKV-6 300 steps, lr 3e-3, no warm-up, C 64",
      "rwkv_task"};
  app.add_option("--version", o.version, "RWKV version to train: 4, 6 or both (one after the other)")
      ->capture_default_str()
      ->check(CLI::IsMember({"4", "6", "both"}));
  linrec_example::add_schedule_flags(app, o.steps, o.lr, "per version, see above", "per version");
  app.add_option("--warmup", o.warmup, "linear warm-up steps (default: per version)")->check(CLI::Range(0, 10'000'000));
  app.add_option("--dim", o.dim, "model width C (default: per version)")->check(CLI::Range(1, 4096));
  app.add_option("--layers", o.layers, "number of blocks")->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("--head-size", o.head_size, "RWKV-6 head size (divides the RWKV-6 width)")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--keys", o.keys, "distinct keys, each listed once per sequence")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 15));
  app.add_option("--values", o.values, "distinct values")->capture_default_str()->check(CLI::Range(2, 1 << 15));
  app.add_option("--queries", o.queries, "queries after the pairs")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  linrec_example::add_common_flags(app, o);
  linrec_example::parse_flags(app, argc, argv, [&] {
    // Checked before any training, so that `--version both` does not fail after RWKV-4's run.
    if (o.trains(6) && o.settings(6).dim % o.head_size != 0)
      throw CLI::ValidationError("--head-size", "RWKV-6: width " + std::to_string(o.settings(6).dim) +
                                                    " is not a multiple of head size " + std::to_string(o.head_size));
  });
  return o;
}

// Token ids: keys 0..K−1, values K..K+V−1. A row is k v k v … (K pairs) then Q query keys;
// target = the queried key's value at query positions, −1 (ignored) elsewhere.
batch_data make_batch(const options& o, linrec::rng& gen) {
  batch_data d;
  std::vector<std::int32_t> order(std::size_t(o.keys)), value_of(std::size_t(o.keys));
  for (int b = 0; b < o.batch; ++b) {
    for (int k = 0; k < o.keys; ++k) order[std::size_t(k)] = k;
    for (int k = o.keys - 1; k > 0; --k) std::swap(order[std::size_t(k)], order[gen.below(std::uint64_t(k + 1))]);
    for (const std::int32_t key : order) {
      value_of[std::size_t(key)] = std::int32_t(o.keys + int(gen.below(std::uint64_t(o.values))));
      d.tokens.insert(d.tokens.end(), {key, value_of[std::size_t(key)]});
      d.targets.insert(d.targets.end(), {-1, -1});
    }
    for (int q = 0; q < o.queries; ++q) {
      const auto key = std::int32_t(gen.below(std::uint64_t(o.keys)));
      d.tokens.push_back(key);
      d.targets.push_back(value_of[std::size_t(key)]);
    }
  }
  return d;
}

// Trains one model of the given version from scratch; returns the held-out accuracy.
double train(const options& o, int version) {
  const hyper h = o.settings(version);
  const int time = 2 * o.keys + o.queries;
  linrec::rng gen(o.seed);
  const linrec::models::rwkv_lm<float> model(
      {.version = version, .vocab = o.keys + o.values, .dim = h.dim, .layers = o.layers, .head_size = o.head_size},
      gen);
  linrec::AdamW opt(model.parameters(), {.lr = h.lr, .weight_decay = 0.0});
  std::printf("RWKV-%d: C=%d, %d layers%s; %d steps, lr %.0e, warm-up %d, batch %d, T %d\n", version, h.dim, o.layers,
              version == 6 ? (", head size " + std::to_string(o.head_size)).c_str() : "", h.steps, h.lr, h.warmup,
              o.batch, time);
  return linrec_example::train_and_evaluate(
      opt,
      {.steps = h.steps,
       .lr = h.lr,
       .warmup = h.warmup,
       .target = o.target,
       .indent = "  ",
       .label = "RWKV-" + std::to_string(version) + " ",
       .unit = "queries"},
      [&] { return make_batch(o, gen); },
      [&](linrec::Tape& tape, const batch_data& d) { return model.forward(tape, d.tokens, o.batch, time, {}).first; });
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  omp_set_num_threads(o.threads);
  std::printf("associative recall: %d keys, %d values, %d pairs then %d queries; chance %.1f%%\n", o.keys, o.values,
              o.keys, o.queries, 100.0 / o.values);
  bool reached = true;
  for (const int version : {4, 6})
    if (o.trains(version)) reached = train(o, version) >= o.target && reached;
  return reached ? 0 : 1;
}
