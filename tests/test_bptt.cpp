// Sequential BPTT (layers/bptt.hpp) against the scan mode, for every layer: from the same
// non-zero initial state, the outputs, the final state and the gradients of every parameter,
// of the input and of the initial state agree (fp32 and double), for an odd T and for T = 1;
// and the BPTT tape really holds one layer step per token.
#include <string>
#include <vector>

#include "layer_test_util.hpp"
#include "linrec/layers/bptt.hpp"
#include "linrec/layers/diag_ssm.hpp"
#include "linrec/layers/lru.hpp"
#include "linrec/layers/rwkv4.hpp"
#include "linrec/layers/rwkv6.hpp"

using namespace linrec;
using namespace linrec::layers;
using namespace linrec::test;

namespace {

// A layer under test: how to build it, a random initial state, the state as Vars, and the
// state's tensors as real values a loss may depend on. `T` is the scalar type.
template <class T>
struct rwkv4_tm_case {
  using layer_type = rwkv4_time_mix<T>;
  static constexpr index_t channels = 8;
  static layer_type make(rng& gen) {
    layer_type layer({.dim = channels, .layer = 1, .layers = 3}, gen);
    randomize_zero_weights(layer, gen);
    return layer;
  }
  // prev_x [B,C]; num, den [B,C,2] log-space (scale, exponent) with one exponent per channel
  static std::vector<basic_tensor<T>> initial_state(index_t batch, rng& gen) {
    auto num = basic_tensor<T>::empty({batch, channels, 2}), den = basic_tensor<T>::empty(num.shape());
    for (index_t i = 0; i < batch * channels; ++i) {
      const T exponent = T(gen.normal());
      num.data()[2 * i] = T(gen.normal());
      den.data()[2 * i] = T(gen.uniform(0.5, 1.5));
      num.data()[2 * i + 1] = den.data()[2 * i + 1] = exponent;
    }
    return {random_tensor<T>({batch, channels}, gen), num, den};
  }
  static typename layer_type::state state_of(const std::vector<basic_var<T>>& v) { return {v[0], v[1], v[2]}; }
  // The log-space coordinates are a representation (the exponent is a running maximum);
  // the values they stand for are s·e^m.
  static std::vector<basic_var<T>> readout(basic_tape<T>& tape, const typename layer_type::state& s) {
    return {s.prev_x, log_to_real(tape, s.num), log_to_real(tape, s.den)};
  }
};

template <class T>
struct rwkv4_cm_case {
  using layer_type = rwkv4_channel_mix<T>;
  static constexpr index_t channels = 8;
  static layer_type make(rng& gen) {
    layer_type layer({.dim = channels, .layer = 1, .layers = 3}, gen);
    randomize_zero_weights(layer, gen);
    return layer;
  }
  static std::vector<basic_tensor<T>> initial_state(index_t batch, rng& gen) {
    return {random_tensor<T>({batch, channels}, gen)};
  }
  static typename layer_type::state state_of(const std::vector<basic_var<T>>& v) { return {v[0]}; }
  static std::vector<basic_var<T>> readout(basic_tape<T>&, const typename layer_type::state& s) { return {s.prev_x}; }
};

template <class T>
struct rwkv6_tm_case {
  using layer_type = rwkv6_time_mix<T>;
  static constexpr index_t channels = 16, head_size = 8;
  static layer_type make(rng& gen) {
    layer_type layer({.dim = channels, .layer = 1, .layers = 3, .head_size = head_size}, gen);
    randomize_zero_weights(layer, gen);
    return layer;
  }
  static std::vector<basic_tensor<T>> initial_state(index_t batch, rng& gen) {
    return {random_tensor<T>({batch, channels}, gen),
            random_tensor<T>({batch, channels / head_size, head_size, head_size}, gen, 0.5)};
  }
  static typename layer_type::state state_of(const std::vector<basic_var<T>>& v) { return {v[0], v[1]}; }
  static std::vector<basic_var<T>> readout(basic_tape<T>&, const typename layer_type::state& s) {
    return {s.prev_x, s.wkv};
  }
};

template <class T>
struct rwkv6_cm_case {
  using layer_type = rwkv6_channel_mix<T>;
  static constexpr index_t channels = 16;
  static layer_type make(rng& gen) {
    layer_type layer({.dim = channels, .layer = 1, .layers = 3, .head_size = 8}, gen);
    randomize_zero_weights(layer, gen);
    return layer;
  }
  static std::vector<basic_tensor<T>> initial_state(index_t batch, rng& gen) {
    return {random_tensor<T>({batch, channels}, gen)};
  }
  static typename layer_type::state state_of(const std::vector<basic_var<T>>& v) { return {v[0]}; }
  static std::vector<basic_var<T>> readout(basic_tape<T>&, const typename layer_type::state& s) { return {s.prev_x}; }
};

template <class T>
struct lru_case {
  using layer_type = lru<T>;
  static constexpr index_t channels = 6, state_size = 10;
  static layer_type make(rng& gen) { return layer_type({.dim = channels, .state = state_size}, gen); }
  static std::vector<basic_tensor<T>> initial_state(index_t batch, rng& gen) {
    return {random_tensor<T>({batch, state_size, 2}, gen)};
  }
  static typename layer_type::state state_of(const std::vector<basic_var<T>>& v) { return {v[0]}; }
  static std::vector<basic_var<T>> readout(basic_tape<T>&, const typename layer_type::state& s) { return {s.h}; }
};

template <class T>
struct s4d_case {
  using layer_type = s4d<T>;
  static constexpr index_t channels = 6, state_size = 8;
  // Δ near the top of its range so Ā is far from 1 and the state changes visibly per step.
  static layer_type make(rng& gen) {
    return layer_type({.dim = channels, .state = state_size, .dt_min = 0.05, .dt_max = 0.5}, gen);
  }
  static std::vector<basic_tensor<T>> initial_state(index_t batch, rng& gen) {
    return {random_tensor<T>({batch, channels, state_size / 2, 2}, gen)};
  }
  static typename layer_type::state state_of(const std::vector<basic_var<T>>& v) { return {v[0]}; }
  static std::vector<basic_var<T>> readout(basic_tape<T>&, const typename layer_type::state& s) { return {s.h}; }
};

template <class T>
struct selective_case {
  using layer_type = selective_ssm<T>;
  static constexpr index_t channels = 8, state_size = 4;
  static layer_type make(rng& gen) { return layer_type({.dim = channels, .state = state_size, .dt_rank = 2}, gen); }
  static std::vector<basic_tensor<T>> initial_state(index_t batch, rng& gen) {
    return {random_tensor<T>({batch, channels, state_size}, gen)};
  }
  static typename layer_type::state state_of(const std::vector<basic_var<T>>& v) { return {v[0]}; }
  static std::vector<basic_var<T>> readout(basic_tape<T>&, const typename layer_type::state& s) { return {s.h}; }
};

template <class T>
struct named_tensor {
  std::string name;
  basic_tensor<T> value;
};

template <class T>
struct run_result {
  basic_tensor<T> y;
  std::vector<basic_tensor<T>> final_state;  // readout values
  std::vector<named_tensor<T>> grads;        // every parameter, then x, then the initial state
  std::size_t forward_ops = 0;               // tape records of the layer's forward alone
};

// One training step in `mode`: L = Σ w_y ⊙ y + Σ_i Σ w_i ⊙ state_i, with the random weights
// drawn on the first call (same shapes in every mode) and reused after.
template <class Case, class T>
run_result<T> run(time_mode mode, const typename Case::layer_type& layer, const basic_tensor<T>& x,
                  const std::vector<basic_tensor<T>>& state0, std::vector<basic_tensor<T>>& weights, rng& gen) {
  auto params = layer.parameters();
  for (auto& p : params) p.zero_grad();
  params.emplace_back(x.clone(), "x");
  const basic_var<T> input = params.back();
  std::vector<basic_var<T>> state_vars;
  for (std::size_t i = 0; i < state0.size(); ++i) {
    params.emplace_back(state0[i].clone(), "state0[" + std::to_string(i) + "]");
    state_vars.push_back(params.back());
  }
  basic_tape<T> tape;
  const auto [y, final_state] = forward_in(mode, layer, tape, input, Case::state_of(state_vars));
  run_result<T> out;
  out.forward_ops = tape.size();
  std::vector<basic_var<T>> terms{y};
  for (const auto& s : Case::readout(tape, final_state)) terms.push_back(s);
  if (weights.empty())
    for (const auto& t : terms) weights.push_back(random_tensor<T>(t.shape(), gen));
  REQUIRE(weights.size() == terms.size());
  basic_var<T> loss;
  for (std::size_t i = 0; i < terms.size(); ++i) {
    const auto term = sum_all(tape, mul(tape, terms[i], constant(weights[i])));
    loss = loss.defined() ? add(tape, loss, term) : term;
  }
  out.y = y.value().clone();
  for (std::size_t i = 1; i < terms.size(); ++i) out.final_state.push_back(terms[i].value().clone());
  tape.backward(loss);
  for (const auto& p : params)
    out.grads.push_back({p.name(), p.grad().defined() ? p.grad().clone() : basic_tensor<T>::zeros(p.value().shape())});
  return out;
}

// x[:, 0:1] of x [B,T,C]
template <class T>
basic_tensor<T> first_step(const basic_tensor<T>& x) {
  basic_tape<T> tape(grad_mode::off);
  return narrow(tape, constant(x), 1, 0, 1).value();
}

template <class Case, class T>
void check_bptt_matches_scan(index_t batch, index_t time, double tolerance, std::uint64_t seed) {
  rng gen(seed);
  const auto layer = Case::make(gen);
  const auto x = random_tensor<T>({batch, time, Case::channels}, gen);
  const auto state0 = Case::initial_state(batch, gen);
  std::vector<basic_tensor<T>> weights;
  const auto scan = run<Case>(time_mode::scan, layer, x, state0, weights, gen);
  const auto bptt = run<Case>(time_mode::bptt, layer, x, state0, weights, gen);
  INFO("B=" << batch << " T=" << time);
  CHECK(relative_error(bptt.y, scan.y) <= tolerance);
  CHECK(as_array(scan.y).abs().maxCoeff() > 0);
  REQUIRE(bptt.final_state.size() == scan.final_state.size());
  for (std::size_t i = 0; i < scan.final_state.size(); ++i) {
    INFO("final state " << i << " " << scan.final_state[i].shape());
    CHECK(relative_error(bptt.final_state[i], scan.final_state[i]) <= tolerance);
  }
  REQUIRE(bptt.grads.size() == scan.grads.size());
  for (std::size_t i = 0; i < scan.grads.size(); ++i) {
    INFO("gradient of " << scan.grads[i].name << " " << scan.grads[i].value.shape());
    CHECK(relative_error(bptt.grads[i].value, scan.grads[i].value) <= tolerance);
    // Every gradient must actually arrive (in particular through the carried state).
    CHECK(as_array(scan.grads[i].value).abs().maxCoeff() > 0);
  }
  // Honest BPTT: the tape holds T separate layer steps (each at least as many records as
  // the scan mode needs for one token), not one scan over T.
  if (time > 1) {
    std::vector<basic_tensor<T>> one_step_weights;
    const auto one_step = run<Case>(time_mode::scan, layer, first_step(x), state0, one_step_weights, gen);
    CHECK(bptt.forward_ops >= static_cast<std::size_t>(time) * one_step.forward_ops);
  }
}

}  // namespace

#define LINREC_BPTT_CASES(T) \
  rwkv4_tm_case<T>, rwkv4_cm_case<T>, rwkv6_tm_case<T>, rwkv6_cm_case<T>, lru_case<T>, s4d_case<T>, selective_case<T>

// T = 19: odd, and more than one of RWKV-6's 16-step chunks in the scan mode.
TEMPLATE_TEST_CASE("bptt equals scan: outputs, final state and every gradient (fp32)", "[layers][bptt]",
                   LINREC_BPTT_CASES(float)) {
  check_bptt_matches_scan<TestType, float>(2, 19, 1e-5, 7);
  check_bptt_matches_scan<TestType, float>(3, 1, 1e-5, 8);
}

TEMPLATE_TEST_CASE("bptt equals scan: outputs, final state and every gradient (double)", "[layers][bptt]",
                   LINREC_BPTT_CASES(double)) {
  check_bptt_matches_scan<TestType, double>(2, 19, 1e-11, 9);
  check_bptt_matches_scan<TestType, double>(1, 1, 1e-11, 10);
}

TEST_CASE("bptt_forward rejects an x that is not [B,T,C] with T >= 1", "[layers][bptt]") {
  rng gen(1);
  const lru<float> layer({.dim = 4, .state = 4}, gen);
  basic_tape<float> tape;
  CHECK_THROWS_AS(bptt_forward(layer, tape, constant(Tensor::zeros({2, 0, 4})), {}), Error);
  CHECK_THROWS_AS(bptt_forward(layer, tape, constant(Tensor::zeros({2, 4})), {}), Error);
}
