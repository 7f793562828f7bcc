#pragma once
// CUDA error handling for the scan backend: every runtime call and launch goes through
// LINREC_CUDA_CHECK, which turns a failure into linrec::Error carrying CUDA's own message;
// pointers handed to the backend must be device (or managed) memory.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "linrec/core/error.hpp"

// LINREC_CUDA_CHECK(cudaMemcpyAsync(...)): throws linrec::Error("... cudaErrorX: message").
#define LINREC_CUDA_CHECK(call)                                                                    \
  do {                                                                                             \
    const cudaError_t linrec_cuda_status_ = (call);                                                \
    LINREC_CHECK(linrec_cuda_status_ == cudaSuccess,                                               \
                 "CUDA call `" #call "` failed: " << cudaGetErrorName(linrec_cuda_status_) << ": " \
                                                  << cudaGetErrorString(linrec_cuda_status_));     \
  } while (false)

// After a <<<...>>> launch: configuration errors are reported by cudaGetLastError.
#define LINREC_CUDA_CHECK_LAUNCH(kernel_name)                                                                       \
  do {                                                                                                              \
    const cudaError_t linrec_cuda_status_ = cudaGetLastError();                                                     \
    LINREC_CHECK(linrec_cuda_status_ == cudaSuccess,                                                                \
                 "CUDA launch of " << (kernel_name) << " failed: " << cudaGetErrorName(linrec_cuda_status_) << ": " \
                                   << cudaGetErrorString(linrec_cuda_status_));                                     \
  } while (false)

namespace linrec::detail {

// A null pointer is allowed (optional arguments); anything else must be memory the current
// device can read: cudaMalloc'ed or managed. Host memory (pageable or pinned) is refused
// with a message that names the argument.
inline void check_device_pointer(const void* ptr, const char* where, const char* name) {
  if (ptr == nullptr) return;
  cudaPointerAttributes attributes{};
  const cudaError_t status = cudaPointerGetAttributes(&attributes, ptr);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error so later checks see their own
    LINREC_CHECK(status == cudaSuccess,
                 where << ": cannot query pointer " << name << " (" << ptr << "): " << cudaGetErrorString(status));
  }
  LINREC_CHECK(attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged,
               where << ": " << name << " (" << ptr << ") is "
                     << (attributes.type == cudaMemoryTypeHost ? "pinned host memory" : "host memory")
                     << "; the CUDA backend needs device memory (cudaMalloc or managed)");
}

}  // namespace linrec::detail
