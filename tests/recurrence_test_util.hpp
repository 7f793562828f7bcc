#pragma once
// Helpers for the tests of the diagonal-recurrence layers (LRU, S4D, selective SSM), on top
// of layer_test_util.hpp.
#include <vector>

#include "layer_test_util.hpp"

namespace linrec::test {

template <class T>
basic_tensor<double> to_double(const basic_tensor<T>& x) {
  auto out = basic_tensor<double>::empty(x.shape());
  for (index_t i = 0; i < x.numel(); ++i) out.data()[i] = double(x.data()[i]);
  return out;
}
template <class T>
basic_tensor<T> from_double(const basic_tensor<double>& x) {
  auto out = basic_tensor<T>::empty(x.shape());
  for (index_t i = 0; i < x.numel(); ++i) out.data()[i] = T(x.data()[i]);
  return out;
}

// Wraps a layer whose state is {h}: forward runs [0, cut) from a learnable initial state h0,
// then [cut, T) from the carried state, and joins the outputs. gradcheck_layer on this checks
// the gradient into h0 and through the carried state.
template <class Layer>
struct carried_state {
  using T = typename Layer::value_type;
  using value_type = T;
  using state = typename Layer::state;
  Layer& layer;
  basic_parameter<T> h0;
  index_t cut;

  std::vector<basic_parameter<T>> parameters() const {
    auto p = layer.parameters();
    p.push_back(h0);
    return p;
  }
  std::pair<basic_var<T>, state> forward(basic_tape<T>& tape, const basic_var<T>& x, const state&) const {
    const index_t time = x.shape()[1];
    auto [y1, s1] = layer.forward(tape, narrow(tape, x, 1, 0, cut), state{h0});
    auto [y2, s2] = layer.forward(tape, narrow(tape, x, 1, cut, time - cut), s1);
    return {concat(tape, std::vector<basic_var<T>>{y1, y2}, 1), s2};
  }
};

// The layer's (y, final h) from a given initial state h0 (undefined: zeros), no tape.
template <class Layer, class T>
std::pair<basic_tensor<T>, basic_tensor<T>> run_layer(const Layer& layer, const basic_tensor<T>& x,
                                                      const basic_tensor<T>& h0 = {}) {
  basic_tape<T> tape(grad_mode::off);
  typename Layer::state in{};
  if (h0.defined()) in.h = constant(h0);
  auto [y, out] = layer.forward(tape, constant(x), in);
  return {y.value(), out.h.value()};
}

}  // namespace linrec::test
