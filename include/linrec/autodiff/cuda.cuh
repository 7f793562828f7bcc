#pragma once
// CUDA kernels of the tape's ops, installed (autodiff/device_kernels.hpp) when a translation
// unit compiled by nvcc includes this header: the elementwise families (the functors' own
// host-and-device math), broadcasts and their gradient sums, matmul through cuBLAS, layer and
// group norm, embedding, the fused softmax-cross-entropy, narrow and token shift.
//
// Determinism: no kernel uses atomics. Every sum (a broadcast operand's gradient, a norm's
// gamma/beta, an embedding row, the loss) is taken in a fixed order, so a run repeats bit for
// bit on the same device. Sums over many rows are split into fixed slices whose partial sums
// are added in slice order by a second kernel.
//
// Matrix products: cuBLAS in FP32. TF32 tensor cores are off unless set_cuda_tf32(true) is
// called (faster on Ampere and later, about 10 mantissa bits per product: an explicit opt-in).
//
// All kernels run on the legacy default stream of the current device, in order with the
// tensor copies and the allocator's reuse (tensor/cuda.cuh).
#ifndef EIGEN_NO_CUDA
#define EIGEN_NO_CUDA  // the CPU paths of the ops stay host code
#endif
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "linrec/autodiff/autodiff.hpp"
#include "linrec/autodiff/device_kernels.hpp"
#include "linrec/scan/detail/cuda_check.cuh"
#include "linrec/tensor/cuda.cuh"

namespace linrec {

namespace detail::cuda_ops {

inline constexpr int block_threads = 256;

inline device current_device() {
  int index = 0;
  LINREC_CUDA_CHECK(cudaGetDevice(&index));
  return cuda_device(index);
}

// A scratch tensor on the current device (freed into the cache when the launcher returns; the
// kernels that use it are queued before any later reuse, on the one stream).
template <class T>
basic_tensor<T> scratch(index_t elements) {
  return basic_tensor<T>::empty(Shape{elements > 0 ? elements : 1}, current_device());
}

#define LINREC_GRID_STRIDE(i, n) \
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += index_t(gridDim.x) * blockDim.x)

// ---- elementwise ----------------------------------------------------------------------------
template <class Fn, class T>
__global__ void unary_forward(index_t n, const T* __restrict__ x, T* __restrict__ y) {
  LINREC_GRID_STRIDE(i, n) y[i] = Fn::f(x[i]);
}
template <class Fn, class T>
__global__ void unary_backward(index_t n, const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ g,
                               T* __restrict__ dx, bool accumulate) {
  LINREC_GRID_STRIDE(i, n) {
    const T d = g[i] * Fn::df(x[i], y[i]);
    dx[i] = accumulate ? dx[i] + d : d;
  }
}
template <class Fn, class T>
void launch_unary(index_t n, const T* x, T* y) {
  if (n == 0) return;
  unary_forward<Fn, T><<<elementwise_grid(n), block_threads>>>(n, x, y);
  LINREC_CUDA_CHECK_LAUNCH(Fn::name);
}
template <class Fn, class T>
void launch_unary_grad(index_t n, const T* x, const T* y, const T* g, T* dx, bool accumulate) {
  if (n == 0) return;
  unary_backward<Fn, T><<<elementwise_grid(n), block_threads>>>(n, x, y, g, dx, accumulate);
  LINREC_CUDA_CHECK_LAUNCH(Fn::name);
}

// A broadcast layout as plain arrays (kernel parameters).
struct layout4 {
  index_t extent[4], stride_a[4], stride_b[4];
  bool same;  // both operands have the output's shape
};
inline layout4 to_layout4(const broadcast_layout& l) {
  layout4 d{};
  index_t step = 1;
  d.same = true;
  for (int i = 3; i >= 0; --i) {
    d.extent[i] = l.extent[i];
    d.stride_a[i] = l.stride_a[i];
    d.stride_b[i] = l.stride_b[i];
    d.same = d.same && (l.extent[i] == 1 || (l.stride_a[i] == step && l.stride_b[i] == step));
    step *= l.extent[i];
  }
  return d;
}

template <class Fn, class T>
__global__ void binary_forward(layout4 l, index_t n, const T* __restrict__ a, const T* __restrict__ b,
                               T* __restrict__ y) {
  LINREC_GRID_STRIDE(o, n) {
    if (l.same) {
      y[o] = Fn::f(a[o], b[o]);
      continue;
    }
    index_t rest = o, ia = 0, ib = 0;
    for (int d = 3; d >= 0; --d) {
      const index_t c = rest % l.extent[d];
      rest /= l.extent[d];
      ia += c * l.stride_a[d];
      ib += c * l.stride_b[d];
    }
    y[o] = Fn::f(a[ia], b[ib]);
  }
}
template <class Fn, class T>
void launch_binary(const broadcast_layout& layout, const T* a, const T* b, T* y) {
  const layout4 l = to_layout4(layout);
  const index_t n = l.extent[0] * l.extent[1] * l.extent[2] * l.extent[3];
  if (n == 0) return;
  binary_forward<Fn, T><<<elementwise_grid(n), block_threads>>>(l, n, a, b, y);
  LINREC_CUDA_CHECK_LAUNCH(Fn::name);
}

// The gradient of one operand: element e of the operand sums the partials of every output
// position that read it. kept[d] / reduced[d] split the output's extents into the operand's
// own axes and its broadcast axes. Thread (e, slice) sums the reduced positions
// [slice·per_slice, (slice+1)·per_slice) in order.
struct reduction4 {
  index_t kept[4], reduced[4], out_stride[4], own_stride[4], other_stride[4];
  index_t kept_count, reduced_count, per_slice;
};

template <class Fn, class T>
__global__ void binary_backward(reduction4 p, int which, const T* __restrict__ a, const T* __restrict__ b,
                                const T* __restrict__ g, T* __restrict__ out, bool accumulate, bool partial) {
  const index_t e = index_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= p.kept_count) return;
  const index_t slice = blockIdx.y;
  index_t coord[4];
  index_t rest = e;
  for (int d = 3; d >= 0; --d) {
    coord[d] = rest % p.kept[d];
    rest /= p.kept[d];
  }
  const index_t first = slice * p.per_slice;
  const index_t last = first + p.per_slice < p.reduced_count ? first + p.per_slice : p.reduced_count;
  T sum = T(0);
  for (index_t r = first; r < last; ++r) {
    index_t rr = r, o = 0, other = 0, own = 0;
    for (int d = 3; d >= 0; --d) {
      const index_t c = coord[d] + rr % p.reduced[d];
      rr /= p.reduced[d];
      o += c * p.out_stride[d];
      other += c * p.other_stride[d];
      own += c * p.own_stride[d];
    }
    sum += which == 0 ? Fn::da(a[own], b[other], g[o]) : Fn::db(a[other], b[own], g[o]);
  }
  if (partial)
    out[slice * p.kept_count + e] = sum;
  else
    out[e] = accumulate ? out[e] + sum : sum;
}

// out[e] (+)= Σ_slice partial[slice · count + e], in slice order.
template <class T>
__global__ void sum_slices(index_t count, index_t slices, const T* __restrict__ partial, T* __restrict__ out,
                           bool accumulate) {
  LINREC_GRID_STRIDE(e, count) {
    T sum = T(0);
    for (index_t s = 0; s < slices; ++s) sum += partial[s * count + e];
    out[e] = accumulate ? out[e] + sum : sum;
  }
}

// Slices for `count` outputs each summing `length` terms: enough threads to fill the device,
// at least 32 terms per thread.
inline index_t slices_for(index_t count, index_t length) {
  const index_t by_length = (length + 31) / 32;
  const index_t by_threads = (index_t(1) << 18) / (count > 0 ? count : 1);
  index_t s = by_length < by_threads ? by_length : by_threads;
  return s < 1 ? 1 : (s > 65535 ? 65535 : s);
}

template <class Fn, class T>
void launch_binary_grad(const broadcast_layout& layout, int which, const T* a, const T* b, const T* g, T* d,
                        bool accumulate) {
  reduction4 p{};
  const auto& own = which == 0 ? layout.stride_a : layout.stride_b;
  const auto& other = which == 0 ? layout.stride_b : layout.stride_a;
  index_t step = 1;
  p.kept_count = 1;
  p.reduced_count = 1;
  for (int i = 3; i >= 0; --i) {
    const bool broadcast = own[i] == 0 && layout.extent[i] != 1;
    p.kept[i] = broadcast ? 1 : layout.extent[i];
    p.reduced[i] = broadcast ? layout.extent[i] : 1;
    p.out_stride[i] = step;
    p.own_stride[i] = own[i];
    p.other_stride[i] = other[i];
    step *= layout.extent[i];
    p.kept_count *= p.kept[i];
    p.reduced_count *= p.reduced[i];
  }
  if (p.kept_count == 0) return;
  if (p.reduced_count == 0) {  // an empty output: the operand's gradient is zero
    if (!accumulate) launch_fill<T>(p.kept_count, T(0), d);
    return;
  }
  const index_t slices = slices_for(p.kept_count, p.reduced_count);
  p.per_slice = (p.reduced_count + slices - 1) / slices;
  const dim3 grid(unsigned((p.kept_count + block_threads - 1) / block_threads), unsigned(slices));
  if (slices == 1) {
    binary_backward<Fn, T><<<grid, block_threads>>>(p, which, a, b, g, d, accumulate, false);
    LINREC_CUDA_CHECK_LAUNCH(Fn::name);
    return;
  }
  auto partial = scratch<T>(slices * p.kept_count);
  binary_backward<Fn, T><<<grid, block_threads>>>(p, which, a, b, g, partial.raw_data(), accumulate, true);
  LINREC_CUDA_CHECK_LAUNCH(Fn::name);
  sum_slices<<<elementwise_grid(p.kept_count), block_threads>>>(p.kept_count, slices, partial.raw_data(), d,
                                                                accumulate);
  LINREC_CUDA_CHECK_LAUNCH(Fn::name);
}

template <class T>
__global__ void affine_elements(index_t n, T alpha, T beta, const T* __restrict__ x, T* __restrict__ y,
                                bool accumulate) {
  LINREC_GRID_STRIDE(i, n) {
    const T v = alpha * x[i] + beta;
    y[i] = accumulate ? y[i] + v : v;
  }
}
template <class T>
void launch_affine(index_t n, T alpha, T beta, const T* x, T* y, bool accumulate) {
  if (n == 0) return;
  affine_elements<<<elementwise_grid(n), block_threads>>>(n, alpha, beta, x, y, accumulate);
  LINREC_CUDA_CHECK_LAUNCH("affine");
}

// ---- matmul (cuBLAS) ---------------------------------------------------------------------------
inline bool& tf32_enabled() {
  static bool enabled = false;
  return enabled;
}

#define LINREC_CUBLAS_CHECK(call)                                                                         \
  do {                                                                                                    \
    const cublasStatus_t linrec_cublas_status_ = (call);                                                  \
    LINREC_CHECK(linrec_cublas_status_ == CUBLAS_STATUS_SUCCESS,                                          \
                 "cuBLAS call `" #call "` failed: " << cublasGetStatusName(linrec_cublas_status_) << ": " \
                                                    << cublasGetStatusString(linrec_cublas_status_));     \
  } while (false)

// One handle per device, created on first use and kept (cuBLAS handles are costly to create).
inline cublasHandle_t cublas_handle() {
  static std::mutex mutex;
  static std::unordered_map<int, cublasHandle_t> handles;
  int index = 0;
  LINREC_CUDA_CHECK(cudaGetDevice(&index));
  std::lock_guard<std::mutex> lock(mutex);
  auto it = handles.find(index);
  if (it == handles.end()) {
    cublasHandle_t handle = nullptr;
    LINREC_CUBLAS_CHECK(cublasCreate(&handle));
    it = handles.emplace(index, handle).first;
  }
  LINREC_CUBLAS_CHECK(cublasSetMathMode(it->second, tf32_enabled() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  return it->second;
}

// Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLAS sees each stored
// row-major matrix as its transpose, so the operands swap and keep their own transpose flags.
inline cublasStatus_t gemm_strided(cublasHandle_t h, cublasOperation_t ob, cublasOperation_t oa, int n, int m, int k,
                                   const float* alpha, const float* b, int ldb, long long sb, const float* a, int lda,
                                   long long sa, const float* beta, float* c, int ldc, long long sc, int batch) {
  return cublasSgemmStridedBatched(h, ob, oa, n, m, k, alpha, b, ldb, sb, a, lda, sa, beta, c, ldc, sc, batch);
}
inline cublasStatus_t gemm_strided(cublasHandle_t h, cublasOperation_t ob, cublasOperation_t oa, int n, int m, int k,
                                   const double* alpha, const double* b, int ldb, long long sb, const double* a,
                                   int lda, long long sa, const double* beta, double* c, int ldc, long long sc,
                                   int batch) {
  return cublasDgemmStridedBatched(h, ob, oa, n, m, k, alpha, b, ldb, sb, a, lda, sa, beta, c, ldc, sc, batch);
}

template <class T>
void launch_gemm(const gemm_call<T>& g) {
  if (g.batch == 0 || g.m == 0 || g.n == 0) return;
  if (g.k == 0) {  // an empty sum: C = 0 (or unchanged)
    if (!g.accumulate)
      for (index_t i = 0; i < (g.stride_c == 0 ? 1 : g.batch); ++i)
        launch_fill<T>(g.m * g.n, T(0), g.c + i * g.stride_c);
    return;
  }
  cublasHandle_t h = cublas_handle();
  const T one = T(1), zero = T(0);
  const auto oa = g.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const auto ob = g.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (g.stride_c != 0 || g.batch == 1) {
    LINREC_CUBLAS_CHECK(gemm_strided(h, ob, oa, int(g.n), int(g.m), int(g.k), &one, g.b, int(g.ldb), g.stride_b, g.a,
                                     int(g.lda), g.stride_a, g.accumulate ? &one : &zero, g.c, int(g.n), g.stride_c,
                                     int(g.batch)));
    return;
  }
  // One C shared by the batch (a shared weight's gradient): the products add up in batch order.
  for (index_t i = 0; i < g.batch; ++i)
    LINREC_CUBLAS_CHECK(gemm_strided(h, ob, oa, int(g.n), int(g.m), int(g.k), &one, g.b + i * g.stride_b, int(g.ldb), 0,
                                     g.a + i * g.stride_a, int(g.lda), 0, (g.accumulate || i > 0) ? &one : &zero, g.c,
                                     int(g.n), 0, 1));
}

// ---- warp and block reductions -----------------------------------------------------------------
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
template <class T>
__device__ __forceinline__ T warp_max(T v) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const T other = __shfl_xor_sync(0xffffffffu, v, offset);
    v = other > v ? other : v;
  }
  return v;
}
// A block's sum or max (block_threads threads) in a fixed order; every thread gets the result.
template <class T, bool Max>
__device__ T block_reduce(T v) {
  __shared__ T lanes[block_threads / 32];
  v = Max ? warp_max(v) : warp_sum(v);
  if (threadIdx.x % 32 == 0) lanes[threadIdx.x / 32] = v;
  __syncthreads();
  T total = lanes[0];
  for (int w = 1; w < block_threads / 32; ++w) total = Max ? (lanes[w] > total ? lanes[w] : total) : total + lanes[w];
  __syncthreads();  // lanes is reused by the next call
  return total;
}

// ---- layer / group norm ------------------------------------------------------------------------
// One warp per group of `size` values (a row of a layer norm, a head of a group norm).
template <class T>
__global__ void norm_forward(index_t rows, index_t size, index_t channels, T eps, const T* __restrict__ x,
                             const T* __restrict__ gamma, const T* __restrict__ beta, T* __restrict__ xhat,
                             T* __restrict__ rstd, T* __restrict__ y) {
  const index_t row = (index_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = int(threadIdx.x % 32);
  if (row >= rows) return;
  const T* xr = x + row * size;
  T sum = T(0);
  for (index_t j = lane; j < size; j += 32) sum += xr[j];
  const T mean = warp_sum(sum) / T(size);
  T squares = T(0);
  for (index_t j = lane; j < size; j += 32) squares += (xr[j] - mean) * (xr[j] - mean);
  const T inv = T(1) / std::sqrt(warp_sum(squares) / T(size) + eps);
  if (lane == 0) rstd[row] = inv;
  const index_t channel0 = (row % (channels / size)) * size;
  for (index_t j = lane; j < size; j += 32) {
    const T h = (xr[j] - mean) * inv;
    xhat[row * size + j] = h;
    T out = gamma ? h * gamma[channel0 + j] : h;
    if (beta) out += beta[channel0 + j];
    y[row * size + j] = out;
  }
}
template <class T>
__global__ void norm_input_grad(index_t rows, index_t size, index_t channels, const T* __restrict__ g,
                                const T* __restrict__ xhat, const T* __restrict__ rstd, const T* __restrict__ gamma,
                                T* __restrict__ dx, bool accumulate) {
  const index_t row = (index_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = int(threadIdx.x % 32);
  if (row >= rows) return;
  const index_t channel0 = (row % (channels / size)) * size, at = row * size;
  T m1 = T(0), m2 = T(0);
  for (index_t j = lane; j < size; j += 32) {
    const T d = gamma ? g[at + j] * gamma[channel0 + j] : g[at + j];
    m1 += d;
    m2 += d * xhat[at + j];
  }
  m1 = warp_sum(m1) / T(size);
  m2 = warp_sum(m2) / T(size);
  for (index_t j = lane; j < size; j += 32) {
    const T d = gamma ? g[at + j] * gamma[channel0 + j] : g[at + j];
    const T v = (d - m1 - xhat[at + j] * m2) * rstd[row];
    dx[at + j] = accumulate ? dx[at + j] + v : v;
  }
}
// Column sums of g ⊙ x̂ (with_xhat) or g over `rows` rows of `channels`, slice by slice.
template <class T>
__global__ void norm_column_sums(index_t rows, index_t channels, index_t per_slice, const T* __restrict__ g,
                                 const T* __restrict__ xhat, T* __restrict__ out, bool accumulate, bool partial) {
  const index_t c = index_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= channels) return;
  const index_t first = index_t(blockIdx.y) * per_slice;
  const index_t last = first + per_slice < rows ? first + per_slice : rows;
  T sum = T(0);
  for (index_t r = first; r < last; ++r)
    sum += xhat ? g[r * channels + c] * xhat[r * channels + c] : g[r * channels + c];
  if (partial)
    out[index_t(blockIdx.y) * channels + c] = sum;
  else
    out[c] = accumulate ? out[c] + sum : sum;
}
template <class T>
void column_sums(index_t rows, index_t channels, const T* g, const T* xhat, T* out, bool accumulate) {
  if (channels == 0) return;
  const index_t slices = rows == 0 ? 1 : slices_for(channels, rows);
  const index_t per_slice = (rows + slices - 1) / slices;
  const dim3 grid(unsigned((channels + block_threads - 1) / block_threads), unsigned(slices));
  if (slices == 1) {
    norm_column_sums<<<grid, block_threads>>>(rows, channels, per_slice, g, xhat, out, accumulate, false);
    LINREC_CUDA_CHECK_LAUNCH("group_norm");
    return;
  }
  auto partial = scratch<T>(slices * channels);
  norm_column_sums<<<grid, block_threads>>>(rows, channels, per_slice, g, xhat, partial.raw_data(), accumulate, true);
  LINREC_CUDA_CHECK_LAUNCH("group_norm");
  sum_slices<<<elementwise_grid(channels), block_threads>>>(channels, slices, partial.raw_data(), out, accumulate);
  LINREC_CUDA_CHECK_LAUNCH("group_norm");
}
inline unsigned warp_rows_grid(index_t rows) { return unsigned((rows * 32 + block_threads - 1) / block_threads); }

template <class T>
void launch_norm_forward(index_t rows, index_t size, index_t channels, T eps, const T* x, const T* gamma, const T* beta,
                         T* xhat, T* rstd, T* y) {
  if (rows == 0 || size == 0) return;
  norm_forward<<<warp_rows_grid(rows), block_threads>>>(rows, size, channels, eps, x, gamma, beta, xhat, rstd, y);
  LINREC_CUDA_CHECK_LAUNCH("group_norm");
}
template <class T>
void launch_norm_backward(index_t rows, index_t size, index_t channels, const T* g, const T* xhat, const T* rstd,
                          const T* gamma, T* dx, bool accumulate_dx, T* dgamma, bool accumulate_dgamma, T* dbeta,
                          bool accumulate_dbeta) {
  const index_t outer = size == 0 ? 0 : rows * size / (channels > 0 ? channels : 1);
  if (dgamma) column_sums(outer, channels, g, xhat, dgamma, accumulate_dgamma);
  if (dbeta) column_sums<T>(outer, channels, g, nullptr, dbeta, accumulate_dbeta);
  if (dx && rows > 0 && size > 0) {
    norm_input_grad<<<warp_rows_grid(rows), block_threads>>>(rows, size, channels, g, xhat, rstd, gamma, dx,
                                                             accumulate_dx);
    LINREC_CUDA_CHECK_LAUNCH("group_norm");
  }
}

// ---- embedding ---------------------------------------------------------------------------------
template <class T>
__global__ void embedding_forward(index_t count, index_t channels, const std::int32_t* __restrict__ ids,
                                  const T* __restrict__ table, T* __restrict__ y) {
  LINREC_GRID_STRIDE(i, count * channels) {
    const index_t row = i / channels, c = i % channels;
    y[i] = table[index_t(ids[row]) * channels + c];
  }
}
template <class T>
__global__ void embedding_backward(index_t vocab, index_t channels, const std::int32_t* __restrict__ offsets,
                                   const std::int32_t* __restrict__ positions, const T* __restrict__ g,
                                   T* __restrict__ d, bool accumulate) {
  LINREC_GRID_STRIDE(i, vocab * channels) {
    const index_t v = i / channels, c = i % channels;
    T sum = T(0);
    for (std::int32_t p = offsets[v]; p < offsets[v + 1]; ++p) sum += g[index_t(positions[p]) * channels + c];
    d[i] = accumulate ? d[i] + sum : sum;
  }
}
template <class T>
void launch_embedding(index_t count, index_t channels, const std::int32_t* ids, const T* table, T* y) {
  if (count * channels == 0) return;
  embedding_forward<<<elementwise_grid(count * channels), block_threads>>>(count, channels, ids, table, y);
  LINREC_CUDA_CHECK_LAUNCH("embedding");
}
template <class T>
void launch_embedding_grad(index_t vocab, index_t channels, const std::int32_t* offsets, const std::int32_t* positions,
                           const T* g, T* d, bool accumulate) {
  if (vocab * channels == 0) return;
  embedding_backward<<<elementwise_grid(vocab * channels), block_threads>>>(vocab, channels, offsets, positions, g, d,
                                                                            accumulate);
  LINREC_CUDA_CHECK_LAUNCH("embedding");
}

// ---- softmax cross-entropy ---------------------------------------------------------------------
// One block per row: lse[row] and the row's loss term (0 for an ignored row), in double.
template <class T>
__global__ void cross_entropy_rows(index_t vocab, const T* __restrict__ z, const std::int32_t* __restrict__ targets,
                                   T* __restrict__ lse, double* __restrict__ terms) {
  const index_t row = blockIdx.x;
  const T* zr = z + row * vocab;
  T peak = -INFINITY;
  for (index_t v = threadIdx.x; v < vocab; v += blockDim.x) peak = zr[v] > peak ? zr[v] : peak;
  peak = block_reduce<T, true>(peak);
  T sum = T(0);
  for (index_t v = threadIdx.x; v < vocab; v += blockDim.x) sum += std::exp(zr[v] - peak);
  sum = block_reduce<T, false>(sum);
  if (threadIdx.x == 0) {
    const T l = peak + std::log(sum);
    lse[row] = l;
    const std::int32_t t = targets[row];
    terms[row] = t >= 0 ? double(l - zr[t]) : 0.0;
  }
}
template <class T>
__global__ void cross_entropy_total(index_t rows, const double* __restrict__ terms, T inv_n, T* __restrict__ loss) {
  double sum = 0;
  for (index_t r = threadIdx.x; r < rows; r += blockDim.x) sum += terms[r];
  sum = block_reduce<double, false>(sum);
  if (threadIdx.x == 0) loss[0] = static_cast<T>(sum) * inv_n;
}
template <class T>
__global__ void cross_entropy_backward(index_t rows, index_t vocab, const T* __restrict__ z,
                                       const std::int32_t* __restrict__ targets, const T* __restrict__ lse,
                                       const T* __restrict__ g, T inv_n, T* __restrict__ d, bool accumulate) {
  const T scale = g[0] * inv_n;
  LINREC_GRID_STRIDE(i, rows * vocab) {
    const index_t row = i / vocab, v = i % vocab;
    const std::int32_t t = targets[row];
    const T row_scale = t >= 0 ? scale : T(0);
    T value = std::exp(z[i] - lse[row]) * row_scale;
    if (v == t) value -= row_scale;
    d[i] = accumulate ? d[i] + value : value;
  }
}
template <class T>
void launch_cross_entropy(index_t rows, index_t vocab, const T* z, const std::int32_t* targets, T inv_n, T* lse,
                          T* loss) {
  auto terms = scratch<double>(rows);
  if (rows > 0 && vocab > 0) {
    cross_entropy_rows<<<unsigned(rows), block_threads>>>(vocab, z, targets, lse, terms.raw_data());
    LINREC_CUDA_CHECK_LAUNCH("softmax_cross_entropy");
  }
  cross_entropy_total<<<1, block_threads>>>(vocab > 0 ? rows : 0, terms.raw_data(), inv_n, loss);
  LINREC_CUDA_CHECK_LAUNCH("softmax_cross_entropy");
}
template <class T>
void launch_cross_entropy_grad(index_t rows, index_t vocab, const T* z, const std::int32_t* targets, const T* lse,
                               const T* g, T inv_n, T* d, bool accumulate) {
  if (rows * vocab == 0) return;
  cross_entropy_backward<<<elementwise_grid(rows * vocab), block_threads>>>(rows, vocab, z, targets, lse, g, inv_n, d,
                                                                            accumulate);
  LINREC_CUDA_CHECK_LAUNCH("softmax_cross_entropy");
}

// ---- narrow, token shift -----------------------------------------------------------------------
template <class T>
__global__ void narrow_forward(index_t outer, index_t n, index_t inner, index_t start, index_t length,
                               const T* __restrict__ x, T* __restrict__ y) {
  LINREC_GRID_STRIDE(i, outer * length * inner) {
    const index_t o = i / (length * inner), rest = i % (length * inner);
    y[i] = x[(o * n + start) * inner + rest];
  }
}
template <class T>
__global__ void narrow_backward(index_t outer, index_t n, index_t inner, index_t start, index_t length,
                                const T* __restrict__ g, T* __restrict__ d, bool accumulate) {
  LINREC_GRID_STRIDE(i, outer * n * inner) {
    const index_t o = i / (n * inner), m = (i / inner) % n, c = i % inner;
    const bool inside = m >= start && m < start + length;
    const T v = inside ? g[(o * length + m - start) * inner + c] : T(0);
    if (accumulate)
      d[i] += v;
    else
      d[i] = v;
  }
}
template <class T>
void launch_narrow(index_t outer, index_t n, index_t inner, index_t start, index_t length, const T* x, T* y) {
  if (outer * length * inner == 0) return;
  narrow_forward<<<elementwise_grid(outer * length * inner), block_threads>>>(outer, n, inner, start, length, x, y);
  LINREC_CUDA_CHECK_LAUNCH("narrow");
}
template <class T>
void launch_narrow_grad(index_t outer, index_t n, index_t inner, index_t start, index_t length, const T* g, T* d,
                        bool accumulate) {
  if (outer * n * inner == 0) return;
  narrow_backward<<<elementwise_grid(outer * n * inner), block_threads>>>(outer, n, inner, start, length, g, d,
                                                                          accumulate);
  LINREC_CUDA_CHECK_LAUNCH("narrow");
}

template <class T>
__global__ void token_shift_forward(index_t batch, index_t time, index_t channels, const T* __restrict__ x,
                                    const T* __restrict__ prev, T* __restrict__ y) {
  LINREC_GRID_STRIDE(i, batch * time * channels) {
    const index_t b = i / (time * channels), t = (i / channels) % time, c = i % channels;
    y[i] = t > 0 ? x[i - channels] : (prev ? prev[b * channels + c] : T(0));
  }
}
template <class T>
__global__ void token_shift_backward(index_t batch, index_t time, index_t channels, const T* __restrict__ g,
                                     T* __restrict__ dx, bool accumulate_dx, T* __restrict__ dprev,
                                     bool accumulate_dprev) {
  LINREC_GRID_STRIDE(i, batch * time * channels) {
    const index_t b = i / (time * channels), t = (i / channels) % time, c = i % channels;
    if (dx) {
      const T v = t + 1 < time ? g[i + channels] : T(0);
      dx[i] = accumulate_dx ? dx[i] + v : v;
    }
    if (dprev && t == 0) {
      const index_t at = b * channels + c;
      dprev[at] = accumulate_dprev ? dprev[at] + g[i] : g[i];
    }
  }
}
template <class T>
void launch_token_shift(index_t batch, index_t time, index_t channels, const T* x, const T* prev, T* y) {
  if (batch * time * channels == 0) return;
  token_shift_forward<<<elementwise_grid(batch * time * channels), block_threads>>>(batch, time, channels, x, prev, y);
  LINREC_CUDA_CHECK_LAUNCH("token_shift");
}
template <class T>
void launch_token_shift_grad(index_t batch, index_t time, index_t channels, const T* g, T* dx, bool accumulate_dx,
                             T* dprev, bool accumulate_dprev) {
  if (batch * time * channels == 0) return;
  token_shift_backward<<<elementwise_grid(batch * time * channels), block_threads>>>(
      batch, time, channels, g, dx, accumulate_dx, dprev, accumulate_dprev);
  LINREC_CUDA_CHECK_LAUNCH("token_shift");
}

// ---- reductions --------------------------------------------------------------------------------
template <class T>
__global__ void reduce_axis_forward(index_t outer, index_t n, index_t inner, T factor, const T* __restrict__ x,
                                    T* __restrict__ y) {
  LINREC_GRID_STRIDE(i, outer * inner) {
    const index_t o = i / inner, c = i % inner;
    T sum = T(0);
    for (index_t j = 0; j < n; ++j) sum += x[(o * n + j) * inner + c];
    y[i] = factor * sum;
  }
}
template <class T>
__global__ void reduce_axis_backward(index_t outer, index_t n, index_t inner, T factor, const T* __restrict__ g,
                                     T* __restrict__ d, bool accumulate) {
  LINREC_GRID_STRIDE(i, outer * n * inner) {
    const index_t o = i / (n * inner), c = i % inner;
    const T v = factor * g[o * inner + c];
    d[i] = accumulate ? d[i] + v : v;
  }
}
template <class T>
__global__ void reduce_all_forward(index_t n, T factor, const T* __restrict__ x, T* __restrict__ y) {
  double sum = 0;
  for (index_t i = threadIdx.x; i < n; i += blockDim.x) sum += double(x[i]);
  sum = block_reduce<double, false>(sum);
  if (threadIdx.x == 0) y[0] = factor * static_cast<T>(sum);
}
template <class T>
__global__ void reduce_all_backward(index_t n, T factor, const T* __restrict__ g, T* __restrict__ d, bool accumulate) {
  const T v = factor * g[0];
  LINREC_GRID_STRIDE(i, n) d[i] = accumulate ? d[i] + v : v;
}
template <class T>
void launch_reduce_axis(index_t outer, index_t n, index_t inner, T factor, const T* x, T* y) {
  if (outer * inner == 0) return;
  reduce_axis_forward<<<elementwise_grid(outer * inner), block_threads>>>(outer, n, inner, factor, x, y);
  LINREC_CUDA_CHECK_LAUNCH("sum");
}
template <class T>
void launch_reduce_axis_grad(index_t outer, index_t n, index_t inner, T factor, const T* g, T* d, bool accumulate) {
  if (outer * n * inner == 0) return;
  reduce_axis_backward<<<elementwise_grid(outer * n * inner), block_threads>>>(outer, n, inner, factor, g, d,
                                                                               accumulate);
  LINREC_CUDA_CHECK_LAUNCH("sum");
}
template <class T>
void launch_reduce_all(index_t n, T factor, const T* x, T* y) {
  reduce_all_forward<<<1, block_threads>>>(n, factor, x, y);
  LINREC_CUDA_CHECK_LAUNCH("sum_all");
}
template <class T>
void launch_reduce_all_grad(index_t n, T factor, const T* g, T* d, bool accumulate) {
  if (n == 0) return;
  reduce_all_backward<<<elementwise_grid(n), block_threads>>>(n, factor, g, d, accumulate);
  LINREC_CUDA_CHECK_LAUNCH("sum_all");
}

// ---- transpose ---------------------------------------------------------------------------------
struct swap4 {
  index_t out_extent[4], in_stride[4];  // in_stride already swapped: out coordinate d reads input axis d'
};
template <class T>
__global__ void swap_axes_elements(swap4 p, index_t n, const T* __restrict__ x, T* __restrict__ y, bool accumulate) {
  LINREC_GRID_STRIDE(o, n) {
    index_t rest = o, at = 0;
    for (int d = 3; d >= 0; --d) {
      at += (rest % p.out_extent[d]) * p.in_stride[d];
      rest /= p.out_extent[d];
    }
    y[o] = accumulate ? y[o] + x[at] : x[at];
  }
}
template <class T>
void launch_swap_axes(const index_t* extents, int a0, int a1, const T* x, T* y, bool accumulate) {
  swap4 p{};
  index_t step = 1, n = 1;
  for (int d = 3; d >= 0; --d) {
    p.in_stride[d] = step;
    step *= extents[d];
    p.out_extent[d] = extents[d];
    n *= extents[d];
  }
  const index_t e = p.out_extent[a0], s = p.in_stride[a0];
  p.out_extent[a0] = p.out_extent[a1];
  p.out_extent[a1] = e;
  p.in_stride[a0] = p.in_stride[a1];
  p.in_stride[a1] = s;
  if (n == 0) return;
  swap_axes_elements<<<elementwise_grid(n), block_threads>>>(p, n, x, y, accumulate);
  LINREC_CUDA_CHECK_LAUNCH("transpose");
}

#undef LINREC_GRID_STRIDE

// ---- installation ------------------------------------------------------------------------------
template <class Fn, class T>
void install_unary() {
  kernel_slot<unary_kernel<Fn, T>>() = &launch_unary<Fn, T>;
  kernel_slot<unary_grad_kernel<Fn, T>>() = &launch_unary_grad<Fn, T>;
}
template <class Fn, class T>
void install_binary() {
  kernel_slot<binary_kernel<Fn, T>>() = &launch_binary<Fn, T>;
  kernel_slot<binary_grad_kernel<Fn, T>>() = &launch_binary_grad<Fn, T>;
}
template <class T>
void install_all() {
  install_unary<exp_fn, T>();
  install_unary<log_fn, T>();
  install_unary<sqrt_fn, T>();
  install_unary<square_fn, T>();
  install_unary<sigmoid_fn, T>();
  install_unary<tanh_fn, T>();
  install_unary<silu_fn, T>();
  install_unary<relu_fn, T>();
  install_unary<softplus_fn, T>();
  install_unary<gelu_fn, T>();
  install_unary<sin_fn, T>();
  install_unary<cos_fn, T>();
  install_binary<add_fn, T>();
  install_binary<sub_fn, T>();
  install_binary<mul_fn, T>();
  install_binary<div_fn, T>();
  install_binary<first_fn, T>();
  kernel_slot<swap_axes_kernel<T>>() = &launch_swap_axes<T>;
  kernel_slot<affine_kernel<T>>() = &launch_affine<T>;
  kernel_slot<gemm_kernel<T>>() = &launch_gemm<T>;
  kernel_slot<norm_forward_kernel<T>>() = &launch_norm_forward<T>;
  kernel_slot<norm_backward_kernel<T>>() = &launch_norm_backward<T>;
  kernel_slot<embedding_kernel<T>>() = &launch_embedding<T>;
  kernel_slot<embedding_grad_kernel<T>>() = &launch_embedding_grad<T>;
  kernel_slot<cross_entropy_kernel<T>>() = &launch_cross_entropy<T>;
  kernel_slot<cross_entropy_grad_kernel<T>>() = &launch_cross_entropy_grad<T>;
  kernel_slot<narrow_kernel<T>>() = &launch_narrow<T>;
  kernel_slot<narrow_grad_kernel<T>>() = &launch_narrow_grad<T>;
  kernel_slot<token_shift_kernel<T>>() = &launch_token_shift<T>;
  kernel_slot<token_shift_grad_kernel<T>>() = &launch_token_shift_grad<T>;
  kernel_slot<reduce_axis_kernel<T>>() = &launch_reduce_axis<T>;
  kernel_slot<reduce_axis_grad_kernel<T>>() = &launch_reduce_axis_grad<T>;
  kernel_slot<reduce_all_kernel<T>>() = &launch_reduce_all<T>;
  kernel_slot<reduce_all_grad_kernel<T>>() = &launch_reduce_all_grad<T>;
}

inline const bool cuda_ops_installed = [] {
  install_all<float>();
  install_all<double>();
  return true;
}();

}  // namespace detail::cuda_ops

// TF32 tensor cores for the tape's float products on CUDA (off by default; see the top).
inline void set_cuda_tf32(bool enabled) { detail::cuda_ops::tf32_enabled() = enabled; }

}  // namespace linrec
