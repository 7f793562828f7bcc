#pragma once
// The shape of a tensor: rank 0 (a scalar) to 4, row-major (last dimension contiguous).
#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <sstream>
#include <string>

#include "linrec/core/error.hpp"
#include "linrec/core/index.hpp"

namespace linrec {

class Shape {
 public:
  static constexpr int max_rank = 4;

  Shape() = default;
  Shape(std::initializer_list<index_t> dims) {
    LINREC_CHECK(dims.size() <= max_rank, "Shape: rank " << dims.size() << " exceeds the maximum of " << max_rank);
    for (index_t d : dims) {
      LINREC_CHECK(d >= 0, "Shape: negative extent " << d);
      dims_[rank_++] = d;
    }
  }
  template <class It>
  static Shape from_range(It first, It last) {
    Shape s;
    for (; first != last; ++first) s.push_back(static_cast<index_t>(*first));
    return s;
  }

  int rank() const { return rank_; }
  index_t operator[](int i) const {
    LINREC_CHECK(i >= -rank_ && i < rank_, "Shape: axis " << i << " out of range for rank " << rank_);
    return dims_[i < 0 ? i + rank_ : i];
  }
  index_t& operator[](int i) { return dims_[i < 0 ? i + rank_ : i]; }
  index_t back() const { return (*this)[-1]; }
  // The element count, checked: a product that overflows 64 bits would allocate a tiny buffer
  // and let every loop over the tensor write past it.
  index_t numel() const {
    index_t n = 1;
    for (int i = 0; i < rank_; ++i)
      LINREC_CHECK(!__builtin_mul_overflow(n, dims_[i], &n),
                   "Shape: the element count of " << *this << " overflows a 64-bit index");
    return n;
  }
  const index_t* begin() const { return dims_.data(); }
  const index_t* end() const { return dims_.data() + rank_; }

  void push_back(index_t d) {
    LINREC_CHECK(rank_ < max_rank, "Shape: rank would exceed " << max_rank);
    LINREC_CHECK(d >= 0, "Shape: negative extent " << d);
    dims_[rank_++] = d;
  }
  // Normalise a possibly negative axis.
  int axis(int a) const {
    LINREC_CHECK(a >= -rank_ && a < rank_, "axis " << a << " out of range for shape " << *this);
    return a < 0 ? a + rank_ : a;
  }
  // Product of the extents before / after an axis.
  index_t outer(int a) const {
    index_t n = 1;
    for (int i = 0; i < a; ++i) n *= dims_[i];
    return n;
  }
  index_t inner(int a) const {
    index_t n = 1;
    for (int i = a + 1; i < rank_; ++i) n *= dims_[i];
    return n;
  }
  Shape without(int a) const {
    Shape s;
    for (int i = 0; i < rank_; ++i)
      if (i != a) s.push_back(dims_[i]);
    return s;
  }
  Shape with(int a, index_t extent) const {
    Shape s = *this;
    s.dims_[a] = extent;
    return s;
  }

  friend bool operator==(const Shape& x, const Shape& y) {
    return x.rank_ == y.rank_ && std::equal(x.begin(), x.end(), y.begin());
  }
  friend std::ostream& operator<<(std::ostream& out, const Shape& s) {
    out << '[';
    for (int i = 0; i < s.rank_; ++i) out << (i ? "," : "") << s.dims_[i];
    return out << ']';
  }
  std::string str() const {
    std::ostringstream out;
    out << *this;
    return out.str();
  }

 private:
  std::array<index_t, max_rank> dims_{};
  int rank_ = 0;
};

}  // namespace linrec
