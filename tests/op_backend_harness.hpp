#pragma once
// One harness for every backend of the tape's ops and layers (in the manner of ggml's
// test-backend-ops): each case builds a small graph from random inputs, and a backend under
// test (a device, a precision) must reproduce a reference backend's outputs and the gradients
// of every input and parameter. The loss behind the gradients is Σ_k Σ out_k ⊙ R_k with random
// R_k, so every output's gradient is a random tensor, never ones.
//
// Cases are generic lambdas over the tape's value type; test_ops_backend.cpp runs them as fp32
// against fp64 on the CPU, test_ops_cuda.cu as CUDA fp32 against CPU fp32.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "linrec/autodiff/autodiff.hpp"
#include "linrec/layers/rwkv4.hpp"
#include "linrec/layers/rwkv6.hpp"
#include "linrec/models/rwkv_lm.hpp"

namespace linrec::test {

// What a case hands back: its outputs and the parameters it made (their gradients are compared
// too; a layer's weights, for instance).
template <class T>
struct case_outputs {
  std::vector<basic_var<T>> outputs;
  std::vector<basic_parameter<T>> parameters;
};

struct input_spec {
  Shape shape;
  double lo = -1, hi = 1;  // uniform draws
};

struct op_case {
  std::string name;
  std::vector<input_spec> inputs;
  std::function<case_outputs<float>(basic_tape<float>&, const std::vector<basic_var<float>>&)> run_float;
  std::function<case_outputs<double>(basic_tape<double>&, const std::vector<basic_var<double>>&)> run_double;
  double tolerance = 1e-5;  // relative to the reference's largest magnitude, per tensor
};

template <class Fn>
op_case make_case(std::string name, std::vector<input_spec> inputs, Fn fn, double tolerance = 1e-5) {
  return {std::move(name), std::move(inputs),
          [fn](basic_tape<float>& t, const std::vector<basic_var<float>>& in) { return fn(t, in); },
          [fn](basic_tape<double>& t, const std::vector<basic_var<double>>& in) { return fn(t, in); }, tolerance};
}

// The value type of a tape (inside the generic lambdas).
template <class T>
T value_type_of(const basic_tape<T>&);
#define LINREC_CASE_TYPE(tape) using T = decltype(::linrec::test::value_type_of(tape))

// Moves a case's own parameters to the device of its first input.
template <class T>
void follow_inputs(const std::vector<basic_parameter<T>>& params, const std::vector<basic_var<T>>& in) {
  move_parameters(params, in.at(0).value().where());
}

// Integer inputs of the cases (ids, targets), fixed by a seed.
inline std::vector<std::int32_t> random_ids(std::size_t count, std::int32_t vocab, std::uint64_t seed,
                                            bool some_ignored = false) {
  rng gen(seed);
  std::vector<std::int32_t> ids(count);
  for (auto& id : ids) id = std::int32_t(gen.uniform(0, double(vocab))) % vocab;
  if (some_ignored)
    for (std::size_t i = 0; i < count; i += 5) ids[i] = -1;
  return ids;
}

template <class T>
case_outputs<T> outputs(std::vector<basic_var<T>> outs) {
  return {std::move(outs), {}};
}

inline std::vector<op_case> op_cases() {
  std::vector<op_case> cases;
  const Shape x3{3, 5, 7};
#define LINREC_UNARY_CASE(op, lo, hi)                                                                   \
  cases.push_back(make_case(#op, {{x3, lo, hi}}, [](auto& tape, const auto& in) {                       \
    return outputs(std::vector{op(tape, in[0]), add(tape, op(tape, in[0]), in[0])}); /* accumulation */ \
  }));
  LINREC_UNARY_CASE(exp, -2, 2)
  LINREC_UNARY_CASE(log, 0.5, 2)
  LINREC_UNARY_CASE(sqrt, 0.5, 2)
  LINREC_UNARY_CASE(square, -2, 2)
  LINREC_UNARY_CASE(sigmoid, -3, 3)
  LINREC_UNARY_CASE(tanh, -3, 3)
  LINREC_UNARY_CASE(silu, -3, 3)
  LINREC_UNARY_CASE(relu, -1, 1)
  LINREC_UNARY_CASE(softplus, -3, 3)
  LINREC_UNARY_CASE(gelu, -3, 3)
  LINREC_UNARY_CASE(sin, -3, 3)
  LINREC_UNARY_CASE(cos, -3, 3)
#undef LINREC_UNARY_CASE
  // Binary ops over every kind of broadcast: equal shapes, a per-channel operand on either side,
  // both operands stretched, a scalar.
  const std::vector<std::pair<Shape, Shape>> pairs = {{{4, 5, 6}, {4, 5, 6}}, {{4, 5, 6}, {6}},
                                                      {{6}, {4, 5, 6}},       {{4, 1, 6}, {4, 5, 1}},
                                                      {{2, 3, 4, 5}, {}},     {{3, 1, 5}, {2, 1, 4, 1}}};
  for (const auto& [sa, sb] : pairs) {
    std::ostringstream shapes;
    shapes << sa << " " << sb;
    cases.push_back(make_case("add " + shapes.str(), {{sa}, {sb}}, [](auto& tape, const auto& in) {
      return outputs(std::vector{add(tape, in[0], in[1])});
    }));
    cases.push_back(make_case("sub " + shapes.str(), {{sa}, {sb}}, [](auto& tape, const auto& in) {
      return outputs(std::vector{sub(tape, in[0], in[1])});
    }));
    cases.push_back(make_case("mul " + shapes.str(), {{sa}, {sb}}, [](auto& tape, const auto& in) {
      return outputs(std::vector{mul(tape, in[0], in[1])});
    }));
    cases.push_back(make_case("div " + shapes.str(), {{sa}, {sb, 0.5, 2}}, [](auto& tape, const auto& in) {
      return outputs(std::vector{div(tape, in[0], in[1])});
    }));
  }
  cases.push_back(make_case("affine, scale, one_minus, lerp", {{x3}, {x3}, {{7}}}, [](auto& tape, const auto& in) {
    LINREC_CASE_TYPE(tape);
    return outputs(std::vector{affine(tape, in[0], T(0.75), T(-0.5)), scale(tape, in[1], T(3)), one_minus(tape, in[0]),
                               lerp(tape, in[0], in[1], in[2])});
  }));
  // Reductions.
  cases.push_back(
      make_case("sum, mean over each axis; sum_all, mean_all", {{{3, 4, 5}}}, [](auto& tape, const auto& in) {
        return outputs(std::vector{sum(tape, in[0], 0), sum(tape, in[0], 1, true), mean(tape, in[0], 2),
                                   sum_all(tape, in[0]), mean_all(tape, in[0])});
      }));
  // Matrix products: folded, batched, transposed, a shared right operand under a transposed left.
  struct product {
    Shape a, b;
    bool ta, tb;
  };
  for (const product& p : std::vector<product>{{{3, 5, 7}, {7, 4}, false, false},
                                               {{2, 3, 5, 7}, {2, 3, 7, 4}, false, false},
                                               {{2, 3, 7, 5}, {2, 3, 7, 4}, true, false},
                                               {{2, 3, 5, 7}, {2, 3, 4, 7}, false, true},
                                               {{2, 3, 7, 5}, {2, 3, 4, 7}, true, true},
                                               {{3, 7, 5}, {7, 4}, true, false},
                                               {{3, 5, 7}, {4, 7}, false, true},
                                               {{1, 33}, {33, 65}, false, false}}) {
    std::ostringstream name;
    name << "matmul " << p.a << (p.ta ? "T" : "") << " " << p.b << (p.tb ? "T" : "");
    cases.push_back(make_case(name.str(), {{p.a}, {p.b}}, [p](auto& tape, const auto& in) {
      return outputs(std::vector{matmul(tape, in[0], in[1], p.ta, p.tb)});
    }));
  }
  cases.push_back(make_case("matmul, a weight used twice (accumulated gradient)", {{{4, 6}}, {{6, 6}}},
                            [](auto& tape, const auto& in) {
                              return outputs(std::vector{matmul(tape, matmul(tape, in[0], in[1]), in[1])});
                            }));
  // Norms.
  cases.push_back(make_case("layer_norm", {{{3, 5, 40}}, {{40}}, {{40}}}, [](auto& tape, const auto& in) {
    return outputs(std::vector{layer_norm(tape, in[0], in[1], in[2])});
  }));
  cases.push_back(
      make_case("group_norm, 4 groups of 16", {{{3, 5, 64}, -2, 3}, {{64}}, {{64}}}, [](auto& tape, const auto& in) {
        return outputs(std::vector{group_norm(tape, in[0], 4, in[1], in[2], 6.4e-4)});
      }));
  cases.push_back(make_case("group_norm without gamma and beta", {{{7, 24}}}, [](auto& tape, const auto& in) {
    LINREC_CASE_TYPE(tape);
    return outputs(std::vector{group_norm(tape, in[0], 3, basic_var<T>{}, basic_var<T>{})});
  }));
  // Token-level ops.
  cases.push_back(make_case("embedding (repeated ids)", {{{11, 6}}}, [](auto& tape, const auto& in) {
    const auto ids = random_ids(2 * 9, 11, 5);
    return outputs(std::vector{embedding(tape, in[0], std::span<const std::int32_t>(ids), Shape{2, 9})});
  }));
  cases.push_back(
      make_case("softmax_cross_entropy (some targets ignored)", {{{5, 7, 13}, -3, 3}}, [](auto& tape, const auto& in) {
        const auto targets = random_ids(35, 13, 9, true);
        return outputs(std::vector{softmax_cross_entropy(tape, in[0], std::span<const std::int32_t>(targets))});
      }));
  // Data movement.
  cases.push_back(make_case("narrow on every axis, reshape", {{{4, 5, 6}}}, [](auto& tape, const auto& in) {
    return outputs(std::vector{narrow(tape, in[0], 0, 1, 2), narrow(tape, in[0], 1, 4, 1), narrow(tape, in[0], 2, 2, 3),
                               reshape(tape, in[0], Shape{20, 6})});
  }));
  cases.push_back(make_case("concat, transpose, broadcast_to, linear", {{{2, 3, 4}}, {{2, 5, 4}}, {{4, 6}}, {{6}}},
                            [](auto& tape, const auto& in) {
                              LINREC_CASE_TYPE(tape);
                              using V = basic_var<T>;
                              return outputs(std::vector{concat(tape, std::vector<V>{in[0], in[1], in[0]}, 1),
                                                         transpose(tape, in[1], 0, 2), transpose(tape, in[0], 1, 2),
                                                         broadcast_to(tape, in[3], Shape{3, 2, 6}),
                                                         linear(tape, in[1], in[2], in[3])});
                            }));
  cases.push_back(
      make_case("token_shift with and without prev", {{{3, 6, 5}}, {{3, 5}}}, [](auto& tape, const auto& in) {
        return outputs(std::vector{token_shift(tape, in[0], in[1]), token_shift(tape, in[0])});
      }));
  // RWKV-6's WKV: T = 1, odd T, T past several chunks; with and without an initial state.
  for (const index_t time : {1, 7, 33, 70}) {
    for (const index_t head_size : {8, 16}) {
      const index_t heads = 2, c = heads * head_size;
      const Shape xs{2, time, c}, ss{2, heads, head_size, head_size};
      std::ostringstream name;
      name << "wkv6 " << xs << " heads of " << head_size;
      cases.push_back(make_case(name.str(), {{xs}, {xs, -0.5, 0.5}, {xs}, {xs, -3, 0.5}, {{heads, head_size}}, {ss}},
                                [](auto& tape, const auto& in) {
                                  auto [y, state] = layers::wkv6(tape, in[0], in[1], in[2], in[3], in[4], in[5]);
                                  auto [y0, state0] = layers::wkv6(tape, in[0], in[1], in[2], in[3], in[4]);
                                  return outputs(std::vector{y, state, y0, state0});
                                }));
    }
  }
  // RWKV-4's WKV: its log-space states compared as the numbers they stand for (scale · e^exponent;
  // two backends may keep one number at different exponents).
  for (const index_t time : {1, 8, 41}) {
    const Shape ks{2, time, 6}, ss{2, 6, 2};
    std::ostringstream name;
    name << "wkv4 " << ks;
    cases.push_back(
        make_case(name.str(), {{{6}}, {{6}}, {ks, -2, 2}, {ks}, {ss}, {ss, 0.5, 1.5}}, [](auto& tape, const auto& in) {
          const auto real = [&](const auto& pair) {
            return mul(tape, narrow(tape, pair, 2, 0, 1), exp(tape, narrow(tape, pair, 2, 1, 1)));
          };
          auto with = layers::wkv4(tape, in[0], in[1], in[2], in[3], in[4], in[5]);
          auto without = layers::wkv4(tape, in[0], in[1], in[2], in[3]);
          return outputs(
              std::vector{with.y, real(with.num_final), real(with.den_final), without.y, real(without.num_final)});
        }));
  }
  // Layers and the model, with every parameter's gradient.
  cases.push_back(make_case(
      "rwkv6 time-mix and channel-mix from a carried state", {{{2, 9, 32}}, {{2, 32}}, {{2, 2, 16, 16}}},
      [](auto& tape, const auto& in) {
        LINREC_CASE_TYPE(tape);
        rng gen(3);
        const layers::rwkv_config cfg{.dim = 32, .layer = 1, .layers = 2, .head_size = 16};
        layers::rwkv6_time_mix<T> att(cfg, gen);
        layers::rwkv6_channel_mix<T> ffn(cfg, gen);
        case_outputs<T> out;
        out.parameters = att.parameters();
        for (const auto& p : ffn.parameters()) out.parameters.push_back(p);
        // RWKV-LM's zero-initialised LoRA factors would hide their own gradients.
        rng fill(4);
        for (const auto& p : out.parameters) p.value() = basic_tensor<T>::rand(p.value().shape(), fill, -0.3, 0.3);
        follow_inputs(out.parameters, in);
        auto [y, state] = att.forward(tape, in[0], {in[1], in[2]});
        auto [z, cm_state] = ffn.forward(tape, y, {in[1]});
        out.outputs = {y, state.wkv, state.prev_x, z};
        return out;
      },
      1e-4));
  cases.push_back(make_case("rwkv4 time-mix and channel-mix", {{{2, 9, 16}}}, [](auto& tape, const auto& in) {
    LINREC_CASE_TYPE(tape);
    rng gen(5);
    const layers::rwkv_config cfg{.dim = 16, .layer = 0, .layers = 2};
    layers::rwkv4_time_mix<T> att(cfg, gen);
    layers::rwkv4_channel_mix<T> ffn(cfg, gen);
    case_outputs<T> out;
    out.parameters = att.parameters();
    for (const auto& p : ffn.parameters()) out.parameters.push_back(p);
    follow_inputs(out.parameters, in);
    auto [y, state] = att.forward(tape, in[0], {});
    auto [z, cm_state] = ffn.forward(tape, y, {});
    out.outputs = {y, z, state.prev_x};
    return out;
  }));
  // The whole model: RWKV-4 and RWKV-6, every parameter's gradient.
  struct lm {
    models::rwkv_lm_config config;
    std::uint64_t seed;
  };
  for (const lm& m : {lm{{.version = 4, .vocab = 19, .dim = 16, .layers = 2}, 12},
                      lm{{.version = 6, .vocab = 19, .dim = 32, .layers = 2, .head_size = 16}, 11}}) {
    cases.push_back(make_case(
        "rwkv_lm v" + std::to_string(m.config.version) + " loss (2 layers)", {{{1}}}, [m](auto& tape, const auto& in) {
          LINREC_CASE_TYPE(tape);
          rng gen(m.seed);
          models::rwkv_lm<T> model(m.config, gen);
          case_outputs<T> out;
          out.parameters = model.parameters();
          follow_inputs(out.parameters, in);
          const auto ids = random_ids(3 * 11, 19, m.seed), targets = random_ids(3 * 11, 19, m.seed + 1);
          auto [loss, state] = model.loss(tape, ids, targets, 3, 11, {});
          out.outputs = {loss, mul(tape, loss, in[0])};
          return out;
        }));
  }
  return cases;
}

// ---- the runner ------------------------------------------------------------------------------

struct case_result {
  std::vector<std::vector<double>> outputs, gradients;  // gradients: inputs, then parameters
  std::vector<std::string> names;                       // of the gradients
};

template <class T>
std::vector<double> to_doubles(const basic_tensor<T>& t, index_t count) {
  std::vector<double> out(static_cast<std::size_t>(count), 0.0);
  if (!t.defined()) return out;
  const basic_tensor<T> host = t.to(cpu_device);
  for (index_t i = 0; i < count; ++i) out[std::size_t(i)] = double(host.data()[i]);
  return out;
}

// Runs case c in precision T on `dev` with the given input values and output weights (empty:
// the first run, which reports the output shapes through `shapes`).
template <class T>
case_result run_case(const op_case& c, device dev, const std::vector<std::vector<double>>& inputs,
                     const std::vector<std::vector<double>>& weights, std::vector<Shape>* shapes = nullptr) {
  std::vector<basic_var<T>> vars;
  std::vector<basic_parameter<T>> leaves;
  for (std::size_t i = 0; i < c.inputs.size(); ++i) {
    std::vector<T> values(inputs[i].begin(), inputs[i].end());
    basic_parameter<T> p(basic_tensor<T>::from_data(c.inputs[i].shape, values, dev), "input" + std::to_string(i));
    leaves.push_back(p);
    vars.push_back(p);
  }
  basic_tape<T> tape;
  case_outputs<T> out;
  if constexpr (std::is_same_v<T, float>)
    out = c.run_float(tape, vars);
  else
    out = c.run_double(tape, vars);
  case_result result;
  basic_var<T> loss;
  for (std::size_t k = 0; k < out.outputs.size(); ++k) {
    const auto& o = out.outputs[k];
    result.outputs.push_back(to_doubles(o.value(), o.value().numel()));
    if (shapes) shapes->push_back(o.shape());
    if (weights.empty()) continue;
    std::vector<T> w(weights[k].begin(), weights[k].end());
    const auto term = sum_all(tape, mul(tape, o, constant(basic_tensor<T>::from_data(o.shape(), w, dev))));
    loss = loss.defined() ? add(tape, loss, term) : term;
  }
  if (!loss.defined()) return result;
  tape.backward(loss);
  for (const auto& p : leaves) {
    result.gradients.push_back(to_doubles(p.grad(), p.value().numel()));
    result.names.push_back(p.name());
  }
  for (const auto& p : out.parameters) {
    result.gradients.push_back(to_doubles(p.grad(), p.value().numel()));
    result.names.push_back(p.name());
  }
  return result;
}

// max |a − b| / max |b| (b the reference; a tensor of zeros compares absolutely).
inline double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    err = std::max(err, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return scale > 0 ? err / scale : err;
}

struct case_report {
  std::string what;  // "<case>: output k" or "<case>: gradient of <name>"
  double error = 0;
  double tolerance = 0;
  bool finite = true;
};

// Runs one case on the reference (precision R on the CPU) and on the backend under test
// (precision U on `dev`), returning one report per output and gradient.
template <class R, class U>
std::vector<case_report> compare_case(const op_case& c, device dev, std::uint64_t seed) {
  rng gen(seed);
  std::vector<std::vector<double>> inputs;
  for (const auto& spec : c.inputs) {
    std::vector<double> v(static_cast<std::size_t>(spec.shape.numel()));
    for (auto& x : v) x = double(float(gen.uniform(spec.lo, spec.hi)));  // exact in both precisions
    inputs.push_back(std::move(v));
  }
  std::vector<Shape> shapes;
  run_case<R>(c, cpu_device, inputs, {}, &shapes);
  std::vector<std::vector<double>> weights;
  for (const auto& s : shapes) {
    std::vector<double> w(static_cast<std::size_t>(s.numel()));
    for (auto& x : w) x = double(float(gen.uniform(-1, 1)));
    weights.push_back(std::move(w));
  }
  const case_result ref = run_case<R>(c, cpu_device, inputs, weights);
  const case_result got = run_case<U>(c, dev, inputs, weights);
  std::vector<case_report> reports;
  const auto report = [&](std::string what, const std::vector<double>& a, const std::vector<double>& b) {
    bool finite = true;
    for (double x : a) finite = finite && std::isfinite(x);
    reports.push_back({c.name + ": " + what, relative_error(a, b), c.tolerance, finite});
  };
  for (std::size_t k = 0; k < ref.outputs.size(); ++k)
    report("output " + std::to_string(k), got.outputs.at(k), ref.outputs[k]);
  for (std::size_t k = 0; k < ref.gradients.size(); ++k)
    report("gradient of " + ref.names[k], got.gradients.at(k), ref.gradients[k]);
  return reports;
}

// Every case (or those whose name contains `filter`) on the backend under test against the
// reference, each output and gradient within the case's tolerance; prints the largest error.
// Returns the number of tensors compared.
template <class R, class U>
std::size_t check_all_cases(device dev, const char* label, const char* filter = nullptr) {
  std::uint64_t seed = 100;
  double worst = 0;
  std::string worst_what;
  std::size_t compared = 0;
  for (const auto& c : op_cases()) {
    ++seed;
    if (filter && c.name.find(filter) == std::string::npos) continue;
    for (const auto& r : compare_case<R, U>(c, dev, seed)) {
      INFO(r.what << ": relative error " << r.error);
      CHECK(r.finite);
      CHECK(r.error <= r.tolerance);
      ++compared;
      if (r.error > worst) {
        worst = r.error;
        worst_what = r.what;
      }
    }
  }
  std::printf("backend harness (%s): %zu tensors compared, largest relative error %.3g (%s)\n", label, compared, worst,
              worst_what.c_str());
  return compared;
}

}  // namespace linrec::test
