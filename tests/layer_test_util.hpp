#pragma once
// One harness for every layer (docs/design.md: parallel == step-by-step == reference; gradients
// against finite differences in double; segments with the state carried == one pass).
// A layer type L<T> provides: parameters(), forward(tape, x, state) -> (y, state), step(x_t, state).
#include <catch2/catch.hpp>
#include <cmath>
#include <functional>
#include <vector>

#include "linrec/autodiff/autodiff.hpp"

namespace linrec::test {

template <class T>
basic_tensor<T> random_tensor(const Shape& shape, rng& gen, double stddev = 1.0) {
  return basic_tensor<T>::randn(shape, gen, 0.0, stddev);
}

// ‖x − ref‖ / ‖ref‖
template <class A, class B>
double relative_error(const basic_tensor<A>& x, const basic_tensor<B>& ref) {
  REQUIRE(x.numel() == ref.numel());
  double diff = 0, norm = 0;
  for (index_t i = 0; i < x.numel(); ++i) {
    const double a = double(x.data()[i]), b = double(ref.data()[i]);
    if (!std::isfinite(a)) return INFINITY;
    diff += (a - b) * (a - b);
    norm += b * b;
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
}

// Runs the parallel forward on x, and the step mode token by token, from the same state.
template <class Layer, class T>
void check_step_matches_parallel(const Layer& layer, const basic_tensor<T>& x, double tolerance) {
  basic_tape<T> tape(grad_mode::off);
  const auto [y, final_state] = layer.forward(tape, constant(x), {});
  const index_t batch = x.size(0), time = x.size(1), channels = x.size(2);
  typename Layer::state s{};
  auto y_steps = basic_tensor<T>::empty(y.shape());
  const index_t out_channels = y.shape()[2];
  for (index_t t = 0; t < time; ++t) {
    auto x_t = basic_tensor<T>::empty({batch, channels});
    for (index_t b = 0; b < batch; ++b)
      for (index_t c = 0; c < channels; ++c) x_t.at({b, c}) = x.at({b, t, c});
    auto [y_t, next] = layer.step(x_t, s);
    s = next;
    for (index_t b = 0; b < batch; ++b)
      for (index_t c = 0; c < out_channels; ++c) y_steps.at({b, t, c}) = y_t.at({b, c});
  }
  CHECK(relative_error(y_steps, y.value()) <= tolerance);
}

// Forward over [0, cut) then [cut, T) with the state carried equals one pass.
template <class Layer, class T>
void check_segments_match_one_pass(const Layer& layer, const basic_tensor<T>& x, index_t cut, double tolerance) {
  basic_tape<T> tape(grad_mode::off);
  const auto [y, unused] = layer.forward(tape, constant(x), {});
  const index_t time = x.size(1);
  auto first = constant(x.reshape(x.shape()));
  const auto part = [&](index_t t0, index_t len) { return narrow(tape, constant(x), 1, t0, len); };
  const auto [y1, s1] = layer.forward(tape, part(0, cut), {});
  const auto [y2, s2] = layer.forward(tape, part(cut, time - cut), s1);
  const auto joined = concat(tape, std::vector<basic_var<T>>{y1, y2}, 1);
  CHECK(relative_error(joined.value(), y.value()) <= tolerance);
}

// ∂L/∂θ for every parameter and ∂L/∂x against central differences, L = Σ w ⊙ y (w random).
// `max_elements` limits the checked entries of large tensors (a strided sample).
template <class Layer>
void gradcheck_layer(Layer& layer, const basic_tensor<double>& x, rng& gen, double tolerance = 1e-6,
                     index_t max_elements = 64) {
  basic_parameter<double> input(x.clone(), "input");
  basic_tensor<double> weight;
  auto loss_value = [&]() {
    basic_tape<double> tape;
    const auto [y, s] = layer.forward(tape, input, {});
    if (!weight.defined()) weight = random_tensor<double>(y.shape(), gen);
    return sum_all(tape, mul(tape, y, constant(weight))).item();
  };
  loss_value();
  auto params = layer.parameters();
  params.push_back(input);
  for (auto& p : params) p.zero_grad();
  {
    basic_tape<double> tape;
    const auto [y, s] = layer.forward(tape, input, {});
    tape.backward(sum_all(tape, mul(tape, y, constant(weight))));
  }
  for (auto& p : params) {
    const auto& value = p.value();
    const index_t n = value.numel();
    const index_t stride = std::max<index_t>(1, n / max_elements);
    double worst = 0;
    for (index_t i = 0; i < n; i += stride) {
      double& entry = value.data()[i];
      const double saved = entry, eps = 1e-6 * std::max(1.0, std::abs(saved));
      entry = saved + eps;
      const double up = loss_value();
      entry = saved - eps;
      const double down = loss_value();
      entry = saved;
      const double numeric = (up - down) / (2 * eps);
      const double analytic = p.grad().defined() ? p.grad().data()[i] : 0.0;
      worst = std::max(worst, std::abs(numeric - analytic) / std::max(1.0, std::abs(analytic)));
    }
    INFO("parameter " << p.name() << " " << value.shape() << ": worst relative error " << worst);
    CHECK(worst <= tolerance);
  }
}

// Reference inits zero some projections (outputs, LoRA down-projections); a comparison only
// means something when every path of the layer is active, so those get random values.
template <class Layer>
void randomize_zero_weights(Layer& layer, rng& gen) {
  for (auto& p : layer.parameters())
    if (as_array(p.value()).abs().maxCoeff() == 0)
      p.value().copy_from(random_tensor<typename Layer::value_type>(p.value().shape(), gen, 0.3));
}

}  // namespace linrec::test
