// RWKV-6 time-mix and channel-mix: parallel (chunked WKV) == step-by-step (one token at a
// time), segments == one pass, fp32 vs double, the fp32 layers against naive double references
// (plain loops over docs/models.md §3–4, the WKV as its per-step recurrence) from a random carried
// state, decays within 1e-5 of 1 and near 0, gradients of every parameter, the input and the
// carried state against finite differences.
#include <cmath>
#include <vector>

#include "linrec/layers/rwkv6.hpp"
#include "recurrence_test_util.hpp"

using namespace linrec;
using namespace linrec::layers;
using namespace linrec::test;

namespace {

// Row-vector times matrix: out[j] = Σ_i in[i] W[i,j] (the layers' y = x W).
std::vector<double> times(const std::vector<double>& in, const TensorD& weight) {
  std::vector<double> out(static_cast<std::size_t>(weight.size(1)), 0.0);
  for (index_t i = 0; i < weight.size(0); ++i)
    for (index_t j = 0; j < weight.size(1); ++j) out[j] += in[i] * weight.at({i, j});
  return out;
}

double sigmoid_d(double x) { return 1.0 / (1.0 + std::exp(-x)); }

struct rwkv6_reference_result {
  TensorD y, wkv;  // [B,T,C], final state [B,H,N,N]
};

// RWKV-6 time-mix by docs/models.md §4, token by token in double:
//   xx = x_prev − x;  xxx = x + xx ⊙ maa_x;  m_{w,k,v,r,g} = tanh(xxx W1)_slice W2_slice
//   x_* = x + xx ⊙ (maa_* + m_*);  r, k, v = x_* W;  g = silu(xg Wg)
//   d = exp(−exp(time_decay + tanh(xw Wd1) Wd2))
//   per head: y[i] = Σ_j r[j] (u[j] k[j] v[i] + S[j,i]);  S[j,i] ← d[j] S[j,i] + k[j] v[i]
//   out = (groupnorm_H(y; eps = 1e-5·8²) ⊙ g) Wo
template <class T>
rwkv6_reference_result time_mix_reference(const rwkv6_time_mix<T>& layer, const TensorD& x, const TensorD& prev_x,
                                          const TensorD& state0) {
  const index_t batch = x.size(0), time = x.size(1), channels = x.size(2);
  const index_t heads = layer.time_faaaa.value().size(0), n = layer.time_faaaa.value().size(1);
  const index_t rank = rwkv6_time_mix<T>::mix_rank;
  const auto v = [](const basic_parameter<T>& p) { return to_double(p.value()); };
  const TensorD maa[5] = {v(layer.time_maa_w), v(layer.time_maa_k), v(layer.time_maa_v), v(layer.time_maa_r),
                          v(layer.time_maa_g)};
  const auto maa_x = v(layer.time_maa_x), w1 = v(layer.time_maa_w1), w2 = v(layer.time_maa_w2);
  const auto decay = v(layer.time_decay), decay_w1 = v(layer.time_decay_w1), decay_w2 = v(layer.time_decay_w2);
  const auto bonus = v(layer.time_faaaa), w_r = v(layer.receptance), w_k = v(layer.key), w_v = v(layer.value);
  const auto w_g = v(layer.gate), w_o = v(layer.output), ln_w = v(layer.ln_x_weight), ln_b = v(layer.ln_x_bias);
  const double eps = 1e-5 * 64;
  rwkv6_reference_result out{TensorD::empty({batch, time, channels}), state0.clone()};
  for (index_t b = 0; b < batch; ++b) {
    std::vector<double> prev(channels);
    for (index_t c = 0; c < channels; ++c) prev[c] = prev_x.at({b, c});
    for (index_t t = 0; t < time; ++t) {
      std::vector<double> now(channels), xx(channels), xxx(channels);
      for (index_t c = 0; c < channels; ++c) {
        now[c] = x.at({b, t, c});
        xx[c] = prev[c] - now[c];
        xxx[c] = now[c] + xx[c] * maa_x.at({c});
        prev[c] = now[c];
      }
      auto lora = times(xxx, w1);
      for (auto& l : lora) l = std::tanh(l);
      std::vector<double> mixed[5];  // x_w, x_k, x_v, x_r, x_g
      for (index_t i = 0; i < 5; ++i) {
        mixed[i].resize(channels);
        for (index_t c = 0; c < channels; ++c) {
          double m = 0;
          for (index_t q = 0; q < rank; ++q) m += lora[i * rank + q] * w2.at({i, q, c});
          mixed[i][c] = now[c] + xx[c] * (maa[i].at({c}) + m);
        }
      }
      const auto r = times(mixed[3], w_r), k = times(mixed[1], w_k), val = times(mixed[2], w_v);
      auto g = times(mixed[4], w_g);
      for (auto& gc : g) gc = gc * sigmoid_d(gc);
      auto lora_d = times(mixed[0], decay_w1);
      for (auto& l : lora_d) l = std::tanh(l);
      const auto w_data = times(lora_d, decay_w2);
      std::vector<double> y(channels, 0.0);
      for (index_t h = 0; h < heads; ++h) {
        for (index_t j = 0; j < n; ++j) {
          const index_t cj = h * n + j;
          const double d = std::exp(-std::exp(decay.at({cj}) + w_data[cj]));
          for (index_t i = 0; i < n; ++i) {
            double& s = out.wkv.at({b, h, j, i});
            y[h * n + i] += r[cj] * (bonus.at({h, j}) * k[cj] * val[h * n + i] + s);
            s = d * s + k[cj] * val[h * n + i];
          }
        }
        double mean = 0, var = 0;
        for (index_t i = 0; i < n; ++i) mean += y[h * n + i] / double(n);
        for (index_t i = 0; i < n; ++i) var += (y[h * n + i] - mean) * (y[h * n + i] - mean) / double(n);
        for (index_t i = 0; i < n; ++i) {
          const index_t c = h * n + i;
          y[c] = ((y[c] - mean) / std::sqrt(var + eps) * ln_w.at({c}) + ln_b.at({c})) * g[c];
        }
      }
      const auto o = times(y, w_o);
      for (index_t c = 0; c < channels; ++c) out.y.at({b, t, c}) = o[c];
    }
  }
  return out;
}

// RWKV-6 channel-mix by docs/models.md §3: xk, xr = x + (x_prev − x) ⊙ maa; y = σ(xr Wr) ⊙ (relu(xk Wk)² Wv).
template <class T>
TensorD channel_mix_reference(const rwkv6_channel_mix<T>& layer, const TensorD& x, const TensorD& prev_x) {
  const index_t batch = x.size(0), time = x.size(1), channels = x.size(2);
  const auto maa_k = to_double(layer.time_maa_k.value()), maa_r = to_double(layer.time_maa_r.value());
  const auto w_k = to_double(layer.key.value()), w_v = to_double(layer.value.value());
  const auto w_r = to_double(layer.receptance.value());
  auto y = TensorD::empty({batch, time, channels});
  for (index_t b = 0; b < batch; ++b)
    for (index_t t = 0; t < time; ++t) {
      std::vector<double> xk(channels), xr(channels);
      for (index_t c = 0; c < channels; ++c) {
        const double now = x.at({b, t, c}), prev = t > 0 ? x.at({b, t - 1, c}) : prev_x.at({b, c});
        xk[c] = now + (prev - now) * maa_k.at({c});
        xr[c] = now + (prev - now) * maa_r.at({c});
      }
      auto hidden = times(xk, w_k);
      for (auto& h : hidden) h = h > 0 ? h * h : 0;
      const auto value = times(hidden, w_v), receptance = times(xr, w_r);
      for (index_t c = 0; c < channels; ++c) y.at({b, t, c}) = sigmoid_d(receptance[c]) * value[c];
    }
  return y;
}

// The fp32 time-mix against the reference from a random state (token and WKV matrix): y and
// the final state, ‖·‖-relative.
void check_time_mix_against_reference(const rwkv6_time_mix<float>& layer, index_t batch, index_t time, rng& gen,
                                      double tolerance) {
  const index_t channels = layer.key.value().size(0);
  const Shape state_shape{batch, layer.time_faaaa.value().size(0), layer.time_faaaa.value().size(1),
                          layer.time_faaaa.value().size(1)};
  const auto x = random_tensor<double>({batch, time, channels}, gen);
  const auto prev_x = random_tensor<double>({batch, channels}, gen);
  const auto state0 = random_tensor<double>(state_shape, gen);
  const auto ref = time_mix_reference(layer, x, prev_x, state0);
  basic_tape<float> tape(grad_mode::off);
  const auto [y, out] = layer.forward(tape, constant(from_double<float>(x)),
                                      {constant(from_double<float>(prev_x)), constant(from_double<float>(state0))});
  INFO("T=" << time);
  CHECK(relative_error(y.value(), ref.y) <= tolerance);
  CHECK(relative_error(out.wkv.value(), ref.wkv) <= tolerance);
  CHECK(as_array(ref.y).abs().maxCoeff() > 0);
}

void check_channel_mix_against_reference(const rwkv6_channel_mix<float>& layer, index_t batch, index_t time, rng& gen,
                                         double tolerance) {
  const index_t channels = layer.receptance.value().size(0);
  const auto x = random_tensor<double>({batch, time, channels}, gen);
  const auto prev_x = random_tensor<double>({batch, channels}, gen);
  basic_tape<float> tape(grad_mode::off);
  const auto y = layer.forward(tape, constant(from_double<float>(x)), {constant(from_double<float>(prev_x))}).first;
  INFO("T=" << time);
  CHECK(relative_error(y.value(), channel_mix_reference(layer, x, prev_x)) <= tolerance);
}

// Wraps a layer: forward runs [0, cut) from a learnable initial state, then [cut, T) from the
// carried state. gradcheck_layer on it checks the gradients into the initial state (token and,
// for the time-mix, the WKV matrix) and through the carried one.
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
    if constexpr (requires { start.wkv; })
      start = {initial[0], initial[1]};
    else
      start = {initial[0]};
    auto [y1, s1] = layer.forward(tape, narrow(tape, x, 1, 0, cut), start);
    auto [y2, s2] = layer.forward(tape, narrow(tape, x, 1, cut, x.shape()[1] - cut), s1);
    return {concat(tape, std::vector<basic_var<double>>{y1, y2}, 1), s2};
  }
};

}  // namespace

TEMPLATE_TEST_CASE("rwkv6 layers: parallel equals step-by-step and segments", "[layers][rwkv6]", rwkv6_time_mix<float>,
                   rwkv6_channel_mix<float>) {
  rng gen(1);
  for (index_t time : {1, 2, 17, 40}) {
    TestType layer({.dim = 16, .layer = 1, .layers = 3, .head_size = 8}, gen);
    randomize_zero_weights(layer, gen);
    const auto x = random_tensor<float>({2, time, 16}, gen);
    INFO("T=" << time);
    check_step_matches_parallel(layer, x, 1e-5);
    if (time > 1) {
      check_segments_match_one_pass(layer, x, (time + 1) / 2, 1e-5);
      check_segments_match_one_pass(layer, x, 1, 1e-5);
    }
  }
}

TEMPLATE_TEST_CASE("rwkv6 layers: fp32 matches double", "[layers][rwkv6]",
                   (std::pair<rwkv6_time_mix<float>, rwkv6_time_mix<double>>),
                   (std::pair<rwkv6_channel_mix<float>, rwkv6_channel_mix<double>>)) {
  using F = typename TestType::first_type;
  using D = typename TestType::second_type;
  rng gen_f(5), gen_d(5), gen_x(6);
  const rwkv_config cfg{.dim = 32, .layer = 0, .layers = 2, .head_size = 16};
  F layer_f(cfg, gen_f);
  D layer_d(cfg, gen_d);
  randomize_zero_weights(layer_f, gen_f);
  randomize_zero_weights(layer_d, gen_d);
  const auto x_d = random_tensor<double>({2, 37, 32}, gen_x);
  auto x_f = basic_tensor<float>::empty(x_d.shape());
  for (index_t i = 0; i < x_d.numel(); ++i) x_f.data()[i] = float(x_d.data()[i]);
  basic_tape<float> tf(grad_mode::off);
  basic_tape<double> td(grad_mode::off);
  CHECK(relative_error(layer_f.forward(tf, constant(x_f), {}).first.value(),
                       layer_d.forward(td, constant(x_d), {}).first.value()) <= 1e-5);
}

TEMPLATE_TEST_CASE("rwkv6 layers: gradients match finite differences", "[layers][rwkv6][gradcheck]",
                   rwkv6_time_mix<double>, rwkv6_channel_mix<double>) {
  rng gen(3);
  TestType layer({.dim = 8, .layer = 1, .layers = 2, .head_size = 4}, gen);
  randomize_zero_weights(layer, gen);
  gradcheck_layer(layer, random_tensor<double>({2, 19, 8}, gen), gen);  // T=19: two chunks, one partial
  SECTION("initial state and carried state") {
    std::vector<basic_parameter<double>> initial{
        basic_parameter<double>(random_tensor<double>({2, 8}, gen), "prev_x0")};
    if constexpr (std::is_same_v<TestType, rwkv6_time_mix<double>>)
      initial.emplace_back(random_tensor<double>({2, 2, 4, 4}, gen), "wkv0");
    two_segments<TestType> wrapped{layer, initial, 17};  // the first segment: a full chunk and a partial one
    gradcheck_layer(wrapped, random_tensor<double>({2, 21, 8}, gen), gen);
  }
}

TEST_CASE("rwkv6 time-mix: gradients at extreme decays match finite differences", "[layers][rwkv6][gradcheck]") {
  rng gen(4);
  rwkv6_time_mix<double> layer({.dim = 8, .layer = 0, .layers = 1, .head_size = 4}, gen);
  randomize_zero_weights(layer, gen);
  SECTION("decays within 1e-5 of 1") {
    layer.time_decay.value().fill_(-12.0);
    gradcheck_layer(layer, random_tensor<double>({2, 19, 8}, gen), gen);
  }
  SECTION("decays near 0 (d = e^{−e^2} ≈ 6e-4)") {
    layer.time_decay.value().fill_(2.0);
    gradcheck_layer(layer, random_tensor<double>({2, 19, 8}, gen), gen);
  }
}

TEST_CASE("rwkv6 layers: fp32 matches the naive double reference from a carried state", "[layers][rwkv6]") {
  rng gen(21);
  for (index_t time : {1, 17, 64}) {
    rwkv6_time_mix<float> att({.dim = 16, .layer = 1, .layers = 3, .head_size = 8}, gen);
    randomize_zero_weights(att, gen);
    check_time_mix_against_reference(att, 2, time, gen, 1e-5);
    rwkv6_channel_mix<float> ffn({.dim = 16, .layer = 1, .layers = 3, .head_size = 8}, gen);
    randomize_zero_weights(ffn, gen);
    check_channel_mix_against_reference(ffn, 2, time, gen, 1e-5);
  }
  // The double layer agrees to rounding.
  rng gen_d(22);
  rwkv6_time_mix<double> att_d({.dim = 8, .layer = 0, .layers = 2, .head_size = 4}, gen_d);
  randomize_zero_weights(att_d, gen_d);
  const auto x = random_tensor<double>({2, 29, 8}, gen_d);
  const auto prev_x = random_tensor<double>({2, 8}, gen_d), state0 = random_tensor<double>({2, 2, 4, 4}, gen_d);
  basic_tape<double> tape(grad_mode::off);
  const auto [y, out] = att_d.forward(tape, constant(x), {constant(prev_x), constant(state0)});
  const auto ref = time_mix_reference(att_d, x, prev_x, state0);
  CHECK(relative_error(y.value(), ref.y) <= 1e-12);
  CHECK(relative_error(out.wkv.value(), ref.wkv) <= 1e-12);
}

TEST_CASE("rwkv6 time-mix: extreme but valid decays against the reference", "[layers][rwkv6]") {
  rng gen(23);
  rwkv6_time_mix<float> layer({.dim = 16, .layer = 0, .layers = 1, .head_size = 8}, gen);
  randomize_zero_weights(layer, gen);
  SECTION("decays within 1e-5 of 1 (time_decay = −12: 1 − d ≈ 6e-6), long sequence") {
    layer.time_decay.value().fill_(-12.0f);
    check_time_mix_against_reference(layer, 2, 301, gen, 1e-5);
  }
  SECTION("decays near 0 (time_decay = 2: d ≈ 6e-4; chunk products underflow)") {
    layer.time_decay.value().fill_(2.0f);
    check_time_mix_against_reference(layer, 2, 65, gen, 1e-5);
  }
}
