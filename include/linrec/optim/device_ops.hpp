#pragma once
// Optimizer updates on device tensors. The per-element AdamW arithmetic is written once here
// (host and device); `optim/cuda.cuh`, included by a translation unit compiled by nvcc,
// installs the kernels that apply it, and the global-norm reduction, in `device_optim_slot`.
// Without it, an optimizer given CUDA parameters is a linrec::Error naming the device.
#include <cmath>
#include <cstddef>

#include "linrec/core/error.hpp"
#include "linrec/core/host_device.hpp"
#include "linrec/core/index.hpp"
#include "linrec/tensor/device.hpp"

namespace linrec {

// What one AdamW step needs per element, computed once per parameter group on the host exactly
// as the CPU path computes it (optim/adamw.hpp).
template <class T>
struct adamw_coefficients {
  T beta1, beta2, one_minus_beta1, one_minus_beta2, eps;
  T decay;        // lr · λ
  T step_size;    // lr / (1 − β1^t)
  T inv_sqrt_c2;  // 1 / √(1 − β2^t)
};

// m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;  p ← p − lr·λ·p − (lr/c1)·m / (√v/√c2 + ε).
// The same operations in the same order as the CPU path's Eigen expression.
template <class T>
LINREC_HOST_DEVICE void adamw_update_element(T& p, T g, T& m, T& v, const adamw_coefficients<T>& c) {
  using std::sqrt;
  m = c.beta1 * m + c.one_minus_beta1 * g;
  v = c.beta2 * v + c.one_minus_beta2 * (g * g);
  p = p - c.decay * p - c.step_size * m / (sqrt(v) * c.inv_sqrt_c2 + c.eps);
}

namespace detail {

struct device_optim_ops {
  // One AdamW update of n elements of one parameter, on device `device_index`.
  void (*adamw)(int device_index, float* p, const float* g, float* m, float* v, index_t n,
                const adamw_coefficients<float>& c) = nullptr;
  // Σ x² over `count` tensors, accumulated in double on the device; one transfer to the host.
  double (*sum_squares)(int device_index, const float* const* tensors, const index_t* sizes,
                        std::size_t count) = nullptr;
  // x ← factor · x.
  void (*scale)(int device_index, float* x, index_t n, float factor) = nullptr;
};

inline device_optim_ops& device_optim_slot() {
  static device_optim_ops ops;
  return ops;
}

inline const device_optim_ops& require_device_optim(const char* who, const device& dev) {
  const device_optim_ops& ops = device_optim_slot();
  LINREC_CHECK(ops.adamw != nullptr, who << ": parameters on " << dev
                                         << ", but no CUDA optimizer backend is compiled in (include "
                                            "linrec/optim/cuda.cuh in a translation unit compiled by nvcc)");
  return ops;
}

}  // namespace detail
}  // namespace linrec
