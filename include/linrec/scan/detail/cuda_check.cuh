#pragma once
// CUDA error handling for the scan backend: every runtime call and launch goes through
// LINREC_CUDA_CHECK, which turns a failure into linrec::Error carrying CUDA's own message;
// pointers handed to the backend must be device (or managed) memory.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "linrec/core/error.hpp"

// LINREC_CUDA_CHECK(cudaMemcpyAsync(...)): throws linrec::Error("... cudaErrorX: message").
#define LINREC_CUDA_CHECK(call)                                                                      \
  do {                                                                                               \
    const cudaError_t linrec_cuda_status_ = (call);                                                  \
    LINREC_CHECK(linrec_cuda_status_ == cudaSuccess, "CUDA call `" #call "` failed: "                \
                                                         << cudaGetErrorName(linrec_cuda_status_) << ": " \
                                                         << cudaGetErrorString(linrec_cuda_status_)); \
  } while (false)

// After a <<<...>>> launch: configuration errors are reported by cudaGetLastError.
#define LINREC_CUDA_CHECK_LAUNCH(kernel_name)                                                        \
  do {                                                                                               \
    const cudaError_t linrec_cuda_status_ = cudaGetLastError();                                      \
    LINREC_CHECK(linrec_cuda_status_ == cudaSuccess, "CUDA launch of " << (kernel_name) << " failed: " \
                                                         << cudaGetErrorName(linrec_cuda_status_) << ": " \
                                                         << cudaGetErrorString(linrec_cuda_status_)); \
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
    LINREC_CHECK(status == cudaSuccess, where << ": cannot query pointer " << name << " (" << ptr
                                              << "): " << cudaGetErrorString(status));
  }
  LINREC_CHECK(attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged,
               where << ": " << name << " (" << ptr << ") is "
                     << (attributes.type == cudaMemoryTypeHost ? "pinned host memory" : "host memory")
                     << "; the CUDA backend needs device memory (cudaMalloc or managed)");
}

// The scan's own stream-ordered memory pool on the current device, created on first use and
// kept for the process. Its release threshold is unlimited, so freed scratch stays in the
// pool across synchronisations: with the device's default pool (threshold 0) every call after
// a synchronisation went back to the driver, tens of microseconds inside a 20 µs scan. A
// private pool leaves the default pool's settings, which others may rely on, untouched.
inline cudaMemPool_t scratch_pool() {
  int device = 0;
  LINREC_CUDA_CHECK(cudaGetDevice(&device));
  static std::mutex mutex;
  static std::vector<cudaMemPool_t> pools;
  const std::lock_guard<std::mutex> lock(mutex);
  if (pools.size() <= std::size_t(device)) pools.resize(std::size_t(device) + 1, nullptr);
  if (pools[std::size_t(device)] == nullptr) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    cudaMemPool_t pool = nullptr;
    LINREC_CUDA_CHECK(cudaMemPoolCreate(&pool, &props));
    std::uint64_t threshold = UINT64_MAX;
    LINREC_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    pools[std::size_t(device)] = pool;
  }
  return pools[std::size_t(device)];
}

// Stream-ordered scratch memory owned for the duration of one call (from scratch_pool():
// after the first call this is a pool hit, not a driver allocation).
class stream_scratch {
 public:
  stream_scratch(std::size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes > 0) LINREC_CUDA_CHECK(cudaMallocFromPoolAsync(&ptr_, bytes, scratch_pool(), stream_));
  }
  stream_scratch(const stream_scratch&) = delete;
  stream_scratch& operator=(const stream_scratch&) = delete;
  ~stream_scratch() {
    if (ptr_) (void)cudaFreeAsync(ptr_, stream_);  // never throw from a destructor
  }
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace linrec::detail
