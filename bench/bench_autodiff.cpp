// Tape overhead: one forward+backward step of a 4-layer MLP (512 → 512 → 512 → 512 → 10,
// ReLU, softmax cross-entropy, batch 64) through the autodiff tape vs the same math written
// directly with Eigen. Argument: Eigen/OpenMP threads. `ratio` runs the two alternately in
// one loop (so machine noise hits both alike) and reports tape_over_eigen = Σ t_tape / Σ t_eigen.
#include <benchmark/benchmark.h>

#include <chrono>
#include <vector>

#include "linrec/autodiff/autodiff.hpp"
#include "linrec/tensor/eigen.hpp"  // Eigen, and the views the direct version uses

namespace {

using namespace linrec;
constexpr index_t batch = 64, input = 512, hidden = 512, classes = 10, layers = 4;
using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowVector = Eigen::Matrix<float, 1, Eigen::Dynamic>;

struct problem {
  Tensor x;
  std::vector<std::int32_t> labels;
  std::vector<Parameter> weights, biases;
  problem() {
    rng g(1);
    x = Tensor::randn({batch, input}, g);
    for (index_t i = 0; i < batch; ++i) labels.push_back(static_cast<std::int32_t>(g.below(classes)));
    for (index_t l = 0; l < layers; ++l) {
      const index_t in = l == 0 ? input : hidden, out = l == layers - 1 ? classes : hidden;
      weights.emplace_back(Tensor::randn({in, out}, g, 0, 1.0 / std::sqrt(double(in))));
      biases.emplace_back(Tensor::randn({out}, g, 0, 0.1));
    }
  }
};

// The tape: ops, backward, gradients accumulated into the parameters (zeroed first).
float tape_step(problem& p) {
  for (index_t l = 0; l < layers; ++l) {
    p.weights[l].zero_grad();
    p.biases[l].zero_grad();
  }
  Tape tape;
  Var h = constant(p.x);
  for (index_t l = 0; l < layers; ++l) {
    h = linear(tape, h, p.weights[l], p.biases[l]);
    if (l + 1 < layers) h = relu(tape, h);
  }
  auto loss = softmax_cross_entropy(tape, h, p.labels);
  tape.backward(loss);
  return loss.item();
}

// The same math by hand: activations kept for backward, gradients written into buffers.
struct eigen_step {
  std::vector<Matrix> weights, pre, act, dweights;
  std::vector<RowVector> biases, dbiases;
  Matrix x, delta, dact;
  explicit eigen_step(const problem& p) {
    x = as_matrix(p.x);
    for (index_t l = 0; l < layers; ++l) {
      weights.push_back(as_matrix(p.weights[l].value()));
      biases.push_back(as_matrix(p.biases[l].value(), 1, p.biases[l].value().numel()));
      dweights.push_back(Matrix(weights.back().rows(), weights.back().cols()));
      dbiases.push_back(RowVector(biases.back().cols()));
    }
    pre.resize(layers);
    act.resize(layers);
  }
  float operator()(const std::vector<std::int32_t>& labels) {
    const Matrix* in = &x;
    for (index_t l = 0; l < layers; ++l) {
      pre[l].noalias() = *in * weights[l];
      pre[l].rowwise() += biases[l];
      if (l + 1 < layers) {
        act[l] = pre[l].cwiseMax(0.0f);
        in = &act[l];
      }
    }
    // softmax cross-entropy: loss = mean(lse − z[y]), dz = (softmax − onehot)/N
    Matrix& z = pre[layers - 1];
    delta.resize(z.rows(), z.cols());
    double loss = 0;
    for (index_t i = 0; i < batch; ++i) {
      const float m = z.row(i).maxCoeff();
      delta.row(i) = (z.row(i).array() - m).exp().matrix();
      const float s = delta.row(i).sum();
      loss += std::log(s) + m - z(i, labels[i]);
      delta.row(i) /= s * batch;
      delta(i, labels[i]) -= 1.0f / batch;
    }
    for (index_t l = layers - 1; l >= 0; --l) {
      const Matrix& a_in = l == 0 ? x : act[l - 1];
      dweights[l].noalias() = a_in.transpose() * delta;
      dbiases[l] = delta.colwise().sum();
      if (l == 0) break;
      dact.noalias() = delta * weights[l].transpose();
      delta = (pre[l - 1].array() > 0.0f).select(dact, 0.0f);
    }
    return static_cast<float>(loss / batch);
  }
};

void tape(benchmark::State& state) {
  Eigen::setNbThreads(static_cast<int>(state.range(0)));
  problem p;
  for (auto _ : state) benchmark::DoNotOptimize(tape_step(p));
  state.SetItemsProcessed(state.iterations() * batch);
}

void eigen(benchmark::State& state) {
  Eigen::setNbThreads(static_cast<int>(state.range(0)));
  problem p;
  eigen_step step(p);
  for (auto _ : state) benchmark::DoNotOptimize(step(p.labels));
  state.SetItemsProcessed(state.iterations() * batch);
}

void ratio(benchmark::State& state) {
  Eigen::setNbThreads(static_cast<int>(state.range(0)));
  problem p;
  eigen_step step(p);
  // Both compute the same loss and gradients.
  const float loss_tape = tape_step(p), loss_eigen = step(p.labels);
  if (std::abs(loss_tape - loss_eigen) > 1e-4f * std::abs(loss_eigen)) state.SkipWithError("losses differ");
  if (!as_matrix(p.weights[0].grad()).isApprox(step.dweights[0], 1e-4f)) state.SkipWithError("gradients differ");
  double t_tape = 0, t_eigen = 0;
  using clock = std::chrono::steady_clock;
  for (auto _ : state) {
    auto t0 = clock::now();
    benchmark::DoNotOptimize(tape_step(p));
    auto t1 = clock::now();
    benchmark::DoNotOptimize(step(p.labels));
    auto t2 = clock::now();
    t_tape += std::chrono::duration<double>(t1 - t0).count();
    t_eigen += std::chrono::duration<double>(t2 - t1).count();
  }
  state.counters["tape_over_eigen"] = t_tape / t_eigen;
  state.counters["tape_ms"] = 1e3 * t_tape / static_cast<double>(state.iterations());
  state.counters["eigen_ms"] = 1e3 * t_eigen / static_cast<double>(state.iterations());
}

}  // namespace

BENCHMARK(tape)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(eigen)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(ratio)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK_MAIN();
