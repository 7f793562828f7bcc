#pragma once
// The parallel CPU scan. Two strategies, chosen per call:
//  * many independent rows (batch × channel blocks ≥ threads): each thread runs whole
//    sequences for its blocks; the state row stays in L1 and every byte is touched once;
//  * few long sequences: a time-chunked scan in rounds. In each round every thread scans its
//    own cache-sized chunk from zero (recording the chunk's decay product), the threads pass
//    carries left to right through a shared array, and each thread fixes up its chunk while
//    it is still in L2. DRAM sees each input once and each output once, as in the sequential
//    scan; only the cache sees the second pass.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "linrec/core/exec.hpp"
#include "linrec/scan/detail/cpu_lanes.hpp"
#include "linrec/scan/layout.hpp"

namespace linrec {
namespace detail {

// Elements per thread per round of the time-chunked scan: three streams of this many
// elements (a, b, h) should sit comfortably in a 512 KiB–1 MiB L2.
inline constexpr index_t chunk_elements = 16384;
// Below this many elements, threading costs more than it saves.
inline constexpr index_t min_parallel_elements = 32768;

inline int resolve_threads(const cpu& exec) { return exec.threads > 0 ? exec.threads : omp_get_max_threads(); }

struct lane_blocking {
  index_t lanes_per_block;
  index_t blocks_per_batch;
};

inline lane_blocking block_lanes(index_t batch, index_t channels, bool contiguous, int threads) {
  // Contiguous channels vectorise: take whole rows, split only as far as needed to give every
  // thread a block (in multiples of 16 lanes, a cache line of floats). Strided channels:
  // 8 interleaved chains hide the latency of the dependent multiply-adds.
  index_t width = 8;
  if (contiguous) {
    const index_t splits = std::max<index_t>(1, (threads + batch - 1) / batch);
    width = std::min(max_lanes, ((channels + splits - 1) / splits + 7) / 8 * 8);
  }
  width = std::min(width, channels);
  return {width, (channels + width - 1) / width};
}

// Whether every time row of a tensor starts on a cache line (tensor storage is line-aligned,
// host_cache.hpp; a std::vector is not).
template <class T>
bool rows_line_aligned(const T* base, const strides3& st) {
  constexpr index_t line = 64;
  return reinterpret_cast<std::uintptr_t>(base) % line == 0 && st.time * index_t(sizeof(T)) % line == 0 &&
         st.batch * index_t(sizeof(T)) % line == 0;
}

// Whether the whole-row strategy writes with streaming stores: only contiguous rows of a type
// that has them, only outputs far larger than cache (cpu_streaming_store.hpp says why), and not
// when inputs and outputs are all off the cache line: at (8, 4096, 1024) with every row 16 bytes
// off, streaming stores ran at 45 GB/s against 52 GB/s for plain ones (line-aligned: 70 vs 54).
template <class T, bool Contiguous>
bool use_streaming_stores(const scan_shape& s, index_t lanes_per_block, bool output_aligned, bool inputs_aligned) {
  return Contiguous && has_streaming_store<T> && lanes_per_block >= 16 &&
         s.elements() * static_cast<index_t>(sizeof(T)) >= streaming_store_min_bytes &&
         (output_aligned || inputs_aligned);
}

template <class Op, bool Contiguous, bool Streaming>
void forward_rows(const scan_forward_args<Op>& p, index_t batch, index_t c0, index_t lanes) {
  typename Op::value_type state[max_lanes];
  for (index_t l = 0; l < lanes; ++l) state[l] = p.h0 ? p.h0[batch * p.shape.channels + c0 + l] : Op::zero_value();
  forward_lanes<Op, Contiguous, Streaming>(
      make_lane_view<const typename Op::decay_type, Contiguous>(p.a, p.a_strides, batch, c0),
      make_lane_view<const typename Op::value_type, Contiguous>(p.b, p.b_strides, batch, c0),
      make_lane_view<typename Op::value_type, Contiguous>(p.h, p.h_strides, batch, c0), 0, p.shape.time, lanes, state,
      nullptr);
  if constexpr (Streaming) streaming_store_fence();
  if (p.h_final)
    for (index_t l = 0; l < lanes; ++l) p.h_final[batch * p.shape.channels + c0 + l] = state[l];
}

template <class Op, bool Contiguous>
backward_views<Op, Contiguous> make_backward_views(const scan_backward_args<Op>& p, index_t batch, index_t c0) {
  return {make_lane_view<const typename Op::decay_type, Contiguous>(p.a, p.a_strides, batch, c0),
          make_lane_view<const typename Op::value_type, Contiguous>(p.h, p.h_strides, batch, c0),
          make_lane_view<const typename Op::grad_type, Contiguous>(p.dh, p.dh_strides, batch, c0),
          make_lane_view<typename Op::decay_grad_type, Contiguous>(p.da, p.da_strides, batch, c0),
          make_lane_view<typename Op::grad_type, Contiguous>(p.db, p.db_strides, batch, c0),
          p.h0 ? p.h0 + batch * p.shape.channels + c0 : nullptr,
          p.shape.time};
}

template <class Op>
void write_dh0(const scan_backward_args<Op>& p, index_t batch, index_t c0, index_t lanes,
               const typename Op::grad_type* g0) {
  if (!p.dh0) return;
  for (index_t l = 0; l < lanes; ++l)
    p.dh0[batch * p.shape.channels + c0 + l] =
        Op::grad_step(p.a[p.a_strides.offset(batch, 0, c0 + l)], g0[l], Op::zero_grad());
}

template <class Op, bool Contiguous, bool Streaming = false>
void backward_rows(const scan_backward_args<Op>& p, index_t batch, index_t c0, index_t lanes) {
  typename Op::grad_type grad_state[max_lanes];
  for (index_t l = 0; l < lanes; ++l)
    grad_state[l] = p.dh_final ? p.dh_final[batch * p.shape.channels + c0 + l] : Op::zero_grad();
  backward_lanes<Op, Contiguous, true, Streaming>(make_backward_views<Op, Contiguous>(p, batch, c0), 0, p.shape.time,
                                                  lanes, grad_state, nullptr);
  if constexpr (Streaming) streaming_store_fence();
  write_dh0(p, batch, c0, lanes, grad_state);
}

// Per-thread chunk summaries of one round, double-buffered by round parity so that one barrier
// per round suffices: a thread writes round r+2's summary only after every thread has passed
// round r+1's barrier, i.e. after all reads of round r's summary.
template <class Op, class State>
struct round_exchange {
  std::vector<State> chunk_state;                    // [2][threads][lanes]: scan of the chunk from zero
  std::vector<typename Op::decay_type> chunk_decay;  // [2][threads][lanes]: ∏ a over the chunk
  std::vector<State> carry;                          // [2][lanes]: true state entering the round
  index_t threads, lanes;

  round_exchange(index_t threads_, index_t lanes_)
      : chunk_state(2 * threads_ * lanes_),
        chunk_decay(2 * threads_ * lanes_),
        carry(2 * lanes_),
        threads(threads_),
        lanes(lanes_) {}
  State* state_of(index_t round, index_t thread) { return &chunk_state[((round & 1) * threads + thread) * lanes]; }
  typename Op::decay_type* decay_of(index_t round, index_t thread) {
    return &chunk_decay[((round & 1) * threads + thread) * lanes];
  }
  State* carry_of(index_t round) { return &carry[(round & 1) * lanes]; }
};

// One long sequence block (one batch row, `lanes` channels from c0), all threads cooperating.
template <class Op, bool Contiguous>
void forward_time_chunked(const scan_forward_args<Op>& p, index_t batch, index_t c0, index_t lanes, int threads) {
  using V = typename Op::value_type;
  using A = typename Op::decay_type;
  const index_t time = p.shape.time;
  const index_t chunk = std::max<index_t>(256, chunk_elements / lanes);
  const auto a = make_lane_view<const A, Contiguous>(p.a, p.a_strides, batch, c0);
  const auto b = make_lane_view<const V, Contiguous>(p.b, p.b_strides, batch, c0);
  const auto h = make_lane_view<V, Contiguous>(p.h, p.h_strides, batch, c0);
  round_exchange<Op, V> exchange(threads, lanes);
  for (index_t l = 0; l < lanes; ++l)
    exchange.carry_of(0)[l] = p.h0 ? p.h0[batch * p.shape.channels + c0 + l] : Op::zero_value();
  index_t rounds = 0;
#pragma omp parallel num_threads(threads)
  {
    const index_t thread = omp_get_thread_num();
    const index_t team = omp_get_num_threads();
    V carry_in[max_lanes];
    index_t round = 0;
    for (index_t round_start = 0; round_start < time; round_start += chunk * team, ++round) {
      const index_t t0 = std::min(time, round_start + thread * chunk);
      const index_t t1 = std::min(time, t0 + chunk);
      V* my_state = exchange.state_of(round, thread);
      A* my_decay = exchange.decay_of(round, thread);
      std::fill(my_state, my_state + lanes, Op::zero_value());
      std::fill(my_decay, my_decay + lanes, Op::decay_identity());
      forward_lanes<Op, Contiguous>(a, b, h, t0, t1, lanes, my_state, my_decay);
#pragma omp barrier
      // Look back: the carry entering this chunk folds the round's carry with earlier chunks.
      const V* round_carry = exchange.carry_of(round);
      std::copy(round_carry, round_carry + lanes, carry_in);
      for (index_t q = 0; q < thread; ++q) {
        const V* s = exchange.state_of(round, q);
        const A* d = exchange.decay_of(round, q);
        for (index_t l = 0; l < lanes; ++l) carry_in[l] = Op::step(d[l], carry_in[l], s[l]);
      }
      if (thread == team - 1) {
        V* next = exchange.carry_of(round + 1);
        for (index_t l = 0; l < lanes; ++l) next[l] = Op::step(my_decay[l], carry_in[l], my_state[l]);
      }
      forward_fixup_lanes<Op, Contiguous>(a, h, t0, t1, lanes, carry_in);
    }
#pragma omp single nowait
    rounds = round;
  }
  if (p.h_final) {
    const V* final_state = exchange.carry_of(rounds);
    for (index_t l = 0; l < lanes; ++l) p.h_final[batch * p.shape.channels + c0 + l] = final_state[l];
  }
}

template <class Op, bool Contiguous>
void backward_time_chunked(const scan_backward_args<Op>& p, index_t batch, index_t c0, index_t lanes, int threads) {
  using G = typename Op::grad_type;
  using A = typename Op::decay_type;
  const index_t time = p.shape.time;
  const index_t chunk = std::max<index_t>(256, chunk_elements / lanes);
  const auto views = make_backward_views<Op, Contiguous>(p, batch, c0);
  round_exchange<Op, G> exchange(threads, lanes);
  for (index_t l = 0; l < lanes; ++l)
    exchange.carry_of(0)[l] = p.dh_final ? p.dh_final[batch * p.shape.channels + c0 + l] : Op::zero_grad();
  index_t rounds = 0;
#pragma omp parallel num_threads(threads)
  {
    const index_t thread = omp_get_thread_num();
    const index_t team = omp_get_num_threads();
    G carry_in[max_lanes];
    index_t round = 0;
    // Rounds walk from the end of time; thread 0 takes the chunk nearest the round's carry.
    for (index_t round_end = time; round_end > 0; round_end -= std::min(round_end, chunk * team), ++round) {
      const index_t t1 = std::max<index_t>(0, round_end - thread * chunk);
      const index_t t0 = std::max<index_t>(0, t1 - chunk);
      G* my_state = exchange.state_of(round, thread);
      A* my_decay = exchange.decay_of(round, thread);
      std::fill(my_state, my_state + lanes, Op::zero_grad());
      std::fill(my_decay, my_decay + lanes, Op::decay_identity());
      backward_lanes<Op, Contiguous, false>(views, t0, t1, lanes, my_state, my_decay);
#pragma omp barrier
      const G* round_carry = exchange.carry_of(round);
      std::copy(round_carry, round_carry + lanes, carry_in);
      for (index_t q = 0; q < thread; ++q) {
        const G* s = exchange.state_of(round, q);
        const A* d = exchange.decay_of(round, q);
        for (index_t l = 0; l < lanes; ++l) carry_in[l] = Op::grad_step(d[l], carry_in[l], s[l]);
      }
      if (thread == team - 1) {
        G* next = exchange.carry_of(round + 1);
        for (index_t l = 0; l < lanes; ++l) next[l] = Op::grad_step(my_decay[l], carry_in[l], my_state[l]);
      }
      if (t0 < t1) backward_fixup_lanes<Op, Contiguous>(views, t0, t1, lanes, carry_in);
    }
#pragma omp single nowait
    rounds = round;
  }
  // The last round's carry is g[0] (an empty chunk passes its carry through unchanged).
  write_dh0(p, batch, c0, lanes, exchange.carry_of(rounds));
}

// Strategy choice shared by forward and backward.
template <bool Contiguous, class RowFn, class ChunkedFn>
void run_parallel(const scan_shape& s, int threads, RowFn rows, ChunkedFn chunked) {
  const lane_blocking blocking = block_lanes(s.batch, s.channels, Contiguous, threads);
  const index_t units = s.batch * blocking.blocks_per_batch;
  auto for_unit = [&](index_t unit, auto&& fn) {
    const index_t batch = unit / blocking.blocks_per_batch;
    const index_t c0 = (unit % blocking.blocks_per_batch) * blocking.lanes_per_block;
    fn(batch, c0, std::min(blocking.lanes_per_block, s.channels - c0));
  };
  if (threads <= 1 || s.elements() < min_parallel_elements) {
    for (index_t unit = 0; unit < units; ++unit) for_unit(unit, rows);
  } else if (units >= threads) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (index_t unit = 0; unit < units; ++unit) for_unit(unit, rows);
  } else {
    for (index_t unit = 0; unit < units; ++unit)
      for_unit(unit, [&](index_t batch, index_t c0, index_t lanes) { chunked(batch, c0, lanes, threads); });
  }
}

template <class Op, bool Contiguous>
void scan_forward_parallel_impl(const scan_forward_args<Op>& p, int threads) {
  const bool streaming = use_streaming_stores<typename Op::value_type, Contiguous>(
      p.shape, block_lanes(p.shape.batch, p.shape.channels, Contiguous, threads).lanes_per_block,
      rows_line_aligned(p.h, p.h_strides), rows_line_aligned(p.a, p.a_strides) && rows_line_aligned(p.b, p.b_strides));
  run_parallel<Contiguous>(
      p.shape, threads,
      [&](index_t batch, index_t c0, index_t lanes) {
        if (streaming)
          forward_rows<Op, Contiguous, Contiguous>(p, batch, c0, lanes);
        else
          forward_rows<Op, Contiguous, false>(p, batch, c0, lanes);
      },
      [&](index_t batch, index_t c0, index_t lanes, int n) {
        forward_time_chunked<Op, Contiguous>(p, batch, c0, lanes, n);
      });
}

template <class Op, bool Contiguous>
void scan_backward_parallel_impl(const scan_backward_args<Op>& p, int threads) {
  const bool streaming = use_streaming_stores<typename Op::grad_type, Contiguous>(
      p.shape, block_lanes(p.shape.batch, p.shape.channels, Contiguous, threads).lanes_per_block,
      rows_line_aligned(p.da, p.da_strides) && rows_line_aligned(p.db, p.db_strides),
      rows_line_aligned(p.a, p.a_strides) && rows_line_aligned(p.h, p.h_strides) &&
          rows_line_aligned(p.dh, p.dh_strides));
  run_parallel<Contiguous>(
      p.shape, threads,
      [&](index_t batch, index_t c0, index_t lanes) {
        if (streaming)
          backward_rows<Op, Contiguous, Contiguous>(p, batch, c0, lanes);
        else
          backward_rows<Op, Contiguous, false>(p, batch, c0, lanes);
      },
      [&](index_t batch, index_t c0, index_t lanes, int n) {
        backward_time_chunked<Op, Contiguous>(p, batch, c0, lanes, n);
      });
}

inline bool channels_contiguous(std::initializer_list<strides3> all, index_t channels) {
  if (channels == 1) return true;
  for (const strides3& s : all)
    if (s.channel != 1) return false;
  return true;
}

}  // namespace detail

template <class Op>
void scan_forward_parallel(const cpu& exec, const scan_forward_args<Op>& p) {
  detail::validate(p);
  const int threads = detail::resolve_threads(exec);
  if (detail::channels_contiguous(std::initializer_list<strides3>{p.a_strides, p.b_strides, p.h_strides},
                                  p.shape.channels))
    detail::scan_forward_parallel_impl<Op, true>(p, threads);
  else
    detail::scan_forward_parallel_impl<Op, false>(p, threads);
}

template <class Op>
void scan_backward_parallel(const cpu& exec, const scan_backward_args<Op>& p) {
  detail::validate(p);
  const int threads = detail::resolve_threads(exec);
  if (detail::channels_contiguous(
          std::initializer_list<strides3>{p.a_strides, p.h_strides, p.dh_strides, p.da_strides, p.db_strides},
          p.shape.channels))
    detail::scan_backward_parallel_impl<Op, true>(p, threads);
  else
    detail::scan_backward_parallel_impl<Op, false>(p, threads);
}

}  // namespace linrec
