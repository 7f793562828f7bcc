#pragma once
// Global-memory access of the register-tiled CUDA scan: V consecutive elements as one 16-byte
// access (float×4, double×2; V = 1 where the layout is not aligned), output stores with the
// evict-first policy, and copies into shared memory that bypass registers.
#include <cuda_runtime.h>

#include <type_traits>

namespace linrec::detail::cuda_scan {

template <class T, int V>
struct vec_type;
template <>
struct vec_type<float, 4> {
  using type = float4;
};
template <>
struct vec_type<double, 2> {
  using type = double2;
};

template <class T, int V>
__device__ __forceinline__ void load_vec(T (&x)[V], const T* p) {
  if constexpr (V == 1) {
    x[0] = *p;
  } else {
    const auto r = *reinterpret_cast<const typename vec_type<T, V>::type*>(p);
    const T* e = reinterpret_cast<const T*>(&r);
#pragma unroll
    for (int k = 0; k < V; ++k) x[k] = e[k];
  }
}
template <class T, int V>
__device__ __forceinline__ void store_vec(T* p, const T (&x)[V]) {
  if constexpr (V == 1) {
    *p = x[0];
  } else {
    typename vec_type<T, V>::type r;
    T* e = reinterpret_cast<T*>(&r);
#pragma unroll
    for (int k = 0; k < V; ++k) e[k] = x[k];
    *reinterpret_cast<typename vec_type<T, V>::type*>(p) = r;
  }
}

// An output of the scan: written once and not read again by the call, so with Streaming
// (the policy's streaming_stores) it is stored evict-first: its dirty lines leave L2 first,
// which leaves the lines still being read in place. The cost lands on the next kernel, which
// finds less of the output in L2 (tools/probe_scan_cuda_pipeline measures both).
// Partial vectors at a row's end keep plain stores (a few elements per row).
template <bool Streaming, class T, int V>
__device__ __forceinline__ void store_output(T* p, const T (&x)[V]) {
  if constexpr (!Streaming) {
    store_vec<T, V>(p, x);
  } else if constexpr (V == 1) {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
      __stcs(p, x[0]);
    else
      *p = x[0];
  } else {
    typename vec_type<T, V>::type r;
    T* e = reinterpret_cast<T*>(&r);
#pragma unroll
    for (int k = 0; k < V; ++k) e[k] = x[k];
    __stcs(reinterpret_cast<typename vec_type<T, V>::type*>(p), r);
  }
}

// Copies V elements from global to shared memory without holding them in registers
// (cp.async on sm_80 and later); visible to the issuing thread after wait_copies().
template <class T, int V>
__device__ __forceinline__ void copy_to_shared(T* shared, const T* global) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = unsigned(__cvta_generic_to_shared(shared));
  if constexpr (sizeof(T) * V == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(global) : "memory");
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;" ::"r"(s), "l"(global), "n"(int(sizeof(T) * V)) : "memory");
#else
  T x[V];
  load_vec<T, V>(x, global);
  store_vec<T, V>(shared, x);
#endif
}
__device__ __forceinline__ void wait_copies() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}

}  // namespace linrec::detail::cuda_scan
