#pragma once
// CUDA storage for tensors. Including this header in a translation unit compiled by nvcc
// installs the CUDA backend of `basic_tensor` (tensor/device.hpp): `Tensor::empty(shape,
// cuda_device())`, `.to(cuda_device())`, `.to(cpu_device)` and `copy_from` between devices.
//
// Device memory comes from a caching allocator, in the manner of PyTorch's CUDA caching
// allocator: a freed block goes to a free list keyed by its rounded size and serves the next
// request of that size, so a training step whose shapes repeat calls cudaMalloc only during
// its first step (cudaMalloc and cudaFree synchronise the device; a step must not). When
// cudaMalloc fails, the cached blocks of that device are returned to the driver and the
// allocation is tried once more.
//
// Stream order: a block is handed out again as soon as its last tensor is destroyed, which is
// safe while every kernel that used it was issued on one stream in host order (the legacy
// default stream or one stream per device, as the trainer runs). Work on another stream must
// synchronise with that stream before it frees a tensor it used.
//
// Copies between host and device go through cudaMemcpy on the legacy default stream: they
// wait for earlier work on blocking streams and return when the data has arrived.
#include <cuda_runtime.h>

#include <cstddef>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "linrec/core/error.hpp"
#include "linrec/scan/detail/cuda_check.cuh"
#include "linrec/tensor/device.hpp"
#include "linrec/tensor/device_kernels.hpp"

namespace linrec {

// Counters of one device's cache (all in bytes except the counts).
struct cuda_cache_statistics {
  std::size_t in_use_bytes = 0;        // held by live tensors (rounded sizes)
  std::size_t cached_bytes = 0;        // freed, kept for reuse
  std::size_t device_allocations = 0;  // cudaMalloc calls so far
  std::size_t reuses = 0;              // requests served from the cache
};

namespace detail {

class cuda_cache {
 public:
  // Never destroyed: a tensor that outlives main (a static) still returns its block; the
  // driver reclaims device memory at exit.
  static cuda_cache& instance() {
    static cuda_cache* cache = new cuda_cache;
    return *cache;
  }

  // Small blocks round to 512 bytes (cudaMalloc's own granularity), large ones to 2 MiB, so
  // shapes that differ a little share a free list.
  static std::size_t rounded(std::size_t bytes) {
    constexpr std::size_t small = 512, large = std::size_t{2} << 20;
    const std::size_t unit = bytes <= (std::size_t{1} << 20) ? small : large;
    return (bytes + unit - 1) / unit * unit;
  }

  void* allocate(std::size_t bytes, int device_index) {
    const std::size_t size = rounded(bytes > 0 ? bytes : 1);
    std::lock_guard<std::mutex> lock(mutex_);
    per_device& d = device(device_index);
    auto& list = d.free_blocks[size];
    void* ptr = nullptr;
    if (!list.empty()) {
      ptr = list.back();
      list.pop_back();
      d.stats.cached_bytes -= size;
      ++d.stats.reuses;
    } else {
      ptr = malloc_on(device_index, size, d);
      if (ptr == nullptr) return nullptr;
      ++d.stats.device_allocations;
    }
    d.live[ptr] = size;
    d.stats.in_use_bytes += size;
    return ptr;
  }

  // Never throws (called from tensor destructors): the block only changes lists.
  void deallocate(void* ptr, int device_index) noexcept {
    if (ptr == nullptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    per_device& d = device(device_index);
    const auto it = d.live.find(ptr);
    if (it == d.live.end()) return;  // not ours: nothing sensible to do in a destructor
    const std::size_t size = it->second;
    d.live.erase(it);
    d.stats.in_use_bytes -= size;
    d.stats.cached_bytes += size;
    d.free_blocks[size].push_back(ptr);
  }

  // Returns every cached (free) block of every device to the driver.
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [index, d] : devices_) release_locked(index, d);
  }

  cuda_cache_statistics statistics(int device_index) {
    std::lock_guard<std::mutex> lock(mutex_);
    return device(device_index).stats;
  }

 private:
  struct per_device {
    std::unordered_map<std::size_t, std::vector<void*>> free_blocks;
    std::unordered_map<void*, std::size_t> live;
    cuda_cache_statistics stats;
  };

  per_device& device(int index) { return devices_[index]; }

  // cudaMalloc on `index`, restoring the caller's current device; on failure, frees this
  // device's cached blocks and tries once more. nullptr when the device is out of memory.
  void* malloc_on(int index, std::size_t size, per_device& d) {
    int previous = 0;
    LINREC_CUDA_CHECK(cudaGetDevice(&previous));
    if (previous != index) LINREC_CUDA_CHECK(cudaSetDevice(index));
    void* ptr = nullptr;
    cudaError_t status = cudaMalloc(&ptr, size);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      release_locked(index, d);
      status = cudaMalloc(&ptr, size);
    }
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      ptr = nullptr;
    }
    if (previous != index) LINREC_CUDA_CHECK(cudaSetDevice(previous));
    return ptr;
  }

  static void release_locked(int index, per_device& d) {
    int previous = 0;
    if (cudaGetDevice(&previous) != cudaSuccess) return;
    if (previous != index && cudaSetDevice(index) != cudaSuccess) return;
    for (auto& [size, blocks] : d.free_blocks) {
      for (void* ptr : blocks) (void)cudaFree(ptr);
      d.stats.cached_bytes -= size * blocks.size();
      blocks.clear();
    }
    if (previous != index) (void)cudaSetDevice(previous);
  }

  std::mutex mutex_;
  std::unordered_map<int, per_device> devices_;
};

inline void* cuda_tensor_allocate(std::size_t bytes, int device_index) {
  return cuda_cache::instance().allocate(bytes, device_index);
}
inline void cuda_tensor_deallocate(void* ptr, int device_index) {
  cuda_cache::instance().deallocate(ptr, device_index);
}
inline void cuda_tensor_copy(void* dst, const void* src, std::size_t bytes, int kind) {
  const cudaMemcpyKind direction =
      kind == 0 ? cudaMemcpyHostToDevice : (kind == 1 ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice);
  LINREC_CUDA_CHECK(cudaMemcpy(dst, src, bytes, direction));
}

inline int cuda_usable_devices() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}
inline void cuda_make_current(int device_index) { LINREC_CUDA_CHECK(cudaSetDevice(device_index)); }

// Elementwise kernels of tensors: a grid-stride loop over n elements, at most `max_blocks`
// blocks of 256 threads (enough to fill an H100; more only adds scheduling).
inline unsigned elementwise_grid(index_t n, index_t max_blocks = 2048) {
  const index_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < max_blocks ? blocks : max_blocks));
}

template <class T>
__global__ void fill_elements(index_t n, T value, T* __restrict__ y) {
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x)
    y[i] = value;
}
template <class T>
__global__ void add_elements(index_t n, const T* __restrict__ x, T* __restrict__ y) {
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x)
    y[i] += x[i];
}
template <class T>
void launch_fill(index_t n, T value, T* y) {
  fill_elements<<<elementwise_grid(n), 256>>>(n, value, y);
  LINREC_CUDA_CHECK(cudaGetLastError());
}
template <class T>
void launch_add_into(index_t n, const T* x, T* y) {
  add_elements<<<elementwise_grid(n), 256>>>(n, x, y);
  LINREC_CUDA_CHECK(cudaGetLastError());
}

// Installed when the first translation unit that includes this header is initialised.
inline const bool cuda_tensor_backend_installed = [] {
  register_cuda_allocator(device_allocator{cuda_tensor_allocate, cuda_tensor_deallocate, cuda_tensor_copy,
                                           cuda_usable_devices, cuda_make_current});
  kernel_slot<fill_kernel<float>>() = &launch_fill<float>;
  kernel_slot<fill_kernel<double>>() = &launch_fill<double>;
  kernel_slot<add_into_kernel<float>>() = &launch_add_into<float>;
  kernel_slot<add_into_kernel<double>>() = &launch_add_into<double>;
  return true;
}();

}  // namespace detail

// The cache's counters for one device.
inline cuda_cache_statistics cuda_cache_stats(int device_index = 0) {
  return detail::cuda_cache::instance().statistics(device_index);
}

// Gives every cached block back to the driver (for another library or process that needs the
// memory); blocks held by live tensors stay.
inline void release_cuda_cache() { detail::cuda_cache::instance().release(); }

}  // namespace linrec
