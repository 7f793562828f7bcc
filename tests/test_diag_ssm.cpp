// Diagonal SSMs (S4D with its three inits, the selective SSM with and without gate):
// parallel == step-by-step, segments == one pass, the fp32 layer against naive double
// references (plain loops over docs/models.md §6), tiny and large steps Δ, the reference init,
// gradients of every parameter, the input and the initial state against finite differences.
#include <complex>

#include "linrec/layers/diag_ssm.hpp"
#include "recurrence_test_util.hpp"

using namespace linrec;
using namespace linrec::layers;
using namespace linrec::test;

namespace {

using cplx = std::complex<double>;

// S4D, ZOH: Ā = exp(ΔA), B̄ = (exp(ΔA) − 1)/A, h_t = Ā h_{t−1} + B̄ x_t,
// y_t = 2 Re(Σ_n C_n h_t[n]) + D x_t, per channel; every value in double.
template <class T>
std::pair<TensorD, TensorD> s4d_reference(const s4d<T>& layer, const TensorD& x, const TensorD& h0) {
  const index_t batch = x.size(0), time = x.size(1), h_dim = x.size(2), modes = layer.modes();
  const auto log_dt = to_double(layer.log_dt.value()), log_a_re = to_double(layer.log_A_real.value());
  const auto a_im = to_double(layer.A_imag.value()), c = to_double(layer.C.value()), d = to_double(layer.D.value());
  auto y = TensorD::empty({batch, time, h_dim});
  auto h_final = TensorD::empty({batch, h_dim, modes, 2});
  for (index_t b = 0; b < batch; ++b)
    for (index_t ch = 0; ch < h_dim; ++ch) {
      const double dt = std::exp(log_dt.at({ch}));
      std::vector<cplx> h(modes), a_bar(modes), b_bar(modes);
      for (index_t n = 0; n < modes; ++n) {
        const cplx a(-std::exp(log_a_re.at({ch, n})), a_im.at({ch, n}));
        a_bar[n] = std::exp(dt * a);
        b_bar[n] = (a_bar[n] - 1.0) / a;
        h[n] = h0.defined() ? cplx(h0.at({b, ch, n, 0}), h0.at({b, ch, n, 1})) : cplx(0, 0);
      }
      for (index_t t = 0; t < time; ++t) {
        double out = d.at({ch}) * x.at({b, t, ch});
        for (index_t n = 0; n < modes; ++n) {
          h[n] = a_bar[n] * h[n] + b_bar[n] * x.at({b, t, ch});
          out += 2.0 * (cplx(c.at({ch, n, 0}), c.at({ch, n, 1})) * h[n]).real();
        }
        y.at({b, t, ch}) = out;
      }
      for (index_t n = 0; n < modes; ++n) {
        h_final.at({b, ch, n, 0}) = h[n].real();
        h_final.at({b, ch, n, 1}) = h[n].imag();
      }
    }
  return {y, h_final};
}

// Selective SSM (Mamba's selective_scan_ref): (u, B_t, C_t) = x_t·x_proj split (R, N, N),
// Δ_t = softplus(u·dt_proj + b_Δ), h_t[d,n] = exp(Δ_t[d] A[d,n]) h_{t−1}[d,n] + Δ_t[d] B_t[n] x_t[d],
// y_t[d] = (Σ_n C_t[n] h_t[d,n] + D[d] x_t[d]) · silu(x_t·z_proj)[d].
template <class T>
std::pair<TensorD, TensorD> selective_reference(const selective_ssm<T>& layer, const TensorD& x, const TensorD& h0) {
  const index_t batch = x.size(0), time = x.size(1), d_dim = x.size(2), n_dim = layer.state_size(),
                rank = layer.dt_rank();
  const auto x_proj = to_double(layer.x_proj.value()), dt_proj = to_double(layer.dt_proj.value());
  const auto dt_bias = to_double(layer.dt_bias.value()), a_log = to_double(layer.A_log.value());
  const auto skip = to_double(layer.D.value());
  const bool gated = layer.z_proj.defined();
  const auto z_proj = gated ? to_double(layer.z_proj.value()) : TensorD{};
  auto y = TensorD::empty({batch, time, d_dim});
  auto h = TensorD::empty({batch, d_dim, n_dim});
  for (index_t b = 0; b < batch; ++b) {
    for (index_t i = 0; i < d_dim * n_dim; ++i)
      h.data()[b * d_dim * n_dim + i] = h0.defined() ? h0.data()[b * d_dim * n_dim + i] : 0.0;
    for (index_t t = 0; t < time; ++t) {
      std::vector<double> proj(rank + 2 * n_dim, 0.0);
      for (index_t j = 0; j < rank + 2 * n_dim; ++j)
        for (index_t k = 0; k < d_dim; ++k) proj[j] += x.at({b, t, k}) * x_proj.at({k, j});
      for (index_t dd = 0; dd < d_dim; ++dd) {
        double pre = dt_bias.at({dd});
        for (index_t r = 0; r < rank; ++r) pre += proj[r] * dt_proj.at({r, dd});
        const double dt = std::log1p(std::exp(pre));
        const double xv = x.at({b, t, dd});
        double out = skip.at({dd}) * xv;
        for (index_t n = 0; n < n_dim; ++n) {
          double& state = h.at({b, dd, n});
          state = std::exp(-dt * std::exp(a_log.at({dd, n}))) * state + dt * proj[rank + n] * xv;
          out += proj[rank + n_dim + n] * state;
        }
        if (gated) {
          double z = 0;
          for (index_t k = 0; k < d_dim; ++k) z += x.at({b, t, k}) * z_proj.at({k, dd});
          out *= z / (1.0 + std::exp(-z));
        }
        y.at({b, t, dd}) = out;
      }
    }
  }
  return {y, h};
}

template <class T>
std::pair<TensorD, TensorD> reference(const s4d<T>& layer, const TensorD& x, const TensorD& h0) {
  return s4d_reference(layer, x, h0);
}
template <class T>
std::pair<TensorD, TensorD> reference(const selective_ssm<T>& layer, const TensorD& x, const TensorD& h0) {
  return selective_reference(layer, x, h0);
}

template <class Layer>
Shape state_shape(const Layer& layer, index_t batch) {
  if constexpr (requires { layer.modes(); })
    return {batch, layer.dim(), layer.modes(), 2};
  else
    return {batch, layer.dim(), layer.state_size()};
}

// The fp32 layer against the double reference from a random initial state.
template <class Layer>
void check_against_reference(const Layer& layer, index_t batch, index_t time, rng& gen, double tolerance,
                             double x_scale = 1.0, bool random_state = true) {
  const auto x = random_tensor<double>({batch, time, layer.dim()}, gen, x_scale);
  const auto h0 = random_state ? random_tensor<double>(state_shape(layer, batch), gen) : TensorD{};
  const auto [y_ref, h_ref] = reference(layer, x, h0);
  const auto [y, h] = run_layer(layer, from_double<float>(x), h0.defined() ? from_double<float>(h0) : Tensor{});
  INFO("T=" << time);
  CHECK(relative_error(y, y_ref) <= tolerance);
  CHECK(relative_error(h, h_ref) <= tolerance);
  CHECK(as_array(y_ref).abs().maxCoeff() > 0);
}

// The layers of this file in small test sizes, one per variant.
template <class T>
std::vector<s4d<T>> s4d_variants(rng& gen, index_t dim = 6, index_t state = 8) {
  std::vector<s4d<T>> out;
  for (auto init : {s4d_init::lin, s4d_init::inv, s4d_init::real})
    out.emplace_back(s4d_config{.dim = dim, .state = state, .init = init}, gen);
  return out;
}
template <class T>
std::vector<selective_ssm<T>> selective_variants(rng& gen, index_t dim = 6, index_t state = 4) {
  std::vector<selective_ssm<T>> out;
  for (bool gate : {true, false})
    out.emplace_back(selective_ssm_config{.dim = dim, .state = state, .dt_rank = 2, .gate = gate}, gen);
  return out;
}

}  // namespace

TEST_CASE("diag ssm: parallel equals step-by-step and segments", "[layers][diag_ssm]") {
  rng gen(21);
  for (index_t time : {1, 2, 7, 33}) {
    INFO("T=" << time);
    const auto x = random_tensor<float>({2, time, 6}, gen);
    const auto check = [&](const auto& layer) {
      check_step_matches_parallel(layer, x, 1e-5);
      if (time > 1) {
        check_segments_match_one_pass(layer, x, time / 2, 1e-5);
        check_segments_match_one_pass(layer, x, 1, 1e-5);
      }
    };
    for (const auto& layer : s4d_variants<float>(gen)) check(layer);
    for (const auto& layer : selective_variants<float>(gen)) check(layer);
  }
}

TEST_CASE("diag ssm: fp32 layers match the naive double references", "[layers][diag_ssm]") {
  rng gen(22);
  for (index_t time : {1, 17, 64}) {
    for (const auto& layer : s4d_variants<float>(gen, 8, 16)) check_against_reference(layer, 3, time, gen, 1e-5);
    for (const auto& layer : selective_variants<float>(gen, 8, 16)) check_against_reference(layer, 3, time, gen, 1e-5);
  }
  // The double layers agree to rounding.
  for (const auto& layer : s4d_variants<double>(gen)) {
    const auto x = random_tensor<double>({2, 29, 6}, gen);
    CHECK(relative_error(run_layer(layer, x).first, reference(layer, x, {}).first) <= 1e-12);
  }
  for (const auto& layer : selective_variants<double>(gen)) {
    const auto x = random_tensor<double>({2, 29, 6}, gen);
    CHECK(relative_error(run_layer(layer, x).first, reference(layer, x, {}).first) <= 1e-12);
  }
}

TEST_CASE("diag ssm: extreme but valid steps", "[layers][diag_ssm]") {
  rng gen(23);
  SECTION("S4D, tiny Δ = 1e-6: B̄ ≈ Δ keeps its precision (no e^{ΔA} − 1 cancellation)") {
    for (auto& layer : s4d_variants<float>(gen)) {
      layer.log_dt.value().fill_(float(std::log(1e-6)));
      check_against_reference(layer, 2, 65, gen, 1e-5);
      // From h0 = 0 with no skip, y is all B̄ x: a cancelling e^{ΔA} − 1 would be off by ~10 %.
      layer.D.value().fill_(0.0f);
      check_against_reference(layer, 2, 65, gen, 1e-5, 1.0, false);
    }
  }
  SECTION("S4D, large Δ = 10 (Ā ≈ 0) and the S4D-Inv init with N = 64 (|Im A| up to 1.3e3)") {
    for (auto& layer : s4d_variants<float>(gen)) {
      layer.log_dt.value().fill_(float(std::log(10.0)));
      check_against_reference(layer, 2, 33, gen, 1e-5);
    }
    s4d<float> inv({.dim = 4, .state = 64, .init = s4d_init::inv}, gen);
    check_against_reference(inv, 2, 47, gen, 1e-5);
  }
  SECTION("selective, tiny Δ ≈ 2e-9 (a ≈ 1)") {
    for (auto& layer : selective_variants<float>(gen)) {
      layer.dt_bias.value().fill_(-20.0f);
      check_against_reference(layer, 2, 65, gen, 1e-5);
    }
  }
  SECTION("selective, large Δ ≈ 30 (a underflows to 0) and large inputs") {
    for (auto& layer : selective_variants<float>(gen)) {
      layer.dt_bias.value().fill_(30.0f);
      check_against_reference(layer, 2, 33, gen, 1e-5, 10.0);
    }
  }
}

TEST_CASE("diag ssm: initialisation follows the reference code", "[layers][diag_ssm]") {
  rng gen(24);
  s4d<double> lin({.dim = 256, .state = 8, .init = s4d_init::lin}, gen);
  s4d<double> inv({.dim = 2, .state = 8, .init = s4d_init::inv}, gen);
  s4d<double> real({.dim = 2, .state = 8, .init = s4d_init::real}, gen);
  for (index_t n = 0; n < 4; ++n) {
    CHECK(-std::exp(lin.log_A_real.value().at({1, n})) == Approx(-0.5));
    CHECK(lin.A_imag.value().at({1, n}) == Approx(std::numbers::pi * double(n)));
    CHECK(inv.A_imag.value().at({1, n}) == Approx(8.0 / std::numbers::pi * (8.0 / double(2 * n + 1) - 1.0)));
    CHECK(-std::exp(real.log_A_real.value().at({1, n})) == Approx(-double(n + 1)));
    CHECK(real.A_imag.value().at({1, n}) == 0.0);
  }
  double lo = 1, hi = 0, mean_log = 0;
  for (index_t c = 0; c < 256; ++c) {
    const double dt = std::exp(lin.log_dt.value().at({c}));
    lo = std::min(lo, dt);
    hi = std::max(hi, dt);
    mean_log += std::log(dt) / 256.0;
  }
  CHECK(lo >= 0.001);
  CHECK(hi <= 0.1);
  CHECK(mean_log == Approx(0.5 * (std::log(0.001) + std::log(0.1))).margin(0.25));

  selective_ssm<double> ssm({.dim = 64, .state = 16}, gen);
  CHECK(ssm.dt_rank() == 4);
  for (index_t d = 0; d < 64; ++d) {
    const double bias = ssm.dt_bias.value().at({d});
    const double dt = std::log1p(std::exp(bias));  // softplus(b_Δ) = Δ_init ∈ [dt_min, dt_max]
    CHECK(dt >= 0.001 * (1 - 1e-9));
    CHECK(dt <= 0.1 * (1 + 1e-9));
    CHECK(ssm.D.value().at({d}) == 1.0);
    for (index_t n = 0; n < 16; ++n) CHECK(-std::exp(ssm.A_log.value().at({d, n})) == Approx(-double(n + 1)));
  }
  CHECK(as_array(ssm.dt_proj.value()).abs().maxCoeff() <= 0.5);  // U(±1/√dt_rank)
}

TEST_CASE("diag ssm: complex_expm1 gradient matches finite differences", "[layers][diag_ssm][gradcheck]") {
  rng gen(25);
  basic_parameter<double> z(random_tensor<double>({7, 2}, gen), "z");
  z.value().at({0, 0}) = 1e-7;  // tiny arguments too
  z.value().at({0, 1}) = -3e-8;
  struct op_layer {
    struct state {};
    basic_parameter<double> z;
    std::vector<basic_parameter<double>> parameters() const { return {z}; }
    std::pair<basic_var<double>, state> forward(basic_tape<double>& tape, const basic_var<double>& x,
                                                const state&) const {
      return {mul(tape, complex_expm1(tape, z), reshape(tape, x, Shape{7, 2})), {}};
    }
  } layer{z};
  gradcheck_layer(layer, random_tensor<double>({1, 7, 2}, gen), gen);
  // e^z − 1 for a tiny z is z to first order, with full relative precision in float too.
  basic_tape<float> tape(grad_mode::off);
  const auto w = complex_expm1(tape, constant(Tensor::from_data(Shape{2}, {1e-7f, -3e-8f}))).value();
  CHECK(w.at({0}) == Approx(1e-7).epsilon(1e-6));
  CHECK(w.at({1}) == Approx(-3e-8).epsilon(1e-6));
}

TEST_CASE("diag ssm: gradients match finite differences", "[layers][diag_ssm][gradcheck]") {
  rng gen(26);
  for (auto& layer : s4d_variants<double>(gen, 3, 4)) {
    gradcheck_layer(layer, random_tensor<double>({2, 6, 3}, gen), gen);
    carried_state<s4d<double>> wrapped{layer, basic_parameter<double>(random_tensor<double>({2, 3, 2, 2}, gen), "h0"),
                                       2};
    gradcheck_layer(wrapped, random_tensor<double>({2, 6, 3}, gen), gen);
  }
  for (auto& layer : selective_variants<double>(gen, 4, 3)) {
    gradcheck_layer(layer, random_tensor<double>({2, 6, 4}, gen), gen);
    carried_state<selective_ssm<double>> wrapped{
        layer, basic_parameter<double>(random_tensor<double>({2, 4, 3}, gen), "h0"), 4};
    gradcheck_layer(wrapped, random_tensor<double>({2, 6, 4}, gen), gen);
  }
}

TEST_CASE("diag ssm: shape errors name the shapes", "[layers][diag_ssm]") {
  rng gen(27);
  basic_tape<float> tape(grad_mode::off);
  s4d<float> layer({.dim = 4, .state = 6}, gen);
  CHECK_THROWS_AS(layer.forward(tape, constant(Tensor::zeros({2, 5, 3})), {}), Error);
  CHECK_THROWS_AS(layer.forward(tape, constant(Tensor::zeros({2, 5, 4})), {constant(Tensor::zeros({2, 4, 6, 2}))}),
                  Error);
  CHECK_THROWS_AS(s4d<float>({.dim = 4, .state = 5}, gen), Error);
  selective_ssm<float> ssm({.dim = 4, .state = 3}, gen);
  CHECK_THROWS_AS(ssm.forward(tape, constant(Tensor::zeros({2, 5, 4})), {constant(Tensor::zeros({2, 3, 4}))}), Error);
}
