#pragma once
// RWKV-4's WKV on raw [B,T,C] arrays, forward and backward, on top of the log-space scan.
//
//   wkv[t] = (N[t-1] + e^{u+k[t]} v[t]) / (D[t-1] + e^{u+k[t]})
//   N[t] = e^{-w} N[t-1] + e^{k[t]} v[t],   D[t] = e^{-w} D[t-1] + e^{k[t]}
//
// N and D are log-space scans (value = scale·e^exponent) with a per-channel log-decay -w, so
// no e^k is ever formed on its own: large keys cannot overflow float. The forward keeps N and
// D ([B,T,C] each) for the backward.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "linrec/core/error.hpp"
#include "linrec/core/exec.hpp"
#include "linrec/core/host_device.hpp"
#include "linrec/scan/scan.hpp"
#include "linrec/tensor/host_cache.hpp"

namespace linrec::layers::detail {

template <class T>
struct wkv4_shapes {
  index_t batch, time, channels;
  index_t elements() const { return batch * time * channels; }
  scan_shape scan() const { return {batch, time, channels}; }
};

namespace wkv4_impl {

// The state before step t of row (b, c): the previous scan output, the initial state, or empty.
template <class T>
log_value<T> previous(const log_value<T>* scanned, const log_value<T>* initial, index_t b, index_t t, index_t c,
                      const wkv4_shapes<T>& s) {
  if (t > 0) return scanned[(b * s.time + t - 1) * s.channels + c];
  return initial ? initial[b * s.channels + c] : log_op<T>::zero_value();
}

// The bonus step shared by forward and backward: n, d relative to a common exponent M.
template <class T>
struct bonus_terms {
  T n, d, bonus, m;  // wkv = n / d; bonus = e^{u + k - M}
};

// Host and device (the CUDA lanes of wkv4_lane.hpp run it too).
template <class T>
LINREC_HOST_DEVICE bonus_terms<T> bonus_step(log_value<T> num_prev, log_value<T> den_prev, T u, T k, T v) {
  using std::exp;
  const T q = u + k;
  const T m0 = num_prev.exponent > den_prev.exponent ? num_prev.exponent : den_prev.exponent;
  const T m = m0 > q ? m0 : q;
  const T bonus = exp(q - m);
  return {num_prev.scale * exp(num_prev.exponent - m) + v * bonus, den_prev.scale * exp(den_prev.exponent - m) + bonus,
          bonus, m};
}

inline int threads_for(const cpu& exec, index_t elements) {
  return elements < 32768 ? 1 : (exec.threads > 0 ? exec.threads : omp_get_max_threads());
}

}  // namespace wkv4_impl

// w = e^{time_decay} > 0 and u = time_first, both [C]; k, v [B,T,C]; num0/den0 [B,C] or null.
// Writes y [B,T,C], the scans num/den [B,T,C], and the final states if asked for.
template <class T>
void wkv4_forward(const cpu& exec, const wkv4_shapes<T>& s, const T* w, const T* u, const T* k, const T* v,
                  const std::type_identity_t<log_value<T>>* num0, const std::type_identity_t<log_value<T>>* den0, T* y,
                  log_value<T>* num, log_value<T>* den, log_value<T>* num_final = nullptr,
                  log_value<T>* den_final = nullptr) {
  LINREC_CHECK(w && u && k && v && y && num && den, "wkv4_forward: a required pointer is null");
  host_buffer<T> log_decay(static_cast<std::size_t>(s.channels));
  for (index_t c = 0; c < s.channels; ++c) {
    LINREC_CHECK(w[c] > 0 && std::isfinite(w[c]), "wkv4_forward: decay w[" << c << "] = " << w[c] << ", expected > 0");
    log_decay[c] = -w[c];
  }
  const auto n = static_cast<std::size_t>(s.elements());
  host_buffer<log_value<T>> weighted_values(n), weights(n);  // written in full below
  for (std::size_t i = 0; i < n; ++i) {
    weighted_values[i] = {v[i], k[i]};  // e^k · v
    weights[i] = {T(1), k[i]};          // e^k
  }
  const auto btc = strides3::btc(s.scan());
  scan_forward(exec, scan_forward_args<log_op<T>>{s.scan(), log_decay.data(), strides3::per_channel(),
                                                  weighted_values.data(), btc, num, btc, num0, num_final});
  scan_forward(exec, scan_forward_args<log_op<T>>{s.scan(), log_decay.data(), strides3::per_channel(), weights.data(),
                                                  btc, den, btc, den0, den_final});
  const index_t rows = s.batch * s.time;
#pragma omp parallel for num_threads(wkv4_impl::threads_for(exec, s.elements()))
  for (index_t row = 0; row < rows; ++row) {
    const index_t b = row / s.time, t = row % s.time;
    for (index_t c = 0; c < s.channels; ++c) {
      const index_t i = row * s.channels + c;
      const auto terms = wkv4_impl::bonus_step(wkv4_impl::previous(num, num0, b, t, c, s),
                                               wkv4_impl::previous(den, den0, b, t, c, s), u[c], k[i], v[i]);
      y[i] = terms.n / terms.d;
    }
  }
}

// Optional state gradients of wkv4_backward, all [B,C], in log form (∂L/∂ of the real value
// N or D, stored as scale·e^exponent): in from the final states, out to the initial ones.
template <class T>
struct wkv4_state_grads {
  const log_value<T>* d_num_final = nullptr;
  const log_value<T>* d_den_final = nullptr;
  log_value<T>* d_num0 = nullptr;
  log_value<T>* d_den0 = nullptr;
};

// Gradients of L given dy = ∂L/∂y: dw, du [C] (overwritten), dk, dv [B,T,C] (overwritten),
// and the state gradients when asked for.
template <class T>
void wkv4_backward(const cpu& exec, const wkv4_shapes<T>& s, const T* w, const T* u, const T* k, const T* v,
                   const std::type_identity_t<log_value<T>>* num0, const std::type_identity_t<log_value<T>>* den0,
                   const log_value<T>* num, const log_value<T>* den, const T* dy, T* dw, T* du, T* dk, T* dv,
                   const wkv4_state_grads<T>& state_grads = {}) {
  LINREC_CHECK(w && u && k && v && num && den && dy && dw && du && dk && dv,
               "wkv4_backward: a required pointer is null");
  const auto n_state = static_cast<std::size_t>(s.batch * s.channels);
  // ∂L/∂N0, ∂L/∂D0 through their direct use at t = 0 (the scan adds the rest).
  host_buffer<log_value<T>> direct_num0(n_state, log_op<T>::zero_grad()), direct_den0(n_state, log_op<T>::zero_grad());
  const auto n = static_cast<std::size_t>(s.elements());
  // ∂L/∂N[t], ∂L/∂D[t] from their use at step t+1 (none at the last step), in log form.
  host_buffer<log_value<T>> dnum(n, log_op<T>::zero_grad()), dden(n, log_op<T>::zero_grad());
  host_buffer<T> dq(n);  // written in full below
  const index_t rows = s.batch * s.time;
#pragma omp parallel for num_threads(wkv4_impl::threads_for(exec, s.elements()))
  for (index_t row = 0; row < rows; ++row) {
    const index_t b = row / s.time, t = row % s.time;
    for (index_t c = 0; c < s.channels; ++c) {
      const index_t i = row * s.channels + c;
      const auto terms = wkv4_impl::bonus_step(wkv4_impl::previous(num, num0, b, t, c, s),
                                               wkv4_impl::previous(den, den0, b, t, c, s), u[c], k[i], v[i]);
      const T y = terms.n / terms.d;
      const T g = dy[i] / terms.d;  // ∂L/∂n, in units of e^{-M}
      if (t > 0) {
        dnum[static_cast<std::size_t>(i - s.channels)] = {g, -terms.m};
        dden[static_cast<std::size_t>(i - s.channels)] = {-g * y, -terms.m};
      } else {
        direct_num0[static_cast<std::size_t>(b * s.channels + c)] = {g, -terms.m};
        direct_den0[static_cast<std::size_t>(b * s.channels + c)] = {-g * y, -terms.m};
      }
      dq[i] = g * (v[i] - y) * terms.bonus;  // ∂L/∂(u + k) through the bonus term
      dv[i] = g * terms.bonus;
    }
  }
  host_buffer<T> log_decay(static_cast<std::size_t>(s.channels));
  for (index_t c = 0; c < s.channels; ++c) log_decay[static_cast<std::size_t>(c)] = -w[c];
  // Outputs of the two scans below, every element written.
  host_buffer<T> da_num(n), da_den(n);
  host_buffer<log_value<T>> db_num(n), db_den(n), scan_dnum0(n_state), scan_dden0(n_state);
  const auto btc = strides3::btc(s.scan());
  scan_backward(exec, scan_backward_args<log_op<T>>{s.scan(), log_decay.data(), strides3::per_channel(), num, btc, num0,
                                                    dnum.data(), btc, state_grads.d_num_final, da_num.data(), btc,
                                                    db_num.data(), btc, scan_dnum0.data()});
  scan_backward(exec, scan_backward_args<log_op<T>>{s.scan(), log_decay.data(), strides3::per_channel(), den, btc, den0,
                                                    dden.data(), btc, state_grads.d_den_final, da_den.data(), btc,
                                                    db_den.data(), btc, scan_dden0.data()});
  for (std::size_t i = 0; i < n_state; ++i) {
    if (state_grads.d_num0) state_grads.d_num0[i] = log_op<T>::grad_step(T(0), scan_dnum0[i], direct_num0[i]);
    if (state_grads.d_den0) state_grads.d_den0[i] = log_op<T>::grad_step(T(0), scan_dden0[i], direct_den0[i]);
  }
  std::fill(dw, dw + s.channels, T(0));
  std::fill(du, du + s.channels, T(0));
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<index_t>(i % static_cast<std::size_t>(s.channels));
    // N's input is e^k·v, D's is e^k: ∂/∂v = G_N e^k, ∂/∂k = G_N e^k v + G_D e^k.
    const T num_input_grad = db_num[i].scale * std::exp(db_num[i].exponent + k[i]);
    const T den_input_grad = db_den[i].scale * std::exp(db_den[i].exponent + k[i]);
    dv[i] += num_input_grad;
    dk[i] = dq[i] + num_input_grad * v[i] + den_input_grad;
    du[c] += dq[i];
    dw[c] -= da_num[i] + da_den[i];  // the log-decay is -w
  }
}

}  // namespace linrec::layers::detail
