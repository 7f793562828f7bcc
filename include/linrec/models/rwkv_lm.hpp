#pragma once
// A byte/character-level RWKV language model: embedding → LN0 → blocks
// (x += TM(LN1 x); x += CM(LN2 x)) → LN_out → head, with RWKV-4 or RWKV-6 blocks by config
// (MODELS.md §4 "Block"). Training runs the parallel forward over [B,T] windows; generation
// runs one token at a time from a state of constant size.
//
//   linrec::models::rwkv_lm<float> model({.version = 6, .vocab = 256, .dim = 128, .layers = 2}, gen);
//   linrec::Tape tape;
//   auto [logits, state] = model.forward(tape, ids, {batch, ctx}, {});   // logits [B,T,V]
//   auto loss = linrec::softmax_cross_entropy(tape, logits, targets);
//   tape.backward(loss);
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "linrec/autodiff/autodiff.hpp"
#include "linrec/layers/rwkv4.hpp"
#include "linrec/layers/rwkv6.hpp"

namespace linrec::models {

struct rwkv_lm_config {
  int version = 6;         // 4 or 6
  index_t vocab = 256;     // bytes
  index_t dim = 128;       // C
  index_t layers = 2;      // n
  index_t head_size = 32;  // RWKV-6 head size N (C = H·N)
  index_t ffn_dim = 0;     // channel-mix width; 0 = the version's default (4C, or 3.5C rounded to 32)
};

template <class T>
class rwkv_lm {
 public:
  using value_type = T;
  using tm4 = layers::rwkv4_time_mix<T>;
  using cm4 = layers::rwkv4_channel_mix<T>;
  using tm6 = layers::rwkv6_time_mix<T>;
  using cm6 = layers::rwkv6_channel_mix<T>;

  struct block_state {
    typename tm4::state tm_v4;
    typename cm4::state cm_v4;
    typename tm6::state tm_v6;
    typename cm6::state cm_v6;
  };
  // One entry per block; empty = start of documents.
  using state = std::vector<block_state>;

  rwkv_lm(const rwkv_lm_config& cfg, rng& gen) : cfg_(cfg) {
    LINREC_CHECK(cfg.version == 4 || cfg.version == 6, "rwkv_lm: version must be 4 or 6, got " << cfg.version);
    LINREC_CHECK(cfg.vocab > 0 && cfg.dim > 0 && cfg.layers > 0, "rwkv_lm: vocab, dim and layers must be > 0");
    // RWKV-LM: a tiny uniform embedding (LN0 rescales it), orthogonal head with gain 0.5.
    embedding = basic_parameter<T>(basic_tensor<T>::rand({cfg.vocab, cfg.dim}, gen, -1e-4, 1e-4), "emb.weight");
    ln0_weight = norm_weight("blocks.0.ln0.weight");
    ln0_bias = norm_bias("blocks.0.ln0.bias");
    for (index_t l = 0; l < cfg.layers; ++l) {
      const std::string prefix = "blocks." + std::to_string(l) + ".";
      const layers::rwkv_config block_cfg{cfg.dim, l, cfg.layers, cfg.head_size, cfg.ffn_dim};
      block b;
      b.ln1_weight = norm_weight(prefix + "ln1.weight");
      b.ln1_bias = norm_bias(prefix + "ln1.bias");
      b.ln2_weight = norm_weight(prefix + "ln2.weight");
      b.ln2_bias = norm_bias(prefix + "ln2.bias");
      if (cfg.version == 4) {
        b.tm_v4.emplace(block_cfg, gen, prefix + "att.");
        b.cm_v4.emplace(block_cfg, gen, prefix + "ffn.");
      } else {
        b.tm_v6.emplace(block_cfg, gen, prefix + "att.");
        b.cm_v6.emplace(block_cfg, gen, prefix + "ffn.");
      }
      blocks_.push_back(std::move(b));
    }
    ln_out_weight = norm_weight("ln_out.weight");
    ln_out_bias = norm_bias("ln_out.bias");
    head = basic_parameter<T>(layers::rwkv_projection<T>(cfg.dim, cfg.vocab, 0.5, gen), "head.weight");
  }

  const rwkv_lm_config& config() const { return cfg_; }

  std::vector<basic_parameter<T>> parameters() const {
    std::vector<basic_parameter<T>> all{embedding, ln0_weight, ln0_bias};
    for (const auto& b : blocks_) {
      for (const auto& p : {b.ln1_weight, b.ln1_bias, b.ln2_weight, b.ln2_bias}) all.push_back(p);
      const auto append = [&](const auto& layer) {
        if (layer)
          for (const auto& p : layer->parameters()) all.push_back(p);
      };
      append(b.tm_v4);
      append(b.cm_v4);
      append(b.tm_v6);
      append(b.cm_v6);
    }
    for (const auto& p : {ln_out_weight, ln_out_bias, head}) all.push_back(p);
    return all;
  }

  // ids: B·T token ids (row-major [B,T]) → logits [B,T,V] and the state after the last token.
  std::pair<basic_var<T>, state> forward(basic_tape<T>& tape, std::span<const std::int32_t> ids, index_t batch,
                                         index_t time, const state& in, cpu exec = {}) const {
    LINREC_CHECK(static_cast<index_t>(ids.size()) == batch * time,
                 "rwkv_lm: " << ids.size() << " ids for batch " << batch << " × time " << time);
    LINREC_CHECK(in.empty() || in.size() == blocks_.size(),
                 "rwkv_lm: state has " << in.size() << " blocks, the model " << blocks_.size());
    for (std::int32_t id : ids)
      LINREC_CHECK(id >= 0 && id < cfg_.vocab, "rwkv_lm: token id " << id << " outside the vocabulary [0, " << cfg_.vocab << ")");
    auto x = embedding_lookup(tape, ids, batch, time);
    x = layer_norm(tape, x, ln0_weight, ln0_bias);
    state out(blocks_.size());
    for (std::size_t l = 0; l < blocks_.size(); ++l) {
      const block& b = blocks_[l];
      const block_state prev = in.empty() ? block_state{} : in[l];
      const auto h1 = layer_norm(tape, x, b.ln1_weight, b.ln1_bias);
      if (b.tm_v4) {
        auto [att, tm_state] = b.tm_v4->forward(tape, h1, prev.tm_v4, exec);
        x = add(tape, x, att);
        auto [ffn, cm_state] = b.cm_v4->forward(tape, layer_norm(tape, x, b.ln2_weight, b.ln2_bias), prev.cm_v4, exec);
        x = add(tape, x, ffn);
        out[l].tm_v4 = tm_state;
        out[l].cm_v4 = cm_state;
      } else {
        auto [att, tm_state] = b.tm_v6->forward(tape, h1, prev.tm_v6, exec);
        x = add(tape, x, att);
        auto [ffn, cm_state] = b.cm_v6->forward(tape, layer_norm(tape, x, b.ln2_weight, b.ln2_bias), prev.cm_v6, exec);
        x = add(tape, x, ffn);
        out[l].tm_v6 = tm_state;
        out[l].cm_v6 = cm_state;
      }
    }
    x = layer_norm(tape, x, ln_out_weight, ln_out_bias);
    return {matmul(tape, x, head), out};
  }

  // Mean cross-entropy (nats/token) of predicting targets [B,T] from ids [B,T].
  std::pair<basic_var<T>, state> loss(basic_tape<T>& tape, std::span<const std::int32_t> ids,
                                      std::span<const std::int32_t> targets, index_t batch, index_t time,
                                      const state& in, cpu exec = {}) const {
    auto [logits, out] = forward(tape, ids, batch, time, in, exec);
    return {softmax_cross_entropy(tape, logits, targets), out};
  }

  // Generation: next-token logits [B,V] for one token per row, state updated (constant size).
  basic_tensor<T> step(std::span<const std::int32_t> ids, state& s, cpu exec = {}) const {
    basic_tape<T> tape(grad_mode::off);
    const auto batch = static_cast<index_t>(ids.size());
    auto [logits, next] = forward(tape, ids, batch, 1, s, exec);
    s = next;
    return logits.value().reshape(Shape{batch, cfg_.vocab});
  }

  // Detaches a state from its tape (values kept), for carrying it into the next training
  // window: truncated backpropagation through time.
  static state detach(const state& s) {
    state out(s.size());
    const auto copy = [](const basic_var<T>& v) { return v.defined() ? constant(v.value()) : basic_var<T>{}; };
    for (std::size_t l = 0; l < s.size(); ++l) {
      out[l].tm_v4 = {copy(s[l].tm_v4.prev_x), copy(s[l].tm_v4.num), copy(s[l].tm_v4.den)};
      out[l].cm_v4 = {copy(s[l].cm_v4.prev_x)};
      out[l].tm_v6 = {copy(s[l].tm_v6.prev_x), copy(s[l].tm_v6.wkv)};
      out[l].cm_v6 = {copy(s[l].cm_v6.prev_x)};
    }
    return out;
  }

  basic_parameter<T> embedding, ln0_weight, ln0_bias, ln_out_weight, ln_out_bias, head;

 private:
  struct block {
    basic_parameter<T> ln1_weight, ln1_bias, ln2_weight, ln2_bias;
    std::optional<tm4> tm_v4;
    std::optional<cm4> cm_v4;
    std::optional<tm6> tm_v6;
    std::optional<cm6> cm_v6;
  };

  basic_parameter<T> norm_weight(const std::string& name) const {
    return basic_parameter<T>(basic_tensor<T>::ones({cfg_.dim}), name);
  }
  basic_parameter<T> norm_bias(const std::string& name) const {
    return basic_parameter<T>(basic_tensor<T>::zeros({cfg_.dim}), name);
  }
  basic_var<T> embedding_lookup(basic_tape<T>& tape, std::span<const std::int32_t> ids, index_t batch, index_t time) const {
    return linrec::embedding(tape, embedding, ids, Shape{batch, time});
  }

  rwkv_lm_config cfg_;
  std::vector<block> blocks_;
};

}  // namespace linrec::models
