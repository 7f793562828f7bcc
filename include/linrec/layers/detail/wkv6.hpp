#pragma once
// RWKV-6 ("Finch") WKV on raw arrays, per head h of size N (C = H·N), key index j, value i:
//
//   y_t[i]   = Σ_j r_t[j] (u[j] k_t[j] v_t[i] + S_{t-1}[j,i])
//   S_t[j,i] = d_t[j] S_{t-1}[j,i] + k_t[j] v_t[i],       d_t = exp(-exp(w_t))
//
// Layouts: r, k, v, w, y are [B,T,C]; u is [C]; states are [B,H,N,N] (j major, i minor).
//
// wkv6_forward is chunked (chunks of `chunk_length` steps), as in flash-linear-attention:
//   * per chunk, from a zero state: the state increment ΔS = Σ_s e^{c_end - c_s} k_s v_sᵀ and
//     the chunk decay e^{c_end}, with c the cumulative log-decay inside the chunk;
//   * the chunk-start states through the scan primitive: S_start[n+1] = e^{c_end} ⊙ S_start[n] + ΔS;
//   * per chunk, outputs = bonus + (r ⊙ e^{c_{t-1}})ᵀ S_start + Σ_{s<t} A[t,s] v_s with
//     A[t,s] = Σ_j r_t[j] k_s[j] e^{c_{t-1}[j] - c_s[j]}; every exponent is ≤ 0, so nothing can
//     overflow however strong the decay.
// Only the chunk-start states are kept (T/L of them), never S_t for every t.
// wkv6_backward runs the chunk adjoints through the scan in reverse, then each chunk's
// per-step backward from its recomputed states. wkv6_reference is the plain recurrence.
//
// Every e^{c_a - c_b} above is a product of step decays d_s = exp(-exp(w_s)) ≤ 1, so the
// kernels evaluate the two exponentials once per element, vectorised (step_decays), and
// form the weights as running products: no exp in the O(L²N) loops, and a product can only
// underflow to zero, never overflow.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "linrec/core/error.hpp"
#include "linrec/core/exec.hpp"
#include "linrec/scan/scan.hpp"
#include "linrec/tensor/detail/eigen_include.hpp"
#include "linrec/tensor/host_cache.hpp"

namespace linrec::layers::detail {

struct wkv6_shapes {
  index_t batch, time, heads, head_size;
  index_t channels() const { return heads * head_size; }
  index_t elements() const { return batch * time * channels(); }
  index_t state_elements() const { return batch * heads * head_size * head_size; }
};

inline constexpr index_t wkv6_chunk_length = 16;

namespace wkv6_impl {

inline int threads_for(const cpu& exec, index_t work) {
  return work < 4 ? 1 : (exec.threads > 0 ? exec.threads : omp_get_max_threads());
}

// Pointers of one (batch, head) pair: element (t, j) of a [B,T,C] tensor is at t*C + j.
template <class T>
struct head_view {
  index_t stride;  // C
  const T* r;
  const T* k;
  const T* v;
  const T* w;
  const T* u;  // this head's bonus, [N]
};

template <class T>
head_view<T> view_of(const wkv6_shapes& s, index_t b, index_t h, const T* r, const T* k, const T* v, const T* w,
                     const T* u) {
  const index_t offset = b * s.time * s.channels() + h * s.head_size;
  return {s.channels(), r + offset, k + offset, v + offset, w + offset, u + h * s.head_size};
}

template <class T>
T log_decay(T w) {
  return -std::exp(w);
}

// d = exp(-exp(w)) for every element, and (when exp_w is given) exp(w), the factor of ∂d/∂w.
// Eigen's array exp is vectorised; these are the only exponentials of the chunked kernels.
template <class T>
host_buffer<T> step_decays(const cpu& exec, const T* w, index_t n, host_buffer<T>* exp_w = nullptr) {
  using array = Eigen::Array<T, Eigen::Dynamic, 1>;
  host_buffer<T> decay(static_cast<std::size_t>(n));
  if (exp_w) *exp_w = host_buffer<T>(static_cast<std::size_t>(n));
  constexpr index_t block = 4096;
  const index_t blocks = (n + block - 1) / block;
#pragma omp parallel for num_threads(threads_for(exec, blocks))
  for (index_t first = 0; first < blocks; ++first) {
    const index_t i0 = first * block, len = std::min(block, n - i0);
    const array e = Eigen::Map<const array>(w + i0, len).exp();
    Eigen::Map<array>(decay.data() + i0, len) = (-e).exp();
    if (exp_w) Eigen::Map<array>(exp_w->data() + i0, len) = e;
  }
  return decay;
}

}  // namespace wkv6_impl

// The plain recurrence, one step at a time: the reference the chunked form is tested against,
// and the recurrent (generation) mode. state is [B,H,N,N], updated in place.
template <class T>
void wkv6_reference(const wkv6_shapes& s, const T* r, const T* k, const T* v, const T* w, const T* u, T* state, T* y) {
  const index_t n = s.head_size, c_total = s.channels();
  for (index_t b = 0; b < s.batch; ++b)
    for (index_t h = 0; h < s.heads; ++h) {
      T* st = state + (b * s.heads + h) * n * n;
      for (index_t t = 0; t < s.time; ++t) {
        const index_t base = (b * s.time + t) * c_total + h * n;
        for (index_t i = 0; i < n; ++i) y[base + i] = 0;
        for (index_t j = 0; j < n; ++j) {
          const T rj = r[base + j], kj = k[base + j], uj = u[h * n + j];
          const T decay = std::exp(wkv6_impl::log_decay(w[base + j]));
          for (index_t i = 0; i < n; ++i) {
            const T kv = kj * v[base + i];
            y[base + i] += rj * (uj * kv + st[j * n + i]);
            st[j * n + i] = decay * st[j * n + i] + kv;
          }
        }
      }
    }
}

// Chunked forward. state_in may be null (zero); state_out may be null. chunk_states receives
// the state at the start of every chunk, [B,H,chunks,N,N], for the backward.
template <class T>
void wkv6_forward(const cpu& exec, const wkv6_shapes& s, const T* r, const T* k, const T* v, const T* w, const T* u,
                  const T* state_in, T* y, T* chunk_states, T* state_out = nullptr,
                  index_t chunk_length = wkv6_chunk_length) {
  LINREC_CHECK(r && k && v && w && u && y && chunk_states, "wkv6_forward: a required pointer is null");
  LINREC_CHECK(s.batch > 0 && s.time > 0 && s.heads > 0 && s.head_size > 0,
               "wkv6_forward: batch, time, heads, head_size must be > 0");
  const index_t n = s.head_size, nn = n * n, chunks = (s.time + chunk_length - 1) / chunk_length;
  const index_t pairs = s.batch * s.heads;
  // Phase 1: per chunk, ΔS from zero and the chunk decay broadcast over i (the scan's a and b).
  const host_buffer<T> step_decay = wkv6_impl::step_decays(exec, w, s.elements());
  host_buffer<T> chunk_decay(static_cast<std::size_t>(pairs * chunks * nn)),
      chunk_increment(static_cast<std::size_t>(pairs * chunks * nn));
#pragma omp parallel for collapse(2) num_threads(wkv6_impl::threads_for(exec, pairs* chunks))
  for (index_t pair = 0; pair < pairs; ++pair)
    for (index_t chunk = 0; chunk < chunks; ++chunk) {
      // hv.w reads the step decays d = exp(-exp(w)).
      const auto hv = wkv6_impl::view_of(s, pair / s.heads, pair % s.heads, r, k, v, step_decay.data(), u);
      const index_t t0 = chunk * chunk_length, t1 = std::min(s.time, t0 + chunk_length);
      T* increment = &chunk_increment[static_cast<std::size_t>((pair * chunks + chunk) * nn)];
      T* decay = &chunk_decay[static_cast<std::size_t>((pair * chunks + chunk) * nn)];
      std::fill(increment, increment + nn, T(0));
      for (index_t j = 0; j < n; ++j) {
        // Walk backwards so the weight e^{c_end - c_s} is a running product of later decays.
        T later_decay = 1;
        for (index_t t = t1 - 1; t >= t0; --t) {
          const T weight = hv.k[t * hv.stride + j] * later_decay;
          for (index_t i = 0; i < n; ++i) increment[j * n + i] += weight * hv.v[t * hv.stride + i];
          later_decay *= hv.w[t * hv.stride + j];
        }
        std::fill(decay + j * n, decay + (j + 1) * n, later_decay);
      }
    }
  // Phase 2: chunk-end states through the scan; chunk n starts from the end of chunk n-1.
  host_buffer<T> chunk_end(chunk_increment.size());
  const scan_shape scan{pairs, chunks, nn};
  const auto layout = strides3::btc(scan);
  scan_forward(exec, scan_forward_args<real_op<T>>{scan, chunk_decay.data(), layout, chunk_increment.data(), layout,
                                                   chunk_end.data(), layout, state_in, state_out});
  for (index_t pair = 0; pair < pairs; ++pair)
    for (index_t chunk = 0; chunk < chunks; ++chunk) {
      T* start = chunk_states + (pair * chunks + chunk) * nn;
      if (chunk > 0) {
        const T* previous_end = &chunk_end[static_cast<std::size_t>((pair * chunks + chunk - 1) * nn)];
        std::copy(previous_end, previous_end + nn, start);
      } else if (state_in) {
        std::copy(state_in + pair * nn, state_in + (pair + 1) * nn, start);
      } else {
        std::fill(start, start + nn, T(0));
      }
    }
    // Phase 3: outputs of every chunk from its start state, the intra-chunk pairs and the bonus.
#pragma omp parallel for collapse(2) num_threads(wkv6_impl::threads_for(exec, pairs* chunks))
  for (index_t pair = 0; pair < pairs; ++pair)
    for (index_t chunk = 0; chunk < chunks; ++chunk) {
      const index_t b = pair / s.heads, h = pair % s.heads;
      const auto hv = wkv6_impl::view_of(s, b, h, r, k, v, step_decay.data(), u);  // hv.w: d
      T* y_head = y + b * s.time * s.channels() + h * n;
      const T* start = chunk_states + (pair * chunks + chunk) * nn;
      const index_t t0 = chunk * chunk_length, t1 = std::min(s.time, t0 + chunk_length);
      std::vector<T> before(static_cast<std::size_t>(n), T(1));  // e^{c_{t-1}}, per key j
      for (index_t t = t0; t < t1; ++t) {
        T* out = y_head + t * hv.stride;
        T bonus = 0;
#pragma omp simd reduction(+ : bonus)
        for (index_t j = 0; j < n; ++j) bonus += hv.r[t * hv.stride + j] * hv.u[j] * hv.k[t * hv.stride + j];
        for (index_t i = 0; i < n; ++i) out[i] = bonus * hv.v[t * hv.stride + i];
        for (index_t j = 0; j < n; ++j) {  // (r ⊙ e^{c_{t-1}})ᵀ S_start
          const T weight = hv.r[t * hv.stride + j] * before[static_cast<std::size_t>(j)];
          for (index_t i = 0; i < n; ++i) out[i] += weight * start[j * n + i];
          before[static_cast<std::size_t>(j)] *= hv.w[t * hv.stride + j];
        }
      }
      // Σ_{s<t} A[t,s] v_s, source-major: the pair weight e^{c_{t-1} - c_s} = ∏_{s<q<t} d_q grows
      // one factor per output step. Each out[t] still receives its sources in increasing s.
      std::vector<T> pair_decay(static_cast<std::size_t>(n));
      for (index_t src = t0; src + 1 < t1; ++src) {
        std::fill(pair_decay.begin(), pair_decay.end(), T(1));
        const T* k_src = hv.k + src * hv.stride;
        const T* v_src = hv.v + src * hv.stride;
        for (index_t t = src + 1; t < t1; ++t) {
          const T* r_t = hv.r + t * hv.stride;
          const T* d_t = hv.w + t * hv.stride;
          T attention = 0;
#pragma omp simd reduction(+ : attention)
          for (index_t j = 0; j < n; ++j) attention += r_t[j] * k_src[j] * pair_decay[static_cast<std::size_t>(j)];
          T* out = y_head + t * hv.stride;
          for (index_t i = 0; i < n; ++i) out[i] += attention * v_src[i];
          for (index_t j = 0; j < n; ++j) pair_decay[static_cast<std::size_t>(j)] *= d_t[j];
        }
      }
    }
}

// Gradients given dy (and optionally d_state_out): dr, dk, dv, dw [B,T,C] and du [C]
// (overwritten), and d_state_in [B,H,N,N] when not null. chunk_states is the forward's.
template <class T>
void wkv6_backward(const cpu& exec, const wkv6_shapes& s, const T* r, const T* k, const T* v, const T* w, const T* u,
                   const T* chunk_states, const T* dy, const T* d_state_out, T* dr, T* dk, T* dv, T* dw, T* du,
                   index_t chunk_length = wkv6_chunk_length, T* d_state_in = nullptr) {
  LINREC_CHECK(r && k && v && w && u && chunk_states && dy && dr && dk && dv && dw && du,
               "wkv6_backward: a required pointer is null");
  const index_t n = s.head_size, nn = n * n, chunks = (s.time + chunk_length - 1) / chunk_length;
  const index_t pairs = s.batch * s.heads;
  const int threads = wkv6_impl::threads_for(exec, pairs * chunks);
  // ∂L/∂u per (pair, chunk), summed in a fixed order afterwards: results do not depend on
  // thread scheduling (bitwise-reproducible training).
  host_buffer<T> du_partial(static_cast<std::size_t>(pairs * chunks * n), T(0));
  // Direct adjoint of each chunk's start state from its own outputs, G = Σ_t (r_t ⊙ e^{c_{t-1}}) dy_tᵀ,
  // and the chunk decays, as in the forward.
  host_buffer<T> exp_w;
  const host_buffer<T> step_decay = wkv6_impl::step_decays(exec, w, s.elements(), &exp_w);
  host_buffer<T> direct(static_cast<std::size_t>(pairs * chunks * nn)), decay(direct.size());
#pragma omp parallel for collapse(2) num_threads(threads)
  for (index_t pair = 0; pair < pairs; ++pair)
    for (index_t chunk = 0; chunk < chunks; ++chunk) {
      const index_t b = pair / s.heads, h = pair % s.heads;
      // hv.w reads the step decays d = exp(-exp(w)).
      const auto hv = wkv6_impl::view_of(s, b, h, r, k, v, step_decay.data(), u);
      const T* dy_head = dy + b * s.time * s.channels() + h * n;
      const index_t t0 = chunk * chunk_length, t1 = std::min(s.time, t0 + chunk_length);
      T* g = &direct[static_cast<std::size_t>((pair * chunks + chunk) * nn)];
      T* a = &decay[static_cast<std::size_t>((pair * chunks + chunk) * nn)];
      std::fill(g, g + nn, T(0));
      for (index_t j = 0; j < n; ++j) {
        T earlier_decay = 1;  // e^{c_{t-1}}
        for (index_t t = t0; t < t1; ++t) {
          const T weight = hv.r[t * hv.stride + j] * earlier_decay;
          for (index_t i = 0; i < n; ++i) g[j * n + i] += weight * dy_head[t * hv.stride + i];
          earlier_decay *= hv.w[t * hv.stride + j];
        }
        std::fill(a + j * n, a + (j + 1) * n, earlier_decay);
      }
    }
  // Adjoint of each chunk's end state: reverse scan over chunks. Chunk n's end is chunk n+1's
  // start (upstream G[n+1]); the last end gets d_state_out.
  const scan_shape scan{pairs, chunks, nn};
  const auto layout = strides3::btc(scan);
  host_buffer<T> upstream(direct.size()), end_adjoint(direct.size()), unused_da(direct.size()), ends(direct.size());
  for (index_t pair = 0; pair < pairs; ++pair) {
    // The last chunk's upstream is d_state_out (passed separately); its end is not stored.
    const std::size_t last = static_cast<std::size_t>((pair * chunks + chunks - 1) * nn);
    std::fill(&upstream[last], &upstream[last] + nn, T(0));
    std::fill(&ends[last], &ends[last] + nn, T(0));
  }
  for (index_t pair = 0; pair < pairs; ++pair)
    for (index_t chunk = 0; chunk + 1 < chunks; ++chunk) {
      const T* from = &direct[static_cast<std::size_t>((pair * chunks + chunk + 1) * nn)];
      std::copy(from, from + nn, &upstream[static_cast<std::size_t>((pair * chunks + chunk) * nn)]);
      std::copy(chunk_states + (pair * chunks + chunk + 1) * nn, chunk_states + (pair * chunks + chunk + 2) * nn,
                &ends[static_cast<std::size_t>((pair * chunks + chunk) * nn)]);
    }
  // The scan's backward needs its forward output h (chunk ends) only for da, which the
  // per-step pass below recomputes; the last end is not stored, so pass the known ones.
  scan_backward(exec, scan_backward_args<real_op<T>>{scan, decay.data(), layout, ends.data(), layout, nullptr,
                                                     upstream.data(), layout, d_state_out, unused_da.data(), layout,
                                                     end_adjoint.data(), layout, nullptr});
  // Per chunk: recompute the states of every step from the chunk start, then walk back.
#pragma omp parallel for collapse(2) num_threads(threads)
  for (index_t pair = 0; pair < pairs; ++pair)
    for (index_t chunk = 0; chunk < chunks; ++chunk) {
      const index_t b = pair / s.heads, h = pair % s.heads;
      const auto hv = wkv6_impl::view_of(s, b, h, r, k, v, step_decay.data(), u);  // hv.w: d
      const index_t offset = b * s.time * s.channels() + h * n;
      const T* dy_head = dy + offset;
      const index_t t0 = chunk * chunk_length, t1 = std::min(s.time, t0 + chunk_length), len = t1 - t0;
      host_buffer<T> states(static_cast<std::size_t>((len + 1) * nn));  // states[τ] = S before step t0+τ
      std::copy(chunk_states + (pair * chunks + chunk) * nn, chunk_states + (pair * chunks + chunk + 1) * nn,
                states.begin());
      for (index_t tau = 0; tau < len; ++tau) {
        const index_t t = t0 + tau;
        const T* before = &states[static_cast<std::size_t>(tau * nn)];
        T* after = &states[static_cast<std::size_t>((tau + 1) * nn)];
        for (index_t j = 0; j < n; ++j) {
          const T d = hv.w[t * hv.stride + j], kj = hv.k[t * hv.stride + j];
          for (index_t i = 0; i < n; ++i) after[j * n + i] = d * before[j * n + i] + kj * hv.v[t * hv.stride + i];
        }
      }
      std::vector<T> adjoint(end_adjoint.begin() + (pair * chunks + chunk) * nn,
                             end_adjoint.begin() + (pair * chunks + chunk + 1) * nn);  // ∂L/∂S_t, t = t1-1 first
      T* du_local = &du_partial[static_cast<std::size_t>((pair * chunks + chunk) * n)];
      for (index_t t = t1 - 1; t >= t0; --t) {
        const T* before = &states[static_cast<std::size_t>((t - t0) * nn)];
        const T* rt = hv.r + t * hv.stride;
        const T* kt = hv.k + t * hv.stride;
        const T* vt = hv.v + t * hv.stride;
        const T* dyt = dy_head + t * hv.stride;
        // The dot products over a head may be summed in any order (omp simd): vector lanes.
        T dy_dot_v = 0;
#pragma omp simd reduction(+ : dy_dot_v)
        for (index_t i = 0; i < n; ++i) dy_dot_v += dyt[i] * vt[i];
        T bonus = 0;  // Σ_j r u k
#pragma omp simd reduction(+ : bonus)
        for (index_t j = 0; j < n; ++j) bonus += rt[j] * hv.u[j] * kt[j];
        // dv = adjointᵀ k + bonus dy, accumulated row by row of the adjoint (contiguous in i).
        T* dv_t = dv + offset + t * hv.stride;
        std::fill(dv_t, dv_t + n, T(0));
        for (index_t j = 0; j < n; ++j) {
          const T* adjoint_row = &adjoint[static_cast<std::size_t>(j * n)];
          for (index_t i = 0; i < n; ++i) dv_t[i] += adjoint_row[i] * kt[j];
        }
        for (index_t i = 0; i < n; ++i) dv_t[i] += bonus * dyt[i];
        for (index_t j = 0; j < n; ++j) {
          T from_state_k = 0, state_dot = 0, readout = 0;
#pragma omp simd reduction(+ : from_state_k, state_dot, readout)
          for (index_t i = 0; i < n; ++i) {
            const T adj = adjoint[static_cast<std::size_t>(j * n + i)];
            from_state_k += adj * vt[i];
            state_dot += adj * before[j * n + i];
            readout += dyt[i] * before[j * n + i];
          }
          const T d = hv.w[t * hv.stride + j];
          dr[offset + t * hv.stride + j] = hv.u[j] * kt[j] * dy_dot_v + readout;
          dk[offset + t * hv.stride + j] = from_state_k + rt[j] * hv.u[j] * dy_dot_v;
          du_local[j] += rt[j] * kt[j] * dy_dot_v;
          // ∂d/∂w = d · (-e^w)
          dw[offset + t * hv.stride + j] = state_dot * d * -exp_w[static_cast<std::size_t>(offset + t * hv.stride + j)];
          // ∂L/∂S_{t-1} = d ⊙ ∂L/∂S_t + r ⊗ dy
          for (index_t i = 0; i < n; ++i)
            adjoint[static_cast<std::size_t>(j * n + i)] =
                d * adjoint[static_cast<std::size_t>(j * n + i)] + rt[j] * dyt[i];
        }
      }
      // After the first chunk's walk back, the adjoint is that of the initial state.
      if (chunk == 0 && d_state_in) std::copy(adjoint.begin(), adjoint.end(), d_state_in + pair * nn);
    }
  std::fill(du, du + s.channels(), T(0));
  for (index_t pair = 0; pair < pairs; ++pair)
    for (index_t chunk = 0; chunk < chunks; ++chunk)
      for (index_t j = 0; j < n; ++j)
        du[(pair % s.heads) * n + j] += du_partial[static_cast<std::size_t>((pair * chunks + chunk) * n + j)];
}

}  // namespace linrec::layers::detail
