#pragma once
// The operators a scan is generic over. Each supplies the types of a (decay), b/h (value) and
// of gradients, and the few element functions the scan needs:
//
//   step(a, h, b)            = a ⊙ h + b                      one forward step
//   compose(a1, a2)          = a1 ⊙ a2                        product of decays, a1 earlier
//   grad_step(a, g, dh)      = dh + conj(a) ⊙ g               one backward step
//   decay_grad(g, h_prev, a) = ∂L/∂a given g = ∂L/∂h[t] total  da[t]
//
// `step` with a composed decay is also how a chunk carry is applied (h[t] += P[t] ⊙ carry), so
// the chunked algorithms need nothing else. The functions are written with plain arithmetic
// (no std::complex operator*, which calls a NaN-handling library routine and blocks
// vectorisation) and are usable from CUDA device code.
#include <cmath>
#include <complex>

#include "linrec/core/host_device.hpp"

namespace linrec {

// h[t] = a[t] ⊙ h[t-1] + b[t] over float or double.
template <class T>
struct real_op {
  using scalar_type = T;
  using decay_type = T;
  using value_type = T;
  using grad_type = T;
  using decay_grad_type = T;

  LINREC_HOST_DEVICE static constexpr decay_type decay_identity() { return T(1); }
  LINREC_HOST_DEVICE static constexpr value_type zero_value() { return T(0); }
  LINREC_HOST_DEVICE static constexpr grad_type zero_grad() { return T(0); }
  LINREC_HOST_DEVICE static value_type step(decay_type a, value_type h, value_type b) { return a * h + b; }
  LINREC_HOST_DEVICE static decay_type compose(decay_type a1, decay_type a2) { return a1 * a2; }
  LINREC_HOST_DEVICE static grad_type grad_step(decay_type a, grad_type g, grad_type dh) { return a * g + dh; }
  LINREC_HOST_DEVICE static decay_grad_type decay_grad(grad_type g, value_type h_prev, decay_type) {
    return g * h_prev;
  }
};

// Complex diagonal recurrences (LRU, S4D). Gradients use the convention
// grad = ∂L/∂Re + i ∂L/∂Im for a real loss L, so da = g ⊙ conj(h_prev) and g picks up conj(a).
template <class T>
struct complex_op {
  using scalar_type = T;
  using decay_type = std::complex<T>;
  using value_type = std::complex<T>;
  using grad_type = std::complex<T>;
  using decay_grad_type = std::complex<T>;

  LINREC_HOST_DEVICE static constexpr decay_type decay_identity() { return {T(1), T(0)}; }
  LINREC_HOST_DEVICE static constexpr value_type zero_value() { return {T(0), T(0)}; }
  LINREC_HOST_DEVICE static constexpr grad_type zero_grad() { return {T(0), T(0)}; }
  // a ⊙ h + b
  LINREC_HOST_DEVICE static value_type step(decay_type a, value_type h, value_type b) {
    return {a.real() * h.real() - a.imag() * h.imag() + b.real(), a.real() * h.imag() + a.imag() * h.real() + b.imag()};
  }
  LINREC_HOST_DEVICE static decay_type compose(decay_type a1, decay_type a2) {
    return {a1.real() * a2.real() - a1.imag() * a2.imag(), a1.real() * a2.imag() + a1.imag() * a2.real()};
  }
  // conj(a) ⊙ g + dh
  LINREC_HOST_DEVICE static grad_type grad_step(decay_type a, grad_type g, grad_type dh) {
    return {a.real() * g.real() + a.imag() * g.imag() + dh.real(),
            a.real() * g.imag() - a.imag() * g.real() + dh.imag()};
  }
  // g ⊙ conj(h_prev)
  LINREC_HOST_DEVICE static decay_grad_type decay_grad(grad_type g, value_type h_prev, decay_type) {
    return {g.real() * h_prev.real() + g.imag() * h_prev.imag(), g.imag() * h_prev.real() - g.real() * h_prev.imag()};
  }
};

// A real number stored as scale · e^exponent, so that sums of e^k·v never overflow even where
// e^k does in float. `exponent` is the running maximum exponent (RWKV-4's `pp`).
template <class T>
struct log_value {
  T scale;
  T exponent;
  LINREC_HOST_DEVICE T to_real() const {
    using std::exp;
    return scale * exp(exponent);
  }
};

// Log-space recurrence (RWKV-4 WKV numerator/denominator):
//   H[t] = e^{a[t]} · H[t-1] + B[t],   a = log-decay (e.g. -w), H and B as log_value.
//   step: M = max(m_h + a, m_b);  s = s_h·e^{m_h + a - M} + s_b·e^{m_b - M}
// Gradients are taken with respect to the real numbers H and B (stored as log_value, since
// they can be as large or small as the values); da is ∂L/∂(log-decay), a plain real.
template <class T>
struct log_op {
  using scalar_type = T;
  using decay_type = T;
  using value_type = log_value<T>;
  using grad_type = log_value<T>;
  using decay_grad_type = T;

  // A finite "minus infinity" keeps max/subtract NaN-free when both sides are empty (the
  // reference RWKV-4 kernel starts from the same -1e38).
  LINREC_HOST_DEVICE static constexpr T empty_exponent() { return T(-1e38); }
  LINREC_HOST_DEVICE static constexpr decay_type decay_identity() { return T(0); }
  LINREC_HOST_DEVICE static constexpr value_type zero_value() { return {T(0), empty_exponent()}; }
  LINREC_HOST_DEVICE static constexpr grad_type zero_grad() { return {T(0), empty_exponent()}; }
  LINREC_HOST_DEVICE static value_type step(decay_type a, value_type h, value_type b) {
    using std::exp;
    const T decayed = h.exponent + a;
    const T m = decayed > b.exponent ? decayed : b.exponent;
    return {h.scale * exp(decayed - m) + b.scale * exp(b.exponent - m), m};
  }
  LINREC_HOST_DEVICE static decay_type compose(decay_type a1, decay_type a2) { return a1 + a2; }
  LINREC_HOST_DEVICE static grad_type grad_step(decay_type a, grad_type g, grad_type dh) { return step(a, g, dh); }
  // ∂L/∂a = G · e^a · H_prev
  LINREC_HOST_DEVICE static decay_grad_type decay_grad(grad_type g, value_type h_prev, decay_type a) {
    using std::exp;
    return g.scale * h_prev.scale * exp(g.exponent + a + h_prev.exponent);
  }
};

}  // namespace linrec
