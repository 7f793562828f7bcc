#pragma once
// The CUDA backend of the scan (nvcc translation units only): the same entry points as the
// CPU backend, selected by the linrec::cuda{stream} execution tag.
//
//   #include <linrec/scan/cuda.cuh>
//   linrec::scan_shape shape{batch, time, channels};
//   // a, b, h: device pointers, [B,T,C] contiguous floats
//   linrec::scan_forward(linrec::cuda{stream}, shape, a, b, h);
//   // any layout / operator / algorithm:
//   linrec::scan_forward_args<linrec::real_op<float>> args{shape, a, linrec::strides3::bct(shape), b,
//       linrec::strides3::bct(shape), h, linrec::strides3::bct(shape), h0, h_final};
//   linrec::scan_forward(linrec::cuda{stream}, args, linrec::scan_algorithm::parallel);
//
// Work is queued on `stream` and returns before it completes; the call allocates its
// look-back scratch stream-ordered (cudaMallocAsync). Every pointer must be device or
// managed memory (host memory is a linrec::Error); every CUDA failure is a linrec::Error
// with CUDA's message. complex_op needs nvcc's --expt-relaxed-constexpr (std::complex's
// constexpr accessors are called from device code).
//
// Algorithms: `sequential` = one thread per (batch, channel) walking time; `parallel` = the
// single-pass tiled scan with decoupled look-back; `automatic` = parallel except for T == 1.
//
// Inside (detail/, namespace linrec::detail::cuda_scan), in CUB's layers: cuda_dispatch.cuh
// (one dispatcher for both directions) picks an agent and its tuning from a policy
// (cuda_policy.cuh, one per architecture); the agents (cuda_agent_rows/channels/staged/
// sequential.cuh) are the device code, and all parallel ones share cuda_lookback.cuh.
#include "linrec/scan/detail/cuda_dispatch.cuh"
#include "linrec/scan/scan.hpp"

namespace linrec {

template <class Op>
void scan_forward(const cuda& exec, const scan_forward_args<Op>& args,
                  scan_algorithm algorithm = scan_algorithm::automatic) {
  detail::cuda_scan::dispatch<detail::cuda_scan::default_policies>(exec, args, algorithm);
}

template <class Op>
void scan_backward(const cuda& exec, const scan_backward_args<Op>& args,
                   scan_algorithm algorithm = scan_algorithm::automatic) {
  detail::cuda_scan::dispatch<detail::cuda_scan::default_policies>(exec, args, algorithm);
}

}  // namespace linrec
