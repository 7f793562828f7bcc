// Backward of the scan against central finite differences of the forward, in double, for
// every operator: L = Σ ⟨w, h⟩ + ⟨w_final, h_final⟩, so dh = w and dh_final = w_final.
#include <catch2/catch.hpp>
#include <functional>

#include "scan_test_util.hpp"

using namespace linrec;
using namespace linrec::test;

namespace {

// Each element exposes its real coordinates, so the check perturbs them one at a time.
double& coordinate(double& x, int) { return x; }
double& coordinate(std::complex<double>& x, int k) { return reinterpret_cast<double(&)[2]>(x)[k]; }
double& coordinate(log_value<double>& x, int k) { return k == 0 ? x.scale : x.exponent; }
int coordinates(double) { return 1; }
int coordinates(std::complex<double>) { return 2; }
int coordinates(log_value<double>) { return 2; }

// ⟨w, h⟩ as a real number for each operator's value type.
double inner(double w, double h) { return w * h; }
double inner(std::complex<double> w, std::complex<double> h) { return w.real() * h.real() + w.imag() * h.imag(); }
double inner(log_value<double> w, log_value<double> h) { return w.to_real() * h.to_real(); }

// The analytic ∂L/∂(coordinate k) from the scan's gradient outputs.
double analytic(double grad, double, int) { return grad; }
double analytic(std::complex<double> grad, std::complex<double>, int k) { return k == 0 ? grad.real() : grad.imag(); }
// Log values: the scan returns G = ∂L/∂B for B = s·e^m, so ∂L/∂s = G·e^m and ∂L/∂m = G·B.
double analytic(log_value<double> grad, log_value<double> value, int k) {
  const double g = grad.to_real();
  return k == 0 ? g * std::exp(value.exponent) : g * value.to_real();
}

template <class Op>
void gradcheck(const scan_shape& shape, bool bct, std::uint64_t seed) {
  using A = typename Op::decay_type;
  using V = typename Op::value_type;
  using G = typename Op::grad_type;
  INFO("B=" << shape.batch << " T=" << shape.time << " C=" << shape.channels << (bct ? " [B,C,T]" : " [B,T,C]"));
  const strides3 st = bct ? strides3::bct(shape) : strides3::btc(shape);
  std::mt19937_64 rng(seed);
  const auto n = static_cast<std::size_t>(shape.elements());
  const auto n_state = static_cast<std::size_t>(shape.batch * shape.channels);
  std::vector<A> a(n);
  std::vector<V> b(n), h0(n_state), w(n), w_final(n_state);
  for (auto& x : a) x = op_traits<Op>::decay(rng, decay_regime::typical);
  for (auto& x : b) x = op_traits<Op>::value(rng);
  for (auto& x : h0) x = op_traits<Op>::value(rng);
  if constexpr (std::is_same_v<Op, log_op<double>>) {
    // Keep exponents moderate so central differences in double are accurate.
    for (auto& x : b) x.exponent *= 0.02;
    for (auto& x : h0) x.exponent *= 0.02;
  }
  for (auto& x : w) x = op_traits<Op>::grad(rng);
  for (auto& x : w_final) x = op_traits<Op>::grad(rng);

  auto loss = [&]() {
    std::vector<V> h(n), h_final(n_state);
    scan_forward_sequential(
        scan_forward_args<Op>{shape, a.data(), st, b.data(), st, h.data(), st, h0.data(), h_final.data()});
    double l = 0;
    for (std::size_t i = 0; i < n; ++i) l += inner(w[i], h[i]);
    for (std::size_t i = 0; i < n_state; ++i) l += inner(w_final[i], h_final[i]);
    return l;
  };

  std::vector<V> h(n);
  scan_forward_sequential(scan_forward_args<Op>{shape, a.data(), st, b.data(), st, h.data(), st, h0.data(), nullptr});
  std::vector<typename Op::decay_grad_type> da(n);
  std::vector<G> db(n), dh0(n_state);
  for (auto backward :
       {std::function<void(const scan_backward_args<Op>&)>([](const auto& p) { scan_backward_sequential(p); }),
        std::function<void(const scan_backward_args<Op>&)>([](const auto& p) { scan_backward_parallel(cpu{2}, p); })}) {
    backward(scan_backward_args<Op>{shape, a.data(), st, h.data(), st, h0.data(), w.data(), st, w_final.data(),
                                    da.data(), st, db.data(), st, dh0.data()});
    const double eps = 1e-6;
    auto check_coordinate = [&](double& x, double expected) {
      const double saved = x;
      x = saved + eps;
      const double up = loss();
      x = saved - eps;
      const double down = loss();
      x = saved;
      const double numeric = (up - down) / (2 * eps);
      CHECK(std::abs(numeric - expected) <= 1e-6 * std::max(1.0, std::abs(expected)));
    };
    for (std::size_t i = 0; i < n; ++i) {
      for (int k = 0; k < coordinates(b[i]); ++k) check_coordinate(coordinate(b[i], k), analytic(db[i], b[i], k));
      if constexpr (std::is_same_v<Op, log_op<double>>)
        check_coordinate(a[i], da[i]);  // ∂L/∂(log-decay), a plain real
      else
        for (int k = 0; k < coordinates(a[i]); ++k) check_coordinate(coordinate(a[i], k), analytic(da[i], a[i], k));
    }
    for (std::size_t i = 0; i < n_state; ++i)
      for (int k = 0; k < coordinates(h0[i]); ++k) check_coordinate(coordinate(h0[i], k), analytic(dh0[i], h0[i], k));
  }
}

}  // namespace

TEMPLATE_TEST_CASE("scan backward matches finite differences", "[scan][gradcheck]", real_op<double>, complex_op<double>,
                   log_op<double>) {
  std::uint64_t seed = 100;
  for (bool bct : {false, true}) {
    gradcheck<TestType>({1, 1, 1}, bct, seed++);
    gradcheck<TestType>({2, 7, 3}, bct, seed++);
    gradcheck<TestType>({3, 2, 5}, bct, seed++);
    gradcheck<TestType>({1, 33, 2}, bct, seed++);
  }
}
