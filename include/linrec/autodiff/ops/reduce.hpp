#pragma once
// Reductions: sum / mean over one axis (the axis is removed, or kept with extent 1), and over
// all elements (a rank-0 result, e.g. a loss).
#include "linrec/autodiff/device_kernels.hpp"
#include "linrec/autodiff/tape.hpp"

namespace linrec {

namespace detail {
// y[o, i] = factor · Σ_j x[o, j, i] over the [outer, n, inner] view of x.
template <class T>
basic_var<T> reduce_axis(basic_tape<T>& tape, const char* name, const basic_var<T>& x, int axis, bool keepdim,
                         T factor) {
  const bool record = tape.begin(name, {&x});
  const Shape& s = x.shape();
  const int a = s.axis(axis);
  const index_t outer = s.outer(a), n = s[a], inner = s.inner(a);
  Shape out = keepdim ? s.with(a, 1) : s.without(a);
  if (!x.value().where().is_cpu()) {
    auto y = basic_tensor<T>::empty(out, x.value().where());
    kernel<reduce_axis_kernel<T>>()(outer, n, inner, factor, x.value().raw_data(), y.raw_data());
    return tape.finish(name, {&x}, std::move(y), record, [outer, n, inner, factor](op_record<T>& r) {
      auto s = basic_tape<T>::sink(r, 0);
      if (s)
        kernel<reduce_axis_grad_kernel<T>>()(outer, n, inner, factor, r.grad_out().raw_data(), s.tensor.raw_data(),
                                             !s.fresh);
    });
  }
  auto y = basic_tensor<T>::empty(out);
  auto X = as_row_array(x.value(), outer, n * inner);
  auto Y = as_row_array(y, outer, inner);
  Y.setZero();
  for (index_t j = 0; j < n; ++j) Y += X.middleCols(j * inner, inner);
  Y *= factor;
  return tape.finish(name, {&x}, std::move(y), record, [outer, n, inner, factor](op_record<T>& r) {
    auto s = basic_tape<T>::sink(r, 0);
    if (!s) return;
    auto G = as_row_array(r.grad_out(), outer, inner);
    auto D = as_row_array(s.tensor, outer, n * inner);
    for (index_t j = 0; j < n; ++j) s.put(D.middleCols(j * inner, inner), factor * G);
  });
}
}  // namespace detail

template <class T>
basic_var<T> sum(basic_tape<T>& tape, const basic_var<T>& x, int axis, bool keepdim = false) {
  return detail::reduce_axis(tape, "sum", x, axis, keepdim, T(1));
}
template <class T>
basic_var<T> mean(basic_tape<T>& tape, const basic_var<T>& x, int axis, bool keepdim = false) {
  const index_t n = x.shape()[x.shape().axis(axis)];
  return detail::reduce_axis(tape, "mean", x, axis, keepdim, T(1) / static_cast<T>(n > 0 ? n : 1));
}

namespace detail {
template <class T>
basic_var<T> reduce_all(basic_tape<T>& tape, const char* name, const basic_var<T>& x, T factor) {
  const bool record = tape.begin(name, {&x});
  if (!x.value().where().is_cpu()) {
    auto y = basic_tensor<T>::empty(Shape{}, x.value().where());
    kernel<reduce_all_kernel<T>>()(x.value().numel(), factor, x.value().raw_data(), y.raw_data());
    return tape.finish(name, {&x}, std::move(y), record, [factor](op_record<T>& r) {
      auto s = basic_tape<T>::sink(r, 0);
      if (s)
        kernel<reduce_all_grad_kernel<T>>()(s.tensor.numel(), factor, r.grad_out().raw_data(), s.tensor.raw_data(),
                                            !s.fresh);
    });
  }
  auto y = basic_tensor<T>::full(Shape{}, factor * as_array(x.value()).sum());
  return tape.finish(name, {&x}, std::move(y), record, [factor](op_record<T>& r) {
    auto s = basic_tape<T>::sink(r, 0);
    if (s) s.put(as_array(s.tensor), factor * r.grad_out().item());
  });
}
}  // namespace detail

// Σ of all elements → rank 0.
template <class T>
basic_var<T> sum_all(basic_tape<T>& tape, const basic_var<T>& x) {
  return detail::reduce_all(tape, "sum_all", x, T(1));
}
// Mean of all elements → rank 0.
template <class T>
basic_var<T> mean_all(basic_tape<T>& tape, const basic_var<T>& x) {
  return detail::reduce_all(tape, "mean_all", x, T(1) / static_cast<T>(x.value().numel() > 0 ? x.value().numel() : 1));
}

}  // namespace linrec
