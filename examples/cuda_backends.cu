// The CUDA backends of train_rwkv (tensors, the tape's ops, RWKV-6's WKV, the optimizers), in
// the one translation unit nvcc compiles; the program itself is host C++ (docs/gpu.md).
#include "linrec/cuda.cuh"
