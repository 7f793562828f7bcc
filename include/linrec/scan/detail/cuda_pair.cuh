#pragma once
// The element the CUDA scan combines, and the two directions it runs in.
//
// A span of steps acts on the state before it as h ↦ a·h + b: its pair (a, h) is the product
// of its decays and the state it produces from a zero state. Spans combine in processing
// order: forward processes time upwards, backward downwards (the adjoint recurrence
//   g[t] = a[t+1]·g[t+1] + dh[t]), so one tile and look-back machinery serves both.
#include <cuda_runtime.h>

#include <cstring>
#include <type_traits>

#include "linrec/scan/operators.hpp"

namespace linrec::detail::cuda_scan {

enum class scan_direction { forward, backward };

template <class A, class V = A>
struct pair {
  A a;  // product of the span's decays
  V h;  // the state (forward) or gradient (backward) the span produces from zero
};

// Real operators in registers (the register-tiled agents). combine(e1, e2): e1 first.
template <class T>
__device__ __forceinline__ pair<T> combine(const pair<T>& e1, const pair<T>& e2) {
  return {e1.a * e2.a, e2.a * e1.h + e2.h};
}
template <class T>
__device__ __forceinline__ pair<T> identity() {
  return {T(1), T(0)};
}

// Scan operators, the form the look-back and CUB's warp scan take: pair_type, combine
// (also as operator()), identity.
template <class T>
struct affine_scan {  // real_op<T>, the register-tiled agents
  using pair_type = pair<T>;
  __device__ __forceinline__ static pair_type combine(const pair_type& e1, const pair_type& e2) {
    return cuda_scan::combine(e1, e2);
  }
  __device__ __forceinline__ static pair_type identity() { return cuda_scan::identity<T>(); }
  __device__ __forceinline__ pair_type operator()(const pair_type& e1, const pair_type& e2) const {
    return combine(e1, e2);
  }
};

template <class Op, scan_direction D>
struct operator_scan {  // any operator, the staged agent: step forward, grad_step backward
  using value_type = std::conditional_t<D == scan_direction::forward, typename Op::value_type, typename Op::grad_type>;
  using pair_type = pair<typename Op::decay_type, value_type>;
  __device__ __forceinline__ static value_type apply(typename Op::decay_type a, const value_type& carry,
                                                     const value_type& local) {
    if constexpr (D == scan_direction::forward)
      return Op::step(a, carry, local);
    else
      return Op::grad_step(a, carry, local);
  }
  __device__ __forceinline__ static pair_type combine(const pair_type& e1, const pair_type& e2) {
    return {Op::compose(e1.a, e2.a), apply(e2.a, e1.h, e2.h)};
  }
  __device__ __forceinline__ static pair_type identity() {
    if constexpr (D == scan_direction::forward)
      return {Op::decay_identity(), Op::zero_value()};
    else
      return {Op::decay_identity(), Op::zero_grad()};
  }
  __device__ __forceinline__ pair_type operator()(const pair_type& e1, const pair_type& e2) const {
    return combine(e1, e2);
  }
};

// Warp shuffles of a value of any trivially copyable type: native for arithmetic types, per
// 32-bit word otherwise (std::complex, log_value).
enum class shuffle { up, down, index };
template <shuffle S, class X>
__device__ __forceinline__ X shfl(const X& x, int arg) {
  auto one = [arg](auto v) {
    if constexpr (S == shuffle::up)
      return __shfl_up_sync(0xffffffffu, v, arg);
    else if constexpr (S == shuffle::down)
      return __shfl_down_sync(0xffffffffu, v, arg);
    else
      return __shfl_sync(0xffffffffu, v, arg);
  };
  if constexpr (std::is_arithmetic_v<X>) {
    return one(x);
  } else {
    static_assert(std::is_trivially_copyable_v<X> && sizeof(X) % 4 == 0);
    constexpr int words = int(sizeof(X) / 4);
    unsigned w[words];
    memcpy(w, &x, sizeof(X));
#pragma unroll
    for (int i = 0; i < words; ++i) w[i] = one(w[i]);
    X r;
    memcpy(&r, w, sizeof(X));
    return r;
  }
}
template <class A, class V>
__device__ __forceinline__ pair<A, V> shfl_up(const pair<A, V>& x, int delta) {
  return {shfl<shuffle::up>(x.a, delta), shfl<shuffle::up>(x.h, delta)};
}
template <class A, class V>
__device__ __forceinline__ pair<A, V> shfl_down(const pair<A, V>& x, int delta) {
  return {shfl<shuffle::down>(x.a, delta), shfl<shuffle::down>(x.h, delta)};
}
template <class A, class V>
__device__ __forceinline__ pair<A, V> shfl_index(const pair<A, V>& x, int lane) {
  return {shfl<shuffle::index>(x.a, lane), shfl<shuffle::index>(x.h, lane)};
}

}  // namespace linrec::detail::cuda_scan
