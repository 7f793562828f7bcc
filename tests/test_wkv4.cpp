// RWKV-4's WKV kernel against the O(T²) formula in double, with keys large enough that e^k
// overflows float, and its backward against finite differences in double and, with such keys,
// in float against double.
#include <catch2/catch.hpp>
#include <random>

#include "linrec/layers/detail/wkv4.hpp"
#include "linrec/layers/detail/wkv4_lane.hpp"

using namespace linrec;
using linrec::layers::detail::wkv4_backward;
using linrec::layers::detail::wkv4_forward;
using linrec::layers::detail::wkv4_shapes;

namespace {

template <class T>
struct wkv4_inputs {
  wkv4_shapes<T> shape;
  std::vector<T> w, u, k, v;
  std::vector<log_value<T>> num0, den0;

  wkv4_inputs(wkv4_shapes<T> s, double key_scale, bool with_state, std::uint64_t seed) : shape(s) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0, 1);
    std::uniform_real_distribution<double> uniform(0, 1);
    for (index_t c = 0; c < s.channels; ++c) {
      w.push_back(T(std::exp(-5.0 + 8.0 * uniform(rng))));  // decays e^{-w} from ≈1 to ≈0
      u.push_back(T(normal(rng)));
    }
    for (index_t i = 0; i < s.elements(); ++i) {
      k.push_back(T(key_scale * normal(rng)));
      v.push_back(T(normal(rng)));
    }
    if (with_state)
      for (index_t i = 0; i < s.batch * s.channels; ++i) {
        const T exponent = T(key_scale * normal(rng));
        num0.push_back({T(normal(rng)), exponent});
        den0.push_back({T(0.5 + uniform(rng)), exponent});
      }
  }
  const log_value<T>* num0_ptr() const { return num0.empty() ? nullptr : num0.data(); }
  const log_value<T>* den0_ptr() const { return den0.empty() ? nullptr : den0.data(); }

  std::vector<T> forward(std::vector<log_value<T>>* num = nullptr, std::vector<log_value<T>>* den = nullptr) const {
    const auto n = static_cast<std::size_t>(shape.elements());
    std::vector<T> y(n);
    std::vector<log_value<T>> num_local(n), den_local(n);
    auto& nm = num ? *num : num_local;
    auto& dn = den ? *den : den_local;
    nm.resize(n);
    dn.resize(n);
    wkv4_forward(cpu{2}, shape, w.data(), u.data(), k.data(), v.data(), num0_ptr(), den0_ptr(), y.data(), nm.data(),
                 dn.data());
    return y;
  }
};

// wkv[t] by the definition, in long double, relative to a per-row shift so e^k stays finite.
template <class T>
std::vector<double> naive_wkv4(const wkv4_inputs<T>& in) {
  const auto& s = in.shape;
  std::vector<double> y(static_cast<std::size_t>(s.elements()));
  for (index_t b = 0; b < s.batch; ++b)
    for (index_t c = 0; c < s.channels; ++c)
      for (index_t t = 0; t < s.time; ++t) {
        auto at = [&](index_t tt) { return static_cast<std::size_t>((b * s.time + tt) * s.channels + c); };
        const long double q = (long double)in.u[c] + in.k[at(t)];
        long double shift = q;
        for (index_t i = 0; i < t; ++i)
          shift = std::max(shift, (long double)in.k[at(i)] - (t - 1 - i) * (long double)in.w[c]);
        long double num = std::exp(q - shift) * in.v[at(t)], den = std::exp(q - shift);
        for (index_t i = 0; i < t; ++i) {
          const long double e = std::exp((long double)in.k[at(i)] - (t - 1 - i) * (long double)in.w[c] - shift);
          num += e * in.v[at(i)];
          den += e;
        }
        if (in.num0_ptr()) {
          const auto n0 = in.num0[static_cast<std::size_t>(b * s.channels + c)];
          const auto d0 = in.den0[static_cast<std::size_t>(b * s.channels + c)];
          num += n0.scale * std::exp((long double)n0.exponent - t * (long double)in.w[c] - shift);
          den += d0.scale * std::exp((long double)d0.exponent - t * (long double)in.w[c] - shift);
        }
        y[at(t)] = double(num / den);
      }
  return y;
}

double max_relative_difference(const std::vector<float>& got, const std::vector<double>& want) {
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    worst = std::max(worst, std::abs(got[i] - want[i]) / std::max(1.0, std::abs(want[i])));
  }
  return worst;
}

}  // namespace

TEST_CASE("wkv4 forward matches the definition, also where e^k overflows float", "[layers][wkv4]") {
  for (double key_scale : {1.0, 40.0})
    for (bool with_state : {false, true})
      for (auto shape : {wkv4_shapes<float>{1, 1, 3}, wkv4_shapes<float>{2, 37, 5}, wkv4_shapes<float>{1, 301, 4}}) {
        INFO("key scale " << key_scale << " T=" << shape.time << " state " << with_state);
        const wkv4_inputs<float> in(shape, key_scale, with_state, 1);
        // Keys of ±150 carry float's exponent rounding (ulp(150) ≈ 1.5e-5) into e^k.
        CHECK(max_relative_difference(in.forward(), naive_wkv4(in)) <= (key_scale > 1 ? 5e-5 : 1e-5));
      }
}

TEST_CASE("wkv4 over segments with the state carried equals one pass", "[layers][wkv4]") {
  const wkv4_shapes<float> whole{2, 50, 3}, first{2, 20, 3}, second{2, 30, 3};
  const wkv4_inputs<float> in(whole, 3.0, false, 5);
  const auto y_whole = in.forward();
  auto slice = [&](index_t t0, index_t t1, const std::vector<float>& x) {
    std::vector<float> out;
    for (index_t b = 0; b < 2; ++b)
      for (index_t t = t0; t < t1; ++t)
        for (index_t c = 0; c < 3; ++c) out.push_back(x[static_cast<std::size_t>((b * 50 + t) * 3 + c)]);
    return out;
  };
  std::vector<float> y1(120), y2(180);
  std::vector<log_value<float>> n1(120), d1(120), n2(180), d2(180), num_state(6), den_state(6);
  const auto k1 = slice(0, 20, in.k), v1 = slice(0, 20, in.v), k2 = slice(20, 50, in.k), v2 = slice(20, 50, in.v);
  wkv4_forward(cpu{}, first, in.w.data(), in.u.data(), k1.data(), v1.data(), nullptr, nullptr, y1.data(), n1.data(),
               d1.data(), num_state.data(), den_state.data());
  wkv4_forward(cpu{}, second, in.w.data(), in.u.data(), k2.data(), v2.data(), num_state.data(), den_state.data(),
               y2.data(), n2.data(), d2.data());
  const auto y_first = slice(0, 20, y_whole), y_second = slice(20, 50, y_whole);
  for (std::size_t i = 0; i < y1.size(); ++i) CHECK(y1[i] == Approx(y_first[i]).epsilon(1e-5).margin(1e-6));
  for (std::size_t i = 0; i < y2.size(); ++i) CHECK(y2[i] == Approx(y_second[i]).epsilon(1e-5).margin(1e-6));
}

TEST_CASE("wkv4 backward matches finite differences in double", "[layers][wkv4][gradcheck]") {
  for (bool with_state : {false, true}) {
    wkv4_inputs<double> in({2, 9, 3}, 2.0, with_state, 7);
    std::mt19937_64 rng(3);
    std::normal_distribution<double> normal(0, 1);
    std::vector<double> weight(in.k.size());
    for (auto& x : weight) x = normal(rng);
    auto loss = [&] {
      const auto y = in.forward();
      double l = 0;
      for (std::size_t i = 0; i < y.size(); ++i) l += weight[i] * y[i];
      return l;
    };
    std::vector<log_value<double>> num, den;
    in.forward(&num, &den);
    std::vector<double> dw(3), du(3), dk(in.k.size()), dv(in.v.size());
    wkv4_backward(cpu{}, in.shape, in.w.data(), in.u.data(), in.k.data(), in.v.data(), in.num0_ptr(), in.den0_ptr(),
                  num.data(), den.data(), weight.data(), dw.data(), du.data(), dk.data(), dv.data());
    auto check = [&](std::vector<double>& param, const std::vector<double>& grad, const char* name) {
      for (std::size_t i = 0; i < param.size(); ++i) {
        const double saved = param[i], eps = 1e-6;
        param[i] = saved + eps;
        const double up = loss();
        param[i] = saved - eps;
        const double down = loss();
        param[i] = saved;
        INFO(name << "[" << i << "] state " << with_state);
        CHECK(std::abs((up - down) / (2 * eps) - grad[i]) <= 1e-6 * std::max(1.0, std::abs(grad[i])));
      }
    };
    check(in.w, dw, "w");
    check(in.u, du, "u");
    check(in.k, dk, "k");
    check(in.v, dv, "v");
  }
}

TEST_CASE("wkv4 backward in float stays finite and matches double where e^k overflows float", "[layers][wkv4]") {
  for (bool with_state : {false, true}) {
    INFO("state " << with_state);
    const wkv4_inputs<float> in_f({2, 65, 4}, 40.0, with_state, 11);  // keys ±100s
    const wkv4_inputs<double> in_d({2, 65, 4}, 40.0, with_state, 11);
    std::mt19937_64 rng(12);
    std::normal_distribution<double> normal(0, 1);
    std::vector<double> dy_d(in_d.k.size());
    for (auto& x : dy_d) x = normal(rng);
    const std::vector<float> dy_f(dy_d.begin(), dy_d.end());
    auto gradients = [](const auto& in, const auto& dy) {
      using T = typename std::decay_t<decltype(dy)>::value_type;
      std::vector<log_value<T>> num, den;
      in.forward(&num, &den);
      std::vector<std::vector<T>> g{std::vector<T>(in.w.size()), std::vector<T>(in.u.size()),
                                    std::vector<T>(in.k.size()), std::vector<T>(in.v.size())};
      wkv4_backward(cpu{2}, in.shape, in.w.data(), in.u.data(), in.k.data(), in.v.data(), in.num0_ptr(), in.den0_ptr(),
                    num.data(), den.data(), dy.data(), g[0].data(), g[1].data(), g[2].data(), g[3].data());
      return g;
    };
    const auto g_f = gradients(in_f, dy_f);
    const auto g_d = gradients(in_d, dy_d);
    const char* names[] = {"dw", "du", "dk", "dv"};
    for (std::size_t i = 0; i < 4; ++i) {
      double diff = 0, norm = 0;
      for (std::size_t j = 0; j < g_d[i].size(); ++j) {
        REQUIRE(std::isfinite(g_f[i][j]));
        diff += (g_f[i][j] - g_d[i][j]) * (g_f[i][j] - g_d[i][j]);
        norm += g_d[i][j] * g_d[i][j];
      }
      INFO(names[i] << ": relative error " << std::sqrt(diff / norm));
      // As in the forward: keys of ±150 carry float's exponent rounding (1.5e-5) into e^k.
      CHECK(std::sqrt(diff / norm) <= 5e-5);
    }
  }
}

// The per-lane recurrence that the CUDA kernels run (wkv4_lane.hpp, host and device) against
// the scan-based CPU kernels: forward outputs, the final states' values, and every gradient, with
// keys large enough that e^k overflows float and from a random initial state.
TEST_CASE("wkv4 lanes (the CUDA kernels' per-thread math) match wkv4_forward and wkv4_backward", "[layers][wkv4]") {
  using T = double;
  for (const bool with_state : {false, true}) {
    const wkv4_shapes<T> s{2, 37, 5};
    wkv4_inputs<T> in(s, 30.0, with_state, with_state ? 3 : 4);
    const auto n = static_cast<std::size_t>(s.elements()), lanes = static_cast<std::size_t>(s.batch * s.channels);
    std::mt19937_64 rng(9);
    std::normal_distribution<double> normal(0, 1);
    std::vector<T> dy(n), td(in.w.size());
    for (auto& g : dy) g = normal(rng);
    for (std::size_t c = 0; c < td.size(); ++c) td[c] = std::log(in.w[c]);
    std::vector<log_value<T>> d_num_final(lanes), d_den_final(lanes);
    for (std::size_t i = 0; i < lanes; ++i) {
      d_num_final[i] = {normal(rng), 0};
      d_den_final[i] = {normal(rng), 0};
    }
    const auto* num0 = with_state ? in.num0.data() : nullptr;
    const auto* den0 = with_state ? in.den0.data() : nullptr;
    // CPU kernels.
    std::vector<T> y(n), dw(s.channels), du(s.channels), dk(n), dv(n);
    std::vector<log_value<T>> num(n), den(n), num_final(lanes), den_final(lanes), d_num0(lanes), d_den0(lanes);
    wkv4_forward(cpu{1}, s, in.w.data(), in.u.data(), in.k.data(), in.v.data(), num0, den0, y.data(), num.data(),
                 den.data(), num_final.data(), den_final.data());
    // The op hands the kernel final-state gradients in log form (log_grad_of below does the same).
    std::vector<log_value<T>> log_num_final(lanes), log_den_final(lanes);
    for (std::size_t i = 0; i < lanes; ++i) {
      log_num_final[i] = layers::detail::log_grad_of(d_num_final[i].scale, num_final[i]);
      log_den_final[i] = layers::detail::log_grad_of(d_den_final[i].scale, den_final[i]);
    }
    wkv4_backward(cpu{1}, s, in.w.data(), in.u.data(), in.k.data(), in.v.data(), num0, den0, num.data(), den.data(),
                  dy.data(), dw.data(), du.data(), dk.data(), dv.data(),
                  layers::detail::wkv4_state_grads<T>{log_num_final.data(), log_den_final.data(),
                                                      with_state ? d_num0.data() : nullptr,
                                                      with_state ? d_den0.data() : nullptr});
    // Lanes.
    std::vector<T> ly(n), ldk(n), ldv(n), ldtd(lanes), ldu(lanes);
    std::vector<log_value<T>> lnum(n), lden(n), lnum_final(lanes), lden_final(lanes), ld_num0(lanes), ld_den0(lanes);
    for (index_t b = 0; b < s.batch; ++b)
      for (index_t c = 0; c < s.channels; ++c) {
        const index_t lane = b * s.channels + c, at = b * s.time * s.channels + c;
        layers::detail::wkv4_lane_forward(s.time, s.channels, td[c], in.u[c], in.k.data() + at, in.v.data() + at,
                                          num0 ? num0 + lane : nullptr, den0 ? den0 + lane : nullptr, ly.data() + at,
                                          lnum.data() + at, lden.data() + at, lnum_final.data() + lane,
                                          lden_final.data() + lane);
        layers::detail::wkv4_lane_backward(
            s.time, s.channels, td[c], in.u[c], in.k.data() + at, in.v.data() + at, num0 ? num0 + lane : nullptr,
            den0 ? den0 + lane : nullptr, lnum.data() + at, lden.data() + at, dy.data() + at, d_num_final.data() + lane,
            d_den_final.data() + lane, ldk.data() + at, ldv.data() + at, ldtd.data() + lane, ldu.data() + lane,
            with_state ? ld_num0.data() + lane : nullptr, with_state ? ld_den0.data() + lane : nullptr);
      }
    const auto close = [](double a, double b) { return std::abs(a - b) <= 1e-9 * std::max(1.0, std::abs(b)); };
    for (std::size_t i = 0; i < n; ++i) {
      INFO("element " << i);
      CHECK(close(ly[i], y[i]));
      CHECK(close(ldk[i], dk[i]));
      CHECK(close(ldv[i], dv[i]));
    }
    for (std::size_t i = 0; i < lanes; ++i) {
      CHECK(close(lnum_final[i].to_real() / std::exp(num_final[i].exponent), num_final[i].scale));
      CHECK(close(lden_final[i].to_real() / std::exp(den_final[i].exponent), den_final[i].scale));
    }
    for (index_t c = 0; c < s.channels; ++c) {
      double dtd_sum = 0, du_sum = 0;
      for (index_t b = 0; b < s.batch; ++b) {
        dtd_sum += ldtd[std::size_t(b * s.channels + c)];
        du_sum += ldu[std::size_t(b * s.channels + c)];
      }
      CHECK(close(dtd_sum, dw[std::size_t(c)] * in.w[std::size_t(c)]));  // ∂/∂time_decay = ∂/∂w · w
      CHECK(close(du_sum, du[std::size_t(c)]));
    }
    if (with_state)
      for (std::size_t i = 0; i < lanes; ++i) {
        // The kernel's state gradients are in log form; the lanes give coordinates.
        const auto expect_num = layers::detail::coordinates_of(d_num0[i], in.num0[i]);
        const auto expect_den = layers::detail::coordinates_of(d_den0[i], in.den0[i]);
        CHECK(close(ld_num0[i].scale, expect_num.scale));
        CHECK(close(ld_num0[i].exponent, expect_num.exponent));
        CHECK(close(ld_den0[i].scale, expect_den.scale));
        CHECK(close(ld_den0[i].exponent, expect_den.exponent));
      }
  }
}
