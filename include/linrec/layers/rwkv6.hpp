#pragma once
// RWKV-6 "Finch" time-mix and channel-mix (docs/models.md §3–4): data-dependent token shift
// through a small LoRA, data-dependent decay d_t = exp(-exp(w_t)), a matrix-valued state
// per head with bonus u, per-head group norm and a SiLU gate. The WKV runs chunked
// (layers/detail/wkv6.hpp): chunk states pass through the scan, S is never stored per step.
//
//   linrec::layers::rwkv6_time_mix<float> att({.dim = 256, .layer = 0, .layers = 4, .head_size = 64}, gen);
//   auto [y, state] = att.forward(tape, x, {});
#include <string>
#include <utility>

#include "linrec/autodiff/autodiff.hpp"
#include "linrec/layers/detail/wkv6.hpp"
#include "linrec/layers/detail/wkv6_device.hpp"
#include "linrec/layers/init.hpp"
#include "linrec/layers/recurrent.hpp"
#include "linrec/layers/rwkv_config.hpp"

namespace linrec::layers {

// The device form of wkv6 below (inputs checked there): nothing is kept for the backward but
// the inputs, which recomputes the states.
template <class T>
std::pair<basic_var<T>, basic_var<T>> wkv6_on_device(basic_tape<T>& tape, bool record, const detail::wkv6_shapes& s,
                                                     const basic_var<T>& r, const basic_var<T>& k,
                                                     const basic_var<T>& v, const basic_var<T>& w,
                                                     const basic_var<T>& u, const basic_var<T>& state0) {
  const device dev = r.value().where();
  const Shape state_shape{s.batch, s.heads, s.head_size, s.head_size};
  auto y = basic_tensor<T>::empty(r.shape(), dev);
  auto state_final = basic_tensor<T>::empty(state_shape, dev);
  const auto ptr = [](const basic_var<T>& x) { return x.defined() ? x.value().raw_data() : nullptr; };
  ::linrec::detail::kernel<detail::wkv6_forward_kernel<T>>()(s, ptr(r), ptr(k), ptr(v), ptr(w), ptr(u), ptr(state0),
                                                             y.raw_data(), state_final.raw_data());
  auto outs = tape.finish_many("wkv6", {&r, &k, &v, &w, &u, &state0}, std::vector<basic_tensor<T>>{y, state_final},
                               record, [s, dev](op_record<T>& rec) {
                                 const auto value = [&](std::size_t i) {
                                   return rec.inputs[i] ? rec.inputs[i]->value.raw_data() : nullptr;
                                 };
                                 const auto grad_out = [&](std::size_t i) {
                                   return rec.grad_out(i).defined() ? rec.grad_out(i).raw_data() : nullptr;
                                 };
                                 // Written in full by the kernels, then handed to the sinks (assigned or added).
                                 const Shape& xs = rec.inputs[0]->value.shape();
                                 auto dr = basic_tensor<T>::empty(xs, dev), dk = basic_tensor<T>::empty(xs, dev),
                                      dv = basic_tensor<T>::empty(xs, dev), dw = basic_tensor<T>::empty(xs, dev),
                                      du = basic_tensor<T>::empty(rec.inputs[4]->value.shape(), dev);
                                 basic_tensor<T> d_state0;
                                 if (rec.needs_grad(5))
                                   d_state0 = basic_tensor<T>::empty(rec.inputs[5]->value.shape(), dev);
                                 ::linrec::detail::kernel<detail::wkv6_backward_kernel<T>>()(
                                     s, value(0), value(1), value(2), value(3), value(4), value(5), grad_out(0),
                                     grad_out(1), dr.raw_data(), dk.raw_data(), dv.raw_data(), dw.raw_data(),
                                     du.raw_data(), d_state0.defined() ? d_state0.raw_data() : nullptr);
                                 const basic_tensor<T>* grads[] = {&dr, &dk, &dv, &dw, &du, &d_state0};
                                 for (std::size_t i = 0; i < 6; ++i)
                                   if (auto g = basic_tape<T>::sink(rec, i)) g.put_tensor(*grads[i]);
                               });
  return {outs[0], outs[1]};
}

// The WKV of RWKV-6 as a differentiable op. r, k, v, w: [B,T,C]; u (time_faaaa): [H,N];
// state0: [B,H,N,N] or undefined (zero). Returns y [B,T,C] and the final state.
template <class T>
std::pair<basic_var<T>, basic_var<T>> wkv6(basic_tape<T>& tape, const basic_var<T>& r, const basic_var<T>& k,
                                           const basic_var<T>& v, const basic_var<T>& w, const basic_var<T>& u,
                                           const basic_var<T>& state0 = {}, cpu exec = {}) {
  const bool record = tape.begin("wkv6", {&r, &k, &v, &w, &u, &state0});
  const Shape& xs = r.shape();
  LINREC_CHECK(xs.rank() == 3 && k.shape() == xs && v.shape() == xs && w.shape() == xs,
               "wkv6: r, k, v, w must be equal [B,T,C], got " << xs << ", " << k.shape() << ", " << v.shape() << ", "
                                                              << w.shape());
  LINREC_CHECK(u.shape().rank() == 2 && u.shape()[0] * u.shape()[1] == xs[2],
               "wkv6: u must be [H,N] with H·N = C = " << xs[2] << ", got " << u.shape());
  const detail::wkv6_shapes s{xs[0], xs[1], u.shape()[0], u.shape()[1]};
  const Shape state_shape{s.batch, s.heads, s.head_size, s.head_size};
  LINREC_CHECK(!state0.defined() || state0.shape() == state_shape,
               "wkv6: state0 must be " << state_shape << ", got " << state0.shape());
  const device dev = r.value().where();
  if (!dev.is_cpu()) return wkv6_on_device(tape, record, s, r, k, v, w, u, state0);
  const index_t chunks = (s.time + detail::wkv6_chunk_length - 1) / detail::wkv6_chunk_length;
  auto chunk_states = std::make_shared<host_buffer<T>>(
      static_cast<std::size_t>(s.batch * s.heads * chunks * s.head_size * s.head_size));
  auto y = basic_tensor<T>::empty(xs);
  auto state_final = basic_tensor<T>::empty(state_shape);
  detail::wkv6_forward(exec, s, r.value().data(), k.value().data(), v.value().data(), w.value().data(),
                       u.value().data(), state0.defined() ? state0.value().data() : nullptr, y.data(),
                       chunk_states->data(), state_final.data());
  auto outs = tape.finish_many(
      "wkv6", {&r, &k, &v, &w, &u, &state0}, std::vector<basic_tensor<T>>{y, state_final}, record,
      [s, chunk_states, exec](op_record<T>& rec) {
        const auto dy =
            rec.grad_out(0).defined() ? rec.grad_out(0) : basic_tensor<T>::zeros(rec.outputs[0]->value.shape());
        const Shape& xs = rec.inputs[0]->value.shape();
        auto dr = basic_tensor<T>::empty(xs), dk = basic_tensor<T>::empty(xs), dv = basic_tensor<T>::empty(xs),
             dw = basic_tensor<T>::empty(xs), du = basic_tensor<T>::empty(rec.inputs[4]->value.shape());
        basic_tensor<T> d_state0;
        if (rec.needs_grad(5)) d_state0 = basic_tensor<T>::empty(rec.inputs[5]->value.shape());
        detail::wkv6_backward(
            exec, s, rec.inputs[0]->value.data(), rec.inputs[1]->value.data(), rec.inputs[2]->value.data(),
            rec.inputs[3]->value.data(), rec.inputs[4]->value.data(), chunk_states->data(), dy.data(),
            rec.grad_out(1).defined() ? rec.grad_out(1).data() : nullptr, dr.data(), dk.data(), dv.data(), dw.data(),
            du.data(), detail::wkv6_chunk_length, d_state0.defined() ? d_state0.data() : nullptr);
        const basic_tensor<T>* grads[] = {&dr, &dk, &dv, &dw, &du, &d_state0};
        for (std::size_t i = 0; i < 6; ++i)
          if (auto g = basic_tape<T>::sink(rec, i)) g.put(as_array(g.tensor), as_array(*grads[i]));
      });
  return {outs[0], outs[1]};
}

template <class T>
class rwkv6_time_mix {
 public:
  using value_type = T;
  static constexpr index_t mix_rank = 32;    // LoRA rank of the five token-shift mixes
  static constexpr index_t decay_rank = 64;  // LoRA rank of the data-dependent decay
  static constexpr double head_size_divisor = 8;

  static constexpr const char* state_tag = "tm6";  // names the carried state in checkpoints
  struct state {
    basic_var<T> prev_x;  // [B,C]
    basic_var<T> wkv;     // [B,H,N,N]
    // The fields by name: detach, checkpoints and resets go through this one list.
    template <class F>
    void visit(F&& f) const {
      f("prev_x", prev_x);
      f("wkv", wkv);
    }
    template <class F>
    void visit(F&& f) {
      f("prev_x", prev_x);
      f("wkv", wkv);
    }
  };

  basic_parameter<T> time_maa_x, time_maa_w, time_maa_k, time_maa_v, time_maa_r, time_maa_g;
  basic_parameter<T> time_maa_w1, time_maa_w2;                  // [C, 5·32], [5, 32, C]
  basic_parameter<T> time_decay, time_decay_w1, time_decay_w2;  // [C], [C, 64], [64, C]
  basic_parameter<T> time_faaaa;                                // [H, N]
  basic_parameter<T> receptance, key, value, gate, output;      // [C, C]
  basic_parameter<T> ln_x_weight, ln_x_bias;                    // [C]

  rwkv6_time_mix(const rwkv_config& cfg, rng& gen, const std::string& prefix = "att.")
      : dim_(cfg.dim), heads_(cfg.head_size > 0 ? cfg.dim / cfg.head_size : 0) {
    LINREC_CHECK(cfg.head_size > 0 && cfg.dim % cfg.head_size == 0,
                 "rwkv6_time_mix: dim " << cfg.dim << " is not a multiple of head_size " << cfg.head_size);
    const index_t c_dim = cfg.dim;
    const double ratio_0_to_1 = cfg.layers > 1 ? double(cfg.layer) / double(cfg.layers - 1) : 0.0;
    const double ratio_1_to_almost0 = 1.0 - double(cfg.layer) / double(cfg.layers);
    const auto ddd = [c_dim](index_t c) { return double(c) / double(c_dim); };
    const auto ramp = [&](double power) {
      return per_channel<T>(c_dim, [&, power](index_t c) { return 1.0 - std::pow(ddd(c), power); });
    };
    time_maa_x = named<T>(prefix, "time_maa_x", ramp(ratio_1_to_almost0));
    time_maa_w = named<T>(prefix, "time_maa_w", ramp(ratio_1_to_almost0));
    time_maa_k = named<T>(prefix, "time_maa_k", ramp(ratio_1_to_almost0));
    time_maa_v = named<T>(prefix, "time_maa_v", per_channel<T>(c_dim, [&](index_t c) {
                            return 1.0 - (std::pow(ddd(c), ratio_1_to_almost0) + 0.3 * ratio_0_to_1);
                          }));
    time_maa_r = named<T>(prefix, "time_maa_r", ramp(0.5 * ratio_1_to_almost0));
    time_maa_g = named<T>(prefix, "time_maa_g", ramp(0.5 * ratio_1_to_almost0));
    time_maa_w1 = named<T>(prefix, "time_maa_w1", basic_tensor<T>::zeros({c_dim, 5 * mix_rank}));
    time_maa_w2 = named<T>(prefix, "time_maa_w2", basic_tensor<T>::rand({5, mix_rank, c_dim}, gen, -0.01, 0.01));
    time_decay = named<T>(prefix, "time_decay", per_channel<T>(c_dim, [&](index_t c) {
                            return -6.0 + 5.0 * std::pow(double(c) / double(std::max<index_t>(1, c_dim - 1)),
                                                         0.7 + 1.3 * ratio_0_to_1);
                          }));
    time_decay_w1 = named<T>(prefix, "time_decay_w1", basic_tensor<T>::zeros({c_dim, decay_rank}));
    time_decay_w2 = named<T>(prefix, "time_decay_w2", basic_tensor<T>::rand({decay_rank, c_dim}, gen, -0.01, 0.01));
    auto faaaa = per_channel<T>(c_dim, [&](index_t c) {
      return ratio_0_to_1 * (1.0 - double(c) / double(std::max<index_t>(1, c_dim - 1))) + 0.1 * double((c + 1) % 3 - 1);
    });
    time_faaaa = named<T>(prefix, "time_faaaa", faaaa.reshape(Shape{heads_, cfg.head_size}));
    receptance = named<T>(prefix, "receptance.weight", rwkv_projection<T>(c_dim, c_dim, 1.0, gen));
    key = named<T>(prefix, "key.weight", rwkv_projection<T>(c_dim, c_dim, 0.1, gen));
    value = named<T>(prefix, "value.weight", rwkv_projection<T>(c_dim, c_dim, 1.0, gen));
    gate = named<T>(prefix, "gate.weight", rwkv_projection<T>(c_dim, c_dim, 0.1, gen));
    output = named<T>(prefix, "output.weight", rwkv_projection<T>(c_dim, c_dim, 0.0, gen));
    const double layer_scale = std::pow(double(cfg.layer + 1) / double(cfg.layers), 0.7);
    ln_x_weight = named<T>(prefix, "ln_x.weight", basic_tensor<T>::full({c_dim}, T(layer_scale)));
    ln_x_bias = named<T>(prefix, "ln_x.bias", basic_tensor<T>::zeros({c_dim}));
  }

  parameter_list<T> parameters() const {
    return {time_maa_x,  time_maa_w, time_maa_k,    time_maa_v,    time_maa_r, time_maa_g, time_maa_w1,
            time_maa_w2, time_decay, time_decay_w1, time_decay_w2, time_faaaa, receptance, key,
            value,       gate,       output,        ln_x_weight,   ln_x_bias};
  }

  std::pair<basic_var<T>, state> forward(basic_tape<T>& tape, const basic_var<T>& x, const state& in,
                                         cpu exec = {}) const {
    LINREC_CHECK(x.shape().rank() == 3 && x.shape()[2] == dim_,
                 "rwkv6_time_mix: x must be [B,T," << dim_ << "], got " << x.shape());
    const auto xx = sub(tape, token_shift(tape, x, in.prev_x), x);
    const auto xxx = add(tape, x, mul(tape, xx, time_maa_x));
    const auto lora = tanh(tape, matmul(tape, xxx, time_maa_w1, exec));  // [B,T,5·32]
    // x_i = x + xx ⊙ (maa_i + tanh(xxx W1)_i W2_i) for i in (w, k, v, r, g)
    const basic_parameter<T>* maa[5] = {&time_maa_w, &time_maa_k, &time_maa_v, &time_maa_r, &time_maa_g};
    basic_var<T> mixed[5];
    for (index_t i = 0; i < 5; ++i) {
      const auto w2 = reshape(tape, narrow(tape, time_maa_w2, 0, i, 1), Shape{mix_rank, dim_});
      const auto m = matmul(tape, narrow(tape, lora, 2, i * mix_rank, mix_rank), w2, exec);
      mixed[i] = add(tape, x, mul(tape, xx, add(tape, *maa[i], m)));
    }
    const auto r = matmul(tape, mixed[3], receptance, exec);
    const auto k = matmul(tape, mixed[1], key, exec);
    const auto v = matmul(tape, mixed[2], value, exec);
    const auto g = silu(tape, matmul(tape, mixed[4], gate, exec));
    const auto w =
        add(tape, time_decay, matmul(tape, tanh(tape, matmul(tape, mixed[0], time_decay_w1)), time_decay_w2, exec));
    auto [y, wkv_state] = wkv6(tape, r, k, v, w, time_faaaa, in.wkv, exec);
    const double eps = 1e-5 * head_size_divisor * head_size_divisor;
    const auto normed = group_norm(tape, y, heads_, ln_x_weight, ln_x_bias, eps);
    return {matmul(tape, mul(tape, normed, g), output, exec), state{last_step(tape, x), wkv_state}};
  }

  std::pair<basic_tensor<T>, state> step(const basic_tensor<T>& x_t, const state& s) const {
    return step_of(*this, x_t, s);
  }

 private:
  index_t dim_, heads_;
};

// out = σ(xr W_r) ⊙ (relu(xk W_k))² W_v with xk, xr = x + (shift(x) − x) ⊙ maa (F ≈ 3.5·C).
template <class T>
class rwkv6_channel_mix {
 public:
  using value_type = T;
  static constexpr const char* state_tag = "cm6";
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

  basic_parameter<T> time_maa_k, time_maa_r, key, value, receptance;

  rwkv6_channel_mix(const rwkv_config& cfg, rng& gen, const std::string& prefix = "ffn.") : dim_(cfg.dim) {
    const index_t c_dim = cfg.dim;
    const index_t hidden = cfg.ffn_dim > 0 ? cfg.ffn_dim : std::max<index_t>(32, (c_dim * 7 / 2) / 32 * 32);
    const double ratio_1_to_almost0 = 1.0 - double(cfg.layer) / double(cfg.layers);
    const auto ramp = [&](index_t c) { return 1.0 - std::pow(double(c) / double(c_dim), ratio_1_to_almost0); };
    time_maa_k = named<T>(prefix, "time_maa_k", per_channel<T>(c_dim, ramp));
    time_maa_r = named<T>(prefix, "time_maa_r", per_channel<T>(c_dim, ramp));
    key = named<T>(prefix, "key.weight", rwkv_projection<T>(c_dim, hidden, 1.0, gen));
    value = named<T>(prefix, "value.weight", rwkv_projection<T>(hidden, c_dim, 0.0, gen));
    receptance = named<T>(prefix, "receptance.weight", rwkv_projection<T>(c_dim, c_dim, 0.0, gen));
  }

  parameter_list<T> parameters() const { return {time_maa_k, time_maa_r, key, value, receptance}; }

  std::pair<basic_var<T>, state> forward(basic_tape<T>& tape, const basic_var<T>& x, const state& in,
                                         cpu exec = {}) const {
    LINREC_CHECK(x.shape().rank() == 3 && x.shape()[2] == dim_,
                 "rwkv6_channel_mix: x must be [B,T," << dim_ << "], got " << x.shape());
    const auto xx = sub(tape, token_shift(tape, x, in.prev_x), x);
    const auto xk = add(tape, x, mul(tape, xx, time_maa_k));
    const auto xr = add(tape, x, mul(tape, xx, time_maa_r));
    const auto k = square(tape, relu(tape, matmul(tape, xk, key, exec)));
    const auto r = sigmoid(tape, matmul(tape, xr, receptance, exec));
    return {mul(tape, r, matmul(tape, k, value, exec)), state{last_step(tape, x)}};
  }

  std::pair<basic_tensor<T>, state> step(const basic_tensor<T>& x_t, const state& s) const {
    return step_of(*this, x_t, s);
  }

 private:
  index_t dim_;
};

}  // namespace linrec::layers
