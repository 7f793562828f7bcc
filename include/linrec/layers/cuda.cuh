#pragma once
// CUDA kernels of the layers' own ops, installed when a translation unit compiled by nvcc
// includes this header: RWKV-4's WKV (one thread per lane running layers/detail/wkv4_lane.hpp,
// the math the CPU tests check) and RWKV-6's WKV (layers/detail/wkv6_device.hpp).
//
// WKV-6 on the device runs each (batch, head) pair's recurrence in one block of N threads, the
// N×N state in registers (thread i holds a column S[:, i], or a row S[j, :]), one time step
// per iteration, as RWKV-LM's own CUDA kernels do: B·H blocks work at once, and a step costs
// N multiply-adds per thread. The backward is four passes:
//   1. forward in time, rows:    dr_t, X_t = r_t[j] Σ_i dy_t[i] S_{t-1}[j,i], du's terms;
//   2. backward in time, rows:   G_t = ∂L/∂S_t;  dk_t, Y_t = k_t[j] Σ_i G_t[j,i] v_t[i], d_state0;
//   3. backward in time, columns: dv_t;
//   4. per channel: ∂L/∂log d_q = Σ_{t>q} X_t + X_final − Σ_{s≥q} Y_s (pairs s < q < t are the
//      ones a decay at q sits between), in double, then dw = that · (−e^w).
// Head sizes 8, 16, 32 and 64 are compiled; another is a linrec::Error naming it.
#ifndef EIGEN_NO_CUDA
#define EIGEN_NO_CUDA
#endif
#include <cuda_runtime.h>

#include "linrec/layers/detail/wkv4_device.hpp"
#include "linrec/layers/detail/wkv4_lane.hpp"
#include "linrec/layers/detail/wkv6_device.hpp"
#include "linrec/scan/detail/cuda_check.cuh"
#include "linrec/tensor/cuda.cuh"
#include "linrec/tensor/tensor.hpp"

namespace linrec::layers::detail::cuda_wkv6 {

template <class T>
__device__ __forceinline__ T step_decay(T w) {
  return std::exp(-std::exp(w));
}

// Where (b, t, h·N + i) of a [B,T,C] array is; and [b, h, j, i] of a state.
struct places {
  index_t time, channels, heads;
  __device__ index_t at(index_t b, index_t t, index_t h, index_t n, index_t i) const {
    return (b * time + t) * channels + h * n + i;
  }
};

template <int N, class T>
__global__ void forward(places p, const T* __restrict__ r, const T* __restrict__ k, const T* __restrict__ v,
                        const T* __restrict__ w, const T* __restrict__ u, const T* __restrict__ state0,
                        T* __restrict__ y, T* __restrict__ state_final) {
  const index_t b = blockIdx.x / p.heads, h = blockIdx.x % p.heads;
  const int i = threadIdx.x;
  __shared__ T rs[N], ks[N], ds[N], us[N];
  us[i] = u[h * N + i];
  const T* s0 = state0 ? state0 + (b * p.heads + h) * N * N : nullptr;
  T s[N];
#pragma unroll
  for (int j = 0; j < N; ++j) s[j] = s0 ? s0[j * N + i] : T(0);
  for (index_t t = 0; t < p.time; ++t) {
    const index_t at = p.at(b, t, h, N, i);
    __syncthreads();  // the previous step's reads of rs/ks/ds are done
    rs[i] = r[at];
    ks[i] = k[at];
    ds[i] = step_decay(w[at]);
    __syncthreads();
    const T vi = v[at];
    T out = T(0);
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const T kv = ks[j] * vi;
      out += rs[j] * (us[j] * kv + s[j]);
      s[j] = s[j] * ds[j] + kv;
    }
    y[at] = out;
  }
  T* sf = state_final + (b * p.heads + h) * N * N;
#pragma unroll
  for (int j = 0; j < N; ++j) sf[j * N + i] = s[j];
}

// Pass 1: thread j holds the row S[j, :].
template <int N, class T>
__global__ void backward_rows_forward(places p, const T* __restrict__ r, const T* __restrict__ k,
                                      const T* __restrict__ v, const T* __restrict__ w, const T* __restrict__ u,
                                      const T* __restrict__ state0, const T* __restrict__ dy,
                                      const T* __restrict__ d_state_final, T* __restrict__ dr, T* __restrict__ x_terms,
                                      T* __restrict__ x_final, T* __restrict__ du_part) {
  const index_t b = blockIdx.x / p.heads, h = blockIdx.x % p.heads;
  const int j = threadIdx.x;
  __shared__ T dys[N], vs[N];
  const index_t state_at = (b * p.heads + h) * N * N + index_t(j) * N;
  T s[N];
#pragma unroll
  for (int i = 0; i < N; ++i) s[i] = state0 ? state0[state_at + i] : T(0);
  const T uj = u[h * N + j];
  T du_sum = T(0);
  for (index_t t = 0; t < p.time; ++t) {
    const index_t at = p.at(b, t, h, N, j);
    __syncthreads();
    dys[j] = dy ? dy[at] : T(0);
    vs[j] = v[at];
    __syncthreads();
    const T rj = r[at], kj = k[at], dj = step_decay(w[at]);
    T dot_s = T(0), dot_v = T(0);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      dot_s += dys[i] * s[i];
      dot_v += dys[i] * vs[i];
    }
    dr[at] = dot_s + uj * kj * dot_v;
    x_terms[at] = rj * dot_s;
    du_sum += rj * kj * dot_v;
#pragma unroll
    for (int i = 0; i < N; ++i) s[i] = s[i] * dj + kj * vs[i];
  }
  T last = T(0);
  if (d_state_final)
#pragma unroll
    for (int i = 0; i < N; ++i) last += d_state_final[state_at + i] * s[i];
  x_final[b * p.channels + h * N + j] = last;
  du_part[b * p.channels + h * N + j] = du_sum;
}

// Pass 2: thread j holds the row G[j, :] of ∂L/∂S_t.
template <int N, class T>
__global__ void backward_rows_reverse(places p, const T* __restrict__ r, const T* __restrict__ k,
                                      const T* __restrict__ v, const T* __restrict__ w, const T* __restrict__ u,
                                      const T* __restrict__ dy, const T* __restrict__ d_state_final, T* __restrict__ dk,
                                      T* __restrict__ y_terms, T* __restrict__ d_state0) {
  const index_t b = blockIdx.x / p.heads, h = blockIdx.x % p.heads;
  const int j = threadIdx.x;
  __shared__ T dys[N], vs[N];
  const index_t state_at = (b * p.heads + h) * N * N + index_t(j) * N;
  T g[N];
#pragma unroll
  for (int i = 0; i < N; ++i) g[i] = d_state_final ? d_state_final[state_at + i] : T(0);
  const T uj = u[h * N + j];
  for (index_t t = p.time - 1; t >= 0; --t) {
    const index_t at = p.at(b, t, h, N, j);
    __syncthreads();
    dys[j] = dy ? dy[at] : T(0);
    vs[j] = v[at];
    __syncthreads();
    const T rj = r[at], kj = k[at], dj = step_decay(w[at]);
    T dot_g = T(0), dot_dy = T(0);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      dot_g += g[i] * vs[i];
      dot_dy += dys[i] * vs[i];
    }
    dk[at] = dot_g + rj * uj * dot_dy;
    y_terms[at] = kj * dot_g;
#pragma unroll
    for (int i = 0; i < N; ++i) g[i] = g[i] * dj + rj * dys[i];
  }
  if (d_state0)
#pragma unroll
    for (int i = 0; i < N; ++i) d_state0[state_at + i] = g[i];
}

// Pass 3: thread i holds the column G[:, i].
template <int N, class T>
__global__ void backward_columns_reverse(places p, const T* __restrict__ r, const T* __restrict__ k,
                                         const T* __restrict__ w, const T* __restrict__ u, const T* __restrict__ dy,
                                         const T* __restrict__ d_state_final, T* __restrict__ dv) {
  const index_t b = blockIdx.x / p.heads, h = blockIdx.x % p.heads;
  const int i = threadIdx.x;
  __shared__ T rs[N], ks[N], ds[N], us[N];
  us[i] = u[h * N + i];
  const index_t state_at = (b * p.heads + h) * N * N;
  T g[N];
#pragma unroll
  for (int j = 0; j < N; ++j) g[j] = d_state_final ? d_state_final[state_at + index_t(j) * N + i] : T(0);
  for (index_t t = p.time - 1; t >= 0; --t) {
    const index_t at = p.at(b, t, h, N, i);
    __syncthreads();
    rs[i] = r[at];
    ks[i] = k[at];
    ds[i] = step_decay(w[at]);
    __syncthreads();
    const T dyi = dy ? dy[at] : T(0);
    T dot_g = T(0), bonus = T(0);
#pragma unroll
    for (int j = 0; j < N; ++j) {
      dot_g += g[j] * ks[j];
      bonus += rs[j] * us[j] * ks[j];
    }
    dv[at] = dot_g + dyi * bonus;
#pragma unroll
    for (int j = 0; j < N; ++j) g[j] = g[j] * ds[j] + rs[j] * dyi;
  }
}

// Pass 4: one thread per (b, c); dw overwrites x_terms' slots in place (same thread, same t).
template <class T>
__global__ void decay_grad(index_t batch, index_t time, index_t channels, const T* __restrict__ w,
                           const T* __restrict__ x_final, const T* __restrict__ y_terms, T* __restrict__ dw_and_x) {
  const index_t id = index_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= batch * channels) return;
  const index_t b = id / channels, c = id % channels;
  double after = double(x_final[id]), from = 0;  // Σ_{t>q} X_t + X_final;  Σ_{s≥q} Y_s
  for (index_t q = time - 1; q >= 0; --q) {
    const index_t at = (b * time + q) * channels + c;
    from += double(y_terms[at]);
    const T x_q = dw_and_x[at];
    dw_and_x[at] = T(after - from) * -std::exp(w[at]);
    after += double(x_q);
  }
}

// du[c] = Σ_b du_part[b, c], in batch order.
template <class T>
__global__ void sum_over_batch(index_t batch, index_t channels, const T* __restrict__ part, T* __restrict__ du) {
  const index_t c = index_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= channels) return;
  T sum = T(0);
  for (index_t b = 0; b < batch; ++b) sum += part[b * channels + c];
  du[c] = sum;
}

inline device current_device() {
  int index = 0;
  LINREC_CUDA_CHECK(cudaGetDevice(&index));
  return cuda_device(index);
}

template <int N, class T>
void forward_n(const wkv6_shapes& s, const T* r, const T* k, const T* v, const T* w, const T* u, const T* state0, T* y,
               T* state_final) {
  const places p{s.time, s.channels(), s.heads};
  forward<N, T><<<unsigned(s.batch * s.heads), N>>>(p, r, k, v, w, u, state0, y, state_final);
  LINREC_CUDA_CHECK_LAUNCH("wkv6 forward");
}

template <int N, class T>
void backward_n(const wkv6_shapes& s, const T* r, const T* k, const T* v, const T* w, const T* u, const T* state0,
                const T* dy, const T* d_state_final, T* dr, T* dk, T* dv, T* dw, T* du, T* d_state0) {
  const places p{s.time, s.channels(), s.heads};
  const unsigned blocks = unsigned(s.batch * s.heads);
  const device dev = current_device();
  auto y_terms = basic_tensor<T>::empty(Shape{s.elements() > 0 ? s.elements() : 1}, dev);
  auto x_final = basic_tensor<T>::empty(Shape{s.batch * s.channels()}, dev);
  auto du_part = basic_tensor<T>::empty(Shape{s.batch * s.channels()}, dev);
  backward_rows_forward<N, T>
      <<<blocks, N>>>(p, r, k, v, w, u, state0, dy, d_state_final, dr, dw, x_final.raw_data(), du_part.raw_data());
  LINREC_CUDA_CHECK_LAUNCH("wkv6 backward (rows, forward)");
  backward_rows_reverse<N, T><<<blocks, N>>>(p, r, k, v, w, u, dy, d_state_final, dk, y_terms.raw_data(), d_state0);
  LINREC_CUDA_CHECK_LAUNCH("wkv6 backward (rows, reverse)");
  backward_columns_reverse<N, T><<<blocks, N>>>(p, r, k, w, u, dy, d_state_final, dv);
  LINREC_CUDA_CHECK_LAUNCH("wkv6 backward (columns, reverse)");
  const index_t lanes = s.batch * s.channels();
  decay_grad<<<unsigned((lanes + 127) / 128), 128>>>(s.batch, s.time, s.channels(), w, x_final.raw_data(),
                                                     y_terms.raw_data(), dw);
  LINREC_CUDA_CHECK_LAUNCH("wkv6 backward (decay)");
  sum_over_batch<<<unsigned((s.channels() + 127) / 128), 128>>>(s.batch, s.channels(), du_part.raw_data(), du);
  LINREC_CUDA_CHECK_LAUNCH("wkv6 backward (bonus)");
}

template <class T>
void launch_forward(const wkv6_shapes& s, const T* r, const T* k, const T* v, const T* w, const T* u, const T* state0,
                    T* y, T* state_final) {
  if (s.batch * s.heads == 0) return;
  switch (s.head_size) {
    case 8:
      return forward_n<8>(s, r, k, v, w, u, state0, y, state_final);
    case 16:
      return forward_n<16>(s, r, k, v, w, u, state0, y, state_final);
    case 32:
      return forward_n<32>(s, r, k, v, w, u, state0, y, state_final);
    case 64:
      return forward_n<64>(s, r, k, v, w, u, state0, y, state_final);
    default:
      break;
  }
  throw Error("wkv6 on CUDA: head size " + std::to_string(s.head_size) + " is not compiled (8, 16, 32 or 64)");
}
template <class T>
void launch_backward(const wkv6_shapes& s, const T* r, const T* k, const T* v, const T* w, const T* u, const T* state0,
                     const T* dy, const T* d_state_final, T* dr, T* dk, T* dv, T* dw, T* du, T* d_state0) {
  if (s.batch * s.heads == 0) return;
  switch (s.head_size) {
    case 8:
      return backward_n<8>(s, r, k, v, w, u, state0, dy, d_state_final, dr, dk, dv, dw, du, d_state0);
    case 16:
      return backward_n<16>(s, r, k, v, w, u, state0, dy, d_state_final, dr, dk, dv, dw, du, d_state0);
    case 32:
      return backward_n<32>(s, r, k, v, w, u, state0, dy, d_state_final, dr, dk, dv, dw, du, d_state0);
    case 64:
      return backward_n<64>(s, r, k, v, w, u, state0, dy, d_state_final, dr, dk, dv, dw, du, d_state0);
    default:
      break;
  }
  throw Error("wkv6 on CUDA: head size " + std::to_string(s.head_size) + " is not compiled (8, 16, 32 or 64)");
}

}  // namespace linrec::layers::detail::cuda_wkv6

namespace linrec::layers::detail::cuda_wkv4 {

template <class T>
__global__ void forward(wkv4_shapes<T> s, const T* __restrict__ time_decay, const T* __restrict__ u,
                        const T* __restrict__ k, const T* __restrict__ v, const log_value<T>* __restrict__ num0,
                        const log_value<T>* __restrict__ den0, T* __restrict__ y, log_value<T>* __restrict__ num,
                        log_value<T>* __restrict__ den, log_value<T>* __restrict__ num_final,
                        log_value<T>* __restrict__ den_final) {
  const index_t lane = index_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (lane >= s.batch * s.channels) return;
  const index_t b = lane / s.channels, c = lane % s.channels, at = b * s.time * s.channels + c;
  wkv4_lane_forward(s.time, s.channels, time_decay[c], u[c], k + at, v + at, num0 ? num0 + lane : nullptr,
                    den0 ? den0 + lane : nullptr, y + at, num + at, den + at, num_final + lane, den_final + lane);
}

template <class T>
__global__ void backward(wkv4_shapes<T> s, const T* __restrict__ time_decay, const T* __restrict__ u,
                         const T* __restrict__ k, const T* __restrict__ v, const log_value<T>* __restrict__ num0,
                         const log_value<T>* __restrict__ den0, const log_value<T>* __restrict__ num,
                         const log_value<T>* __restrict__ den, const T* __restrict__ dy,
                         const log_value<T>* __restrict__ d_num_final, const log_value<T>* __restrict__ d_den_final,
                         T* __restrict__ dk, T* __restrict__ dv, T* __restrict__ dtd_part, T* __restrict__ du_part,
                         log_value<T>* __restrict__ d_num0, log_value<T>* __restrict__ d_den0) {
  const index_t lane = index_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (lane >= s.batch * s.channels) return;
  const index_t b = lane / s.channels, c = lane % s.channels, at = b * s.time * s.channels + c;
  wkv4_lane_backward(s.time, s.channels, time_decay[c], u[c], k + at, v + at, num0 ? num0 + lane : nullptr,
                     den0 ? den0 + lane : nullptr, num + at, den + at, dy ? dy + at : nullptr,
                     d_num_final ? d_num_final + lane : nullptr, d_den_final ? d_den_final + lane : nullptr, dk + at,
                     dv + at, dtd_part + lane, du_part + lane, d_num0 ? d_num0 + lane : nullptr,
                     d_den0 ? d_den0 + lane : nullptr);
}

template <class T>
const log_value<T>* as_log(const T* p) {
  return reinterpret_cast<const log_value<T>*>(p);
}
template <class T>
log_value<T>* as_log(T* p) {
  return reinterpret_cast<log_value<T>*>(p);
}
inline unsigned lanes_grid(index_t lanes) { return unsigned((lanes + 127) / 128); }

template <class T>
void launch_forward(const wkv4_shapes<T>& s, const T* time_decay, const T* u, const T* k, const T* v, const T* num0,
                    const T* den0, T* y, T* num, T* den, T* num_final, T* den_final) {
  const index_t lanes = s.batch * s.channels;
  if (lanes == 0 || s.time == 0) return;
  forward<<<lanes_grid(lanes), 128>>>(s, time_decay, u, k, v, as_log(num0), as_log(den0), y, as_log(num), as_log(den),
                                      as_log(num_final), as_log(den_final));
  LINREC_CUDA_CHECK_LAUNCH("wkv4 forward");
}
template <class T>
void launch_backward(const wkv4_shapes<T>& s, const T* time_decay, const T* u, const T* k, const T* v, const T* num0,
                     const T* den0, const T* num, const T* den, const T* dy, const T* d_num_final, const T* d_den_final,
                     T* dk, T* dv, T* d_time_decay, T* du, T* d_num0, T* d_den0) {
  const index_t lanes = s.batch * s.channels;
  if (lanes == 0 || s.time == 0) return;
  const device dev = cuda_wkv6::current_device();
  auto dtd_part = basic_tensor<T>::empty(Shape{lanes}, dev), du_part = basic_tensor<T>::empty(Shape{lanes}, dev);
  backward<<<lanes_grid(lanes), 128>>>(s, time_decay, u, k, v, as_log(num0), as_log(den0), as_log(num), as_log(den), dy,
                                       as_log(d_num_final), as_log(d_den_final), dk, dv, dtd_part.raw_data(),
                                       du_part.raw_data(), as_log(d_num0), as_log(d_den0));
  LINREC_CUDA_CHECK_LAUNCH("wkv4 backward");
  cuda_wkv6::sum_over_batch<<<lanes_grid(s.channels), 128>>>(s.batch, s.channels, dtd_part.raw_data(), d_time_decay);
  LINREC_CUDA_CHECK_LAUNCH("wkv4 backward (decay)");
  cuda_wkv6::sum_over_batch<<<lanes_grid(s.channels), 128>>>(s.batch, s.channels, du_part.raw_data(), du);
  LINREC_CUDA_CHECK_LAUNCH("wkv4 backward (bonus)");
}

}  // namespace linrec::layers::detail::cuda_wkv4

namespace linrec::layers::detail::cuda_wkv6 {

inline const bool installed = [] {
  ::linrec::detail::kernel_slot<wkv4_forward_kernel<float>>() = &cuda_wkv4::launch_forward<float>;
  ::linrec::detail::kernel_slot<wkv4_backward_kernel<float>>() = &cuda_wkv4::launch_backward<float>;
  ::linrec::detail::kernel_slot<wkv4_forward_kernel<double>>() = &cuda_wkv4::launch_forward<double>;
  ::linrec::detail::kernel_slot<wkv4_backward_kernel<double>>() = &cuda_wkv4::launch_backward<double>;
  ::linrec::detail::kernel_slot<wkv6_forward_kernel<float>>() = &launch_forward<float>;
  ::linrec::detail::kernel_slot<wkv6_backward_kernel<float>>() = &launch_backward<float>;
  ::linrec::detail::kernel_slot<wkv6_forward_kernel<double>>() = &launch_forward<double>;
  ::linrec::detail::kernel_slot<wkv6_backward_kernel<double>>() = &launch_backward<double>;
  return true;
}();

}  // namespace linrec::layers::detail::cuda_wkv6
