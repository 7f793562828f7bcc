#pragma once
// Token-level ops of language models.
//
//   embedding(tape, table, ids, ids_shape)   table [V, C], ids (row-major, shape ids_shape,
//                                            e.g. [B, T]) → [B, T, C]
//   softmax_cross_entropy(tape, logits, targets)
//       logits [..., V], one target id per row → the mean over rows of
//       −log softmax(logits)[target]  (rank 0). Targets < 0 are ignored (not counted).
//   softmax(x)                               plain tensor function for sampling (no tape)
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "linrec/autodiff/device_kernels.hpp"
#include "linrec/autodiff/tape.hpp"

namespace linrec {

template <class T>
basic_var<T> embedding(basic_tape<T>& tape, const basic_var<T>& table, std::span<const std::int32_t> ids,
                       const Shape& ids_shape) {
  const bool record = tape.begin("embedding", {&table});
  LINREC_CHECK(table.shape().rank() == 2, "embedding: table must be [V, C], got " << table.shape());
  LINREC_CHECK(static_cast<index_t>(ids.size()) == ids_shape.numel(),
               "embedding: " << ids.size() << " ids for ids shape " << ids_shape);
  const index_t vocab = table.shape()[0], channels = table.shape()[1];
  Shape out = ids_shape;
  out.push_back(channels);
  const device dev = table.value().where();
  if (!dev.is_cpu()) {
    for (std::size_t i = 0; i < ids.size(); ++i)
      LINREC_CHECK(ids[i] >= 0 && ids[i] < vocab, "embedding: id " << ids[i] << " at position " << i
                                                                   << " is outside the vocabulary [0, " << vocab
                                                                   << ")");
    const index_t count = static_cast<index_t>(ids.size());
    auto y = basic_tensor<T>::empty(out, dev);
    const auto device_ids = basic_tensor<std::int32_t>::from_data(Shape{count}, ids, dev);
    detail::kernel<detail::embedding_kernel<T>>()(count, channels, device_ids.raw_data(), table.value().raw_data(),
                                                  y.raw_data());
    // The backward sums each id's rows in position order (no atomics: the same bits every run):
    // the positions grouped by id (a counting sort), and where each id's group starts.
    basic_tensor<std::int32_t> offsets, positions;
    if (record) {
      std::vector<std::int32_t> start(static_cast<std::size_t>(vocab) + 1, 0), order(ids.size());
      for (const std::int32_t id : ids) ++start[static_cast<std::size_t>(id) + 1];
      for (index_t v = 0; v < vocab; ++v) start[std::size_t(v) + 1] += start[std::size_t(v)];
      std::vector<std::int32_t> next(start.begin(), start.end() - 1);
      for (std::size_t i = 0; i < ids.size(); ++i)
        order[static_cast<std::size_t>(next[static_cast<std::size_t>(ids[i])]++)] = static_cast<std::int32_t>(i);
      offsets = basic_tensor<std::int32_t>::from_data(Shape{vocab + 1}, start, dev);
      positions = basic_tensor<std::int32_t>::from_data(Shape{count}, order, dev);
    }
    return tape.finish(
        "embedding", {&table}, std::move(y), record, [offsets, positions, vocab, channels](op_record<T>& r) {
          auto s = basic_tape<T>::sink(r, 0);
          if (s)
            detail::kernel<detail::embedding_grad_kernel<T>>()(vocab, channels, offsets.raw_data(),
                                                               positions.raw_data(), r.grad_out().raw_data(),
                                                               s.tensor.raw_data(), !s.fresh);
        });
  }
  auto y = basic_tensor<T>::empty(out);
  auto Tm = as_matrix(table.value());
  auto Y = as_matrix(y, static_cast<index_t>(ids.size()), channels);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    LINREC_CHECK(ids[i] >= 0 && ids[i] < vocab, "embedding: id " << ids[i] << " at position " << i
                                                                 << " is outside the vocabulary [0, " << vocab << ")");
    Y.row(static_cast<Eigen::Index>(i)) = Tm.row(ids[i]);
  }
  std::vector<std::int32_t> saved;
  if (record) saved.assign(ids.begin(), ids.end());
  return tape.finish("embedding", {&table}, std::move(y), record, [ids = std::move(saved), channels](op_record<T>& r) {
    auto s = basic_tape<T>::sink(r, 0);
    if (!s) return;
    s.zero_if_fresh();
    auto D = as_matrix(s.tensor);
    auto G = as_matrix(r.grad_out(), static_cast<index_t>(ids.size()), channels);
    for (std::size_t i = 0; i < ids.size(); ++i) D.row(ids[i]) += G.row(static_cast<Eigen::Index>(i));
  });
}

// loss = (1/N) Σ_rows [logsumexp(z) − z[target]], N = rows with target ≥ 0;
// ∂loss/∂z = (softmax(z) − onehot(target)) / N
template <class T>
basic_var<T> softmax_cross_entropy(basic_tape<T>& tape, const basic_var<T>& logits,
                                   std::span<const std::int32_t> targets) {
  const bool record = tape.begin("softmax_cross_entropy", {&logits});
  const Shape& s = logits.shape();
  LINREC_CHECK(s.rank() >= 1, "softmax_cross_entropy: logits must be [..., V]");
  const index_t vocab = s.back(), rows = vocab ? s.numel() / vocab : 0;
  LINREC_CHECK(static_cast<index_t>(targets.size()) == rows,
               "softmax_cross_entropy: " << targets.size() << " targets for logits " << s << " (" << rows << " rows)");
  const device dev = logits.value().where();
  if (!dev.is_cpu()) {
    index_t counted = 0;
    for (index_t i = 0; i < rows; ++i) {
      const std::int32_t t = targets[static_cast<std::size_t>(i)];
      LINREC_CHECK(t < vocab,
                   "softmax_cross_entropy: target " << t << " at row " << i << " ≥ vocabulary size " << vocab);
      counted += t >= 0;
    }
    const T inv_n = counted ? T(1) / static_cast<T>(counted) : T(0);
    const auto device_targets = basic_tensor<std::int32_t>::from_data(Shape{rows}, targets, dev);
    auto lse = basic_tensor<T>::empty(Shape{rows}, dev);
    auto y = basic_tensor<T>::empty(Shape{}, dev);
    detail::kernel<detail::cross_entropy_kernel<T>>()(rows, vocab, logits.value().raw_data(), device_targets.raw_data(),
                                                      inv_n, lse.raw_data(), y.raw_data());
    return tape.finish("softmax_cross_entropy", {&logits}, std::move(y), record,
                       [lse, device_targets, rows, vocab, inv_n](op_record<T>& r) {
                         auto s = basic_tape<T>::sink(r, 0);
                         if (s)
                           detail::kernel<detail::cross_entropy_grad_kernel<T>>()(
                               rows, vocab, r.inputs[0]->value.raw_data(), device_targets.raw_data(), lse.raw_data(),
                               r.grad_out().raw_data(), inv_n, s.tensor.raw_data(), !s.fresh);
                       });
  }
  auto Z = as_matrix(logits.value(), rows, vocab);
  auto lse = basic_tensor<T>::empty(Shape{rows});
  T* plse = lse.data();
  double total = 0;
  index_t counted = 0;
  for (index_t i = 0; i < rows; ++i) {
    const std::int32_t t = targets[static_cast<std::size_t>(i)];
    LINREC_CHECK(t < vocab, "softmax_cross_entropy: target " << t << " at row " << i << " ≥ vocabulary size " << vocab);
    const T m = Z.row(i).maxCoeff();
    plse[i] = m + std::log((Z.row(i).array() - m).exp().sum());
    if (t >= 0) {
      total += static_cast<double>(plse[i] - Z(i, t));
      ++counted;
    }
  }
  const T inv_n = counted ? T(1) / static_cast<T>(counted) : T(0);
  auto y = basic_tensor<T>::full(Shape{}, static_cast<T>(total) * inv_n);
  std::vector<std::int32_t> saved;
  if (record) saved.assign(targets.begin(), targets.end());
  return tape.finish("softmax_cross_entropy", {&logits}, std::move(y), record,
                     [lse, targets = std::move(saved), rows, vocab, inv_n](op_record<T>& r) {
                       auto s = basic_tape<T>::sink(r, 0);
                       if (!s) return;
                       const T scale = r.grad_out().item() * inv_n;
                       auto Z = as_matrix(r.inputs[0]->value, rows, vocab);
                       auto D = as_matrix(s.tensor, rows, vocab);
                       const T* plse = lse.data();
                       for (index_t i = 0; i < rows; ++i) {
                         const std::int32_t t = targets[static_cast<std::size_t>(i)];
                         const T row_scale = t >= 0 ? scale : T(0);
                         if (s.fresh)
                           D.row(i) = ((Z.row(i).array() - plse[i]).exp() * row_scale).matrix();
                         else
                           D.row(i) += ((Z.row(i).array() - plse[i]).exp() * row_scale).matrix();
                         if (t >= 0) D(i, t) -= row_scale;
                       }
                     });
}

// softmax over the last axis of a plain tensor (sampling, evaluation).
template <class T>
basic_tensor<T> softmax(const basic_tensor<T>& x) {
  auto y = basic_tensor<T>::empty(x.shape());
  auto X = as_row_array(x, x.numel() / x.shape().back(), x.shape().back());
  auto Y = as_row_array(y, x.numel() / x.shape().back(), x.shape().back());
  for (Eigen::Index i = 0; i < X.rows(); ++i) {
    Y.row(i) = (X.row(i) - X.row(i).maxCoeff()).exp();
    Y.row(i) /= Y.row(i).sum();
  }
  return y;
}

}  // namespace linrec
