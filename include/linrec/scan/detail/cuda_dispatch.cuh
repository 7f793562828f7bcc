#pragma once
// Dispatch of the CUDA scan, one for both directions (CUB's dispatch layer): argument checks,
// the choice of algorithm, of agent and tile shape from the policy, the look-back records,
// the launch. What a direction adds is only its arguments (direction_traits); the agents
// (cuda_agent_*.cuh) hold the device code, one template per direction.
//
//   sequential                          sequential_agent: one thread per (batch, channel)
//   parallel, real operator, unit time  rows_agent: register tiles along time
//   parallel, real operator, unit chan. channels_agent: register tiles across channels
//   parallel, anything else             staged_agent: tiles staged in shared memory
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "linrec/core/exec.hpp"
#include "linrec/scan/algorithm.hpp"
#include "linrec/scan/detail/cuda_agent_channels.cuh"
#include "linrec/scan/detail/cuda_agent_rows.cuh"
#include "linrec/scan/detail/cuda_agent_sequential.cuh"
#include "linrec/scan/detail/cuda_agent_staged.cuh"
#include "linrec/scan/detail/cuda_check.cuh"
#include "linrec/scan/detail/cuda_lookback.cuh"
#include "linrec/scan/detail/cuda_policy.cuh"
#include "linrec/scan/layout.hpp"

namespace linrec::detail::cuda_scan {

// ---- kernels: an agent's run() on one tile per block ----------------------------------------

// Agent::min_blocks: tiles resident per SM the kernel is compiled for (registers per thread ≤
// 65536 / (min_blocks · threads)); 0 gives no hint (nvcc then emits no .minnctapersm).
template <class Agent>
__global__ void __launch_bounds__(Agent::threads, Agent::min_blocks)
    tile_kernel(typename Agent::args_type p, tile_grid grid, lookback_records<typename Agent::pair_type> lb) {
  Agent::run(p, grid, lb);
}

template <class Agent>
__global__ void __launch_bounds__(Agent::threads) sequential_kernel(typename Agent::args_type p) {
  Agent::run(p);
}

// ---- what a direction brings: its arguments -------------------------------------------------

// A pointer argument; `strides` for [B,T,C] tensors, null for the [B,C] states.
struct operand {
  const char* name;
  const void* ptr;
  const strides3* strides;
};

template <class Args>
struct direction_traits;

template <class Op>
struct direction_traits<scan_forward_args<Op>> {
  static constexpr scan_direction direction = scan_direction::forward;
  using op = Op;
  static constexpr const char* where = "scan_forward (CUDA)";
  static constexpr std::size_t widest_element =
      std::max(sizeof(typename Op::decay_type), sizeof(typename Op::value_type));
  static std::array<operand, 5> operands(const scan_forward_args<Op>& p) {
    return {{{"a", p.a, &p.a_strides},
             {"b", p.b, &p.b_strides},
             {"h", p.h, &p.h_strides},
             {"h0", p.h0, nullptr},
             {"h_final", p.h_final, nullptr}}};
  }
  // The tensor whose layout decides the staged tile shape: the main input.
  static const strides3& layout(const scan_forward_args<Op>& p) { return p.b_strides; }
};

template <class Op>
struct direction_traits<scan_backward_args<Op>> {
  static constexpr scan_direction direction = scan_direction::backward;
  using op = Op;
  static constexpr const char* where = "scan_backward (CUDA)";
  static constexpr std::size_t widest_element =
      std::max({sizeof(typename Op::decay_type), sizeof(typename Op::value_type), sizeof(typename Op::grad_type)});
  static std::array<operand, 8> operands(const scan_backward_args<Op>& p) {
    return {{{"a", p.a, &p.a_strides},
             {"h", p.h, &p.h_strides},
             {"h0", p.h0, nullptr},
             {"dh", p.dh, &p.dh_strides},
             {"dh_final", p.dh_final, nullptr},
             {"da", p.da, &p.da_strides},
             {"db", p.db, &p.db_strides},
             {"dh0", p.dh0, nullptr}}};
  }
  static const strides3& layout(const scan_backward_args<Op>& p) { return p.dh_strides; }
};

template <class Op>
struct is_real_op : std::false_type {};
template <class T>
struct is_real_op<real_op<T>> : std::true_type {};

// ---- from a policy to an agent --------------------------------------------------------------

template <class P, scan_direction D>
using tile_table = std::conditional_t<D == scan_direction::forward, typename P::forward, typename P::backward>;

// Look-back window of a tile of G channels.
template <class P, int G>
inline constexpr int lookback_window = G == 1    ? P::lookback_window_one_channel
                                       : G <= 32 ? P::lookback_window_few_channels
                                                 : P::lookback_window_many_channels;

template <class P, class Size, int G>
using tuning_for =
    tile_tuning<Size::items, Size::min_blocks, lookback_window<P, G>, P::streaming_stores, typename P::trace>;

template <class P, scan_direction D, class T, int V, class Size>
using rows_agent_for = rows_agent<D, T, V, tuning_for<P, Size, 1>>;
template <class P, scan_direction D, class T, int V, int LANES, class S>
using channels_agent_for = channels_agent<D, T, V, LANES, tuning_for<P, S, LANES * V>>;
// The staged agent stores through shared memory and is not traced: only items and the
// look-back come from the policy, so policies that differ elsewhere share its kernels. No
// residency hint (min_blocks 0): ptxas then keeps it near 60 registers; with a hint of 1 it
// took up to 158, one tile per SM.
template <class P, scan_direction D, class Op, int Channels, int Slices, int Items>
using staged_agent_for =
    staged_agent<D, Op, Channels, Slices, tile_tuning<Items, 0, lookback_window<P, Channels>, false, no_trace>>;

// ---- choices by shape ----------------------------------------------------------------------

// What `automatic` runs: the time-parallel scan, except for a single step, where there is
// nothing to scan and the one-thread-per-channel kernel does the least work.
inline scan_algorithm choose_algorithm(const scan_shape& s, scan_algorithm requested) {
  if (requested != scan_algorithm::automatic) return requested;
  return s.time == 1 ? scan_algorithm::sequential : scan_algorithm::parallel;
}

// Which register-tiled agent fits the operands' layout, and whether with 16-byte accesses.
enum class tiled_kind { none, rows, channels };
struct tiled_plan {
  tiled_kind kind = tiled_kind::none;
  bool vector = false;
};

template <class T, std::size_t N>
tiled_plan plan_tiled(const scan_shape& s, const std::array<operand, N>& operands, index_t rows_min_time) {
  constexpr index_t v = index_t(16 / sizeof(T));
  auto aligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  // A stride along a dimension of extent 1 addresses nothing: [B,T,1] rows are vectorisable
  // whatever their channel stride says.
  auto vec_stride = [&](index_t stride, index_t extent) { return extent == 1 || stride % v == 0; };
  bool time_unit = true, channel_unit = true, rows_vec = true, channels_vec = s.channels % v == 0;
  for (const operand& o : operands) {
    if (o.ptr == nullptr || o.strides == nullptr) continue;
    const strides3& st = *o.strides;
    time_unit = time_unit && st.time == 1;
    channel_unit = channel_unit && (st.channel == 1 || s.channels == 1);
    const bool batch_vec = vec_stride(st.batch, s.batch);
    rows_vec = rows_vec && aligned(o.ptr) && batch_vec && vec_stride(st.channel, s.channels);
    channels_vec = channels_vec && aligned(o.ptr) && batch_vec && vec_stride(st.time, s.time);
  }
  tiled_plan plan;
  if (time_unit && s.time >= rows_min_time) {
    plan.kind = tiled_kind::rows;
    plan.vector = rows_vec;
  } else if (channel_unit && s.time > 1) {
    plan.kind = tiled_kind::channels;
    plan.vector = channels_vec;
  }
  return plan;
}

// Lanes per time row of a channel tile (LANES·v channels): the widest tile whose lines (batch
// entry × channel group, the independent look-back chains) are at least twice the tiles
// resident on the device. A tile's nearest predecessor is `lines` tiles earlier in dispatch
// order; two waves back, it has finished when the tile starts, and the read issued with the
// tile's loads is its whole look-back. With fewer lines the wait sits on each tile's critical
// path. The rule picks the fastest width (or within 1%) at the H100 shapes in
// docs/notes/cuda_scan.md.
template <class P, scan_direction D>
int channel_lanes(const scan_shape& s, index_t v) {
  using table = tile_table<P, D>;
  const int sms = current_device().multiprocessors;
  for (const int lanes : {32, 16}) {
    const index_t channels = lanes * v;
    const index_t resident =
        index_t(sms) * (lanes == 32 ? table::channels_wide::min_blocks : table::channels_narrow::min_blocks);
    if (s.channels >= channels && s.batch * ((s.channels + channels - 1) / channels) >= 2 * resident) return lanes;
  }
  return 8;
}

// Which staged tile fits the layout: the contiguous dimension decides how a tile is loaded;
// the channel count decides how many channels a tile can fill.
enum class staged_kind { wide, rows, row };
inline staged_kind choose_staged(const scan_shape& s, const strides3& layout) {
  const bool time_contiguous = layout.time == 1 && s.time > 1;
  if (!time_contiguous && s.channels >= 32) return staged_kind::wide;  // 32 channels × 8 threads
  if (s.channels >= 8) return staged_kind::rows;                       // 8 × 32: rows, or 8..31 channels
  return staged_kind::row;                                             // 1 × 256: one long row per tile
}

// ---- launches ------------------------------------------------------------------------------

template <class Agent>
tile_grid grid_for(const scan_shape& s) {
  tile_grid g;
  g.lines = Agent::lines(s);
  g.chunks = (s.time + Agent::steps - 1) / Agent::steps;
  LINREC_CHECK(g.lines * g.chunks < (index_t(1) << 31),
               "CUDA scan: shape (" << s.batch << ", " << s.time << ", " << s.channels << ") needs "
                                    << g.lines * g.chunks << " tiles, more than one launch can index");
  return g;
}

// One block per tile, with the look-back records of this launch.
template <class Agent>
void launch(const typename Agent::args_type& p, cudaStream_t stream) {
  const tile_grid grid = grid_for<Agent>(p.shape);
  const index_t tiles = grid.lines * grid.chunks;
  const lookback_storage<typename Agent::pair_type, Agent::channels> storage(tiles, grid.chunks > 1, stream);
  const auto kernel = tile_kernel<Agent>;
  // Static + dynamic shared memory above 48 KB needs the opt-in; the static part is small but
  // not zero, so opt in for every launch rather than guess the margin.
  if constexpr (Agent::dynamic_smem > 0)
    LINREC_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Agent::dynamic_smem)));
  kernel<<<unsigned(tiles), Agent::threads, Agent::dynamic_smem, stream>>>(p, grid, storage.records);
  LINREC_CUDA_CHECK_LAUNCH(Agent::name);
  storage.launched(stream);
}

template <class P, scan_direction D, class T, int V, int LANES, class Args>
void launch_channels(const Args& p, cudaStream_t stream) {
  using table = tile_table<P, D>;
  using size = std::conditional_t<LANES == 32, typename table::channels_wide, typename table::channels_narrow>;
  launch<channels_agent_for<P, D, T, V, LANES, size>>(p, stream);
}

// The register-tiled agents, where the layout allows: false where it does not.
template <class P, class Args>
bool scan_tiled(const Args& p, cudaStream_t stream) {
  using traits = direction_traits<Args>;
  constexpr scan_direction D = traits::direction;
  using T = typename traits::op::value_type;
  using table = tile_table<P, D>;
  constexpr int v = int(16 / sizeof(T));
  const tiled_plan plan = plan_tiled<T>(p.shape, traits::operands(p), P::rows_min_time);
  switch (plan.kind) {
    case tiled_kind::none:
      return false;
    case tiled_kind::rows:
      if (!plan.vector)
        launch<rows_agent_for<P, D, T, 1, typename table::rows>>(p, stream);
      else if (p.shape.time >= P::deep_chain_chunks * rows_agent_for<P, D, T, v, typename table::rows>::steps)
        launch<rows_agent_for<P, D, T, v, typename table::rows_deep>>(p, stream);
      else
        launch<rows_agent_for<P, D, T, v, typename table::rows>>(p, stream);
      return true;
    case tiled_kind::channels:
      if (!plan.vector) {
        launch_channels<P, D, T, 1, 32>(p, stream);
        return true;
      }
      switch (channel_lanes<P, D>(p.shape, v)) {
        case 32:
          launch_channels<P, D, T, v, 32>(p, stream);
          break;
        case 16:
          launch_channels<P, D, T, v, 16>(p, stream);
          break;
        default:
          launch_channels<P, D, T, v, 8>(p, stream);
          break;
      }
      return true;
  }
  return false;
}

template <class P, class Args>
void scan_staged(const Args& p, cudaStream_t stream) {
  using traits = direction_traits<Args>;
  constexpr scan_direction D = traits::direction;
  using Op = typename traits::op;
  constexpr int items = traits::widest_element <= 4 ? P::staged_items_narrow : P::staged_items_wide;
  switch (choose_staged(p.shape, traits::layout(p))) {
    case staged_kind::wide:
      return launch<staged_agent_for<P, D, Op, 32, 8, items>>(p, stream);
    case staged_kind::rows:
      return launch<staged_agent_for<P, D, Op, 8, 32, items>>(p, stream);
    case staged_kind::row:
      return launch<staged_agent_for<P, D, Op, 1, 256, items>>(p, stream);
  }
}

// The parallel scan under the policy a chain picks (policy_chain::invoke calls invoke<P>()).
template <class Args>
struct parallel_scan {
  const Args& p;
  cudaStream_t stream;
  template <class P>
  void invoke() const {
    if constexpr (is_real_op<typename direction_traits<Args>::op>::value)
      if (scan_tiled<P>(p, stream)) return;
    scan_staged<P>(p, stream);
  }
};

template <class Agent>
void launch_sequential(const typename Agent::args_type& p, cudaStream_t stream) {
  const index_t rows = p.shape.batch * p.shape.channels;
  const index_t blocks = (rows + Agent::threads - 1) / Agent::threads;
  LINREC_CHECK(blocks < (index_t(1) << 31), "CUDA scan: " << rows << " sequences are too many for one launch");
  sequential_kernel<Agent><<<unsigned(blocks), Agent::threads, 0, stream>>>(p);
  LINREC_CUDA_CHECK_LAUNCH(Agent::name);
}

// The entry point of both directions: Args is scan_forward_args<Op> or scan_backward_args<Op>.
template <class Policies, class Args>
void dispatch(const cuda& exec, const Args& p, scan_algorithm algorithm) {
  using traits = direction_traits<Args>;
  validate(p);
  for (const operand& o : traits::operands(p)) check_device_pointer(o.ptr, traits::where, o.name);
  const cudaStream_t stream = exec.stream;
  if (choose_algorithm(p.shape, algorithm) == scan_algorithm::sequential)
    return launch_sequential<sequential_agent<traits::direction, typename traits::op>>(p, stream);
  Policies::invoke(parallel_scan<Args>{p, stream});
}

}  // namespace linrec::detail::cuda_scan
