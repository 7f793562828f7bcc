#pragma once
// The channel agent of the CUDA scan: register tiles across channels, for real operators where
// the channel is contiguous ([B,T,C]). One block scans one tile in a single pass: each input
// read once into registers, each output written once from registers, the carries from the
// tiles before by the look-back (cuda_lookback.cuh).
//
// A tile is (LANES·V channels) × (SLICES·L steps) of one batch entry, SLICES = 256 / LANES and
// L = the tuning's items. Thread (slice, lane) owns L consecutive steps of V consecutive
// channels (one 16-byte vector per step: a warp reads whole rows of the time step). It folds
// its L steps per channel; the SLICES partial pairs of each channel are scanned with warp
// shuffles, then across the warps' totals in shared memory; the block looks back per channel
// and writes h from registers. LANES (32, 16 or 8) is chosen per shape by the dispatcher.
//
// Backward scans u[t] = a[t]·g[t] in reverse time, u[t] = a[t]·u[t+1] + a[t]·dh[t],
// g[t] = u[t+1] + dh[t]: every step then needs only its own row of a, so a thread loads L rows
// of a, not L + 1 (the extra row was a second request for the next slice's first row).
#include <cuda_runtime.h>

#include <cstddef>

#include "linrec/scan/detail/cuda_lookback.cuh"
#include "linrec/scan/detail/cuda_pair.cuh"
#include "linrec/scan/detail/cuda_vector.cuh"
#include "linrec/scan/layout.hpp"
#include "linrec/scan/operators.hpp"

namespace linrec::detail::cuda_scan {

// What both directions' channel agents are: LANES·V channels per tile, (batch entry,
// channel group) as lines.
template <class T, int V, int LANES, class Tuning>
struct channels_agent_base {
  using pair_type = pair<T>;
  using scan_op = affine_scan<T>;
  static constexpr int threads = 256;
  static constexpr int warps = threads / 32;
  static constexpr int min_blocks = Tuning::min_blocks;
  static constexpr int L = Tuning::items;  // steps per thread
  static constexpr int lanes = LANES;
  static constexpr int slices = threads / LANES;
  static constexpr int warp_slices = 32 / LANES;
  static constexpr int channels = LANES * V;  // per tile
  static constexpr int steps = slices * L;
  static constexpr std::size_t dynamic_smem = 0;
  // Shared pairs: the per-warp partials, and later the look-back's scratch (one per thread).
  static constexpr int shared_pairs = warps * channels > threads ? warps* channels : threads;
  using partials = pair<T>[warps][channels];
  static index_t lines(const scan_shape& s) { return s.batch * ((s.channels + channels - 1) / channels); }

  // Where a thread works: batch entry, first channel of the tile (c0), its own first channel
  // (c) and whether it holds one.
  struct place {
    index_t batch, c0, c;
    bool ok;
  };
  static __device__ __forceinline__ place locate(index_t line, index_t C) {
    const index_t groups_per_batch = (C + channels - 1) / channels;
    place q;
    q.batch = line / groups_per_batch;
    q.c0 = (line - q.batch * groups_per_batch) * channels;
    q.c = q.c0 + index_t(threadIdx.x % LANES) * V;
    q.ok = q.c < C;  // V divides C when V > 1
    return q;
  }
};

template <scan_direction D, class T, int V, int LANES, class Tuning>
struct channels_agent;

template <class T, int V, int LANES, class Tuning>
struct channels_agent<scan_direction::forward, T, V, LANES, Tuning> : channels_agent_base<T, V, LANES, Tuning> {
  using base = channels_agent_base<T, V, LANES, Tuning>;
  using args_type = scan_forward_args<real_op<T>>;
  using partials = typename base::partials;
  static constexpr const char* name = "linrec::detail::cuda_scan::channels_agent<forward>";
  static constexpr int L = base::L, warps = base::warps, warp_slices = base::warp_slices;

  struct tile {
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
        if constexpr (warp_slices > 1) {
#pragma unroll
          for (int d = 1; d < warp_slices; d <<= 1) {
            const pair<T> o = shfl_up(x, d * LANES);
            if (warp_slice >= d) x = combine(o, x);
          }
          const pair<T> e = shfl_up(x, LANES);
          if (warp_slice > 0) pre[k] = e;
        }
        if (warp_slice == warp_slices - 1) part[warp][lane * V + k] = x;
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
      for (int k = 0; k < V; ++k) pre[k] = warp_slices > 1 ? combine(earlier[k], pre[k]) : earlier[k];
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
          if (tb + i < T_) store_output<Tuning::streaming_stores, T, V>(h + (tb + i) * h_time, bv[i]);
      }
    }
  };

  static __device__ __forceinline__ void run(const args_type& p, const tile_grid& grid,
                                             const lookback_records<pair<T>>& lb) {
    using trace = typename Tuning::trace;
    constexpr int G = base::channels;
    __shared__ pair<T> pairs[base::shared_pairs];
    auto& part = *reinterpret_cast<partials*>(pairs);
    __shared__ T carry[G];
    const int tid = threadIdx.x;
    const unsigned tile_index = blockIdx.x;
    trace::phase(0);
    const unsigned chunk = tile_index / unsigned(grid.lines);
    const index_t C = p.shape.channels, T_ = p.shape.time;
    const auto q = base::locate(index_t(tile_index) - index_t(chunk) * grid.lines, C);
    const index_t tb = index_t(chunk) * base::steps + (tid / LANES) * L;
    tile x;
    x.load(p.a + q.batch * p.a_strides.batch + q.c, p.a_strides.time, p.b + q.batch * p.b_strides.batch + q.c,
           p.b_strides.time, tb, T_, q.ok);
    early_prefix<pair<T>> early;
    if (tid < G) early = read_early<G>(lb, grid, tile_index, chunk, tid);
    x.fold(part);
    trace::phase(1);
    pair<T> aggregate = identity<T>();
    if (tid < G) aggregate = tile::aggregate(part, tid);
    look_back<affine_scan<T>, G, base::threads, Tuning::lookback_window>(
        lb, grid, tile_index, chunk, aggregate, early,
        [&](int c) { return p.h0 && q.c0 + c < C ? p.h0[q.batch * C + q.c0 + c] : T(0); }, pairs, carry);
    trace::phase(2);
    const bool last_chunk = chunk + 1 == grid.chunks;
    x.store(p.h + q.batch * p.h_strides.batch + q.c, p.h_strides.time, tb, T_, carry, q.ok,
            last_chunk && p.h_final ? p.h_final + q.batch * C + q.c : nullptr);
    trace::phase(3);
  }
};

template <class T, int V, int LANES, class Tuning>
struct channels_agent<scan_direction::backward, T, V, LANES, Tuning> : channels_agent_base<T, V, LANES, Tuning> {
  using base = channels_agent_base<T, V, LANES, Tuning>;
  using args_type = scan_backward_args<real_op<T>>;
  using partials = typename base::partials;
  static constexpr const char* name = "linrec::detail::cuda_scan::channels_agent<backward>";
  static constexpr int L = base::L, warps = base::warps, warp_slices = base::warp_slices, threads = base::threads;

  struct tile {
    // h[t-1] is needed only once the carry is known, so it waits in shared memory (copied
    // asynchronously, step-major across the block), not in registers: that leaves room for
    // L = 8 steps per thread, tiles twice as long and look-back chains half as deep as with
    // three arrays in registers. Faster on the few-sequence backward (H100): docs/notes/cuda_scan.md
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
        if constexpr (warp_slices > 1) {
#pragma unroll
          for (int d = 1; d < warp_slices; d <<= 1) {
            const pair<T> o = shfl_down(x, d * LANES);
            if (warp_slice + d < warp_slices) x = combine(o, x);
          }
          const pair<T> e = shfl_down(x, LANES);
          if (warp_slice + 1 < warp_slices) pre[k] = e;
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
      for (int k = 0; k < V; ++k) pre[k] = warp_slices > 1 ? combine(later[k], pre[k]) : later[k];
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
            store_output<Tuning::streaming_stores, T, V>(db + (tb + i) * db_time, gv[i]);
            store_output<Tuning::streaming_stores, T, V>(da + (tb + i) * da_time, hv[i]);
          }
      }
    }
  };

  static __device__ __forceinline__ void run(const args_type& p, const tile_grid& grid,
                                             const lookback_records<pair<T>>& lb) {
    constexpr int G = base::channels;
    __shared__ pair<T> pairs[base::shared_pairs];
    auto& part = *reinterpret_cast<partials*>(pairs);
    __shared__ T carry[G];
    __shared__ __align__(16) typename tile::h_staging h_staging;
    // Static shared memory stops at 48 KB (look_back_block adds G + threads words).
    static_assert(sizeof(pairs) + sizeof(carry) + sizeof(h_staging) + (G + threads) * 4 <= 48 * 1024,
                  "channel backward tile: shrink L or LANES");
    const int tid = threadIdx.x;
    const unsigned tile_index = blockIdx.x;
    const unsigned chunk = tile_index / unsigned(grid.lines);
    const index_t C = p.shape.channels, T_ = p.shape.time;
    const auto q = base::locate(index_t(tile_index) - index_t(chunk) * grid.lines, C);
    const index_t tb = index_t(grid.chunks - 1 - chunk) * base::steps + (tid / LANES) * L;
    tile x;
    x.load(p.a + q.batch * p.a_strides.batch + q.c, p.a_strides.time, p.h + q.batch * p.h_strides.batch + q.c,
           p.h_strides.time, p.dh + q.batch * p.dh_strides.batch + q.c, p.dh_strides.time, tb, T_, q.ok,
           p.h0 ? p.h0 + q.batch * C + q.c : nullptr, h_staging);
    early_prefix<pair<T>> early;
    if (tid < G) early = read_early<G>(lb, grid, tile_index, chunk, tid);
    x.fold(part);
    pair<T> aggregate = identity<T>();
    if (tid < G) aggregate = tile::aggregate(part, tid);
    look_back<affine_scan<T>, G, threads, Tuning::lookback_window>(
        lb, grid, tile_index, chunk, aggregate, early,
        [&](int c) { return p.dh_final && q.c0 + c < C ? p.dh_final[q.batch * C + q.c0 + c] : T(0); }, pairs, carry);
    x.store(p.da + q.batch * p.da_strides.batch + q.c, p.da_strides.time, p.db + q.batch * p.db_strides.batch + q.c,
            p.db_strides.time, tb, T_, carry, q.ok, p.dh0 ? p.dh0 + q.batch * C + q.c : nullptr);
  }
};

}  // namespace linrec::detail::cuda_scan
