#pragma once
// The scan primitive: h[t] = a[t] ⊙ h[t-1] + b[t], forward and backward, on any backend.
//
//   #include <linrec/scan/scan.hpp>
//   linrec::scan_shape shape{batch, time, channels};
//   linrec::scan_forward(linrec::cpu{}, shape, a, b, h);                 // [B,T,C] float arrays
//   linrec::scan_forward(linrec::cpu{}, shape, a, b, h, h0, h_final);    // carry state across calls
//
// The general entry points take a scan_forward_args / scan_backward_args with explicit strides
// (any layout, e.g. [B,C,T] via strides3::bct, or a time-invariant decay via
// strides3::time_invariant). The operator (real_op, complex_op, log_op) is a template
// parameter; the short forms deduce it from the element type. The CUDA backend
// (linrec/scan/cuda.cuh, nvcc only) adds overloads taking linrec::cuda{stream}.
#include <complex>
#include <type_traits>

#include "linrec/core/exec.hpp"
#include "linrec/scan/algorithm.hpp"
#include "linrec/scan/cpu_parallel.hpp"
#include "linrec/scan/layout.hpp"
#include "linrec/scan/operators.hpp"
#include "linrec/scan/sequential.hpp"

namespace linrec {

template <class Op>
void scan_forward(const cpu& exec, const scan_forward_args<Op>& args,
                  scan_algorithm algorithm = scan_algorithm::automatic) {
  if (algorithm == scan_algorithm::sequential)
    scan_forward_sequential(args);
  else
    scan_forward_parallel(exec, args);
}

template <class Op>
void scan_backward(const cpu& exec, const scan_backward_args<Op>& args,
                   scan_algorithm algorithm = scan_algorithm::automatic) {
  if (algorithm == scan_algorithm::sequential)
    scan_backward_sequential(args);
  else
    scan_backward_parallel(exec, args);
}

// The operator an element type implies: float/double → real_op, std::complex → complex_op,
// log_value → log_op.
template <class Value>
struct default_op {
  using type = real_op<Value>;
};
template <class T>
struct default_op<std::complex<T>> {
  using type = complex_op<T>;
};
template <class T>
struct default_op<log_value<T>> {
  using type = log_op<T>;
};
template <class Value>
using default_op_t = typename default_op<Value>::type;

// Short forms for contiguous [batch, time, channels] arrays; h0, h_final are [batch, channels].
template <class Exec, class Value, class Op = default_op_t<Value>>
void scan_forward(const Exec& exec, const scan_shape& shape, const typename Op::decay_type* a, const Value* b, Value* h,
                  const std::type_identity_t<Value>* h0 = nullptr, std::type_identity_t<Value>* h_final = nullptr) {
  const strides3 btc = strides3::btc(shape);
  scan_forward(exec, scan_forward_args<Op>{shape, a, btc, b, btc, h, btc, h0, h_final});
}

template <class Exec, class Value, class Op = default_op_t<Value>>
void scan_backward(const Exec& exec, const scan_shape& shape, const typename Op::decay_type* a, const Value* h,
                   const std::type_identity_t<Value>* h0, const typename Op::grad_type* dh,
                   const typename Op::grad_type* dh_final, typename Op::decay_grad_type* da, typename Op::grad_type* db,
                   typename Op::grad_type* dh0 = nullptr) {
  const strides3 btc = strides3::btc(shape);
  scan_backward(exec, scan_backward_args<Op>{shape, a, btc, h, btc, h0, dh, btc, dh_final, da, btc, db, btc, dh0});
}

}  // namespace linrec
