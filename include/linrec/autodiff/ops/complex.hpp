#pragma once
// Complex and log-space values, both stored with a trailing axis of 2.
//
// Complex z = [..., (re, im)]; gradients follow the scan's convention ∂L/∂Re + i ∂L/∂Im.
//   complex(tape, re, im)        → z                (same shapes)
//   real(tape, z), imag(tape, z) → [...]
//   complex_mul(tape, a, b)      → a ⊙ b, broadcasting over the axes before the last
//   complex_polar(tape, r, phi)  → r·e^{iφ}         (LRU's λ = polar(e^{−e^ν}, e^θ))
//   complex_expm1(tape, z)       → e^z − 1, accurate for small |z| (S4D's zero-order hold)
//
// Log-space x = [..., (s, m)] standing for s·e^m (RWKV-4's WKV state):
//   make_log_value(tape, s, m)   → x                (same op as complex(): packs a pair)
//   log_to_real(tape, x)         → s·e^m
//   log_add(tape, x, y)          → x + y in log form: M = max(m_x, m_y),
//                                  s = s_x e^{m_x−M} + s_y e^{m_y−M}  (never overflows)
//   log_ratio(tape, x, y)        → (s_x / s_y)·e^{m_x − m_y}  (a real number: WKV = num/den)
#include <cmath>

#include "linrec/autodiff/detail/broadcast.hpp"
#include "linrec/autodiff/tape.hpp"

namespace linrec {

namespace detail {
inline void check_pairs(const char* op, const Shape& s) {
  LINREC_CHECK(s.rank() >= 1 && s.back() == 2, op << ": expects a trailing axis of 2, got " << s);
}
}  // namespace detail

template <class T>
basic_var<T> complex(basic_tape<T>& tape, const basic_var<T>& re, const basic_var<T>& im) {
  const bool record = tape.begin("complex", {&re, &im});
  LINREC_CHECK(re.shape() == im.shape(), "complex: re " << re.shape() << " and im " << im.shape() << " differ");
  Shape out = re.shape();
  out.push_back(2);
  auto z = basic_tensor<T>::empty(out);
  auto Z = as_row_array(z, re.value().numel(), 2);
  Z.col(0) = as_array(re.value());
  Z.col(1) = as_array(im.value());
  return tape.finish("complex", {&re, &im}, std::move(z), record, [](op_record<T>& r) {
    auto G = as_row_array(r.grad_out(), r.grad_out().numel() / 2, 2);
    for (std::size_t k = 0; k < 2; ++k)
      if (auto s = basic_tape<T>::sink(r, k)) s.put(as_array(s.tensor), G.col(static_cast<Eigen::Index>(k)));
  });
}
template <class T>
basic_var<T> make_log_value(basic_tape<T>& tape, const basic_var<T>& scale, const basic_var<T>& exponent) {
  return complex(tape, scale, exponent);
}

namespace detail {
template <class T>
basic_var<T> component(basic_tape<T>& tape, const char* name, const basic_var<T>& z, int k) {
  const bool record = tape.begin(name, {&z});
  check_pairs(name, z.shape());
  auto y = basic_tensor<T>::empty(z.shape().without(z.shape().rank() - 1));
  as_array(y) = as_row_array(z.value(), y.numel(), 2).col(k);
  return tape.finish(name, {&z}, std::move(y), record, [k](op_record<T>& r) {
    auto s = basic_tape<T>::sink(r, 0);
    if (!s) return;
    s.zero_if_fresh();
    as_row_array(s.tensor, s.tensor.numel() / 2, 2).col(k) += as_array(r.grad_out());
  });
}
}  // namespace detail

template <class T>
basic_var<T> real(basic_tape<T>& tape, const basic_var<T>& z) {
  return detail::component(tape, "real", z, 0);
}
template <class T>
basic_var<T> imag(basic_tape<T>& tape, const basic_var<T>& z) {
  return detail::component(tape, "imag", z, 1);
}

// (a ⊙ b): re = ar br − ai bi, im = ar bi + ai br;  da = g ⊙ conj(b), db = g ⊙ conj(a)
template <class T>
basic_var<T> complex_mul(basic_tape<T>& tape, const basic_var<T>& a, const basic_var<T>& b) {
  const bool record = tape.begin("complex_mul", {&a, &b});
  detail::check_pairs("complex_mul", a.shape());
  detail::check_pairs("complex_mul", b.shape());
  const Shape sa = a.shape().without(a.shape().rank() - 1), sb = b.shape().without(b.shape().rank() - 1);
  const Shape so = detail::broadcast_shape("complex_mul", sa, sb);
  Shape out = so;
  out.push_back(2);
  auto z = basic_tensor<T>::empty(out);
  const T* pa = a.value().data();
  const T* pb = b.value().data();
  T* pz = z.data();
  const auto layout = detail::make_broadcast(so, sa, sb);
  detail::for_each_broadcast(layout, [&](index_t o, index_t ia, index_t ib) {
    const T ar = pa[2 * ia], ai = pa[2 * ia + 1], br = pb[2 * ib], bi = pb[2 * ib + 1];
    pz[2 * o] = ar * br - ai * bi;
    pz[2 * o + 1] = ar * bi + ai * br;
  });
  return tape.finish("complex_mul", {&a, &b}, std::move(z), record, [layout](op_record<T>& r) {
    const T* g = r.grad_out().data();
    const T* pa = r.inputs[0]->value.data();
    const T* pb = r.inputs[1]->value.data();
    auto sa = basic_tape<T>::sink(r, 0);
    auto sb = basic_tape<T>::sink(r, 1);
    if (sa) sa.zero_if_fresh();
    if (sb) sb.zero_if_fresh();
    T* da = sa ? sa.tensor.data() : nullptr;
    T* db = sb ? sb.tensor.data() : nullptr;
    detail::for_each_broadcast(layout, [&](index_t o, index_t ia, index_t ib) {
      const T gr = g[2 * o], gi = g[2 * o + 1];
      if (da) {  // g ⊙ conj(b)
        const T br = pb[2 * ib], bi = pb[2 * ib + 1];
        da[2 * ia] += gr * br + gi * bi;
        da[2 * ia + 1] += gi * br - gr * bi;
      }
      if (db) {  // g ⊙ conj(a)
        const T ar = pa[2 * ia], ai = pa[2 * ia + 1];
        db[2 * ib] += gr * ar + gi * ai;
        db[2 * ib + 1] += gi * ar - gr * ai;
      }
    });
  });
}

// r·(cos φ + i sin φ);  dr = g_re cos φ + g_im sin φ,  dφ = r(−g_re sin φ + g_im cos φ)
template <class T>
basic_var<T> complex_polar(basic_tape<T>& tape, const basic_var<T>& r, const basic_var<T>& phi) {
  const bool record = tape.begin("complex_polar", {&r, &phi});
  LINREC_CHECK(r.shape() == phi.shape(), "complex_polar: r " << r.shape() << " and phi " << phi.shape() << " differ");
  Shape out = r.shape();
  out.push_back(2);
  auto z = basic_tensor<T>::empty(out);
  const T* pr = r.value().data();
  const T* pp = phi.value().data();
  T* pz = z.data();
  const index_t n = r.value().numel();
  for (index_t i = 0; i < n; ++i) {
    pz[2 * i] = pr[i] * std::cos(pp[i]);
    pz[2 * i + 1] = pr[i] * std::sin(pp[i]);
  }
  return tape.finish("complex_polar", {&r, &phi}, std::move(z), record, [](op_record<T>& rec) {
    const T* g = rec.grad_out().data();
    const T* pr = rec.inputs[0]->value.data();
    const T* pp = rec.inputs[1]->value.data();
    const index_t n = rec.inputs[0]->value.numel();
    auto sr = basic_tape<T>::sink(rec, 0);
    auto sp = basic_tape<T>::sink(rec, 1);
    for (index_t i = 0; i < n; ++i) {
      const T c = std::cos(pp[i]), s = std::sin(pp[i]);
      if (sr) {
        const T d = g[2 * i] * c + g[2 * i + 1] * s;
        sr.tensor.data()[i] = sr.fresh ? d : sr.tensor.data()[i] + d;
      }
      if (sp) {
        const T d = pr[i] * (-g[2 * i] * s + g[2 * i + 1] * c);
        sp.tensor.data()[i] = sp.fresh ? d : sp.tensor.data()[i] + d;
      }
    }
  });
}

// s·e^m;  ds = g e^m, dm = g s e^m
template <class T>
basic_var<T> log_to_real(basic_tape<T>& tape, const basic_var<T>& x) {
  const bool record = tape.begin("log_to_real", {&x});
  detail::check_pairs("log_to_real", x.shape());
  auto y = basic_tensor<T>::empty(x.shape().without(x.shape().rank() - 1));
  auto X = as_row_array(x.value(), y.numel(), 2);
  as_array(y) = X.col(0) * X.col(1).exp();
  return tape.finish("log_to_real", {&x}, std::move(y), record, [](op_record<T>& r) {
    auto s = basic_tape<T>::sink(r, 0);
    if (!s) return;
    const index_t n = r.grad_out().numel();
    auto X = as_row_array(r.inputs[0]->value, n, 2);
    auto D = as_row_array(s.tensor, n, 2);
    const auto ds = (as_array(r.grad_out()) * X.col(1).exp()).eval();
    s.put(D.col(0), ds);
    s.put(D.col(1), ds * X.col(0));
  });
}

// Exact derivatives of M = max(m_x, m_y) (x wins ties), s = s_x e^{m_x−M} + s_y e^{m_y−M}.
template <class T>
basic_var<T> log_add(basic_tape<T>& tape, const basic_var<T>& x, const basic_var<T>& y) {
  const bool record = tape.begin("log_add", {&x, &y});
  detail::check_pairs("log_add", x.shape());
  LINREC_CHECK(x.shape() == y.shape(), "log_add: shapes " << x.shape() << " and " << y.shape() << " differ");
  auto z = basic_tensor<T>::empty(x.shape());
  const index_t n = x.value().numel() / 2;
  const T* px = x.value().data();
  const T* py = y.value().data();
  T* pz = z.data();
  for (index_t i = 0; i < n; ++i) {
    const T mx = px[2 * i + 1], my = py[2 * i + 1];
    const T m = mx >= my ? mx : my;
    pz[2 * i] = px[2 * i] * std::exp(mx - m) + py[2 * i] * std::exp(my - m);
    pz[2 * i + 1] = m;
  }
  return tape.finish("log_add", {&x, &y}, std::move(z), record, [n](op_record<T>& r) {
    const T* g = r.grad_out().data();
    const T* px = r.inputs[0]->value.data();
    const T* py = r.inputs[1]->value.data();
    auto sx = basic_tape<T>::sink(r, 0);
    auto sy = basic_tape<T>::sink(r, 1);
    for (index_t i = 0; i < n; ++i) {
      const T sxv = px[2 * i], mx = px[2 * i + 1], syv = py[2 * i], my = py[2 * i + 1];
      const bool x_max = mx >= my;
      const T m = x_max ? mx : my;
      const T ex = std::exp(mx - m), ey = std::exp(my - m), gs = g[2 * i], gm = g[2 * i + 1];
      // ∂s/∂m_x = s_x e_x − [x max]·s, likewise for y; ∂M/∂m = [that side is the max]
      const T s = sxv * ex + syv * ey;
      const T dsx = gs * ex, dsy = gs * ey;
      const T dmx = gs * (sxv * ex - (x_max ? s : T(0))) + (x_max ? gm : T(0));
      const T dmy = gs * (syv * ey - (x_max ? T(0) : s)) + (x_max ? T(0) : gm);
      if (sx) {
        T* d = sx.tensor.data() + 2 * i;
        d[0] = sx.fresh ? dsx : d[0] + dsx;
        d[1] = sx.fresh ? dmx : d[1] + dmx;
      }
      if (sy) {
        T* d = sy.tensor.data() + 2 * i;
        d[0] = sy.fresh ? dsy : d[0] + dsy;
        d[1] = sy.fresh ? dmy : d[1] + dmy;
      }
    }
  });
}

// q = (s_x/s_y) e^{m_x−m_y};  ∂q/∂s_x = q/s_x = e^{m_x−m_y}/s_y, ∂q/∂m_x = q, ∂q/∂s_y = −q/s_y, ∂q/∂m_y = −q
template <class T>
basic_var<T> log_ratio(basic_tape<T>& tape, const basic_var<T>& x, const basic_var<T>& y) {
  const bool record = tape.begin("log_ratio", {&x, &y});
  detail::check_pairs("log_ratio", x.shape());
  LINREC_CHECK(x.shape() == y.shape(), "log_ratio: shapes " << x.shape() << " and " << y.shape() << " differ");
  auto q = basic_tensor<T>::empty(x.shape().without(x.shape().rank() - 1));
  const index_t n = q.numel();
  auto X = as_row_array(x.value(), n, 2);
  auto Y = as_row_array(y.value(), n, 2);
  as_array(q) = X.col(0) / Y.col(0) * (X.col(1) - Y.col(1)).exp();
  return tape.finish("log_ratio", {&x, &y}, std::move(q), record, [n](op_record<T>& r) {
    auto X = as_row_array(r.inputs[0]->value, n, 2);
    auto Y = as_row_array(r.inputs[1]->value, n, 2);
    auto Q = as_array(r.outputs[0]->value);
    auto G = as_array(r.grad_out());
    if (auto s = basic_tape<T>::sink(r, 0)) {
      auto D = as_row_array(s.tensor, n, 2);
      s.put(D.col(0), G * (X.col(1) - Y.col(1)).exp() / Y.col(0));
      s.put(D.col(1), G * Q);
    }
    if (auto s = basic_tape<T>::sink(r, 1)) {
      auto D = as_row_array(s.tensor, n, 2);
      s.put(D.col(0), -G * Q / Y.col(0));
      s.put(D.col(1), -G * Q);
    }
  });
}

// e^z − 1 for complex z [...,2], accurate for small |z| (where e^z − 1 cancels):
//   Re = expm1(x)·cos y − 2 sin²(y/2),  Im = e^x sin y;  gradient g ⊙ conj(e^z)
template <class T>
basic_var<T> complex_expm1(basic_tape<T>& tape, const basic_var<T>& z) {
  const bool record = tape.begin("complex_expm1", {&z});
  LINREC_CHECK(z.shape().rank() >= 1 && z.shape().back() == 2,
               "complex_expm1: expects a trailing axis of 2, got " << z.shape());
  auto w = basic_tensor<T>::empty(z.shape());
  const index_t n = z.value().numel() / 2;
  const T* pz = z.value().data();
  T* pw = w.data();
  for (index_t i = 0; i < n; ++i) {
    const T x = pz[2 * i], y = pz[2 * i + 1], half_sin = std::sin(y / 2);
    pw[2 * i] = std::expm1(x) * std::cos(y) - 2 * half_sin * half_sin;
    pw[2 * i + 1] = std::exp(x) * std::sin(y);
  }
  return tape.finish("complex_expm1", {&z}, std::move(w), record, [n](op_record<T>& r) {
    auto s = basic_tape<T>::sink(r, 0);
    if (!s) return;
    const T* g = r.grad_out().data();
    const T* pz = r.inputs[0]->value.data();
    T* d = s.tensor.data();
    for (index_t i = 0; i < n; ++i) {
      const T scale = std::exp(pz[2 * i]), re = scale * std::cos(pz[2 * i + 1]), im = scale * std::sin(pz[2 * i + 1]);
      const T d_re = g[2 * i] * re + g[2 * i + 1] * im, d_im = g[2 * i + 1] * re - g[2 * i] * im;
      d[2 * i] = s.fresh ? d_re : d[2 * i] + d_re;
      d[2 * i + 1] = s.fresh ? d_im : d[2 * i + 1] + d_im;
    }
  });
}

}  // namespace linrec
