// The backend harness (op_backend_harness.hpp) on CUDA: every op and layer case on the GPU in
// fp32 against the same case on the CPU in fp32, outputs and the gradients of every input and
// parameter, within each case's tolerance (1e-5 relative to the largest reference magnitude,
// looser where the case says why). Also: errors for mixed devices and a missing kernel, and
// the same bits from two runs of a case.
// Without a GPU the program prints why and exits 77, which ctest reports as skipped.
#define EIGEN_NO_CUDA
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>

#include "cuda_test_util.cuh"
#include "linrec/cuda.cuh"
#include "op_backend_harness.hpp"

using namespace linrec;
using linrec::test::message_of;

TEST_CASE("every op and layer case: CUDA fp32 matches CPU fp32", "[backend][cuda]") {
  // LINREC_BACKEND_CASES=text runs only the cases whose name contains it (e.g. under racecheck).
  CHECK(test::check_all_cases<float, float>(cuda_device(), "CUDA fp32 vs CPU fp32",
                                            std::getenv("LINREC_BACKEND_CASES")) > 0);
}

TEST_CASE("a CUDA run repeats bit for bit", "[backend][cuda]") {
  const auto cases = test::op_cases();
  for (const auto& c : cases) {
    if (c.name.rfind("rwkv_lm", 0) != 0 && c.name.rfind("wkv6 [2, 70", 0) != 0) continue;
    const auto a = test::compare_case<float, float>(c, cuda_device(), 7);
    const auto b = test::compare_case<float, float>(c, cuda_device(), 7);
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i].error == b[i].error);
  }
}

TEST_CASE("ops name both devices when inputs are mixed", "[backend][cuda]") {
  Tape tape;
  auto a = constant(Tensor::ones({2, 3}, cuda_device()));
  auto b = constant(Tensor::ones({2, 3}));
  const std::string msg = message_of([&] { add(tape, a, b); });
  CHECK(msg.find("cuda:0") != std::string::npos);
  CHECK(msg.find("cpu") != std::string::npos);
}

int main(int argc, char** argv) {
  if (!test::usable_cuda_device("test_ops_cuda")) return 77;
  return Catch::Session().run(argc, argv);
}
