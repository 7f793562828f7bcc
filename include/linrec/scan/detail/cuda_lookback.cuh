#pragma once
// The decoupled look-back of the single-pass CUDA scan: how a tile learns the state before
// it from the tiles before it, without a second pass. Every parallel agent (row, channel and
// staged tiles, forward and backward) uses this one.
//
// The launch's tiles: `lines` independent lines (rows, or channel groups of a batch entry) of
// `chunks` tiles each; tile = blockIdx.x = chunk · lines + line, chunk in processing order (0
// is the first in time forward, the last backward). Like CUB's single-pass scan this relies on
// blocks being dispatched in index order, so every predecessor a tile waits for has started.
//
// A tile of G channels publishes per channel two write-once records: its aggregate (the pair
// of its own steps) and, once known, its inclusive prefix (the pair from the line's start,
// whose h is the true state after the tile). To find its carry it reads its predecessors'
// records nearest first and combines aggregates until it meets an inclusive prefix.
//  * Early read: the nearest predecessor's inclusive prefix is read when the tile starts, in
//    the shadow of its own loads. Where that predecessor finished long ago (many lines: it
//    lies `lines` tiles back) this is the whole look-back, and its round trip is off the
//    critical path. (An L2 round trip under full memory load is microseconds.)
//  * Epoch records: a record is one 16-byte word {value, epoch} per 64 bits of the pair,
//    written and read with single 16-byte accesses, which the hardware performs whole (CUB's
//    tile status relies on the same). Every call draws a fresh 64-bit epoch and a record
//    counts as written only when it carries it: earlier calls' records and uninitialised pool
//    memory read as "not yet", so nothing is cleared before a launch (a memset would be a
//    second launch) and no fences are needed, the value travels with its flag. The exception
//    is a graph capture, whose replays all carry the captured epoch (lookback_storage).
//  * Who looks back: with one channel per tile, warp 0, 32·W predecessors per round (ballot
//    and shuffles); with G channels, the whole block, thread (c, o) = (tid % G, tid / G)
//    reading W predecessors of channel c per round, threads/G·W per channel, folded in order
//    by thread c. W is the policy's look-back window.
#include <cuda_runtime.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <optional>
#include <random>

#include "linrec/scan/detail/cuda_check.cuh"
#include "linrec/scan/detail/cuda_pair.cuh"
#include "linrec/scan/detail/cuda_scratch.cuh"
#include "linrec/scan/layout.hpp"

namespace linrec::detail::cuda_scan {

struct tile_grid {
  index_t lines;
  index_t chunks;
};

// ---- records -------------------------------------------------------------------------------

using word = unsigned long long;

template <class Pair>
inline constexpr int payload_words = int((sizeof(Pair) + 7) / 8);
template <class Pair>
inline constexpr int record_words = 2 * payload_words<Pair>;  // {value, epoch} per payload word
// Words from one (tile, channel)'s record to the next in one array. One-channel tiles
// interleave each tile's aggregate and inclusive prefix: for float both share one 32-byte
// sector, so a poll of both costs one L2 sector instead of two. Multi-channel tiles keep two
// arrays: their early reads and publishes are whole runs of one array.
// Interleaving: faster for rows, slower for many-channel [B,T,C] (H100), docs/notes/cuda_scan.md
template <class Pair, int G>
inline constexpr int record_stride = G == 1 ? 2 * record_words<Pair> : record_words<Pair>;

template <class Pair>
struct lookback_records {
  word* aggregates = nullptr;  // record of (tile, channel) at (tile · G + channel) · record_stride
  word* inclusive = nullptr;
  word epoch = 0;
};

__device__ __forceinline__ void store_record(word* w, word value, word epoch) {
  asm volatile("st.global.cg.v2.u64 [%0], {%1, %2};" ::"l"(w), "l"(value), "l"(epoch) : "memory");
}
// Loads from L2 (.cg), never from a stale L1 line; volatile: every poll is a new load.
__device__ __forceinline__ bool load_record(const word* w, word& value, word epoch) {
  word tag;
  asm volatile("ld.global.cg.v2.u64 {%0, %1}, [%2];" : "=l"(value), "=l"(tag) : "l"(w) : "memory");
  return tag == epoch;
}
template <class Pair>
__device__ __forceinline__ void publish(word* rec, const Pair& x, word epoch) {
  word w[payload_words<Pair>] = {};
  memcpy(w, &x, sizeof(Pair));
#pragma unroll
  for (int i = 0; i < payload_words<Pair>; ++i) store_record(rec + 2 * i, w[i], epoch);
}
// Whether the record was written in this call; x is its value then.
template <class Pair>
__device__ __forceinline__ bool try_read(const word* rec, Pair& x, word epoch) {
  word w[payload_words<Pair>];
  bool ok = true;
#pragma unroll
  for (int i = 0; i < payload_words<Pair>; ++i) ok = load_record(rec + 2 * i, w[i], epoch) && ok;
  memcpy(&x, w, sizeof(Pair));
  return ok;
}

template <class Pair, int G>
__device__ __forceinline__ word* record(word* array, index_t tile, int channel) {
  return array + (tile * G + channel) * record_stride<Pair, G>;
}

// ---- the look-back -------------------------------------------------------------------------

template <class Pair>
struct early_prefix {
  Pair value;
  bool ok = false;
};
// By thread c < G of the tile, right after it has issued its loads.
template <int G, class Pair>
__device__ __forceinline__ early_prefix<Pair> read_early(const lookback_records<Pair>& lb, const tile_grid& g,
                                                         unsigned tile, unsigned chunk, int channel) {
  early_prefix<Pair> e;
  if (chunk > 0) e.ok = try_read(record<Pair, G>(lb.inclusive, index_t(tile) - g.lines, channel), e.value, lb.epoch);
  return e;
}

// One channel per tile, by warp 0: per round, W × 32 predecessors (lane l reads predecessors
// base + w·32 + l), both records of each in flight at once. Writes the carry to carry[0] from
// lane 0.
template <class Scan, int W, class Initial>
__device__ __forceinline__ void look_back_warp(const lookback_records<typename Scan::pair_type>& lb, const tile_grid& g,
                                               unsigned tile, unsigned chunk, const typename Scan::pair_type& aggregate,
                                               const early_prefix<typename Scan::pair_type>& early, Initial initial,
                                               decltype(Scan::pair_type::h)* carry) {
  using P = typename Scan::pair_type;
  constexpr int stride = record_stride<P, 1>;
  const int lane = threadIdx.x & 31;
  const bool last = chunk + 1 == g.chunks;
  const index_t distance = g.lines;
  if (chunk == 0) {
    if (lane == 0) {
      const auto h0 = initial(0);
      carry[0] = h0;
      if (!last)
        publish(lb.inclusive + index_t(tile) * stride, Scan::combine(P{Scan::identity().a, h0}, aggregate), lb.epoch);
    }
    return;
  }
  if (__shfl_sync(0xffffffffu, int(early.ok), 0)) {  // lane 0 read it
    if (lane == 0) {
      carry[0] = early.value.h;
      if (!last) publish(lb.inclusive + index_t(tile) * stride, Scan::combine(early.value, aggregate), lb.epoch);
    }
    return;
  }
  if (lane == 0 && !last) publish(lb.aggregates + index_t(tile) * stride, aggregate, lb.epoch);
  P exclusive = Scan::identity();  // of the predecessors consumed so far
  unsigned base = 1;               // distance of the nearest predecessor not yet consumed
  while (true) {
    P inc[W], agg[W];
    bool inc_ok[W], agg_ok[W];
#pragma unroll
    for (int u = 0; u < W; ++u) {
      const unsigned j = base + unsigned(u * 32 + lane);
      inc_ok[u] = agg_ok[u] = false;
      if (j <= chunk) {
        const index_t pred = index_t(tile) - index_t(j) * distance;
        inc_ok[u] = try_read(lb.inclusive + pred * stride, inc[u], lb.epoch);
        agg_ok[u] = try_read(lb.aggregates + pred * stride, agg[u], lb.epoch);
      }
    }
    unsigned consumed = 0;
    bool finished = false, stalled = false;
#pragma unroll
    for (int u = 0; u < W; ++u) {
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
        P r = Scan::identity();
        if (lane < n) r = inc_ok[u] ? inc[u] : agg[u];
          // r_{n-1} ∘ … ∘ r_0: higher lanes are earlier
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
          const P o = shfl_down(r, off);
          if (lane + off < 32) r = Scan::combine(o, r);
        }
        exclusive = Scan::combine(shfl_index(r, 0), exclusive);
        consumed += unsigned(n);
      }
    }
    if (finished) break;
    base += consumed;
    if (consumed == 0) __nanosleep(64);
  }
  // `exclusive` reaches back to an inclusive prefix: its value is the true state.
  if (lane == 0) {
    carry[0] = exclusive.h;
    if (!last) publish(lb.inclusive + index_t(tile) * stride, Scan::combine(exclusive, aggregate), lb.epoch);
  }
}

// G channels per tile, by the whole block. Thread c < G owns channel c: a hit of its early
// read ends it at once. Channels still open are then looked back by every thread: thread
// (c, o) = (tid % G, tid / G) reads W consecutive predecessors of channel c at distances
// base + o·W … (nearest first) and folds them up to the first inclusive prefix or the first
// record not yet written; thread c joins the O = Threads/G partial results in order.
// `scratch`: ≥ Threads pairs of shared memory, free once every thread is past its last read.
template <class Scan, int G, int Threads, int W, class Initial>
__device__ __forceinline__ void look_back_block(const lookback_records<typename Scan::pair_type>& lb,
                                                const tile_grid& g, unsigned tile, unsigned chunk,
                                                const typename Scan::pair_type& aggregate,
                                                const early_prefix<typename Scan::pair_type>& early, Initial initial,
                                                typename Scan::pair_type* scratch,
                                                decltype(Scan::pair_type::h)* carry) {
  using P = typename Scan::pair_type;
  static_assert(G <= Threads && Threads % G == 0);
  constexpr int O = Threads / G;
  enum : int { run_full = 0, run_found = 1, run_stalled = 2 };
  __shared__ unsigned next_distance[G];  // 0: the channel's carry is known
  __shared__ int run_info[Threads];      // state | count << 2
  const int tid = threadIdx.x;
  const bool last = chunk + 1 == g.chunks;
  const index_t distance = g.lines;
  bool open = false;
  if (tid < G) {
    if (chunk == 0) {
      const auto h0 = initial(tid);
      carry[tid] = h0;
      if (!last)
        publish(record<P, G>(lb.inclusive, tile, tid), Scan::combine(P{Scan::identity().a, h0}, aggregate), lb.epoch);
    } else if (early.ok) {
      carry[tid] = early.value.h;
      if (!last) publish(record<P, G>(lb.inclusive, tile, tid), Scan::combine(early.value, aggregate), lb.epoch);
    } else {
      if (!last) publish(record<P, G>(lb.aggregates, tile, tid), aggregate, lb.epoch);
      open = true;
    }
    next_distance[tid] = open ? 1u : 0u;
  }
  if (__syncthreads_or(open)) {
    const int c = tid % G, o = tid / G;
    P exclusive = Scan::identity();  // thread c: the predecessors consumed so far
    while (true) {
      const unsigned base = next_distance[c];
      P partial = Scan::identity();
      int state = run_full, count = 0;
      if (base != 0) {
        P inc[W], agg[W];
        bool inc_ok[W], agg_ok[W];
#pragma unroll
        for (int u = 0; u < W; ++u) {
          const unsigned j = base + unsigned(o * W + u);
          inc_ok[u] = agg_ok[u] = false;
          if (j <= chunk) {
            const index_t pred = index_t(tile) - index_t(j) * distance;
            inc_ok[u] = try_read(record<P, G>(lb.inclusive, pred, c), inc[u], lb.epoch);
            agg_ok[u] = try_read(record<P, G>(lb.aggregates, pred, c), agg[u], lb.epoch);
          }
        }
        state = run_full;
#pragma unroll
        for (int u = 0; u < W; ++u) {
          if (state == run_full) {
            if (inc_ok[u]) {
              partial = Scan::combine(inc[u], partial);
              state = run_found;
              ++count;
            } else if (agg_ok[u]) {
              partial = Scan::combine(agg[u], partial);
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
          exclusive = Scan::combine(scratch[r * G + c], exclusive);
          consumed += unsigned(info >> 2);
          if ((info & 3) == run_found) found = true;
          if ((info & 3) != run_full) break;
        }
        if (found) {
          carry[c] = exclusive.h;
          if (!last) publish(record<P, G>(lb.inclusive, tile, c), Scan::combine(exclusive, aggregate), lb.epoch);
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
}

// The look-back of one tile, called by every thread of the block. Thread c < G passes channel
// c's aggregate and early read (the others' are ignored); initial(c) is channel c's state
// before the line, asked for by the line's first tile only. Ends with carry[0..G) (shared
// memory: the state before the tile, per channel) and a barrier. `scratch`: see
// look_back_block (unused for G == 1).
template <class Scan, int G, int Threads, int W, class Initial>
__device__ __forceinline__ void look_back(const lookback_records<typename Scan::pair_type>& lb, const tile_grid& g,
                                          unsigned tile, unsigned chunk, const typename Scan::pair_type& aggregate,
                                          const early_prefix<typename Scan::pair_type>& early, Initial initial,
                                          typename Scan::pair_type* scratch, decltype(Scan::pair_type::h)* carry) {
  if constexpr (G == 1) {
    if (threadIdx.x < 32) look_back_warp<Scan, W>(lb, g, tile, chunk, aggregate, early, initial, carry);
  } else {
    look_back_block<Scan, G, Threads, W>(lb, g, tile, chunk, aggregate, early, initial, scratch, carry);
  }
  __syncthreads();
}

// ---- the records' memory (host) ------------------------------------------------------------

// A 64-bit tag no earlier call of this process carried: odd, so never the zero of fresh
// memory, and seeded per process so that another process's stale records in recycled memory
// match with probability 2^-64.
inline word next_epoch() {
  static std::atomic<word> counter{[] {
    std::random_device entropy;
    const auto clock = static_cast<word>(std::chrono::steady_clock::now().time_since_epoch().count());
    return ((word(entropy()) << 32) ^ word(entropy()) ^ (clock * 0x9E3779B97F4A7C15ull)) | 1u;
  }()};
  return counter.fetch_add(2, std::memory_order_relaxed);
}

// The records of one launch of `tiles` tiles of G channels. Not cleared: the epoch tells this
// call's records from anything else the memory holds, so the stream's kept buffer
// (stream_scratch_cache) serves every call. The exception is a graph capture: per-call
// scratch inside the graph, cleared, since every replay carries the captured epoch.
template <class Pair, int G>
struct lookback_storage {
  std::optional<stream_scratch> per_call;  // while the stream is being captured into a graph
  cudaEvent_t last_use = nullptr;          // of the kept buffer
  lookback_records<Pair> records;

  static std::size_t words(index_t tiles) { return std::size_t(tiles) * std::size_t(G) * record_words<Pair>; }
  // needed: whether any line has more than one tile.
  lookback_storage(index_t tiles, bool needed, cudaStream_t stream) {
    if (!needed) return;
    const std::size_t bytes = 2 * words(tiles) * sizeof(word);
    void* memory = nullptr;
    if (stream_scratch_cache::usable(stream)) {
      const auto kept = stream_scratch_cache::for_this_thread().get(bytes, stream);
      memory = kept.ptr;
      last_use = kept.last_use;
    } else {
      per_call.emplace(bytes, stream);
      memory = per_call->get();
      // The epoch below is fixed at capture, and every replay of the graph runs on the same
      // memory: without clearing it a replay would take the last replay's records as its own.
      LINREC_CUDA_CHECK(cudaMemsetAsync(memory, 0, bytes, stream));
    }
    auto* base = static_cast<word*>(memory);
    records.aggregates = base;
    records.inclusive = base + (G == 1 ? std::size_t(record_words<Pair>) : words(tiles));
    records.epoch = next_epoch();
  }
  // After the launch that uses the records.
  void launched(cudaStream_t stream) const {
    if (last_use) LINREC_CUDA_CHECK(cudaEventRecord(last_use, stream));
  }
};

}  // namespace linrec::detail::cuda_scan
