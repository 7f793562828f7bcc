#pragma once
// RWKV-4's WKV as one sequential recurrence per lane (b, c): the per-thread math of the CUDA
// kernels (layers/cuda.cuh), host-and-device so that the CPU tests check it against
// wkv4_forward / wkv4_backward (wkv4.hpp). The arithmetic is wkv4.hpp's: bonus_step for the
// outputs, log_op's step for N and D, and the sequential scan's order for the backward.
//
// A lane's arrays step by `stride` (= C) per time step: pass pointers to element (b, 0, c).
// Time-mix decays arrive as time_decay (w = e^{time_decay}); states as (scale, exponent) pairs.
#include "linrec/core/host_device.hpp"
#include "linrec/core/index.hpp"
#include "linrec/layers/detail/wkv4.hpp"
#include "linrec/scan/operators.hpp"

namespace linrec::layers::detail {

// Forward of one lane: y, the scans N and D per step (the backward reads them), the final states.
// num0/den0: the lane's initial states or null (empty).
template <class T>
LINREC_HOST_DEVICE void wkv4_lane_forward(index_t time, index_t stride, T time_decay, T u, const T* k, const T* v,
                                          const log_value<T>* num0, const log_value<T>* den0, T* y, log_value<T>* num,
                                          log_value<T>* den, log_value<T>* num_final, log_value<T>* den_final) {
  using std::exp;
  const T a = -exp(time_decay);  // the log-decay −w
  log_value<T> n = num0 ? *num0 : log_op<T>::zero_value(), d = den0 ? *den0 : log_op<T>::zero_value();
  for (index_t t = 0; t < time; ++t) {
    const index_t at = t * stride;
    const auto terms = wkv4_impl::bonus_step(n, d, u, k[at], v[at]);
    y[at] = terms.n / terms.d;
    n = log_op<T>::step(a, n, log_value<T>{v[at], k[at]});
    d = log_op<T>::step(a, d, log_value<T>{T(1), k[at]});
    num[at] = n;
    den[at] = d;
  }
  if (num_final) *num_final = n;
  if (den_final) *den_final = d;
}

// ∂L/∂(s, m) of a value (s, m) → ∂L/∂(s·e^m) in log form (zero for an empty value).
template <class T>
LINREC_HOST_DEVICE log_value<T> log_grad_of(T d_scale, log_value<T> value) {
  const bool empty = value.exponent <= log_op<T>::empty_exponent() * T(0.5);
  return {empty ? T(0) : d_scale, empty ? T(0) : -value.exponent};
}
// ∂L/∂(s·e^m) in log form → ∂L/∂s = G·e^m, ∂L/∂m = G·s·e^m.
template <class T>
LINREC_HOST_DEVICE log_value<T> coordinates_of(log_value<T> grad, log_value<T> value) {
  using std::exp;
  const T ds = grad.scale * exp(grad.exponent + value.exponent);
  return {ds, ds * value.scale};
}

// Backward of one lane. Reads the forward's num/den; dy (null: zero); d_num_final/d_den_final:
// coordinate gradients of the final states (null: zero). Writes dk, dv (every step), this lane's
// shares of ∂L/∂time_decay and ∂L/∂u, and the initial states' coordinate gradients (if asked).
template <class T>
LINREC_HOST_DEVICE void wkv4_lane_backward(index_t time, index_t stride, T time_decay, T u, const T* k, const T* v,
                                           const log_value<T>* num0, const log_value<T>* den0, const log_value<T>* num,
                                           const log_value<T>* den, const T* dy, const log_value<T>* d_num_final,
                                           const log_value<T>* d_den_final, T* dk, T* dv, T* d_time_decay, T* du,
                                           log_value<T>* d_num0, log_value<T>* d_den0) {
  using std::exp;
  const T w = exp(time_decay), a = -w;
  const log_value<T> n0 = num0 ? *num0 : log_op<T>::zero_value(), e0 = den0 ? *den0 : log_op<T>::zero_value();
  const log_value<T> zero = log_op<T>::zero_grad();
  // G_N, G_D: ∂L/∂N_t, ∂L/∂D_t (log form) as the sequential scan carries them backwards.
  log_value<T> g_num = zero, g_den = zero;
  if (d_num_final) g_num = log_grad_of(d_num_final->scale, num[(time - 1) * stride]);
  if (d_den_final) g_den = log_grad_of(d_den_final->scale, den[(time - 1) * stride]);
  // ∂L/∂N_t, ∂L/∂D_t from their direct use at step t+1 (none after the last step).
  log_value<T> direct_num = zero, direct_den = zero;
  T a_next = log_op<T>::decay_identity(), dw_sum = T(0), du_sum = T(0);
  for (index_t t = time - 1; t >= 0; --t) {
    const index_t at = t * stride;
    const log_value<T> prev_num = t > 0 ? num[at - stride] : n0, prev_den = t > 0 ? den[at - stride] : e0;
    const auto terms = wkv4_impl::bonus_step(prev_num, prev_den, u, k[at], v[at]);
    const T y = terms.n / terms.d;
    const T g = (dy ? dy[at] : T(0)) / terms.d;  // ∂L/∂n in units of e^{-M}
    const T dq = g * (v[at] - y) * terms.bonus;  // ∂L/∂(u + k) through the bonus term
    g_num = log_op<T>::grad_step(a_next, g_num, direct_num);
    g_den = log_op<T>::grad_step(a_next, g_den, direct_den);
    const T da = log_op<T>::decay_grad(g_num, prev_num, a) + log_op<T>::decay_grad(g_den, prev_den, a);
    a_next = a;
    direct_num = {g, -terms.m};
    direct_den = {-g * y, -terms.m};
    // N's input is e^k·v, D's is e^k: ∂/∂v = G_N e^k, ∂/∂k = G_N e^k v + G_D e^k.
    const T num_input_grad = g_num.scale * exp(g_num.exponent + k[at]);
    const T den_input_grad = g_den.scale * exp(g_den.exponent + k[at]);
    dv[at] = g * terms.bonus + num_input_grad;
    dk[at] = dq + num_input_grad * v[at] + den_input_grad;
    du_sum += dq;
    dw_sum -= da;
  }
  *d_time_decay = dw_sum * w;  // w = e^{time_decay}
  *du = du_sum;
  if (d_num0) {
    const log_value<T> scanned = log_op<T>::grad_step(a_next, g_num, zero);
    *d_num0 = coordinates_of(log_op<T>::grad_step(T(0), scanned, direct_num), n0);
  }
  if (d_den0) {
    const log_value<T> scanned = log_op<T>::grad_step(a_next, g_den, zero);
    *d_den0 = coordinates_of(log_op<T>::grad_step(T(0), scanned, direct_den), e0);
  }
}

}  // namespace linrec::layers::detail
