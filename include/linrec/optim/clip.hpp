#pragma once
// Global gradient-norm clipping: if ‖g‖₂ over all parameters exceeds max_norm, every gradient
// is multiplied by max_norm / (‖g‖₂ + 1e-6). Returns ‖g‖₂ before clipping (accumulated in
// double), which training logs report.
#include <cmath>
#include <vector>

#include "linrec/autodiff/var.hpp"
#include "linrec/tensor/eigen.hpp"

namespace linrec {

template <class T>
double grad_norm(const std::vector<basic_parameter<T>>& params) {
  double sq = 0;
  for (const auto& p : params)
    if (p.grad().defined()) sq += as_array(p.grad()).template cast<double>().square().sum();
  return std::sqrt(sq);
}

template <class T>
double clip_grad_norm(const std::vector<basic_parameter<T>>& params, double max_norm) {
  LINREC_CHECK(max_norm > 0, "clip_grad_norm: max_norm must be positive, got " << max_norm);
  const double norm = grad_norm(params);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0)
    for (const auto& p : params)
      if (p.grad().defined()) as_array(p.grad()) *= static_cast<T>(coef);
  return norm;
}

}  // namespace linrec
