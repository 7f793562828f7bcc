#pragma once
// Building blocks of the register-tiled CUDA scan (cuda_tiled.cuh): the trace hook, the carry
// pair and its combine, 16-byte vector access, the look-back records and the two look-backs
// (one channel per tile by warp 0; G channels per tile by the whole block). The design is
// described at the top of cuda_tiled.cuh.
#include <cuda_runtime.h>

#include <type_traits>

#include "linrec/scan/layout.hpp"
#include "linrec/scan/operators.hpp"

namespace linrec::detail::cuda_tiled {

// Performance work only: a translation unit may define LINREC_CUDA_TILED_TRACE(phase) before
// including the scan's headers to timestamp the phases of each tile (0 start, 1 loaded and folded,
// 2 carry known, 3 end); by default it expands to nothing.
#ifndef LINREC_CUDA_TILED_TRACE
#define LINREC_CUDA_TILED_TRACE(phase)
#endif

inline constexpr int threads = 256;
inline constexpr int warps = threads / 32;

// (∏ decay, value from a zero state) of a span; combine(e1, e2) with e1 first in processing order.
template <class T>
struct pair {
  T a, h;
};
template <class T>
__device__ __forceinline__ pair<T> combine(const pair<T>& e1, const pair<T>& e2) {
  return {e1.a * e2.a, e2.a * e1.h + e2.h};
}
template <class T>
__device__ __forceinline__ pair<T> identity() {
  return {T(1), T(0)};
}
template <class T>
__device__ __forceinline__ pair<T> shfl_up(const pair<T>& x, int delta) {
  return {__shfl_up_sync(0xffffffffu, x.a, delta), __shfl_up_sync(0xffffffffu, x.h, delta)};
}
template <class T>
__device__ __forceinline__ pair<T> shfl_down(const pair<T>& x, int delta) {
  return {__shfl_down_sync(0xffffffffu, x.a, delta), __shfl_down_sync(0xffffffffu, x.h, delta)};
}

// V consecutive elements as one access: 16 bytes for float×4 / double×2.
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

// The scan's outputs are written once and not read again by the call, so they are stored
// with the evict-first (streaming) policy: their dirty lines leave L2 first, which leaves the
// lines still being read in place. The cost lands on the next kernel, which finds less of the
// output in L2 (tools/probe_scan_cuda_pipeline measures it).
// Mostly faster than plain stores, a pipeline no slower (H100): docs/notes/cuda_scan.md
// Partial vectors at a row's end keep plain stores (a few elements per row).
//
// Performance work only: LINREC_CUDA_TILED_STREAMING_STORES=0 gives plain stores (for A/B).
#ifndef LINREC_CUDA_TILED_STREAMING_STORES
#define LINREC_CUDA_TILED_STREAMING_STORES 1
#endif
template <class T, int V>
__device__ __forceinline__ void store_vec_streaming(T* p, const T (&x)[V]) {
#if !LINREC_CUDA_TILED_STREAMING_STORES
  store_vec<T, V>(p, x);
#else
  if constexpr (V == 1) {
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
#endif
}

// Look-back scratch: per tile and channel two write-once records, the tile's aggregate and its
// inclusive prefix. A record is one 16-byte word {value, epoch} per 64 bits of the pair (float:
// the pair packed in one value; double: a and h in one each), written and read with single
// 16-byte accesses, which the hardware performs whole (CUB's tile status relies on the same).
// Every call draws a fresh 64-bit epoch, and a record counts as written only when it carries
// the call's epoch: earlier calls' records and uninitialised pool memory read as "not yet",
// so the scratch is not cleared (a memset would be a second launch, docs/notes/cuda_scan.md), except
// in a captured graph, whose replays all carry the captured epoch (cuda_dispatch.cuh). The
// value travels with its flag: no fences.
using word = unsigned long long;

template <class T>
struct lookback {
  word* aggregates = nullptr;  // record of (tile, channel) at (tile · channels + channel) · stride
  word* inclusive = nullptr;
  word epoch = 0;
};
template <class T>
inline constexpr int record_words = sizeof(T) == 4 ? 2 : 4;
// Words from one tile's record to the next tile's in one array. Rows (one channel per tile)
// interleave each tile's aggregate and inclusive prefix: for float both share one 32-byte
// sector, so a look-back poll of both costs one L2 sector instead of two. Channel tiles keep
// two arrays: their early reads and publishes are whole runs of one array.
// Interleaving: faster for rows, slower for many-channel [B,T,C] (H100), docs/notes/cuda_scan.md
template <class T>
inline constexpr int row_record_stride = 2 * record_words<T>;
template <class T>
inline constexpr int channel_record_stride = record_words<T>;

__device__ __forceinline__ void store_record(word* w, word value, word epoch) {
  asm volatile("st.global.cg.v2.u64 [%0], {%1, %2};" ::"l"(w), "l"(value), "l"(epoch) : "memory");
}
// Loads from L2 (.cg), never from a stale L1 line; volatile: every poll is a new load.
__device__ __forceinline__ bool load_record(const word* w, word& value, word epoch) {
  word tag;
  asm volatile("ld.global.cg.v2.u64 {%0, %1}, [%2];" : "=l"(value), "=l"(tag) : "l"(w) : "memory");
  return tag == epoch;
}
__device__ __forceinline__ void publish(word* rec, const pair<float>& x, word epoch) {
  store_record(rec, (word(__float_as_uint(x.h)) << 32) | word(__float_as_uint(x.a)), epoch);
}
__device__ __forceinline__ void publish(word* rec, const pair<double>& x, word epoch) {
  store_record(rec, word(__double_as_longlong(x.a)), epoch);
  store_record(rec + 2, word(__double_as_longlong(x.h)), epoch);
}
// Returns whether the record was written in this call; x is its value then.
__device__ __forceinline__ bool try_read(const word* rec, pair<float>& x, word epoch) {
  word w;
  const bool ok = load_record(rec, w, epoch);
  x = {__uint_as_float(unsigned(w)), __uint_as_float(unsigned(w >> 32))};
  return ok;
}
__device__ __forceinline__ bool try_read(const word* rec, pair<double>& x, word epoch) {
  word wa, wh;
  const bool ok_a = load_record(rec, wa, epoch), ok_h = load_record(rec + 2, wh, epoch);
  x = {__longlong_as_double((long long)wa), __longlong_as_double((long long)wh)};
  return ok_a && ok_h;
}

// The launch's tiles: `lines` independent lines (rows, or channel groups of a batch entry)
// of `chunks` tiles each; tile = blockIdx.x = chunk_in_order · lines + line. Like CUB's
// single-pass scan, this relies on blocks being dispatched in index order, so a tile's
// predecessors (lower indices) have started before it waits on them.
struct grid_shape {
  index_t lines;
  index_t chunks;
};

// The nearest predecessor's inclusive prefix, read when the tile starts, in the shadow of its
// own loads. Where that predecessor finished long ago (many lines: it lies `lines` tiles back)
// this is the whole look-back, and its round trip is off the critical path.
// An L2 round trip under full memory load is microseconds (measured): docs/notes/cuda_scan.md
template <class T>
struct early_prefix {
  pair<T> value;
  bool ok = false;
};
template <class T>
__device__ __forceinline__ early_prefix<T> read_early(const lookback<T>& lb, const grid_shape& g, unsigned tile,
                                                      unsigned chunk_in_order, int channels, int channel,
                                                      int record_stride) {
  early_prefix<T> e;
  if (chunk_in_order > 0)
    e.ok = try_read(lb.inclusive + ((index_t(tile) - g.lines) * channels + channel) * record_stride, e.value, lb.epoch);
  return e;
}

// Look-back with one channel per tile, by warp 0: per round, U × 32 predecessors (lane l
// reads predecessors base + u·32 + l), both records of each in flight at once. Writes the
// carry (the state before the tile) to *carry_out from lane 0. U = 1: a wider round reaches
// further back but waits for more loads.
// U = 1: fastest of 1/2/4/8 on the long row (H100), docs/notes/cuda_scan.md
template <class T>
__device__ __forceinline__ void look_back_row(const lookback<T>& lb, const grid_shape& g, unsigned tile,
                                              unsigned chunk_in_order, const pair<T>& aggregate, T initial,
                                              const early_prefix<T>& early, T* carry_out) {
  constexpr int W = row_record_stride<T>;
  const int lane = threadIdx.x & 31;
  const bool last = chunk_in_order + 1 == g.chunks;
  const index_t stride = g.lines;
  if (chunk_in_order == 0) {
    if (lane == 0) {
      *carry_out = initial;
      if (!last) publish(lb.inclusive + index_t(tile) * W, combine(pair<T>{T(1), initial}, aggregate), lb.epoch);
    }
    return;
  }
  if (__shfl_sync(0xffffffffu, int(early.ok), 0)) {  // lane 0 read it
    if (lane == 0) {
      *carry_out = early.value.h;
      if (!last) publish(lb.inclusive + index_t(tile) * W, combine(early.value, aggregate), lb.epoch);
    }
    return;
  }
  if (lane == 0 && !last) publish(lb.aggregates + index_t(tile) * W, aggregate, lb.epoch);
#ifndef LINREC_CUDA_TILED_ROW_WINDOWS
#define LINREC_CUDA_TILED_ROW_WINDOWS 1
#endif
  constexpr int U = LINREC_CUDA_TILED_ROW_WINDOWS;
  pair<T> exclusive = identity<T>();  // of the predecessors consumed so far
  unsigned base = 1;                  // distance of the nearest predecessor not yet consumed
  while (true) {
    pair<T> inc[U], agg[U];
    bool inc_ok[U], agg_ok[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const unsigned j = base + unsigned(u * 32 + lane);
      inc_ok[u] = agg_ok[u] = false;
      if (j <= chunk_in_order) {
        const index_t pred = index_t(tile) - index_t(j) * stride;
        inc_ok[u] = try_read(lb.inclusive + pred * W, inc[u], lb.epoch);
        agg_ok[u] = try_read(lb.aggregates + pred * W, agg[u], lb.epoch);
      }
    }
    unsigned consumed = 0;
    bool finished = false, stalled = false;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (!finished && !stalled) {
        const unsigned done = __ballot_sync(0xffffffffu, inc_ok[u]);
        const unsigned ready = __ballot_sync(0xffffffffu, inc_ok[u] || agg_ok[u]);
        const int k = done ? __ffs(done) - 1 : 32;  // nearest inclusive prefix
        const unsigned before = k == 32 ? 0xffffffffu : ((1u << k) - 1u);
        int n;
        if ((ready & before) == before) {
          n = k == 32 ? 32 : k + 1;
          finished = k < 32;
        } else {
          n = __ffs(~ready) - 1;  // the ready run nearest to the tile
          stalled = true;
        }
        pair<T> r = identity<T>();
        if (lane < n) r = inc_ok[u] ? inc[u] : agg[u];
          // r_{n-1} ∘ … ∘ r_0: higher lanes are earlier
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
          const pair<T> o = shfl_down(r, off);
          if (lane + off < 32) r = combine(o, r);
        }
        exclusive = combine(pair<T>{__shfl_sync(0xffffffffu, r.a, 0), __shfl_sync(0xffffffffu, r.h, 0)}, exclusive);
        consumed += unsigned(n);
      }
    }
    if (finished) break;
    base += consumed;
    if (consumed == 0) __nanosleep(64);
  }
  // `exclusive` reaches back to an inclusive prefix: its value is the true state.
  if (lane == 0) {
    *carry_out = exclusive.h;
    if (!last) publish(lb.inclusive + index_t(tile) * W, combine(exclusive, aggregate), lb.epoch);
  }
}

// Look-back with G channels per tile. Thread c < G owns channel c: a hit of its early read
// ends it at once. Channels still open are then looked back by the whole block: thread
// (c, o) = (tid % G, tid / G) reads U consecutive predecessors of channel c at distances
// base + o·U … (nearest first) and folds them up to the first inclusive prefix or the first
// record not yet written; thread c joins the O = threads/G partial results in order. A round
// thus covers O·U predecessors per channel (8 with 32-channel tiles). `scratch` (≥ threads
// pairs of shared memory, free once every thread is past its last read of it) holds the
// partials. Ends with carry[0..G) in shared memory and a barrier.
// U = 1 for ≤ 32 channels: each round's loads, not its reach, are the cost (H100), docs/notes/cuda_scan.md
#ifndef LINREC_CUDA_TILED_CHANNEL_WINDOW
#define LINREC_CUDA_TILED_CHANNEL_WINDOW 1
#endif
#ifndef LINREC_CUDA_TILED_WIDE_WINDOW
#define LINREC_CUDA_TILED_WIDE_WINDOW 2
#endif
template <class T, int G, int U = (G <= 32 ? LINREC_CUDA_TILED_CHANNEL_WINDOW : LINREC_CUDA_TILED_WIDE_WINDOW)>
__device__ __forceinline__ void look_back_channels(const lookback<T>& lb, const grid_shape& g, unsigned tile,
                                                   unsigned chunk_in_order, const pair<T>& aggregate, T initial,
                                                   const early_prefix<T>& early, pair<T>* scratch, T* carry) {
  static_assert(G <= threads && threads % G == 0);
  constexpr int O = threads / G;
  constexpr int W = channel_record_stride<T>;
  enum : int { run_full = 0, run_found = 1, run_stalled = 2 };
  __shared__ unsigned next_distance[G];  // 0: the channel's carry is known
  __shared__ int run_info[threads];      // state | count << 2
  const int tid = threadIdx.x;
  const bool last = chunk_in_order + 1 == g.chunks;
  const index_t stride = g.lines;
  auto record = [&](word* array, index_t t, int channel) { return array + (t * G + channel) * W; };
  bool open = false;
  if (tid < G) {
    if (chunk_in_order == 0) {
      carry[tid] = initial;
      if (!last) publish(record(lb.inclusive, tile, tid), combine(pair<T>{T(1), initial}, aggregate), lb.epoch);
    } else if (early.ok) {
      carry[tid] = early.value.h;
      if (!last) publish(record(lb.inclusive, tile, tid), combine(early.value, aggregate), lb.epoch);
    } else {
      if (!last) publish(record(lb.aggregates, tile, tid), aggregate, lb.epoch);
      open = true;
    }
    next_distance[tid] = open ? 1u : 0u;
  }
  if (__syncthreads_or(open)) {
    const int c = tid % G, o = tid / G;
    pair<T> exclusive = identity<T>();  // thread c: the predecessors consumed so far
    while (true) {
      const unsigned base = next_distance[c];
      pair<T> partial = identity<T>();
      int state = run_full, count = 0;
      if (base != 0) {
        pair<T> inc[U], agg[U];
        bool inc_ok[U], agg_ok[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const unsigned j = base + unsigned(o * U + u);
          inc_ok[u] = agg_ok[u] = false;
          if (j <= chunk_in_order) {
            const index_t pred = index_t(tile) - index_t(j) * stride;
            inc_ok[u] = try_read(record(lb.inclusive, pred, c), inc[u], lb.epoch);
            agg_ok[u] = try_read(record(lb.aggregates, pred, c), agg[u], lb.epoch);
          }
        }
        state = run_full;
#pragma unroll
        for (int u = 0; u < U; ++u) {
          if (state == run_full) {
            if (inc_ok[u]) {
              partial = combine(inc[u], partial);
              state = run_found;
              ++count;
            } else if (agg_ok[u]) {
              partial = combine(agg[u], partial);
              ++count;
            } else {
              state = run_stalled;
            }
          }
        }
      }
      scratch[tid] = partial;
      run_info[tid] = state | (count << 2);
      __syncthreads();
      bool again = false;
      if (tid < G && base != 0) {
        unsigned consumed = 0;
        bool found = false;
        for (int r = 0; r < O; ++r) {
          const int info = run_info[r * G + c];
          exclusive = combine(scratch[r * G + c], exclusive);
          consumed += unsigned(info >> 2);
          if ((info & 3) == run_found) found = true;
          if ((info & 3) != run_full) break;
        }
        if (found) {
          carry[c] = exclusive.h;
          if (!last) publish(record(lb.inclusive, tile, c), combine(exclusive, aggregate), lb.epoch);
          next_distance[c] = 0;
        } else {
          next_distance[c] = base + consumed;
          again = true;
          if (consumed == 0) __nanosleep(64);
        }
      }
      if (!__syncthreads_or(again)) break;
    }
  }
  __syncthreads();
}

}  // namespace linrec::detail::cuda_tiled
