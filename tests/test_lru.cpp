// LRU: parallel == step-by-step, segments == one pass, the fp32 layer against a naive
// double reference (plain loops over docs/models.md §5), extreme eigenvalues, the paper's init,
// gradients of every parameter, the input and the initial state against finite differences.
#include <complex>
#include <numbers>

#include "linrec/layers/lru.hpp"
#include "recurrence_test_util.hpp"

using namespace linrec;
using namespace linrec::layers;
using namespace linrec::test;

namespace {

using cplx = std::complex<double>;

// h_t = λ ⊙ h_{t−1} + γ ⊙ (B x_t),  y_t = Re(C h_t) + D ⊙ x_t, with
// λ = exp(−exp(ν_log) + i exp(θ_log)), γ = exp(γ_log); every value in double.
template <class T>
std::pair<TensorD, TensorD> lru_reference(const lru<T>& layer, const TensorD& x, const TensorD& h0) {
  const index_t batch = x.size(0), time = x.size(1), h_dim = x.size(2), p_dim = layer.state_size();
  const auto nu_log = to_double(layer.nu_log.value()), theta_log = to_double(layer.theta_log.value());
  const auto gamma_log = to_double(layer.gamma_log.value()), d = to_double(layer.D.value());
  const auto b_re = to_double(layer.B_re.value()), b_im = to_double(layer.B_im.value());
  const auto c_re = to_double(layer.C_re.value()), c_im = to_double(layer.C_im.value());
  auto y = TensorD::empty({batch, time, h_dim});
  auto h_final = TensorD::empty({batch, p_dim, 2});
  for (index_t b = 0; b < batch; ++b) {
    std::vector<cplx> h(p_dim);
    for (index_t p = 0; p < p_dim; ++p) h[p] = h0.defined() ? cplx(h0.at({b, p, 0}), h0.at({b, p, 1})) : cplx(0, 0);
    for (index_t t = 0; t < time; ++t) {
      for (index_t p = 0; p < p_dim; ++p) {
        const cplx lambda = std::exp(cplx(-std::exp(nu_log.at({p})), std::exp(theta_log.at({p}))));
        cplx bx = 0;
        for (index_t i = 0; i < h_dim; ++i) bx += cplx(b_re.at({p, i}), b_im.at({p, i})) * x.at({b, t, i});
        h[p] = lambda * h[p] + std::exp(gamma_log.at({p})) * bx;
      }
      for (index_t i = 0; i < h_dim; ++i) {
        double out = d.at({i}) * x.at({b, t, i});
        for (index_t p = 0; p < p_dim; ++p) out += (cplx(c_re.at({i, p}), c_im.at({i, p})) * h[p]).real();
        y.at({b, t, i}) = out;
      }
    }
    for (index_t p = 0; p < p_dim; ++p) {
      h_final.at({b, p, 0}) = h[p].real();
      h_final.at({b, p, 1}) = h[p].imag();
    }
  }
  return {y, h_final};
}

// The fp32 layer against the double reference from a random initial state.
void check_against_reference(const lru<float>& layer, index_t batch, index_t time, rng& gen, double tolerance) {
  const auto x = random_tensor<double>({batch, time, layer.dim()}, gen);
  const auto h0 = random_tensor<double>({batch, layer.state_size(), 2}, gen);
  const auto [y_ref, h_ref] = lru_reference(layer, x, h0);
  const auto [y, h] = run_layer(layer, from_double<float>(x), from_double<float>(h0));
  INFO("T=" << time);
  CHECK(relative_error(y, y_ref) <= tolerance);
  CHECK(relative_error(h, h_ref) <= tolerance);
  CHECK(as_array(y_ref).abs().maxCoeff() > 0);
}

}  // namespace

TEST_CASE("lru: parallel equals step-by-step and segments", "[layers][lru]") {
  rng gen(11);
  for (index_t time : {1, 2, 7, 33}) {
    lru<float> layer({.dim = 12, .state = 10}, gen);
    const auto x = random_tensor<float>({2, time, 12}, gen);
    INFO("T=" << time);
    check_step_matches_parallel(layer, x, 1e-5);
    if (time > 1) {
      check_segments_match_one_pass(layer, x, time / 2, 1e-5);
      check_segments_match_one_pass(layer, x, 1, 1e-5);
    }
  }
}

TEST_CASE("lru: fp32 layer matches the naive double reference", "[layers][lru]") {
  rng gen(12);
  lru<float> layer({.dim = 8, .state = 12}, gen);
  for (index_t time : {1, 17, 64}) check_against_reference(layer, 3, time, gen, 1e-5);
  // The double layer agrees to rounding.
  rng gen_d(12);
  lru<double> layer_d({.dim = 8, .state = 12}, gen_d);
  const auto x = random_tensor<double>({2, 29, 8}, gen);
  const auto [y_ref, h_ref] = lru_reference(layer_d, x, {});
  const auto [y, h] = run_layer(layer_d, x);
  CHECK(relative_error(y, y_ref) <= 1e-12);
  CHECK(relative_error(h, h_ref) <= 1e-12);
}

TEST_CASE("lru: extreme but valid eigenvalues", "[layers][lru]") {
  rng gen(13);
  SECTION("|λ| within 1e-5 of 1, long sequence") {
    lru<float> layer({.dim = 6, .state = 8, .r_min = 0.99999, .r_max = 0.999999}, gen);
    check_against_reference(layer, 2, 101, gen, 1e-5);
    // Rounding λ to float alone (2^-25 relative) compounds to T·3e-8 in λ^T: ≈ 1e-5 at T = 301,
    // so the long run gets a bound of that size (measured: 1.3e-5).
    check_against_reference(layer, 2, 301, gen, 3e-5);
  }
  SECTION("|λ| near 0 (memoryless)") {
    lru<float> layer({.dim = 6, .state = 8, .r_min = 0.0, .r_max = 1e-3}, gen);
    check_against_reference(layer, 2, 31, gen, 1e-5);
  }
  SECTION("small phases (long-range init, max_phase = π/10)") {
    lru<float> layer({.dim = 6, .state = 8, .r_min = 0.999, .r_max = 0.9999, .max_phase = std::numbers::pi / 10}, gen);
    check_against_reference(layer, 2, 129, gen, 1e-5);
  }
}

TEST_CASE("lru: initialisation follows the paper", "[layers][lru]") {
  rng gen(14);
  const lru_config cfg{.dim = 64, .state = 512, .r_min = 0.4, .r_max = 0.9, .max_phase = std::numbers::pi};
  lru<double> layer(cfg, gen);
  double mean_r2 = 0;
  for (index_t p = 0; p < cfg.state; ++p) {
    const double modulus = std::exp(-std::exp(layer.nu_log.value().at({p})));
    const double phase = std::exp(layer.theta_log.value().at({p}));
    CHECK(modulus >= cfg.r_min - 1e-12);
    CHECK(modulus <= cfg.r_max + 1e-12);
    CHECK(phase > 0);
    CHECK(phase <= cfg.max_phase + 1e-12);
    CHECK(std::exp(layer.gamma_log.value().at({p})) == Approx(std::sqrt(1 - modulus * modulus)).epsilon(1e-12));
    mean_r2 += modulus * modulus / double(cfg.state);
  }
  // |λ|² uniform on [r_min², r_max²]: mean (0.16 + 0.81)/2, std of the mean ≈ 0.19/√512
  CHECK(mean_r2 == Approx(0.485).margin(0.03));
  const auto stddev = [](const TensorD& t) { return std::sqrt(as_array(t).square().mean()); };
  CHECK(stddev(layer.B_re.value()) == Approx(1 / std::sqrt(2.0 * 64)).epsilon(0.05));
  CHECK(stddev(layer.B_im.value()) == Approx(1 / std::sqrt(2.0 * 64)).epsilon(0.05));
  CHECK(stddev(layer.C_re.value()) == Approx(1 / std::sqrt(512.0)).epsilon(0.05));
  CHECK(stddev(layer.D.value()) == Approx(1.0).epsilon(0.25));
}

TEST_CASE("lru: gradients match finite differences", "[layers][lru][gradcheck]") {
  rng gen(15);
  lru<double> layer({.dim = 4, .state = 5, .r_min = 0.5, .r_max = 0.99}, gen);
  gradcheck_layer(layer, random_tensor<double>({2, 7, 4}, gen), gen);
  SECTION("initial state and carried state") {
    carried_state<lru<double>> wrapped{layer, basic_parameter<double>(random_tensor<double>({2, 5, 2}, gen), "h0"), 3};
    gradcheck_layer(wrapped, random_tensor<double>({2, 7, 4}, gen), gen);
  }
}

TEST_CASE("lru: shape errors name the shapes", "[layers][lru]") {
  rng gen(16);
  lru<float> layer({.dim = 4, .state = 3}, gen);
  basic_tape<float> tape(grad_mode::off);
  CHECK_THROWS_AS(layer.forward(tape, constant(Tensor::zeros({2, 5, 3})), {}), Error);
  CHECK_THROWS_AS(layer.forward(tape, constant(Tensor::zeros({2, 5, 4})), {constant(Tensor::zeros({2, 4, 2}))}), Error);
  CHECK_THROWS_AS(lru<float>({.dim = 4, .state = 3, .r_min = 0.9, .r_max = 0.5}, gen), Error);
}
