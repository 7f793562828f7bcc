// Optimizers on the device (optim/cuda.cuh) against the same optimizers on the CPU: AdamW over
// several steps with parameter groups, weight decay and a parameter without a gradient; the
// global gradient norm (also: the same bits on every call) and the clip; errors for a
// gradient on another device than its parameter.
// Without a GPU the program prints why and exits 77, which ctest reports as skipped.
#define EIGEN_NO_CUDA
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "cuda_test_util.cuh"
#include "linrec/optim/cuda.cuh"
#include "linrec/optim/optim.hpp"

using namespace linrec;
using linrec::test::message_of;

namespace {

// Largest |a − b| / max(|b|, floor) over the elements (b on the CPU, a copied from anywhere),
// floor = 1 % of b's largest magnitude: an element that cancels to near zero (m = β1 m +
// (1−β1) g) keeps the absolute rounding error of its terms, which a pure relative measure
// would magnify without bound.
double max_relative_error(const Tensor& a, const Tensor& b) {
  const Tensor ha = a.to(cpu_device);
  REQUIRE(ha.numel() == b.numel());
  double largest = 0;
  for (index_t i = 0; i < b.numel(); ++i) largest = std::max(largest, std::abs(double(b.data()[i])));
  const double floor = std::max(1e-2 * largest, 1e-30);
  double worst = 0;
  for (index_t i = 0; i < b.numel(); ++i) {
    const double want = b.data()[i], got = ha.data()[i];
    worst = std::max(worst, std::abs(got - want) / std::max(std::abs(want), floor));
  }
  return worst;
}

const std::vector<Shape> shapes = {{1}, {7}, {3, 333}, {257, 129}, {2, 5, 1031}};

}  // namespace

TEST_CASE("AdamW on the device follows AdamW on the CPU", "[optim][cuda]") {
  rng g(11);
  std::vector<Parameter> cpu_params, dev_params;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const Tensor init = Tensor::randn(shapes[i], g);
    cpu_params.emplace_back(init.clone(), "p" + std::to_string(i));
    dev_params.emplace_back(init.to(cuda_device()), "p" + std::to_string(i));
  }
  auto groups = [](const std::vector<Parameter>& ps) {
    std::vector<Parameter> even, odd;
    for (std::size_t i = 0; i < ps.size(); ++i) (i % 2 ? odd : even).push_back(ps[i]);
    return std::vector<basic_param_group<float>>{{even}, {odd, /*weight_decay=*/0.0, /*lr_scale=*/0.5}};
  };
  const adamw_options options{.lr = 3e-2, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1};
  AdamW on_cpu(groups(cpu_params), options), on_dev(groups(dev_params), options);
  for (int step = 0; step < 6; ++step) {
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      if (i == 2 && step % 2 == 1) {  // sometimes no gradient reached it: both skip it
        cpu_params[i].grad() = Tensor{};
        dev_params[i].grad() = Tensor{};
        continue;
      }
      const Tensor grad = Tensor::randn(shapes[i], g, 0.0, step == 0 ? 1e-3 : 1.0);
      cpu_params[i].grad() = grad.clone();
      dev_params[i].grad() = grad.to(cuda_device());
    }
    on_cpu.step();
    on_dev.step();
  }
  // nvcc contracts the update into fused multiply-adds; the CPU build may not: a few ulp.
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    INFO("parameter " << i << " of shape " << shapes[i]);
    CHECK(dev_params[i].value().where() == cuda_device());
    CHECK(max_relative_error(dev_params[i].value(), cpu_params[i].value()) < 1e-5);
  }
  const auto cpu_state = on_cpu.export_state(), dev_state = on_dev.export_state();
  REQUIRE(cpu_state.tensors.size() == dev_state.tensors.size());
  for (std::size_t k = 0; k < cpu_state.tensors.size(); ++k) {
    INFO(cpu_state.tensors[k].first);
    CHECK(dev_state.tensors[k].second.where() == cuda_device());
    CHECK(max_relative_error(dev_state.tensors[k].second, cpu_state.tensors[k].second) < 1e-5);
  }
}

TEST_CASE("the global gradient norm and its clip on the device match the CPU", "[optim][cuda][clip]") {
  rng g(12);
  std::vector<Parameter> cpu_params, dev_params;
  for (const Shape& s : shapes) {
    const Tensor init = Tensor::randn(s, g), grad = Tensor::randn(s, g, 0.0, 3.0);
    cpu_params.emplace_back(init.clone());
    cpu_params.back().grad() = grad.clone();
    dev_params.emplace_back(init.to(cuda_device()));
    dev_params.back().grad() = grad.to(cuda_device());
  }
  const double cpu_norm = grad_norm(cpu_params), dev_norm = grad_norm(dev_params);
  CHECK(dev_norm == Approx(cpu_norm).epsilon(1e-12));
  for (int i = 0; i < 5; ++i) CHECK(grad_norm(dev_params) == dev_norm);  // fixed reduction order
  const double max_norm = cpu_norm / 7;
  CHECK(clip_grad_norm(dev_params, max_norm) == dev_norm);
  clip_grad_norm(cpu_params, max_norm);
  for (std::size_t i = 0; i < shapes.size(); ++i)
    CHECK(max_relative_error(dev_params[i].grad(), cpu_params[i].grad()) < 1e-6);
  CHECK(grad_norm(dev_params) == Approx(max_norm).epsilon(1e-6));
  // a norm below max_norm leaves the gradients alone
  const Tensor before = dev_params[3].grad().to(cpu_device);
  clip_grad_norm(dev_params, 1e9);
  CHECK(max_relative_error(dev_params[3].grad(), before) == 0);
}

TEST_CASE("a device parameter with its gradient elsewhere is an error naming both", "[optim][cuda]") {
  rng g(13);
  Parameter p(Tensor::randn({4}, g).to(cuda_device()), "w");
  p.grad() = Tensor::randn({4}, g);  // left on the host
  AdamW opt({p}, adamw_options{});
  CHECK_THAT(message_of([&] { opt.step(); }),
             Catch::Contains("'w'") && Catch::Contains("cuda:0") && Catch::Contains("cpu"));
}

int main(int argc, char** argv) {
  if (!linrec::test::usable_cuda_device("test_optim_cuda")) return 77;
  return Catch::Session().run(argc, argv);
}
