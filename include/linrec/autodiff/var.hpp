#pragma once
// Var: a value in a computation, possibly recorded on a tape. Parameter: a Var that lives
// outside any tape, survives across steps, and keeps a `.grad()` that accumulates over
// backward passes until `zero_grad()`.
//
//   linrec::Parameter w(linrec::Tensor::randn({512, 512}, gen, 0, 0.02), "fc1.weight");
//   auto x = linrec::constant(batch);      // an input that needs no gradient
//   ... ops on a tape ...; tape.backward(loss);
//   w.grad();                              // ∂loss/∂w, accumulated
#include <memory>
#include <string>

#include "linrec/tensor/tensor.hpp"

namespace linrec {

namespace detail {
// The shared state behind a Var. Ops keep these alive (through the tape) until backward.
template <class T>
struct var_node {
  basic_tensor<T> value;
  basic_tensor<T> grad;          // undefined until a gradient arrives (= zero)
  std::uint64_t tape_id = 0;     // 0: not on a tape (a parameter or a constant)
  std::uint64_t generation = 0;  // the tape's generation when recorded
  bool requires_grad = false;
  std::string name;  // parameters only
};
}  // namespace detail

template <class T>
class basic_var {
 public:
  using node_ptr = std::shared_ptr<detail::var_node<T>>;

  // An absent Var (e.g. "no initial state"); `defined()` is false.
  basic_var() = default;
  explicit basic_var(node_ptr node) : node_(std::move(node)) {}

  bool defined() const { return node_ != nullptr; }
  const basic_tensor<T>& value() const { return checked_node().value; }
  // ∂loss/∂this after backward; undefined (no gradient reached it) until then.
  const basic_tensor<T>& grad() const { return checked_node().grad; }
  const Shape& shape() const { return value().shape(); }
  bool requires_grad() const { return node_ && node_->requires_grad; }
  const std::string& name() const { return checked_node().name; }
  // The value of a one-element Var (e.g. a loss).
  T item() const { return value().item(); }

  const node_ptr& node() const { return node_; }

 protected:
  detail::var_node<T>& checked_node() const {
    LINREC_CHECK(node_ != nullptr, "Var: use of an undefined Var");
    return *node_;
  }
  node_ptr node_;
};

// A leaf that needs no gradient (inputs, targets, fixed tensors); shares the tensor.
template <class T>
basic_var<T> constant(const basic_tensor<T>& value) {
  auto node = std::make_shared<detail::var_node<T>>();
  node->value = value;
  return basic_var<T>(std::move(node));
}

template <class T>
class basic_parameter : public basic_var<T> {
 public:
  basic_parameter() = default;
  explicit basic_parameter(const basic_tensor<T>& value, std::string name = {}) {
    LINREC_CHECK(value.defined(), "Parameter '" << name << "': undefined tensor");
    auto node = std::make_shared<detail::var_node<T>>();
    node->value = value;
    node->requires_grad = true;
    node->name = std::move(name);
    this->node_ = std::move(node);
  }
  // The stored value; optimizers update it in place (its storage is shared with every
  // handle of this parameter).
  basic_tensor<T>& value() const { return this->checked_node().value; }
  basic_tensor<T>& grad() const { return this->checked_node().grad; }
  // Forget the accumulated gradient (the next backward starts from zero).
  void zero_grad() const {
    if (this->checked_node().grad.defined()) this->node_->grad.fill_(T(0));
  }
  // Exclude from gradient computation (frozen weights), or re-enable.
  void set_requires_grad(bool on) const { this->checked_node().requires_grad = on; }
};

// Moves every parameter's value and gradient to `dev` in place: every handle of a parameter
// (a layer's, an optimizer's) sees the moved tensor. A no-op for those already there.
template <class Params>
void move_parameters(const Params& params, device dev) {
  for (const auto& p : params) {
    p.value() = p.value().to(dev);
    if (p.grad().defined()) p.grad() = p.grad().to(dev);
  }
}

using Var = basic_var<float>;
using Parameter = basic_parameter<float>;

}  // namespace linrec
