// One diagonal-SSM layer on the synthetic task that suits it:
//   --layer s4d        delayed recall: at every step t name the token seen `delay` steps
//                      earlier (a fixed delay line: a time-invariant filter suffices);
//   --layer selective  hold: the stream is mostly blanks with a data token now and then; at
//                      every step name the most recent data token, however long ago it came
//                      (a variable gap: needs the input-dependent step Δ_t to reset or keep h).
// --task delay|hold overrides the pairing (e.g. to see S4D fail the hold task).
//
//   ssm_task [--layer s4d|selective] [--task delay|hold] [--steps 250|300] [--delay 8] [--blank 0.8]
//            [--vocab 8] [--time 64] [--batch 32] [--dim 32] [--state 64|16] [--lr 6e-3|3e-3]
//            [--seed 1] [--target 0.95] [--threads 2]      (a|b: the s4d | selective default)
//
// Model: embedding [V,H] → layer → GELU → linear read-out [H,V]; AdamW; cross entropy on every
// position with a defined answer. Prints progress, then the accuracy on fresh batches; exits 0
// when it reaches --target. The loop and the flags every task takes: task_loop.hpp.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "linrec/layers/diag_ssm.hpp"
#include "linrec/linrec.hpp"
#include "task_loop.hpp"

namespace {

using linrec_example::batch_data;

struct options : linrec_example::token_options {
  std::string layer = "s4d", task;  // task "": the layer's
  int steps = 0, state = 0;         // 0: the layer's default
  double lr = 0, blank = 0.8;       // lr 0: the layer's default
};

options parse(int argc, char** argv) {
  options o;
  CLI::App app{"ssm_task: one diagonal-SSM layer (S4D or selective) on delayed recall or hold-the-last-token",
               "ssm_task"};
  app.add_option("--layer", o.layer, "s4d or selective")
      ->capture_default_str()
      ->check(CLI::IsMember({"s4d", "selective"}));
  app.add_option("--task", o.task, "delay or hold (default: delay for s4d, hold for selective)")
      ->check(CLI::IsMember({"delay", "hold"}));
  linrec_example::add_schedule_flags(app, o.steps, o.lr, "250 for s4d, 300 for selective",
                                     "6e-3 for s4d, 3e-3 for selective");
  app.add_option("--blank", o.blank, "hold task: probability of the blank token 0")
      ->capture_default_str()
      ->check(linrec_example::real_in(0.0, 0.999));
  app.add_option("--state", o.state, "state size N (default: 64 for s4d, which needs it even, 16 for selective)")
      ->check(CLI::Range(1, 4096));
  linrec_example::add_token_flags(app, o);
  linrec_example::parse_flags(app, argc, argv, [&] {
    const bool selective = o.layer == "selective";
    if (o.task.empty()) o.task = selective ? "hold" : "delay";
    if (o.state == 0) o.state = selective ? 16 : 64;
    if (o.steps == 0) o.steps = selective ? 300 : 250;
    if (o.lr == 0) o.lr = selective ? 3e-3 : 6e-3;
    // s4d keeps the state as conjugate pairs (layers/diag_ssm.hpp checks it).
    if (!selective && o.state % 2 != 0) throw CLI::ValidationError("--state", "must be even for --layer s4d");
    // No position would have an answer, and the accuracy would be 0/0.
    if (o.task == "delay" && o.delay >= o.time) throw CLI::ValidationError("--delay", "must be less than --time");
  });
  return o;
}

// delay: random tokens, target[t] = token[t − delay] (−1, ignored, before the first delay).
// hold: token 0 is the blank (probability --blank), 1..V−1 data; target[t] = the latest data
// token at or before t (−1 before the first one).
batch_data make_batch(const options& o, linrec::rng& gen) {
  batch_data d;
  for (int b = 0; b < o.batch; ++b) {
    std::int32_t held = -1;
    for (int t = 0; t < o.time; ++t) {
      if (o.task == "delay") {
        d.tokens.push_back(std::int32_t(gen.below(std::uint64_t(o.vocab))));
        d.targets.push_back(t >= o.delay ? d.tokens[d.tokens.size() - 1 - std::size_t(o.delay)] : -1);
      } else {
        const std::int32_t token =
            gen.uniform() < o.blank ? 0 : std::int32_t(1 + gen.below(std::uint64_t(o.vocab - 1)));
        if (token != 0) held = token;
        d.tokens.push_back(token);
        d.targets.push_back(held);
      }
    }
  }
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  std::printf("task %s (vocab %d, delay %d, blank %.2f), T %d, batch %d; layer %s H=%d N=%d\n", o.task.c_str(), o.vocab,
              o.delay, o.blank, o.time, o.batch, o.layer.c_str(), o.dim, o.state);
  namespace layers = linrec::layers;
  if (o.layer == "s4d")
    return linrec_example::run_token_task(
        o, [&](linrec::rng& gen) { return layers::s4d<float>({.dim = o.dim, .state = o.state}, gen, "s4d."); },
        make_batch);
  return linrec_example::run_token_task(
      o,
      [&](linrec::rng& gen) { return layers::selective_ssm<float>({.dim = o.dim, .state = o.state}, gen, "mixer."); },
      make_batch);
}
