#pragma once
// Normalisation over the last axis.
//
//   layer_norm(tape, x, gamma, beta, eps)          x [..., C], gamma/beta [C]
//   group_norm(tape, x, groups, gamma, beta, eps)  x [..., C] split into `groups` heads of
//                                                  C/groups channels, each normalised on its
//                                                  own (RWKV-6's per-head norm of y), gamma/beta [C]
//
// x̂ = (x − μ)/√(σ² + eps) per row (per row and group), y = x̂ ⊙ gamma + beta; σ² is the
// biased variance. gamma/beta may be undefined Vars (no affine part).
#include <cmath>

#include "linrec/autodiff/device_kernels.hpp"
#include "linrec/autodiff/tape.hpp"

namespace linrec {

template <class T>
basic_var<T> group_norm(basic_tape<T>& tape, const basic_var<T>& x, index_t groups, const basic_var<T>& gamma,
                        const basic_var<T>& beta, double eps = 1e-5) {
  const bool record = tape.begin("group_norm", {&x, &gamma, &beta});
  const Shape& s = x.shape();
  LINREC_CHECK(s.rank() >= 1, "group_norm: x must have rank ≥ 1");
  const index_t channels = s.back();
  LINREC_CHECK(groups > 0 && channels % groups == 0,
               "group_norm: " << channels << " channels of x " << s << " do not split into " << groups << " groups");
  if (gamma.defined())
    LINREC_CHECK(gamma.shape() == Shape{channels},
                 "group_norm: gamma " << gamma.shape() << ", want [" << channels << "]");
  if (beta.defined())
    LINREC_CHECK(beta.shape() == Shape{channels}, "group_norm: beta " << beta.shape() << ", want [" << channels << "]");
  const index_t size = channels / groups, rows = (channels ? s.numel() / channels : 0) * groups;
  const device dev = x.value().where();
  if (!dev.is_cpu()) {
    auto xhat = basic_tensor<T>::empty(s, dev);
    auto rstd = basic_tensor<T>::empty(Shape{rows}, dev);
    auto y = basic_tensor<T>::empty(s, dev);
    detail::kernel<detail::norm_forward_kernel<T>>()(rows, size, channels, static_cast<T>(eps), x.value().raw_data(),
                                                     gamma.defined() ? gamma.value().raw_data() : nullptr,
                                                     beta.defined() ? beta.value().raw_data() : nullptr,
                                                     xhat.raw_data(), rstd.raw_data(), y.raw_data());
    return tape.finish(
        "group_norm", {&x, &gamma, &beta}, std::move(y), record, [xhat, rstd, rows, size, channels](op_record<T>& r) {
          auto sx = basic_tape<T>::sink(r, 0), sg = basic_tape<T>::sink(r, 1), sb = basic_tape<T>::sink(r, 2);
          const auto pointer = [](const grad_sink<T>& k) { return k ? k.tensor.raw_data() : nullptr; };
          detail::kernel<detail::norm_backward_kernel<T>>()(
              rows, size, channels, r.grad_out().raw_data(), xhat.raw_data(), rstd.raw_data(),
              r.inputs[1] ? r.inputs[1]->value.raw_data() : nullptr, pointer(sx), !sx.fresh, pointer(sg), !sg.fresh,
              pointer(sb), !sb.fresh);
        });
  }
  // Per (row, group): x̂ (kept for backward) and 1/σ.
  auto xhat = basic_tensor<T>::empty(s);
  auto rstd = basic_tensor<T>::empty(Shape{rows});
  auto X = as_row_array(x.value(), rows, size);
  auto Xh = as_row_array(xhat, rows, size);
  T* rs = rstd.data();
  for (index_t i = 0; i < rows; ++i) {
    const T mu = X.row(i).mean();
    const T var = (X.row(i) - mu).square().mean();
    rs[i] = T(1) / std::sqrt(var + static_cast<T>(eps));
    Xh.row(i) = (X.row(i) - mu) * rs[i];
  }
  auto y = basic_tensor<T>::empty(s);
  auto Y = as_row_array(y, rows / groups, channels);
  auto XhC = as_row_array(xhat, rows / groups, channels);
  if (gamma.defined())
    Y = XhC.rowwise() * as_row_array(gamma.value(), 1, channels).row(0);
  else
    Y = XhC;
  if (beta.defined()) Y.rowwise() += as_row_array(beta.value(), 1, channels).row(0);
  return tape.finish("group_norm", {&x, &gamma, &beta}, std::move(y), record,
                     [xhat, rstd, rows, size, channels, groups](op_record<T>& r) {
                       auto G = as_row_array(r.grad_out(), rows / groups, channels);
                       auto XhC = as_row_array(xhat, rows / groups, channels);
                       if (auto s = basic_tape<T>::sink(r, 1))
                         s.put(as_row_array(s.tensor, 1, channels), (G * XhC).colwise().sum());
                       if (auto s = basic_tape<T>::sink(r, 2))
                         s.put(as_row_array(s.tensor, 1, channels), G.colwise().sum());
                       auto sx = basic_tape<T>::sink(r, 0);
                       if (!sx) return;
                       // dx̂ = g ⊙ gamma;  dx = (dx̂ − mean(dx̂) − x̂ · mean(dx̂ ⊙ x̂)) / σ
                       auto dxhat = basic_tensor<T>::empty(r.outputs[0]->value.shape());
                       auto D = as_row_array(dxhat, rows / groups, channels);
                       if (r.inputs[1])
                         D = G.rowwise() * as_row_array(r.inputs[1]->value, 1, channels).row(0);
                       else
                         D = G;
                       auto Dg = as_row_array(dxhat, rows, size);
                       auto Xh = as_row_array(xhat, rows, size);
                       auto DX = as_row_array(sx.tensor, rows, size);
                       const T* rs = rstd.data();
                       for (index_t i = 0; i < rows; ++i) {
                         const T m1 = Dg.row(i).mean();
                         const T m2 = (Dg.row(i) * Xh.row(i)).mean();
                         sx.put(DX.row(i), (Dg.row(i) - m1 - Xh.row(i) * m2) * rs[i]);
                       }
                     });
}

template <class T>
basic_var<T> layer_norm(basic_tape<T>& tape, const basic_var<T>& x, const basic_var<T>& gamma, const basic_var<T>& beta,
                        double eps = 1e-5) {
  return group_norm(tape, x, 1, gamma, beta, eps);
}

}  // namespace linrec
