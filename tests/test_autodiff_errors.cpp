// Autodiff: tape semantics (parameters, accumulation, no-grad, release, checked mode) and
// bad input raising linrec::Error with a clear message.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "linrec/autodiff/autodiff.hpp"

using namespace linrec;

namespace {
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no linrec::Error thrown)";
}
}  // namespace

TEST_CASE("parameter gradients accumulate across backward passes until zeroed", "[autodiff][tape]") {
  rng g(3);
  Parameter w(Tensor::randn({3, 2}, g), "w");
  auto x = constant(Tensor::randn({4, 3}, g));
  auto run = [&] {
    Tape tape;
    tape.backward(sum_all(tape, matmul(tape, x, w)));
  };
  run();
  const auto once = w.grad().clone().to_vector();
  // d/dw Σ x·w = column sums of x, repeated over the output columns.
  for (index_t k = 0; k < 3; ++k) {
    float col = 0;
    for (index_t r = 0; r < 4; ++r) col += x.value().at({r, k});
    CHECK(w.grad().at({k, 0}) == Approx(col));
    CHECK(w.grad().at({k, 1}) == Approx(col));
  }
  run();
  for (std::size_t i = 0; i < once.size(); ++i) CHECK(w.grad().to_vector()[i] == Approx(2 * once[i]));
  w.zero_grad();
  CHECK(as_array(w.grad()).abs().maxCoeff() == 0.0f);
  run();
  CHECK(w.grad().to_vector() == once);
}

TEST_CASE("a Var used twice receives the sum of both gradients", "[autodiff][tape]") {
  Parameter p(Tensor::from_data({2}, {1.5f, -2.0f}), "p");
  Tape tape;
  auto y = mul(tape, p, p);                     // p², grad 2p
  auto z = add(tape, y, scale(tape, p, 3.0f));  // + 3p, grad 3
  tape.backward(sum_all(tape, z));
  CHECK(p.grad().at({0}) == Approx(2 * 1.5 + 3));
  CHECK(p.grad().at({1}) == Approx(2 * -2.0 + 3));
}

TEST_CASE("no-grad evaluation records nothing and gives the same values", "[autodiff][tape]") {
  rng g(4);
  Parameter w(Tensor::randn({5, 5}, g), "w");
  auto x = constant(Tensor::randn({2, 5}, g));
  Tape eval(grad_mode::off);
  auto y = tanh(eval, matmul(eval, x, w));
  CHECK(eval.size() == 0);
  CHECK_FALSE(y.requires_grad());
  Tape train;
  auto y2 = tanh(train, matmul(train, x, w));
  CHECK(train.size() == 2);
  CHECK(y.value().to_vector() == y2.value().to_vector());
  // Ops on constants only are not recorded either.
  auto c = exp(train, x);
  CHECK(train.size() == 2);
  CHECK_FALSE(c.requires_grad());
}

TEST_CASE("backward releases the tape and its activations", "[autodiff][tape]") {
  rng g(5);
  Parameter w(Tensor::randn({3, 3}, g), "w");
  Tape tape;
  auto h = relu(tape, matmul(tape, constant(Tensor::randn({2, 3}, g)), w));
  std::weak_ptr<detail::var_node<float>> inner;
  {
    auto mid = sigmoid(tape, h);
    inner = mid.node();
    auto loss = mean_all(tape, mid);
    CHECK(tape.size() == 4);
    tape.backward(loss);
  }
  CHECK(tape.size() == 0);
  CHECK(inner.expired());  // the intermediate's node was freed with the tape
  CHECK(w.grad().defined());
}

TEST_CASE("bad input raises linrec::Error with a clear message", "[autodiff][errors]") {
  rng g(6);
  auto a = constant(Tensor::randn({2, 3}, g));
  auto b = constant(Tensor::randn({4, 5}, g));
  Parameter p(Tensor::randn({2, 3}, g), "p");
  Tape tape;
  SECTION("shape mismatch") {
    CHECK_THAT(message_of([&] { matmul(tape, a, b); }), Catch::Contains("inner dimensions differ"));
    CHECK_THAT(message_of([&] { add(tape, a, b); }), Catch::Contains("do not broadcast") && Catch::Contains("[2,3]"));
    CHECK_THAT(message_of([&] { linear(tape, a, b, b); }), Catch::Contains("linear"));
    CHECK_THAT(message_of([&] { layer_norm(tape, a, constant(Tensor::ones({4})), Var{}); }), Catch::Contains("gamma"));
    CHECK_THAT(message_of([&] { token_shift(tape, a); }), Catch::Contains("[B, T, C]"));
    CHECK_THAT(message_of([&] {
                 scan<real_op>(tape, constant(Tensor::ones({2, 3, 4})), constant(Tensor::ones({2, 3, 5})));
               }),
               Catch::Contains("scan: a must be"));
    const std::vector<std::int32_t> ids = {0, 7};
    CHECK_THAT(message_of([&] { embedding(tape, b, ids, Shape{2}); }), Catch::Contains("outside the vocabulary"));
    CHECK_THAT(message_of([&] { softmax_cross_entropy(tape, a, ids); }), Catch::Contains("target 7"));
  }
  SECTION("backward twice") {
    auto loss = sum_all(tape, mul(tape, p, a));
    tape.backward(loss);
    CHECK_THAT(message_of([&] { tape.backward(loss); }), Catch::Contains("backward was already called"));
  }
  SECTION("op on a released tape") {
    auto h = mul(tape, p, a);
    tape.backward(sum_all(tape, h));
    CHECK_THAT(message_of([&] { exp(tape, h); }), Catch::Contains("released tape"));
    tape.clear();
    auto h2 = mul(tape, p, a);
    tape.clear();
    CHECK_THAT(message_of([&] { exp(tape, h2); }), Catch::Contains("released tape"));
  }
  SECTION("a Var from another tape") {
    Tape other;
    auto h = mul(other, p, a);
    CHECK_THAT(message_of([&] { exp(tape, h); }), Catch::Contains("another tape"));
  }
  SECTION("non-scalar loss") {
    auto h = mul(tape, p, a);
    CHECK_THAT(message_of([&] { tape.backward(h); }), Catch::Contains("one element"));
  }
  SECTION("CUDA tensor without CUDA") {
    if (!cuda_available())
      CHECK_THAT(message_of([&] { Parameter q(Tensor::zeros({2}, cuda_device())); }),
                 Catch::Contains("without CUDA support"));
  }
  SECTION("undefined Var") {
    CHECK_THAT(message_of([&] { exp(tape, Var{}); }), Catch::Contains("undefined Var"));
  }
}

TEST_CASE("checked mode names the op and shapes producing NaN/Inf", "[autodiff][checked]") {
  Parameter p(Tensor::from_data({2, 2}, {1.0f, -1.0f, 2.0f, 3.0f}), "p");
  SECTION("forward value") {
    Tape tape;
    tape.set_checked(true);
    const auto msg = message_of([&] { log(tape, p); });
    CHECK_THAT(msg, Catch::Contains("checked mode") && Catch::Contains("'log'") && Catch::Contains("[2,2]"));
  }
  SECTION("gradient") {
    // sqrt(0) is finite, its derivative is not.
    Parameter z(Tensor::from_data({3}, {0.0f, 1.0f, 4.0f}), "z");
    Tape tape;
    tape.set_checked(true);
    auto loss = sum_all(tape, sqrt(tape, z));
    const auto msg = message_of([&] { tape.backward(loss); });
    CHECK_THAT(msg, Catch::Contains("backward of op 'sqrt'") && Catch::Contains("[3]"));
  }
  SECTION("unchecked mode lets it through") {
    Tape tape;
    auto y = log(tape, p);
    CHECK(std::isnan(y.value().at({0, 1})));
  }
}

TEST_CASE("a custom op recorded by user code joins the tape", "[autodiff][custom]") {
  // y = x³ written as a user op: forward value, backward 3x²·g.
  Parameter x(Tensor::from_data({3}, {1.0f, -2.0f, 0.5f}), "x");
  Tape tape;
  const bool record = tape.begin("cube", {&x});
  auto value = Tensor::empty(x.shape());
  as_array(value) = as_array(x.value()).cube();
  auto y = tape.finish("cube", {&x}, value, record, [](op_record<float>& r) {
    auto s = Tape::sink(r, 0);
    if (s) s.put(as_array(s.tensor), 3 * as_array(r.inputs[0]->value).square() * as_array(r.grad_out()));
  });
  tape.backward(sum_all(tape, y));
  CHECK(x.grad().to_vector() == std::vector<float>{3.0f, 12.0f, 0.75f});
}
