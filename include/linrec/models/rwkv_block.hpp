#pragma once
// One pre-norm RWKV block (docs/models.md §4 "Block"): x += TimeMix(LN1 x); x += ChannelMix(LN2 x).
// RWKV-4 and RWKV-6 are two instantiations; the block body, its parameters and its state are
// written once, here.
//
//   using block = linrec::models::rwkv_block<layers::rwkv6_time_mix<float>, layers::rwkv6_channel_mix<float>>;
//   block b({.dim = 128, .layer = 0, .layers = 2, .head_size = 32}, gen, "blocks.0.");
//   auto [y, state] = b.forward(tape, x, {});   // x [B,T,C]
#include <string>
#include <utility>

#include "linrec/autodiff/autodiff.hpp"
#include "linrec/layers/rwkv_config.hpp"

namespace linrec::models {

template <class TimeMix, class ChannelMix>
class rwkv_block {
 public:
  using value_type = typename TimeMix::value_type;
  using time_mix_type = TimeMix;
  using channel_mix_type = ChannelMix;

  // The recurrent state after a segment: the time-mix's and the channel-mix's. Fields are
  // named "<layer tag>.<field>" (e.g. "tm6.wkv"), the names checkpoints store them under.
  struct state {
    typename TimeMix::state time_mix;
    typename ChannelMix::state channel_mix;

    template <class F>
    void visit(F&& f) const {
      time_mix.visit([&](const char* field, const auto& v) { f(std::string(TimeMix::state_tag) + "." + field, v); });
      channel_mix.visit(
          [&](const char* field, const auto& v) { f(std::string(ChannelMix::state_tag) + "." + field, v); });
    }
    template <class F>
    void visit(F&& f) {
      time_mix.visit([&](const char* field, auto& v) { f(std::string(TimeMix::state_tag) + "." + field, v); });
      channel_mix.visit([&](const char* field, auto& v) { f(std::string(ChannelMix::state_tag) + "." + field, v); });
    }
  };

  // prefix: the block's parameter-name prefix ("blocks.<l>."), RWKV-LM's names below it.
  rwkv_block(const layers::rwkv_config& cfg, rng& gen, const std::string& prefix)
      : ln1_weight(ones(cfg.dim, prefix + "ln1.weight")),
        ln1_bias(zeros(cfg.dim, prefix + "ln1.bias")),
        ln2_weight(ones(cfg.dim, prefix + "ln2.weight")),
        ln2_bias(zeros(cfg.dim, prefix + "ln2.bias")),
        time_mix(cfg, gen, prefix + "att."),
        channel_mix(cfg, gen, prefix + "ffn.") {}

  // In checkpoint and optimizer order: the norms, then the time-mix's, then the channel-mix's.
  std::vector<basic_parameter<value_type>> parameters() const {
    std::vector<basic_parameter<value_type>> all{ln1_weight, ln1_bias, ln2_weight, ln2_bias};
    for (const auto& p : time_mix.parameters()) all.push_back(p);
    for (const auto& p : channel_mix.parameters()) all.push_back(p);
    return all;
  }

  std::pair<basic_var<value_type>, state> forward(basic_tape<value_type>& tape, const basic_var<value_type>& x,
                                                  const state& in, cpu exec = {}) const {
    auto [att, tm_state] = time_mix.forward(tape, layer_norm(tape, x, ln1_weight, ln1_bias), in.time_mix, exec);
    const auto mid = add(tape, x, att);
    auto [ffn, cm_state] = channel_mix.forward(tape, layer_norm(tape, mid, ln2_weight, ln2_bias), in.channel_mix, exec);
    return {add(tape, mid, ffn), state{std::move(tm_state), std::move(cm_state)}};
  }

  basic_parameter<value_type> ln1_weight, ln1_bias, ln2_weight, ln2_bias;
  TimeMix time_mix;
  ChannelMix channel_mix;

 private:
  static basic_parameter<value_type> ones(index_t dim, const std::string& name) {
    return basic_parameter<value_type>(basic_tensor<value_type>::ones({dim}), name);
  }
  static basic_parameter<value_type> zeros(index_t dim, const std::string& name) {
    return basic_parameter<value_type>(basic_tensor<value_type>::zeros({dim}), name);
  }
};

}  // namespace linrec::models
