#pragma once
// Numpy-style broadcasting of up to 4-D shapes: shapes are aligned at the last axis, and an
// extent of 1 (or a missing leading axis) stretches to the other's extent.
#include <array>
#include <type_traits>

#include "linrec/tensor/shape.hpp"

namespace linrec::detail {

// An operand's element strides over the 4-D padded output (0 along broadcast axes).
struct broadcast_layout {
  std::array<index_t, 4> extent{1, 1, 1, 1};  // output extents, padded at the front
  std::array<index_t, 4> stride_a{}, stride_b{};
};

inline std::array<index_t, 4> padded(const Shape& s) {
  std::array<index_t, 4> p{1, 1, 1, 1};
  for (int i = 0; i < s.rank(); ++i) p[4 - s.rank() + i] = s[i];
  return p;
}

inline std::array<index_t, 4> strides_in(const Shape& s, const std::array<index_t, 4>& out) {
  const auto p = padded(s);
  std::array<index_t, 4> st{};
  index_t step = 1;
  for (int i = 3; i >= 0; --i) {
    st[i] = (p[i] == 1 && out[i] != 1) ? 0 : step;
    step *= p[i];
  }
  return st;
}

inline Shape broadcast_shape(const char* op, const Shape& a, const Shape& b) {
  const int rank = a.rank() > b.rank() ? a.rank() : b.rank();
  const auto pa = padded(a), pb = padded(b);
  Shape out;
  for (int i = 4 - rank; i < 4; ++i) {
    LINREC_CHECK(pa[i] == pb[i] || pa[i] == 1 || pb[i] == 1,
                 op << ": shapes " << a << " and " << b << " do not broadcast (axis " << i - (4 - rank) << ")");
    out.push_back(pa[i] == 1 ? pb[i] : pa[i]);
  }
  return out;
}

inline broadcast_layout make_broadcast(const Shape& out, const Shape& a, const Shape& b) {
  broadcast_layout l;
  l.extent = padded(out);
  l.stride_a = strides_in(a, l.extent);
  l.stride_b = strides_in(b, l.extent);
  return l;
}

// Calls row(out_index, a_index, b_index, n) for every run of n = extent[3] output elements
// along the last axis, in row-major order; within a run the operands step by stride_a[3]
// and stride_b[3] (each 0 or 1 unless an operand is strided oddly).
template <class F>
void for_each_broadcast_row(const broadcast_layout& l, F&& row) {
  const auto& e = l.extent;
  const auto &sa = l.stride_a, &sb = l.stride_b;
  index_t o = 0;
  for (index_t i0 = 0; i0 < e[0]; ++i0)
    for (index_t i1 = 0; i1 < e[1]; ++i1)
      for (index_t i2 = 0; i2 < e[2]; ++i2, o += e[3])
        row(o, i0 * sa[0] + i1 * sa[1] + i2 * sa[2], i0 * sb[0] + i1 * sb[1] + i2 * sb[2], e[3]);
}

// fn(step_a, step_b) with each step a compile-time 0 or 1 where it is one (so the loop over a
// run vectorises: a contiguous operand, or one value repeated), a runtime value otherwise.
template <class F>
void with_unit_steps(index_t step_a, index_t step_b, F&& fn) {
  using zero = std::integral_constant<index_t, 0>;
  using one = std::integral_constant<index_t, 1>;
  const auto second = [&](auto a) {
    if (step_b == 0)
      fn(a, zero{});
    else if (step_b == 1)
      fn(a, one{});
    else
      fn(a, step_b);
  };
  if (step_a == 0)
    second(zero{});
  else if (step_a == 1)
    second(one{});
  else
    second(step_a);
}

// Calls f(out_index, a_index, b_index) for every output element in row-major order.
template <class F>
void for_each_broadcast(const broadcast_layout& l, F&& f) {
  const auto& e = l.extent;
  const auto &sa = l.stride_a, &sb = l.stride_b;
  index_t o = 0;
  for (index_t i0 = 0; i0 < e[0]; ++i0)
    for (index_t i1 = 0; i1 < e[1]; ++i1)
      for (index_t i2 = 0; i2 < e[2]; ++i2) {
        const index_t a = i0 * sa[0] + i1 * sa[1] + i2 * sa[2];
        const index_t b = i0 * sb[0] + i1 * sb[1] + i2 * sb[2];
        for (index_t i3 = 0; i3 < e[3]; ++i3, ++o) f(o, a + i3 * sa[3], b + i3 * sb[3]);
      }
}

}  // namespace linrec::detail
