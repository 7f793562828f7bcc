// Tensor: creation, views, copies, element access, the RNG, and device errors.
#include <catch2/catch.hpp>
#include <cmath>

#include "linrec/tensor/eigen.hpp"
#include "linrec/tensor/tensor.hpp"

using namespace linrec;

TEST_CASE("tensor creation and element access", "[tensor]") {
  auto z = Tensor::zeros({2, 3});
  CHECK(z.shape() == Shape{2, 3});
  CHECK(z.numel() == 6);
  CHECK(z.rank() == 2);
  CHECK(z.at({1, 2}) == 0.0f);
  auto f = Tensor::full({4}, 2.5f);
  CHECK(f.at({3}) == 2.5f);
  auto d = Tensor::from_data({2, 2}, {1.0f, 2.0f, 3.0f, 4.0f});
  CHECK(d.at({0, 1}) == 2.0f);
  CHECK(d.at({1, 0}) == 3.0f);
  d.at({1, 1}) = -7.0f;
  CHECK(d.to_vector() == std::vector<float>{1, 2, 3, -7});
  auto s = Tensor::full(Shape{}, 3.0f);
  CHECK(s.rank() == 0);
  CHECK(s.item() == 3.0f);
  auto q = Tensor::zeros({1, 2, 3, 4});
  CHECK(q.numel() == 24);
  CHECK_THROWS_AS(Tensor::zeros({1, 2, 3, 4, 5}), Error);
  CHECK_THROWS_AS(d.at({2, 0}), Error);
  CHECK_THROWS_AS(d.at({0}), Error);
  CHECK_THROWS_AS(Tensor::from_data({3}, {1.0f, 2.0f}), Error);
  CHECK_THROWS_AS(d.item(), Error);
}

TEST_CASE("views share storage; clone copies", "[tensor]") {
  auto a = Tensor::from_data({2, 3}, {0, 1, 2, 3, 4, 5});
  auto v = a.reshape({3, -1});
  CHECK(v.shape() == Shape{3, 2});
  CHECK(v.shares_storage_with(a));
  v.at({2, 1}) = 50;
  CHECK(a.at({1, 2}) == 50);
  auto row = a.slice(1, 1);
  CHECK(row.shape() == Shape{1, 3});
  CHECK(row.at({0, 0}) == 3);
  row.at({0, 1}) = 40;
  CHECK(a.at({1, 1}) == 40);
  auto c = a.clone();
  CHECK_FALSE(c.shares_storage_with(a));
  c.at({0, 0}) = 99;
  CHECK(a.at({0, 0}) == 0);
  CHECK(c.to_vector() == std::vector<float>{99, 1, 2, 3, 40, 50});
  CHECK_THROWS_AS(a.reshape({4, 2}), Error);
  CHECK_THROWS_AS(a.reshape({-1, -1}), Error);
  CHECK_THROWS_AS(a.slice(1, 2), Error);
  // Eigen views read the same memory.
  CHECK(as_matrix(a)(1, 2) == 50);
  CHECK(as_array(row).sum() == 3 + 40 + 50);
}

TEST_CASE("random tensors are reproducible and their generator state can be saved", "[tensor][rng]") {
  rng g1(42), g2(42), g3(43);
  auto a = Tensor::randn({1000}, g1);
  auto b = Tensor::randn({1000}, g2);
  auto c = Tensor::randn({1000}, g3);
  CHECK(a.to_vector() == b.to_vector());
  CHECK(a.to_vector() != c.to_vector());
  // Moments of N(0,1) and U(-1, 2) over many draws.
  const double mean = as_array(a).cast<double>().mean();
  const double var = (as_array(a).cast<double>() - mean).square().mean();
  CHECK(std::abs(mean) < 0.1);
  CHECK(std::abs(var - 1.0) < 0.1);
  auto u = Tensor::rand({4000}, g1, -1.0, 2.0);
  CHECK(as_array(u).minCoeff() >= -1.0f);
  CHECK(as_array(u).maxCoeff() < 2.0f);
  CHECK(std::abs(as_array(u).cast<double>().mean() - 0.5) < 0.05);
  // Save, draw, restore, draw again: identical.
  const rng_state saved = g1.state();
  auto first = Tensor::randn({17}, g1);
  g1.set_state(saved);
  auto again = Tensor::randn({17}, g1);
  CHECK(first.to_vector() == again.to_vector());
  rng fresh(0);
  fresh.set_state(g1.state());
  CHECK(Tensor::rand({5}, fresh).to_vector() == Tensor::rand({5}, g1).to_vector());
}

TEST_CASE("a CUDA tensor without a CUDA build is a clear error", "[tensor][device]") {
  if (cuda_available()) return;  // a CUDA backend is compiled in: nothing to test here
  try {
    (void)Tensor::zeros({2, 2}, cuda_device(0));
    FAIL("expected linrec::Error");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("CUDA") && Catch::Contains("without CUDA"));
  }
  auto host = Tensor::ones({3});
  CHECK_THROWS_AS(host.to(cuda_device()), Error);
  CHECK(host.to(cpu_device).shares_storage_with(host));
}

TEST_CASE("tensor: element and byte counts that overflow are errors, not tiny buffers", "[tensor]") {
  const index_t big = index_t(1) << 32;
  CHECK_THROWS_WITH(Tensor::zeros({big, big}), Catch::Contains("overflows a 64-bit index"));
  CHECK_THROWS_WITH(Tensor::zeros({big, big, 2, 2}), Catch::Contains("overflows a 64-bit index"));
  CHECK_THROWS_WITH(Tensor::zeros({index_t(1) << 61}), Catch::Contains("exceed the addressable memory"));
  Shape grown{big};
  grown.push_back(big);  // built one extent at a time: still checked when counted
  CHECK_THROWS_WITH(grown.numel(), Catch::Contains("overflows"));
  CHECK(Shape{big, 2}.numel() == big * 2);  // large but representable: fine
}

TEST_CASE("host cache: freed storage is reused by the next tensor of its size, within the limit", "[tensor][cache]") {
  const std::size_t saved_limit = host_cache_statistics().limit_bytes;
  release_host_cache();
  set_host_cache_limit(std::size_t{64} << 20);
  const std::size_t hits0 = host_cache_statistics().hits;
  const float* first = nullptr;
  {
    auto t = Tensor::empty({3, 1000});  // 12 000 bytes: cached (≥ host_cache_min_bytes)
    first = t.data();
  }
  CHECK(host_cache_statistics().cached_bytes >= 12000);
  {
    auto t = Tensor::full({1000, 3}, 1.5f);  // same byte count: the same block, contents overwritten
    CHECK(t.data() == first);
    CHECK(t.at({999, 2}) == 1.5f);
    CHECK(host_cache_statistics().hits == hits0 + 1);
    auto other = Tensor::empty({5000});  // another size: a new block
    CHECK(other.data() != first);
  }
  {
    host_buffer<double> scratch(1500, 2.0);  // 12 000 bytes too: host_buffer shares the cache
    CHECK(static_cast<const void*>(scratch.data()) == static_cast<const void*>(first));
    CHECK(scratch[1499] == 2.0);
  }
  release_host_cache();
  CHECK(host_cache_statistics().cached_bytes == 0);
  set_host_cache_limit(0);  // no caching: every free goes back to the system
  { auto t = Tensor::empty({3, 1000}); }
  CHECK(host_cache_statistics().cached_bytes == 0);
  {
    auto small = Tensor::empty({4});  // below the minimum: never cached
  }
  set_host_cache_limit(saved_limit);
  CHECK(host_cache_statistics().limit_bytes == saved_limit);
}
