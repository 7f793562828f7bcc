#pragma once
// What the CUDA test programs share: the check that a usable GPU is present (without one, each
// program prints why and exits 77, which ctest reports as skipped) and the text of the
// linrec::Error a call throws.
#include <cuda_runtime.h>

#include <cstdio>
#include <string>

#include "linrec/core/error.hpp"

namespace linrec::test {

// True when a CUDA device can be used; otherwise prints "<program>: skipped, ..." and is false.
inline bool usable_cuda_device(const char* program) {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status == cudaSuccess && devices > 0) return true;
  std::printf("%s: skipped, no usable CUDA device (%s)\n", program,
              status != cudaSuccess ? cudaGetErrorString(status) : "device count is 0");
  return false;
}

// The message of the linrec::Error `fn` throws, or a marker that none was thrown.
template <class Fn>
std::string message_of(const Fn& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no linrec::Error)";
}

}  // namespace linrec::test
