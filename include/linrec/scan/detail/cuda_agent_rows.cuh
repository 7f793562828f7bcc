#pragma once
// The row agent of the CUDA scan: register tiles along time, for real operators where time is
// contiguous ([B,C,T], or [B,T,1]). One block scans one tile of one row (row = batch·C +
// channel) in a single pass: each input read once into registers, each output written once
// from registers, the carry from the tiles before by the look-back (cuda_lookback.cuh).
//
// A tile is SUB·256·V consecutive steps (SUB = the tuning's items). Thread `tid` owns, in each
// of SUB sub-tiles, the V consecutive steps at (i·256 + tid)·V, loaded as one 16-byte vector
// (coalesced across the warp). It folds its V steps into a pair (∏a, h from zero); a
// warp-shuffle scan over lanes and a pass over the per-warp totals in shared memory give each
// thread the exclusive prefix of its steps within the tile; warp 0 looks back; each thread
// then writes h = a⊙h + b from the exact carry, from registers.
//
// Backward is the same in reverse time on the pairs (a[t+1], dh[t]):
//   g[t] = a[t+1]·g[t+1] + dh[t],  db[t] = g[t],  da[t] = g[t]·h[t-1],  dh0 = a[0]·g[0];
// a[t+1] at a thread's edge is loaded a second time.
#include <cuda_runtime.h>

#include <cstddef>

#include "linrec/scan/detail/cuda_lookback.cuh"
#include "linrec/scan/detail/cuda_pair.cuh"
#include "linrec/scan/detail/cuda_vector.cuh"
#include "linrec/scan/layout.hpp"
#include "linrec/scan/operators.hpp"

namespace linrec::detail::cuda_scan {

// Offset of row (= batch·C + channel) in a tensor with strides st.
__device__ __forceinline__ index_t row_offset(const strides3& st, index_t row, index_t C) {
  const index_t batch = row / C;
  return batch * st.batch + (row - batch * C) * st.channel;
}

// What both directions' row agents are: one channel per tile, rows as lines.
template <class T, int V, class Tuning>
struct rows_agent_base {
  using pair_type = pair<T>;
  using scan_op = affine_scan<T>;
  static constexpr int threads = 256;
  static constexpr int warps = threads / 32;
  static constexpr int min_blocks = Tuning::min_blocks;
  static constexpr int sub_tiles = Tuning::items;
  static constexpr int channels = 1;  // per tile
  static constexpr int steps = sub_tiles * threads * V;
  static constexpr std::size_t dynamic_smem = 0;
  static index_t lines(const scan_shape& s) { return s.batch * s.channels; }
};

template <scan_direction D, class T, int V, class Tuning>
struct rows_agent;

template <class T, int V, class Tuning>
struct rows_agent<scan_direction::forward, T, V, Tuning> : rows_agent_base<T, V, Tuning> {
  using base = rows_agent_base<T, V, Tuning>;
  using args_type = scan_forward_args<real_op<T>>;
  static constexpr const char* name = "linrec::detail::cuda_scan::rows_agent<forward>";
  static constexpr int SUB = base::sub_tiles;
  static constexpr int threads = base::threads;
  static constexpr int warps = base::warps;

  // One tile in registers: load, scan within the tile, store from the carry.
  struct tile {
    using warp_totals = pair<T>[SUB][warps];
    T av[SUB][V], bv[SUB][V];
    pair<T> pre[SUB];  // before this thread's V steps of sub-tile i, within the tile
    pair<T> total;     // the whole tile, in every thread

    __device__ __forceinline__ void load(const T* a, const T* b, index_t t0, index_t T_) {
      const int tid = threadIdx.x;
#pragma unroll
      for (int i = 0; i < SUB; ++i) {
        const index_t e = t0 + index_t(i * threads + tid) * V;
        if (e + V <= T_) {
          load_vec<T, V>(av[i], a + e);
          load_vec<T, V>(bv[i], b + e);
        } else {
#pragma unroll
          for (int k = 0; k < V; ++k) {
            av[i][k] = e + k < T_ ? a[e + k] : T(1);
            bv[i][k] = e + k < T_ ? b[e + k] : T(0);
          }
        }
      }
    }

    // Contains a barrier after writing `totals` and reads it after.
    __device__ __forceinline__ void scan(warp_totals& totals) {
      const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
      pair<T> inc[SUB], lane_ex[SUB];
#pragma unroll
      for (int i = 0; i < SUB; ++i) {
        pair<T> x{av[i][0], bv[i][0]};
#pragma unroll
        for (int k = 1; k < V; ++k) x = {x.a * av[i][k], av[i][k] * x.h + bv[i][k]};
        inc[i] = x;
      }
#pragma unroll
      for (int off = 1; off < 32; off <<= 1)
#pragma unroll
        for (int i = 0; i < SUB; ++i) {
          const pair<T> o = shfl_up(inc[i], off);
          if (lane >= off) inc[i] = combine(o, inc[i]);
        }
#pragma unroll
      for (int i = 0; i < SUB; ++i) {
        lane_ex[i] = shfl_up(inc[i], 1);
        if (lane == 0) lane_ex[i] = identity<T>();
        if (lane == 31) totals[i][warp] = inc[i];
      }
      __syncthreads();
      pair<T> run = identity<T>();
#pragma unroll
      for (int i = 0; i < SUB; ++i)
#pragma unroll
        for (int w = 0; w < warps; ++w) {
          if (w == warp) pre[i] = combine(run, lane_ex[i]);
          run = combine(run, totals[i][w]);
        }
      total = run;
    }

    // h_final: where the row's last state goes, or null where this is not the row's last tile.
    __device__ __forceinline__ void store(T* h, index_t t0, index_t T_, T carry, T* h_final) {
      const int tid = threadIdx.x;
#pragma unroll
      for (int i = 0; i < SUB; ++i) {
        const index_t e = t0 + index_t(i * threads + tid) * V;
        T state = pre[i].a * carry + pre[i].h;
#pragma unroll
        for (int k = 0; k < V; ++k) {
          state = av[i][k] * state + bv[i][k];
          bv[i][k] = state;
        }
        if (e + V <= T_) {
          store_output<Tuning::streaming_stores, T, V>(h + e, bv[i]);
        } else {
#pragma unroll
          for (int k = 0; k < V; ++k)
            if (e + k < T_) h[e + k] = bv[i][k];
        }
        if (h_final) {
#pragma unroll
          for (int k = 0; k < V; ++k)
            if (e + k == T_ - 1) *h_final = bv[i][k];
        }
      }
    }
  };

  static __device__ __forceinline__ void run(const args_type& p, const tile_grid& grid,
                                             const lookback_records<pair<T>>& lb) {
    using trace = typename Tuning::trace;
    __shared__ pair<T> warp_total[SUB][warps];
    __shared__ T carry[1];
    const unsigned tile_index = blockIdx.x;
    trace::phase(0);
    const unsigned chunk = tile_index / unsigned(grid.lines);
    const index_t row = index_t(tile_index) - index_t(chunk) * grid.lines;
    const index_t C = p.shape.channels, T_ = p.shape.time;
    const index_t t0 = index_t(chunk) * base::steps;
    tile x;
    x.load(p.a + row_offset(p.a_strides, row, C), p.b + row_offset(p.b_strides, row, C), t0, T_);
    early_prefix<pair<T>> early;
    if (threadIdx.x == 0) early = read_early<1>(lb, grid, tile_index, chunk, 0);
    x.scan(warp_total);
    trace::phase(1);
    look_back<affine_scan<T>, 1, threads, Tuning::lookback_window>(
        lb, grid, tile_index, chunk, x.total, early, [&](int) { return p.h0 ? p.h0[row] : T(0); }, nullptr, carry);
    trace::phase(2);
    const bool last_chunk = chunk + 1 == grid.chunks;
    x.store(p.h + row_offset(p.h_strides, row, C), t0, T_, carry[0],
            last_chunk && p.h_final ? p.h_final + row : nullptr);
    trace::phase(3);
  }
};

template <class T, int V, class Tuning>
struct rows_agent<scan_direction::backward, T, V, Tuning> : rows_agent_base<T, V, Tuning> {
  using base = rows_agent_base<T, V, Tuning>;
  using args_type = scan_backward_args<real_op<T>>;
  static constexpr const char* name = "linrec::detail::cuda_scan::rows_agent<backward>";
  static constexpr int SUB = base::sub_tiles;
  static constexpr int threads = base::threads;
  static constexpr int warps = base::warps;

// a_next of step k of sub-tile i: av[i][k+1], or a_after[i] for the last. A macro, not a
// member function: with (i, k) as arguments ptxas placed av in local memory.
#define LINREC_A_NEXT(i, k) ((k) + 1 < V ? av[i][(k) + 1 < V ? (k) + 1 : 0] : a_after[i])
  struct tile {
    using warp_totals = pair<T>[SUB][warps];
    T av[SUB][V], hv[SUB][V], gv[SUB][V], a_after[SUB], h_before[SUB];
    pair<T> pre[SUB];  // after this thread's V steps of sub-tile i (processing order), within the tile
    pair<T> total;

    __device__ __forceinline__ void load(const T* a, const T* h, const T* dh, index_t t0, index_t T_, T h_initial) {
      const int tid = threadIdx.x;
#pragma unroll
      for (int i = 0; i < SUB; ++i) {
        const index_t e = t0 + index_t(i * threads + tid) * V;
        if (e + V <= T_) {
          load_vec<T, V>(av[i], a + e);
          load_vec<T, V>(hv[i], h + e);
          load_vec<T, V>(gv[i], dh + e);
        } else {
#pragma unroll
          for (int k = 0; k < V; ++k) {
            av[i][k] = e + k < T_ ? a[e + k] : T(1);
            hv[i][k] = e + k < T_ ? h[e + k] : T(0);
            gv[i][k] = e + k < T_ ? dh[e + k] : T(0);
          }
        }
        a_after[i] = e + V < T_ ? a[e + V] : T(1);
        h_before[i] = e > 0 ? (e - 1 < T_ ? h[e - 1] : T(0)) : h_initial;
      }
    }

    // Barrier inside, as the forward tile's scan.
    __device__ __forceinline__ void scan(warp_totals& totals) {
      const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
      pair<T> inc[SUB], lane_ex[SUB];
#pragma unroll
      for (int i = 0; i < SUB; ++i) {
        pair<T> x{LINREC_A_NEXT(i, V - 1), gv[i][V - 1]};
#pragma unroll
        for (int k = V - 2; k >= 0; --k) x = {x.a * LINREC_A_NEXT(i, k), LINREC_A_NEXT(i, k) * x.h + gv[i][k]};
        inc[i] = x;
      }
      // Processing order is reverse time: lane 31 first.
#pragma unroll
      for (int off = 1; off < 32; off <<= 1)
#pragma unroll
        for (int i = 0; i < SUB; ++i) {
          const pair<T> o = shfl_down(inc[i], off);
          if (lane + off < 32) inc[i] = combine(o, inc[i]);
        }
#pragma unroll
      for (int i = 0; i < SUB; ++i) {
        lane_ex[i] = shfl_down(inc[i], 1);
        if (lane == 31) lane_ex[i] = identity<T>();
        if (lane == 0) totals[i][warp] = inc[i];
      }
      __syncthreads();
      pair<T> run = identity<T>();
#pragma unroll
      for (int i = SUB - 1; i >= 0; --i)
#pragma unroll
        for (int w = warps - 1; w >= 0; --w) {
          if (w == warp) pre[i] = combine(run, lane_ex[i]);
          run = combine(run, totals[i][w]);
        }
      total = run;
    }

    // carry: the gradient state after the tile (later in time); dh0: the row's dh0 or null.
    __device__ __forceinline__ void store(T* da, T* db, index_t t0, index_t T_, T carry, T* dh0) {
      const int tid = threadIdx.x;
#pragma unroll
      for (int i = 0; i < SUB; ++i) {
        const index_t e = t0 + index_t(i * threads + tid) * V;
        T grad = pre[i].a * carry + pre[i].h;  // g after this thread's last step
#pragma unroll
        for (int k = V - 1; k >= 0; --k) {
          grad = LINREC_A_NEXT(i, k) * grad + gv[i][k];
          gv[i][k] = grad;
          hv[i][k] = grad * (k > 0 ? hv[i][k > 0 ? k - 1 : 0] : h_before[i]);  // k-1 is read before written
        }
        if (e + V <= T_) {
          store_output<Tuning::streaming_stores, T, V>(db + e, gv[i]);
          store_output<Tuning::streaming_stores, T, V>(da + e, hv[i]);
        } else {
#pragma unroll
          for (int k = 0; k < V; ++k)
            if (e + k < T_) {
              db[e + k] = gv[i][k];
              da[e + k] = hv[i][k];
            }
        }
        if (e == 0 && dh0) *dh0 = av[i][0] * gv[i][0];
      }
    }
  };
#undef LINREC_A_NEXT

  static __device__ __forceinline__ void run(const args_type& p, const tile_grid& grid,
                                             const lookback_records<pair<T>>& lb) {
    __shared__ pair<T> warp_total[SUB][warps];
    __shared__ T carry[1];
    const unsigned tile_index = blockIdx.x;
    const unsigned chunk = tile_index / unsigned(grid.lines);
    const index_t row = index_t(tile_index) - index_t(chunk) * grid.lines;
    const index_t C = p.shape.channels, T_ = p.shape.time;
    const index_t t0 = index_t(grid.chunks - 1 - chunk) * base::steps;
    tile x;
    x.load(p.a + row_offset(p.a_strides, row, C), p.h + row_offset(p.h_strides, row, C),
           p.dh + row_offset(p.dh_strides, row, C), t0, T_, p.h0 ? p.h0[row] : T(0));
    early_prefix<pair<T>> early;
    if (threadIdx.x == 0) early = read_early<1>(lb, grid, tile_index, chunk, 0);
    x.scan(warp_total);
    look_back<affine_scan<T>, 1, threads, Tuning::lookback_window>(
        lb, grid, tile_index, chunk, x.total, early, [&](int) { return p.dh_final ? p.dh_final[row] : T(0); }, nullptr,
        carry);
    x.store(p.da + row_offset(p.da_strides, row, C), p.db + row_offset(p.db_strides, row, C), t0, T_, carry[0],
            p.dh0 ? p.dh0 + row : nullptr);
  }
};

}  // namespace linrec::detail::cuda_scan
