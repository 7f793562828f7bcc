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
// when it reaches --target.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "linrec/layers/lru.hpp"
#include "linrec/linrec.hpp"

namespace {

struct options {
  int steps = 600, delay = 8, vocab = 8, time = 64, batch = 32, dim = 32, state = 64, threads = 2;
  double lr = 3e-3, target = 0.95;
  unsigned long seed = 1;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h" || i + 1 >= argc) {
      std::printf("usage: lru_task [--steps N] [--delay D] [--vocab V] [--time T] [--batch B] [--dim H] [--state P]\n"
                  "                [--lr LR] [--seed S] [--target ACC] [--threads N]\n");
      std::exit(flag == "--help" || flag == "-h" ? 0 : 2);
    }
    const char* value = argv[++i];
    if (flag == "--steps") o.steps = std::atoi(value);
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
  return o;
}

// Random tokens; target[t] = token[t − delay], −1 (ignored) before the first full delay.
struct batch_data {
  std::vector<std::int32_t> tokens, targets;
};
batch_data make_batch(const options& o, linrec::rng& gen) {
  batch_data d;
  for (int b = 0; b < o.batch; ++b)
    for (int t = 0; t < o.time; ++t) {
      d.tokens.push_back(std::int32_t(gen.below(std::uint64_t(o.vocab))));
      d.targets.push_back(t >= o.delay ? d.tokens[d.tokens.size() - 1 - std::size_t(o.delay)] : -1);
    }
  return d;
}

struct model {
  linrec::Parameter embedding, readout, readout_bias;
  linrec::layers::lru<float> lru;
  model(const options& o, linrec::rng& gen)
      : embedding(linrec::Tensor::randn({o.vocab, o.dim}, gen), "embedding"),
        readout(linrec::Tensor::randn({o.dim, o.vocab}, gen, 0.0, 1.0 / std::sqrt(double(o.dim))), "head.weight"),
        readout_bias(linrec::Tensor::zeros({o.vocab}), "head.bias"),
        lru({.dim = o.dim, .state = o.state}, gen, "lru.") {}
  std::vector<linrec::Parameter> parameters() const {
    auto p = lru.parameters();
    p.insert(p.end(), {embedding, readout, readout_bias});
    return p;
  }
  linrec::Var logits(linrec::Tape& tape, const batch_data& d, const options& o) const {
    const auto x = linrec::embedding(tape, embedding, d.tokens, linrec::Shape{o.batch, o.time});
    const auto [y, state] = lru.forward(tape, x, {});
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
  std::printf("delayed recall: vocab %d, delay %d, T %d, batch %d; LRU H=%d P=%d; chance %.1f%%\n", o.vocab, o.delay,
              o.time, o.batch, o.dim, o.state, 100.0 / o.vocab);
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
