#pragma once
// Execution tags: where and how a computation runs is an explicit argument, never global state.

// Forward declaration of the CUDA runtime's stream handle so that plain C++ code can name a
// stream without including CUDA headers (cudaStream_t is `CUstream_st*`).
struct CUstream_st;

namespace linrec {

// Run on the host. threads == 0 means "all threads OpenMP would use"; 1 forces single-threaded.
struct cpu {
  int threads = 0;
};

// Run on the current CUDA device, asynchronously on `stream` (nullptr = legacy default stream).
struct cuda {
  CUstream_st* stream = nullptr;
};

}  // namespace linrec
