#pragma once
// RWKV-6's WKV on a device, as kernel slots (core/kernel_slot.hpp) installed by
// linrec/layers/cuda.cuh. Same layouts and math as wkv6.hpp; every output is overwritten.
#include "linrec/core/kernel_slot.hpp"
#include "linrec/layers/detail/wkv6.hpp"

namespace linrec::layers::detail {

// y and the final state from r, k, v, w [B,T,C], u [C] and state0 [B,H,N,N] (null: zero).
template <class T>
struct wkv6_forward_kernel {
  using signature = void(const wkv6_shapes& s, const T* r, const T* k, const T* v, const T* w, const T* u,
                         const T* state0, T* y, T* state_final);
  static constexpr const char* name = "wkv6";
};

// dr, dk, dv, dw [B,T,C], du [C] and d_state0 (null: not wanted) from dy (null: zero) and
// d_state_final (null: zero).
template <class T>
struct wkv6_backward_kernel {
  using signature = void(const wkv6_shapes& s, const T* r, const T* k, const T* v, const T* w, const T* u,
                         const T* state0, const T* dy, const T* d_state_final, T* dr, T* dk, T* dv, T* dw, T* du,
                         T* d_state0);
  static constexpr const char* name = "wkv6";
};

}  // namespace linrec::layers::detail
