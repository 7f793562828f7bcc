// Autodiff: every op's gradient against central finite differences in double (one data-driven
// table of op × input generator × tolerance), tape semantics, checked mode and bad input.
#include <omp.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "linrec/autodiff/autodiff.hpp"

using namespace linrec;
using VarD = basic_var<double>;
using ParamD = basic_parameter<double>;
using TapeD = basic_tape<double>;

namespace {

// ---- input generators --------------------------------------------------------------------
using generator = std::function<TensorD(rng&)>;
generator normal(Shape s, double scale = 1.0) {
  return [s, scale](rng& g) { return TensorD::randn(s, g, 0.0, scale); };
}
generator uniform(Shape s, double lo, double hi) {
  return [s, lo, hi](rng& g) { return TensorD::rand(s, g, lo, hi); };
}
// Normal values pushed at least `gap` away from zero (kinks, poles).
generator away_from_zero(Shape s, double gap = 0.1) {
  return [s, gap](rng& g) {
    auto t = TensorD::randn(s, g);
    for (auto& x : std::span<double>(t.data(), static_cast<std::size_t>(t.numel()))) x += x >= 0 ? gap : -gap;
    return t;
  };
}
// Complex decays with |a| in [0.5, 0.95] and any phase, as [..., 2].
generator complex_decay(Shape s) {
  return [s](rng& g) {
    Shape full = s;
    full.push_back(2);
    auto t = TensorD::empty(full);
    for (index_t i = 0; i < s.numel(); ++i) {
      const double r = g.uniform(0.5, 0.95), phi = g.uniform(-3.0, 3.0);
      t.data()[2 * i] = r * std::cos(phi);
      t.data()[2 * i + 1] = r * std::sin(phi);
    }
    return t;
  };
}
// Log-space values (s, m): s normal, m in [lo, hi].
generator log_values(Shape s, double lo, double hi) {
  return [s, lo, hi](rng& g) {
    Shape full = s;
    full.push_back(2);
    auto t = TensorD::empty(full);
    for (index_t i = 0; i < s.numel(); ++i) {
      t.data()[2 * i] = g.normal();
      t.data()[2 * i + 1] = g.uniform(lo, hi);
    }
    return t;
  };
}

// ---- the table -----------------------------------------------------------------------------
struct gradcheck_case {
  std::string name;
  std::vector<generator> inputs;
  // Builds the op's outputs from the inputs (Parameters, so every input gets a gradient).
  std::function<std::vector<VarD>(TapeD&, const std::vector<VarD>&)> build;
  double tolerance = 1e-6;
};

#define ONE(expr)                            \
  [](TapeD& t, const std::vector<VarD>& x) { \
    (void)t;                                 \
    (void)x;                                 \
    return std::vector<VarD>{expr};          \
  }

std::vector<int> ids_a = {3, 0, 4, 4, 1, 2};
std::vector<int> targets_a = {2, 0, -1, 4, 1, 3};  // one ignored row

std::vector<gradcheck_case> cases() {
  const Shape s234{2, 3, 4};
  return {
      // unary
      {"exp", {normal(s234, 0.5)}, ONE(exp(t, x[0]))},
      {"log", {uniform(s234, 0.5, 2.0)}, ONE(log(t, x[0]))},
      {"sqrt", {uniform(s234, 0.5, 2.0)}, ONE(sqrt(t, x[0]))},
      {"square", {normal(s234)}, ONE(square(t, x[0]))},
      {"sigmoid", {normal(s234, 2.0)}, ONE(sigmoid(t, x[0]))},
      {"tanh", {normal(s234)}, ONE(tanh(t, x[0]))},
      {"silu", {normal(s234, 2.0)}, ONE(silu(t, x[0]))},
      {"relu", {away_from_zero(s234)}, ONE(relu(t, x[0]))},
      {"softplus", {normal(s234, 3.0)}, ONE(softplus(t, x[0]))},
      {"gelu", {normal(s234, 2.0)}, ONE(gelu(t, x[0]))},
      {"sin", {normal(s234, 2.0)}, ONE(sin(t, x[0]))},
      {"cos", {normal(s234, 2.0)}, ONE(cos(t, x[0]))},
      // arithmetic with broadcasting
      {"add same", {normal(s234), normal(s234)}, ONE(add(t, x[0], x[1]))},
      {"add [2,3,4]+[4]", {normal(s234), normal({4})}, ONE(add(t, x[0], x[1]))},
      {"sub [3,1]-[2,1,4]", {normal({3, 1}), normal({2, 1, 4})}, ONE(sub(t, x[0], x[1]))},
      {"mul [2,1,4]*[3,1]", {normal({2, 1, 4}), normal({3, 1})}, ONE(mul(t, x[0], x[1]))},
      {"mul same", {normal(s234), normal(s234)}, ONE(mul(t, x[0], x[1]))},
      {"mul by scalar tensor", {normal(s234), normal({})}, ONE(mul(t, x[0], x[1]))},
      {"div same", {normal(s234), away_from_zero(s234, 0.5)}, ONE(div(t, x[0], x[1]))},
      {"div [2,3,4]/[3,1]", {normal(s234), away_from_zero({3, 1}, 0.5)}, ONE(div(t, x[0], x[1]))},
      {"affine", {normal(s234)}, ONE(affine(t, x[0], -1.5, 0.25))},
      {"scale", {normal(s234)}, ONE(scale(t, x[0], 3.0))},
      {"add_scalar", {normal(s234)}, ONE(add_scalar(t, x[0], 2.0))},
      {"neg", {normal(s234)}, ONE(neg(t, x[0]))},
      {"one_minus", {normal(s234)}, ONE(one_minus(t, x[0]))},
      {"broadcast_to", {normal({3, 1})}, ONE(broadcast_to(t, x[0], Shape{2, 3, 4}))},
      {"lerp", {normal(s234), normal(s234), uniform({4}, 0, 1)}, ONE(lerp(t, x[0], x[1], x[2]))},
      // products
      {"matmul [2,3,4]·[4,5]", {normal(s234), normal({4, 5})}, ONE(matmul(t, x[0], x[1]))},
      {"matmul [2,3,4]·[5,4]ᵀ", {normal(s234), normal({5, 4})}, ONE(matmul(t, x[0], x[1], false, true))},
      {"matmul [2,4,3]ᵀ·[4,5]", {normal({2, 4, 3}), normal({4, 5})}, ONE(matmul(t, x[0], x[1], true, false))},
      {"matmul batched [2,3,4]·[2,4,5]", {normal(s234), normal({2, 4, 5})}, ONE(matmul(t, x[0], x[1]))},
      {"matmul batched [2,2,3,4]·[2,2,3,4]ᵀ",
       {normal({2, 2, 3, 4}), normal({2, 2, 3, 4})},
       ONE(matmul(t, x[0], x[1], false, true))},
      {"matmul batched ᵀ·ᵀ", {normal({2, 4, 3}), normal({2, 5, 4})}, ONE(matmul(t, x[0], x[1], true, true))},
      {"matmul on cpu{1}", {normal(s234), normal({4, 5})}, ONE(matmul(t, x[0], x[1], cpu{1}))},
      {"linear", {normal(s234), normal({4, 5}), normal({5})}, ONE(linear(t, x[0], x[1], x[2]))},
      // reductions
      {"sum axis 1", {normal(s234)}, ONE(sum(t, x[0], 1))},
      {"sum axis -1 keepdim", {normal(s234)}, ONE(sum(t, x[0], -1, true))},
      {"mean axis 0", {normal(s234)}, ONE(mean(t, x[0], 0))},
      {"sum_all", {normal(s234)}, ONE(sum_all(t, x[0]))},
      {"mean_all", {normal(s234)}, ONE(mean_all(t, x[0]))},
      // norms
      {"layer_norm", {normal(s234), normal({4}), normal({4})}, ONE(layer_norm(t, x[0], x[1], x[2]))},
      {"group_norm 2 heads",
       {normal({2, 3, 6}), normal({6}), normal({6})},
       ONE(group_norm(t, x[0], 2, x[1], x[2], 1e-5 * 64))},
      {"group_norm no affine", {normal({3, 6})}, ONE(group_norm(t, x[0], 3, VarD{}, VarD{}))},
      // language-model ops
      {"embedding",
       {normal({5, 3})},
       ONE(embedding(t, x[0], std::span<const std::int32_t>(ids_a.data(), ids_a.size()), Shape{2, 3}))},
      {"softmax_cross_entropy",
       {normal({2, 3, 5}, 2.0)},
       ONE(softmax_cross_entropy(t, x[0], std::span<const std::int32_t>(targets_a.data(), targets_a.size())))},
      // data movement
      {"reshape", {normal(s234)}, ONE(reshape(t, x[0], Shape{6, 4}))},
      {"narrow", {normal(s234)}, ONE(narrow(t, x[0], 2, 1, 2))},
      {"split",
       {normal(s234)},
       [](TapeD& t, const std::vector<VarD>& x) {
         return split(t, x[0], 1, {1, 2});
       }},
      {"concat", {normal({2, 1, 4}), normal({2, 2, 4})}, ONE(concat(t, {x[0], x[1]}, 1))},
      {"transpose heads [B,T,H,N]→[B,H,T,N]", {normal({2, 3, 2, 2})}, ONE(transpose(t, x[0], 1, 2))},
      {"token_shift with prev", {normal(s234), normal({2, 4})}, ONE(token_shift(t, x[0], x[1]))},
      {"token_shift zero prev", {normal(s234)}, ONE(token_shift(t, x[0]))},
      // scan
      {"scan real",
       {uniform(s234, 0.5, 0.99), normal(s234), normal({2, 4})},
       [](TapeD& t, const std::vector<VarD>& x) {
         auto r = scan<real_op>(t, x[0], x[1], x[2]);
         return std::vector<VarD>{r.h, r.h_final};
       }},
      {"scan real time-invariant, zero h0",
       {uniform({2, 4}, 0.5, 0.99), normal(s234)},
       [](TapeD& t, const std::vector<VarD>& x) {
         auto r = scan<real_op>(t, x[0], x[1]);
         return std::vector<VarD>{r.h, r.h_final};
       }},
      {"scan complex",
       {complex_decay(s234), normal({2, 3, 4, 2}), normal({2, 4, 2})},
       [](TapeD& t, const std::vector<VarD>& x) {
         auto r = scan<complex_op>(t, x[0], x[1], x[2]);
         return std::vector<VarD>{r.h, r.h_final};
       }},
      {"scan complex time-invariant",
       {complex_decay({2, 4}), normal({2, 3, 4, 2})},
       [](TapeD& t, const std::vector<VarD>& x) {
         auto r = scan<complex_op>(t, x[0], x[1]);
         return std::vector<VarD>{r.h, r.h_final};
       }},
      {"scan log",
       {uniform(s234, -1.0, -0.05), log_values(s234, -2.0, 3.0), log_values({2, 4}, -1.0, 1.0)},
       [](TapeD& t, const std::vector<VarD>& x) {
         auto r = scan<log_op>(t, x[0], x[1], x[2]);
         return std::vector<VarD>{log_to_real(t, r.h), log_to_real(t, r.h_final)};
       }},
      {"scan log time-invariant, large exponents",
       {uniform({2, 4}, -1.0, -0.05), log_values(s234, 20.0, 30.0)},
       [](TapeD& t, const std::vector<VarD>& x) {
         auto r = scan<log_op>(t, x[0], x[1]);
         // Compare h with h_final in ratio form so the magnitudes stay O(1).
         auto last = broadcast_to(t, reshape(t, r.h_final, Shape{2, 1, 4, 2}), Shape{2, 3, 4, 2});
         return std::vector<VarD>{log_ratio(t, r.h, last)};
       }},
      // complex and log-space values
      {"complex", {normal(s234), normal(s234)}, ONE(complex(t, x[0], x[1]))},
      {"make_log_value", {normal(s234), normal(s234)}, ONE(make_log_value(t, x[0], x[1]))},
      {"real", {normal({2, 3, 2})}, ONE(real(t, x[0]))},
      {"imag", {normal({2, 3, 2})}, ONE(imag(t, x[0]))},
      {"complex_mul broadcast", {normal({2, 3, 2}), normal({3, 2})}, ONE(complex_mul(t, x[0], x[1]))},
      {"complex_polar", {uniform(s234, 0.1, 1.0), normal(s234, 2.0)}, ONE(complex_polar(t, x[0], x[1]))},
      {"log_to_real", {log_values(s234, -1.0, 1.0)}, ONE(log_to_real(t, x[0]))},
      {"log_add",
       {log_values(s234, -2.0, 2.0), log_values(s234, -2.0, 2.0)},
       [](TapeD& t, const std::vector<VarD>& x) { return std::vector<VarD>{log_to_real(t, log_add(t, x[0], x[1]))}; }},
      {"log_add raw coordinates",
       {log_values(s234, -2.0, 2.0), log_values(s234, -2.0, 2.0)},
       ONE(log_add(t, x[0], x[1]))},
      {"log_ratio",
       {log_values(s234, -2.0, 2.0), log_values(s234, -2.0, 2.0)},
       [](TapeD& t, const std::vector<VarD>& x) {
         // keep denominators away from zero
         return std::vector<VarD>{
             log_ratio(t, x[0], make_log_value(t, add_scalar(t, square(t, real(t, x[1])), 0.5), imag(t, x[1])))};
       }},
  };
}
#undef ONE

// Worst |numeric − analytic| / max(1, |analytic|) over every input coordinate of one case.
double gradcheck(const gradcheck_case& c, std::uint64_t seed) {
  rng gen(seed);
  std::vector<ParamD> params;
  std::vector<VarD> inputs;
  for (const auto& make : c.inputs) {
    params.emplace_back(make(gen));
    inputs.push_back(params.back());
  }
  // Random output weights w: L = Σ_k ⟨w_k, out_k⟩.
  std::vector<TensorD> weights;
  {
    TapeD probe(grad_mode::off);
    for (const auto& o : c.build(probe, inputs)) weights.push_back(TensorD::randn(o.shape(), gen));
  }
  auto loss_value = [&]() {
    TapeD eval(grad_mode::off);
    const auto outs = c.build(eval, inputs);
    double l = 0;
    for (std::size_t k = 0; k < outs.size(); ++k) l += (as_array(outs[k].value()) * as_array(weights[k])).sum();
    return l;
  };
  TapeD tape;
  tape.set_checked(true);
  const auto outs = c.build(tape, inputs);
  REQUIRE(outs.size() == weights.size());
  // Seed all outputs through one backward by summing weighted outputs on the tape.
  VarD total;
  for (std::size_t k = 0; k < outs.size(); ++k) {
    auto term = sum_all(tape, mul(tape, outs[k], constant(weights[k])));
    total = total.defined() ? add(tape, total, term) : term;
  }
  tape.backward(total);
  double worst = 0;
  const double eps = 1e-6;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& value = params[i].value();
    const auto& grad = params[i].grad();
    REQUIRE(grad.defined());
    for (index_t j = 0; j < value.numel(); ++j) {
      double& x = value.data()[j];
      const double saved = x;
      x = saved + eps;
      const double up = loss_value();
      x = saved - eps;
      const double down = loss_value();
      x = saved;
      const double numeric = (up - down) / (2 * eps);
      const double analytic = grad.data()[j];
      const double err = std::abs(numeric - analytic) / std::max(1.0, std::abs(analytic));
      if (err > c.tolerance) {
        INFO(c.name << ": input " << i << " element " << j << " numeric " << numeric << " analytic " << analytic);
        CHECK(err <= c.tolerance);
      }
      worst = std::max(worst, err);
    }
  }
  return worst;
}

}  // namespace

TEST_CASE("every op's gradient matches central finite differences in double", "[autodiff][gradcheck]") {
  double worst = 0;
  std::string worst_name;
  std::uint64_t seed = 1000;
  for (const auto& c : cases()) {
    INFO("op case: " << c.name);
    for (int repeat = 0; repeat < 2; ++repeat) {
      const double err = gradcheck(c, seed++);
      if (err > worst) {
        worst = err;
        worst_name = c.name;
      }
    }
  }
  WARN("gradcheck: " << cases().size() << " cases, worst relative error " << worst << " (" << worst_name << ")");
  CHECK(worst <= 1e-6);
}

TEST_CASE("matmul and linear run on the execution tag's threads and leave the caller's setting", "[autodiff]") {
  // Products large enough for Eigen to split them: the thread count must not change a value.
  rng gen(21);
  const auto a = Tensor::randn({96, 160}, gen), b = Tensor::randn({160, 128}, gen), bias = Tensor::randn({128}, gen);
  const int before = omp_get_max_threads();
  std::vector<Tensor> values, grads;
  for (int threads : {1, 2, 3}) {
    Tape tape;
    Parameter pa(a.clone()), pb(b.clone()), pbias(bias.clone());
    const auto y = add(tape, matmul(tape, pa, pb, cpu{threads}), linear(tape, pa, pb, pbias, cpu{threads}));
    tape.backward(sum_all(tape, square(tape, y)));
    CHECK(omp_get_max_threads() == before);
    values.push_back(y.value());
    grads.push_back(pa.grad());
  }
  for (std::size_t i = 1; i < values.size(); ++i) {
    CHECK((as_array(values[i]) == as_array(values[0])).all());
    CHECK((as_array(grads[i]) == as_array(grads[0])).all());
  }
}
