#pragma once
// RWKV-4's WKV on a device, as kernel slots (core/kernel_slot.hpp) installed by
// linrec/layers/cuda.cuh: one thread per lane (b, c) running wkv4_lane.hpp. States and the
// per-step scans are (scale, exponent) pairs, stored as two T each. Every output is overwritten.
#include "linrec/core/kernel_slot.hpp"
#include "linrec/layers/detail/wkv4.hpp"

namespace linrec::layers::detail {

// time_decay, u [C]; k, v [B,T,C]; num0/den0 [B,C,2] or null → y [B,T,C], num/den [B,T,C,2],
// num_final/den_final [B,C,2].
template <class T>
struct wkv4_forward_kernel {
  using signature = void(const wkv4_shapes<T>& s, const T* time_decay, const T* u, const T* k, const T* v,
                         const T* num0, const T* den0, T* y, T* num, T* den, T* num_final, T* den_final);
  static constexpr const char* name = "wkv4";
};
// → dk, dv [B,T,C], d_time_decay, du [C] (summed over the batch), d_num0/d_den0 [B,C,2] (null:
// not wanted). dy, d_num_final, d_den_final null: zero.
template <class T>
struct wkv4_backward_kernel {
  using signature = void(const wkv4_shapes<T>& s, const T* time_decay, const T* u, const T* k, const T* v,
                         const T* num0, const T* den0, const T* num, const T* den, const T* dy, const T* d_num_final,
                         const T* d_den_final, T* dk, T* dv, T* d_time_decay, T* du, T* d_num0, T* d_den0);
  static constexpr const char* name = "wkv4";
};

}  // namespace linrec::layers::detail
