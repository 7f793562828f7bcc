#pragma once
// Dispatch of the CUDA scan: argument checks, choice of algorithm and tile shape, scratch for
// the look-back, launches. Kernels live in cuda_sequential.cuh, cuda_tiled.cuh (real operators,
// unit-stride time or channels) and cuda_chunked.cuh (everything else).
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <random>
#include <type_traits>

#include "linrec/core/exec.hpp"
#include "linrec/scan/algorithm.hpp"
#include "linrec/scan/detail/cuda_check.cuh"
#include "linrec/scan/detail/cuda_chunked.cuh"
#include "linrec/scan/detail/cuda_scratch.cuh"
#include "linrec/scan/detail/cuda_sequential.cuh"
#include "linrec/scan/detail/cuda_tiled.cuh"
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

// ---- the register-tiled kernels (real operators, unit-stride time or channels) ----
// Tile parameters, per tile shape: sub-tiles per row tile (SUB) or steps per thread of the
// channel tiles (L), and tiles resident per SM (BLOCKS, which caps registers per thread).
// Macros so that a benchmark build can sweep them (tools/gpu_check.sh BENCH_VARIANTS).
#ifndef LINREC_CUDA_TILED_ROWS_FWD_SIZE
#define LINREC_CUDA_TILED_ROWS_FWD_SIZE 4
#endif
#ifndef LINREC_CUDA_TILED_ROWS_FWD_BLOCKS
#define LINREC_CUDA_TILED_ROWS_FWD_BLOCKS 3
#endif
// Rows of at least deep_chain_chunks tiles (a single row of millions of steps): the look-back
// waits dominate a tile's life, so more tiles per SM hide them.
// 4 resident, not 3: faster on the long row, slower on many rows (H100), docs/notes/cuda_scan.md
#ifndef LINREC_CUDA_TILED_ROWS_FWD_DEEP_BLOCKS
#define LINREC_CUDA_TILED_ROWS_FWD_DEEP_BLOCKS 4
#endif
inline constexpr index_t deep_chain_chunks = 1024;
#ifndef LINREC_CUDA_TILED_ROWS_BWD_SIZE
#define LINREC_CUDA_TILED_ROWS_BWD_SIZE 4
#endif
#ifndef LINREC_CUDA_TILED_ROWS_BWD_BLOCKS
#define LINREC_CUDA_TILED_ROWS_BWD_BLOCKS 2
#endif
// Channel tiles: WIDE = 32 lanes, NARROW = 16 and 8 lanes (channel_lanes picks, counting each
// width's resident tiles with its own BLOCKS).
#ifndef LINREC_CUDA_TILED_WIDE_FWD_SIZE
#define LINREC_CUDA_TILED_WIDE_FWD_SIZE 8
#endif
#ifndef LINREC_CUDA_TILED_WIDE_FWD_BLOCKS
#define LINREC_CUDA_TILED_WIDE_FWD_BLOCKS 2
#endif
#ifndef LINREC_CUDA_TILED_WIDE_BWD_SIZE
#define LINREC_CUDA_TILED_WIDE_BWD_SIZE 8
#endif
#ifndef LINREC_CUDA_TILED_WIDE_BWD_BLOCKS
#define LINREC_CUDA_TILED_WIDE_BWD_BLOCKS 2
#endif
#ifndef LINREC_CUDA_TILED_NARROW_FWD_SIZE
#define LINREC_CUDA_TILED_NARROW_FWD_SIZE 8
#endif
#ifndef LINREC_CUDA_TILED_NARROW_FWD_BLOCKS
#define LINREC_CUDA_TILED_NARROW_FWD_BLOCKS 2
#endif
#ifndef LINREC_CUDA_TILED_NARROW_BWD_SIZE
#define LINREC_CUDA_TILED_NARROW_BWD_SIZE 8
#endif
#ifndef LINREC_CUDA_TILED_NARROW_BWD_BLOCKS
#define LINREC_CUDA_TILED_NARROW_BWD_BLOCKS 2
#endif

struct tile_params {
  int size;    // SUB or L
  int blocks;  // resident per SM
};
inline constexpr tile_params rows_fwd_params{LINREC_CUDA_TILED_ROWS_FWD_SIZE, LINREC_CUDA_TILED_ROWS_FWD_BLOCKS};
inline constexpr tile_params rows_fwd_deep_params{LINREC_CUDA_TILED_ROWS_FWD_SIZE,
                                                  LINREC_CUDA_TILED_ROWS_FWD_DEEP_BLOCKS};
inline constexpr tile_params rows_bwd_params{LINREC_CUDA_TILED_ROWS_BWD_SIZE, LINREC_CUDA_TILED_ROWS_BWD_BLOCKS};
inline constexpr tile_params wide_fwd_params{LINREC_CUDA_TILED_WIDE_FWD_SIZE, LINREC_CUDA_TILED_WIDE_FWD_BLOCKS};
inline constexpr tile_params wide_bwd_params{LINREC_CUDA_TILED_WIDE_BWD_SIZE, LINREC_CUDA_TILED_WIDE_BWD_BLOCKS};
inline constexpr tile_params narrow_fwd_params{LINREC_CUDA_TILED_NARROW_FWD_SIZE, LINREC_CUDA_TILED_NARROW_FWD_BLOCKS};
inline constexpr tile_params narrow_bwd_params{LINREC_CUDA_TILED_NARROW_BWD_SIZE, LINREC_CUDA_TILED_NARROW_BWD_BLOCKS};
// Rows shorter than this go to the channel tiles or the staged kernel (a row tile holds
// sub·256·V steps; a short row would leave most of it idle).
inline constexpr index_t tiled_rows_min_time = 2048;

template <class Op>
struct is_real_op : std::false_type {};
template <class T>
struct is_real_op<real_op<T>> : std::true_type {};

struct tensor_view {
  const void* ptr;
  strides3 strides;
};

enum class tiled_kind { none, rows, channels };
struct tiled_plan {
  tiled_kind kind = tiled_kind::none;
  bool vector = false;  // 16-byte accesses
};

template <class T>
tiled_plan plan_tiled(const scan_shape& s, std::initializer_list<tensor_view> tensors) {
  constexpr index_t v = index_t(16 / sizeof(T));
  auto aligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  // A stride along a dimension of extent 1 addresses nothing: [B,T,1] rows are vectorisable
  // whatever their channel stride says.
  auto vec_stride = [&](index_t stride, index_t extent) { return extent == 1 || stride % v == 0; };
  bool time_unit = true, channel_unit = true, rows_vec = true, channels_vec = s.channels % v == 0;
  for (const tensor_view& t : tensors) {
    if (t.ptr == nullptr) continue;
    time_unit = time_unit && t.strides.time == 1;
    channel_unit = channel_unit && (t.strides.channel == 1 || s.channels == 1);
    const bool batch_vec = vec_stride(t.strides.batch, s.batch);
    rows_vec = rows_vec && aligned(t.ptr) && batch_vec && vec_stride(t.strides.channel, s.channels);
    channels_vec = channels_vec && aligned(t.ptr) && batch_vec && vec_stride(t.strides.time, s.time);
  }
  tiled_plan plan;
  if (time_unit && s.time >= tiled_rows_min_time) {
    plan.kind = tiled_kind::rows;
    plan.vector = rows_vec;
  } else if (channel_unit && s.time > 1) {
    plan.kind = tiled_kind::channels;
    plan.vector = channels_vec;
  }
  return plan;
}

// Multiprocessors of the current device, looked up once per device and host thread.
inline int multiprocessors() {
  int device = 0;
  LINREC_CUDA_CHECK(cudaGetDevice(&device));
  thread_local int cached_device = -1, cached_count = 0;
  if (device != cached_device) {
    LINREC_CUDA_CHECK(cudaDeviceGetAttribute(&cached_count, cudaDevAttrMultiProcessorCount, device));
    cached_device = device;
  }
  return cached_count;
}

// Lanes per time row of a channel tile (LANES·v channels): the widest tile whose lines (batch
// entry × channel group, the independent look-back chains) are at least twice the tiles
// resident on the device. A tile's nearest predecessor is `lines` tiles earlier in dispatch
// order; two waves back, it has finished when the tile starts, and the read issued with the
// tile's loads is its whole look-back. With fewer lines the wait sits on each tile's critical
// path.
// The rule picks the fastest width (or within 1%) at the H100 shapes in docs/notes/cuda_scan.md.
// wide_blocks / narrow_blocks: tiles resident per SM of the 32-lane and of the 16/8-lane kernels.
inline int channel_lanes(const scan_shape& s, index_t v, int wide_blocks, int narrow_blocks) {
  const int sms = multiprocessors();
  for (const int lanes : {32, 16}) {
    const index_t channels = lanes * v;
    const index_t resident = index_t(sms) * (lanes == 32 ? wide_blocks : narrow_blocks);
    if (s.channels >= channels && s.batch * ((s.channels + channels - 1) / channels) >= 2 * resident) return lanes;
  }
  return 8;
}

// A 64-bit tag no earlier call of this process carried: odd, so never the zero of fresh
// memory, and seeded per process so that another process's stale records in recycled memory
// match with probability 2^-64.
inline cuda_tiled::word next_epoch() {
  static std::atomic<cuda_tiled::word> counter{[] {
    std::random_device entropy;
    const auto clock = static_cast<cuda_tiled::word>(std::chrono::steady_clock::now().time_since_epoch().count());
    return ((cuda_tiled::word(entropy()) << 32) ^ cuda_tiled::word(entropy()) ^ (clock * 0x9E3779B97F4A7C15ull)) | 1u;
  }()};
  return counter.fetch_add(2, std::memory_order_relaxed);
}

// Look-back records of the tiled kernels. Not cleared: the epoch tells this call's records
// from anything else the memory holds, so the stream's kept buffer serves every call. The
// exception is a graph capture, whose replays all carry the captured epoch.
template <class T>
struct tiled_scratch {
  std::optional<stream_scratch> per_call;  // while the stream is captured into a graph
  cudaEvent_t last_use = nullptr;          // of the kept buffer
  cuda_tiled::lookback<T> state;
  static std::size_t words(index_t tiles, int channels) {
    return std::size_t(tiles) * std::size_t(channels) * cuda_tiled::record_words<T>;
  }
  // rows: each tile's two records interleaved (cuda_tiled::row_record_stride); else two arrays.
  tiled_scratch(index_t tiles, int channels, bool needed, bool rows, cudaStream_t stream) {
    if (!needed) return;
    const std::size_t bytes = 2 * words(tiles, channels) * sizeof(cuda_tiled::word);
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
    auto* base = static_cast<cuda_tiled::word*>(memory);
    state.aggregates = base;
    state.inclusive = base + (rows ? std::size_t(cuda_tiled::record_words<T>) : words(tiles, channels));
    state.epoch = next_epoch();
  }
  // After the launch that uses the records.
  void launched(cudaStream_t stream) const {
    if (last_use) LINREC_CUDA_CHECK(cudaEventRecord(last_use, stream));
  }
};

inline cuda_tiled::grid_shape tiled_grid(const scan_shape& s, tiled_kind kind, int steps, int channels) {
  cuda_tiled::grid_shape g;
  g.chunks = (s.time + steps - 1) / steps;
  g.lines = kind == tiled_kind::rows ? s.batch * s.channels : s.batch * ((s.channels + channels - 1) / channels);
  LINREC_CHECK(g.lines * g.chunks < (index_t(1) << 31),
               "CUDA scan: shape (" << s.batch << ", " << s.time << ", " << s.channels << ") needs "
                                    << g.lines * g.chunks << " tiles, more than one launch can index");
  return g;
}

// Launches kernel<<<tiles>>>(args, grid, lookback) for a tile of `steps` × `channels`.
template <class T, class Args, class Kernel>
void launch_tiled(Kernel kernel, const char* name, const Args& p, tiled_kind kind, int steps, int channels,
                  cudaStream_t stream) {
  const auto grid = tiled_grid(p.shape, kind, steps, channels);
  const index_t tiles = grid.lines * grid.chunks;
  tiled_scratch<T> scratch(tiles, channels, grid.chunks > 1, kind == tiled_kind::rows, stream);
  kernel<<<unsigned(tiles), cuda_tiled::threads, 0, stream>>>(p, grid, scratch.state);
  LINREC_CUDA_CHECK_LAUNCH(name);
  scratch.launched(stream);
}

template <class T, int V, tile_params P>
void launch_rows_forward(const scan_forward_args<real_op<T>>& p, cudaStream_t stream) {
  using namespace cuda_tiled;
  launch_tiled<T>(rows_forward<T, V, P.size, P.blocks>, "linrec::detail::cuda_tiled::rows_forward", p, tiled_kind::rows,
                  rows_config<V, P.size>::steps, 1, stream);
}
template <class T, int V, tile_params P>
void launch_rows_backward(const scan_backward_args<real_op<T>>& p, cudaStream_t stream) {
  using namespace cuda_tiled;
  launch_tiled<T>(rows_backward<T, V, P.size, P.blocks>, "linrec::detail::cuda_tiled::rows_backward", p,
                  tiled_kind::rows, rows_config<V, P.size>::steps, 1, stream);
}
template <class T, int V, int LANES, tile_params P>
void launch_channels_forward(const scan_forward_args<real_op<T>>& p, cudaStream_t stream) {
  using namespace cuda_tiled;
  using c = channels_config<V, LANES, P.size>;
  launch_tiled<T>(channels_forward<T, V, LANES, P.size, P.blocks>, "linrec::detail::cuda_tiled::channels_forward", p,
                  tiled_kind::channels, c::steps, c::channels, stream);
}
template <class T, int V, int LANES, tile_params P>
void launch_channels_backward(const scan_backward_args<real_op<T>>& p, cudaStream_t stream) {
  using namespace cuda_tiled;
  using c = channels_config<V, LANES, P.size>;
  launch_tiled<T>(channels_backward<T, V, LANES, P.size, P.blocks>, "linrec::detail::cuda_tiled::channels_backward", p,
                  tiled_kind::channels, c::steps, c::channels, stream);
}

template <class T>
bool forward_tiled(const scan_forward_args<real_op<T>>& p, cudaStream_t stream) {
  const tiled_plan plan = plan_tiled<T>(p.shape, {{p.a, p.a_strides}, {p.b, p.b_strides}, {p.h, p.h_strides}});
  constexpr int v = int(16 / sizeof(T));
  switch (plan.kind) {
    case tiled_kind::none:
      return false;
    case tiled_kind::rows:
      if (!plan.vector)
        launch_rows_forward<T, 1, rows_fwd_params>(p, stream);
      else if (p.shape.time >= deep_chain_chunks * cuda_tiled::rows_config<v, rows_fwd_params.size>::steps)
        launch_rows_forward<T, v, rows_fwd_deep_params>(p, stream);
      else
        launch_rows_forward<T, v, rows_fwd_params>(p, stream);
      return true;
    case tiled_kind::channels:
      if (!plan.vector) {
        launch_channels_forward<T, 1, 32, wide_fwd_params>(p, stream);
        return true;
      }
      switch (channel_lanes(p.shape, v, wide_fwd_params.blocks, narrow_fwd_params.blocks)) {
        case 32:
          launch_channels_forward<T, v, 32, wide_fwd_params>(p, stream);
          break;
        case 16:
          launch_channels_forward<T, v, 16, narrow_fwd_params>(p, stream);
          break;
        default:
          launch_channels_forward<T, v, 8, narrow_fwd_params>(p, stream);
          break;
      }
      return true;
  }
  return false;
}

template <class T>
bool backward_tiled(const scan_backward_args<real_op<T>>& p, cudaStream_t stream) {
  const tiled_plan plan = plan_tiled<T>(
      p.shape,
      {{p.a, p.a_strides}, {p.h, p.h_strides}, {p.dh, p.dh_strides}, {p.da, p.da_strides}, {p.db, p.db_strides}});
  constexpr int v = int(16 / sizeof(T));
  switch (plan.kind) {
    case tiled_kind::none:
      return false;
    case tiled_kind::rows:
      if (plan.vector)
        launch_rows_backward<T, v, rows_bwd_params>(p, stream);
      else
        launch_rows_backward<T, 1, rows_bwd_params>(p, stream);
      return true;
    case tiled_kind::channels:
      if (!plan.vector) {
        launch_channels_backward<T, 1, 32, wide_bwd_params>(p, stream);
        return true;
      }
      switch (channel_lanes(p.shape, v, wide_bwd_params.blocks, narrow_bwd_params.blocks)) {
        case 32:
          launch_channels_backward<T, v, 32, wide_bwd_params>(p, stream);
          break;
        case 16:
          launch_channels_backward<T, v, 16, narrow_bwd_params>(p, stream);
          break;
        default:
          launch_channels_backward<T, v, 8, narrow_bwd_params>(p, stream);
          break;
      }
      return true;
  }
  return false;
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
  if constexpr (is_real_op<Op>::value)
    if (forward_tiled(p, stream)) return;
  constexpr int items = items_for<std::max(sizeof(typename Op::decay_type), sizeof(typename Op::value_type))>;
  switch (choose_tile(p.shape, p.b_strides)) {
    case tile_kind::wide:
      return launch_forward_chunked<Op, wide_tile<items>>(p, stream);
    case tile_kind::rows:
      return launch_forward_chunked<Op, rows_tile<items>>(p, stream);
    case tile_kind::row:
      return launch_forward_chunked<Op, row_tile<items>>(p, stream);
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
  if constexpr (is_real_op<Op>::value)
    if (backward_tiled(p, stream)) return;
  constexpr int items = items_for<std::max(
      {sizeof(typename Op::decay_type), sizeof(typename Op::value_type), sizeof(typename Op::grad_type)})>;
  switch (choose_tile(p.shape, p.dh_strides)) {
    case tile_kind::wide:
      return launch_backward_chunked<Op, wide_tile<items>>(p, stream);
    case tile_kind::rows:
      return launch_backward_chunked<Op, rows_tile<items>>(p, stream);
    case tile_kind::row:
      return launch_backward_chunked<Op, row_tile<items>>(p, stream);
  }
}

}  // namespace linrec::detail::cuda_dispatch
