// CUDA tensors (tensor/cuda.cuh): storage on the device through the caching allocator, copies
// between host and device in every direction, views, the host-access refusal, allocation
// failure as linrec::Error, the cache's reuse (a repeated step calls cudaMalloc only once per
// size), and ops refusing inputs on different devices.
// Without a GPU the program prints why and exits 77, which ctest reports as skipped.
#define EIGEN_NO_CUDA
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "cuda_test_util.cuh"
#include "linrec/autodiff/autodiff.hpp"
#include "linrec/tensor/cuda.cuh"

using namespace linrec;
using linrec::test::message_of;

namespace {

std::vector<float> host_values(const Tensor& t) {
  const Tensor h = t.to(cpu_device);
  return std::vector<float>(h.data(), h.data() + h.numel());
}

}  // namespace

TEST_CASE("tensors move between host and device bit for bit", "[tensor][cuda]") {
  rng g(3);
  for (const Shape& shape : {Shape{1}, Shape{7}, Shape{3, 333}, Shape{2, 5, 129}, Shape{4, 1, 3, 17}}) {
    const Tensor host = Tensor::randn(shape, g);
    const Tensor dev = host.to(cuda_device());
    CHECK(dev.where() == cuda_device());
    CHECK(dev.shape() == shape);
    CHECK(host.to(cpu_device).shares_storage_with(host));  // already there: the same handle
    CHECK(dev.to(cuda_device()).shares_storage_with(dev));
    CHECK(host_values(dev) == std::vector<float>(host.data(), host.data() + host.numel()));
    // device → device (clone), and a view's rows copied back
    const Tensor copy = dev.clone();
    CHECK_FALSE(copy.shares_storage_with(dev));
    CHECK(host_values(copy) == host_values(dev));
    if (shape.rank() >= 2 && shape[0] > 1) {
      const Tensor rows_dev = dev.slice(1, shape[0] - 1), rows_host = host.slice(1, shape[0] - 1);
      CHECK(host_values(rows_dev) == std::vector<float>(rows_host.data(), rows_host.data() + rows_host.numel()));
    }
  }
}

TEST_CASE("device tensors are created, filled and overwritten on the device", "[tensor][cuda]") {
  rng g(4);
  const Tensor filled = Tensor::full({3, 41}, 2.5f, cuda_device());
  for (float x : host_values(filled)) CHECK(x == 2.5f);
  const std::vector<float> values = {1.0f, -2.0f, 3.5f, 0.25f, -7.0f, 11.0f};
  const Tensor from = Tensor::from_data({2, 3}, values, cuda_device());
  CHECK(host_values(from) == values);
  // copy_from into a device tensor, from host and from device
  const Tensor target = Tensor::empty({2, 3}, cuda_device());
  const Tensor source = Tensor::randn({6}, g);
  target.copy_from(source);
  CHECK(host_values(target) == std::vector<float>(source.data(), source.data() + 6));
  target.copy_from(from);
  CHECK(host_values(target) == values);
  target.fill_(-1.0f);
  for (float x : host_values(target)) CHECK(x == -1.0f);
  CHECK_THAT(message_of([&] { target.copy_from(Tensor::zeros({7})); }), Catch::Contains("[7]"));
}

TEST_CASE("host access to a device tensor is refused; its pointer is device memory", "[tensor][cuda]") {
  const Tensor dev = Tensor::zeros({5}, cuda_device());
  CHECK_THAT(message_of([&] { (void)dev.data(); }), Catch::Contains("cuda:0") && Catch::Contains(".to(cpu_device)"));
  cudaPointerAttributes attributes{};
  REQUIRE(cudaPointerGetAttributes(&attributes, dev.raw_data()) == cudaSuccess);
  CHECK(attributes.type == cudaMemoryTypeDevice);
  CHECK(attributes.device == 0);
}

TEST_CASE("the caching allocator serves a repeated step without cudaMalloc", "[tensor][cuda]") {
  release_cuda_cache();
  const cuda_cache_statistics before = cuda_cache_stats();
  CHECK(before.cached_bytes == 0);
  auto step = [] {  // the shapes of one "training step", allocated and freed
    std::vector<Tensor> live;
    for (index_t n : {1000, 4096, 65537, 3000000}) live.push_back(Tensor::empty({n}, cuda_device()));
    live.push_back(Tensor::empty({1000}, cuda_device()));  // a second block of a size in use
  };
  step();
  const cuda_cache_statistics first = cuda_cache_stats();
  CHECK(first.device_allocations == before.device_allocations + 5);
  CHECK(first.in_use_bytes == before.in_use_bytes);  // everything went back
  CHECK(first.cached_bytes > 0);
  for (int i = 0; i < 10; ++i) step();
  const cuda_cache_statistics later = cuda_cache_stats();
  CHECK(later.device_allocations == first.device_allocations);
  CHECK(later.reuses == first.reuses + 50);
  CHECK(later.cached_bytes == first.cached_bytes);
  {
    const Tensor held = Tensor::empty({4096}, cuda_device());
    CHECK(cuda_cache_stats().in_use_bytes == before.in_use_bytes + 16384);
    release_cuda_cache();  // a block held by a live tensor stays
    CHECK(cuda_cache_stats().cached_bytes == 0);
    CHECK(host_values(held.fill_(3.0f))[4095] == 3.0f);
  }
  CHECK(cuda_cache_stats().cached_bytes == 16384);
}

TEST_CASE("a device allocation that cannot succeed is a linrec::Error, and the cache still works", "[tensor][cuda]") {
  // 2^44 floats = 64 TiB: more than any GPU has.
  CHECK_THAT(message_of([] { (void)Tensor::empty({index_t{1} << 44}, cuda_device()); }),
             Catch::Contains("CUDA allocation") && Catch::Contains("cuda:0"));
  CHECK(host_values(Tensor::full({3}, 1.5f, cuda_device()))[2] == 1.5f);
}

TEST_CASE("an op given inputs on different devices names both", "[tensor][cuda][autodiff]") {
  rng g(5);
  Tape tape;
  const Var on_host = constant(Tensor::randn({2, 3}, g));
  const Var on_device = constant(Tensor::randn({2, 3}, g).to(cuda_device()));
  const std::string message = message_of([&] { add(tape, on_host, on_device); });
  CHECK_THAT(message, Catch::Contains("op 'add'") && Catch::Contains("different devices") && Catch::Contains("cpu") &&
                          Catch::Contains("cuda:0"));
  CHECK_THAT(message_of([&] {
               matmul(tape, on_device, constant(Tensor::randn({3, 4}, g)));
             }),
             Catch::Contains("different devices"));
}

int main(int argc, char** argv) {
  if (!linrec::test::usable_cuda_device("test_tensor_cuda")) return 77;
  return Catch::Session().run(argc, argv);
}
