// The RWKV language model: parallel logits == token-by-token generation logits (both
// versions), stateful windows == one long window, and a short training run learns a
// repeating pattern.
#include <catch2/catch.hpp>

#include "layer_test_util.hpp"
#include "linrec/models/rwkv_lm.hpp"
#include "linrec/optim/optim.hpp"

using namespace linrec;
using namespace linrec::models;
using linrec::test::relative_error;

namespace {

std::vector<std::int32_t> random_ids(index_t n, index_t vocab, rng& gen) {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (auto& id : ids) id = static_cast<std::int32_t>(gen.below(static_cast<std::uint64_t>(vocab)));
  return ids;
}

// Give the zero-initialised projections values so every path contributes.
void perturb(rwkv_lm<float>& model, rng& gen) {
  for (auto& p : model.parameters())
    if (as_array(p.value()).abs().maxCoeff() < 1e-3)
      p.value().copy_from(basic_tensor<float>::randn(p.value().shape(), gen, 0.0, 0.2));
}

}  // namespace

TEST_CASE("rwkv_lm: parallel logits equal recurrent generation", "[models]") {
  for (int version : {4, 6}) {
    rng gen(version);
    rwkv_lm<float> model({.version = version, .vocab = 40, .dim = 32, .layers = 2, .head_size = 8}, gen);
    perturb(model, gen);
    const index_t batch = 2, time = 21;
    const auto ids = random_ids(batch * time, 40, gen);
    Tape tape(grad_mode::off);
    const auto logits = model.forward(tape, ids, batch, time, {}).first.value();
    rwkv_lm<float>::state s;
    double worst = 0;
    for (index_t t = 0; t < time; ++t) {
      const std::int32_t step_ids[2] = {ids[static_cast<std::size_t>(t)], ids[static_cast<std::size_t>(time + t)]};
      const auto step_logits = model.step(step_ids, s);
      for (index_t b = 0; b < batch; ++b)
        for (index_t v = 0; v < 40; ++v)
          worst = std::max(worst, double(std::abs(step_logits.at({b, v}) - logits.at({b, t, v}))) /
                                      std::max(1.0, double(std::abs(logits.at({b, t, v})))));
    }
    INFO("version " << version);
    CHECK(worst <= 1e-4);
  }
}

TEST_CASE("rwkv_lm: two windows with the state carried equal one window", "[models]") {
  for (int version : {4, 6}) {
    rng gen(10 + version);
    rwkv_lm<float> model({.version = version, .vocab = 30, .dim = 16, .layers = 2, .head_size = 8}, gen);
    perturb(model, gen);
    const auto ids = random_ids(40, 30, gen);  // one row of 40
    Tape tape(grad_mode::off);
    const auto whole = model.forward(tape, ids, 1, 40, {}).first.value();
    const auto [first, s] = model.forward(tape, std::span(ids).first(17), 1, 17, {});
    const auto second = model.forward(tape, std::span(ids).subspan(17), 1, 23, rwkv_lm<float>::detach(s)).first.value();
    auto joined = basic_tensor<float>::empty(whole.shape());
    std::copy(first.value().data(), first.value().data() + first.value().numel(), joined.data());
    std::copy(second.data(), second.data() + second.numel(), joined.data() + first.value().numel());
    INFO("version " << version);
    CHECK(relative_error(joined, whole) <= 1e-5);
  }
}

TEST_CASE("rwkv_lm: learns a repeating pattern", "[models]") {
  for (int version : {4, 6}) {
    rng gen(3);
    rwkv_lm<float> model({.version = version, .vocab = 16, .dim = 32, .layers = 1, .head_size = 8}, gen);
    AdamW opt(model.parameters(), {.lr = 3e-3, .weight_decay = 0.0});
    // Period-5 sequence: predictable only from context (token shift + recurrence).
    std::vector<std::int32_t> text;
    const std::int32_t pattern[5] = {3, 1, 4, 1, 5};
    for (int i = 0; i < 400; ++i) text.push_back(pattern[i % 5]);
    double first_loss = 0, last_loss = 0;
    for (int step = 0; step < 60; ++step) {
      const std::size_t start = gen.below(300);
      std::vector<std::int32_t> ids(text.begin() + start, text.begin() + start + 32),
          targets(text.begin() + start + 1, text.begin() + start + 33);
      Tape tape;
      auto [loss, s] = model.loss(tape, ids, targets, 1, 32, {});
      (step == 0 ? first_loss : last_loss) = loss.item();
      tape.backward(loss);
      opt.step();
      opt.zero_grad();
    }
    INFO("version " << version << ": loss " << first_loss << " -> " << last_loss);
    CHECK(first_loss > 2.0);  // ≈ ln 16 at init
    CHECK(last_loss < 0.2);   // the pattern is deterministic given the previous token pair
  }
}

TEST_CASE("rwkv_lm: the state's named tensors restore the same state", "[models]") {
  for (int version : {4, 6}) {
    INFO("version " << version);
    rng gen(20 + version);
    rwkv_lm<float> model({.version = version, .vocab = 30, .dim = 16, .layers = 2, .head_size = 8}, gen);
    perturb(model, gen);
    const auto ids = random_ids(2 * 9, 30, gen);
    Tape tape;
    const auto [logits, s] = model.forward(tape, ids, 2, 9, {});
    // Names are "<block>.<layer tag>.<field>": the checkpoint format stores carried states so.
    const auto named = s.tensors();
    std::vector<std::string> names;
    for (const auto& [name, t] : named) names.push_back(name);
    const std::vector<std::string> expected =
        version == 4 ? std::vector<std::string>{"0.tm4.prev_x", "0.tm4.num", "0.tm4.den", "0.cm4.prev_x",
                                                "1.tm4.prev_x", "1.tm4.num", "1.tm4.den", "1.cm4.prev_x"}
                     : std::vector<std::string>{"0.tm6.prev_x", "0.tm6.wkv", "0.cm6.prev_x",
                                                "1.tm6.prev_x", "1.tm6.wkv", "1.cm6.prev_x"};
    CHECK(names == expected);
    const auto restored = model.state_from([&](const std::string& name) {
      for (const auto& [n, t] : named)
        if (n == name) return t.clone();
      return Tensor();
    });
    REQUIRE(restored.size() == 2);
    // The restored state continues the sequence exactly like the original one.
    const auto next = random_ids(2 * 5, 30, gen);
    Tape eval(grad_mode::off);
    const auto from_original = model.forward(eval, next, 2, 5, s.detach()).first.value();
    const auto from_restored = model.forward(eval, next, 2, 5, restored).first.value();
    CHECK(relative_error(from_restored, from_original) == 0.0);
    // detach keeps every value (the history it drops is what the carried training state relies on).
    const auto detached = s.detach().tensors();
    REQUIRE(detached.size() == named.size());
    for (std::size_t i = 0; i < named.size(); ++i) CHECK(relative_error(detached[i].second, named[i].second) == 0.0);
    // No tensors at all: the empty state, the start of documents.
    CHECK(model.state_from([](const std::string&) { return Tensor(); }).empty());
    auto zeroed = s;
    zeroed.zero();
    CHECK(zeroed.empty());
    CHECK_FALSE(s.empty());
  }
}

TEST_CASE("rwkv_lm: a state of the other version or depth is an error", "[models]") {
  rng gen(7);
  rwkv_lm<float> v4({.version = 4, .vocab = 20, .dim = 16, .layers = 2}, gen);
  rwkv_lm<float> v6({.version = 6, .vocab = 20, .dim = 16, .layers = 2, .head_size = 8}, gen);
  rwkv_lm<float> v6_deep({.version = 6, .vocab = 20, .dim = 16, .layers = 3, .head_size = 8}, gen);
  const auto ids = random_ids(6, 20, gen);
  Tape tape(grad_mode::off);
  const auto s4 = v4.forward(tape, ids, 1, 6, {}).second;
  const auto s6 = v6.forward(tape, ids, 1, 6, {}).second;
  CHECK_THROWS_WITH(v6.forward(tape, ids, 1, 6, s4), Catch::Contains("RWKV-4") && Catch::Contains("RWKV-6"));
  CHECK_THROWS_WITH(v6_deep.forward(tape, ids, 1, 6, s6), Catch::Contains("2 blocks"));
}
