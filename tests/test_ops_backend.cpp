// The backend harness (op_backend_harness.hpp) on the CPU: every op and layer case in fp32
// against the same case in fp64, outputs and gradients, within the tolerance the CUDA run is held
// to. The CUDA program (test_ops_cuda.cu) runs the same cases on the GPU against the CPU.
#include <catch2/catch.hpp>

#include "op_backend_harness.hpp"

using namespace linrec;

TEST_CASE("every op and layer case: fp32 matches fp64 on the CPU", "[backend]") {
  CHECK(test::check_all_cases<double, float>(cpu_device, "CPU fp32 vs fp64") > 300);
}
