#pragma once
// Non-temporal ("streaming") stores for the rows a large CPU scan writes.
//
// A normal store to a line not in cache first reads that line from memory (write-allocate), so
// a scan that reads a and b and writes h moves 4 lines per 3 it needs, and the backward scan 7
// per 5. A streaming store writes a whole line without reading it; memcpy of large blocks does
// the same, so without them the scans could not reach its bandwidth (docs/scan.md has the
// measurements). The price: the written lines are not left in cache,
// so a consumer that reads them next goes to memory. Scans use them only for outputs far larger
// than a core's cache (`streaming_store_min_bytes`), where the consumer would miss anyway.
//
// Which instructions: whatever the compiler's target allows (SSE2 is part of x86-64; AVX and
// AVX-512 when the consumer's flags enable them). Elsewhere `store_row_streaming` is a plain
// copy. Nothing here assumes an ISA the consumer did not ask for.
#include <algorithm>
#include <complex>
#include <cstdint>
#include <type_traits>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "linrec/core/index.hpp"

namespace linrec::detail {

// Below this much output a scan keeps normal stores, so its result stays in cache for the op
// that reads it next (training steps are far below it).
inline constexpr index_t streaming_store_min_bytes = index_t{32} << 20;

// The real type a row of T is stored as (std::complex<T> is laid out as T[2]), or void.
template <class T>
struct streaming_scalar {
  using type = void;
};
template <>
struct streaming_scalar<float> {
  using type = float;
};
template <>
struct streaming_scalar<double> {
  using type = double;
};
template <class T>
struct streaming_scalar<std::complex<T>> {
  using type = typename streaming_scalar<T>::type;
};

template <class T>
inline constexpr bool has_streaming_store =
#if defined(__SSE2__)
    !std::is_void_v<typename streaming_scalar<T>::type>;
#else
    false;
#endif

#if defined(__SSE2__)
namespace streaming {

#if defined(__AVX512F__)
inline constexpr std::uintptr_t vector_bytes = 64;
inline void store(float* dst, const float* src) { _mm512_stream_ps(dst, _mm512_loadu_ps(src)); }
inline void store(double* dst, const double* src) { _mm512_stream_pd(dst, _mm512_loadu_pd(src)); }
#elif defined(__AVX__)
inline constexpr std::uintptr_t vector_bytes = 32;
inline void store(float* dst, const float* src) { _mm256_stream_ps(dst, _mm256_loadu_ps(src)); }
inline void store(double* dst, const double* src) { _mm256_stream_pd(dst, _mm256_loadu_pd(src)); }
#else
inline constexpr std::uintptr_t vector_bytes = 16;
inline void store(float* dst, const float* src) { _mm_stream_ps(dst, _mm_loadu_ps(src)); }
inline void store(double* dst, const double* src) { _mm_stream_pd(dst, _mm_loadu_pd(src)); }
#endif

template <class S>
void store_row(S* dst, const S* src, index_t n) {
  constexpr index_t per_vector = static_cast<index_t>(vector_bytes / sizeof(S));
  // Streaming stores need an aligned destination: peel to the first aligned element.
  index_t i = 0;
  while (i < n && reinterpret_cast<std::uintptr_t>(dst + i) % vector_bytes != 0) {
    dst[i] = src[i];
    ++i;
  }
  for (; i + per_vector <= n; i += per_vector) store(dst + i, src + i);
  for (; i < n; ++i) dst[i] = src[i];
}

}  // namespace streaming
#endif

// dst[0..n) = src[0..n), bypassing the cache where the target has streaming stores. Call
// `streaming_store_fence` before another thread may read dst.
template <class T>
void store_row_streaming(T* dst, const T* src, index_t n) {
  if constexpr (has_streaming_store<T>) {
#if defined(__SSE2__)
    using S = typename streaming_scalar<T>::type;
    constexpr index_t scalars_per_element = static_cast<index_t>(sizeof(T) / sizeof(S));
    streaming::store_row(reinterpret_cast<S*>(dst), reinterpret_cast<const S*>(src), n * scalars_per_element);
#endif
  } else {
    std::copy(src, src + n, dst);
  }
}

// Streaming stores are weakly ordered: fence them before publishing the data to other threads.
inline void streaming_store_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

}  // namespace linrec::detail
