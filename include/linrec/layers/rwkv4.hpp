#pragma once
// RWKV-4 time-mix and channel-mix (docs/models.md §2–3), parallel over time for training and
// one token at a time for generation, with the same numbers.
//
//   linrec::layers::rwkv_config cfg{.dim = 256, .layer = 0, .layers = 4};
//   linrec::layers::rwkv4_time_mix<float> att(cfg, gen, "blocks.0.att.");
//   auto [y, state] = att.forward(tape, x, {});        // x [B,T,C]; {} = start of documents
//   auto [y2, state2] = att.forward(tape, x2, state);  // the next segment continues
//
// WKV runs on the log-space scan (layers/detail/wkv4.hpp): no e^k is formed on its own, so
// large keys cannot overflow.
#include <string>
#include <utility>

#include "linrec/autodiff/autodiff.hpp"
#include "linrec/layers/detail/wkv4.hpp"
#include "linrec/layers/detail/wkv4_device.hpp"
#include "linrec/layers/init.hpp"
#include "linrec/layers/recurrent.hpp"
#include "linrec/layers/rwkv_config.hpp"

namespace linrec::layers {

// The WKV of RWKV-4 as a differentiable op. time_decay, time_first: [C]; k, v: [B,T,C];
// num0, den0: [B,C,2] log-space states (scale, exponent) or undefined (empty).
template <class T>
struct wkv4_vars {
  basic_var<T> y, num_final, den_final;
};

// The device form of wkv4 below (inputs checked there): one thread per lane (b, c), the scans
// N and D kept for the backward as on the CPU.
template <class T>
wkv4_vars<T> wkv4_on_device(basic_tape<T>& tape, bool record, const detail::wkv4_shapes<T>& s,
                            const basic_var<T>& time_decay, const basic_var<T>& time_first, const basic_var<T>& k,
                            const basic_var<T>& v, const basic_var<T>& num0, const basic_var<T>& den0) {
  const device dev = k.value().where();
  const Shape state_shape{s.batch, s.channels, 2};
  const auto ptr = [](const basic_var<T>& x) { return x.defined() ? x.value().raw_data() : nullptr; };
  auto y = basic_tensor<T>::empty(k.shape(), dev);
  auto num = basic_tensor<T>::empty({s.batch, s.time, s.channels, 2}, dev),
       den = basic_tensor<T>::empty(num.shape(), dev);
  auto num_final = basic_tensor<T>::empty(state_shape, dev), den_final = basic_tensor<T>::empty(state_shape, dev);
  ::linrec::detail::kernel<detail::wkv4_forward_kernel<T>>()(
      s, ptr(time_decay), ptr(time_first), ptr(k), ptr(v), ptr(num0), ptr(den0), y.raw_data(), num.raw_data(),
      den.raw_data(), num_final.raw_data(), den_final.raw_data());
  std::vector<basic_tensor<T>> outputs{y, num_final, den_final};
  auto outs = tape.finish_many(
      "wkv4", {&time_decay, &time_first, &k, &v, &num0, &den0}, std::move(outputs), record,
      [s, num, den, dev, state_shape](op_record<T>& r) {
        const auto value = [&](std::size_t i) { return r.inputs[i] ? r.inputs[i]->value.raw_data() : nullptr; };
        const auto grad_out = [&](std::size_t i) {
          return r.grad_out(i).defined() ? r.grad_out(i).raw_data() : nullptr;
        };
        const Shape& ks = r.inputs[2]->value.shape();
        auto dk = basic_tensor<T>::empty(ks, dev), dv = basic_tensor<T>::empty(ks, dev);
        auto dtd = basic_tensor<T>::empty({s.channels}, dev), du = basic_tensor<T>::empty({s.channels}, dev);
        const bool with_state = r.inputs[4] != nullptr;
        basic_tensor<T> d_num0, d_den0;
        if (with_state) {
          d_num0 = basic_tensor<T>::empty(state_shape, dev);
          d_den0 = basic_tensor<T>::empty(state_shape, dev);
        }
        ::linrec::detail::kernel<detail::wkv4_backward_kernel<T>>()(
            s, value(0), value(1), value(2), value(3), value(4), value(5), num.raw_data(), den.raw_data(), grad_out(0),
            grad_out(1), grad_out(2), dk.raw_data(), dv.raw_data(), dtd.raw_data(), du.raw_data(),
            with_state ? d_num0.raw_data() : nullptr, with_state ? d_den0.raw_data() : nullptr);
        const basic_tensor<T>* grads[] = {&dtd, &du, &dk, &dv, &d_num0, &d_den0};
        for (std::size_t i = 0; i < 6; ++i)
          if (auto g = basic_tape<T>::sink(r, i)) g.put_tensor(*grads[i]);
      });
  return {outs[0], outs[1], outs[2]};
}

template <class T>
wkv4_vars<T> wkv4(basic_tape<T>& tape, const basic_var<T>& time_decay, const basic_var<T>& time_first,
                  const basic_var<T>& k, const basic_var<T>& v, const basic_var<T>& num0 = {},
                  const basic_var<T>& den0 = {}, cpu exec = {}) {
  const bool record = tape.begin("wkv4", {&time_decay, &time_first, &k, &v, &num0, &den0});
  const Shape& ks = k.shape();
  LINREC_CHECK(ks.rank() == 3 && v.shape() == ks,
               "wkv4: k and v must be equal [B,T,C], got " << ks << " and " << v.shape());
  const detail::wkv4_shapes<T> s{ks[0], ks[1], ks[2]};
  LINREC_CHECK(time_decay.shape() == Shape{s.channels} && time_first.shape() == Shape{s.channels},
               "wkv4: time_decay and time_first must be [" << s.channels << "], got " << time_decay.shape() << " and "
                                                           << time_first.shape());
  const Shape state_shape{s.batch, s.channels, 2};
  for (const auto* st : {&num0, &den0})
    LINREC_CHECK(!st->defined() || st->shape() == state_shape,
                 "wkv4: states must be " << state_shape << " (scale, exponent), got " << st->shape());
  LINREC_CHECK(num0.defined() == den0.defined(), "wkv4: give both num0 and den0, or neither");
  if (!k.value().where().is_cpu()) return wkv4_on_device(tape, record, s, time_decay, time_first, k, v, num0, den0);
  auto w = basic_tensor<T>::empty({s.channels});
  as_array(w) = as_array(time_decay.value()).exp();
  auto as_log = [](const basic_var<T>& x) {
    return x.defined() ? reinterpret_cast<const log_value<T>*>(x.value().data()) : nullptr;
  };
  auto y = basic_tensor<T>::empty(ks);
  auto num = basic_tensor<T>::empty({s.batch, s.time, s.channels, 2}), den = basic_tensor<T>::empty(num.shape());
  auto num_final = basic_tensor<T>::empty(state_shape), den_final = basic_tensor<T>::empty(state_shape);
  auto log_ptr = [](const basic_tensor<T>& t) { return reinterpret_cast<log_value<T>*>(t.data()); };
  detail::wkv4_forward(exec, s, w.data(), time_first.value().data(), k.value().data(), v.value().data(), as_log(num0),
                       as_log(den0), y.data(), log_ptr(num), log_ptr(den), log_ptr(num_final), log_ptr(den_final));
  std::vector<basic_tensor<T>> outputs{y, num_final, den_final};
  auto outs = tape.finish_many(
      "wkv4", {&time_decay, &time_first, &k, &v, &num0, &den0}, std::move(outputs), record,
      [s, w, num, den, exec, state_shape, log_ptr](op_record<T>& r) {
        const auto n_state = s.batch * s.channels;
        const auto dy = r.grad_out(0).defined() ? r.grad_out(0) : basic_tensor<T>::zeros(r.outputs[0]->value.shape());
        // Final-state gradients arrive per coordinate (scale, exponent); the kernel wants them
        // as log-form gradients of the real value.
        basic_tensor<T> d_final[2];
        for (int i = 0; i < 2; ++i)
          if (r.grad_out(1 + i).defined()) {
            d_final[i] = basic_tensor<T>::empty(state_shape);
            linrec::detail::log_grad_from_coordinates(r.grad_out(1 + i).data(), r.outputs[1 + i]->value.data(),
                                                      d_final[i].data(), n_state);
          }
        const bool with_state = r.inputs[4] != nullptr;
        auto d_state0 = basic_tensor<T>::empty({2, s.batch, s.channels, 2});
        detail::wkv4_state_grads<T> sg{
            d_final[0].defined() ? reinterpret_cast<const log_value<T>*>(d_final[0].data()) : nullptr,
            d_final[1].defined() ? reinterpret_cast<const log_value<T>*>(d_final[1].data()) : nullptr,
            with_state ? log_ptr(d_state0) : nullptr, with_state ? log_ptr(d_state0) + n_state : nullptr};
        auto dw = basic_tensor<T>::empty({s.channels}), du = basic_tensor<T>::empty({s.channels});
        auto dk = basic_tensor<T>::empty(r.inputs[2]->value.shape()), dv = basic_tensor<T>::empty(dk.shape());
        const auto state_ptr = [&](int i) {
          return with_state ? reinterpret_cast<const log_value<T>*>(r.inputs[4 + i]->value.data()) : nullptr;
        };
        detail::wkv4_backward(exec, s, w.data(), r.inputs[1]->value.data(), r.inputs[2]->value.data(),
                              r.inputs[3]->value.data(), state_ptr(0), state_ptr(1), log_ptr(num), log_ptr(den),
                              dy.data(), dw.data(), du.data(), dk.data(), dv.data(), sg);
        if (auto g = basic_tape<T>::sink(r, 0)) g.put(as_array(g.tensor), as_array(dw) * as_array(w));  // w = e^td
        if (auto g = basic_tape<T>::sink(r, 1)) g.put(as_array(g.tensor), as_array(du));
        if (auto g = basic_tape<T>::sink(r, 2)) g.put(as_array(g.tensor), as_array(dk));
        if (auto g = basic_tape<T>::sink(r, 3)) g.put(as_array(g.tensor), as_array(dv));
        for (int i = 0; i < 2; ++i)
          if (auto g = basic_tape<T>::sink(r, 4 + i))
            linrec::detail::coordinates_from_log_grad(d_state0.data() + i * n_state * 2, r.inputs[4 + i]->value.data(),
                                                      g.tensor.data(), !g.fresh, n_state);
      });
  return {outs[0], outs[1], outs[2]};
}

template <class T>
class rwkv4_time_mix {
 public:
  using value_type = T;
  static constexpr const char* state_tag = "tm4";  // names the carried state in checkpoints
  struct state {
    basic_var<T> prev_x;    // [B,C] last input token (undefined: zeros)
    basic_var<T> num, den;  // [B,C,2] WKV numerator and denominator (undefined: empty)
    // The fields by name: detach, checkpoints and resets go through this one list.
    template <class F>
    void visit(F&& f) const {
      f("prev_x", prev_x);
      f("num", num);
      f("den", den);
    }
    template <class F>
    void visit(F&& f) {
      f("prev_x", prev_x);
      f("num", num);
      f("den", den);
    }
  };

  basic_parameter<T> time_decay, time_first, time_mix_k, time_mix_v, time_mix_r;
  basic_parameter<T> key, value, receptance, output;  // [C,C], y = x W

  rwkv4_time_mix(const rwkv_config& cfg, rng& gen, const std::string& prefix = "att.") : dim_(cfg.dim) {
    const index_t c_dim = cfg.dim;
    const double ratio_0_to_1 = cfg.layers > 1 ? double(cfg.layer) / double(cfg.layers - 1) : 0.0;
    const double ratio_1_to_almost0 = 1.0 - double(cfg.layer) / double(cfg.layers);
    const auto ddd = [c_dim](index_t c) { return double(c) / double(c_dim); };
    time_decay = named<T>(prefix, "time_decay", per_channel<T>(c_dim, [&](index_t c) {
                            return -5.0 + 8.0 * std::pow(double(c) / double(std::max<index_t>(1, c_dim - 1)),
                                                         0.7 + 1.3 * ratio_0_to_1);
                          }));
    time_first =
        named<T>(prefix, "time_first",
                 per_channel<T>(c_dim, [](index_t c) { return std::log(0.3) + 0.5 * double((c + 1) % 3 - 1); }));
    time_mix_k = named<T>(prefix, "time_mix_k",
                          per_channel<T>(c_dim, [&](index_t c) { return std::pow(ddd(c), ratio_1_to_almost0); }));
    time_mix_v = named<T>(prefix, "time_mix_v", per_channel<T>(c_dim, [&](index_t c) {
                            return std::pow(ddd(c), ratio_1_to_almost0) + 0.3 * ratio_0_to_1;
                          }));
    time_mix_r = named<T>(prefix, "time_mix_r",
                          per_channel<T>(c_dim, [&](index_t c) { return std::pow(ddd(c), 0.5 * ratio_1_to_almost0); }));
    key = named<T>(prefix, "key.weight", rwkv_projection<T>(c_dim, c_dim, 1.0, gen));
    value = named<T>(prefix, "value.weight", rwkv_projection<T>(c_dim, c_dim, 1.0, gen));
    receptance = named<T>(prefix, "receptance.weight", rwkv_projection<T>(c_dim, c_dim, 1.0, gen));
    output = named<T>(prefix, "output.weight", rwkv_projection<T>(c_dim, c_dim, 0.0, gen));
  }

  parameter_list<T> parameters() const {
    return {time_decay, time_first, time_mix_k, time_mix_v, time_mix_r, key, value, receptance, output};
  }

  // x [B,T,C] → y [B,T,C]; `in` carries the previous segment's state.
  std::pair<basic_var<T>, state> forward(basic_tape<T>& tape, const basic_var<T>& x, const state& in,
                                         cpu exec = {}) const {
    LINREC_CHECK(x.shape().rank() == 3 && x.shape()[2] == dim_,
                 "rwkv4_time_mix: x must be [B,T," << dim_ << "], got " << x.shape());
    const auto shifted = token_shift(tape, x, in.prev_x);
    const auto k = matmul(tape, lerp(tape, shifted, x, time_mix_k), key, exec);
    const auto v = matmul(tape, lerp(tape, shifted, x, time_mix_v), value, exec);
    const auto r = matmul(tape, lerp(tape, shifted, x, time_mix_r), receptance, exec);
    auto wkv = wkv4(tape, time_decay, time_first, k, v, in.num, in.den, exec);
    auto y = matmul(tape, mul(tape, sigmoid(tape, r), wkv.y), output, exec);
    return {y, state{last_step(tape, x), wkv.num_final, wkv.den_final}};
  }

  // One token x_t [B,C] with nothing recorded (generation).
  std::pair<basic_tensor<T>, state> step(const basic_tensor<T>& x_t, const state& s) const {
    return step_of(*this, x_t, s);
  }

 private:
  index_t dim_;
};

// out = σ(xr W_r) ⊙ (relu(xk W_k))² W_v, with token-shift mixes (RWKV-4: F = 4C).
template <class T>
class rwkv4_channel_mix {
 public:
  using value_type = T;
  static constexpr const char* state_tag = "cm4";
  struct state {
    basic_var<T> prev_x;  // [B,C]
    // The fields by name: detach, checkpoints and resets go through this one list.
    template <class F>
    void visit(F&& f) const {
      f("prev_x", prev_x);
    }
    template <class F>
    void visit(F&& f) {
      f("prev_x", prev_x);
    }
  };

  basic_parameter<T> time_mix_k, time_mix_r, key, value, receptance;

  rwkv4_channel_mix(const rwkv_config& cfg, rng& gen, const std::string& prefix = "ffn.") : dim_(cfg.dim) {
    const index_t c_dim = cfg.dim, hidden = cfg.ffn_dim > 0 ? cfg.ffn_dim : 4 * cfg.dim;
    const double ratio_1_to_almost0 = 1.0 - double(cfg.layer) / double(cfg.layers);
    const auto ramp = [&](index_t c) { return std::pow(double(c) / double(c_dim), ratio_1_to_almost0); };
    time_mix_k = named<T>(prefix, "time_mix_k", per_channel<T>(c_dim, ramp));
    time_mix_r = named<T>(prefix, "time_mix_r", per_channel<T>(c_dim, ramp));
    key = named<T>(prefix, "key.weight", rwkv_projection<T>(c_dim, hidden, 1.0, gen));
    value = named<T>(prefix, "value.weight", rwkv_projection<T>(hidden, c_dim, 0.0, gen));
    receptance = named<T>(prefix, "receptance.weight", rwkv_projection<T>(c_dim, c_dim, 0.0, gen));
  }

  parameter_list<T> parameters() const { return {time_mix_k, time_mix_r, key, value, receptance}; }

  std::pair<basic_var<T>, state> forward(basic_tape<T>& tape, const basic_var<T>& x, const state& in,
                                         cpu exec = {}) const {
    LINREC_CHECK(x.shape().rank() == 3 && x.shape()[2] == dim_,
                 "rwkv4_channel_mix: x must be [B,T," << dim_ << "], got " << x.shape());
    const auto shifted = token_shift(tape, x, in.prev_x);
    const auto k = square(tape, relu(tape, matmul(tape, lerp(tape, shifted, x, time_mix_k), key, exec)));
    const auto r = sigmoid(tape, matmul(tape, lerp(tape, shifted, x, time_mix_r), receptance, exec));
    return {mul(tape, r, matmul(tape, k, value, exec)), state{last_step(tape, x)}};
  }

  std::pair<basic_tensor<T>, state> step(const basic_tensor<T>& x_t, const state& s) const {
    return step_of(*this, x_t, s);
  }

 private:
  index_t dim_;
};

}  // namespace linrec::layers
