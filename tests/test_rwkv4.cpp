// RWKV-4 time-mix and channel-mix: parallel == step-by-step, segments == one pass, fp32 vs
// double, the fp32 layers against naive long-double references (plain loops over docs/models.md
// §2–3) from a random carried state, decays within 1e-5 of 1 and keys where e^k overflows
// float, gradients of every parameter, the input and the carried state against finite
// differences.
#include <cmath>
#include <vector>

#include "linrec/layers/rwkv4.hpp"
#include "recurrence_test_util.hpp"

using namespace linrec;
using namespace linrec::layers;
using namespace linrec::test;

namespace {

// Row-vector times matrix: out[j] = Σ_i in[i] W[i,j] (the layers' y = x W).
std::vector<long double> times(const std::vector<long double>& in, const TensorD& weight) {
  std::vector<long double> out(static_cast<std::size_t>(weight.size(1)), 0.0L);
  for (index_t i = 0; i < weight.size(0); ++i)
    for (index_t j = 0; j < weight.size(1); ++j) out[j] += in[i] * weight.at({i, j});
  return out;
}

long double sigmoid_ld(long double x) { return 1.0L / (1.0L + std::exp(-x)); }

// A random state to start from: the previous token [B,C] and, for the time-mix, the WKV
// numerator and denominator [B,C,2] as (scale, exponent); den > 0.
struct rwkv4_start {
  TensorD prev_x, num, den;
  rwkv4_start(index_t batch, index_t channels, rng& gen, double exponent_scale = 1.0)
      : prev_x(random_tensor<double>({batch, channels}, gen)),
        num(random_tensor<double>({batch, channels, 2}, gen)),
        den(random_tensor<double>({batch, channels, 2}, gen)) {
    for (index_t i = 0; i < batch * channels; ++i) {
      den.data()[2 * i] = 0.5 + std::abs(den.data()[2 * i]);
      num.data()[2 * i + 1] *= exponent_scale;
      den.data()[2 * i + 1] = num.data()[2 * i + 1] + 0.5 * den.data()[2 * i + 1];
    }
  }
};

struct rwkv4_reference_result {
  TensorD y;
  std::vector<long double> num, den;  // final WKV states as real values, [B,C]
};

// RWKV-4 time-mix by docs/models.md §2, token by token in long double (e^k up to e^{±11000} fits,
// so the plain recurrences need no log-space trick):
//   xk = x μk + x_prev (1 − μk) (also v, r);  k = xk Wk, v = xv Wv, r = xr Wr;  w = e^{time_decay}
//   wkv = (N + e^{u+k} v) / (D + e^{u+k});  N ← e^{−w} N + e^k v;  D ← e^{−w} D + e^k
//   y = (σ(r) ⊙ wkv) Wo
template <class T>
rwkv4_reference_result time_mix_reference(const rwkv4_time_mix<T>& layer, const TensorD& x, const rwkv4_start& start) {
  const index_t batch = x.size(0), time = x.size(1), channels = x.size(2);
  const auto decay = to_double(layer.time_decay.value()), first = to_double(layer.time_first.value());
  const auto mix_k = to_double(layer.time_mix_k.value()), mix_v = to_double(layer.time_mix_v.value());
  const auto mix_r = to_double(layer.time_mix_r.value());
  const auto w_k = to_double(layer.key.value()), w_v = to_double(layer.value.value());
  const auto w_r = to_double(layer.receptance.value()), w_o = to_double(layer.output.value());
  rwkv4_reference_result out{TensorD::empty({batch, time, channels}), {}, {}};
  for (index_t b = 0; b < batch; ++b) {
    std::vector<long double> num(channels), den(channels), prev(channels);
    for (index_t c = 0; c < channels; ++c) {
      num[c] = start.num.at({b, c, 0}) * std::exp((long double)start.num.at({b, c, 1}));
      den[c] = start.den.at({b, c, 0}) * std::exp((long double)start.den.at({b, c, 1}));
      prev[c] = start.prev_x.at({b, c});
    }
    for (index_t t = 0; t < time; ++t) {
      std::vector<long double> xk(channels), xv(channels), xr(channels);
      for (index_t c = 0; c < channels; ++c) {
        const long double now = x.at({b, t, c});
        xk[c] = now * mix_k.at({c}) + prev[c] * (1 - mix_k.at({c}));
        xv[c] = now * mix_v.at({c}) + prev[c] * (1 - mix_v.at({c}));
        xr[c] = now * mix_r.at({c}) + prev[c] * (1 - mix_r.at({c}));
        prev[c] = now;
      }
      const auto k = times(xk, w_k), v = times(xv, w_v), r = times(xr, w_r);
      std::vector<long double> gated(channels);
      for (index_t c = 0; c < channels; ++c) {
        const long double w = std::exp((long double)decay.at({c})), bonus = std::exp(first.at({c}) + k[c]);
        gated[c] = sigmoid_ld(r[c]) * (num[c] + bonus * v[c]) / (den[c] + bonus);
        num[c] = std::exp(-w) * num[c] + std::exp(k[c]) * v[c];
        den[c] = std::exp(-w) * den[c] + std::exp(k[c]);
      }
      const auto y = times(gated, w_o);
      for (index_t c = 0; c < channels; ++c) out.y.at({b, t, c}) = double(y[c]);
    }
    out.num.insert(out.num.end(), num.begin(), num.end());
    out.den.insert(out.den.end(), den.begin(), den.end());
  }
  return out;
}

// RWKV-4 channel-mix by docs/models.md §3: y = σ(xr Wr) ⊙ (relu(xk Wk)² Wv).
template <class T>
TensorD channel_mix_reference(const rwkv4_channel_mix<T>& layer, const TensorD& x, const TensorD& prev_x) {
  const index_t batch = x.size(0), time = x.size(1), channels = x.size(2);
  const auto mix_k = to_double(layer.time_mix_k.value()), mix_r = to_double(layer.time_mix_r.value());
  const auto w_k = to_double(layer.key.value()), w_v = to_double(layer.value.value());
  const auto w_r = to_double(layer.receptance.value());
  auto y = TensorD::empty({batch, time, channels});
  for (index_t b = 0; b < batch; ++b)
    for (index_t t = 0; t < time; ++t) {
      std::vector<long double> xk(channels), xr(channels);
      for (index_t c = 0; c < channels; ++c) {
        const long double now = x.at({b, t, c}), prev = t > 0 ? x.at({b, t - 1, c}) : prev_x.at({b, c});
        xk[c] = now * mix_k.at({c}) + prev * (1 - mix_k.at({c}));
        xr[c] = now * mix_r.at({c}) + prev * (1 - mix_r.at({c}));
      }
      auto hidden = times(xk, w_k);
      for (auto& h : hidden) h = h > 0 ? h * h : 0;
      const auto value = times(hidden, w_v), receptance = times(xr, w_r);
      for (index_t c = 0; c < channels; ++c) y.at({b, t, c}) = double(sigmoid_ld(receptance[c]) * value[c]);
    }
  return y;
}

// The fp32 time-mix against the reference from a random state: y (‖·‖-relative), and the final
// states per element — N/D (a weighted mean of values) absolute against max(1, |N/D|), D
// relative (as |Δ log D|, bounded by log_den_tolerance, default `tolerance`).
void check_time_mix_against_reference(const rwkv4_time_mix<float>& layer, index_t batch, index_t time, rng& gen,
                                      double tolerance, double exponent_scale = 1.0, double log_den_tolerance = 0) {
  const index_t channels = layer.key.value().size(0);
  const auto x = random_tensor<double>({batch, time, channels}, gen);
  const rwkv4_start start(batch, channels, gen, exponent_scale);
  const auto ref = time_mix_reference(layer, x, start);
  basic_tape<float> tape(grad_mode::off);
  const rwkv4_time_mix<float>::state in{constant(from_double<float>(start.prev_x)),
                                        constant(from_double<float>(start.num)),
                                        constant(from_double<float>(start.den))};
  const auto [y, out] = layer.forward(tape, constant(from_double<float>(x)), in);
  INFO("T=" << time);
  CHECK(relative_error(y.value(), ref.y) <= tolerance);
  CHECK(as_array(ref.y).abs().maxCoeff() > 0);
  double worst_log_den = 0, worst_ratio = 0;
  for (index_t i = 0; i < batch * channels; ++i) {
    const float* num = out.num.value().data() + 2 * i;
    const float* den = out.den.value().data() + 2 * i;
    const long double ratio_ref = ref.num[i] / ref.den[i];
    const long double ratio = (long double)num[0] / den[0] * std::exp((long double)num[1] - den[1]);
    worst_log_den =
        std::max(worst_log_den, double(std::abs(std::log((long double)den[0]) + den[1] - std::log(ref.den[i]))));
    worst_ratio = std::max(worst_ratio, double(std::abs(ratio - ratio_ref) / std::max(1.0L, std::abs(ratio_ref))));
  }
  CHECK(worst_log_den <= (log_den_tolerance > 0 ? log_den_tolerance : tolerance));
  CHECK(worst_ratio <= tolerance);
}

void check_channel_mix_against_reference(const rwkv4_channel_mix<float>& layer, index_t batch, index_t time, rng& gen,
                                         double tolerance) {
  const index_t channels = layer.receptance.value().size(0);
  const auto x = random_tensor<double>({batch, time, channels}, gen);
  const auto prev_x = random_tensor<double>({batch, channels}, gen);
  basic_tape<float> tape(grad_mode::off);
  const auto [y, out] = layer.forward(tape, constant(from_double<float>(x)), {constant(from_double<float>(prev_x))});
  INFO("T=" << time);
  CHECK(relative_error(y.value(), channel_mix_reference(layer, x, prev_x)) <= tolerance);
  double worst_prev = 0;  // the carried token is x[:, T−1], exactly
  for (index_t b = 0; b < batch; ++b)
    for (index_t c = 0; c < channels; ++c)
      worst_prev =
          std::max(worst_prev, std::abs(double(out.prev_x.value().at({b, c})) - double(float(x.at({b, time - 1, c})))));
  CHECK(worst_prev == 0);
}

// Wraps a layer: forward runs [0, cut) from a learnable initial state, then [cut, T) from the
// carried state. gradcheck_layer on it checks the gradients into the initial state (for the
// time-mix: the log-space (scale, exponent) coordinates of N and D) and through the carried one.
template <class Layer>
struct two_segments {
  using value_type = double;
  using state = typename Layer::state;
  Layer& layer;
  std::vector<basic_parameter<double>> initial;
  index_t cut;

  std::vector<basic_parameter<double>> parameters() const {
    auto p = layer.parameters();
    p.insert(p.end(), initial.begin(), initial.end());
    return p;
  }
  std::pair<basic_var<double>, state> forward(basic_tape<double>& tape, const basic_var<double>& x,
                                              const state&) const {
    state start{};
    if constexpr (requires { start.num; })
      start = {initial[0], initial[1], initial[2]};
    else
      start = {initial[0]};
    auto [y1, s1] = layer.forward(tape, narrow(tape, x, 1, 0, cut), start);
    auto [y2, s2] = layer.forward(tape, narrow(tape, x, 1, cut, x.shape()[1] - cut), s1);
    return {concat(tape, std::vector<basic_var<double>>{y1, y2}, 1), s2};
  }
};

}  // namespace

TEMPLATE_TEST_CASE("rwkv4 layers: parallel equals step-by-step and segments", "[layers][rwkv4]", rwkv4_time_mix<float>,
                   rwkv4_channel_mix<float>) {
  rng gen(1);
  for (index_t time : {1, 2, 7, 33}) {
    rwkv_config cfg{.dim = 12, .layer = 1, .layers = 3};
    TestType layer(cfg, gen);
    randomize_zero_weights(layer, gen);
    const auto x = random_tensor<float>({2, time, 12}, gen);
    INFO("T=" << time);
    check_step_matches_parallel(layer, x, 1e-5);
    if (time > 1) {
      check_segments_match_one_pass(layer, x, time / 2, 1e-5);
      check_segments_match_one_pass(layer, x, 1, 1e-5);
    }
  }
}

TEMPLATE_TEST_CASE("rwkv4 layers: fp32 matches double", "[layers][rwkv4]",
                   (std::pair<rwkv4_time_mix<float>, rwkv4_time_mix<double>>),
                   (std::pair<rwkv4_channel_mix<float>, rwkv4_channel_mix<double>>)) {
  using F = typename TestType::first_type;
  using D = typename TestType::second_type;
  rng gen_f(5), gen_d(5), gen_x(6);
  rwkv_config cfg{.dim = 16, .layer = 0, .layers = 2};
  F layer_f(cfg, gen_f);
  D layer_d(cfg, gen_d);
  randomize_zero_weights(layer_f, gen_f);
  randomize_zero_weights(layer_d, gen_d);
  const auto x_d = random_tensor<double>({3, 41, 16}, gen_x);
  auto x_f = basic_tensor<float>::empty(x_d.shape());
  for (index_t i = 0; i < x_d.numel(); ++i) x_f.data()[i] = float(x_d.data()[i]);
  basic_tape<float> tf(grad_mode::off);
  basic_tape<double> td(grad_mode::off);
  const auto yf = layer_f.forward(tf, constant(x_f), {}).first.value();
  const auto yd = layer_d.forward(td, constant(x_d), {}).first.value();
  CHECK(relative_error(yf, yd) <= 1e-5);
}

TEST_CASE("rwkv4 time-mix survives keys where e^k overflows float", "[layers][rwkv4]") {
  rng gen(9);
  rwkv4_time_mix<float> layer({.dim = 8, .layer = 0, .layers = 1}, gen);
  randomize_zero_weights(layer, gen);
  layer.key.value().copy_from(random_tensor<float>({8, 8}, gen, 40.0));  // k ~ ±100s
  basic_tape<float> tape(grad_mode::off);
  const auto y = layer.forward(tape, constant(random_tensor<float>({1, 64, 8}, gen)), {}).first.value();
  CHECK(as_array(y).isFinite().all());
  CHECK(as_array(y).abs().maxCoeff() > 0);
}

TEMPLATE_TEST_CASE("rwkv4 layers: gradients match finite differences", "[layers][rwkv4][gradcheck]",
                   rwkv4_time_mix<double>, rwkv4_channel_mix<double>) {
  rng gen(3);
  TestType layer({.dim = 6, .layer = 1, .layers = 2}, gen);
  randomize_zero_weights(layer, gen);
  gradcheck_layer(layer, random_tensor<double>({2, 5, 6}, gen), gen);
  SECTION("initial state and carried state") {
    const rwkv4_start start(2, 6, gen);
    std::vector<basic_parameter<double>> initial{basic_parameter<double>(start.prev_x, "prev_x0")};
    if constexpr (std::is_same_v<TestType, rwkv4_time_mix<double>>) {
      initial.emplace_back(start.num, "num0");
      initial.emplace_back(start.den, "den0");
    }
    two_segments<TestType> wrapped{layer, initial, 2};
    gradcheck_layer(wrapped, random_tensor<double>({2, 5, 6}, gen), gen);
  }
}

TEST_CASE("rwkv4 time-mix: gradients at extreme values match finite differences", "[layers][rwkv4][gradcheck]") {
  rng gen(4);
  rwkv4_time_mix<double> layer({.dim = 6, .layer = 0, .layers = 1}, gen);
  randomize_zero_weights(layer, gen);
  SECTION("decays within 1e-5 of 1") {
    layer.time_decay.value().fill_(-12.0);
    gradcheck_layer(layer, random_tensor<double>({2, 7, 6}, gen), gen);
  }
  SECTION("large keys (attention close to one-hot)") {
    layer.key.value().copy_from(random_tensor<double>({6, 6}, gen, 8.0));
    gradcheck_layer(layer, random_tensor<double>({2, 7, 6}, gen), gen);
  }
}

TEST_CASE("rwkv4 layers: fp32 matches the naive long-double reference from a carried state", "[layers][rwkv4]") {
  rng gen(21);
  for (index_t time : {1, 17, 64}) {
    rwkv4_time_mix<float> att({.dim = 12, .layer = 1, .layers = 3}, gen);
    randomize_zero_weights(att, gen);
    check_time_mix_against_reference(att, 3, time, gen, 1e-5);
    rwkv4_channel_mix<float> ffn({.dim = 12, .layer = 1, .layers = 3}, gen);
    randomize_zero_weights(ffn, gen);
    check_channel_mix_against_reference(ffn, 3, time, gen, 1e-5);
  }
  // The double layer agrees to rounding.
  rng gen_d(22);
  rwkv4_time_mix<double> att_d({.dim = 8, .layer = 0, .layers = 2}, gen_d);
  randomize_zero_weights(att_d, gen_d);
  const auto x = random_tensor<double>({2, 29, 8}, gen_d);
  const rwkv4_start start(2, 8, gen_d);
  basic_tape<double> tape(grad_mode::off);
  const auto y = att_d.forward(tape, constant(x), {constant(start.prev_x), constant(start.num), constant(start.den)});
  CHECK(relative_error(y.first.value(), time_mix_reference(att_d, x, start).y) <= 1e-12);
}

TEST_CASE("rwkv4 time-mix: extreme but valid decays and keys against the reference", "[layers][rwkv4]") {
  rng gen(23);
  rwkv4_time_mix<float> layer({.dim = 8, .layer = 0, .layers = 1}, gen);
  randomize_zero_weights(layer, gen);
  SECTION("decays within 1e-5 of 1 (time_decay = −12: w = 6e-6), long sequence") {
    layer.time_decay.value().fill_(-12.0f);
    check_time_mix_against_reference(layer, 2, 301, gen, 1e-5);
  }
  SECTION("decays near 0 (time_decay = 3: e^{−w} = 2e-9)") {
    layer.time_decay.value().fill_(3.0f);
    check_time_mix_against_reference(layer, 2, 33, gen, 1e-5);
  }
  SECTION("keys of ±100s (e^k overflows float) and states with exponents of ±100s") {
    layer.key.value().copy_from(random_tensor<float>({8, 8}, gen, 40.0));
    // k is rounded to float: an error of ulp(k) ≈ 1e-5 at |k| ≈ 150 moves e^k by as much. D is
    // dominated by the largest recent e^k, so log D inherits the fp32 matmul's absolute error in
    // k: terms of ±hundreds give ≈ 1e-4 (measured 4e-4 at log D ≈ 300); y and N/D, ratios in
    // which that error cancels, stay at 5e-5.
    check_time_mix_against_reference(layer, 2, 64, gen, 5e-5, 100.0, 1e-3);
  }
}
