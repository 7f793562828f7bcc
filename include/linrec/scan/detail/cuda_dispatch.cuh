#pragma once
// Dispatch of the CUDA scan: argument checks, choice of algorithm and tile shape, scratch for
// the look-back, launches. Kernels live in cuda_sequential.cuh and cuda_chunked.cuh.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>

#include "linrec/core/exec.hpp"
#include "linrec/scan/detail/cuda_check.cuh"
#include "linrec/scan/detail/cuda_chunked.cuh"
#include "linrec/scan/detail/cuda_sequential.cuh"
#include "linrec/scan/layout.hpp"

namespace linrec::detail::cuda_dispatch {

// Items per thread: 16 four-byte elements (two tiles of 4096 floats ≈ 34 KB of shared memory
// per block forward), 8 when an element is wider.
template <std::size_t WidestElement>
inline constexpr int items_for = WidestElement <= 4 ? 16 : 8;

// The three tile shapes. Threads of one channel form a logical warp (or the whole block).
template <int Items>
using wide_tile = cuda_chunked::tile_config<32, 8, Items>;  // channel-contiguous, many channels
template <int Items>
using rows_tile = cuda_chunked::tile_config<8, 32, Items>;  // time-contiguous rows, or 8..31 channels
template <int Items>
using row_tile = cuda_chunked::tile_config<1, 256, Items>;  // one long row per tile

enum class tile_kind { wide, rows, row };

// Which tile shape fits the layout: the contiguous dimension decides how a tile is loaded;
// the channel count decides how many channels a tile can fill.
inline tile_kind choose_tile(const scan_shape& s, const strides3& main_strides) {
  const bool time_contiguous = main_strides.time == 1 && s.time > 1;
  if (!time_contiguous && s.channels >= 32) return tile_kind::wide;
  if (s.channels >= 8) return tile_kind::rows;
  return tile_kind::row;
}

// What `automatic` runs: the time-parallel scan, except for a single step, where there is
// nothing to scan and the one-thread-per-channel kernel does the least work.
inline scan_algorithm choose_algorithm(const scan_shape& s, scan_algorithm requested) {
  if (requested != scan_algorithm::automatic) return requested;
  return s.time == 1 ? scan_algorithm::sequential : scan_algorithm::parallel;
}

template <class Cfg>
cuda_chunked::grid_shape grid_for(const scan_shape& s) {
  cuda_chunked::grid_shape g;
  g.time = s.time;
  g.channels = s.channels;
  g.channel_groups = (s.channels + Cfg::channels - 1) / Cfg::channels;
  g.groups = s.batch * g.channel_groups;
  g.chunks = (s.time + Cfg::steps - 1) / Cfg::steps;
  LINREC_CHECK(g.groups * g.chunks < (index_t(1) << 31),
               "CUDA scan: shape (" << s.batch << ", " << s.time << ", " << s.channels << ") needs "
                                    << g.groups * g.chunks << " tiles, more than one launch can index");
  return g;
}

// Scratch of the look-back, laid out [counter | flags | aggregates | inclusive], with the
// counter and flags zeroed on the stream.
template <class Cfg, class Pair>
struct lookback_scratch {
  stream_scratch memory;
  cuda_chunked::lookback_state<Pair> state;

  static std::size_t round16(std::size_t n) { return (n + 15) / 16 * 16; }
  static std::size_t bytes(index_t tiles, bool needed) {
    if (!needed) return 0;
    const std::size_t header = round16(sizeof(unsigned) * (1 + std::size_t(tiles)));
    return header + 2 * round16(sizeof(Pair) * std::size_t(tiles) * Cfg::channels);
  }
  lookback_scratch(index_t tiles, bool needed, cudaStream_t stream) : memory(bytes(tiles, needed), stream) {
    if (!needed) return;
    auto* base = static_cast<unsigned char*>(memory.get());
    const std::size_t header = round16(sizeof(unsigned) * (1 + std::size_t(tiles)));
    const std::size_t pairs = round16(sizeof(Pair) * std::size_t(tiles) * Cfg::channels);
    state.next_tile = reinterpret_cast<unsigned*>(base);
    state.flags = state.next_tile + 1;
    state.aggregates = reinterpret_cast<Pair*>(base + header);
    state.inclusive = reinterpret_cast<Pair*>(base + header + pairs);
    LINREC_CUDA_CHECK(cudaMemsetAsync(base, 0, header, stream));
  }
};

// Static + dynamic shared memory above 48 KB needs the opt-in; the static part (scan storage,
// carries) is small but not zero, so opt in for every launch rather than guess the margin.
template <class Kernel>
void allow_shared_memory(Kernel kernel, std::size_t dynamic_bytes) {
  LINREC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(dynamic_bytes)));
}

template <class Op, class Cfg>
void launch_forward_chunked(const scan_forward_args<Op>& p, cudaStream_t stream) {
  using pair = cuda_chunked::carry_pair<typename Op::decay_type, typename Op::value_type>;
  const auto grid = grid_for<Cfg>(p.shape);
  const index_t tiles = grid.groups * grid.chunks;
  lookback_scratch<Cfg, pair> scratch(tiles, grid.chunks > 1, stream);
  constexpr std::size_t smem = cuda_chunked::forward_smem_bytes<Op, Cfg>();
  const auto kernel = cuda_chunked::forward_kernel<Op, Cfg>;
  allow_shared_memory(kernel, smem);
  kernel<<<unsigned(tiles), Cfg::threads, smem, stream>>>(p, grid, scratch.state);
  LINREC_CUDA_CHECK_LAUNCH("linrec::detail::cuda_chunked::forward_kernel");
}

template <class Op, class Cfg>
void launch_backward_chunked(const scan_backward_args<Op>& p, cudaStream_t stream) {
  using pair = cuda_chunked::carry_pair<typename Op::decay_type, typename Op::grad_type>;
  const auto grid = grid_for<Cfg>(p.shape);
  const index_t tiles = grid.groups * grid.chunks;
  lookback_scratch<Cfg, pair> scratch(tiles, grid.chunks > 1, stream);
  constexpr std::size_t smem = cuda_chunked::backward_smem_bytes<Op, Cfg>();
  const auto kernel = cuda_chunked::backward_kernel<Op, Cfg>;
  allow_shared_memory(kernel, smem);
  kernel<<<unsigned(tiles), Cfg::threads, smem, stream>>>(p, grid, scratch.state);
  LINREC_CUDA_CHECK_LAUNCH("linrec::detail::cuda_chunked::backward_kernel");
}

inline unsigned sequential_blocks(const scan_shape& s) {
  const index_t rows = s.batch * s.channels;
  const index_t blocks = (rows + cuda_sequential::threads_per_block - 1) / cuda_sequential::threads_per_block;
  LINREC_CHECK(blocks < (index_t(1) << 31), "CUDA scan: " << rows << " sequences are too many for one launch");
  return unsigned(blocks);
}

template <class Op>
void forward(const cuda& exec, const scan_forward_args<Op>& p, scan_algorithm algorithm) {
  validate(p);
  constexpr const char* where = "scan_forward (CUDA)";
  check_device_pointer(p.a, where, "a");
  check_device_pointer(p.b, where, "b");
  check_device_pointer(p.h, where, "h");
  check_device_pointer(p.h0, where, "h0");
  check_device_pointer(p.h_final, where, "h_final");
  const cudaStream_t stream = exec.stream;
  if (choose_algorithm(p.shape, algorithm) == scan_algorithm::sequential) {
    cuda_sequential::forward_kernel<Op>
        <<<sequential_blocks(p.shape), cuda_sequential::threads_per_block, 0, stream>>>(p);
    LINREC_CUDA_CHECK_LAUNCH("linrec::detail::cuda_sequential::forward_kernel");
    return;
  }
  constexpr int items = items_for<std::max(sizeof(typename Op::decay_type), sizeof(typename Op::value_type))>;
  switch (choose_tile(p.shape, p.b_strides)) {
    case tile_kind::wide: return launch_forward_chunked<Op, wide_tile<items>>(p, stream);
    case tile_kind::rows: return launch_forward_chunked<Op, rows_tile<items>>(p, stream);
    case tile_kind::row: return launch_forward_chunked<Op, row_tile<items>>(p, stream);
  }
}

template <class Op>
void backward(const cuda& exec, const scan_backward_args<Op>& p, scan_algorithm algorithm) {
  validate(p);
  constexpr const char* where = "scan_backward (CUDA)";
  check_device_pointer(p.a, where, "a");
  check_device_pointer(p.h, where, "h");
  check_device_pointer(p.h0, where, "h0");
  check_device_pointer(p.dh, where, "dh");
  check_device_pointer(p.dh_final, where, "dh_final");
  check_device_pointer(p.da, where, "da");
  check_device_pointer(p.db, where, "db");
  check_device_pointer(p.dh0, where, "dh0");
  const cudaStream_t stream = exec.stream;
  if (choose_algorithm(p.shape, algorithm) == scan_algorithm::sequential) {
    cuda_sequential::backward_kernel<Op>
        <<<sequential_blocks(p.shape), cuda_sequential::threads_per_block, 0, stream>>>(p);
    LINREC_CUDA_CHECK_LAUNCH("linrec::detail::cuda_sequential::backward_kernel");
    return;
  }
  constexpr int items = items_for<std::max({sizeof(typename Op::decay_type), sizeof(typename Op::value_type),
                                            sizeof(typename Op::grad_type)})>;
  switch (choose_tile(p.shape, p.dh_strides)) {
    case tile_kind::wide: return launch_backward_chunked<Op, wide_tile<items>>(p, stream);
    case tile_kind::rows: return launch_backward_chunked<Op, rows_tile<items>>(p, stream);
    case tile_kind::row: return launch_backward_chunked<Op, row_tile<items>>(p, stream);
  }
}

}  // namespace linrec::detail::cuda_dispatch
