#pragma once
// SGD with momentum and Nesterov momentum (PyTorch's formulation, no dampening):
//   g ← ∇ + λ p                    (L2 weight decay, coupled, when λ > 0)
//   buf ← μ buf + g                (buf = g at the first step)
//   d ← nesterov ? g + μ buf : buf   (d = g when μ = 0)
//   p ← p − lr · d
#include "linrec/optim/optimizer.hpp"
#include "linrec/tensor/eigen.hpp"

namespace linrec {

struct sgd_options {
  double lr = 1e-2;
  double momentum = 0.0;
  bool nesterov = false;
  double weight_decay = 0.0;
};

template <class T>
class basic_sgd : public basic_optimizer<T> {
 public:
  basic_sgd(std::vector<basic_param_group<T>> groups, sgd_options options)
      : basic_optimizer<T>(std::move(groups), options.lr), options_(options) {
    LINREC_CHECK(!options.nesterov || options.momentum > 0, "SGD: Nesterov needs momentum > 0");
  }
  basic_sgd(std::vector<basic_parameter<T>> params, sgd_options options)
      : basic_sgd(std::vector<basic_param_group<T>>{{std::move(params)}}, options) {}

  void step() override {
    this->ensure_buffers();
    const bool first = this->step_ == 0;
    std::size_t index = 0;
    for (auto& group : this->groups_) {
      const T lr = static_cast<T>(this->lr_ * group.lr_scale);
      const T wd = static_cast<T>(group.weight_decay.value_or(options_.weight_decay));
      const T mu = static_cast<T>(options_.momentum);
      for (auto& p : group.params) {
        auto& buf = this->buffers_[index++][0];
        if (!p.grad().defined()) continue;
        auto P = as_array(p.value());
        auto G = as_array(p.grad());
        auto B = as_array(buf);
        const auto g = (G + wd * P).eval();
        if (mu == T(0)) {
          P -= lr * g;
          continue;
        }
        if (first)
          B = g;
        else
          B = mu * B + g;
        if (options_.nesterov)
          P -= lr * (g + mu * B);
        else
          P -= lr * B;
      }
    }
    ++this->step_;
  }
  const sgd_options& options() const { return options_; }

 protected:
  std::vector<std::string> buffer_names() const override { return {"momentum_buffer"}; }

 private:
  sgd_options options_;
};
using SGD = basic_sgd<float>;

}  // namespace linrec
