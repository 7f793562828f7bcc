// RWKV-6 time-mix and channel-mix: parallel (chunked WKV) == step-by-step (one token at a
// time), segments == one pass, fp32 vs double, gradients of every parameter and the input.
#include "layer_test_util.hpp"
#include "linrec/layers/rwkv6.hpp"

using namespace linrec;
using namespace linrec::layers;
using namespace linrec::test;

namespace {

// The reference init zeroes the LoRA down-projections and output projections; tests need
// every path active, so those get random values.
template <class Layer>
void randomize_zero_weights(Layer& layer, rng& gen) {
  for (auto& p : layer.parameters())
    if (as_array(p.value()).abs().maxCoeff() == 0)
      p.value().copy_from(random_tensor<typename Layer::value_type>(p.value().shape(), gen, 0.3));
}

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
    if (time > 1) check_segments_match_one_pass(layer, x, (time + 1) / 2, 1e-5);
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
}
