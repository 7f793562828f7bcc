#pragma once
// Every CUDA backend of linrec, for the one translation unit a program compiles with nvcc:
// the scan, tensor storage, the tape's ops, the layers' ops and the optimizers (docs/gpu.md).
//
//   // my_cuda.cu (nvcc):  #include "linrec/cuda.cuh"   — nothing else; the rest of the program
//   // stays C++ for the host compiler and puts its tensors on cuda_device().
#ifndef EIGEN_NO_CUDA
#define EIGEN_NO_CUDA  // Eigen stays host code in nvcc translation units
#endif
#include "linrec/autodiff/cuda.cuh"
#include "linrec/layers/cuda.cuh"
#include "linrec/optim/cuda.cuh"
#include "linrec/scan/cuda.cuh"
#include "linrec/tensor/cuda.cuh"
