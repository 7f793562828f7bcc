#pragma once
// Channel tiles of the register-tiled CUDA scan (channel contiguous: [B,T,C]), forward and
// backward. The design is described at the top of cuda_tiled.cuh.
#include <cuda_runtime.h>

#include "linrec/scan/detail/cuda_lookback.cuh"
#include "linrec/scan/layout.hpp"
#include "linrec/scan/operators.hpp"

namespace linrec::detail::cuda_tiled {

// ---------------------------------------------------------------------------------------------
// Channels: channel contiguous. Tile = (LANES·V channels) × (SLICES·L steps) of one batch entry.

template <int V, int LANES, int L>
struct channels_config {
  static constexpr int lanes = LANES;
  static constexpr int slices = threads / LANES;
  static constexpr int warp_slices = 32 / LANES;
  static constexpr int channels = LANES * V;
  static constexpr int steps = slices * L;
  // Shared pairs of a channel kernel: the per-warp partials, and later the look-back's scratch
  // (one pair per thread).
  static constexpr int shared_pairs = warps * channels > threads ? warps* channels : threads;
};

// Where a channel tile's thread works: batch entry, first channel of the tile (c0), its own
// first channel (c) and whether it holds one.
struct channel_place {
  index_t batch, c0, c;
  bool ok;
};
template <int G, int LANES, int V>
__device__ __forceinline__ channel_place place_channels(index_t group, index_t C) {
  const index_t groups_per_batch = (C + G - 1) / G;
  channel_place q;
  q.batch = group / groups_per_batch;
  q.c0 = (group - q.batch * groups_per_batch) * G;
  q.c = q.c0 + index_t(threadIdx.x % LANES) * V;
  q.ok = q.c < C;  // V divides C when V > 1
  return q;
}

// One channel tile of the forward scan, in registers (see rows_forward_tile).
template <class T, int V, int LANES, int L>
struct channels_forward_tile {
  using cfg = channels_config<V, LANES, L>;
  using partials = pair<T>[warps][cfg::channels];
  T av[L][V], bv[L][V];
  pair<T> pre[V];  // before this thread's L steps, per channel, within the tile

  // a, b at this thread's (batch, first channel); tb: this thread's first step.
  __device__ __forceinline__ void load(const T* a, index_t a_time, const T* b, index_t b_time, index_t tb, index_t T_,
                                       bool channel_ok) {
#pragma unroll
    for (int i = 0; i < L; ++i) {
      const index_t t = tb + i;
      if (channel_ok && t < T_) {
        load_vec<T, V>(av[i], a + t * a_time);
        load_vec<T, V>(bv[i], b + t * b_time);
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k) {
          av[i][k] = T(1);
          bv[i][k] = T(0);
        }
      }
    }
  }

  // Folds this thread's steps, scans the folds over the warp's slices with shuffles, then
  // (barrier) over earlier warps' totals in part. With 8 lanes a tile has 32 slices;
  // a walk over all earlier slices would be that many dependent combines.
  __device__ __forceinline__ void fold(partials& part) {
    const int lane = threadIdx.x % LANES, warp = threadIdx.x / 32, warp_slice = (threadIdx.x % 32) / LANES;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      pair<T> x{av[0][k], bv[0][k]};
#pragma unroll
      for (int i = 1; i < L; ++i) x = {x.a * av[i][k], av[i][k] * x.h + bv[i][k]};
      pre[k] = identity<T>();
      if constexpr (cfg::warp_slices > 1) {
#pragma unroll
        for (int d = 1; d < cfg::warp_slices; d <<= 1) {
          const pair<T> o = shfl_up(x, d * LANES);
          if (warp_slice >= d) x = combine(o, x);
        }
        const pair<T> e = shfl_up(x, LANES);
        if (warp_slice > 0) pre[k] = e;
      }
      if (warp_slice == cfg::warp_slices - 1) part[warp][lane * V + k] = x;
    }
    __syncthreads();
    // The V channels' walks interleaved (k innermost): V independent dependency chains.
    pair<T> earlier[V];
#pragma unroll
    for (int k = 0; k < V; ++k) earlier[k] = identity<T>();
    for (int w = 0; w < warp; ++w)
#pragma unroll
      for (int k = 0; k < V; ++k) earlier[k] = combine(earlier[k], part[w][lane * V + k]);
#pragma unroll
    for (int k = 0; k < V; ++k) pre[k] = cfg::warp_slices > 1 ? combine(earlier[k], pre[k]) : earlier[k];
  }

  // The tile's aggregate of channel `channel` (after fold's barrier).
  static __device__ __forceinline__ pair<T> aggregate(const partials& part, int channel) {
    pair<T> x = identity<T>();
#pragma unroll
    for (int w = 0; w < warps; ++w) x = combine(x, part[w][channel]);
    return x;
  }

  // carry: the tile's channels' states before it (shared memory); h_final at this thread's
  // channels, or null where this is not the last tile.
  __device__ __forceinline__ void store(T* h, index_t h_time, index_t tb, index_t T_, const T* carry, bool channel_ok,
                                        T* h_final) {
    const int lane = threadIdx.x % LANES;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      T state = pre[k].a * carry[lane * V + k] + pre[k].h;
#pragma unroll
      for (int i = 0; i < L; ++i) {
        state = av[i][k] * state + bv[i][k];
        bv[i][k] = state;
        if (h_final && channel_ok && tb + i == T_ - 1) h_final[k] = state;
      }
    }
    if (channel_ok) {
#pragma unroll
      for (int i = 0; i < L; ++i)
        if (tb + i < T_) store_vec_streaming<T, V>(h + (tb + i) * h_time, bv[i]);
    }
  }
};

template <class T, int V, int LANES, int L, int MIN_BLOCKS>
__global__ void __launch_bounds__(threads, MIN_BLOCKS)
    channels_forward(scan_forward_args<real_op<T>> p, grid_shape grid, lookback<T> lb) {
  using tile_t = channels_forward_tile<T, V, LANES, L>;
  using cfg = typename tile_t::cfg;
  __shared__ pair<T> pairs[cfg::shared_pairs];
  auto& part = *reinterpret_cast<typename tile_t::partials*>(pairs);
  __shared__ T carry[cfg::channels];
  const int tid = threadIdx.x;
  const unsigned tile = blockIdx.x;
  LINREC_CUDA_TILED_TRACE(0);
  const unsigned chunk = tile / unsigned(grid.lines);
  const index_t C = p.shape.channels, T_ = p.shape.time;
  const channel_place q = place_channels<cfg::channels, LANES, V>(index_t(tile) - index_t(chunk) * grid.lines, C);
  const index_t tb = index_t(chunk) * cfg::steps + (tid / LANES) * L;
  tile_t x;
  x.load(p.a + q.batch * p.a_strides.batch + q.c, p.a_strides.time, p.b + q.batch * p.b_strides.batch + q.c,
         p.b_strides.time, tb, T_, q.ok);
  early_prefix<T> early;
  if (tid < cfg::channels) early = read_early(lb, grid, tile, chunk, cfg::channels, tid, channel_record_stride<T>);
  x.fold(part);
  LINREC_CUDA_TILED_TRACE(1);
  pair<T> aggregate = identity<T>();
  T initial = T(0);
  if (tid < cfg::channels) {
    aggregate = tile_t::aggregate(part, tid);
    if (p.h0 && q.c0 + tid < C) initial = p.h0[q.batch * C + q.c0 + tid];
  }
  look_back_channels<T, cfg::channels>(lb, grid, tile, chunk, aggregate, initial, early, pairs, carry);
  LINREC_CUDA_TILED_TRACE(2);
  const bool last_chunk = chunk + 1 == grid.chunks;
  x.store(p.h + q.batch * p.h_strides.batch + q.c, p.h_strides.time, tb, T_, carry, q.ok,
          last_chunk && p.h_final ? p.h_final + q.batch * C + q.c : nullptr);
  LINREC_CUDA_TILED_TRACE(3);
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

// The backward channel tile: reverse time on u[t] = a[t]·g[t] (see the top of this file).
template <class T, int V, int LANES, int L>
struct channels_backward_tile {
  using cfg = channels_config<V, LANES, L>;
  using partials = pair<T>[warps][cfg::channels];
  // h[t-1] is needed only once the carry is known, so it waits in shared memory (copied
  // asynchronously, step-major across the block), not in registers: that leaves room for
  // L = 8 steps per thread, tiles twice as long and look-back chains half as deep as with three
  // arrays in registers.
  // Faster on the few-sequence backward (H100): docs/notes/cuda_scan.md
  using h_staging = T[L * threads * V];
  // av[i] = a[tb+i], gv[i] = dh[tb+i]; hs + i·threads·V holds h[tb+i-1] (h[-1] = h0)
  T av[L][V], gv[L][V];
  pair<T> pre[V];  // after this thread's L steps (processing order), per channel, within the tile
  T* hs = nullptr;

  // h0: the initial state at this thread's channels, or null (zero).
  __device__ __forceinline__ void load(const T* a, index_t a_time, const T* h, index_t h_time, const T* dh,
                                       index_t dh_time, index_t tb, index_t T_, bool channel_ok, const T* h0,
                                       h_staging& staging) {
    hs = staging + threadIdx.x * V;
#pragma unroll
    for (int i = 0; i < L; ++i) {
      const index_t t = tb + i;
      T* dst = hs + i * threads * V;
      if (channel_ok && t < T_ && t > 0) {
        copy_to_shared<T, V>(dst, h + (t - 1) * h_time);
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k) dst[k] = channel_ok && t == 0 && h0 ? h0[k] : T(0);
      }
    }
#pragma unroll
    for (int i = 0; i < L; ++i) {
      const index_t t = tb + i;
      if (channel_ok && t < T_) {
        load_vec<T, V>(av[i], a + t * a_time);
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k) av[i][k] = T(1);
      }
    }
#pragma unroll
    for (int i = 0; i < L; ++i) {
      const index_t t = tb + i;
      if (channel_ok && t < T_) {
        load_vec<T, V>(gv[i], dh + t * dh_time);
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k) gv[i][k] = T(0);
      }
    }
  }

  // Processing order: slice SLICES-1 first (see the forward fold).
  __device__ __forceinline__ void fold(partials& part) {
    const int lane = threadIdx.x % LANES, warp = threadIdx.x / 32, warp_slice = (threadIdx.x % 32) / LANES;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      pair<T> x{av[L - 1][k], av[L - 1][k] * gv[L - 1][k]};
#pragma unroll
      for (int i = L - 2; i >= 0; --i) x = {x.a * av[i][k], av[i][k] * (x.h + gv[i][k])};
      pre[k] = identity<T>();
      if constexpr (cfg::warp_slices > 1) {
#pragma unroll
        for (int d = 1; d < cfg::warp_slices; d <<= 1) {
          const pair<T> o = shfl_down(x, d * LANES);
          if (warp_slice + d < cfg::warp_slices) x = combine(o, x);
        }
        const pair<T> e = shfl_down(x, LANES);
        if (warp_slice + 1 < cfg::warp_slices) pre[k] = e;
      }
      if (warp_slice == 0) part[warp][lane * V + k] = x;
    }
    __syncthreads();
    pair<T> later[V];
#pragma unroll
    for (int k = 0; k < V; ++k) later[k] = identity<T>();
    for (int w = warps - 1; w > warp; --w)
#pragma unroll
      for (int k = 0; k < V; ++k) later[k] = combine(later[k], part[w][lane * V + k]);
#pragma unroll
    for (int k = 0; k < V; ++k) pre[k] = cfg::warp_slices > 1 ? combine(later[k], pre[k]) : later[k];
  }

  static __device__ __forceinline__ pair<T> aggregate(const partials& part, int channel) {
    pair<T> x = identity<T>();
#pragma unroll
    for (int w = warps - 1; w >= 0; --w) x = combine(x, part[w][channel]);
    return x;
  }

  // carry: gradient states after the tile (shared memory); dh0 at this thread's channels, or null.
  __device__ __forceinline__ void store(T* da, index_t da_time, T* db, index_t db_time, index_t tb, index_t T_,
                                        const T* carry, bool channel_ok, T* dh0) {
    const int lane = threadIdx.x % LANES;
    wait_copies();
    T hv[L][V];  // h[t-1], then da[t]
#pragma unroll
    for (int i = 0; i < L; ++i) load_vec<T, V>(hv[i], hs + i * threads * V);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      T u = pre[k].a * carry[lane * V + k] + pre[k].h;  // u[tb+L]
#pragma unroll
      for (int i = L - 1; i >= 0; --i) {
        const T grad = u + gv[i][k];
        gv[i][k] = grad;
        hv[i][k] = grad * hv[i][k];
        u = av[i][k] * grad;
      }
      if (tb == 0 && dh0 && channel_ok) dh0[k] = u;  // u[0] = a[0]·g[0]
    }
    if (channel_ok) {
#pragma unroll
      for (int i = 0; i < L; ++i)
        if (tb + i < T_) {
          store_vec_streaming<T, V>(db + (tb + i) * db_time, gv[i]);
          store_vec_streaming<T, V>(da + (tb + i) * da_time, hv[i]);
        }
    }
  }
};

template <class T, int V, int LANES, int L, int MIN_BLOCKS>
__global__ void __launch_bounds__(threads, MIN_BLOCKS)
    channels_backward(scan_backward_args<real_op<T>> p, grid_shape grid, lookback<T> lb) {
  using tile_t = channels_backward_tile<T, V, LANES, L>;
  using cfg = typename tile_t::cfg;
  __shared__ pair<T> pairs[cfg::shared_pairs];
  auto& part = *reinterpret_cast<typename tile_t::partials*>(pairs);
  __shared__ T carry[cfg::channels];
  __shared__ __align__(16) typename tile_t::h_staging h_staging;
  // Static shared memory stops at 48 KB (look_back_channels adds G + threads words).
  static_assert(sizeof(pairs) + sizeof(carry) + sizeof(h_staging) + (cfg::channels + threads) * 4 <= 48 * 1024,
                "channel backward tile: shrink L or LANES");
  const int tid = threadIdx.x;
  const unsigned tile = blockIdx.x;
  const unsigned chunk_in_order = tile / unsigned(grid.lines);
  const index_t C = p.shape.channels, T_ = p.shape.time;
  const channel_place q =
      place_channels<cfg::channels, LANES, V>(index_t(tile) - index_t(chunk_in_order) * grid.lines, C);
  const index_t tb = index_t(grid.chunks - 1 - chunk_in_order) * cfg::steps + (tid / LANES) * L;
  tile_t x;
  x.load(p.a + q.batch * p.a_strides.batch + q.c, p.a_strides.time, p.h + q.batch * p.h_strides.batch + q.c,
         p.h_strides.time, p.dh + q.batch * p.dh_strides.batch + q.c, p.dh_strides.time, tb, T_, q.ok,
         p.h0 ? p.h0 + q.batch * C + q.c : nullptr, h_staging);
  early_prefix<T> early;
  if (tid < cfg::channels)
    early = read_early(lb, grid, tile, chunk_in_order, cfg::channels, tid, channel_record_stride<T>);
  x.fold(part);
  pair<T> aggregate = identity<T>();
  T initial = T(0);
  if (tid < cfg::channels) {
    aggregate = tile_t::aggregate(part, tid);
    if (p.dh_final && q.c0 + tid < C) initial = p.dh_final[q.batch * C + q.c0 + tid];
  }
  look_back_channels<T, cfg::channels>(lb, grid, tile, chunk_in_order, aggregate, initial, early, pairs, carry);
  x.store(p.da + q.batch * p.da_strides.batch + q.c, p.da_strides.time, p.db + q.batch * p.db_strides.batch + q.c,
          p.db_strides.time, tb, T_, carry, q.ok, p.dh0 ? p.dh0 + q.batch * C + q.c : nullptr);
}

}  // namespace linrec::detail::cuda_tiled
