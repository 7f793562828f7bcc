#pragma once
// AdamW (Loshchilov & Hutter): Adam with decoupled weight decay and bias correction.
// At step t = 1, 2, …:
//   m ← β1 m + (1−β1) g,   v ← β2 v + (1−β2) g²
//   m̂ = m / (1−β1^t),      v̂ = v / (1−β2^t)
//   p ← p − lr · (m̂ / (√v̂ + ε) + λ p)
#include <cmath>
#include <type_traits>

#include "linrec/optim/device_ops.hpp"
#include "linrec/optim/optimizer.hpp"
#include "linrec/tensor/eigen.hpp"

namespace linrec {

struct adamw_options {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

template <class T>
class basic_adamw : public basic_optimizer<T> {
 public:
  basic_adamw(std::vector<basic_param_group<T>> groups, adamw_options options)
      : basic_optimizer<T>(std::move(groups), options.lr), options_(options) {
    LINREC_CHECK(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1,
                 "AdamW: betas must lie in [0, 1), got " << options.beta1 << ", " << options.beta2);
  }
  basic_adamw(std::vector<basic_parameter<T>> params, adamw_options options)
      : basic_adamw(std::vector<basic_param_group<T>>{{std::move(params)}}, options) {}

  void step() override {
    this->ensure_buffers();
    const std::int64_t t = ++this->step_;
    const double c1 = 1.0 - std::pow(options_.beta1, static_cast<double>(t));
    const double c2 = 1.0 - std::pow(options_.beta2, static_cast<double>(t));
    // 1 − β computed in double: in float, 1 − 0.999f is off by 1e-5 relative.
    const T b1 = static_cast<T>(options_.beta1), b2 = static_cast<T>(options_.beta2);
    const T one_minus_b1 = static_cast<T>(1.0 - options_.beta1), one_minus_b2 = static_cast<T>(1.0 - options_.beta2);
    const T eps = static_cast<T>(options_.eps);
    std::size_t index = 0;
    for (auto& group : this->groups_) {
      const double lr = this->lr_ * group.lr_scale;
      const T decay = static_cast<T>(lr * group.weight_decay.value_or(options_.weight_decay));
      const T step_size = static_cast<T>(lr / c1);
      const T inv_sqrt_c2 = static_cast<T>(1.0 / std::sqrt(c2));
      for (auto& p : group.params) {
        auto& bufs = this->buffers_[index++];
        if (!p.grad().defined()) continue;
        if (!p.value().where().is_cpu()) {
          step_on_device(p, bufs, {b1, b2, one_minus_b1, one_minus_b2, eps, decay, step_size, inv_sqrt_c2});
          continue;
        }
        auto P = as_array(p.value());
        auto G = as_array(p.grad());
        auto M = as_array(bufs[0]);
        auto V = as_array(bufs[1]);
        M = b1 * M + one_minus_b1 * G;
        V = b2 * V + one_minus_b2 * G.square();
        // p − lr·λ·p − (lr/c1)·m / (√v/√c2 + ε)
        P = P - decay * P - step_size * M / (V.sqrt() * inv_sqrt_c2 + eps);
      }
    }
  }
  const adamw_options& options() const { return options_; }

 protected:
  std::vector<std::string> buffer_names() const override { return {"exp_avg", "exp_avg_sq"}; }

 private:
  // One fused kernel per parameter (optim/cuda.cuh), the arithmetic of adamw_update_element.
  static void step_on_device(basic_parameter<T>& p, std::vector<basic_tensor<T>>& bufs,
                             const adamw_coefficients<T>& c) {
    const device dev = p.value().where();
    LINREC_CHECK(p.grad().where() == dev && bufs[0].where() == dev && bufs[1].where() == dev,
                 "AdamW: parameter '" << p.name() << "' is on " << dev << " but its gradient is on " << p.grad().where()
                                      << " and its state on " << bufs[0].where());
    if constexpr (std::is_same_v<T, float>) {
      detail::require_device_optim("AdamW", dev)
          .adamw(dev.index, p.value().raw_data(), p.grad().raw_data(), bufs[0].raw_data(), bufs[1].raw_data(),
                 p.value().numel(), c);
    } else {
      LINREC_CHECK(false, "AdamW: parameter '" << p.name() << "' is on " << dev
                                               << "; device updates are implemented for float only");
    }
  }

  adamw_options options_;
};
using AdamW = basic_adamw<float>;

}  // namespace linrec
