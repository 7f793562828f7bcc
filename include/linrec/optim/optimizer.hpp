#pragma once
// What every optimizer shares: parameter groups, the learning rate, zero_grad, and the
// exportable state (step count + named per-parameter buffers) that checkpoints store.
//
//   linrec::AdamW opt({{decay_params}, {norm_and_bias_params, /*weight_decay*/ 0.0}}, {.lr = 3e-4});
//   opt.set_lr(schedule(step));  opt.step();  opt.zero_grad();
//   auto state = opt.export_state();  ...  opt.import_state(state);   // bitwise resume
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "linrec/autodiff/var.hpp"

namespace linrec {

// A set of parameters sharing hyper-parameters: `weight_decay` overrides the optimizer's
// (e.g. 0 for norms, biases, decays); `lr_scale` multiplies the learning rate.
template <class T>
struct basic_param_group {
  basic_param_group(std::vector<basic_parameter<T>> group_params, std::optional<double> group_weight_decay = {},
                    double group_lr_scale = 1.0)
      : params(std::move(group_params)), weight_decay(group_weight_decay), lr_scale(group_lr_scale) {}
  std::vector<basic_parameter<T>> params;
  std::optional<double> weight_decay;
  double lr_scale = 1.0;
};
using ParamGroup = basic_param_group<float>;

// An optimizer's state as plain data: exported tensors are copies, importing copies back.
// Names are "<parameter name or p<index>>.<buffer>", e.g. "blocks.0.att.key.weight.exp_avg".
template <class T>
struct basic_optimizer_state {
  std::int64_t step = 0;
  std::vector<std::pair<std::string, basic_tensor<T>>> tensors;
};
using OptimizerState = basic_optimizer_state<float>;

template <class T>
class basic_optimizer {
 public:
  explicit basic_optimizer(std::vector<basic_param_group<T>> groups, double lr) : groups_(std::move(groups)), lr_(lr) {
    std::size_t index = 0;
    for (auto& g : groups_)
      for (auto& p : g.params) {
        LINREC_CHECK(p.defined(), "optimizer: undefined parameter at index " << index);
        std::string name = p.name();
        if (name.empty()) name.append("p").append(std::to_string(index));
        names_.push_back(std::move(name));
        ++index;
      }
    for (std::size_t i = 0; i < names_.size(); ++i)
      for (std::size_t j = i + 1; j < names_.size(); ++j)
        LINREC_CHECK(names_[i] != names_[j], "optimizer: two parameters are named '" << names_[i] << "'");
  }
  virtual ~basic_optimizer() = default;

  virtual void step() = 0;
  void zero_grad() {
    for (auto& g : groups_)
      for (auto& p : g.params) p.zero_grad();
  }
  double lr() const { return lr_; }
  void set_lr(double lr) { lr_ = lr; }
  std::int64_t steps_taken() const { return step_; }
  const std::vector<basic_param_group<T>>& groups() const { return groups_; }

  basic_optimizer_state<T> export_state() const {
    basic_optimizer_state<T> s;
    s.step = step_;
    std::size_t index = 0;
    for (const auto& buffers : buffers_) {
      for (std::size_t b = 0; b < buffers.size(); ++b)
        if (buffers[b].defined()) s.tensors.emplace_back(key(index, b), buffers[b].clone());
      ++index;
    }
    return s;
  }
  // Replaces the state; every buffer must be present with the parameter's shape.
  void import_state(const basic_optimizer_state<T>& s) {
    ensure_buffers();
    std::size_t index = 0;
    for (auto& buffers : buffers_) {
      for (std::size_t b = 0; b < buffers.size(); ++b) {
        const std::string key = this->key(index, b);
        const basic_tensor<T>* found = nullptr;
        for (const auto& [name, tensor] : s.tensors)
          if (name == key) found = &tensor;
        LINREC_CHECK(found != nullptr || s.step == 0, "optimizer: state has no tensor '" << key << "'");
        if (!found) {
          buffers[b].fill_(T(0));
          continue;
        }
        LINREC_CHECK(found->shape() == buffers[b].shape(), "optimizer: state tensor '"
                                                               << key << "' has shape " << found->shape()
                                                               << ", parameter has " << buffers[b].shape());
        buffers[b].copy_from(*found);
      }
      ++index;
    }
    step_ = s.step;
  }

 protected:
  // Per-parameter buffer names (e.g. {"exp_avg", "exp_avg_sq"}); allocated zero on first use.
  virtual std::vector<std::string> buffer_names() const = 0;
  void ensure_buffers() {
    if (!buffers_.empty()) return;
    for (auto& g : groups_)
      for (auto& p : g.params) {
        std::vector<basic_tensor<T>> bufs;
        for (std::size_t b = 0; b < buffer_names().size(); ++b)
          bufs.push_back(basic_tensor<T>::zeros(p.value().shape(), p.value().where()));
        buffers_.push_back(std::move(bufs));
      }
  }

  std::string key(std::size_t param, std::size_t buffer) const {
    std::string k = names_[param];
    k.append(".").append(buffer_names()[buffer]);
    return k;
  }

  std::vector<basic_param_group<T>> groups_;
  std::vector<std::string> names_;
  std::vector<std::vector<basic_tensor<T>>> buffers_;  // [parameter][buffer]
  double lr_;
  std::int64_t step_ = 0;
};

}  // namespace linrec
