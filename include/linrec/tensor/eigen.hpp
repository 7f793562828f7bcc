#pragma once
// Eigen views of tensor storage: every tensor is contiguous, so a tensor is a flat array or a
// row-major matrix without copies. This is how the CPU ops compute (and how user code can).
#include "linrec/tensor/detail/eigen_include.hpp"
#include "linrec/tensor/tensor.hpp"

namespace linrec {

template <class T>
using eigen_array = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using eigen_matrix = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
template <class T>
using eigen_row_array = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

// All elements as one column array.
template <class T>
eigen_array<T> as_array(const basic_tensor<T>& t) {
  return eigen_array<T>(t.data(), static_cast<Eigen::Index>(t.numel()));
}
// The tensor as a rows × cols row-major matrix (rows · cols must equal numel); by default the
// last axis is the columns.
template <class T>
eigen_matrix<T> as_matrix(const basic_tensor<T>& t, index_t rows, index_t cols) {
  LINREC_CHECK(rows * cols == t.numel(), "as_matrix: " << rows << "x" << cols << " view of shape " << t.shape());
  return eigen_matrix<T>(t.data(), static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
}
template <class T>
eigen_matrix<T> as_matrix(const basic_tensor<T>& t) {
  const index_t cols = t.rank() == 0 ? 1 : t.shape().back();
  return as_matrix(t, cols == 0 ? 0 : t.numel() / cols, cols);
}
template <class T>
eigen_row_array<T> as_row_array(const basic_tensor<T>& t, index_t rows, index_t cols) {
  LINREC_CHECK(rows * cols == t.numel(), "as_row_array: " << rows << "x" << cols << " view of shape " << t.shape());
  return eigen_row_array<T>(t.data(), static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
}

}  // namespace linrec
