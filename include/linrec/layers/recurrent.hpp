#pragma once
// What every recurrent layer shares: the token-shift state carried from one segment to the
// next, and the one-token generation step built from the layer's own parallel forward (so
// step mode and parallel mode compute the same numbers by construction).
#include <utility>

#include "linrec/autodiff/autodiff.hpp"

namespace linrec::layers {

// The last time step of x [B,T,C] as [B,C]: the token-shift state carried to the next segment.
template <class T>
basic_var<T> last_step(basic_tape<T>& tape, const basic_var<T>& x) {
  const Shape& s = x.shape();
  return reshape(tape, narrow(tape, x, 1, s[1] - 1, 1), Shape{s[0], s[2]});
}

// Runs a layer's parallel forward on one token with nothing recorded: the recurrent
// generation step, O(1) in sequence length. x_t is [B,C].
template <class Layer, class T>
std::pair<basic_tensor<T>, typename Layer::state> step_of(const Layer& layer, const basic_tensor<T>& x_t,
                                                          const typename Layer::state& state) {
  basic_tape<T> tape(grad_mode::off);
  const Shape& s = x_t.shape();
  auto [y, next] = layer.forward(tape, constant(x_t.reshape(Shape{s[0], 1, s[1]})), state);
  return {y.value().reshape(s), next};
}

}  // namespace linrec::layers
