#pragma once
// Reference initialisations shared by the layers: orthogonal (PyTorch's orthogonal_, which
// RWKV-LM uses for its projections), uniform, zeros, and ramps over channels.
#include <cmath>
#include <string>
#include <vector>

#include "linrec/autodiff/var.hpp"
#include "linrec/core/rng.hpp"
#include "linrec/tensor/detail/eigen_include.hpp"

namespace linrec::layers {

// A [rows, cols] matrix with orthonormal rows or columns (whichever are fewer), times gain.
template <class T>
basic_tensor<T> orthogonal(index_t rows, index_t cols, double gain, rng& gen) {
  const index_t tall = std::max(rows, cols), wide = std::min(rows, cols);
  Eigen::MatrixXd draw(tall, wide);
  for (index_t i = 0; i < tall; ++i)
    for (index_t j = 0; j < wide; ++j) draw(i, j) = gen.normal();
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(draw);
  Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(tall, wide);
  // Make the factorisation unique (as PyTorch does): R's diagonal positive.
  const Eigen::MatrixXd r = qr.matrixQR().topLeftCorner(wide, wide);
  for (index_t j = 0; j < wide; ++j)
    if (r(j, j) < 0) q.col(j) *= -1;
  auto out = basic_tensor<T>::empty({rows, cols});
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j) out.at({i, j}) = static_cast<T>(gain * (rows >= cols ? q(i, j) : q(j, i)));
  return out;
}

// RWKV-LM's projection init: orthogonal scaled by `scale` with gain sqrt(out/in) when the
// layer widens (PyTorch weights are [out, in]; ours are [in, out]); zeros when scale is 0.
template <class T>
basic_tensor<T> rwkv_projection(index_t in, index_t out, double scale, rng& gen) {
  if (scale == 0) return basic_tensor<T>::zeros({in, out});
  const double gain = out > in ? std::sqrt(double(out) / double(in)) : 1.0;
  return orthogonal<T>(in, out, gain * scale, gen);
}

// values[c] = f(c) for c in [0, n)
template <class T, class F>
basic_tensor<T> per_channel(index_t n, F&& f) {
  auto out = basic_tensor<T>::empty({n});
  for (index_t c = 0; c < n; ++c) out.at({c}) = static_cast<T>(f(c));
  return out;
}

// Collects a layer's parameters (for optimizers and checkpoints).
template <class T>
using parameter_list = std::vector<basic_parameter<T>>;

// A parameter named prefix + name.
template <class T>
basic_parameter<T> named(const std::string& prefix, const char* name, basic_tensor<T> value) {
  return basic_parameter<T>(std::move(value), prefix + name);
}

}  // namespace linrec::layers
