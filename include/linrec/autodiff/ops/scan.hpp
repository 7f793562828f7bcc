#pragma once
// The scan h[t] = a[t] ⊙ h[t-1] + b[t] as a differentiable op, for every scan operator:
//
//   auto [h, h_final] = linrec::scan<linrec::real_op>(tape, a, b, h0);      // real
//   auto [h, h_final] = linrec::scan<linrec::complex_op>(tape, a, b, h0);   // complex
//   auto [h, h_final] = linrec::scan<linrec::log_op>(tape, a, b, h0);       // log space
//
// Shapes (B batch, T time, C channels; "·2" = a trailing axis of 2):
//   operator     a (time-varying | time-invariant)   b, h          h0, h_final
//   real_op      [B,T,C]   | [B,C]                    [B,T,C]       [B,C]
//   complex_op   [B,T,C,2] | [B,C,2]  (re, im)        [B,T,C,2]     [B,C,2]
//   log_op       [B,T,C]   | [B,C]    (log-decay)     [B,T,C,2]     [B,C,2]  (scale, exponent)
// h0 may be an undefined Var (zero initial state). h_final = h[:, T-1], returned so that
// segments can be chained (stateful training); its gradient flows back like any output.
//
// Log-space values (s, m) stand for the real number s·e^m. Gradients are exact provided the
// loss depends on a log-space output only through that real number (log_to_real, log_add,
// log_ratio in ops/complex.hpp, or any function of s·e^m): then ∂L/∂s determines the
// gradient, which the op passes to the primitive in log form {∂L/∂s, −m} (never overflows).
#include <cmath>
#include <complex>
#include <vector>

#include "linrec/autodiff/tape.hpp"
#include "linrec/scan/scan.hpp"

namespace linrec {

template <class T>
struct scan_vars {
  basic_var<T> h;
  basic_var<T> h_final;
};

namespace detail {

template <template <class> class Op>
struct scan_op_traits;
template <>
struct scan_op_traits<real_op> {
  static constexpr int decay_width = 1, value_width = 1;
  static constexpr bool log_space = false;
};
template <>
struct scan_op_traits<complex_op> {
  static constexpr int decay_width = 2, value_width = 2;
  static constexpr bool log_space = false;
};
template <>
struct scan_op_traits<log_op> {
  static constexpr int decay_width = 1, value_width = 2;
  static constexpr bool log_space = true;
};

inline Shape with_width(Shape s, int width) {
  if (width == 2) s.push_back(2);
  return s;
}

// Log-space coordinate gradient (∂L/∂s, ∂L/∂m) of a value (s, m) → ∂L/∂(s·e^m) in log form.
template <class T>
void log_grad_from_coordinates(const T* coord_grad, const T* value, T* out, index_t count) {
  for (index_t i = 0; i < count; ++i) {
    const T m = value[2 * i + 1];
    const bool empty = m <= log_op<T>::empty_exponent() * T(0.5);
    out[2 * i] = empty ? T(0) : coord_grad[2 * i];
    out[2 * i + 1] = empty ? T(0) : -m;
  }
}
// ∂L/∂(s·e^m) in log form G → coordinate gradients: ∂L/∂s = G·e^m, ∂L/∂m = G·s·e^m.
template <class T>
void coordinates_from_log_grad(const T* log_grad, const T* value, T* out, bool accumulate, index_t count) {
  for (index_t i = 0; i < count; ++i) {
    const T ds = log_grad[2 * i] * std::exp(log_grad[2 * i + 1] + value[2 * i + 1]);
    const T dm = ds * value[2 * i];
    out[2 * i] = accumulate ? out[2 * i] + ds : ds;
    out[2 * i + 1] = accumulate ? out[2 * i + 1] + dm : dm;
  }
}

}  // namespace detail

template <template <class> class Op, class T>
scan_vars<T> scan(basic_tape<T>& tape, const basic_var<T>& a, const basic_var<T>& b, const basic_var<T>& h0 = {},
                  cpu exec = {}) {
  using traits = detail::scan_op_traits<Op>;
  using op = Op<T>;
  using A = typename op::decay_type;
  using V = typename op::value_type;
  const bool record = tape.begin("scan", {&a, &b, &h0});
  const Shape& bs = b.shape();
  LINREC_CHECK(bs.rank() == 3 + (traits::value_width - 1) && (traits::value_width == 1 || bs.back() == 2),
               "scan: b must be [B,T,C" << (traits::value_width == 2 ? ",2" : "") << "], got " << bs);
  const scan_shape shape{bs[0], bs[1], bs[2]};
  const Shape state_shape = detail::with_width(Shape{shape.batch, shape.channels}, traits::value_width);
  const Shape a_varying = detail::with_width(Shape{shape.batch, shape.time, shape.channels}, traits::decay_width);
  const Shape a_invariant = detail::with_width(Shape{shape.batch, shape.channels}, traits::decay_width);
  const bool invariant = a.shape() == a_invariant && !(a.shape() == a_varying);
  LINREC_CHECK(a.shape() == a_varying || a.shape() == a_invariant,
               "scan: a must be " << a_varying << " (per step) or " << a_invariant << " (time-invariant) for b " << bs
                                  << ", got " << a.shape());
  if (h0.defined())
    LINREC_CHECK(h0.shape() == state_shape, "scan: h0 must be " << state_shape << ", got " << h0.shape());
  const strides3 btc = strides3::btc(shape);
  const strides3 a_strides = invariant ? strides3::time_invariant(shape) : btc;

  auto h = basic_tensor<T>::empty(bs);
  auto h_final = basic_tensor<T>::empty(state_shape);
  scan_forward(exec,
               scan_forward_args<op>{shape, reinterpret_cast<const A*>(a.value().data()), a_strides,
                                     reinterpret_cast<const V*>(b.value().data()), btc, reinterpret_cast<V*>(h.data()),
                                     btc, h0.defined() ? reinterpret_cast<const V*>(h0.value().data()) : nullptr,
                                     reinterpret_cast<V*>(h_final.data())});
  std::vector<basic_tensor<T>> values;
  values.push_back(std::move(h));
  values.push_back(std::move(h_final));
  auto outs = tape.finish_many(
      "scan", {&a, &b, &h0}, std::move(values), record,
      [shape, invariant, exec, state_shape, a_strides, btc](op_record<T>& r) {
        using G = typename op::grad_type;
        using DA = typename op::decay_grad_type;
        const auto& h = r.outputs[0]->value;
        const auto& hf = r.outputs[1]->value;
        // Upstream gradients (zeros where none arrived), converted to log form for log_op.
        basic_tensor<T> dh = r.grad_out(0).defined() ? r.grad_out(0) : basic_tensor<T>::zeros(h.shape());
        basic_tensor<T> dh_final = r.grad_out(1);
        if constexpr (traits::log_space) {
          auto converted = basic_tensor<T>::empty(h.shape());
          detail::log_grad_from_coordinates(dh.data(), h.data(), converted.data(), shape.elements());
          dh = converted;
          if (dh_final.defined()) {
            auto cf = basic_tensor<T>::empty(hf.shape());
            detail::log_grad_from_coordinates(dh_final.data(), hf.data(), cf.data(), shape.batch * shape.channels);
            dh_final = cf;
          }
        }
        const Shape da_full = detail::with_width(Shape{shape.batch, shape.time, shape.channels}, traits::decay_width);
        auto da = basic_tensor<T>::empty(da_full);
        auto db = basic_tensor<T>::empty(h.shape());
        auto dh0 = basic_tensor<T>::empty(state_shape);
        const auto* h0v =
            r.inputs[2] ? reinterpret_cast<const typename op::value_type*>(r.inputs[2]->value.data()) : nullptr;
        scan_backward(exec, scan_backward_args<op>{
                                shape, reinterpret_cast<const typename op::decay_type*>(r.inputs[0]->value.data()),
                                a_strides, reinterpret_cast<const typename op::value_type*>(h.data()), btc, h0v,
                                reinterpret_cast<const G*>(dh.data()), btc,
                                dh_final.defined() ? reinterpret_cast<const G*>(dh_final.data()) : nullptr,
                                reinterpret_cast<DA*>(da.data()), btc, reinterpret_cast<G*>(db.data()), btc,
                                r.inputs[2] ? reinterpret_cast<G*>(dh0.data()) : nullptr});
        if (auto s = basic_tape<T>::sink(r, 0)) {
          const index_t w = traits::decay_width;
          if (invariant) {
            // Σ over time of the per-step decay gradients.
            auto D = as_row_array(da, shape.batch * shape.time, shape.channels * w);
            auto S = as_row_array(s.tensor, shape.batch, shape.channels * w);
            s.zero_if_fresh();
            for (index_t bi = 0; bi < shape.batch; ++bi)
              S.row(bi) += D.middleRows(bi * shape.time, shape.time).colwise().sum();
          } else {
            s.put(as_array(s.tensor), as_array(da));
          }
        }
        if (auto s = basic_tape<T>::sink(r, 1)) {
          if constexpr (traits::log_space)
            detail::coordinates_from_log_grad(db.data(), r.inputs[1]->value.data(), s.tensor.data(), !s.fresh,
                                              shape.elements());
          else
            s.put(as_array(s.tensor), as_array(db));
        }
        if (auto s = basic_tape<T>::sink(r, 2)) {
          if constexpr (traits::log_space)
            detail::coordinates_from_log_grad(dh0.data(), r.inputs[2]->value.data(), s.tensor.data(), !s.fresh,
                                              shape.batch * shape.channels);
          else
            s.put(as_array(s.tensor), as_array(dh0));
        }
      });
  return {outs[0], outs[1]};
}

}  // namespace linrec
