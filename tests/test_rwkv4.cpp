// RWKV-4 time-mix and channel-mix: parallel == step-by-step, segments == one pass, fp32 vs
// double, gradients of every parameter and the input against finite differences.
#include "layer_test_util.hpp"
#include "linrec/layers/rwkv4.hpp"

using namespace linrec;
using namespace linrec::layers;
using namespace linrec::test;

namespace {

// The reference init leaves the output projections at zero; a test needs them non-zero.
template <class Layer>
void randomize_zero_weights(Layer& layer, rng& gen) {
  for (auto& p : layer.parameters())
    if (as_array(p.value()).abs().maxCoeff() == 0) p.value().copy_from(random_tensor<typename Layer::value_type>(p.value().shape(), gen, 0.3));
}

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
    if (time > 1) check_segments_match_one_pass(layer, x, time / 2, 1e-5);
  }
}

TEMPLATE_TEST_CASE("rwkv4 layers: fp32 matches double", "[layers][rwkv4]", (std::pair<rwkv4_time_mix<float>, rwkv4_time_mix<double>>),
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

TEMPLATE_TEST_CASE("rwkv4 layers: gradients match finite differences", "[layers][rwkv4][gradcheck]", rwkv4_time_mix<double>,
                   rwkv4_channel_mix<double>) {
  rng gen(3);
  TestType layer({.dim = 6, .layer = 1, .layers = 2}, gen);
  randomize_zero_weights(layer, gen);
  gradcheck_layer(layer, random_tensor<double>({2, 5, 6}, gen), gen);
}
