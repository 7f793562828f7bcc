#pragma once
// The sequential agent of the CUDA scan: thread (b, c) walks its whole sequence, exactly the
// CPU reference's loop. The honest baseline of the benchmarks, and the choice of the
// dispatcher where a time-parallel scan cannot pay off (one step: T == 1).
#include <cuda_runtime.h>

#include "linrec/scan/detail/cuda_pair.cuh"
#include "linrec/scan/layout.hpp"
#include "linrec/scan/operators.hpp"

namespace linrec::detail::cuda_scan {

template <scan_direction D, class Op>
struct sequential_agent;

// h[t] = a[t] ⊙ h[t-1] + b[t],  h[-1] = h0
template <class Op>
struct sequential_agent<scan_direction::forward, Op> {
  using args_type = scan_forward_args<Op>;
  static constexpr int threads = 128;
  static constexpr const char* name = "linrec::detail::cuda_scan::sequential_agent<forward>";

  static __device__ __forceinline__ void run(const args_type& p) {
    const index_t row = index_t(blockIdx.x) * threads + threadIdx.x;
    const index_t channels = p.shape.channels;
    if (row >= p.shape.batch * channels) return;
    const index_t batch = row / channels, channel = row - batch * channels;
    const typename Op::decay_type* a = p.a + batch * p.a_strides.batch + channel * p.a_strides.channel;
    const typename Op::value_type* b = p.b + batch * p.b_strides.batch + channel * p.b_strides.channel;
    typename Op::value_type* h = p.h + batch * p.h_strides.batch + channel * p.h_strides.channel;
    typename Op::value_type state = p.h0 ? p.h0[row] : Op::zero_value();
#pragma unroll 4
    for (index_t t = 0; t < p.shape.time; ++t) {
      state = Op::step(a[t * p.a_strides.time], state, b[t * p.b_strides.time]);
      h[t * p.h_strides.time] = state;
    }
    if (p.h_final) p.h_final[row] = state;
  }
};

// g[t] = dh[t] + conj(a[t+1]) ⊙ g[t+1],  g[T-1] = dh[T-1] + dh_final
// db[t] = g[t],  da[t] = decay_grad(g[t], h[t-1], a[t]),  dh0 = conj(a[0]) ⊙ g[0]
template <class Op>
struct sequential_agent<scan_direction::backward, Op> {
  using args_type = scan_backward_args<Op>;
  static constexpr int threads = 128;
  static constexpr const char* name = "linrec::detail::cuda_scan::sequential_agent<backward>";

  static __device__ __forceinline__ void run(const args_type& p) {
    const index_t row = index_t(blockIdx.x) * threads + threadIdx.x;
    const index_t channels = p.shape.channels;
    if (row >= p.shape.batch * channels) return;
    const index_t batch = row / channels, channel = row - batch * channels;
    auto at = [&](auto* base, const strides3& st) { return base + batch * st.batch + channel * st.channel; };
    const auto* a = at(p.a, p.a_strides);
    const auto* h = at(p.h, p.h_strides);
    const auto* dh = at(p.dh, p.dh_strides);
    auto* da = at(p.da, p.da_strides);
    auto* db = at(p.db, p.db_strides);
    typename Op::grad_type g = p.dh_final ? p.dh_final[row] : Op::zero_grad();
    typename Op::decay_type a_next = Op::decay_identity();
    const typename Op::value_type h_initial = p.h0 ? p.h0[row] : Op::zero_value();
#pragma unroll 4
    for (index_t t = p.shape.time - 1; t >= 0; --t) {
      const typename Op::decay_type a_t = a[t * p.a_strides.time];
      g = Op::grad_step(a_next, g, dh[t * p.dh_strides.time]);
      db[t * p.db_strides.time] = g;
      const typename Op::value_type h_prev = t > 0 ? h[(t - 1) * p.h_strides.time] : h_initial;
      da[t * p.da_strides.time] = Op::decay_grad(g, h_prev, a_t);
      a_next = a_t;
    }
    if (p.dh0) p.dh0[row] = Op::grad_step(a_next, g, Op::zero_grad());
  }
};

}  // namespace linrec::detail::cuda_scan
