// Optimizers: SGD / AdamW trajectories against hand-derived values, parameter groups,
// clipping, schedules, gradient accumulation equivalence, state export/import (bitwise
// resume), and a small MLP that learns a synthetic task.
#include <catch2/catch.hpp>
#include <cmath>
#include <iomanip>
#include <vector>

#include "linrec/autodiff/autodiff.hpp"
#include "linrec/optim/optim.hpp"

using namespace linrec;

namespace {
// Set a parameter's gradient by hand (as backward would leave it).
void set_grad(const Parameter& p, std::initializer_list<float> g) {
  p.grad() = Tensor::from_data(p.value().shape(), g);
}
}  // namespace

TEST_CASE("SGD with momentum follows the hand-derived trajectory", "[optim][sgd]") {
  // μ = 0.9, lr = 0.1, p0 = 0, gradients 1, −1, 2:
  //   buf = 1,            p = −0.1
  //   buf = 0.9 − 1 = −0.1, p = −0.1 + 0.01 = −0.09
  //   buf = −0.09 + 2 = 1.91, p = −0.09 − 0.191 = −0.281
  Parameter p(Tensor::zeros({1}), "p");
  SGD opt({p}, {.lr = 0.1, .momentum = 0.9});
  const float grads[] = {1, -1, 2}, expected[] = {-0.1f, -0.09f, -0.281f};
  for (int t = 0; t < 3; ++t) {
    set_grad(p, {grads[t]});
    opt.step();
    CHECK(p.value().item() == Approx(expected[t]).epsilon(1e-6));
  }
}

TEST_CASE("SGD with Nesterov momentum follows the hand-derived trajectory", "[optim][sgd]") {
  // d = g + μ·buf:  t1 buf = 1, d = 1.9, p = −0.19;  t2 buf = −0.1, d = −1.09, p = −0.081;
  //                 t3 buf = 1.91, d = 2 + 1.719 = 3.719, p = −0.4529
  Parameter p(Tensor::zeros({1}), "p");
  SGD opt({p}, {.lr = 0.1, .momentum = 0.9, .nesterov = true});
  const float grads[] = {1, -1, 2}, expected[] = {-0.19f, -0.081f, -0.4529f};
  for (int t = 0; t < 3; ++t) {
    set_grad(p, {grads[t]});
    opt.step();
    CHECK(p.value().item() == Approx(expected[t]).epsilon(1e-6));
  }
}

TEST_CASE("plain SGD with coupled weight decay", "[optim][sgd]") {
  // g' = g + λp: p = 2, g = 0.5, λ = 0.1 → g' = 0.7, p = 2 − 0.1·0.7 = 1.93
  Parameter p(Tensor::full({2}, 2.0f), "p");
  SGD opt({p}, {.lr = 0.1, .weight_decay = 0.1});
  set_grad(p, {0.5f, -0.5f});
  opt.step();
  CHECK(p.value().at({0}) == Approx(1.93f).epsilon(1e-6));
  CHECK(p.value().at({1}) == Approx(2.03f).epsilon(1e-6));  // g' = −0.5 + 0.2 = −0.3
}

TEST_CASE("AdamW follows the hand-derived trajectory", "[optim][adamw]") {
  // β1 = 0.9, β2 = 0.999, ε = 1e-8, lr = 0.01, λ = 0.1, p0 = 0.5, gradients 1, −1, 2.
  //  t1: m = 0.1, v = 0.001, m̂ = 1, v̂ = 1          → p1 = p0 − 0.01(1/(1+ε) + 0.1 p0)
  //  t2: m = −0.01, v = 0.001999, m̂ = −1/19, v̂ = 1 → p2 = p1 − 0.01(−(1/19)/(1+ε) + 0.1 p1)
  //  t3: m = 0.191, v = 0.005997001, m̂ = 0.191/0.271, v̂ = 0.005997001/0.002997001
  //                                                 → p3 = p2 − 0.01(m̂/(√v̂+ε) + 0.1 p2)
  const double eps = 1e-8;
  const double p1 = 0.5 - 0.01 * (1 / (1 + eps) + 0.1 * 0.5);
  const double p2 = p1 - 0.01 * (-(1.0 / 19) / (1 + eps) + 0.1 * p1);
  const double m3 = 0.191 / 0.271, v3 = 0.005997001 / 0.002997001;
  const double p3 = p2 - 0.01 * (m3 / (std::sqrt(v3) + eps) + 0.1 * p2);
  CHECK(p3 == Approx(0.48406485766).epsilon(1e-9));  // the arithmetic above, evaluated
  Parameter p(Tensor::full({1}, 0.5f), "p");
  AdamW opt({p}, {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = eps, .weight_decay = 0.1});
  const float grads[] = {1, -1, 2};
  const double expected[] = {p1, p2, p3};
  for (int t = 0; t < 3; ++t) {
    set_grad(p, {grads[t]});
    opt.step();
    CHECK(p.value().item() == Approx(expected[t]).epsilon(1e-6));
  }
  // Constant gradient, ε = 0: m̂ = g and v̂ = g² exactly, so each step is lr·(sign g + λp):
  // p: 1 → 1 − 0.1·1.1 = 0.89 → 0.89 − 0.1·1.089 = 0.7811 → 0.7811 − 0.1·1.07811 = 0.673289
  Parameter q(Tensor::full({1}, 1.0f), "q");
  AdamW opt2({q}, {.lr = 0.1, .eps = 0.0, .weight_decay = 0.1});
  const double expected2[] = {0.89, 0.7811, 0.673289};
  for (int t = 0; t < 3; ++t) {
    set_grad(q, {0.5f});
    opt2.step();
    INFO("step " << t << " got " << std::setprecision(10) << q.value().item());
    CHECK(q.value().item() == Approx(expected2[t]).epsilon(1e-6));
  }
}

TEST_CASE("the per-element AdamW update the CUDA kernel runs equals the CPU optimizer", "[optim][adamw]") {
  // optim/cuda.cuh applies adamw_update_element on the device; here it runs on the host, fed
  // the coefficients the CPU path computes, against basic_adamw's Eigen expression over 4
  // steps of random gradients (one parameter of 1001 elements, λ > 0).
  rng g(21);
  const Tensor init = Tensor::randn({1001}, g);
  Parameter p(init.clone(), "p");
  const adamw_options o{.lr = 2e-2, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.05};
  AdamW opt({p}, o);
  std::vector<float> pe(init.data(), init.data() + init.numel()), m(pe.size(), 0.0f), v(pe.size(), 0.0f);
  for (int t = 1; t <= 4; ++t) {
    const Tensor grad = Tensor::randn({1001}, g);
    p.grad() = grad.clone();
    opt.step();
    const double c1 = 1.0 - std::pow(o.beta1, t), c2 = 1.0 - std::pow(o.beta2, t);
    const adamw_coefficients<float> c{float(o.beta1),       float(o.beta2),
                                      float(1.0 - o.beta1), float(1.0 - o.beta2),
                                      float(o.eps),         float(o.lr * o.weight_decay),
                                      float(o.lr / c1),     float(1.0 / std::sqrt(c2))};
    for (std::size_t i = 0; i < pe.size(); ++i) adamw_update_element(pe[i], grad.data()[i], m[i], v[i], c);
    for (std::size_t i = 0; i < pe.size(); ++i) {
      INFO("step " << t << ", element " << i);
      REQUIRE(pe[i] == Approx(p.value().data()[i]).epsilon(1e-6).margin(1e-7));
    }
  }
}

TEST_CASE("parameter groups: per-group weight decay and learning-rate scale", "[optim][groups]") {
  Parameter w(Tensor::full({1}, 1.0f), "w"), b(Tensor::full({1}, 1.0f), "b");
  AdamW opt({{{w}}, {{b}, /*weight_decay*/ 0.0, /*lr_scale*/ 0.5}}, {.lr = 0.1, .eps = 0.0, .weight_decay = 0.1});
  set_grad(w, {0.5f});
  set_grad(b, {0.5f});
  opt.step();
  CHECK(w.value().item() == Approx(0.89).epsilon(1e-6));  // 1 − 0.1(1 + 0.1)
  CHECK(b.value().item() == Approx(0.95).epsilon(1e-6));  // 1 − 0.05(1 + 0)
  // A parameter without a gradient is left alone.
  w.grad() = Tensor();
  opt.step();
  CHECK(w.value().item() == Approx(0.89).epsilon(1e-6));
}

TEST_CASE("global gradient-norm clipping", "[optim][clip]") {
  Parameter a(Tensor::zeros({2}), "a"), b(Tensor::zeros({1}), "b");
  set_grad(a, {3, 0});
  set_grad(b, {4});
  const double norm = clip_grad_norm<float>({a, b}, 1.0);
  CHECK(norm == Approx(5.0));
  CHECK(a.grad().at({0}) == Approx(0.6).epsilon(1e-5));
  CHECK(b.grad().at({0}) == Approx(0.8).epsilon(1e-5));
  CHECK(grad_norm<float>({a, b}) == Approx(1.0).epsilon(1e-5));
  // Below the limit: untouched.
  CHECK(clip_grad_norm<float>({a, b}, 10.0) == Approx(1.0).epsilon(1e-5));
  CHECK(b.grad().at({0}) == Approx(0.8).epsilon(1e-5));
  CHECK_THROWS_AS(clip_grad_norm<float>({a}, 0.0), Error);
}

TEST_CASE("learning-rate schedules", "[optim][schedule]") {
  CHECK(constant_lr{0.3}(0) == 0.3);
  CHECK(constant_lr{0.3}(12345) == 0.3);
  const warmup_cosine s{.peak_lr = 1.0, .warmup_steps = 4, .total_steps = 14, .min_lr = 0.1};
  CHECK(s(0) == Approx(0.25));
  CHECK(s(3) == Approx(1.0));
  CHECK(s(4) == Approx(1.0));                                                 // progress 0
  CHECK(s(9) == Approx(0.1 + 0.45 * (1 + std::cos(std::acos(-1.0) * 0.5))));  // halfway: 0.55
  CHECK(s(9) == Approx(0.55));
  CHECK(s(14) == Approx(0.1));
  CHECK(s(100) == Approx(0.1));
  for (int t = 4; t < 14; ++t) CHECK(s(t + 1) < s(t));  // monotone decay after warm-up
}

namespace {
// A 2-layer MLP loss over rows [first, first + count) of (x, labels).
template <class T>
basic_var<T> mlp_loss(basic_tape<T>& tape, const std::vector<basic_parameter<T>>& p, const basic_tensor<T>& x,
                      const std::vector<std::int32_t>& labels, index_t first, index_t count) {
  auto xb = constant(x.slice(first, count));
  auto h = tanh(tape, linear(tape, xb, p[0], p[1]));
  auto logits = linear(tape, h, p[2], p[3]);
  return softmax_cross_entropy(tape, logits,
                               std::span<const std::int32_t>(labels.data() + first, static_cast<std::size_t>(count)));
}

template <class T>
std::vector<basic_parameter<T>> make_mlp(rng& g, index_t in, index_t hidden, index_t out) {
  return {basic_parameter<T>(basic_tensor<T>::randn({in, hidden}, g, 0, 1.0 / std::sqrt(double(in))), "w1"),
          basic_parameter<T>(basic_tensor<T>::zeros({hidden}), "b1"),
          basic_parameter<T>(basic_tensor<T>::randn({hidden, out}, g, 0, 1.0 / std::sqrt(double(hidden))), "w2"),
          basic_parameter<T>(basic_tensor<T>::zeros({out}), "b2")};
}

template <class T>
std::vector<basic_parameter<T>> clone_params(const std::vector<basic_parameter<T>>& ps) {
  std::vector<basic_parameter<T>> out;
  for (const auto& p : ps) out.emplace_back(p.value().clone(), p.name());
  return out;
}

// Normwise relative difference of two gradient sets.
template <class T>
double grad_difference(const std::vector<basic_parameter<T>>& a, const std::vector<basic_parameter<T>>& b) {
  double diff = 0, ref = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff +=
        (as_array(a[i].grad()).template cast<double>() - as_array(b[i].grad()).template cast<double>()).square().sum();
    ref += as_array(b[i].grad()).template cast<double>().square().sum();
  }
  return std::sqrt(diff / ref);
}

template <class T>
void check_accumulation(double tolerance) {
  rng g(5);
  const index_t k = 4, b = 8;
  auto x = basic_tensor<T>::randn({k * b, 6}, g);
  std::vector<std::int32_t> labels;
  for (index_t i = 0; i < k * b; ++i) labels.push_back(static_cast<std::int32_t>(g.below(3)));
  auto whole = make_mlp<T>(g, 6, 16, 3);
  auto micro = clone_params(whole);
  {
    basic_tape<T> tape;
    tape.backward(mlp_loss(tape, whole, x, labels, 0, k * b));
  }
  grad_accumulation accum(static_cast<int>(k));
  int steps = 0;
  for (index_t i = 0; i < k; ++i) {
    basic_tape<T> tape;
    tape.backward(mlp_loss(tape, micro, x, labels, i * b, b), static_cast<T>(accum.loss_scale()));
    if (accum.micro_step_done()) ++steps;
  }
  CHECK(steps == 1);
  CHECK(accum.pending() == 0);
  const double diff = grad_difference(micro, whole);
  INFO("relative gradient difference " << diff);
  CHECK(diff <= tolerance);
  CHECK(grad_norm(whole) > 1e-3);  // a real, non-trivial gradient
}
}  // namespace

TEST_CASE("k micro-batches of size b give the gradient of one batch of k·b", "[optim][accumulation]") {
  check_accumulation<float>(1e-6);
  check_accumulation<double>(1e-12);
  CHECK_THROWS_AS(grad_accumulation(0), Error);
}

TEST_CASE("optimizer state export/import resumes bitwise", "[optim][state]") {
  for (int which = 0; which < 2; ++which) {
    rng g(11);
    auto x = Tensor::randn({32, 6}, g);
    std::vector<std::int32_t> labels;
    for (int i = 0; i < 32; ++i) labels.push_back(static_cast<std::int32_t>(g.below(3)));
    auto params = make_mlp<float>(g, 6, 16, 3);
    auto make_opt = [&](std::vector<Parameter> ps) -> std::unique_ptr<basic_optimizer<float>> {
      if (which == 0) return std::make_unique<AdamW>(std::move(ps), adamw_options{.lr = 1e-2});
      return std::make_unique<SGD>(std::move(ps), sgd_options{.lr = 0.1, .momentum = 0.9, .nesterov = true});
    };
    auto train = [&](basic_optimizer<float>& opt, const std::vector<Parameter>& ps, int steps) {
      for (int s = 0; s < steps; ++s) {
        Tape tape;
        tape.backward(mlp_loss(tape, ps, x, labels, 0, 32));
        opt.step();
        opt.zero_grad();
      }
    };
    auto opt = make_opt(params);
    train(*opt, params, 3);
    // Checkpoint: parameter copies + optimizer state.
    auto saved_params = clone_params(params);
    const OptimizerState state = opt->export_state();
    CHECK(state.step == 3);
    CHECK(state.tensors.size() == (which == 0 ? 8u : 4u));
    train(*opt, params, 2);
    // Resume into fresh objects.
    auto resumed = clone_params(saved_params);
    auto opt2 = make_opt(resumed);
    opt2->import_state(state);
    train(*opt2, resumed, 2);
    for (std::size_t i = 0; i < params.size(); ++i)
      CHECK(params[i].value().to_vector() == resumed[i].value().to_vector());
    // Mismatched state is refused.
    OptimizerState bad = state;
    bad.tensors[0].second = Tensor::zeros({1});
    CHECK_THROWS_AS(opt2->import_state(bad), Error);
  }
}

TEST_CASE("a small MLP learns a synthetic classification task", "[optim][train]") {
  // Three classes by angle sector of a 2-D point, with its radius as a distractor.
  rng g(2024);
  const index_t n = 512;
  auto x = Tensor::empty({n, 2});
  std::vector<std::int32_t> labels;
  for (index_t i = 0; i < n; ++i) {
    const double angle = g.uniform(-3.14159, 3.14159), radius = g.uniform(0.5, 2.0);
    x.at({i, 0}) = static_cast<float>(radius * std::cos(angle));
    x.at({i, 1}) = static_cast<float>(radius * std::sin(angle));
    labels.push_back(angle < -1.0472 ? 0 : (angle < 1.0472 ? 1 : 2));
  }
  auto params = make_mlp<float>(g, 2, 32, 3);
  AdamW opt(params, {.lr = 0.02, .weight_decay = 0.0});
  const warmup_cosine schedule{.peak_lr = 0.02, .warmup_steps = 20, .total_steps = 400, .min_lr = 0.002};
  float first_loss = 0, last_loss = 0;
  for (int step = 0; step < 400; ++step) {
    Tape tape;
    auto loss = mlp_loss(tape, params, x, labels, 0, n);
    if (step == 0) first_loss = loss.item();
    last_loss = loss.item();
    tape.backward(loss);
    clip_grad_norm(params, 5.0);
    opt.set_lr(schedule(step));
    opt.step();
    opt.zero_grad();
  }
  // Accuracy in no-grad mode.
  Tape eval(grad_mode::off);
  auto logits = linear(eval, tanh(eval, linear(eval, constant(x), params[0], params[1])), params[2], params[3]);
  CHECK(eval.size() == 0);
  int correct = 0;
  for (index_t i = 0; i < n; ++i) {
    Eigen::Index arg;
    as_matrix(logits.value()).row(i).maxCoeff(&arg);
    correct += arg == labels[static_cast<std::size_t>(i)];
  }
  const double accuracy = double(correct) / double(n);
  INFO("loss " << first_loss << " → " << last_loss << ", accuracy " << accuracy);
  CHECK(last_loss < 0.3f * first_loss);
  CHECK(accuracy > 0.95);
}
