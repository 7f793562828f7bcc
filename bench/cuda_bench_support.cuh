#pragma once
// What bench_scan_cuda and the probe_scan_cuda_* programs (tools/) share: the device check, event
// timing, random device inputs and a way to empty L2 of a call's operands.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>

#include "linrec/scan/detail/cuda_check.cuh"
#include "linrec/scan/layout.hpp"

namespace linrec::bench {

// False, after a one-line message naming the program, where no CUDA device can be used.
inline bool has_cuda_device(const char* program) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) return true;
  std::fprintf(stderr, "%s: no usable CUDA device\n", program);
  return false;
}

// Uniform numbers in [lo, hi) from a hash of the index: deterministic, nowhere zero-filled.
__global__ void fill_uniform(float* out, index_t n, float lo, float hi, std::uint32_t seed) {
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    std::uint32_t x = std::uint32_t(i) * 0x9E3779B9u ^ std::uint32_t(i >> 32) * 0x85EBCA6Bu ^ seed;
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    out[i] = lo + (hi - lo) * float(x >> 8) * (1.0f / 16777216.0f);
  }
}

class device_floats {
 public:
  device_floats(index_t n, float lo, float hi, std::uint32_t seed) {
    LINREC_CUDA_CHECK(cudaMalloc(&ptr_, std::size_t(n) * sizeof(float)));
    fill_uniform<<<2048, 256>>>(ptr_, n, lo, hi, seed);
    LINREC_CUDA_CHECK_LAUNCH("fill_uniform");
  }
  device_floats(const device_floats&) = delete;
  device_floats& operator=(const device_floats&) = delete;
  ~device_floats() { cudaFree(ptr_); }
  float* get() const { return ptr_; }

 private:
  float* ptr_ = nullptr;
};

__global__ void read_all(const float4* in, index_t n, float* sink) {
  float sum = 0;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    const float4 v = __ldcg(in + i);
    sum += v.x + v.y + v.z + v.w;
  }
  if (sum == 1234.5f) *sink = sum;  // the compiler cannot know the sum, so the loads stay
}

// Fills L2 with 4× its size of other memory, so that none of a timed call's operands is left
// there. Both fills are only queued on the default stream.
class l2_filler {
 public:
  l2_filler() {
    int device = 0, l2 = 0;
    LINREC_CUDA_CHECK(cudaGetDevice(&device));
    LINREC_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
    LINREC_CUDA_CHECK(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device));
    vectors_ = index_t(4) * l2 / 16;
    LINREC_CUDA_CHECK(cudaMalloc(&buffer_, std::size_t(vectors_) * 16));
    LINREC_CUDA_CHECK(cudaMemset(buffer_, 0, std::size_t(vectors_) * 16));
  }
  l2_filler(const l2_filler&) = delete;
  l2_filler& operator=(const l2_filler&) = delete;
  ~l2_filler() { cudaFree(buffer_); }

  // Clean lines: nothing to write back when the timed call evicts them.
  void clean() {
    read_all<<<unsigned(sms_ * 8), 256>>>(buffer_, vectors_, reinterpret_cast<float*>(buffer_));
    LINREC_CUDA_CHECK_LAUNCH("read_all");
  }
  // Dirty lines (a memset, as nvbench and triton.testing.do_bench flush): their write-back
  // lands in the timed call.
  void dirty() { LINREC_CUDA_CHECK(cudaMemsetAsync(buffer_, 0, std::size_t(vectors_) * 16)); }

 private:
  float4* buffer_ = nullptr;
  index_t vectors_ = 0;
  int sms_ = 0;
};

// Two events around one call on the default stream: its time in milliseconds, launch
// latency included (the device may be idle when the start event is recorded).
class event_timer {
 public:
  event_timer() {
    LINREC_CUDA_CHECK(cudaEventCreate(&start_));
    LINREC_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  event_timer(const event_timer&) = delete;
  event_timer& operator=(const event_timer&) = delete;
  ~event_timer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  template <class Call>
  float milliseconds(Call&& call) {
    LINREC_CUDA_CHECK(cudaEventRecord(start_));
    call();
    LINREC_CUDA_CHECK(cudaEventRecord(stop_));
    LINREC_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    LINREC_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return ms;
  }

 private:
  cudaEvent_t start_{}, stop_{};
};

}  // namespace linrec::bench
