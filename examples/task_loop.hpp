#pragma once
// What the synthetic-task examples (lru_task, ssm_task, rwkv_task) share, so that one copy of
// each serves all three: the flags every task takes and their parsing with CLI11, the batch
// type, the scoring, and the train-then-evaluate loop; lru_task and ssm_task also share their
// model (token_model). Each task keeps its own data.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numbers>
#include <sstream>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "linrec/linrec.hpp"

namespace linrec_example {

// Flags every task takes, with the defaults all three have always had.
struct common_options {
  int batch = 32, threads = 2;
  double target = 0.95;
  unsigned long seed = 1;
};

// The flags of lru_task and ssm_task, whose model is token_model.
struct token_options : common_options {
  int delay = 8, vocab = 8, time = 64, dim = 32;
};

// A floating-point flag's check: a value in [lo, hi] ((lo, hi] with open_low). CLI::Range alone
// would let "nan" through, as every comparison with NaN is false, so finiteness is checked
// first.
inline CLI::Validator real_in(double lo, double hi, bool open_low = false) {
  std::ostringstream range;
  range << (open_low ? "(" : "[") << lo << ", " << hi << "]";
  const std::string text = range.str();
  return CLI::Validator(
      [=](std::string& input) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(input, value)) return "Value " + input + " is not a number";
        if (!std::isfinite(value) || value < lo || value > hi || (open_low && value == lo))
          return "Value " + input + " not in range " + text;
        return {};
      },
      "in " + text);
}

inline void add_common_flags(CLI::App& app, common_options& o) {
  app.add_option("--batch", o.batch, "sequences per batch")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  // CLI11 2.1's conversion to unsigned accepts "-1" and saturates a number too large, as strtoul
  // does (and the hand-written parsers did): a seed must be digits that fit.
  const CLI::Validator whole(
      [](std::string& input) -> std::string {
        unsigned long value = 0;
        const auto [end, error] = std::from_chars(input.data(), input.data() + input.size(), value);
        if (error == std::errc{} && end == input.data() + input.size()) return {};
        return "Value " + input + " is not a whole number in [0, " + std::to_string(ULONG_MAX) + "]";
      },
      "WHOLE");
  app.add_option("--seed", o.seed, "seed of the initialisation and the data")->capture_default_str()->check(whole);
  app.add_option("--target", o.target, "held-out accuracy that counts as success (exit 0)")
      ->capture_default_str()
      ->check(real_in(0.0, 1.0));
  app.add_option("--threads", o.threads, "OpenMP threads")->capture_default_str()->check(CLI::Range(1, 1024));
}

// --steps and --lr. Where their defaults depend on other flags, steps_default and lr_default
// say what they are; left empty, --help shows the values steps and lr hold.
inline void add_schedule_flags(CLI::App& app, int& steps, double& lr, const std::string& steps_default = "",
                               const std::string& lr_default = "") {
  const auto note = [](const std::string& d) { return d.empty() ? d : " (default: " + d + ")"; };
  auto* s = app.add_option("--steps", steps, "optimizer steps" + note(steps_default))->check(CLI::Range(1, 10'000'000));
  auto* l =
      app.add_option("--lr", lr, "peak learning rate (AdamW)" + note(lr_default))->check(real_in(0.0, 10.0, true));
  if (steps_default.empty()) s->capture_default_str();
  if (lr_default.empty()) l->capture_default_str();
}

inline void add_token_flags(CLI::App& app, token_options& o) {
  app.add_option("--delay", o.delay, "delayed recall: how many steps back the answer lies (less than --time)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--vocab", o.vocab, "number of distinct tokens")->capture_default_str()->check(CLI::Range(2, 1 << 16));
  app.add_option("--time", o.time, "sequence length T")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--dim", o.dim, "model width H")->capture_default_str()->check(CLI::Range(1, 4096));
  add_common_flags(app, o);
}

// Parses the flags. --help prints the options and exits 0; an unknown flag or a bad value
// prints one line and exits 2, the status of the examples' earlier hand-written parsers
// (CLI11's own message adds a second line and exits with a code per error kind). `check` runs
// after parsing, for conditions between flags: it throws CLI::ValidationError.
template <class Check>
void parse_flags(CLI::App& app, int argc, char** argv, Check check) {
  app.failure_message([](const CLI::App* failed, const CLI::Error& e) {
    return failed->get_name() + ": " + e.what() + " (try --help)\n";
  });
  try {
    app.parse(argc, argv);
    check();
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e) == 0 ? 0 : 2);
  }
}

// Token ids and targets of one batch, [batch, time] row-major; a target of −1 is not scored.
struct batch_data {
  std::vector<std::int32_t> tokens, targets;
};

// (correct, counted) over positions with a target.
inline std::pair<long, long> score(const linrec::Tensor& logits, const std::vector<std::int32_t>& targets) {
  const long vocab = logits.shape().back();
  long correct = 0, counted = 0;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    if (targets[i] < 0) continue;
    const float* row = logits.data() + long(i) * vocab;
    long best = 0;
    for (long v = 1; v < vocab; ++v)
      if (row[v] > row[best]) best = v;
    correct += best == targets[i];
    ++counted;
  }
  return {correct, counted};
}

struct loop_settings {
  int steps = 1;
  double lr = 1e-3;
  int warmup = 0;           // linear warm-up steps (0: none)
  double target = 0.95;     // held-out accuracy reported as reached
  const char* indent = "";  // before each progress line
  std::string label = "";   // before "held-out accuracy"
  const char* unit = "positions";
};

// Trains with `opt` for s.steps steps, each on a fresh batch: the learning rate warms up
// linearly over s.warmup steps, then decays along a cosine to 5 % of s.lr; the loss is the
// cross entropy over the positions with a target. Prints the loss and batch accuracy at step 1
// and every 50 steps, then scores 20 fresh batches; returns that held-out accuracy.
// make_batch() → batch_data; forward(tape, batch) → the logits [batch, time, vocab].
template <class MakeBatch, class Forward>
double train_and_evaluate(linrec::AdamW& opt, const loop_settings& s, MakeBatch make_batch, Forward forward) {
  const auto start = std::chrono::steady_clock::now();
  const auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  for (int step = 1; step <= s.steps; ++step) {
    const double warm = std::min(1.0, double(step) / double(std::max(1, s.warmup)));
    opt.set_lr(s.lr * warm * (0.05 + 0.95 * 0.5 * (1 + std::cos(std::numbers::pi * step / s.steps))));
    const batch_data data = make_batch();
    linrec::Tape tape;
    const linrec::Var logits = forward(tape, data);
    const auto [correct, counted] = score(logits.value(), data.targets);
    const auto loss = linrec::softmax_cross_entropy(tape, logits, data.targets);
    const float loss_value = loss.item();
    opt.zero_grad();
    tape.backward(loss);
    opt.step();
    if (step % 50 == 0 || step == 1) {
      std::printf("%sstep %5d  loss %.4f  batch accuracy %5.1f%%  %.1f s\n", s.indent, step, loss_value,
                  100.0 * double(correct) / double(counted), seconds());
      std::fflush(stdout);
    }
  }
  long correct = 0, counted = 0;
  for (int i = 0; i < 20; ++i) {
    const batch_data data = make_batch();
    linrec::Tape eval(linrec::grad_mode::off);
    const auto [c, n] = score(forward(eval, data).value(), data.targets);
    correct += c;
    counted += n;
  }
  const double accuracy = double(correct) / double(counted);
  std::printf("%sheld-out accuracy %.2f%% over %ld %s (target %.0f%%) in %.1f s: %s\n", s.label.c_str(), 100 * accuracy,
              counted, s.unit, 100 * s.target, seconds(), accuracy >= s.target ? "reached" : "NOT reached");
  return accuracy;
}

// The model of lru_task and ssm_task: embedding [V,H] → mixer → GELU → linear read-out [H,V].
// The mixer is any layer with parameters() and forward(tape, x, state) → (y, state), built
// last from the same generator, so a seed gives the weights it gave before this was shared.
template <class Mixer>
struct token_model {
  linrec::Parameter embedding, readout, readout_bias;
  Mixer mixer;
  template <class MakeMixer>
  token_model(int vocab, int dim, linrec::rng& gen, MakeMixer make_mixer)
      : embedding(linrec::Tensor::randn({vocab, dim}, gen), "embedding"),
        readout(linrec::Tensor::randn({dim, vocab}, gen, 0.0, 1.0 / std::sqrt(double(dim))), "head.weight"),
        readout_bias(linrec::Tensor::zeros({vocab}), "head.bias"),
        mixer(make_mixer(gen)) {}
  std::vector<linrec::Parameter> parameters() const {
    auto p = mixer.parameters();
    p.insert(p.end(), {embedding, readout, readout_bias});
    return p;
  }
  linrec::Var logits(linrec::Tape& tape, const batch_data& d, int batch, int time) const {
    const auto x = linrec::embedding(tape, embedding, d.tokens, linrec::Shape{batch, time});
    const auto y = mixer.forward(tape, x, {}).first;
    return linrec::linear(tape, linrec::gelu(tape, y), readout, readout_bias);
  }
};

// lru_task's and ssm_task's run once the flags are parsed: a token_model from --seed, trained
// with AdamW (no weight decay) on make_batch(o, gen) and evaluated by train_and_evaluate.
// Options: common_options with vocab, dim, time, steps and lr. Returns the exit status: 0 when
// the held-out accuracy reaches --target.
template <class Options, class MakeMixer, class MakeBatch>
int run_token_task(const Options& o, MakeMixer make_mixer, MakeBatch make_batch) {
  omp_set_num_threads(o.threads);
  linrec::rng gen(o.seed);
  const token_model<std::invoke_result_t<MakeMixer&, linrec::rng&>> net(o.vocab, o.dim, gen, make_mixer);
  linrec::AdamW opt(net.parameters(), {.lr = o.lr, .weight_decay = 0.0});
  const double accuracy = train_and_evaluate(
      opt, {.steps = o.steps, .lr = o.lr, .target = o.target}, [&] { return make_batch(o, gen); },
      [&](linrec::Tape& tape, const batch_data& d) { return net.logits(tape, d, o.batch, o.time); });
  return accuracy >= o.target ? 0 : 1;
}

}  // namespace linrec_example
