#pragma once
// The staged agent of the CUDA scan: any operator (complex, log-space), any strides. A single
// pass over memory through shared memory, chunk carries from the look-back (cuda_lookback.cuh).
//
// A tile is CHANNELS channels × SLICES·ITEMS time steps of one batch entry (ITEMS = the
// tuning's items). A block
//  1. stages the tile's inputs in shared memory with coalesced loads (time-fastest when the
//     tensor's time stride is 1, channel-fastest otherwise: any strides work);
//  2. lets each thread fold its ITEMS consecutive steps of one channel into a pair
//     (∏ a, local h) and scans those pairs across the SLICES threads of the channel with a
//     CUB warp scan (block scan when one channel fills the block);
//  3. looks back for each channel's carry;
//  4. rescans its steps from the true carry (h = a ⊙ h + b again, from shared memory: each
//     output is the sequential recurrence from an exact starting state) and stores the
//     outputs through shared memory with coalesced stores.
// DRAM sees each input once and each output once, plus a few bytes of carries per tile.
// The backward pass is the same machine run in reverse time on (a[t+1], dh[t]) pairs with
// grad_step in place of step.
#include <cuda_runtime.h>

#include <cstddef>
#include <cub/block/block_scan.cuh>
#include <cub/warp/warp_scan.cuh>

#include "linrec/scan/detail/cuda_lookback.cuh"
#include "linrec/scan/detail/cuda_pair.cuh"
#include "linrec/scan/layout.hpp"
#include "linrec/scan/operators.hpp"

namespace linrec::detail::cuda_scan {

// CHANNELS × SLICES threads; each thread owns ITEMS consecutive steps of one channel.
template <int Channels, int Slices, int Items>
struct staged_tile {
  static constexpr int channels = Channels;
  static constexpr int slices = Slices;
  static constexpr int items = Items;
  static constexpr int threads = channels * slices;
  static constexpr int steps = slices * items;
  // Shared-memory slot of (channel, step): one padding slot after every `items` steps keeps
  // the threads of a warp (which read `items` apart) on different banks; a row holds
  // steps + 1 slots (the backward pass needs a[t0 + steps]).
  static constexpr int row_pitch = slices * (items + 1) + 1;
  static constexpr int tile_slots = channels * row_pitch;
  __device__ static constexpr int slot(int channel, int step) {
    return channel * row_pitch + (step / items) * (items + 1) + step % items;
  }
  static_assert(slices == threads || slices <= 32, "a channel's threads form a logical warp or the whole block");
  static_assert((slices & (slices - 1)) == 0 && (channels & (channels - 1)) == 0, "powers of two");
};

// Where a tile lies.
struct staged_place {
  index_t batch, channel0, time0;  // first element of the tile
  int n_channels, n_steps;         // valid extent (≤ the tile's)
  unsigned chunk;                  // in processing order: 0 first (last in time backward)
};

// Copies times [time_first, time_first + count) of channels [channel0, channel0 + n_channels)
// of one batch entry into slots step_first.. of the tile, coalesced along the tensor's
// contiguous dimension.
template <class Tile, class X>
__device__ __forceinline__ void copy_in(X* tile, const X* src, const strides3& st, const staged_place& g,
                                        index_t time_first, int step_first, int count) {
  const X* base = src + g.batch * st.batch + g.channel0 * st.channel + time_first * st.time;
  const int n = g.n_channels * count;
  if (st.time == 1) {
    if (count == Tile::steps && g.n_channels == Tile::channels) {
#pragma unroll
      for (int i = 0; i < Tile::channels * Tile::steps / Tile::threads; ++i) {
        const int e = i * Tile::threads + int(threadIdx.x);
        const int ch = e / Tile::steps, s = e % Tile::steps;
        tile[Tile::slot(ch, step_first + s)] = base[ch * st.channel + s];
      }
    } else {
#pragma unroll 4
      for (int e = threadIdx.x; e < n; e += Tile::threads) {
        const int ch = e / count, s = e - ch * count;
        tile[Tile::slot(ch, step_first + s)] = base[ch * st.channel + s];
      }
    }
  } else {
    if (count == Tile::steps && g.n_channels == Tile::channels) {
#pragma unroll
      for (int i = 0; i < Tile::channels * Tile::steps / Tile::threads; ++i) {
        const int e = i * Tile::threads + int(threadIdx.x);
        const int s = e / Tile::channels, ch = e % Tile::channels;
        tile[Tile::slot(ch, step_first + s)] = base[ch * st.channel + s * st.time];
      }
    } else {
#pragma unroll 4
      for (int e = threadIdx.x; e < n; e += Tile::threads) {
        const int s = e / g.n_channels, ch = e - s * g.n_channels;
        tile[Tile::slot(ch, step_first + s)] = base[ch * st.channel + s * st.time];
      }
    }
  }
}

// The reverse of copy_in for outputs (slots 0 .. n_steps-1 to times time0 ..). `Y` may be
// narrower than the slot type `X` (log_op's da inside a log_value slot).
template <class Tile, class Y, class X>
__device__ __forceinline__ void copy_out(Y* dst, const strides3& st, const X* tile, const staged_place& g) {
  Y* base = dst + g.batch * st.batch + g.channel0 * st.channel + g.time0 * st.time;
  const int count = g.n_steps, n = g.n_channels * count;
  auto from = [&](int ch, int s) { return *reinterpret_cast<const Y*>(tile + Tile::slot(ch, s)); };
  if (st.time == 1) {
    if (count == Tile::steps && g.n_channels == Tile::channels) {
#pragma unroll
      for (int i = 0; i < Tile::channels * Tile::steps / Tile::threads; ++i) {
        const int e = i * Tile::threads + int(threadIdx.x);
        const int ch = e / Tile::steps, s = e % Tile::steps;
        base[ch * st.channel + s] = from(ch, s);
      }
    } else {
#pragma unroll 4
      for (int e = threadIdx.x; e < n; e += Tile::threads) {
        const int ch = e / count, s = e - ch * count;
        base[ch * st.channel + s] = from(ch, s);
      }
    }
  } else {
    if (count == Tile::steps && g.n_channels == Tile::channels) {
#pragma unroll
      for (int i = 0; i < Tile::channels * Tile::steps / Tile::threads; ++i) {
        const int e = i * Tile::threads + int(threadIdx.x);
        const int s = e / Tile::channels, ch = e % Tile::channels;
        base[ch * st.channel + s * st.time] = from(ch, s);
      }
    } else {
#pragma unroll 4
      for (int e = threadIdx.x; e < n; e += Tile::threads) {
        const int s = e / g.n_channels, ch = e - s * g.n_channels;
        base[ch * st.channel + s * st.time] = from(ch, s);
      }
    }
  }
}

// What both directions' staged agents are.
template <scan_direction D, class Op, int Channels, int Slices, class Tuning>
struct staged_agent_base {
  using tile = staged_tile<Channels, Slices, Tuning::items>;
  using scan_op = operator_scan<Op, D>;
  using pair_type = typename scan_op::pair_type;
  static constexpr int threads = tile::threads;
  static constexpr int min_blocks = Tuning::min_blocks;
  static constexpr int channels = Channels;  // per tile
  static constexpr int steps = tile::steps;
  static index_t lines(const scan_shape& s) { return s.batch * ((s.channels + channels - 1) / channels); }

  // Exclusive scan of the per-thread pairs over the threads of each channel (in processing
  // order = lane order); returns the thread's exclusive prefix and the channel's aggregate.
  using warp_scan = cub::WarpScan<pair_type, (Slices <= 32 ? Slices : 32)>;
  using block_scan = cub::BlockScan<pair_type, threads>;
  union scan_storage {
    typename warp_scan::TempStorage warp[Channels];
    typename block_scan::TempStorage block;
  };
  __device__ __forceinline__ static void scan_slices(scan_storage& tmp, const pair_type& in, pair_type& exclusive,
                                                     pair_type& aggregate) {
    if constexpr (Slices == threads)
      block_scan(tmp.block).ExclusiveScan(in, exclusive, scan_op::identity(), scan_op{}, aggregate);
    else
      warp_scan(tmp.warp[threadIdx.x / Slices]).ExclusiveScan(in, exclusive, scan_op::identity(), scan_op{}, aggregate);
  }

  __device__ __forceinline__ static staged_place locate(const scan_shape& s, const tile_grid& grid,
                                                        unsigned tile_index) {
    staged_place t;
    t.chunk = tile_index / unsigned(grid.lines);
    const index_t line = index_t(tile_index) - index_t(t.chunk) * grid.lines;
    const index_t groups_per_batch = (s.channels + Channels - 1) / Channels;
    t.batch = line / groups_per_batch;
    t.channel0 = (line - t.batch * groups_per_batch) * Channels;
    const index_t chunk_in_time = D == scan_direction::backward ? grid.chunks - 1 - t.chunk : t.chunk;
    t.time0 = chunk_in_time * tile::steps;
    t.n_channels = int(min(index_t(Channels), s.channels - t.channel0));
    t.n_steps = int(min(index_t(tile::steps), s.time - t.time0));
    return t;
  }
};

template <scan_direction D, class Op, int Channels, int Slices, class Tuning>
struct staged_agent;

// Forward: h[t] = a[t] ⊙ h[t-1] + b[t] over one tile.
template <class Op, int Channels, int Slices, class Tuning>
struct staged_agent<scan_direction::forward, Op, Channels, Slices, Tuning>
    : staged_agent_base<scan_direction::forward, Op, Channels, Slices, Tuning> {
  using base = staged_agent_base<scan_direction::forward, Op, Channels, Slices, Tuning>;
  using args_type = scan_forward_args<Op>;
  using tile = typename base::tile;
  using scan_op = typename base::scan_op;
  using pair_type = typename base::pair_type;
  static constexpr const char* name = "linrec::detail::cuda_scan::staged_agent<forward>";
  static constexpr std::size_t dynamic_smem =
      std::size_t(tile::tile_slots) * (sizeof(typename Op::decay_type) + sizeof(typename Op::value_type));

  static __device__ __forceinline__ void run(const args_type& p, const tile_grid& grid,
                                             const lookback_records<pair_type>& lb) {
    using A = typename Op::decay_type;
    using V = typename Op::value_type;
    constexpr int G = Channels;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    A* a_tile = reinterpret_cast<A*>(smem_raw);
    V* b_tile = reinterpret_cast<V*>(smem_raw + sizeof(A) * tile::tile_slots);  // b in, h out
    __shared__ typename base::scan_storage scan_storage;
    __shared__ pair_type aggregate[G];
    __shared__ V carry[G];
    __shared__ pair_type lookback_scratch[G > 1 ? tile::threads : 1];

    const unsigned tile_index = blockIdx.x;
    const staged_place g = base::locate(p.shape, grid, tile_index);
    early_prefix<pair_type> early;
    if (int(threadIdx.x) < G) early = read_early<G>(lb, grid, tile_index, g.chunk, threadIdx.x);
    copy_in<tile>(a_tile, p.a, p.a_strides, g, g.time0, 0, g.n_steps);
    copy_in<tile>(b_tile, p.b, p.b_strides, g, g.time0, 0, g.n_steps);
    __syncthreads();

    const int channel = threadIdx.x / Slices, slice = threadIdx.x % Slices;
    const int step0 = slice * tile::items;
    const bool active = channel < g.n_channels;
    // Fold this thread's steps: (∏ a, h from zero). Steps past the end act as the identity.
    pair_type local = scan_op::identity();
    if (active) {
#pragma unroll
      for (int i = 0; i < tile::items; ++i)
        if (step0 + i < g.n_steps) {
          const A a = a_tile[tile::slot(channel, step0 + i)];
          local = {Op::compose(local.a, a), Op::step(a, local.h, b_tile[tile::slot(channel, step0 + i)])};
        }
    }
    pair_type exclusive, channel_total;
    base::scan_slices(scan_storage, local, exclusive, channel_total);
    if (slice == 0) aggregate[channel] = channel_total;
    __syncthreads();
    const index_t row0 = g.batch * p.shape.channels + g.channel0;
    look_back<scan_op, G, tile::threads, Tuning::lookback_window>(
        lb, grid, tile_index, g.chunk, int(threadIdx.x) < G ? aggregate[threadIdx.x] : scan_op::identity(), early,
        [&](int c) { return (p.h0 && c < g.n_channels) ? p.h0[row0 + c] : Op::zero_value(); }, lookback_scratch, carry);

    // Rescan from the exact state before this thread's first step.
    if (active) {
      V h = Op::step(exclusive.a, carry[channel], exclusive.h);
      const bool last_chunk = g.chunk + 1 == grid.chunks;
#pragma unroll
      for (int i = 0; i < tile::items; ++i)
        if (step0 + i < g.n_steps) {
          const int s = tile::slot(channel, step0 + i);
          h = Op::step(a_tile[s], h, b_tile[s]);
          b_tile[s] = h;
          if (last_chunk && step0 + i == g.n_steps - 1 && p.h_final) p.h_final[row0 + channel] = h;
        }
    }
    __syncthreads();
    copy_out<tile>(p.h, p.h_strides, b_tile, g);
  }
};

// Backward over one tile, reverse time: g[t] = grad_step(a[t+1], g[t+1], dh[t]),
// db[t] = g[t], da[t] = decay_grad(g[t], h[t-1], a[t]); dh0 = grad_step(a[0], g[0], 0).
template <class Op, int Channels, int Slices, class Tuning>
struct staged_agent<scan_direction::backward, Op, Channels, Slices, Tuning>
    : staged_agent_base<scan_direction::backward, Op, Channels, Slices, Tuning> {
  using base = staged_agent_base<scan_direction::backward, Op, Channels, Slices, Tuning>;
  using args_type = scan_backward_args<Op>;
  using tile = typename base::tile;
  using scan_op = typename base::scan_op;
  using pair_type = typename base::pair_type;
  static constexpr const char* name = "linrec::detail::cuda_scan::staged_agent<backward>";
  static constexpr std::size_t dynamic_smem =
      std::size_t(tile::tile_slots) *
      (sizeof(typename Op::decay_type) + sizeof(typename Op::value_type) + sizeof(typename Op::grad_type));

  static __device__ __forceinline__ void run(const args_type& p, const tile_grid& grid,
                                             const lookback_records<pair_type>& lb) {
    using A = typename Op::decay_type;
    using V = typename Op::value_type;
    using Gr = typename Op::grad_type;
    using DA = typename Op::decay_grad_type;
    constexpr int G = Channels;
    static_assert(sizeof(DA) <= sizeof(V) && alignof(DA) <= alignof(V), "da is staged in h's slots");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    A* a_tile = reinterpret_cast<A*>(smem_raw);                                                 // a[t0 .. t0+steps]
    V* h_tile = reinterpret_cast<V*>(smem_raw + sizeof(A) * tile::tile_slots);                  // h[t-1] in, da out
    Gr* g_tile = reinterpret_cast<Gr*>(smem_raw + (sizeof(A) + sizeof(V)) * tile::tile_slots);  // dh in, db out
    __shared__ typename base::scan_storage scan_storage;
    __shared__ pair_type aggregate[G];
    __shared__ Gr carry[G];
    __shared__ pair_type lookback_scratch[G > 1 ? tile::threads : 1];

    const unsigned tile_index = blockIdx.x;
    const staged_place g = base::locate(p.shape, grid, tile_index);
    const index_t row0 = g.batch * p.shape.channels + g.channel0;
    const bool last_in_time = g.time0 + g.n_steps == p.shape.time;
    early_prefix<pair_type> early;
    if (int(threadIdx.x) < G) early = read_early<G>(lb, grid, tile_index, g.chunk, threadIdx.x);
    // a over [t0, t0 + n_steps], with a[T] = identity (the extra column below)
    copy_in<tile>(a_tile, p.a, p.a_strides, g, g.time0, 0, g.n_steps);
    // h over [t0 - 1, t0 + n_steps - 1), with h[-1] = h0
    if (g.time0 > 0)
      copy_in<tile>(h_tile, p.h, p.h_strides, g, g.time0 - 1, 0, g.n_steps);
    else
      copy_in<tile>(h_tile, p.h, p.h_strides, g, 0, 1, g.n_steps - 1);
    copy_in<tile>(g_tile, p.dh, p.dh_strides, g, g.time0, 0, g.n_steps);
    if (int(threadIdx.x) < g.n_channels) {
      const index_t next_time = g.time0 + g.n_steps;
      a_tile[tile::slot(threadIdx.x, g.n_steps)] =
          last_in_time ? Op::decay_identity()
                       : p.a[g.batch * p.a_strides.batch + (g.channel0 + threadIdx.x) * p.a_strides.channel +
                             next_time * p.a_strides.time];
      if (g.time0 == 0) h_tile[tile::slot(threadIdx.x, 0)] = p.h0 ? p.h0[row0 + threadIdx.x] : Op::zero_value();
    }
    __syncthreads();

    // Lanes run in processing order: the first lane of a channel owns its last steps.
    const int channel = threadIdx.x / Slices, slice = Slices - 1 - int(threadIdx.x % Slices);
    const int step0 = slice * tile::items;
    const bool active = channel < g.n_channels;
    pair_type local = scan_op::identity();
    if (active) {
#pragma unroll
      for (int i = tile::items - 1; i >= 0; --i)
        if (step0 + i < g.n_steps) {
          const A a_next = a_tile[tile::slot(channel, step0 + i + 1)];
          local = {Op::compose(local.a, a_next),
                   Op::grad_step(a_next, local.h, g_tile[tile::slot(channel, step0 + i)])};
        }
    }
    pair_type exclusive, channel_total;
    base::scan_slices(scan_storage, local, exclusive, channel_total);
    if (threadIdx.x % Slices == 0) aggregate[channel] = channel_total;
    __syncthreads();
    look_back<scan_op, G, tile::threads, Tuning::lookback_window>(
        lb, grid, tile_index, g.chunk, int(threadIdx.x) < G ? aggregate[threadIdx.x] : scan_op::identity(), early,
        [&](int c) { return (p.dh_final && c < g.n_channels) ? p.dh_final[row0 + c] : Op::zero_grad(); },
        lookback_scratch, carry);

    if (active) {
      Gr grad = Op::grad_step(exclusive.a, carry[channel], exclusive.h);
#pragma unroll
      for (int i = tile::items - 1; i >= 0; --i)
        if (step0 + i < g.n_steps) {
          const int s = tile::slot(channel, step0 + i);
          const A a_t = a_tile[s];
          grad = Op::grad_step(a_tile[tile::slot(channel, step0 + i + 1)], grad, g_tile[s]);
          g_tile[s] = grad;
          const DA da = Op::decay_grad(grad, h_tile[s], a_t);
          *reinterpret_cast<DA*>(h_tile + s) = da;
          if (g.time0 == 0 && step0 + i == 0 && p.dh0)
            p.dh0[row0 + channel] = Op::grad_step(a_t, grad, Op::zero_grad());
        }
    }
    __syncthreads();
    copy_out<tile>(p.db, p.db_strides, g_tile, g);
    copy_out<tile>(p.da, p.da_strides, h_tile, g);
  }
};

}  // namespace linrec::detail::cuda_scan
