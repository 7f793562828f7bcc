#pragma once
// CUDA kernels of the optimizers, installed when a translation unit compiled by nvcc includes
// this header: the fused AdamW update (one kernel per parameter, every element read and
// written once, the arithmetic of adamw_update_element), the global gradient norm (every
// tensor of a device reduced into one buffer of block partials, summed in a fixed order, one
// transfer to the host: the same bits on every run), and the clip's scale.
// Kernels run on the legacy default stream, in order with the tensor copies (tensor/cuda.cuh).
#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

#include "linrec/optim/device_ops.hpp"
#include "linrec/scan/detail/cuda_check.cuh"
#include "linrec/tensor/cuda.cuh"
#include "linrec/tensor/tensor.hpp"

namespace linrec::detail::cuda_optim {

inline constexpr int block_threads = 256;

// Enough blocks to fill the device with a grid-stride loop, never more than the work needs.
inline unsigned grid_for(index_t n, index_t max_blocks = 1024) {
  const index_t blocks = (n + block_threads - 1) / block_threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < max_blocks ? blocks : max_blocks));
}

__global__ void adamw_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                             float* __restrict__ v, index_t n, adamw_coefficients<float> c) {
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    float pi = p[i], mi = m[i], vi = v[i];
    adamw_update_element(pi, g[i], mi, vi, c);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

__global__ void scale_kernel(float* __restrict__ x, index_t n, float factor) {
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x)
    x[i] *= factor;
}

// Sums `values` (one per thread of the block) in a fixed tree order; thread 0 gets the total.
__device__ inline double block_sum(double value) {
  __shared__ double partial[block_threads];
  partial[threadIdx.x] = value;
  __syncthreads();
  for (unsigned half = block_threads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  return partial[0];
}

// Block b of this launch writes Σ x² over its grid-stride share to out[b].
__global__ void sum_squares_kernel(const float* __restrict__ x, index_t n, double* __restrict__ out) {
  double s = 0;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x)
    s += double(x[i]) * double(x[i]);
  const double total = block_sum(s);
  if (threadIdx.x == 0) out[blockIdx.x] = total;
}

// One block: out[0] = Σ partials[0..count), each thread over a fixed stride, then the tree.
__global__ void sum_partials_kernel(const double* __restrict__ partials, index_t count, double* __restrict__ out) {
  double s = 0;
  for (index_t i = threadIdx.x; i < count; i += blockDim.x) s += partials[i];
  const double total = block_sum(s);
  if (threadIdx.x == 0) out[0] = total;
}

// Runs on `device_index`, restoring the caller's current device.
class device_guard {
 public:
  explicit device_guard(int index) {
    LINREC_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != index) LINREC_CUDA_CHECK(cudaSetDevice(index));
    changed_ = previous_ != index;
  }
  ~device_guard() {
    if (changed_) (void)cudaSetDevice(previous_);
  }
  device_guard(const device_guard&) = delete;
  device_guard& operator=(const device_guard&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

inline void adamw(int device_index, float* p, const float* g, float* m, float* v, index_t n,
                  const adamw_coefficients<float>& c) {
  if (n == 0) return;
  device_guard guard(device_index);
  adamw_kernel<<<grid_for(n), block_threads>>>(p, g, m, v, n, c);
  LINREC_CUDA_CHECK_LAUNCH("adamw_kernel");
}

inline void scale(int device_index, float* x, index_t n, float factor) {
  if (n == 0) return;
  device_guard guard(device_index);
  scale_kernel<<<grid_for(n), block_threads>>>(x, n, factor);
  LINREC_CUDA_CHECK_LAUNCH("scale_kernel");
}

inline double sum_squares(int device_index, const float* const* tensors, const index_t* sizes, std::size_t count) {
  device_guard guard(device_index);
  constexpr index_t max_blocks = 64;  // per tensor: partials stay few, so one block sums them
  std::vector<index_t> first_partial(count + 1, 0);
  for (std::size_t i = 0; i < count; ++i) first_partial[i + 1] = first_partial[i] + grid_for(sizes[i], max_blocks);
  const device dev = cuda_device(device_index);
  const auto partials = basic_tensor<double>::empty({first_partial[count] > 0 ? first_partial[count] : 1}, dev);
  const auto total = basic_tensor<double>::empty({1}, dev);
  for (std::size_t i = 0; i < count; ++i) {
    sum_squares_kernel<<<grid_for(sizes[i], max_blocks), block_threads>>>(tensors[i], sizes[i],
                                                                          partials.raw_data() + first_partial[i]);
    LINREC_CUDA_CHECK_LAUNCH("sum_squares_kernel");
  }
  sum_partials_kernel<<<1, block_threads>>>(partials.raw_data(), first_partial[count], total.raw_data());
  LINREC_CUDA_CHECK_LAUNCH("sum_partials_kernel");
  return total.to(cpu_device).item();
}

inline const bool installed = [] {
  device_optim_slot() = device_optim_ops{adamw, sum_squares, scale};
  return true;
}();

}  // namespace linrec::detail::cuda_optim
