#pragma once
// Tuning of the CUDA scan, as types (in the manner of CUB's tuning headers): a policy per
// architecture holds every number the kernels were tuned with, a chain of policies picks one
// for the device a call runs on, and the dispatcher hands a kernel its tuning as a template
// argument (tile_tuning). Two translation units built with different tunings therefore
// instantiate different kernels, with different symbols: no macro decides what an inline
// function means, so no build setting can break the one-definition rule.
//
// A policy to try (a benchmark variant, a tuning sweep) is a type derived from one below that
// hides the members it changes, run through policy_chain<my_policy> (bench_scan_cuda.cu and
// tools/probe_scan_cuda_pipeline.cu do this).
#include <cuda_runtime.h>

#include <type_traits>

#include "linrec/core/index.hpp"
#include "linrec/scan/detail/cuda_check.cuh"

namespace linrec::detail::cuda_scan {

// Per-tile phase timestamps for performance work: a policy's `trace` type gets
// phase(0 start, 1 loaded and folded, 2 carry known, 3 end) from the register-tiled forward
// kernels. The default does nothing.
struct no_trace {
  __device__ __forceinline__ static void phase(int) {}
};

// Items and residency of one tile shape, a row of a policy's table.
//   items: row tiles: sub-tiles of 256·V steps; channel tiles: steps per thread
//   min_blocks: tiles resident per SM the kernel is compiled for (caps registers per thread)
template <int Items, int MinBlocks>
struct tile_size {
  static constexpr int items = Items;
  static constexpr int min_blocks = MinBlocks;
};

// Everything one kernel instantiation is tuned with, resolved by the dispatcher from a policy.
// items, min_blocks: as tile_size (min_blocks 0: no residency hint); lookback_window:
// predecessors each looking-back thread reads per round.
template <int Items, int MinBlocks, int LookbackWindow, bool StreamingStores, class Trace>
struct tile_tuning {
  static constexpr int items = Items;
  static constexpr int min_blocks = MinBlocks;
  static constexpr int lookback_window = LookbackWindow;
  static constexpr bool streaming_stores = StreamingStores;
  using trace = Trace;
};

// Hopper (H100), where every number below was measured: docs/notes/cuda_scan.md has the sweeps.
struct policy_sm90 {
  static constexpr int arch = 900;  // compute capability × 100

  // Register-tiled kernels (real operators), per direction.
  struct forward {
    using rows = tile_size<4, 3>;
    // Rows of at least deep_chain_chunks tiles (a single row of millions of steps): the
    // look-back waits dominate a tile's life, so more tiles per SM hide them. 4, not 3:
    // faster on the long row, slower on many rows.
    using rows_deep = tile_size<4, 4>;
    using channels_wide = tile_size<8, 2>;    // 32 lanes
    using channels_narrow = tile_size<8, 2>;  // 16 and 8 lanes
  };
  struct backward {
    using rows = tile_size<4, 2>;
    using rows_deep = tile_size<4, 2>;
    using channels_wide = tile_size<8, 2>;
    using channels_narrow = tile_size<8, 2>;
  };
  static constexpr index_t deep_chain_chunks = 1024;
  // Rows shorter than this go to the channel tiles or the staged kernel (a row tile holds
  // items·256·V steps; a short row would leave most of it idle).
  static constexpr index_t rows_min_time = 2048;

  // Look-back: predecessors each looking-back thread reads per round. One-channel tiles (one
  // warp looks back, 32 lanes): 1 was the fastest of 1/2/4/8 on the long row; a wider round
  // reaches further but waits for more loads. Tiles of ≤ 32 channels (the whole block):
  // each round's loads, not its reach, are the cost; wider tiles: 2.
  static constexpr int lookback_window_one_channel = 1;
  static constexpr int lookback_window_few_channels = 1;
  static constexpr int lookback_window_many_channels = 2;

  // The register-tiled kernels store their outputs evict-first: mostly faster than plain
  // stores, a pipeline no slower (tools/probe_scan_cuda_pipeline measures both).
  static constexpr bool streaming_stores = true;
  using trace = no_trace;

  // Staged kernel (any operator, any strides): steps per thread for elements of ≤ 4 bytes
  // (two tiles of 4096 floats ≈ 34 KB of shared memory forward), and for wider ones.
  static constexpr int staged_items_narrow = 16;
  static constexpr int staged_items_wide = 8;
};

// What the dispatcher asks of the current device (compute capability × 100, multiprocessors),
// looked up once per device and host thread.
struct device_facts {
  int arch;
  int multiprocessors;
};
inline device_facts current_device() {
  int device = 0;
  LINREC_CUDA_CHECK(cudaGetDevice(&device));
  thread_local int cached_device = -1;
  thread_local device_facts cached{0, 0};
  if (device != cached_device) {
    int major = 0, minor = 0, sms = 0;
    LINREC_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    LINREC_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    LINREC_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    cached = {major * 100 + minor * 10, sms};
    cached_device = device;
  }
  return cached;
}

// Policies, newest architecture first (CUB's ChainedPolicy). invoke(f) runs
// f.template invoke<P>() with the first P whose arch the current device reaches; the last
// policy also serves every older device. A chain of one asks the device nothing.
template <class First, class... Rest>
struct policy_chain {
  template <class F>
  static void invoke(F&& f) {
    if constexpr (sizeof...(Rest) == 0)
      f.template invoke<First>();
    else
      invoke_for(current_device().arch, f);
  }
  template <class F>
  static void invoke_for(int arch, F& f) {
    if constexpr (sizeof...(Rest) == 0) {
      f.template invoke<First>();
    } else {
      if (arch >= First::arch)
        f.template invoke<First>();
      else
        policy_chain<Rest...>::invoke_for(arch, f);
    }
  }
};

// The policy a chain picks for compute capability Arch × 100, at compile time (tests, tools).
template <int Arch, class Chain>
struct policy_for;
template <int Arch, class Only>
struct policy_for<Arch, policy_chain<Only>> {
  using type = Only;
};
template <int Arch, class First, class Second, class... Rest>
struct policy_for<Arch, policy_chain<First, Second, Rest...>> {
  using type =
      std::conditional_t<Arch >= First::arch, First, typename policy_for<Arch, policy_chain<Second, Rest...>>::type>;
};

// What the public entry points run. Only Hopper has been measured; add a policy_smXX in
// front when another architecture is.
using default_policies = policy_chain<policy_sm90>;

}  // namespace linrec::detail::cuda_scan
