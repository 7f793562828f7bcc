#pragma once
// Matrix products through Eigen's GEMM.
//
//   matmul(tape, x, w)            x [..., K] · w [K, F] → [..., F]   (leading dims folded: one GEMM)
//   matmul(tape, a, b, ta, tb)    op(a) · op(b) over the last two axes, batched over the
//                                 leading axes (equal, or b 2-D and shared); op = transpose
//                                 when ta / tb is set. e.g. [B,H,T,N]·[B,H,T,N]ᵀ → [B,H,T,T]
//   linear(tape, x, w, bias)      x · w + bias  (bias [F]; the layer's fused dense op)
//
// Each takes an optional execution tag last: cpu{n} runs the products (forward and backward)
// on at most n threads. Eigen's GEMM threads through OpenMP and reads the calling thread's
// omp_get_max_threads(), so the tag is applied as that thread's setting for the call; Eigen
// itself keeps products too small to split on one thread.
#include <omp.h>

#include "linrec/autodiff/device_kernels.hpp"
#include "linrec/autodiff/ops/elementwise.hpp"
#include "linrec/autodiff/tape.hpp"
#include "linrec/core/exec.hpp"

namespace linrec {

namespace detail {

// The calling thread's OpenMP thread count set from an execution tag for one scope (threads
// == 0 keeps the caller's). The setting is per thread, so concurrent callers do not interfere.
class gemm_threads {
 public:
  explicit gemm_threads(const cpu& exec) : saved_(omp_get_max_threads()) {
    if (exec.threads > 0) omp_set_num_threads(exec.threads);
  }
  ~gemm_threads() { omp_set_num_threads(saved_); }
  gemm_threads(const gemm_threads&) = delete;
  gemm_threads& operator=(const gemm_threads&) = delete;

 private:
  int saved_;
};

// C = op(A)·op(B) (fresh) or C += op(A)·op(B).
template <class MC, class MA, class MB>
void gemm(MC&& c, bool accumulate, const MA& a, bool ta, const MB& b, bool tb) {
  if (!accumulate) {
    if (!ta && !tb)
      c.noalias() = a * b;
    else if (ta && !tb)
      c.noalias() = a.transpose() * b;
    else if (!ta && tb)
      c.noalias() = a * b.transpose();
    else
      c.noalias() = a.transpose() * b.transpose();
  } else {
    if (!ta && !tb)
      c.noalias() += a * b;
    else if (ta && !tb)
      c.noalias() += a.transpose() * b;
    else if (!ta && tb)
      c.noalias() += a * b.transpose();
    else
      c.noalias() += a.transpose() * b.transpose();
  }
}

struct matmul_plan {
  index_t batch = 1;       // number of products
  index_t a_rows, a_cols;  // stored matrix of a (per batch entry)
  index_t b_rows, b_cols;  // stored matrix of b
  index_t m, k, n;         // op(a) is m×k, op(b) is k×n
  bool b_shared = false;   // b is one matrix used by every batch entry
  Shape out;
};

inline matmul_plan plan_matmul(const Shape& a, const Shape& b, bool ta, bool tb) {
  LINREC_CHECK(a.rank() >= 1 && b.rank() >= 2,
               "matmul: needs a of rank ≥ 1 and b of rank ≥ 2, got " << a << " and " << b);
  matmul_plan p;
  p.b_rows = b[-2];
  p.b_cols = b[-1];
  if (b.rank() == 2 && !ta) {
    // Fold every leading axis of a into rows: one GEMM.
    p.a_cols = a.back();
    p.a_rows = a.back() == 0 ? 0 : a.numel() / a.back();
    p.b_shared = true;
  } else {
    LINREC_CHECK(a.rank() >= 2, "matmul: transposed a needs rank ≥ 2, got " << a);
    p.a_rows = a[-2];
    p.a_cols = a[-1];
    if (b.rank() == 2) {
      p.b_shared = true;
      p.batch = a.outer(a.rank() - 2);
    } else {
      LINREC_CHECK(a.rank() == b.rank() &&
                       a.without(a.rank() - 1).without(a.rank() - 2) == b.without(b.rank() - 1).without(b.rank() - 2),
                   "matmul: batch axes of " << a << " and " << b << " differ");
      p.batch = a.outer(a.rank() - 2);
    }
  }
  p.m = ta ? p.a_cols : p.a_rows;
  p.k = ta ? p.a_rows : p.a_cols;
  const index_t kb = tb ? p.b_cols : p.b_rows;
  p.n = tb ? p.b_rows : p.b_cols;
  LINREC_CHECK(p.k == kb, "matmul: inner dimensions differ: " << a << (ta ? "ᵀ" : "") << " · " << b << (tb ? "ᵀ" : "")
                                                              << " (" << p.k << " vs " << kb << ")");
  if (b.rank() == 2 && !ta) {
    for (int i = 0; i + 1 < a.rank(); ++i) p.out.push_back(a[i]);
    p.out.push_back(p.n);
  } else {
    for (int i = 0; i + 2 < a.rank(); ++i) p.out.push_back(a[i]);
    p.out.push_back(p.m);
    p.out.push_back(p.n);
  }
  return p;
}

template <class T>
using mat_map = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

// The stored operands of a plan as device GEMM arguments: C (+)= op(X)·op(Y) batched as the plan.
struct gemm_operand {
  index_t ld, stride;
};
inline gemm_operand stored_a(const matmul_plan& p) { return {p.a_cols, p.a_rows * p.a_cols}; }
inline gemm_operand stored_b(const matmul_plan& p) { return {p.b_cols, p.b_shared ? 0 : p.b_rows * p.b_cols}; }
inline gemm_operand stored_g(const matmul_plan& p) { return {p.n, p.m * p.n}; }

template <class T>
void device_gemm(index_t batch, index_t m, index_t n, index_t k, bool accumulate, const T* x, bool tx, gemm_operand gx,
                 const T* y, bool ty, gemm_operand gy, T* c, index_t stride_c) {
  kernel<gemm_kernel<T>>()(
      gemm_call<T>{batch, m, n, k, tx, ty, accumulate, x, gx.ld, gx.stride, y, gy.ld, gy.stride, c, stride_c});
}

// matmul's forward and backward on a device: the same products as the CPU's, as batched GEMMs.
template <class T>
basic_tensor<T> device_matmul(const matmul_plan& p, const basic_tensor<T>& a, const basic_tensor<T>& b, bool ta,
                              bool tb) {
  auto y = basic_tensor<T>::empty(p.out, a.where());
  device_gemm(p.batch, p.m, p.n, p.k, false, a.raw_data(), ta, stored_a(p), b.raw_data(), tb, stored_b(p), y.raw_data(),
              p.m * p.n);
  return y;
}
template <class T>
void device_matmul_backward(const matmul_plan& p, bool ta, bool tb, op_record<T>& r) {
  const T* g = r.grad_out().raw_data();
  const T* pa = r.inputs[0]->value.raw_data();
  const T* pb = r.inputs[1]->value.raw_data();
  if (auto s = basic_tape<T>::sink(r, 0)) {
    // stored dA: ta ? op(B)·Gᵀ : G·op(B)ᵀ
    if (!ta)
      device_gemm(p.batch, p.a_rows, p.a_cols, p.n, !s.fresh, g, false, stored_g(p), pb, !tb, stored_b(p),
                  s.tensor.raw_data(), p.a_rows * p.a_cols);
    else
      device_gemm(p.batch, p.a_rows, p.a_cols, p.n, !s.fresh, pb, tb, stored_b(p), g, true, stored_g(p),
                  s.tensor.raw_data(), p.a_rows * p.a_cols);
  }
  if (auto s = basic_tape<T>::sink(r, 1)) {
    // stored dB: tb ? Gᵀ·op(A) : op(A)ᵀ·G; a shared B sums over the batch (stride 0: in order)
    const index_t stride_c = p.b_shared ? 0 : p.b_rows * p.b_cols;
    if (!tb)
      device_gemm(p.batch, p.b_rows, p.b_cols, p.m, !s.fresh, pa, !ta, stored_a(p), g, false, stored_g(p),
                  s.tensor.raw_data(), stride_c);
    else
      device_gemm(p.batch, p.b_rows, p.b_cols, p.m, !s.fresh, g, true, stored_g(p), pa, ta, stored_a(p),
                  s.tensor.raw_data(), stride_c);
  }
}

}  // namespace detail

template <class T>
basic_var<T> matmul(basic_tape<T>& tape, const basic_var<T>& a, const basic_var<T>& b, bool transpose_a = false,
                    bool transpose_b = false, cpu exec = {}) {
  const bool record = tape.begin("matmul", {&a, &b});
  const detail::matmul_plan p = detail::plan_matmul(a.shape(), b.shape(), transpose_a, transpose_b);
  if (!a.value().where().is_cpu())
    return tape.finish("matmul", {&a, &b}, detail::device_matmul(p, a.value(), b.value(), transpose_a, transpose_b),
                       record, [p, transpose_a, transpose_b](op_record<T>& r) {
                         detail::device_matmul_backward(p, transpose_a, transpose_b, r);
                       });
  const detail::gemm_threads threads(exec);
  auto y = basic_tensor<T>::empty(p.out);
  const T* pa = a.value().data();
  const T* pb = b.value().data();
  for (index_t i = 0; i < p.batch; ++i) {
    detail::mat_map<T> A(const_cast<T*>(pa) + i * p.a_rows * p.a_cols, p.a_rows, p.a_cols);
    detail::mat_map<T> B(const_cast<T*>(pb) + (p.b_shared ? 0 : i * p.b_rows * p.b_cols), p.b_rows, p.b_cols);
    detail::mat_map<T> Y(y.data() + i * p.m * p.n, p.m, p.n);
    detail::gemm(Y, false, A, transpose_a, B, transpose_b);
  }
  return tape.finish("matmul", {&a, &b}, std::move(y), record, [p, transpose_a, transpose_b, exec](op_record<T>& r) {
    const detail::gemm_threads threads(exec);
    T* g = const_cast<T*>(r.grad_out().data());
    T* pa = r.inputs[0]->value.data();
    T* pb = r.inputs[1]->value.data();
    auto sa = basic_tape<T>::sink(r, 0);
    auto sb = basic_tape<T>::sink(r, 1);
    bool b_accumulate = !sb.fresh;
    for (index_t i = 0; i < p.batch; ++i) {
      detail::mat_map<T> A(pa + i * p.a_rows * p.a_cols, p.a_rows, p.a_cols);
      detail::mat_map<T> B(pb + (p.b_shared ? 0 : i * p.b_rows * p.b_cols), p.b_rows, p.b_cols);
      detail::mat_map<T> G(g + i * p.m * p.n, p.m, p.n);
      if (sa) {
        // d op(A) = G·op(B)ᵀ; stored A: ta ? op(B)·Gᵀ : G·op(B)ᵀ
        detail::mat_map<T> dA(sa.tensor.data() + i * p.a_rows * p.a_cols, p.a_rows, p.a_cols);
        if (!transpose_a)
          detail::gemm(dA, !sa.fresh, G, false, B, !transpose_b);
        else
          detail::gemm(dA, !sa.fresh, B, transpose_b, G, true);
      }
      if (sb) {
        // d op(B) = op(A)ᵀ·G; stored B: tb ? Gᵀ·op(A) : op(A)ᵀ·G
        detail::mat_map<T> dB(sb.tensor.data() + (p.b_shared ? 0 : i * p.b_rows * p.b_cols), p.b_rows, p.b_cols);
        if (!transpose_b)
          detail::gemm(dB, b_accumulate, A, !transpose_a, G, false);
        else
          detail::gemm(dB, b_accumulate, G, true, A, transpose_a);
        if (p.b_shared) b_accumulate = true;
      }
    }
  });
}

// x · w on at most exec.threads threads.
template <class T>
basic_var<T> matmul(basic_tape<T>& tape, const basic_var<T>& a, const basic_var<T>& b, cpu exec) {
  return matmul(tape, a, b, false, false, exec);
}

// y = x · w + bias: x [..., K], w [K, F], bias [F] (one GEMM, bias added in place).
template <class T>
basic_var<T> linear(basic_tape<T>& tape, const basic_var<T>& x, const basic_var<T>& w, const basic_var<T>& bias,
                    cpu exec = {}) {
  const bool record = tape.begin("linear", {&x, &w, &bias});
  LINREC_CHECK(w.shape().rank() == 2 && x.shape().rank() >= 1 && x.shape().back() == w.shape()[0],
               "linear: x " << x.shape() << " and weight " << w.shape() << " do not fit (want x [..., K], w [K, F])");
  LINREC_CHECK(bias.shape().rank() == 1 && bias.shape()[0] == w.shape()[1],
               "linear: bias " << bias.shape() << " for weight " << w.shape() << " (want [F])");
  const index_t k = w.shape()[0], f = w.shape()[1], rows = x.value().numel() / (k ? k : 1);
  Shape out = x.shape();
  out[-1] = f;
  if (!x.value().where().is_cpu()) {
    // y = x·w, then y += bias in place (an add whose left operand is y itself).
    const detail::matmul_plan p = detail::plan_matmul(x.shape(), w.shape(), false, false);
    auto y = detail::device_matmul(p, x.value(), w.value(), false, false);
    detail::kernel<detail::binary_kernel<detail::add_fn, T>>()(
        detail::make_broadcast(Shape{rows, f}, Shape{rows, f}, Shape{f}), y.raw_data(), bias.value().raw_data(),
        y.raw_data());
    return tape.finish("linear", {&x, &w, &bias}, std::move(y), record, [p, rows, f](op_record<T>& r) {
      detail::device_matmul_backward(p, false, false, r);
      if (auto s = basic_tape<T>::sink(r, 2)) {
        auto column_sums = basic_tensor<T>::empty(Shape{f}, s.tensor.where());
        detail::kernel<detail::reduce_axis_kernel<T>>()(1, rows, f, T(1), r.grad_out().raw_data(),
                                                        column_sums.raw_data());
        s.put_tensor(column_sums);
      }
    });
  }
  const detail::gemm_threads threads(exec);
  auto y = basic_tensor<T>::empty(out);
  auto Y = as_matrix(y, rows, f);
  Y.noalias() = as_matrix(x.value(), rows, k) * as_matrix(w.value());
  Y.rowwise() += as_matrix(bias.value(), 1, f).row(0);
  return tape.finish("linear", {&x, &w, &bias}, std::move(y), record, [rows, k, f, exec](op_record<T>& r) {
    const detail::gemm_threads threads(exec);
    const auto G = as_matrix(r.grad_out(), rows, f);
    if (auto s = basic_tape<T>::sink(r, 0))
      s.put_product(as_matrix(s.tensor, rows, k), G * as_matrix(r.inputs[1]->value).transpose());
    if (auto s = basic_tape<T>::sink(r, 1))
      s.put_product(as_matrix(s.tensor), as_matrix(r.inputs[0]->value, rows, k).transpose() * G);
    if (auto s = basic_tape<T>::sink(r, 2)) s.put(as_matrix(s.tensor, 1, f), G.colwise().sum());
  });
}

}  // namespace linrec
