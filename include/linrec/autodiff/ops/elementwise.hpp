#pragma once
// Elementwise ops: unary functions, the four arithmetic ops with numpy broadcasting, affine
// maps by constants, broadcast_to and lerp.
//
//   y = f(x):     exp log sqrt square sigmoid tanh silu relu softplus gelu sin cos
//   z = x ∘ y:    add sub mul div     (shapes broadcast: [B,T,C] with [C], [B,1,C], [], ...)
//   y = αx + β:   affine scale add_scalar neg one_minus
//   lerp(a, b, w) = a + w ⊙ (b − a)   (RWKV's token-shift mix with w = 1 − μ)
#include <cmath>

#include "linrec/autodiff/detail/broadcast.hpp"
#include "linrec/autodiff/device_kernels.hpp"
#include "linrec/autodiff/tape.hpp"
#include "linrec/core/host_device.hpp"

namespace linrec {

namespace detail {

// Unary function table: f(x) and its derivative written from x and y = f(x). A functor may
// also give `f_array`, the same function on an Eigen array: Eigen vectorises exp, tanh and
// the logistic function, where a loop over std::exp / std::tanh calls libm once per element
// (the RWKV-6 LoRA's tanh was 6 % of a training step). Both forms are accurate to a few ulp.
// f and df are host-and-device functions: the CUDA kernels (autodiff/cuda.cuh) run them.
struct exp_fn {
  static constexpr const char* name = "exp";
  template <class T>
  LINREC_HOST_DEVICE static T f(T x) {
    return std::exp(x);
  }
  template <class A>
  static auto f_array(const A& x) {
    return x.exp();
  }
  template <class T>
  LINREC_HOST_DEVICE static T df(T, T y) {
    return y;
  }
};
struct log_fn {
  static constexpr const char* name = "log";
  template <class T>
  LINREC_HOST_DEVICE static T f(T x) {
    return std::log(x);
  }
  template <class T>
  LINREC_HOST_DEVICE static T df(T x, T) {
    return T(1) / x;
  }
};
struct sqrt_fn {
  static constexpr const char* name = "sqrt";
  template <class T>
  LINREC_HOST_DEVICE static T f(T x) {
    return std::sqrt(x);
  }
  template <class T>
  LINREC_HOST_DEVICE static T df(T, T y) {
    return T(0.5) / y;
  }
};
struct square_fn {
  static constexpr const char* name = "square";
  template <class T>
  LINREC_HOST_DEVICE static T f(T x) {
    return x * x;
  }
  template <class T>
  LINREC_HOST_DEVICE static T df(T x, T) {
    return T(2) * x;
  }
};
struct sigmoid_fn {
  static constexpr const char* name = "sigmoid";
  template <class T>
  LINREC_HOST_DEVICE static T f(T x) {
    return T(1) / (T(1) + std::exp(-x));
  }
  template <class A>
  static auto f_array(const A& x) {
    return x.logistic();
  }
  template <class T>
  LINREC_HOST_DEVICE static T df(T, T y) {
    return y * (T(1) - y);
  }
};
struct tanh_fn {
  static constexpr const char* name = "tanh";
  template <class T>
  LINREC_HOST_DEVICE static T f(T x) {
    return std::tanh(x);
  }
  template <class A>
  static auto f_array(const A& x) {
    return x.tanh();
  }
  template <class T>
  LINREC_HOST_DEVICE static T df(T, T y) {
    return T(1) - y * y;
  }
};
// silu(x) = x σ(x);  silu' = σ(x)(1 + x(1 − σ(x)))
struct silu_fn {
  static constexpr const char* name = "silu";
  template <class T>
  LINREC_HOST_DEVICE static T f(T x) {
    return x / (T(1) + std::exp(-x));
  }
  template <class T>
  LINREC_HOST_DEVICE static T df(T x, T) {
    const T s = T(1) / (T(1) + std::exp(-x));
    return s * (T(1) + x * (T(1) - s));
  }
};
struct relu_fn {
  static constexpr const char* name = "relu";
  template <class T>
  LINREC_HOST_DEVICE static T f(T x) {
    return x > T(0) ? x : T(0);
  }
  template <class T>
  LINREC_HOST_DEVICE static T df(T x, T) {
    return x > T(0) ? T(1) : T(0);
  }
};
// softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^{−|x|});  softplus' = σ(x)
struct softplus_fn {
  static constexpr const char* name = "softplus";
  template <class T>
  LINREC_HOST_DEVICE static T f(T x) {
    return (x > T(0) ? x : T(0)) + std::log1p(std::exp(-std::abs(x)));
  }
  template <class T>
  LINREC_HOST_DEVICE static T df(T x, T) {
    return T(1) / (T(1) + std::exp(-x));
  }
};
// gelu (tanh form): ½x(1 + tanh(k(x + 0.044715x³))), k = √(2/π)
struct gelu_fn {
  static constexpr const char* name = "gelu";
  template <class T>
  LINREC_HOST_DEVICE static T inner(T x) {
    return T(0.7978845608028654) * (x + T(0.044715) * x * x * x);
  }
  template <class T>
  LINREC_HOST_DEVICE static T f(T x) {
    return T(0.5) * x * (T(1) + std::tanh(inner(x)));
  }
  template <class T>
  LINREC_HOST_DEVICE static T df(T x, T) {
    const T t = std::tanh(inner(x));
    const T dinner = T(0.7978845608028654) * (T(1) + T(3 * 0.044715) * x * x);
    return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * dinner;
  }
};
struct sin_fn {
  static constexpr const char* name = "sin";
  template <class T>
  LINREC_HOST_DEVICE static T f(T x) {
    return std::sin(x);
  }
  template <class T>
  LINREC_HOST_DEVICE static T df(T x, T) {
    return std::cos(x);
  }
};
struct cos_fn {
  static constexpr const char* name = "cos";
  template <class T>
  LINREC_HOST_DEVICE static T f(T x) {
    return std::cos(x);
  }
  template <class T>
  LINREC_HOST_DEVICE static T df(T x, T) {
    return -std::sin(x);
  }
};

template <class Fn, class T>
basic_var<T> unary(basic_tape<T>& tape, const basic_var<T>& x) {
  const bool record = tape.begin(Fn::name, {&x});
  const basic_tensor<T>& xv = x.value();
  auto y = basic_tensor<T>::empty(xv.shape(), xv.where());
  if (!xv.where().is_cpu()) {
    kernel<unary_kernel<Fn, T>>()(xv.numel(), xv.raw_data(), y.raw_data());
    return tape.finish(Fn::name, {&x}, std::move(y), record, [](op_record<T>& r) {
      auto s = basic_tape<T>::sink(r, 0);
      if (s)
        kernel<unary_grad_kernel<Fn, T>>()(s.tensor.numel(), r.inputs[0]->value.raw_data(),
                                           r.outputs[0]->value.raw_data(), r.grad_out().raw_data(), s.tensor.raw_data(),
                                           !s.fresh);
    });
  }
  const T* px = xv.data();
  T* py = y.data();
  const index_t n = xv.numel();
  using array = Eigen::Array<T, Eigen::Dynamic, 1>;
  if constexpr (requires(const Eigen::Map<const array>& a) { Fn::f_array(a); })
    Eigen::Map<array>(py, n) = Fn::f_array(Eigen::Map<const array>(px, n));
  else
    for (index_t i = 0; i < n; ++i) py[i] = Fn::f(px[i]);
  return tape.finish(Fn::name, {&x}, std::move(y), record, [](op_record<T>& r) {
    auto s = basic_tape<T>::sink(r, 0);
    if (!s) return;
    const T* g = r.grad_out().data();
    const T* xs = r.inputs[0]->value.data();
    const T* ys = r.outputs[0]->value.data();
    T* d = s.tensor.data();
    const index_t m = s.tensor.numel();
    if (s.fresh)
      for (index_t i = 0; i < m; ++i) d[i] = g[i] * Fn::df(xs[i], ys[i]);
    else
      for (index_t i = 0; i < m; ++i) d[i] += g[i] * Fn::df(xs[i], ys[i]);
  });
}

// Binary function table: f(a, b) and ∂f/∂a · g, ∂f/∂b · g.
struct add_fn {
  static constexpr const char* name = "add";
  template <class T>
  LINREC_HOST_DEVICE static T f(T a, T b) {
    return a + b;
  }
  template <class T>
  LINREC_HOST_DEVICE static T da(T, T, T g) {
    return g;
  }
  template <class T>
  LINREC_HOST_DEVICE static T db(T, T, T g) {
    return g;
  }
};
struct sub_fn {
  static constexpr const char* name = "sub";
  template <class T>
  LINREC_HOST_DEVICE static T f(T a, T b) {
    return a - b;
  }
  template <class T>
  LINREC_HOST_DEVICE static T da(T, T, T g) {
    return g;
  }
  template <class T>
  LINREC_HOST_DEVICE static T db(T, T, T g) {
    return -g;
  }
};
struct mul_fn {
  static constexpr const char* name = "mul";
  template <class T>
  LINREC_HOST_DEVICE static T f(T a, T b) {
    return a * b;
  }
  template <class T>
  LINREC_HOST_DEVICE static T da(T, T b, T g) {
    return g * b;
  }
  template <class T>
  LINREC_HOST_DEVICE static T db(T a, T, T g) {
    return g * a;
  }
};
struct div_fn {
  static constexpr const char* name = "div";
  template <class T>
  LINREC_HOST_DEVICE static T f(T a, T b) {
    return a / b;
  }
  template <class T>
  LINREC_HOST_DEVICE static T da(T, T b, T g) {
    return g / b;
  }
  template <class T>
  LINREC_HOST_DEVICE static T db(T a, T b, T g) {
    return -g * a / (b * b);
  }
};

// f(a, b) = a: broadcast_to on a device is this binary op with b = a (only a's layout is read).
struct first_fn {
  static constexpr const char* name = "broadcast_to";
  template <class T>
  LINREC_HOST_DEVICE static T f(T a, T) {
    return a;
  }
  template <class T>
  LINREC_HOST_DEVICE static T da(T, T, T g) {
    return g;
  }
  template <class T>
  LINREC_HOST_DEVICE static T db(T, T, T) {
    return T(0);
  }
};

template <class Fn, class T>
basic_var<T> binary(basic_tape<T>& tape, const basic_var<T>& a, const basic_var<T>& b) {
  const bool record = tape.begin(Fn::name, {&a, &b});
  const Shape out_shape = broadcast_shape(Fn::name, a.shape(), b.shape());
  auto y = basic_tensor<T>::empty(out_shape, a.value().where());
  if (!a.value().where().is_cpu()) {
    kernel<binary_kernel<Fn, T>>()(make_broadcast(out_shape, a.shape(), b.shape()), a.value().raw_data(),
                                   b.value().raw_data(), y.raw_data());
    return tape.finish(Fn::name, {&a, &b}, std::move(y), record, [](op_record<T>& r) {
      const broadcast_layout layout =
          make_broadcast(r.outputs[0]->value.shape(), r.inputs[0]->value.shape(), r.inputs[1]->value.shape());
      for (int k = 0; k < 2; ++k)
        if (auto s = basic_tape<T>::sink(r, std::size_t(k)))
          kernel<binary_grad_kernel<Fn, T>>()(layout, k, r.inputs[0]->value.raw_data(), r.inputs[1]->value.raw_data(),
                                              r.grad_out().raw_data(), s.tensor.raw_data(), !s.fresh);
    });
  }
  const T* pa = a.value().data();
  const T* pb = b.value().data();
  T* py = y.data();
  const bool same = a.shape() == out_shape && b.shape() == out_shape;
  if (same) {
    const index_t n = out_shape.numel();
    for (index_t i = 0; i < n; ++i) py[i] = Fn::f(pa[i], pb[i]);
  } else {
    const broadcast_layout layout = make_broadcast(out_shape, a.shape(), b.shape());
    with_unit_steps(layout.stride_a[3], layout.stride_b[3], [&](auto step_a, auto step_b) {
      for_each_broadcast_row(layout, [&](index_t o, index_t ia, index_t ib, index_t n) {
        for (index_t i = 0; i < n; ++i) py[o + i] = Fn::f(pa[ia + i * step_a], pb[ib + i * step_b]);
      });
    });
  }
  return tape.finish(Fn::name, {&a, &b}, std::move(y), record, [same](op_record<T>& r) {
    const T* g = r.grad_out().data();
    const T* va = r.inputs[0]->value.data();
    const T* vb = r.inputs[1]->value.data();
    const Shape& out = r.outputs[0]->value.shape();
    for (std::size_t k = 0; k < 2; ++k) {
      auto s = basic_tape<T>::sink(r, k);
      if (!s) continue;
      T* d = s.tensor.data();
      const auto partial = [&](index_t ia, index_t ib, index_t o) {
        return k == 0 ? Fn::da(va[ia], vb[ib], g[o]) : Fn::db(va[ia], vb[ib], g[o]);
      };
      if (same) {
        const index_t n = out.numel();
        if (s.fresh)
          for (index_t i = 0; i < n; ++i) d[i] = partial(i, i, i);
        else
          for (index_t i = 0; i < n; ++i) d[i] += partial(i, i, i);
      } else {
        // A broadcast operand receives sums (zeroed first); one of the output's shape is
        // written element by element, so a fresh buffer is assigned without a zero fill.
        const bool assign = s.fresh && r.inputs[k]->value.shape() == out;
        if (!assign) s.zero_if_fresh();
        const broadcast_layout layout = make_broadcast(out, r.inputs[0]->value.shape(), r.inputs[1]->value.shape());
        with_unit_steps(layout.stride_a[3], layout.stride_b[3], [&](auto step_a, auto step_b) {
          for_each_broadcast_row(layout, [&](index_t o, index_t ia, index_t ib, index_t n) {
            // Written out per case so that each loop is a plain strided loop (vectorised where
            // the destination is contiguous; a sum into one element keeps its order).
            if (k == 0) {
              if (assign)
                for (index_t i = 0; i < n; ++i)
                  d[ia + i * step_a] = Fn::da(va[ia + i * step_a], vb[ib + i * step_b], g[o + i]);
              else
                for (index_t i = 0; i < n; ++i)
                  d[ia + i * step_a] += Fn::da(va[ia + i * step_a], vb[ib + i * step_b], g[o + i]);
            } else {
              if (assign)
                for (index_t i = 0; i < n; ++i)
                  d[ib + i * step_b] = Fn::db(va[ia + i * step_a], vb[ib + i * step_b], g[o + i]);
              else
                for (index_t i = 0; i < n; ++i)
                  d[ib + i * step_b] += Fn::db(va[ia + i * step_a], vb[ib + i * step_b], g[o + i]);
            }
          });
        });
      }
    }
  });
}

}  // namespace detail

#define LINREC_UNARY_OP(fn_name, functor)                            \
  template <class T>                                                 \
  basic_var<T> fn_name(basic_tape<T>& tape, const basic_var<T>& x) { \
    return detail::unary<detail::functor>(tape, x);                  \
  }
LINREC_UNARY_OP(exp, exp_fn)
LINREC_UNARY_OP(log, log_fn)
LINREC_UNARY_OP(sqrt, sqrt_fn)
LINREC_UNARY_OP(square, square_fn)
LINREC_UNARY_OP(sigmoid, sigmoid_fn)
LINREC_UNARY_OP(tanh, tanh_fn)
LINREC_UNARY_OP(silu, silu_fn)
LINREC_UNARY_OP(relu, relu_fn)
LINREC_UNARY_OP(softplus, softplus_fn)
LINREC_UNARY_OP(gelu, gelu_fn)
LINREC_UNARY_OP(sin, sin_fn)
LINREC_UNARY_OP(cos, cos_fn)
#undef LINREC_UNARY_OP

template <class T>
basic_var<T> add(basic_tape<T>& tape, const basic_var<T>& a, const basic_var<T>& b) {
  return detail::binary<detail::add_fn>(tape, a, b);
}
template <class T>
basic_var<T> sub(basic_tape<T>& tape, const basic_var<T>& a, const basic_var<T>& b) {
  return detail::binary<detail::sub_fn>(tape, a, b);
}
template <class T>
basic_var<T> mul(basic_tape<T>& tape, const basic_var<T>& a, const basic_var<T>& b) {
  return detail::binary<detail::mul_fn>(tape, a, b);
}
template <class T>
basic_var<T> div(basic_tape<T>& tape, const basic_var<T>& a, const basic_var<T>& b) {
  return detail::binary<detail::div_fn>(tape, a, b);
}

// y = α x + β with constants α, β.
template <class T>
basic_var<T> affine(basic_tape<T>& tape, const basic_var<T>& x, T alpha, T beta) {
  const bool record = tape.begin("affine", {&x});
  auto y = basic_tensor<T>::empty(x.shape(), x.value().where());
  if (!x.value().where().is_cpu()) {
    detail::kernel<detail::affine_kernel<T>>()(y.numel(), alpha, beta, x.value().raw_data(), y.raw_data(), false);
    return tape.finish("affine", {&x}, std::move(y), record, [alpha](op_record<T>& r) {
      auto s = basic_tape<T>::sink(r, 0);
      if (s)
        detail::kernel<detail::affine_kernel<T>>()(s.tensor.numel(), alpha, T(0), r.grad_out().raw_data(),
                                                   s.tensor.raw_data(), !s.fresh);
    });
  }
  as_array(y) = alpha * as_array(x.value()) + beta;
  return tape.finish("affine", {&x}, std::move(y), record, [alpha](op_record<T>& r) {
    auto s = basic_tape<T>::sink(r, 0);
    if (s) s.put(as_array(s.tensor), alpha * as_array(r.grad_out()));
  });
}
template <class T>
basic_var<T> scale(basic_tape<T>& tape, const basic_var<T>& x, std::type_identity_t<T> alpha) {
  return affine(tape, x, alpha, T(0));
}
template <class T>
basic_var<T> add_scalar(basic_tape<T>& tape, const basic_var<T>& x, std::type_identity_t<T> beta) {
  return affine(tape, x, T(1), beta);
}
template <class T>
basic_var<T> neg(basic_tape<T>& tape, const basic_var<T>& x) {
  return affine(tape, x, T(-1), T(0));
}
// 1 − x (e.g. 1 − μ of a token-shift mix)
template <class T>
basic_var<T> one_minus(basic_tape<T>& tape, const basic_var<T>& x) {
  return affine(tape, x, T(-1), T(1));
}

// Copies x to a broadcast-compatible larger shape; the gradient sums over the copies.
template <class T>
basic_var<T> broadcast_to(basic_tape<T>& tape, const basic_var<T>& x, const Shape& shape) {
  const bool record = tape.begin("broadcast_to", {&x});
  LINREC_CHECK(detail::broadcast_shape("broadcast_to", x.shape(), shape) == shape,
               "broadcast_to: " << x.shape() << " does not broadcast to " << shape);
  if (!x.value().where().is_cpu()) {
    auto y = basic_tensor<T>::empty(shape, x.value().where());
    const detail::broadcast_layout layout = detail::make_broadcast(shape, x.shape(), x.shape());
    detail::kernel<detail::binary_kernel<detail::first_fn, T>>()(layout, x.value().raw_data(), x.value().raw_data(),
                                                                 y.raw_data());
    return tape.finish("broadcast_to", {&x}, std::move(y), record, [layout](op_record<T>& r) {
      auto s = basic_tape<T>::sink(r, 0);
      const T* px = r.inputs[0]->value.raw_data();
      if (s)
        detail::kernel<detail::binary_grad_kernel<detail::first_fn, T>>()(layout, 0, px, px, r.grad_out().raw_data(),
                                                                          s.tensor.raw_data(), !s.fresh);
    });
  }
  auto y = basic_tensor<T>::empty(shape);
  const T* px = x.value().data();
  T* py = y.data();
  detail::for_each_broadcast(detail::make_broadcast(shape, x.shape(), shape),
                             [&](index_t o, index_t ix, index_t) { py[o] = px[ix]; });
  return tape.finish("broadcast_to", {&x}, std::move(y), record, [](op_record<T>& r) {
    auto s = basic_tape<T>::sink(r, 0);
    if (!s) return;
    s.zero_if_fresh();
    T* d = s.tensor.data();
    const T* g = r.grad_out().data();
    const Shape& out = r.outputs[0]->value.shape();
    detail::for_each_broadcast(detail::make_broadcast(out, r.inputs[0]->value.shape(), out),
                               [&](index_t o, index_t ix, index_t) { d[ix] += g[o]; });
  });
}

// lerp(a, b, w) = a + w ⊙ (b − a), broadcasting (w is typically a per-channel [C]).
template <class T>
basic_var<T> lerp(basic_tape<T>& tape, const basic_var<T>& a, const basic_var<T>& b, const basic_var<T>& w) {
  return add(tape, a, mul(tape, w, sub(tape, b, a)));
}

}  // namespace linrec
