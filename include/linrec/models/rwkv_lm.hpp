#pragma once
// A byte/character-level RWKV language model: embedding → LN0 → blocks
// (x += TM(LN1 x); x += CM(LN2 x)) → LN_out → head, with RWKV-4 or RWKV-6 blocks by config
// (docs/models.md §4 "Block"; one block is models/rwkv_block.hpp). Training runs the parallel
// forward over [B,T] windows; generation runs one token at a time from a state of constant size
// (models/generate.hpp samples text that way).
//
//   linrec::models::rwkv_lm<float> model({.version = 6, .vocab = 256, .dim = 128, .layers = 2}, gen);
//   linrec::Tape tape;
//   auto [logits, state] = model.forward(tape, ids, batch, ctx, {});   // logits [B,T,V]; {} = start
//   auto loss = linrec::softmax_cross_entropy(tape, logits, targets);
//   tape.backward(loss);
//   auto carried = state.detach();   // the next window continues from here (truncated BPTT)
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "linrec/autodiff/autodiff.hpp"
#include "linrec/layers/rwkv4.hpp"
#include "linrec/layers/rwkv6.hpp"
#include "linrec/models/rwkv_block.hpp"

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
  using rwkv4_block = rwkv_block<layers::rwkv4_time_mix<T>, layers::rwkv4_channel_mix<T>>;
  using rwkv6_block = rwkv_block<layers::rwkv6_time_mix<T>, layers::rwkv6_channel_mix<T>>;

  // The recurrent state after a segment, one entry per block; default-constructed (empty) =
  // the start of documents. Everything a caller does with a state goes through these methods,
  // so a new state field is added in its layer's `state::visit` and nowhere else.
  class state {
   public:
    state() = default;
    bool empty() const {
      return std::visit([](const auto& blocks) { return blocks.empty(); }, blocks_);
    }
    std::size_t size() const {
      return std::visit([](const auto& blocks) { return blocks.size(); }, blocks_);
    }

    // The same values with no tape history: carrying a state into the next training window
    // stops the gradient there (truncated backpropagation through time).
    state detach() const {
      state out = *this;
      out.for_each_var([](const std::string&, basic_var<T>& v) {
        if (v.defined()) v = constant(v.value());
      });
      return out;
    }

    // Back to the start of documents (every block's state empty).
    void zero() { *this = state(); }

    // The defined tensors by name "<block>.<layer tag>.<field>" (e.g. "0.tm6.wkv"); empty for
    // an empty state. Checkpoints store a carried state under these names.
    std::vector<std::pair<std::string, basic_tensor<T>>> tensors() const {
      std::vector<std::pair<std::string, basic_tensor<T>>> out;
      for_each_var([&](const std::string& name, const basic_var<T>& v) {
        if (v.defined()) out.emplace_back(name, v.value());
      });
      return out;
    }

   private:
    friend class rwkv_lm;
    template <class F>
    void for_each_var(F&& f) const {
      std::visit(
          [&](const auto& blocks) {
            for (std::size_t l = 0; l < blocks.size(); ++l)
              blocks[l].visit([&](const std::string& field, const auto& v) { f(std::to_string(l) + "." + field, v); });
          },
          blocks_);
    }
    template <class F>
    void for_each_var(F&& f) {
      std::visit(
          [&](auto& blocks) {
            for (std::size_t l = 0; l < blocks.size(); ++l)
              blocks[l].visit([&](const std::string& field, auto& v) { f(std::to_string(l) + "." + field, v); });
          },
          blocks_);
    }

    std::variant<std::vector<typename rwkv4_block::state>, std::vector<typename rwkv6_block::state>> blocks_;
  };

  rwkv_lm(const rwkv_lm_config& cfg, rng& gen) : cfg_(cfg) {
    LINREC_CHECK(cfg.version == 4 || cfg.version == 6, "rwkv_lm: version must be 4 or 6, got " << cfg.version);
    LINREC_CHECK(cfg.vocab > 0 && cfg.dim > 0 && cfg.layers > 0, "rwkv_lm: vocab, dim and layers must be > 0");
    LINREC_CHECK(cfg.version == 4 || (cfg.head_size > 0 && cfg.dim % cfg.head_size == 0),
                 "rwkv_lm: head_size must be > 0 and divide dim " << cfg.dim << ", got " << cfg.head_size);
    // RWKV-LM: a tiny uniform embedding (LN0 rescales it), orthogonal head with gain 0.5.
    embedding = basic_parameter<T>(basic_tensor<T>::rand({cfg.vocab, cfg.dim}, gen, -1e-4, 1e-4), "emb.weight");
    ln0_weight = basic_parameter<T>(basic_tensor<T>::ones({cfg.dim}), "blocks.0.ln0.weight");
    ln0_bias = basic_parameter<T>(basic_tensor<T>::zeros({cfg.dim}), "blocks.0.ln0.bias");
    const auto build = [&](auto tag) {
      using block = typename decltype(tag)::type;
      std::vector<block> blocks;
      for (index_t l = 0; l < cfg.layers; ++l)
        blocks.emplace_back(layers::rwkv_config{cfg.dim, l, cfg.layers, cfg.head_size, cfg.ffn_dim}, gen,
                            "blocks." + std::to_string(l) + ".");
      blocks_ = std::move(blocks);
    };
    if (cfg.version == 4)
      build(std::type_identity<rwkv4_block>{});
    else
      build(std::type_identity<rwkv6_block>{});
    ln_out_weight = basic_parameter<T>(basic_tensor<T>::ones({cfg.dim}), "ln_out.weight");
    ln_out_bias = basic_parameter<T>(basic_tensor<T>::zeros({cfg.dim}), "ln_out.bias");
    head = basic_parameter<T>(layers::rwkv_projection<T>(cfg.dim, cfg.vocab, 0.5, gen), "head.weight");
  }

  const rwkv_lm_config& config() const { return cfg_; }

  std::vector<basic_parameter<T>> parameters() const {
    std::vector<basic_parameter<T>> all{embedding, ln0_weight, ln0_bias};
    std::visit(
        [&](const auto& blocks) {
          for (const auto& b : blocks)
            for (const auto& p : b.parameters()) all.push_back(p);
        },
        blocks_);
    for (const auto& p : {ln_out_weight, ln_out_bias, head}) all.push_back(p);
    return all;
  }

  // ids: B·T token ids (row-major [B,T]) → logits [B,T,V] and the state after the last token.
  std::pair<basic_var<T>, state> forward(basic_tape<T>& tape, std::span<const std::int32_t> ids, index_t batch,
                                         index_t time, const state& in, cpu exec = {}) const {
    LINREC_CHECK(static_cast<index_t>(ids.size()) == batch * time,
                 "rwkv_lm: " << ids.size() << " ids for batch " << batch << " × time " << time);
    LINREC_CHECK(
        in.empty() || (in.size() == static_cast<std::size_t>(cfg_.layers) && in.blocks_.index() == blocks_.index()),
        "rwkv_lm: the state has " << in.size() << " blocks of RWKV-" << (in.blocks_.index() == 0 ? 4 : 6)
                                  << ", the model " << cfg_.layers << " of RWKV-" << cfg_.version);
    for (std::int32_t id : ids)
      LINREC_CHECK(id >= 0 && id < cfg_.vocab,
                   "rwkv_lm: token id " << id << " outside the vocabulary [0, " << cfg_.vocab << ")");
    auto x = linrec::embedding(tape, embedding, ids, Shape{batch, time});
    x = layer_norm(tape, x, ln0_weight, ln0_bias);
    state out;
    std::visit(
        [&](const auto& blocks) {
          using block_state = typename std::decay_t<decltype(blocks)>::value_type::state;
          std::vector<block_state> next(blocks.size());
          const auto* previous = in.empty() ? nullptr : &std::get<std::vector<block_state>>(in.blocks_);
          for (std::size_t l = 0; l < blocks.size(); ++l)
            std::tie(x, next[l]) = blocks[l].forward(tape, x, previous ? (*previous)[l] : block_state{}, exec);
          out.blocks_ = std::move(next);
        },
        blocks_);
    x = layer_norm(tape, x, ln_out_weight, ln_out_bias);
    return {matmul(tape, x, head, exec), std::move(out)};
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
    s = std::move(next);
    return logits.value().reshape(Shape{batch, cfg_.vocab});
  }

  static state detach(const state& s) { return s.detach(); }

  // A state of this model from tensors named as state::tensors() names them. `find(name)`
  // returns the stored tensor, or an undefined one when there is none; a field with no tensor
  // stays undefined (its layer reads that as zeros), and no tensor at all gives the empty state.
  // Shapes are checked where the state is used (the layers' forward).
  template <class Find>
  state state_from(Find&& find) const {
    state out;
    std::visit(
        [&](const auto& blocks) {
          using block_state = typename std::decay_t<decltype(blocks)>::value_type::state;
          out.blocks_ = std::vector<block_state>(blocks.size());
        },
        blocks_);
    bool any = false;
    out.for_each_var([&](const std::string& name, basic_var<T>& v) {
      if (basic_tensor<T> t = find(name); t.defined()) {
        v = constant(std::move(t));
        any = true;
      }
    });
    return any ? out : state();
  }

  basic_parameter<T> embedding, ln0_weight, ln0_bias, ln_out_weight, ln_out_bias, head;

 private:
  rwkv_lm_config cfg_;
  std::variant<std::vector<rwkv4_block>, std::vector<rwkv6_block>> blocks_;
};

}  // namespace linrec::models
