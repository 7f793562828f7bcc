#pragma once
// Ops that move data without arithmetic.
//
//   reshape(tape, x, shape)                 same data, new shape (a view)
//   narrow(tape, x, axis, start, length)    x[..., start:start+length, ...] (a copy)
//   split(tape, x, axis, sizes)             consecutive narrows → vector of Vars
//   concat(tape, xs, axis)                  inverse of split
//   transpose(tape, x, axis0, axis1)        swap two axes, e.g. [B,T,H,N] → [B,H,T,N]
//   token_shift(tape, x, prev)              x [B,T,C] → y[:,t] = x[:,t−1], y[:,0] = prev [B,C]
//                                           (the carried previous token; undefined prev = 0)
// Heads: reshape [B,T,C] → [B,T,H,N] (free) and transpose to [B,H,T,N] when a head-major
// layout is needed; concat/split along the last axis joins/cuts per-head channel blocks.
#include <array>
#include <span>
#include <utility>
#include <vector>

#include "linrec/autodiff/detail/broadcast.hpp"
#include "linrec/autodiff/device_kernels.hpp"
#include "linrec/autodiff/tape.hpp"

namespace linrec {

template <class T>
basic_var<T> reshape(basic_tape<T>& tape, const basic_var<T>& x, const Shape& shape) {
  const bool record = tape.begin("reshape", {&x});
  auto y = x.value().reshape(shape);
  return tape.finish("reshape", {&x}, std::move(y), record, [](op_record<T>& r) {
    auto s = basic_tape<T>::sink(r, 0);
    if (!s) return;
    if (s.tensor.where().is_cpu())
      s.put(as_array(s.tensor), as_array(r.grad_out()));
    else
      s.put_tensor(r.grad_out());
  });
}

template <class T>
basic_var<T> narrow(basic_tape<T>& tape, const basic_var<T>& x, int axis, index_t start, index_t length) {
  const bool record = tape.begin("narrow", {&x});
  const Shape& s = x.shape();
  const int a = s.axis(axis);
  LINREC_CHECK(start >= 0 && length >= 0 && start + length <= s[a],
               "narrow: [" << start << ", " << start + length << ") out of range on axis " << a << " of " << s);
  const index_t outer = s.outer(a), n = s[a], inner = s.inner(a);
  const device dev = x.value().where();
  if (!dev.is_cpu()) {
    auto y = basic_tensor<T>::empty(s.with(a, length), dev);
    detail::kernel<detail::narrow_kernel<T>>()(outer, n, inner, start, length, x.value().raw_data(), y.raw_data());
    return tape.finish("narrow", {&x}, std::move(y), record, [outer, n, inner, start, length](op_record<T>& r) {
      auto s = basic_tape<T>::sink(r, 0);
      if (s)
        detail::kernel<detail::narrow_grad_kernel<T>>()(outer, n, inner, start, length, r.grad_out().raw_data(),
                                                        s.tensor.raw_data(), !s.fresh);
    });
  }
  auto y = basic_tensor<T>::empty(s.with(a, length));
  as_row_array(y, outer, length * inner) =
      as_row_array(x.value(), outer, n * inner).middleCols(start * inner, length * inner);
  return tape.finish("narrow", {&x}, std::move(y), record, [outer, n, inner, start, length](op_record<T>& r) {
    auto s = basic_tape<T>::sink(r, 0);
    if (!s) return;
    s.zero_if_fresh();
    as_row_array(s.tensor, outer, n * inner).middleCols(start * inner, length * inner) +=
        as_row_array(r.grad_out(), outer, length * inner);
  });
}

template <class T>
std::vector<basic_var<T>> split(basic_tape<T>& tape, const basic_var<T>& x, int axis,
                                const std::vector<index_t>& sizes) {
  const int a = x.shape().axis(axis);
  index_t total = 0;
  for (index_t n : sizes) total += n;
  LINREC_CHECK(total == x.shape()[a],
               "split: sizes sum to " << total << " but axis " << a << " of " << x.shape() << " has " << x.shape()[a]);
  std::vector<basic_var<T>> parts;
  index_t start = 0;
  for (index_t n : sizes) {
    parts.push_back(narrow(tape, x, a, start, n));
    start += n;
  }
  return parts;
}

template <class T>
basic_var<T> concat(basic_tape<T>& tape, const std::vector<basic_var<T>>& xs, int axis) {
  LINREC_CHECK(!xs.empty(), "concat: no inputs");
  std::vector<const basic_var<T>*> inputs;
  for (const auto& x : xs) inputs.push_back(&x);
  const std::span<const basic_var<T>* const> in(inputs.data(), inputs.size());
  const bool record = tape.begin("concat", in);
  const Shape& s0 = xs[0].shape();
  const int a = s0.axis(axis);
  index_t total = 0;
  std::vector<index_t> sizes;
  for (const auto& x : xs) {
    LINREC_CHECK(x.shape().rank() == s0.rank() && x.shape().with(a, 0) == s0.with(a, 0),
                 "concat: shape " << x.shape() << " does not match " << s0 << " outside axis " << a);
    sizes.push_back(x.shape()[a]);
    total += x.shape()[a];
  }
  const index_t outer = s0.outer(a), inner = s0.inner(a);
  const device dev = xs[0].value().where();
  if (!dev.is_cpu()) {
    // Each input added into its window of a zeroed output (exact: x + 0 = x); each gradient is
    // its window of the output's.
    auto y = basic_tensor<T>::zeros(s0.with(a, total), dev);
    index_t start = 0;
    for (const auto& x : xs) {
      const index_t n = x.shape()[a];
      detail::kernel<detail::narrow_grad_kernel<T>>()(outer, total, inner, start, n, x.value().raw_data(), y.raw_data(),
                                                      true);
      start += n;
    }
    std::vector<basic_tensor<T>> values;
    values.push_back(std::move(y));
    return tape.finish_many("concat", in, std::move(values), record,
                            [outer, inner, total, sizes, dev](op_record<T>& r) {
                              index_t begin = 0;
                              for (std::size_t i = 0; i < sizes.size(); ++i) {
                                if (auto s = basic_tape<T>::sink(r, i)) {
                                  auto part = basic_tensor<T>::empty(s.tensor.shape(), dev);
                                  detail::kernel<detail::narrow_kernel<T>>()(outer, total, inner, begin, sizes[i],
                                                                             r.grad_out().raw_data(), part.raw_data());
                                  s.put_tensor(part);
                                }
                                begin += sizes[i];
                              }
                            })[0];
  }
  auto y = basic_tensor<T>::empty(s0.with(a, total));
  auto Y = as_row_array(y, outer, total * inner);
  index_t start = 0;
  for (const auto& x : xs) {
    const index_t n = x.shape()[a];
    Y.middleCols(start * inner, n * inner) = as_row_array(x.value(), outer, n * inner);
    start += n;
  }
  std::vector<basic_tensor<T>> values;
  values.push_back(std::move(y));
  return tape.finish_many("concat", in, std::move(values), record, [outer, inner, total, sizes](op_record<T>& r) {
    auto G = as_row_array(r.grad_out(), outer, total * inner);
    index_t begin = 0;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      if (auto s = basic_tape<T>::sink(r, i))
        s.put(as_row_array(s.tensor, outer, sizes[i] * inner), G.middleCols(begin * inner, sizes[i] * inner));
      begin += sizes[i];
    }
  })[0];
}

namespace detail {
// y = x with axes a0 and a1 swapped; `add` accumulates instead of assigning.
template <class T>
void swap_axes(const T* x, const Shape& xs, T* y, int a0, int a1, bool add) {
  const auto ext = padded(xs);
  std::array<index_t, 4> in_stride{};
  index_t step = 1;
  for (int i = 3; i >= 0; --i) {
    in_stride[i] = step;
    step *= ext[i];
  }
  const int off = 4 - xs.rank();
  auto out_ext = ext;
  std::swap(out_ext[a0 + off], out_ext[a1 + off]);
  auto st = in_stride;
  std::swap(st[a0 + off], st[a1 + off]);
  index_t o = 0;
  for (index_t i0 = 0; i0 < out_ext[0]; ++i0)
    for (index_t i1 = 0; i1 < out_ext[1]; ++i1)
      for (index_t i2 = 0; i2 < out_ext[2]; ++i2) {
        const index_t base = i0 * st[0] + i1 * st[1] + i2 * st[2];
        for (index_t i3 = 0; i3 < out_ext[3]; ++i3, ++o) {
          if (add)
            y[o] += x[base + i3 * st[3]];
          else
            y[o] = x[base + i3 * st[3]];
        }
      }
}
}  // namespace detail

template <class T>
basic_var<T> transpose(basic_tape<T>& tape, const basic_var<T>& x, int axis0, int axis1) {
  const bool record = tape.begin("transpose", {&x});
  const Shape& s = x.shape();
  const int a0 = s.axis(axis0), a1 = s.axis(axis1);
  Shape out = s;
  out[a0] = s[a1];
  out[a1] = s[a0];
  if (!x.value().where().is_cpu()) {
    // The padded 4-D axes of a rank-r shape are offset by 4 − r.
    const int off = 4 - s.rank();
    const auto ext = detail::padded(s);
    auto y = basic_tensor<T>::empty(out, x.value().where());
    detail::kernel<detail::swap_axes_kernel<T>>()(ext.data(), a0 + off, a1 + off, x.value().raw_data(), y.raw_data(),
                                                  false);
    return tape.finish("transpose", {&x}, std::move(y), record, [a0, a1, off](op_record<T>& r) {
      auto s = basic_tape<T>::sink(r, 0);
      const auto out_ext = detail::padded(r.grad_out().shape());
      if (s)
        detail::kernel<detail::swap_axes_kernel<T>>()(out_ext.data(), a0 + off, a1 + off, r.grad_out().raw_data(),
                                                      s.tensor.raw_data(), !s.fresh);
    });
  }
  auto y = basic_tensor<T>::empty(out);
  detail::swap_axes(x.value().data(), s, y.data(), a0, a1, false);
  return tape.finish("transpose", {&x}, std::move(y), record, [a0, a1](op_record<T>& r) {
    auto s = basic_tape<T>::sink(r, 0);
    if (s) detail::swap_axes(r.grad_out().data(), r.grad_out().shape(), s.tensor.data(), a0, a1, !s.fresh);
  });
}

// y[:, 0] = prev, y[:, t] = x[:, t−1]  (x [B,T,C], prev [B,C] or undefined for zeros)
template <class T>
basic_var<T> token_shift(basic_tape<T>& tape, const basic_var<T>& x, const basic_var<T>& prev = {}) {
  const bool record = tape.begin("token_shift", {&x, &prev});
  const Shape& s = x.shape();
  LINREC_CHECK(s.rank() == 3, "token_shift: x must be [B, T, C], got " << s);
  const index_t batch = s[0], time = s[1], channels = s[2];
  if (prev.defined())
    LINREC_CHECK(prev.shape() == (Shape{batch, channels}),
                 "token_shift: prev must be [B, C] = [" << batch << "," << channels << "], got " << prev.shape());
  const device dev = x.value().where();
  if (!dev.is_cpu()) {
    auto y = basic_tensor<T>::empty(s, dev);
    detail::kernel<detail::token_shift_kernel<T>>()(batch, time, channels, x.value().raw_data(),
                                                    prev.defined() ? prev.value().raw_data() : nullptr, y.raw_data());
    return tape.finish("token_shift", {&x, &prev}, std::move(y), record, [batch, time, channels](op_record<T>& r) {
      auto sx = basic_tape<T>::sink(r, 0), sp = basic_tape<T>::sink(r, 1);
      detail::kernel<detail::token_shift_grad_kernel<T>>()(batch, time, channels, r.grad_out().raw_data(),
                                                           sx ? sx.tensor.raw_data() : nullptr, !sx.fresh,
                                                           sp ? sp.tensor.raw_data() : nullptr, !sp.fresh);
    });
  }
  auto y = basic_tensor<T>::empty(s);
  auto X = as_row_array(x.value(), batch, time * channels);
  auto Y = as_row_array(y, batch, time * channels);
  if (prev.defined())
    Y.leftCols(channels) = as_row_array(prev.value(), batch, channels);
  else
    Y.leftCols(channels).setZero();
  Y.rightCols((time - 1) * channels) = X.leftCols((time - 1) * channels);
  return tape.finish("token_shift", {&x, &prev}, std::move(y), record, [batch, time, channels](op_record<T>& r) {
    auto G = as_row_array(r.grad_out(), batch, time * channels);
    if (auto s = basic_tape<T>::sink(r, 0)) {
      auto D = as_row_array(s.tensor, batch, time * channels);
      s.put(D.leftCols((time - 1) * channels), G.rightCols((time - 1) * channels));
      if (s.fresh) D.rightCols(channels).setZero();
    }
    if (auto s = basic_tape<T>::sink(r, 1)) s.put(as_row_array(s.tensor, batch, channels), G.leftCols(channels));
  });
}

}  // namespace linrec
