#pragma once
// The time-parallel CUDA scan: a single pass over memory with chunk carries passed between
// blocks by decoupled look-back.
//
// A tile is `channels` channels × `steps` time steps of one batch entry. A block
//  1. stages the tile's inputs in shared memory with coalesced loads (time-fastest when the
//     tensor's time stride is 1, channel-fastest otherwise: any strides work);
//  2. lets each thread fold its `items` consecutive steps of one channel into a pair
//     (∏ a, local h) and scans those pairs across the `slices` threads of the channel with a
//     CUB warp scan (block scan when one channel fills the block), operator `combine` below;
//  3. publishes the tile's aggregate, looks back over its predecessors' aggregates/inclusive
//     prefixes (tiles take their index from an atomic counter, so every predecessor has
//     started and the look-back cannot deadlock), and publishes its own inclusive prefix;
//  4. rescans its steps from the true carry (h = a ⊙ h + b again, from shared memory: each
//     output is the sequential recurrence from an exact starting state) and stores the
//     outputs through shared memory with coalesced stores.
// DRAM sees each input once and each output once, plus a few bytes of carries per tile.
// The backward pass is the same machine run in reverse time on (a[t+1], dh[t]) pairs with
// grad_step in place of step.
#include <cuda_runtime.h>

#include <cub/block/block_scan.cuh>
#include <cub/warp/warp_scan.cuh>
#include <cuda/atomic>

#include "linrec/scan/layout.hpp"
#include "linrec/scan/operators.hpp"

namespace linrec::detail::cuda_chunked {

// ChannelsPerTile × ThreadsPerChannel threads; each thread owns Items consecutive steps.
template <int ChannelsPerTile, int ThreadsPerChannel, int Items>
struct tile_config {
  static constexpr int channels = ChannelsPerTile;
  static constexpr int slices = ThreadsPerChannel;
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

// A scan element: the product of the decays over a span and the state the span produces
// from a zero state (forward) — or the gradient it produces (backward).
template <class A, class V>
struct carry_pair {
  A decay;
  V value;
};

// e1 ∘ e2 (e1 first in processing order) = (A1 ⊙ A2, A2 ⊙ V1 + V2); backward with conj(A2).
template <class Op, bool Backward>
struct combine {
  using pair = carry_pair<typename Op::decay_type,
                          std::conditional_t<Backward, typename Op::grad_type, typename Op::value_type>>;
  __device__ __forceinline__ static auto apply(typename Op::decay_type a, const decltype(pair::value)& carry,
                                               const decltype(pair::value)& local) {
    if constexpr (Backward)
      return Op::grad_step(a, carry, local);
    else
      return Op::step(a, carry, local);
  }
  __device__ __forceinline__ pair operator()(const pair& e1, const pair& e2) const {
    return {Op::compose(e1.decay, e2.decay), apply(e2.decay, e1.value, e2.value)};
  }
  __device__ __forceinline__ static pair identity() {
    if constexpr (Backward)
      return {Op::decay_identity(), Op::zero_grad()};
    else
      return {Op::decay_identity(), Op::zero_value()};
  }
};

// Scratch of the look-back: per tile a status flag (0 = nothing yet, 1 = aggregate,
// 2 = inclusive prefix) and per tile and channel the two pairs. `next_tile` hands out tile
// indices in launch order. Flags and the counter are zeroed before each launch.
template <class Pair>
struct lookback_state {
  unsigned* next_tile = nullptr;
  unsigned* flags = nullptr;
  Pair* aggregates = nullptr;
  Pair* inclusive = nullptr;
};

// Pairs cross blocks through L2 only (.cg): a stale L1 line of another SM's record must
// never be read.
template <class Pair>
__device__ __forceinline__ void store_pair_cg(Pair* dst, const Pair& value) {
  static_assert(sizeof(Pair) % 4 == 0);
  const unsigned* from = reinterpret_cast<const unsigned*>(&value);
  unsigned* to = reinterpret_cast<unsigned*>(dst);
#pragma unroll
  for (int i = 0; i < int(sizeof(Pair) / 4); ++i) __stcg(to + i, from[i]);
}
template <class Pair>
__device__ __forceinline__ Pair load_pair_cg(const Pair* src) {
  Pair value;
  unsigned* to = reinterpret_cast<unsigned*>(&value);
  const unsigned* from = reinterpret_cast<const unsigned*>(src);
#pragma unroll
  for (int i = 0; i < int(sizeof(Pair) / 4); ++i) to[i] = __ldcg(from + i);
  return value;
}

// Where a tile lies. Tiles are numbered in processing order, channel groups fastest:
// index = chunk_in_order · groups + group.
struct tile_geometry {
  index_t batch, channel0, time0;  // first element of the tile
  int n_channels, n_steps;         // valid extent (≤ config)
  int chunk_in_order;              // 0 for the first chunk processed (last in time backward)
  index_t group;
};

struct grid_shape {
  index_t time, channels;
  index_t channel_groups;  // ceil(channels / tile channels)
  index_t groups;          // batch · channel_groups
  index_t chunks;          // ceil(time / tile steps)
};

template <class Cfg, bool Backward>
__device__ __forceinline__ tile_geometry locate(const grid_shape& g, unsigned tile) {
  tile_geometry t;
  t.chunk_in_order = int(tile / g.groups);
  t.group = index_t(tile) - index_t(t.chunk_in_order) * g.groups;
  t.batch = t.group / g.channel_groups;
  t.channel0 = (t.group - t.batch * g.channel_groups) * Cfg::channels;
  const index_t chunk = Backward ? g.chunks - 1 - t.chunk_in_order : t.chunk_in_order;
  t.time0 = chunk * Cfg::steps;
  t.n_channels = int(min(index_t(Cfg::channels), g.channels - t.channel0));
  t.n_steps = int(min(index_t(Cfg::steps), g.time - t.time0));
  return t;
}

// Copies times [time_first, time_first + count) of channels [channel0, channel0 + n_channels)
// of one batch entry into slots step_first.. of the tile, coalesced along the tensor's
// contiguous dimension.
template <class Cfg, class X>
__device__ __forceinline__ void copy_in(X* tile, const X* src, const strides3& st, const tile_geometry& g,
                                        index_t time_first, int step_first, int count) {
  const X* base = src + g.batch * st.batch + g.channel0 * st.channel + time_first * st.time;
  const int n = g.n_channels * count;
  if (st.time == 1) {
    if (count == Cfg::steps && g.n_channels == Cfg::channels) {
#pragma unroll
      for (int i = 0; i < Cfg::channels * Cfg::steps / Cfg::threads; ++i) {
        const int e = i * Cfg::threads + int(threadIdx.x);
        const int ch = e / Cfg::steps, s = e % Cfg::steps;
        tile[Cfg::slot(ch, step_first + s)] = base[ch * st.channel + s];
      }
    } else {
#pragma unroll 4
      for (int e = threadIdx.x; e < n; e += Cfg::threads) {
        const int ch = e / count, s = e - ch * count;
        tile[Cfg::slot(ch, step_first + s)] = base[ch * st.channel + s];
      }
    }
  } else {
    if (count == Cfg::steps && g.n_channels == Cfg::channels) {
#pragma unroll
      for (int i = 0; i < Cfg::channels * Cfg::steps / Cfg::threads; ++i) {
        const int e = i * Cfg::threads + int(threadIdx.x);
        const int s = e / Cfg::channels, ch = e % Cfg::channels;
        tile[Cfg::slot(ch, step_first + s)] = base[ch * st.channel + s * st.time];
      }
    } else {
#pragma unroll 4
      for (int e = threadIdx.x; e < n; e += Cfg::threads) {
        const int s = e / g.n_channels, ch = e - s * g.n_channels;
        tile[Cfg::slot(ch, step_first + s)] = base[ch * st.channel + s * st.time];
      }
    }
  }
}

// The reverse of copy_in for outputs (slots 0 .. n_steps-1 to times time0 ..). `Y` may be
// narrower than the slot type `X` (log_op's da inside a log_value slot).
template <class Cfg, class Y, class X>
__device__ __forceinline__ void copy_out(Y* dst, const strides3& st, const X* tile, const tile_geometry& g) {
  Y* base = dst + g.batch * st.batch + g.channel0 * st.channel + g.time0 * st.time;
  const int count = g.n_steps, n = g.n_channels * count;
  auto from = [&](int ch, int s) { return *reinterpret_cast<const Y*>(tile + Cfg::slot(ch, s)); };
  if (st.time == 1) {
    if (count == Cfg::steps && g.n_channels == Cfg::channels) {
#pragma unroll
      for (int i = 0; i < Cfg::channels * Cfg::steps / Cfg::threads; ++i) {
        const int e = i * Cfg::threads + int(threadIdx.x);
        const int ch = e / Cfg::steps, s = e % Cfg::steps;
        base[ch * st.channel + s] = from(ch, s);
      }
    } else {
#pragma unroll 4
      for (int e = threadIdx.x; e < n; e += Cfg::threads) {
        const int ch = e / count, s = e - ch * count;
        base[ch * st.channel + s] = from(ch, s);
      }
    }
  } else {
    if (count == Cfg::steps && g.n_channels == Cfg::channels) {
#pragma unroll
      for (int i = 0; i < Cfg::channels * Cfg::steps / Cfg::threads; ++i) {
        const int e = i * Cfg::threads + int(threadIdx.x);
        const int s = e / Cfg::channels, ch = e % Cfg::channels;
        base[ch * st.channel + s * st.time] = from(ch, s);
      }
    } else {
#pragma unroll 4
      for (int e = threadIdx.x; e < n; e += Cfg::threads) {
        const int s = e / g.n_channels, ch = e - s * g.n_channels;
        base[ch * st.channel + s * st.time] = from(ch, s);
      }
    }
  }
}

// Exclusive scan of the per-thread pairs over the threads of each channel (in processing
// order = lane order); returns the thread's exclusive prefix and the channel's aggregate.
template <class Cfg, class Combine, class Pair>
struct slice_scan {
  using warp_scan = cub::WarpScan<Pair, (Cfg::slices <= 32 ? Cfg::slices : 32)>;
  using block_scan = cub::BlockScan<Pair, Cfg::threads>;
  union storage {
    typename warp_scan::TempStorage warp[Cfg::channels];
    typename block_scan::TempStorage block;
  };
  __device__ __forceinline__ static void run(storage& tmp, const Pair& in, Pair& exclusive, Pair& aggregate) {
    if constexpr (Cfg::slices == Cfg::threads)
      block_scan(tmp.block).ExclusiveScan(in, exclusive, Combine::identity(), Combine{}, aggregate);
    else
      warp_scan(tmp.warp[threadIdx.x / Cfg::slices])
          .ExclusiveScan(in, exclusive, Combine::identity(), Combine{}, aggregate);
  }
};

__device__ __forceinline__ unsigned load_flag_acquire(unsigned* flag) {
  return ::cuda::atomic_ref<unsigned, ::cuda::thread_scope_device>(*flag).load(::cuda::memory_order_acquire);
}
__device__ __forceinline__ void store_flag_release(unsigned* flag, unsigned value) {
  ::cuda::atomic_ref<unsigned, ::cuda::thread_scope_device>(*flag).store(value, ::cuda::memory_order_release);
}

// Step 3: the carry into each channel of this tile, written to carry[channel].
// `aggregate[ch]` holds the tile's pairs, `initial(ch)` the state before the first chunk.
template <class Cfg, class Combine, class Pair, class Initial>
__device__ __forceinline__ void look_back(const lookback_state<Pair>& state, const grid_shape& grid,
                                          const tile_geometry& g, unsigned tile, const Pair* aggregate,
                                          decltype(Pair::value)* carry, Initial initial) {
  __shared__ unsigned flag_seen;
  const int tid = threadIdx.x;
  const bool single_chunk = grid.chunks == 1;
  if (g.chunk_in_order == 0) {
    if (tid < Cfg::channels) {
      const Pair start{Combine::identity().decay, initial(tid)};
      carry[tid] = start.value;
      if (!single_chunk) {
        store_pair_cg(state.inclusive + index_t(tile) * Cfg::channels + tid, Combine{}(start, aggregate[tid]));
        __threadfence();
      }
    }
    __syncthreads();
    if (!single_chunk && tid == 0) store_flag_release(state.flags + tile, 2u);
    return;
  }
  if (tid < Cfg::channels) {
    store_pair_cg(state.aggregates + index_t(tile) * Cfg::channels + tid, aggregate[tid]);
    __threadfence();
  }
  __syncthreads();
  if (tid == 0) store_flag_release(state.flags + tile, 1u);

  Pair exclusive = Combine::identity();  // of the predecessors seen so far, earliest last
  for (unsigned predecessor = tile - unsigned(grid.groups);; predecessor -= unsigned(grid.groups)) {
    if (tid == 0) {
      unsigned f;
      while ((f = load_flag_acquire(state.flags + predecessor)) == 0u) __nanosleep(20);
      flag_seen = f;
    }
    __syncthreads();
    const unsigned f = flag_seen;
    if (tid < Cfg::channels) {
      __threadfence();
      const Pair* records = f == 2u ? state.inclusive : state.aggregates;
      exclusive = Combine{}(load_pair_cg(records + index_t(predecessor) * Cfg::channels + tid), exclusive);
    }
    __syncthreads();  // flag_seen is rewritten next round
    if (f == 2u) break;
  }
  if (tid < Cfg::channels) {
    carry[tid] = exclusive.value;
    store_pair_cg(state.inclusive + index_t(tile) * Cfg::channels + tid, Combine{}(exclusive, aggregate[tid]));
    __threadfence();
  }
  __syncthreads();
  if (tid == 0) store_flag_release(state.flags + tile, 2u);
}

template <class Cfg>
__device__ __forceinline__ unsigned claim_tile(unsigned* next_tile, bool single_chunk) {
  if (single_chunk) return blockIdx.x;
  __shared__ unsigned claimed;
  if (threadIdx.x == 0) claimed = atomicAdd(next_tile, 1u);
  __syncthreads();
  return claimed;
}

// Shared-memory bytes of one block.
template <class Op, class Cfg>
constexpr std::size_t forward_smem_bytes() {
  return std::size_t(Cfg::tile_slots) * (sizeof(typename Op::decay_type) + sizeof(typename Op::value_type));
}
template <class Op, class Cfg>
constexpr std::size_t backward_smem_bytes() {
  return std::size_t(Cfg::tile_slots) *
         (sizeof(typename Op::decay_type) + sizeof(typename Op::value_type) + sizeof(typename Op::grad_type));
}

// Forward: h[t] = a[t] ⊙ h[t-1] + b[t] over one tile, carries by look-back.
template <class Op, class Cfg>
__global__ void __launch_bounds__(Cfg::threads)
    forward_kernel(scan_forward_args<Op> p, grid_shape grid,
                   lookback_state<carry_pair<typename Op::decay_type, typename Op::value_type>> lookback) {
  using A = typename Op::decay_type;
  using V = typename Op::value_type;
  using C = combine<Op, false>;
  using pair = typename C::pair;
  using scan = slice_scan<Cfg, C, pair>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* a_tile = reinterpret_cast<A*>(smem_raw);
  V* b_tile = reinterpret_cast<V*>(smem_raw + sizeof(A) * Cfg::tile_slots);  // b in, h out
  __shared__ typename scan::storage scan_storage;
  __shared__ pair aggregate[Cfg::channels];
  __shared__ V carry[Cfg::channels];

  const unsigned tile = claim_tile<Cfg>(lookback.next_tile, grid.chunks == 1);
  const tile_geometry g = locate<Cfg, false>(grid, tile);
  copy_in<Cfg>(a_tile, p.a, p.a_strides, g, g.time0, 0, g.n_steps);
  copy_in<Cfg>(b_tile, p.b, p.b_strides, g, g.time0, 0, g.n_steps);
  __syncthreads();

  const int channel = threadIdx.x / Cfg::slices, slice = threadIdx.x % Cfg::slices;
  const int step0 = slice * Cfg::items;
  const bool active = channel < g.n_channels;
  // Fold this thread's steps: (∏ a, h from zero). Steps past the end act as the identity.
  pair local = C::identity();
  if (active) {
#pragma unroll
    for (int i = 0; i < Cfg::items; ++i)
      if (step0 + i < g.n_steps) {
        const A a = a_tile[Cfg::slot(channel, step0 + i)];
        local = {Op::compose(local.decay, a), Op::step(a, local.value, b_tile[Cfg::slot(channel, step0 + i)])};
      }
  }
  pair exclusive, channel_total;
  scan::run(scan_storage, local, exclusive, channel_total);
  if (slice == 0) aggregate[channel] = channel_total;
  __syncthreads();
  const index_t row0 = g.batch * grid.channels + g.channel0;
  look_back<Cfg, C>(lookback, grid, g, tile, aggregate, carry,
                    [&](int ch) { return (p.h0 && ch < g.n_channels) ? p.h0[row0 + ch] : Op::zero_value(); });
  __syncthreads();

  // Rescan from the exact state before this thread's first step.
  if (active) {
    V h = Op::step(exclusive.decay, carry[channel], exclusive.value);
    const bool last_chunk = g.chunk_in_order == grid.chunks - 1;
#pragma unroll
    for (int i = 0; i < Cfg::items; ++i)
      if (step0 + i < g.n_steps) {
        const int s = Cfg::slot(channel, step0 + i);
        h = Op::step(a_tile[s], h, b_tile[s]);
        b_tile[s] = h;
        if (last_chunk && step0 + i == g.n_steps - 1 && p.h_final) p.h_final[row0 + channel] = h;
      }
  }
  __syncthreads();
  copy_out<Cfg>(p.h, p.h_strides, b_tile, g);
}

// Backward over one tile, reverse time: g[t] = grad_step(a[t+1], g[t+1], dh[t]),
// db[t] = g[t], da[t] = decay_grad(g[t], h[t-1], a[t]); dh0 = grad_step(a[0], g[0], 0).
template <class Op, class Cfg>
__global__ void __launch_bounds__(Cfg::threads)
    backward_kernel(scan_backward_args<Op> p, grid_shape grid,
                    lookback_state<carry_pair<typename Op::decay_type, typename Op::grad_type>> lookback) {
  using A = typename Op::decay_type;
  using V = typename Op::value_type;
  using G = typename Op::grad_type;
  using DA = typename Op::decay_grad_type;
  using C = combine<Op, true>;
  using pair = typename C::pair;
  using scan = slice_scan<Cfg, C, pair>;
  static_assert(sizeof(DA) <= sizeof(V) && alignof(DA) <= alignof(V), "da is staged in h's slots");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* a_tile = reinterpret_cast<A*>(smem_raw);                                              // a[t0 .. t0+steps]
  V* h_tile = reinterpret_cast<V*>(smem_raw + sizeof(A) * Cfg::tile_slots);                // h[t-1] in, da out
  G* g_tile = reinterpret_cast<G*>(smem_raw + (sizeof(A) + sizeof(V)) * Cfg::tile_slots);  // dh in, db out
  __shared__ typename scan::storage scan_storage;
  __shared__ pair aggregate[Cfg::channels];
  __shared__ G carry[Cfg::channels];

  const unsigned tile = claim_tile<Cfg>(lookback.next_tile, grid.chunks == 1);
  const tile_geometry g = locate<Cfg, true>(grid, tile);
  const index_t row0 = g.batch * grid.channels + g.channel0;
  const bool last_in_time = g.time0 + g.n_steps == grid.time;
  // a over [t0, t0 + n_steps], with a[T] = identity (the extra column below)
  copy_in<Cfg>(a_tile, p.a, p.a_strides, g, g.time0, 0, g.n_steps);
  // h over [t0 - 1, t0 + n_steps - 1), with h[-1] = h0
  if (g.time0 > 0)
    copy_in<Cfg>(h_tile, p.h, p.h_strides, g, g.time0 - 1, 0, g.n_steps);
  else
    copy_in<Cfg>(h_tile, p.h, p.h_strides, g, 0, 1, g.n_steps - 1);
  copy_in<Cfg>(g_tile, p.dh, p.dh_strides, g, g.time0, 0, g.n_steps);
  if (int(threadIdx.x) < g.n_channels) {
    const index_t next_time = g.time0 + g.n_steps;
    a_tile[Cfg::slot(threadIdx.x, g.n_steps)] =
        last_in_time ? Op::decay_identity()
                     : p.a[g.batch * p.a_strides.batch + (g.channel0 + threadIdx.x) * p.a_strides.channel +
                           next_time * p.a_strides.time];
    if (g.time0 == 0) h_tile[Cfg::slot(threadIdx.x, 0)] = p.h0 ? p.h0[row0 + threadIdx.x] : Op::zero_value();
  }
  __syncthreads();

  // Lanes run in processing order: the first lane of a channel owns its last steps.
  const int channel = threadIdx.x / Cfg::slices, slice = Cfg::slices - 1 - int(threadIdx.x % Cfg::slices);
  const int step0 = slice * Cfg::items;
  const bool active = channel < g.n_channels;
  pair local = C::identity();
  if (active) {
#pragma unroll
    for (int i = Cfg::items - 1; i >= 0; --i)
      if (step0 + i < g.n_steps) {
        const A a_next = a_tile[Cfg::slot(channel, step0 + i + 1)];
        local = {Op::compose(local.decay, a_next),
                 Op::grad_step(a_next, local.value, g_tile[Cfg::slot(channel, step0 + i)])};
      }
  }
  pair exclusive, channel_total;
  scan::run(scan_storage, local, exclusive, channel_total);
  if (threadIdx.x % Cfg::slices == 0) aggregate[channel] = channel_total;
  __syncthreads();
  look_back<Cfg, C>(lookback, grid, g, tile, aggregate, carry, [&](int ch) {
    return (p.dh_final && ch < g.n_channels) ? p.dh_final[row0 + ch] : Op::zero_grad();
  });
  __syncthreads();

  if (active) {
    G grad = Op::grad_step(exclusive.decay, carry[channel], exclusive.value);
#pragma unroll
    for (int i = Cfg::items - 1; i >= 0; --i)
      if (step0 + i < g.n_steps) {
        const int s = Cfg::slot(channel, step0 + i);
        const A a_t = a_tile[s];
        grad = Op::grad_step(a_tile[Cfg::slot(channel, step0 + i + 1)], grad, g_tile[s]);
        g_tile[s] = grad;
        const DA da = Op::decay_grad(grad, h_tile[s], a_t);
        *reinterpret_cast<DA*>(h_tile + s) = da;
        if (g.time0 == 0 && step0 + i == 0 && p.dh0) p.dh0[row0 + channel] = Op::grad_step(a_t, grad, Op::zero_grad());
      }
  }
  __syncthreads();
  copy_out<Cfg>(p.db, p.db_strides, g_tile, g);
  copy_out<Cfg>(p.da, p.da_strides, h_tile, g);
}

}  // namespace linrec::detail::cuda_chunked
