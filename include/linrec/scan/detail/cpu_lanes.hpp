#pragma once
// Inner loops of the parallel CPU scan. Each works on a block of `lanes` independent
// recurrences (channels of one batch row) over a time range. Time is the outer loop and lanes
// the inner one, so with contiguous channels a step over all lanes is one vectorised row, and
// with a strided layout the lanes still give independent dependency chains to overlap.
#include <algorithm>

#include "linrec/scan/detail/cpu_streaming_store.hpp"
#include "linrec/scan/layout.hpp"

namespace linrec::detail {

// Lanes per block. Contiguous blocks take whole time rows (up to this many channels): a row
// split into short pieces turns one sequential stream into many page-strided ones.
inline constexpr index_t max_lanes = 1024;

// Pointer to element (t, lane) of one batch row; Contiguous means the lane stride is 1.
template <class E, bool Contiguous>
struct lane_view {
  E* ptr;
  index_t time_stride;
  index_t lane_stride;
  E& operator()(index_t t, index_t lane) const {
    return ptr[t * time_stride + (Contiguous ? lane : lane * lane_stride)];
  }
};

template <class E, bool Contiguous>
lane_view<E, Contiguous> make_lane_view(E* base, const strides3& st, index_t batch, index_t first_lane) {
  return {base + batch * st.batch + first_lane * st.channel, st.time, st.channel};
}

// Forward over t in [t0, t1): state = a ⊙ state + b, h = state. If decay_product is given it
// also accumulates ∏ a (the chunk's aggregate decay). Streaming writes each row of h with
// non-temporal stores (cpu_streaming_store.hpp); it needs contiguous lanes.
template <class Op, bool Contiguous, bool Streaming = false>
void forward_lanes(lane_view<const typename Op::decay_type, Contiguous> a,
                   lane_view<const typename Op::value_type, Contiguous> b,
                   lane_view<typename Op::value_type, Contiguous> h, index_t t0, index_t t1, index_t lanes,
                   typename Op::value_type* state, typename Op::decay_type* decay_product) {
  // Work on local copies: the caller's arrays may share cache lines with other threads'
  // (false sharing) or alias the outputs as far as the compiler can tell.
  typename Op::value_type s[max_lanes];
  typename Op::decay_type p[max_lanes];
  std::copy(state, state + lanes, s);
  if (decay_product) std::copy(decay_product, decay_product + lanes, p);
  index_t t = t0;
  if (lanes == 1) {
    // A single chain is latency-bound: compose 4 steps off the critical path, then apply
    // each prefix to the carried state, so the chain advances one step per 4 elements.
    for (; t + 4 <= t1; t += 4) {
      typename Op::decay_type prefix[4];
      typename Op::value_type partial[4];
      prefix[0] = a(t, 0);
      partial[0] = b(t, 0);
      for (int i = 1; i < 4; ++i) {
        prefix[i] = Op::compose(prefix[i - 1], a(t + i, 0));
        partial[i] = Op::step(a(t + i, 0), partial[i - 1], b(t + i, 0));
      }
      for (int i = 0; i < 4; ++i) h(t + i, 0) = Op::step(prefix[i], s[0], partial[i]);
      s[0] = h(t + 3, 0);
      if (decay_product) p[0] = Op::compose(p[0], prefix[3]);
    }
  }
  static_assert(!Streaming || Contiguous, "streaming stores write whole contiguous rows");
  for (; t < t1; ++t) {
    if constexpr (Streaming) {
      for (index_t l = 0; l < lanes; ++l) s[l] = Op::step(a(t, l), s[l], b(t, l));
      store_row_streaming(&h(t, 0), s, lanes);
    } else {
      for (index_t l = 0; l < lanes; ++l) {
        s[l] = Op::step(a(t, l), s[l], b(t, l));
        h(t, l) = s[l];
      }
    }
    if (decay_product)
      for (index_t l = 0; l < lanes; ++l) p[l] = Op::compose(p[l], a(t, l));
  }
  std::copy(s, s + lanes, state);
  if (decay_product) std::copy(p, p + lanes, decay_product);
}

// h[t] += (∏_{t0≤s≤t} a[s]) ⊙ carry: turns a chunk scanned from zero into the true values.
template <class Op, bool Contiguous>
void forward_fixup_lanes(lane_view<const typename Op::decay_type, Contiguous> a,
                         lane_view<typename Op::value_type, Contiguous> h, index_t t0, index_t t1, index_t lanes,
                         const typename Op::value_type* carry_in) {
  typename Op::decay_type prefix[max_lanes];
  typename Op::value_type carry[max_lanes];
  std::fill(prefix, prefix + lanes, Op::decay_identity());
  std::copy(carry_in, carry_in + lanes, carry);
  index_t t = t0;
  if (lanes == 1)  // as in forward_lanes: shorten the dependent chain of products
    for (; t + 4 <= t1; t += 4) {
      typename Op::decay_type local[4];
      local[0] = a(t, 0);
      for (int i = 1; i < 4; ++i) local[i] = Op::compose(local[i - 1], a(t + i, 0));
      for (int i = 0; i < 4; ++i) h(t + i, 0) = Op::step(Op::compose(prefix[0], local[i]), carry[0], h(t + i, 0));
      prefix[0] = Op::compose(prefix[0], local[3]);
    }
  for (; t < t1; ++t)
    for (index_t l = 0; l < lanes; ++l) {
      prefix[l] = Op::compose(prefix[l], a(t, l));
      h(t, l) = Op::step(prefix[l], carry[l], h(t, l));
    }
}

// Views of one batch row for the backward pass.
template <class Op, bool Contiguous>
struct backward_views {
  lane_view<const typename Op::decay_type, Contiguous> a;
  lane_view<const typename Op::value_type, Contiguous> h;
  lane_view<const typename Op::grad_type, Contiguous> dh;
  lane_view<typename Op::decay_grad_type, Contiguous> da;
  lane_view<typename Op::grad_type, Contiguous> db;
  const typename Op::value_type* h0;  // this row's initial state at the first lane, or nullptr
  index_t time;

  typename Op::decay_type decay_after(index_t t, index_t l) const {
    return t + 1 < time ? a(t + 1, l) : Op::decay_identity();
  }
  typename Op::value_type state_before(index_t t, index_t l) const {
    return t > 0 ? h(t - 1, l) : (h0 ? h0[l] : Op::zero_value());
  }
};

// Backward over t = t1-1 down to t0, g = dh + conj(a[t+1]) ⊙ g, starting from `grad_state`
// (the true g[t1], or zero for a chunk-local pass). Writes db = g; with FinalValues also
// da (only correct when grad_state was the true carry). If decay_product is given it
// accumulates ∏_{t0<s≤t1} a[s], the chunk's aggregate decay in reverse direction.
template <class Op, bool Contiguous, bool FinalValues, bool Streaming = false>
void backward_lanes(const backward_views<Op, Contiguous>& v, index_t t0, index_t t1, index_t lanes,
                    typename Op::grad_type* grad_state, typename Op::decay_type* decay_product) {
  typename Op::grad_type g[max_lanes];
  typename Op::decay_type p[max_lanes];
  std::copy(grad_state, grad_state + lanes, g);
  if (decay_product) std::copy(decay_product, decay_product + lanes, p);
  index_t t = t1 - 1;
  if (lanes == 1)  // as in forward_lanes: one dependent step per 4 elements
    for (; t - 3 >= t0; t -= 4) {
      typename Op::decay_type suffix[4];
      typename Op::grad_type partial[4];
      suffix[0] = v.decay_after(t, 0);
      partial[0] = v.dh(t, 0);
      for (int i = 1; i < 4; ++i) {
        suffix[i] = Op::compose(suffix[i - 1], v.decay_after(t - i, 0));
        partial[i] = Op::grad_step(v.decay_after(t - i, 0), partial[i - 1], v.dh(t - i, 0));
      }
      for (int i = 0; i < 4; ++i) {
        const auto gi = Op::grad_step(suffix[i], g[0], partial[i]);
        v.db(t - i, 0) = gi;
        if constexpr (FinalValues) v.da(t - i, 0) = Op::decay_grad(gi, v.state_before(t - i, 0), v.a(t - i, 0));
      }
      g[0] = v.db(t - 3, 0);
      if (decay_product) p[0] = Op::compose(p[0], suffix[3]);
    }
  const auto lane_step = [&](index_t t, index_t l) {
    g[l] = Op::grad_step(v.decay_after(t, l), g[l], v.dh(t, l));
    v.db(t, l) = g[l];
    if constexpr (FinalValues) v.da(t, l) = Op::decay_grad(g[l], v.state_before(t, l), v.a(t, l));
  };
  // Rows run backwards in time, so the lanes of a long row run backwards too, a cache line at a
  // time: every stream's addresses then fall steadily and the hardware prefetchers follow them.
  // Rows backwards with lanes forwards ran at 40-48 GB/s at (8, 4096, 1024), both backwards at
  // 54-58 (docs/scan.md). Rows of under 4 lines keep the plain loop: at 16 and 32 float lanes
  // the line loop's overhead per row cost 25 %, from 64 lanes on it gained.
  constexpr index_t line = std::max<index_t>(1, index_t(64 / sizeof(typename Op::grad_type)));
  const bool lines_downwards = Contiguous && lanes >= 4 * line;
  for (; t >= t0; --t) {
    if (lines_downwards) {
      const index_t whole = lanes / line * line;
      for (index_t l = lanes - 1; l >= whole; --l) lane_step(t, l);
      for (index_t l0 = whole - line; l0 >= 0; l0 -= line) {
        if constexpr (Streaming) {
          typename Op::decay_grad_type da_line[line];
          for (index_t l = l0; l < l0 + line; ++l) {
            g[l] = Op::grad_step(v.decay_after(t, l), g[l], v.dh(t, l));
            da_line[l - l0] = Op::decay_grad(g[l], v.state_before(t, l), v.a(t, l));
          }
          store_row_streaming(&v.db(t, l0), &g[l0], line);
          store_row_streaming(&v.da(t, l0), da_line, line);
        } else {
          for (index_t l = l0; l < l0 + line; ++l) lane_step(t, l);
        }
      }
    } else {
      for (index_t l = 0; l < lanes; ++l) lane_step(t, l);
    }
    if (decay_product)
      for (index_t l = 0; l < lanes; ++l) p[l] = Op::compose(p[l], v.decay_after(t, l));
  }
  std::copy(g, g + lanes, grad_state);
  if (decay_product) std::copy(p, p + lanes, decay_product);
}

// g[t] = g_local[t] + conj(∏_{t<s≤t1} a[s]) ⊙ carry, then da from the true g.
template <class Op, bool Contiguous>
void backward_fixup_lanes(const backward_views<Op, Contiguous>& v, index_t t0, index_t t1, index_t lanes,
                          const typename Op::grad_type* carry_in) {
  typename Op::decay_type suffix[max_lanes];
  typename Op::grad_type carry[max_lanes];
  std::fill(suffix, suffix + lanes, Op::decay_identity());
  std::copy(carry_in, carry_in + lanes, carry);
  index_t t = t1 - 1;
  if (lanes == 1)
    for (; t - 3 >= t0; t -= 4) {
      typename Op::decay_type local[4];
      local[0] = v.decay_after(t, 0);
      for (int i = 1; i < 4; ++i) local[i] = Op::compose(local[i - 1], v.decay_after(t - i, 0));
      for (int i = 0; i < 4; ++i) {
        const auto g = Op::grad_step(Op::compose(suffix[0], local[i]), carry[0], v.db(t - i, 0));
        v.db(t - i, 0) = g;
        v.da(t - i, 0) = Op::decay_grad(g, v.state_before(t - i, 0), v.a(t - i, 0));
      }
      suffix[0] = Op::compose(suffix[0], local[3]);
    }
  for (; t >= t0; --t)
    for (index_t l = 0; l < lanes; ++l) {
      suffix[l] = Op::compose(suffix[l], v.decay_after(t, l));
      const auto g = Op::grad_step(suffix[l], carry[l], v.db(t, l));
      v.db(t, l) = g;
      v.da(t, l) = Op::decay_grad(g, v.state_before(t, l), v.a(t, l));
    }
}

}  // namespace linrec::detail
