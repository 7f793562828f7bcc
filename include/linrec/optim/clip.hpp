#pragma once
// Global gradient-norm clipping: if ‖g‖₂ over all parameters exceeds max_norm, every gradient
// is multiplied by max_norm / (‖g‖₂ + 1e-6). Returns ‖g‖₂ before clipping (accumulated in
// double), which training logs report. Gradients on a CUDA device are summed there, all
// tensors of a device in one reduction with one transfer to the host (optim/cuda.cuh).
#include <cmath>
#include <map>
#include <type_traits>
#include <vector>

#include "linrec/autodiff/var.hpp"
#include "linrec/optim/device_ops.hpp"
#include "linrec/tensor/eigen.hpp"

namespace linrec {

template <class T>
double grad_norm(const std::vector<basic_parameter<T>>& params) {
  double sq = 0;
  std::map<int, std::pair<std::vector<const T*>, std::vector<index_t>>> on_device;  // by device index
  for (const auto& p : params) {
    if (!p.grad().defined()) continue;
    if (p.grad().where().is_cpu()) {
      sq += as_array(p.grad()).template cast<double>().square().sum();
    } else {
      auto& [tensors, sizes] = on_device[p.grad().where().index];
      tensors.push_back(p.grad().raw_data());
      sizes.push_back(p.grad().numel());
    }
  }
  for (const auto& [index, lists] : on_device) {
    if constexpr (std::is_same_v<T, float>) {
      sq += detail::require_device_optim("grad_norm", cuda_device(index))
                .sum_squares(index, lists.first.data(), lists.second.data(), lists.first.size());
    } else {
      LINREC_CHECK(false, "grad_norm: gradients on " << cuda_device(index) << " are supported for float only");
    }
  }
  return std::sqrt(sq);
}

template <class T>
double clip_grad_norm(const std::vector<basic_parameter<T>>& params, double max_norm) {
  LINREC_CHECK(max_norm > 0, "clip_grad_norm: max_norm must be positive, got " << max_norm);
  const double norm = grad_norm(params);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0)
    for (const auto& p : params) {
      if (!p.grad().defined()) continue;
      if (p.grad().where().is_cpu()) {
        as_array(p.grad()) *= static_cast<T>(coef);
      } else if constexpr (std::is_same_v<T, float>) {
        const device dev = p.grad().where();
        detail::require_device_optim("clip_grad_norm", dev)
            .scale(dev.index, p.grad().raw_data(), p.grad().numel(), static_cast<float>(coef));
      }
    }
  return norm;
}

}  // namespace linrec
