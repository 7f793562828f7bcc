#pragma once
// The sequential reference scan: one thread, one step at a time, the ground truth that every
// other backend is tested against. It walks memory in layout order (time rows of all channels
// when channels are the faster-moving index, whole channels otherwise), so it is also the
// honest single-threaded baseline of the benchmarks.
#include <vector>

#include "linrec/scan/layout.hpp"

namespace linrec {

// h[t] = a[t] ⊙ h[t-1] + b[t],  h[-1] = h0
template <class Op>
void scan_forward_sequential(const scan_forward_args<Op>& p) {
  detail::validate(p);
  using V = typename Op::value_type;
  const auto& s = p.shape;
  std::vector<V> state(static_cast<std::size_t>(s.channels));
  for (index_t b = 0; b < s.batch; ++b) {
    for (index_t c = 0; c < s.channels; ++c) state[c] = p.h0 ? p.h0[b * s.channels + c] : Op::zero_value();
    for (index_t t = 0; t < s.time; ++t)
      for (index_t c = 0; c < s.channels; ++c) {
        state[c] = Op::step(p.a[p.a_strides.offset(b, t, c)], state[c], p.b[p.b_strides.offset(b, t, c)]);
        p.h[p.h_strides.offset(b, t, c)] = state[c];
      }
    if (p.h_final)
      for (index_t c = 0; c < s.channels; ++c) p.h_final[b * s.channels + c] = state[c];
  }
}

// g[t] = dh[t] + conj(a[t+1]) ⊙ g[t+1],  g[T-1] = dh[T-1] + dh_final
// db[t] = g[t],  da[t] = ∂(a[t] ⊙ h[t-1])/∂a[t] · g[t],  dh0 = conj(a[0]) ⊙ g[0]
template <class Op>
void scan_backward_sequential(const scan_backward_args<Op>& p) {
  detail::validate(p);
  using A = typename Op::decay_type;
  using G = typename Op::grad_type;
  const auto& s = p.shape;
  std::vector<G> g(static_cast<std::size_t>(s.channels));
  std::vector<A> a_next(static_cast<std::size_t>(s.channels));
  for (index_t b = 0; b < s.batch; ++b) {
    for (index_t c = 0; c < s.channels; ++c) {
      g[c] = p.dh_final ? p.dh_final[b * s.channels + c] : Op::zero_grad();
      a_next[c] = Op::decay_identity();
    }
    for (index_t t = s.time - 1; t >= 0; --t)
      for (index_t c = 0; c < s.channels; ++c) {
        const A a = p.a[p.a_strides.offset(b, t, c)];
        g[c] = Op::grad_step(a_next[c], g[c], p.dh[p.dh_strides.offset(b, t, c)]);
        p.db[p.db_strides.offset(b, t, c)] = g[c];
        const auto h_prev =
            t > 0 ? p.h[p.h_strides.offset(b, t - 1, c)] : (p.h0 ? p.h0[b * s.channels + c] : Op::zero_value());
        p.da[p.da_strides.offset(b, t, c)] = Op::decay_grad(g[c], h_prev, a);
        a_next[c] = a;
      }
    if (p.dh0)
      for (index_t c = 0; c < s.channels; ++c)
        p.dh0[b * s.channels + c] = Op::grad_step(a_next[c], g[c], Op::zero_grad());
  }
}

}  // namespace linrec
