#pragma once
// The device kernels of the tape's ops, as kernel slots (core/kernel_slot.hpp). An op whose
// inputs live on a CUDA device calls these; linrec/autodiff/cuda.cuh installs them. The
// per-element math of the elementwise families is the functors' (ops/elementwise.hpp, host
// and device), so the CPU tests exercise the arithmetic the kernels run.
//
// Conventions: pointers are device pointers of one device; `accumulate` adds into the
// destination instead of assigning it (a gradient buffer that already holds a contribution).
#include <cstdint>

#include "linrec/autodiff/detail/broadcast.hpp"
#include "linrec/core/index.hpp"
#include "linrec/core/kernel_slot.hpp"

namespace linrec::detail {

// y = Fn::f(x) elementwise; dx (+)= g · Fn::df(x, y)
template <class Fn, class T>
struct unary_kernel {
  using signature = void(index_t n, const T* x, T* y);
  static constexpr const char* name = Fn::name;
};
template <class Fn, class T>
struct unary_grad_kernel {
  using signature = void(index_t n, const T* x, const T* y, const T* g, T* dx, bool accumulate);
  static constexpr const char* name = Fn::name;
};

// y = Fn::f(a, b) over a broadcast layout; d (+)= the partial of operand `which` (0: a, 1: b)
// times g, summed over the output positions that read each of its elements.
template <class Fn, class T>
struct binary_kernel {
  using signature = void(const broadcast_layout& layout, const T* a, const T* b, T* y);
  static constexpr const char* name = Fn::name;
};
template <class Fn, class T>
struct binary_grad_kernel {
  using signature = void(const broadcast_layout& layout, int which, const T* a, const T* b, const T* g, T* d,
                         bool accumulate);
  static constexpr const char* name = Fn::name;
};

// y (+)= alpha · x + beta
template <class T>
struct affine_kernel {
  using signature = void(index_t n, T alpha, T beta, const T* x, T* y, bool accumulate);
  static constexpr const char* name = "affine";
};

// C (+)= op(A) · op(B) for `batch` row-major matrices at fixed strides (stride 0: shared).
template <class T>
struct gemm_call {
  index_t batch, m, n, k;
  bool transpose_a, transpose_b, accumulate;
  const T* a;
  index_t lda, stride_a;  // lda: the stored row length of A
  const T* b;
  index_t ldb, stride_b;
  T* c;
  index_t stride_c;  // C is m×n, rows of n
};
template <class T>
struct gemm_kernel {
  using signature = void(const gemm_call<T>& call);
  static constexpr const char* name = "matmul";
};

// Normalisation of `rows` groups of `size` values; gamma/beta (nullable) are per channel of a
// row of `channels` = groups × size values. Writes x̂, 1/σ per group and y.
template <class T>
struct norm_forward_kernel {
  using signature = void(index_t rows, index_t size, index_t channels, T eps, const T* x, const T* gamma, const T* beta,
                         T* xhat, T* rstd, T* y);
  static constexpr const char* name = "group_norm";
};
// dx (+)= the normalisation's input gradient; dgamma / dbeta (nullable) (+)= column sums of
// g ⊙ x̂ and g. gamma nullable (1).
template <class T>
struct norm_backward_kernel {
  using signature = void(index_t rows, index_t size, index_t channels, const T* g, const T* xhat, const T* rstd,
                         const T* gamma, T* dx, bool accumulate_dx, T* dgamma, bool accumulate_dgamma, T* dbeta,
                         bool accumulate_dbeta);
  static constexpr const char* name = "group_norm";
};

// y[i, :] = table[ids[i], :]; the gradient sums g's rows per table row, in position order:
// positions[offsets[v] .. offsets[v+1]) are the rows of id v, ascending.
template <class T>
struct embedding_kernel {
  using signature = void(index_t count, index_t channels, const std::int32_t* ids, const T* table, T* y);
  static constexpr const char* name = "embedding";
};
template <class T>
struct embedding_grad_kernel {
  using signature = void(index_t vocab, index_t channels, const std::int32_t* offsets, const std::int32_t* positions,
                         const T* g, T* d, bool accumulate);
  static constexpr const char* name = "embedding";
};

// lse[r] = logsumexp(z[r, :]); loss[0] = inv_n · Σ_r [target_r ≥ 0] (lse[r] − z[r, target_r]),
// the sum taken in double in a fixed order.
template <class T>
struct cross_entropy_kernel {
  using signature = void(index_t rows, index_t vocab, const T* z, const std::int32_t* targets, T inv_n, T* lse,
                         T* loss);
  static constexpr const char* name = "softmax_cross_entropy";
};
// d (+)= (softmax(z) − onehot(target)) · g[0] · inv_n on rows with a target ≥ 0, 0 elsewhere.
template <class T>
struct cross_entropy_grad_kernel {
  using signature = void(index_t rows, index_t vocab, const T* z, const std::int32_t* targets, const T* lse, const T* g,
                         T inv_n, T* d, bool accumulate);
  static constexpr const char* name = "softmax_cross_entropy";
};

// y[o, m, i] = x[o, start + m, i] for m < length (x is [outer, n, inner]); the gradient adds g
// into that window of d and, when not accumulating, zeros the rest.
template <class T>
struct narrow_kernel {
  using signature = void(index_t outer, index_t n, index_t inner, index_t start, index_t length, const T* x, T* y);
  static constexpr const char* name = "narrow";
};
template <class T>
struct narrow_grad_kernel {
  using signature = void(index_t outer, index_t n, index_t inner, index_t start, index_t length, const T* g, T* d,
                         bool accumulate);
  static constexpr const char* name = "narrow";
};

// y[b, 0] = prev[b] (0 when null), y[b, t] = x[b, t−1]; gradients into dx and dprev (nullable).
template <class T>
struct token_shift_kernel {
  using signature = void(index_t batch, index_t time, index_t channels, const T* x, const T* prev, T* y);
  static constexpr const char* name = "token_shift";
};
template <class T>
struct token_shift_grad_kernel {
  using signature = void(index_t batch, index_t time, index_t channels, const T* g, T* dx, bool accumulate_dx, T* dprev,
                         bool accumulate_dprev);
  static constexpr const char* name = "token_shift";
};

// y[o, i] = factor · Σ_j x[o, j, i] over an [outer, n, inner] view; d[o, j, i] (+)= factor · g[o, i]
template <class T>
struct reduce_axis_kernel {
  using signature = void(index_t outer, index_t n, index_t inner, T factor, const T* x, T* y);
  static constexpr const char* name = "sum";
};
template <class T>
struct reduce_axis_grad_kernel {
  using signature = void(index_t outer, index_t n, index_t inner, T factor, const T* g, T* d, bool accumulate);
  static constexpr const char* name = "sum";
};
// y[0] = factor · Σ_i x[i] (in double, fixed order); d[i] (+)= factor · g[0]
template <class T>
struct reduce_all_kernel {
  using signature = void(index_t n, T factor, const T* x, T* y);
  static constexpr const char* name = "sum_all";
};
template <class T>
struct reduce_all_grad_kernel {
  using signature = void(index_t n, T factor, const T* g, T* d, bool accumulate);
  static constexpr const char* name = "sum_all";
};

// y = x with axes a0 and a1 of the padded 4-D extents swapped; y (+)= when accumulating.
template <class T>
struct swap_axes_kernel {
  using signature = void(const index_t* extents, int a0, int a1, const T* x, T* y, bool accumulate);
  static constexpr const char* name = "transpose";
};

}  // namespace linrec::detail
