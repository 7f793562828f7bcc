#pragma once
// Sequential backprop-through-time (BPTT) for every layer: the slow, obviously-correct twin of
// the scan-based `forward` (a reference beside every kernel, as llm.c keeps one), and the
// baseline of bench/bench_layers.cpp.
//
//   auto [y, state] = layer.forward(tape, x, in);                         // scan over T
//   auto [y, state] = linrec::layers::bptt_forward(layer, tape, x, in);   // T single steps
//   auto [y, state] = linrec::layers::forward_in(time_mode::bptt, layer, tape, x, in);
//
// bptt_forward unrolls the recurrence through time on the tape: for t = 0..T-1 it narrows
// x [B,T,C] to x_t [B,1,C], runs the layer's own forward on that single step from the
// state carried out of step t-1, and joins the outputs along time:
//   (y_t, s_t) = layer.forward(x_t, s_{t-1}),   y = concat_t y_t,   s_{-1} = in
// Every step is recorded on the same tape, so the backward pass walks the T steps in reverse
// and the gradient reaches s_{t-1} through s_t — the recurrence is never a scan over more
// than one step. Same math as the scan mode: equal outputs, final state and gradients up
// to rounding (tests/test_bptt.cpp).
//
// Cost model (what the benchmark measures): the whole layer runs once per token, like an RNN
// cell in a loop — T small matmuls instead of one large one, ~T× the tape records, and the
// time-invariant parameter transforms (LRU's λ, S4D's discretisation, RWKV-4's e^{time_decay})
// are recomputed at every step, as a cell that is called per token does.
#include <utility>
#include <vector>

#include "linrec/autodiff/autodiff.hpp"

namespace linrec::layers {

// How a layer processes the time axis in training.
enum class time_mode {
  scan,  // the layer's parallel forward: one scan over T
  bptt,  // T single-step forwards unrolled on the tape (bptt_forward)
};

inline const char* to_string(time_mode mode) { return mode == time_mode::scan ? "scan" : "bptt"; }

// x [B,T,C] → (y [B,T,C'], final state), step by step through time on `tape`.
template <class Layer, class T>
std::pair<basic_var<T>, typename Layer::state> bptt_forward(const Layer& layer, basic_tape<T>& tape,
                                                            const basic_var<T>& x, const typename Layer::state& in,
                                                            cpu exec = {}) {
  LINREC_CHECK(x.defined() && x.shape().rank() == 3 && x.shape()[1] >= 1,
               "bptt_forward: x must be [B,T,C] with T ≥ 1, got " << (x.defined() ? x.shape() : Shape{}));
  const index_t time = x.shape()[1];
  if (time == 1) return layer.forward(tape, x, in, exec);
  std::vector<basic_var<T>> outputs;
  outputs.reserve(static_cast<std::size_t>(time));
  typename Layer::state carried = in;
  for (index_t t = 0; t < time; ++t) {
    // (y_t, s_t) = layer(x_t, s_{t-1})
    auto [y_t, next] = layer.forward(tape, narrow(tape, x, 1, t, 1), carried, exec);
    outputs.push_back(std::move(y_t));
    carried = std::move(next);
  }
  return {concat(tape, outputs, 1), std::move(carried)};
}

// The layer's forward in the given time mode.
template <class Layer, class T>
std::pair<basic_var<T>, typename Layer::state> forward_in(time_mode mode, const Layer& layer, basic_tape<T>& tape,
                                                          const basic_var<T>& x, const typename Layer::state& in,
                                                          cpu exec = {}) {
  return mode == time_mode::scan ? layer.forward(tape, x, in, exec) : bptt_forward(layer, tape, x, in, exec);
}

}  // namespace linrec::layers
