#pragma once
// One set of cases for every communicator (the threads of tests/thread_communicator.hpp in
// test_dist, MPI processes in test_dist_mpi): the collectives against values every rank can
// compute itself, the bucketed all-reduce on buffers that straddle buckets, and the trainer —
// N ranks × batch B against one process × batch N·B (per-step losses, evaluation and final
// parameters within 1e-6 relative), replicas identical after every step, checkpoints that move
// between rank counts.
//
// The cases do not assert (Catch2 is not thread-safe, and an MPI rank that stopped at a failed
// REQUIRE would leave the others waiting in a collective): they record every check in a
// `report`, which the test program asserts on, rank by rank.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "linrec/dist/any_communicator.hpp"
#include "linrec/dist/buckets.hpp"
#include "linrec/train/trainer.hpp"

namespace linrec::dist_conformance {

struct report {
  int checks = 0;
  std::vector<std::string> failures;
  std::vector<std::string> notes;  // measurements worth printing (largest differences)

  void expect(bool ok, const std::string& what) {
    ++checks;
    if (!ok) failures.push_back(what);
  }
};

// |a − b| ≤ tol · max(|a|, |b|, floor): relative, with a floor for values near zero.
inline bool close(double a, double b, double tol, double floor = 1e-3) {
  return std::abs(a - b) <= tol * std::max({std::abs(a), std::abs(b), floor});
}

// A handle to a communicator the caller owns (the trainer takes a shared one).
template <dist::communicator C>
dist::any_communicator borrow(C& comm) {
  return dist::any_communicator(std::shared_ptr<C>(std::shared_ptr<C>(), &comm));
}

// Values rank r contributes at index i: distinct per rank and index, known to every rank.
inline double contribution(int rank, std::size_t i) { return std::sin(double(i) * 0.37 + rank) * (rank + 1.5); }

template <dist::communicator C>
void collectives(C& comm, report& out) {
  const int n = comm.size(), r = comm.rank();
  for (const std::size_t length : {std::size_t(1), std::size_t(7), std::size_t(1000)}) {
    std::vector<double> d(length), expected(length, 0.0);
    std::vector<float> f(length);
    for (std::size_t i = 0; i < length; ++i) {
      d[i] = contribution(r, i);
      f[i] = float(contribution(r, i));
      for (int k = 0; k < n; ++k) expected[i] += contribution(k, i);
    }
    std::vector<double> dm = d;
    comm.all_reduce_sum(std::span<double>(d));
    comm.all_reduce_mean(std::span<double>(dm));
    comm.all_reduce_sum(std::span<float>(f));
    double worst_d = 0, worst_m = 0, worst_f = 0;
    for (std::size_t i = 0; i < length; ++i) {
      worst_d = std::max(worst_d, std::abs(d[i] - expected[i]));
      worst_m = std::max(worst_m, std::abs(dm[i] - expected[i] / n));
      worst_f = std::max(worst_f, std::abs(double(f[i]) - expected[i]));
    }
    out.expect(worst_d <= 1e-12 * n,
               "all_reduce_sum<double> of " + std::to_string(length) + " is off by " + std::to_string(worst_d));
    out.expect(worst_m <= 1e-12 * n,
               "all_reduce_mean<double> of " + std::to_string(length) + " is off by " + std::to_string(worst_m));
    out.expect(worst_f <= 1e-5 * n,
               "all_reduce_sum<float> of " + std::to_string(length) + " is off by " + std::to_string(worst_f));
  }
  for (int root = 0; root < n; ++root) {
    std::vector<double> x(5);
    std::vector<std::byte> bytes(3);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = contribution(r, i);
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = std::byte(r * 16 + int(i));
    comm.broadcast(std::span<double>(x), root);
    comm.broadcast(std::span<std::byte>(bytes), root);
    bool same = true;
    for (std::size_t i = 0; i < x.size(); ++i) same = same && x[i] == contribution(root, i);
    for (std::size_t i = 0; i < bytes.size(); ++i) same = same && bytes[i] == std::byte(root * 16 + int(i));
    out.expect(same, "broadcast from root " + std::to_string(root) + " did not deliver root's values");
  }
  comm.barrier();
}

// Buffers of uneven lengths (one longer than a bucket, some empty) in small buckets: every
// element summed exactly once, the mean scaled once, as many collectives as buckets.
template <dist::communicator C>
void buckets(C& comm, report& out) {
  const int n = comm.size(), r = comm.rank();
  const std::vector<std::size_t> lengths{3, 0, 250, 1, 97, 0, 64};
  std::size_t total = 0;
  for (const std::size_t l : lengths) total += l;
  for (const bool mean : {false, true}) {
    std::vector<std::vector<float>> storage;
    std::vector<std::span<float>> spans;
    std::size_t at = 0;
    for (const std::size_t l : lengths) {
      storage.emplace_back(l);
      for (std::size_t i = 0; i < l; ++i) storage.back()[i] = float(contribution(r, at + i));
      at += l;
    }
    for (auto& s : storage) spans.emplace_back(s);
    dist::bucketed_all_reduce<float> reduce(64 * sizeof(float));  // 64 elements per bucket
    if (mean)
      reduce.mean(comm, std::span<const std::span<float>>(spans));
    else
      reduce.sum(comm, std::span<const std::span<float>>(spans));
    double worst = 0;
    at = 0;
    for (const auto& s : storage) {
      for (std::size_t i = 0; i < s.size(); ++i) {
        double expected = 0;
        for (int k = 0; k < n; ++k) expected += double(float(contribution(k, at + i)));
        if (mean) expected /= n;
        worst = std::max(worst, std::abs(double(s[i]) - expected));
      }
      at += s.size();
    }
    const std::size_t calls = n == 1 ? 0 : (total + 63) / 64;
    out.expect(worst <= 1e-5 * n,
               std::string("bucketed ") + (mean ? "mean" : "sum") + " is off by " + std::to_string(worst));
    out.expect(reduce.calls() == calls, "bucketed all-reduce made " + std::to_string(reduce.calls()) +
                                            " collectives for " + std::to_string(total) +
                                            " elements in buckets of 64, expected " + std::to_string(calls));
  }
}

inline std::vector<std::uint8_t> text_for_training(std::size_t n) {
  rng gen(11);
  std::vector<std::uint8_t> text(n);
  for (auto& c : text) c = static_cast<std::uint8_t>('a' + gen.below(20));
  return text;
}

inline train::train_config training_case(int version, bool carry, std::int64_t accum, std::int64_t batch) {
  train::train_config c;
  c.model = {.version = version, .vocab = 256, .dim = 16, .layers = 2, .head_size = 8};
  c.ctx = 12;
  c.batch = batch;
  c.accum = accum;
  c.warmup = 2;
  c.steps = 6;
  c.carry_state = carry;
  c.eval_tokens = 300;
  return c;
}

// Largest |a − b| / max(1, |a|) over every parameter element: absolute for the O(1) values a
// model's parameters mostly are, relative for larger ones. (Relative to each tensor's norm is
// no bound: a tensor that starts at zero, like a LoRA factor, has a tiny norm for its first
// steps, and AdamW moves each element by about lr whatever its gradient's size, so a
// difference of rounding in a gradient near zero is a visible part of such a small tensor.)
inline double parameter_difference(const std::vector<Parameter>& a, const std::vector<Parameter>& b) {
  double worst = 0;
  for (std::size_t p = 0; p < a.size(); ++p)
    for (index_t i = 0; i < a[p].value().numel(); ++i) {
      const double x = a[p].value().data()[i], y = b[p].value().data()[i];
      worst = std::max(worst, std::abs(x - y) / std::max(1.0, std::abs(x)));
    }
  return worst;
}

// N ranks × batch 2 against one process × batch 2N on every rank, step by step; then a
// checkpoint taken at step 3 resumes on N ranks (bitwise the same continuation) and on one
// process with the global batch (the reference's continuation, to 1e-6).
template <dist::communicator C>
void trainer_matches_one_process(C& comm, report& out, int version, bool carry, std::int64_t accum) {
  const std::string name = "RWKV-" + std::to_string(version) + (carry ? " carried state" : "") + " accum " +
                           std::to_string(accum) + ", " + std::to_string(comm.size()) + " ranks: ";
  try {
    const auto text = text_for_training(5000);
    const std::span<const std::uint8_t> train_text(text.data(), 4000), validation(text.data() + 4000, 1000);
    const auto config = training_case(version, carry, accum, 2);
    auto global = config;
    global.batch = config.batch * comm.size();
    train::trainer reference(global, train_text, cpu{1});
    train::trainer parallel(config, train_text, cpu{1}, {}, borrow(comm));
    out.expect(parameter_difference(reference.model().parameters(), parallel.model().parameters()) == 0,
               name + "initial parameters differ from the one-process run's");
    std::vector<double> losses;
    double worst_loss = 0;
    std::optional<io::tensor_file> at_step_3;
    for (int s = 1; s <= config.steps; ++s) {
      const double a = reference.step().loss, b = parallel.step().loss;
      losses.push_back(b);
      worst_loss = std::max(worst_loss, std::abs(a - b) / std::abs(a));
      parallel.check_replicas();  // throws on a difference: recorded below
      if (s == 3) at_step_3 = parallel.checkpoint();
    }
    // Two ranks of random windows: bit for bit. The one process splits its 2 × 2 rows into two
    // row groups of 2 and adds their gradients as a tree, i.e. exactly what the ranks' all-
    // reduce adds; its shares (1/2 of the rows) and the ranks' mean (× 1/2) are powers of two,
    // which scale exactly. Carried state: the one process runs its 4 rows in one pass (no row
    // groups), so its sums are grouped differently: rounding. Three ranks: 1/3 rounds, and
    // AdamW turns a rounding-level gradient near zero into a step of up to about lr.
    const bool exact = comm.size() <= 2 && !carry;
    const double tolerance = exact ? 0.0 : comm.size() <= 2 ? 1e-6 : 1e-5;
    out.expect(worst_loss <= (exact ? 0.0 : 1e-6),
               name + "per-step loss differs by " + std::to_string(worst_loss) + " (relative)");
    const double worst_param = parameter_difference(reference.model().parameters(), parallel.model().parameters());
    out.expect(worst_param <= tolerance, name + "final parameters differ by " + std::to_string(worst_param));
    const double eval_a = reference.evaluate(validation), eval_b = parallel.evaluate(validation);
    out.expect(close(eval_a, eval_b, 1e-6),
               name + "evaluation " + std::to_string(eval_b) + " vs one process " + std::to_string(eval_a));
    out.expect(parallel.progress().tokens == reference.progress().tokens, name + "token counts differ");
    const double stateful_a = reference.evaluate_stateful(validation),
                 stateful_b = parallel.evaluate_stateful(validation);
    out.expect(close(stateful_a, stateful_b, 1e-6), name + "stateful evaluation " + std::to_string(stateful_b) +
                                                        " vs one process " + std::to_string(stateful_a));
    std::ostringstream note;
    note << name << "largest difference from one process: loss " << worst_loss << " (relative), parameters "
         << worst_param << " (|a - b| / max(1, |a|))";
    out.notes.push_back(note.str());

    // The same ranks resume bitwise; one process with the global batch resumes the trajectory.
    train::trainer same_ranks(config, train_text, cpu{1}, {}, borrow(comm));
    same_ranks.restore(*at_step_3);
    train::trainer one_process(global, train_text, cpu{1});
    one_process.restore(*at_step_3);
    double worst_resumed = 0;
    bool bitwise = true;
    for (int s = 4; s <= config.steps; ++s) {
      const double a = same_ranks.step().loss, b = one_process.step().loss;
      bitwise = bitwise && a == losses[std::size_t(s - 1)];
      worst_resumed = std::max(worst_resumed, std::abs(b - losses[std::size_t(s - 1)]) / std::abs(b));
    }
    out.expect(bitwise, name + "a checkpoint resumed on the same ranks left the trajectory");
    out.expect(worst_resumed <= 1e-6, name + "a checkpoint of " + std::to_string(comm.size()) +
                                          " ranks resumed on one process differs by " + std::to_string(worst_resumed));
    out.expect(parameter_difference(same_ranks.model().parameters(), parallel.model().parameters()) == 0,
               name + "resumed parameters are not the uninterrupted run's");

    // Another global batch is refused, naming it.
    if (comm.size() > 1) {
      auto other = config;
      other.batch = config.batch + 1;
      train::trainer wrong(other, train_text, cpu{1}, {}, borrow(comm));
      std::string message;
      try {
        wrong.restore(*at_step_3);
      } catch (const Error& e) {
        message = e.what();
      }
      out.expect(message.find("global batch") != std::string::npos,
                 name + "a resume with another global batch was not refused by name: '" + message + "'");
    }
  } catch (const std::exception& e) {
    out.expect(false, name + "threw: " + e.what());
  }
}

template <dist::communicator C>
report all_cases(C& comm) {
  report out;
  collectives(comm, out);
  buckets(comm, out);
  trainer_matches_one_process(comm, out, 4, false, 1);
  trainer_matches_one_process(comm, out, 6, false, 2);
  trainer_matches_one_process(comm, out, 6, true, 2);
  return out;
}

}  // namespace linrec::dist_conformance
