#pragma once
// The device kernels that tensors themselves use (filling, in-place addition), as kernel slots
// (core/kernel_slot.hpp) installed by linrec/tensor/cuda.cuh.
#include "linrec/core/index.hpp"
#include "linrec/core/kernel_slot.hpp"

namespace linrec::detail {

// y[i] = value for i < n
template <class T>
struct fill_kernel {
  using signature = void(index_t n, T value, T* y);
  static constexpr const char* name = "fill";
};

// y[i] += x[i] for i < n (gradient accumulation)
template <class T>
struct add_into_kernel {
  using signature = void(index_t n, const T* x, T* y);
  static constexpr const char* name = "add_into";
};

}  // namespace linrec::detail
