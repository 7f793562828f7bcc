// RWKV-6's chunked WKV against the plain recurrence (fp32 vs double), across chunk lengths,
// odd T, strong and weak decays (down to 1 - d ≈ 6e-6), with state in/out; its backward
// (including the initial state's gradient) against finite differences.
#include <catch2/catch.hpp>
#include <random>

#include "linrec/layers/detail/wkv6.hpp"

using namespace linrec;
using namespace linrec::layers::detail;

namespace {

template <class T>
struct wkv6_inputs {
  wkv6_shapes shape;
  std::vector<T> r, k, v, w, u, state;

  // w_center sets the decay regime: d = exp(-exp(w)); w = -12 → 1 - d ≈ 6e-6, w = -6 → d ≈ 0.9975,
  // w = 1.5 → d ≈ 0.011.
  wkv6_inputs(wkv6_shapes s, double w_center, std::uint64_t seed) : shape(s) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0, 1);
    for (index_t i = 0; i < s.elements(); ++i) {
      r.push_back(T(normal(rng)));
      k.push_back(T(normal(rng)));
      v.push_back(T(normal(rng)));
      w.push_back(T(w_center + 0.5 * normal(rng)));
    }
    for (index_t c = 0; c < s.channels(); ++c) u.push_back(T(normal(rng)));
    for (index_t i = 0; i < s.state_elements(); ++i) state.push_back(T(normal(rng)));
  }

  template <class U>
  static std::vector<double> as_double(const std::vector<U>& x) {
    return {x.begin(), x.end()};
  }
  // The recurrence in double from the same inputs: output and final state.
  std::pair<std::vector<double>, std::vector<double>> reference() const {
    std::vector<double> y(r.size()), st = as_double(state);
    const auto rd = as_double(r), kd = as_double(k), vd = as_double(v), wd = as_double(w), ud = as_double(u);
    wkv6_reference(shape, rd.data(), kd.data(), vd.data(), wd.data(), ud.data(), st.data(), y.data());
    return {y, st};
  }
  std::pair<std::vector<T>, std::vector<T>> chunked(index_t chunk_length,
                                                    std::vector<T>* chunk_states = nullptr) const {
    std::vector<T> y(r.size()), out(state.size());
    std::vector<T> local;
    auto& cs = chunk_states ? *chunk_states : local;
    const index_t chunks = (shape.time + chunk_length - 1) / chunk_length;
    cs.resize(static_cast<std::size_t>(shape.batch * shape.heads * chunks * shape.head_size * shape.head_size));
    wkv6_forward(cpu{2}, shape, r.data(), k.data(), v.data(), w.data(), u.data(), state.data(), y.data(), cs.data(),
                 out.data(), chunk_length);
    return {y, out};
  }
};

double relative_error(const std::vector<float>& x, const std::vector<double>& ref) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) return INFINITY;
    diff += (x[i] - ref[i]) * (x[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-300));
}

}  // namespace

TEST_CASE("wkv6 chunked forward equals the recurrence", "[layers][wkv6]") {
  for (double w_center : {-12.0, -6.0, -1.0, 1.5})
    for (index_t time : {1, 2, 17, 40})
      for (index_t chunk : {1, 3, 16}) {
        INFO("w_center " << w_center << " T=" << time << " chunk " << chunk);
        const wkv6_inputs<float> in({2, time, 2, 4}, w_center, 10 + time);
        const auto [y_ref, state_ref] = in.reference();
        const auto [y, state] = in.chunked(chunk);
        CHECK(relative_error(y, y_ref) <= 1e-5);
        CHECK(relative_error(state, state_ref) <= 1e-5);
      }
}

TEST_CASE("wkv6 with head size 64 over a long sequence", "[layers][wkv6]") {
  const wkv6_inputs<float> in({1, 130, 2, 64}, -3.0, 3);
  const auto [y_ref, state_ref] = in.reference();
  const auto [y, state] = in.chunked(wkv6_chunk_length);
  CHECK(relative_error(y, y_ref) <= 1e-5);
  CHECK(relative_error(state, state_ref) <= 1e-5);
}

TEST_CASE("wkv6 backward matches finite differences in double", "[layers][wkv6][gradcheck]") {
  for (index_t chunk : {1, 3, 16}) {
    wkv6_inputs<double> in({2, 7, 2, 3}, -0.5, 21);
    std::mt19937_64 rng(4);
    std::normal_distribution<double> normal(0, 1);
    std::vector<double> dy(in.r.size()), d_state(in.state.size());
    for (auto& x : dy) x = normal(rng);
    for (auto& x : d_state) x = normal(rng);
    auto loss = [&] {
      const auto [y, st] = in.chunked(chunk);
      double l = 0;
      for (std::size_t i = 0; i < y.size(); ++i) l += dy[i] * y[i];
      for (std::size_t i = 0; i < st.size(); ++i) l += d_state[i] * st[i];
      return l;
    };
    std::vector<double> chunk_states;
    in.chunked(chunk, &chunk_states);
    std::vector<double> dr(dy.size()), dk(dy.size()), dv(dy.size()), dw(dy.size()), du(in.u.size()),
        d_state0(in.state.size());
    wkv6_backward(cpu{2}, in.shape, in.r.data(), in.k.data(), in.v.data(), in.w.data(), in.u.data(),
                  chunk_states.data(), dy.data(), d_state.data(), dr.data(), dk.data(), dv.data(), dw.data(), du.data(),
                  chunk, d_state0.data());
    auto check = [&](std::vector<double>& param, const std::vector<double>& grad, const char* name) {
      for (std::size_t i = 0; i < param.size(); ++i) {
        const double saved = param[i], eps = 1e-6;
        param[i] = saved + eps;
        const double up = loss();
        param[i] = saved - eps;
        const double down = loss();
        param[i] = saved;
        INFO(name << "[" << i << "] chunk " << chunk);
        CHECK(std::abs((up - down) / (2 * eps) - grad[i]) <= 1e-6 * std::max(1.0, std::abs(grad[i])));
      }
    };
    check(in.r, dr, "r");
    check(in.k, dk, "k");
    check(in.v, dv, "v");
    check(in.w, dw, "w");
    check(in.u, du, "u");
    check(in.state, d_state0, "state0");
  }
}
