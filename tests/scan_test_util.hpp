#pragma once
// Shared helpers of the scan tests: random inputs per operator, conversion to the
// double-precision reference, and norm-wise relative error (‖x − ref‖ / ‖ref‖).
#include <cmath>
#include <complex>
#include <random>
#include <vector>

#include "linrec/scan/scan.hpp"

namespace linrec::test {

// Decay regimes the tests sweep: typical, close to 1 (long memory) and close to 0.
enum class decay_regime { typical, near_one, near_zero };

template <class T>
T random_decay(std::mt19937_64& rng, decay_regime regime) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  switch (regime) {
    case decay_regime::near_one:
      return T(1.0 - 1e-4 * (0.1 + u(rng)));
    case decay_regime::near_zero:
      return T(1e-4 * u(rng));
    default:
      return T(0.5 + 0.49 * u(rng));
  }
}

// Per-operator test support: random elements, and real-valued double views for comparison.
template <class Op>
struct op_traits;

template <class T>
struct op_traits<real_op<T>> {
  using reference_op = real_op<double>;
  static T decay(std::mt19937_64& rng, decay_regime r) { return random_decay<T>(rng, r); }
  static T value(std::mt19937_64& rng) { return T(std::normal_distribution<double>(0.0, 1.0)(rng)); }
  static double to_reference_decay(T a) { return a; }
  static double to_reference_value(T v) { return v; }
  static void flatten(double x, std::vector<double>& out) { out.push_back(x); }
  static T grad(std::mt19937_64& rng) { return value(rng); }
  static double grad_to_reference(T g) { return g; }
  // The reference's ∂L/∂a, expressed as this operator's decay gradient.
  static double reference_decay_grad(double ref_da, T) { return ref_da; }
  static double decay_grad_to_reference(T da) { return da; }
};

template <class T>
struct op_traits<complex_op<T>> {
  using reference_op = complex_op<double>;
  static std::complex<T> decay(std::mt19937_64& rng, decay_regime r) {
    const double radius = random_decay<double>(rng, r);
    const double phase = std::uniform_real_distribution<double>(-3.14159, 3.14159)(rng);
    return {T(radius * std::cos(phase)), T(radius * std::sin(phase))};
  }
  static std::complex<T> value(std::mt19937_64& rng) {
    std::normal_distribution<double> n(0.0, 1.0);
    return {T(n(rng)), T(n(rng))};
  }
  static std::complex<double> to_reference_decay(std::complex<T> a) { return {a.real(), a.imag()}; }
  static std::complex<double> to_reference_value(std::complex<T> v) { return {v.real(), v.imag()}; }
  static void flatten(std::complex<double> x, std::vector<double>& out) {
    out.push_back(x.real());
    out.push_back(x.imag());
  }
  static std::complex<T> grad(std::mt19937_64& rng) { return value(rng); }
  static std::complex<double> grad_to_reference(std::complex<T> g) { return {g.real(), g.imag()}; }
  static std::complex<double> reference_decay_grad(std::complex<double> ref_da, std::complex<T>) { return ref_da; }
  static std::complex<double> decay_grad_to_reference(std::complex<T> da) { return {da.real(), da.imag()}; }
};

// Log space: values v·e^k with |k| up to 100, where e^k overflows float. The reference works
// on plain doubles (e^100 ≈ 2.7e43 is fine there), an independent formulation.
template <class T>
struct op_traits<log_op<T>> {
  using reference_op = real_op<double>;
  static T decay(std::mt19937_64& rng, decay_regime r) { return T(std::log(random_decay<double>(rng, r))); }
  static log_value<T> value(std::mt19937_64& rng) {
    return {T(std::normal_distribution<double>(0.0, 1.0)(rng)),
            T(std::uniform_real_distribution<double>(-100, 100)(rng))};
  }
  static double to_reference_decay(T log_decay) { return std::exp(double(log_decay)); }
  static double to_reference_value(log_value<T> v) { return double(v.scale) * std::exp(double(v.exponent)); }
  static void flatten(double x, std::vector<double>& out) { out.push_back(x); }
  // Upstream gradients scale like 1/value, as RWKV-4's ∂wkv/∂num = 1/den does: then
  // ∂L/∂(log a) = G·a·H is representable in float while G and H alone are not.
  static log_value<T> grad(std::mt19937_64& rng) {
    return {T(std::normal_distribution<double>(0.0, 1.0)(rng)),
            T(std::uniform_real_distribution<double>(-103, -97)(rng))};
  }
  static double grad_to_reference(log_value<T> g) { return to_reference_value(g); }
  // ∂L/∂(log a) = ∂L/∂a · a
  static double reference_decay_grad(double ref_da, T log_decay) { return ref_da * std::exp(double(log_decay)); }
  static double decay_grad_to_reference(T da) { return da; }
};

template <class Op>
std::vector<double> flatten_as_reference(const std::vector<typename Op::value_type>& values) {
  std::vector<double> out;
  out.reserve(2 * values.size());
  for (const auto& v : values) op_traits<Op>::flatten(op_traits<Op>::to_reference_value(v), out);
  return out;
}

template <class X>
std::vector<double> flatten_reference(const std::vector<X>& values) {
  std::vector<double> out;
  out.reserve(2 * values.size());
  for (const auto& v : values) {
    if constexpr (std::is_same_v<X, double>)
      out.push_back(v);
    else {
      out.push_back(v.real());
      out.push_back(v.imag());
    }
  }
  return out;
}

// ‖x − ref‖ / ‖ref‖ (absolute when ref is zero). NaN compares as +inf so it never passes.
inline double relative_error(const std::vector<double>& x, const std::vector<double>& ref) {
  if (x.size() != ref.size()) return INFINITY;
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) return INFINITY;
    diff += (x[i] - ref[i]) * (x[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  // Values below 1e-30 count as zero: float cannot hold what double still resolves there.
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
}

}  // namespace linrec::test
