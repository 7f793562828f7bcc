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
// when it reaches --target.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <numbers>
#include <optional>
#include <string>
#include <vector>

#include "linrec/layers/diag_ssm.hpp"
#include "linrec/linrec.hpp"

namespace {

struct options {
  std::string layer = "s4d", task;
  int steps = 0, delay = 8, vocab = 8, time = 64, batch = 32, dim = 32, state = 0, threads = 2;  // 0: per layer
  double lr = 0, target = 0.95, blank = 0.8;
  unsigned long seed = 1;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h" || i + 1 >= argc) {
      std::printf("usage: ssm_task [--layer s4d|selective] [--task delay|hold] [--steps N] [--delay D] [--blank P]\n"
                  "                [--vocab V] [--time T] [--batch B] [--dim H] [--state N] [--lr LR] [--seed S]\n"
                  "                [--target ACC] [--threads N]\n");
      std::exit(flag == "--help" || flag == "-h" ? 0 : 2);
    }
    const char* value = argv[++i];
    if (flag == "--layer") o.layer = value;
    else if (flag == "--task") o.task = value;
    else if (flag == "--blank") o.blank = std::atof(value);
    else if (flag == "--steps") o.steps = std::atoi(value);
    else if (flag == "--delay") o.delay = std::atoi(value);
    else if (flag == "--vocab") o.vocab = std::atoi(value);
    else if (flag == "--time") o.time = std::atoi(value);
    else if (flag == "--batch") o.batch = std::atoi(value);
    else if (flag == "--dim") o.dim = std::atoi(value);
    else if (flag == "--state") o.state = std::atoi(value);
    else if (flag == "--threads") o.threads = std::atoi(value);
    else if (flag == "--lr") o.lr = std::atof(value);
    else if (flag == "--target") o.target = std::atof(value);
    else if (flag == "--seed") o.seed = std::strtoul(value, nullptr, 10);
    else {
      std::fprintf(stderr, "unknown flag %s (try --help)\n", flag.c_str());
      std::exit(2);
    }
  }
  if (o.task.empty()) o.task = o.layer == "selective" ? "hold" : "delay";
  const bool selective = o.layer == "selective";
  if (o.state == 0) o.state = selective ? 16 : 64;
  if (o.steps == 0) o.steps = selective ? 300 : 250;
  if (o.lr == 0) o.lr = selective ? 3e-3 : 6e-3;
  if ((o.layer != "s4d" && o.layer != "selective") || (o.task != "delay" && o.task != "hold")) {
    std::fprintf(stderr, "--layer must be s4d or selective, --task delay or hold\n");
    std::exit(2);
  }
  return o;
}

// delay: random tokens, target[t] = token[t − delay] (−1, ignored, before the first delay).
// hold: token 0 is the blank (probability --blank), 1..V−1 data; target[t] = the latest data
// token at or before t (−1 before the first one).
struct batch_data {
  std::vector<std::int32_t> tokens, targets;
};
batch_data make_batch(const options& o, linrec::rng& gen) {
  batch_data d;
  for (int b = 0; b < o.batch; ++b) {
    std::int32_t held = -1;
    for (int t = 0; t < o.time; ++t) {
      if (o.task == "delay") {
        d.tokens.push_back(std::int32_t(gen.below(std::uint64_t(o.vocab))));
        d.targets.push_back(t >= o.delay ? d.tokens[d.tokens.size() - 1 - std::size_t(o.delay)] : -1);
      } else {
        const std::int32_t token = gen.uniform() < o.blank ? 0 : std::int32_t(1 + gen.below(std::uint64_t(o.vocab - 1)));
        if (token != 0) held = token;
        d.tokens.push_back(token);
        d.targets.push_back(held);
      }
    }
  }
  return d;
}

struct model {
  linrec::Parameter embedding, readout, readout_bias;
  std::optional<linrec::layers::s4d<float>> s4d;
  std::optional<linrec::layers::selective_ssm<float>> selective;
  model(const options& o, linrec::rng& gen)
      : embedding(linrec::Tensor::randn({o.vocab, o.dim}, gen), "embedding"),
        readout(linrec::Tensor::randn({o.dim, o.vocab}, gen, 0.0, 1.0 / std::sqrt(double(o.dim))), "head.weight"),
        readout_bias(linrec::Tensor::zeros({o.vocab}), "head.bias") {
    if (o.layer == "s4d")
      s4d.emplace(linrec::layers::s4d_config{.dim = o.dim, .state = o.state}, gen, "s4d.");
    else
      selective.emplace(linrec::layers::selective_ssm_config{.dim = o.dim, .state = o.state}, gen, "mixer.");
  }
  std::vector<linrec::Parameter> parameters() const {
    auto p = s4d ? s4d->parameters() : selective->parameters();
    p.insert(p.end(), {embedding, readout, readout_bias});
    return p;
  }
  linrec::Var logits(linrec::Tape& tape, const batch_data& d, const options& o) const {
    const auto x = linrec::embedding(tape, embedding, d.tokens, linrec::Shape{o.batch, o.time});
    const auto y = s4d ? s4d->forward(tape, x, {}).first : selective->forward(tape, x, {}).first;
    return linrec::linear(tape, linrec::gelu(tape, y), readout, readout_bias);
  }
};

// (correct, counted) over positions with a target.
std::pair<long, long> score(const linrec::Tensor& logits, const std::vector<std::int32_t>& targets) {
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

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  omp_set_num_threads(o.threads);
  linrec::rng gen(o.seed);
  model net(o, gen);
  linrec::AdamW opt(net.parameters(), {.lr = o.lr, .weight_decay = 0.0});
  std::printf("task %s (vocab %d, delay %d, blank %.2f), T %d, batch %d; layer %s H=%d N=%d\n", o.task.c_str(),
              o.vocab, o.delay, o.blank, o.time, o.batch, o.layer.c_str(), o.dim, o.state);
  const auto start = std::chrono::steady_clock::now();
  for (int step = 1; step <= o.steps; ++step) {
    opt.set_lr(o.lr * (0.05 + 0.95 * 0.5 * (1 + std::cos(std::numbers::pi * step / o.steps))));  // cosine decay
    const auto data = make_batch(o, gen);
    linrec::Tape tape;
    const auto logits = net.logits(tape, data, o);
    const auto [correct, counted] = score(logits.value(), data.targets);
    const auto loss = linrec::softmax_cross_entropy(tape, logits, data.targets);
    const float loss_value = loss.item();
    opt.zero_grad();
    tape.backward(loss);
    opt.step();
    if (step % 50 == 0 || step == 1) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("step %5d  loss %.4f  batch accuracy %5.1f%%  %.1f s\n", step, loss_value, 100.0 * correct / counted,
                  seconds);
      std::fflush(stdout);
    }
  }
  long correct = 0, counted = 0;
  for (int i = 0; i < 20; ++i) {
    const auto data = make_batch(o, gen);
    linrec::Tape eval(linrec::grad_mode::off);
    const auto [c, n] = score(net.logits(eval, data, o).value(), data.targets);
    correct += c;
    counted += n;
  }
  const double accuracy = double(correct) / double(counted);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("held-out accuracy %.2f%% over %ld positions (target %.0f%%) in %.1f s: %s\n", 100 * accuracy, counted,
              100 * o.target, seconds, accuracy >= o.target ? "reached" : "NOT reached");
  return accuracy >= o.target ? 0 : 1;
}
