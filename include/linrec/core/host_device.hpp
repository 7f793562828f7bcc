#pragma once
// LINREC_HOST_DEVICE marks a function that runs on the host and, in a translation unit compiled
// by nvcc, on the device too: the per-element math is written once, so CPU-only builds (and CI)
// test the same code the CUDA kernels run.
#if defined(__CUDACC__)
#define LINREC_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LINREC_HOST_DEVICE inline
#endif
