// The CPU scan against the sequential scan and a double-precision reference, for every
// operator, layout, shape regime and thread count; backward against finite differences.
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>

#include "scan_test_util.hpp"

using namespace linrec;
using namespace linrec::test;

namespace {

struct scan_case {
  index_t batch, time, channels;
  bool bct;  // [B,C,T] layout instead of [B,T,C]
  decay_regime regime;
  bool with_h0;
  int threads;
};

std::string describe(const scan_case& c) {
  return "B=" + std::to_string(c.batch) + " T=" + std::to_string(c.time) + " C=" + std::to_string(c.channels) +
         (c.bct ? " [B,C,T]" : " [B,T,C]") + " regime=" + std::to_string(int(c.regime)) +
         (c.with_h0 ? " h0" : "") + " threads=" + std::to_string(c.threads);
}

// The case list every operator runs through: T ∈ {1, 2, 3, 17, 1000, 2^20}, odd channel
// counts, both layouts, both strategies of the parallel scan (many rows, and few rows long
// enough for the time-chunked path, with chunk counts that do not divide T).
std::vector<scan_case> forward_cases() {
  std::vector<scan_case> cases;
  for (index_t t : {1, 2, 3, 17, 1000})
    for (bool bct : {false, true}) {
      cases.push_back({1, t, 1, bct, decay_regime::typical, true, 2});
      cases.push_back({3, t, 7, bct, decay_regime::typical, true, 2});
      cases.push_back({2, t, 67, bct, decay_regime::near_one, false, 2});
    }
  for (bool bct : {false, true}) {
    cases.push_back({1, 1 << 20, 1, bct, decay_regime::near_one, true, 2});        // one long sequence
    cases.push_back({1, 100003, 3, bct, decay_regime::typical, true, 3});          // 3 threads, odd T
    cases.push_back({1, 40001, 69, bct, decay_regime::near_zero, true, 2});        // two lane blocks
    cases.push_back({5, 9001, 131, bct, decay_regime::typical, true, 2});          // many rows
    cases.push_back({2, 20001, 5, bct, decay_regime::near_one, false, 4});         // chunked, oversubscribed
  }
  return cases;
}

template <class Op>
struct scan_data {
  using A = typename Op::decay_type;
  using V = typename Op::value_type;
  using G = typename Op::grad_type;
  scan_shape shape;
  strides3 strides;
  std::vector<A> a;
  std::vector<V> b, h0;
  std::vector<G> dh, dh_final;

  scan_data(const scan_case& c, std::uint64_t seed)
      : shape{c.batch, c.time, c.channels},
        strides(c.bct ? strides3::bct(shape) : strides3::btc(shape)) {
    std::mt19937_64 rng(seed);
    const auto n = static_cast<std::size_t>(shape.elements());
    const auto state_n = static_cast<std::size_t>(shape.batch * shape.channels);
    a.resize(n);
    b.resize(n);
    dh.resize(n);
    for (auto& x : a) x = op_traits<Op>::decay(rng, c.regime);
    for (auto& x : b) x = op_traits<Op>::value(rng);
    for (auto& x : dh) x = op_traits<Op>::grad(rng);
    if (c.with_h0) {
      h0.resize(state_n);
      for (auto& x : h0) x = op_traits<Op>::value(rng);
    }
    dh_final.resize(state_n);
    for (auto& x : dh_final) x = op_traits<Op>::grad(rng);
  }
  const V* h0_ptr() const { return h0.empty() ? nullptr : h0.data(); }

  // Forward into (h, h_final) with the given backend call.
  template <class Run>
  std::pair<std::vector<V>, std::vector<V>> forward(Run run) const {
    std::vector<V> h(a.size()), h_final(static_cast<std::size_t>(shape.batch * shape.channels));
    run(scan_forward_args<Op>{shape, a.data(), strides, b.data(), strides, h.data(), strides, h0_ptr(), h_final.data()});
    return {h, h_final};
  }

  struct gradients {
    std::vector<typename Op::decay_grad_type> da;
    std::vector<G> db, dh0;
  };
  template <class Run>
  gradients backward(const std::vector<V>& h, Run run) const {
    gradients g{std::vector<typename Op::decay_grad_type>(a.size()), std::vector<G>(a.size()),
                std::vector<G>(static_cast<std::size_t>(shape.batch * shape.channels))};
    run(scan_backward_args<Op>{shape, a.data(), strides, h.data(), strides, h0_ptr(), dh.data(), strides,
                               dh_final.data(), g.da.data(), strides, g.db.data(), strides, g.dh0.data()});
    return g;
  }
};

// Float vs the double reference: rounding grows with the memory length of the recurrence,
// and in log space with the size of the exponents (|m| ≈ 100 carries ulp(100) ≈ 8e-6).
template <class Op>
double reference_tolerance(const scan_case& c) {
  const double scale = std::is_same_v<Op, log_op<float>> ? 10.0 : 1.0;
  if (c.regime == decay_regime::near_one && c.time > 1000) return 2e-4 * scale;
  return 2e-5 * scale;
}

template <class Op>
void check_case(const scan_case& c, std::uint64_t seed) {
  using RefOp = typename op_traits<Op>::reference_op;
  using RA = typename RefOp::decay_type;
  using RV = typename RefOp::value_type;
  INFO(describe(c));
  const scan_data<Op> data(c, seed);

  const auto [h_seq, final_seq] = data.forward([](const auto& p) { scan_forward_sequential(p); });
  const auto [h_par, final_par] = data.forward([&](const auto& p) { scan_forward_parallel(cpu{c.threads}, p); });

  // Double-precision reference on the same (converted) inputs.
  std::vector<RA> ref_a;
  std::vector<RV> ref_b, ref_h0, ref_h(data.a.size()), ref_final(final_seq.size());
  ref_a.reserve(data.a.size());
  ref_b.reserve(data.b.size());
  for (auto x : data.a) ref_a.push_back(op_traits<Op>::to_reference_decay(x));
  for (auto x : data.b) ref_b.push_back(op_traits<Op>::to_reference_value(x));
  for (auto x : data.h0) ref_h0.push_back(op_traits<Op>::to_reference_value(x));
  scan_forward_sequential(scan_forward_args<RefOp>{data.shape, ref_a.data(), data.strides, ref_b.data(), data.strides,
                                                   ref_h.data(), data.strides, ref_h0.empty() ? nullptr : ref_h0.data(),
                                                   ref_final.data()});
  const auto ref_h_flat = flatten_reference(ref_h);
  const double tol = reference_tolerance<Op>(c);
  CHECK(relative_error(flatten_as_reference<Op>(h_seq), ref_h_flat) <= tol);
  CHECK(relative_error(flatten_as_reference<Op>(h_par), ref_h_flat) <= tol);
  CHECK(relative_error(flatten_as_reference<Op>(final_par), flatten_reference(ref_final)) <= tol);
  CHECK(relative_error(flatten_as_reference<Op>(h_par), flatten_as_reference<Op>(h_seq)) <= tol);

  // Backward: parallel vs sequential vs the double reference.
  const auto g_seq = data.backward(h_seq, [](const auto& p) { scan_backward_sequential(p); });
  const auto g_par = data.backward(h_par, [&](const auto& p) { scan_backward_parallel(cpu{c.threads}, p); });
  std::vector<RV> ref_dh, ref_dh_final;
  ref_dh.reserve(data.dh.size());
  for (auto x : data.dh) ref_dh.push_back(op_traits<Op>::grad_to_reference(x));
  for (auto x : data.dh_final) ref_dh_final.push_back(op_traits<Op>::grad_to_reference(x));
  std::vector<RA> ref_da(data.a.size());
  std::vector<RV> ref_db(data.a.size()), ref_dh0(ref_dh_final.size());
  scan_backward_sequential(scan_backward_args<RefOp>{
      data.shape, ref_a.data(), data.strides, ref_h.data(), data.strides, ref_h0.empty() ? nullptr : ref_h0.data(),
      ref_dh.data(), data.strides, ref_dh_final.data(), ref_da.data(), data.strides, ref_db.data(), data.strides,
      ref_dh0.data()});
  std::vector<RA> expected_da;
  expected_da.reserve(ref_da.size());
  for (std::size_t i = 0; i < ref_da.size(); ++i)
    expected_da.push_back(op_traits<Op>::reference_decay_grad(ref_da[i], data.a[i]));
  auto grads_as_reference = [](const auto& grads) {
    std::vector<RV> out;
    out.reserve(grads.size());
    for (auto x : grads) out.push_back(op_traits<Op>::grad_to_reference(x));
    return flatten_reference(out);
  };
  auto decay_grads_as_reference = [](const auto& grads) {
    std::vector<RA> out;
    out.reserve(grads.size());
    for (auto x : grads) out.push_back(op_traits<Op>::decay_grad_to_reference(x));
    return flatten_reference(out);
  };
  for (const auto* g : {&g_seq, &g_par}) {
    CHECK(relative_error(grads_as_reference(g->db), flatten_reference(ref_db)) <= tol);
    CHECK(relative_error(decay_grads_as_reference(g->da), flatten_reference(expected_da)) <= tol);
    CHECK(relative_error(grads_as_reference(g->dh0), flatten_reference(ref_dh0)) <= tol);
  }
}

}  // namespace

TEMPLATE_TEST_CASE("scan matches the sequential scan and the double reference", "[scan]", real_op<float>,
                   complex_op<float>, log_op<float>, real_op<double>) {
  std::uint64_t seed = 1;
  for (const auto& c : forward_cases()) check_case<TestType>(c, seed++);
}

TEST_CASE("log-space scan survives exponents where float exp overflows", "[scan]") {
  // k = 100 everywhere: e^100 overflows float, the log-space sum must stay finite and exact.
  const scan_shape shape{1, 257, 3};
  std::vector<float> log_decay(static_cast<std::size_t>(shape.elements()), -0.5f);
  std::vector<log_value<float>> b(log_decay.size()), h(log_decay.size());
  std::mt19937_64 rng(7);
  for (auto& x : b) x = {float(std::normal_distribution<double>(0, 1)(rng)), 100.0f};
  scan_forward(cpu{}, shape, log_decay.data(), b.data(), h.data());
  double expected = 0;  // channel 0 in plain double arithmetic, scaled by e^-100
  for (index_t t = 0; t < shape.time; ++t) {
    expected = std::exp(-0.5) * expected + b[static_cast<std::size_t>(t * shape.channels)].scale;
    const auto got = h[static_cast<std::size_t>(t * shape.channels)];
    REQUIRE(std::isfinite(got.scale));
    CHECK(double(got.scale) * std::exp(double(got.exponent) - 100.0) == Approx(expected).epsilon(1e-5).margin(1e-6));
  }
}

TEST_CASE("time-invariant decay via a zero time stride", "[scan]") {
  const scan_shape shape{2, 1001, 5};
  std::mt19937_64 rng(11);
  std::vector<float> decay(static_cast<std::size_t>(shape.batch * shape.channels)),
      full_decay(static_cast<std::size_t>(shape.elements())), b(full_decay.size()), h1(b.size()), h2(b.size());
  for (auto& x : decay) x = random_decay<float>(rng, decay_regime::typical);
  for (auto& x : b) x = float(std::normal_distribution<double>(0, 1)(rng));
  for (index_t i = 0; i < shape.batch; ++i)
    for (index_t t = 0; t < shape.time; ++t)
      for (index_t c = 0; c < shape.channels; ++c)
        full_decay[static_cast<std::size_t>((i * shape.time + t) * shape.channels + c)] =
            decay[static_cast<std::size_t>(i * shape.channels + c)];
  const auto btc = strides3::btc(shape);
  scan_forward(cpu{}, scan_forward_args<real_op<float>>{shape, decay.data(), strides3::time_invariant(shape), b.data(),
                                                        btc, h1.data(), btc});
  scan_forward(cpu{}, shape, full_decay.data(), b.data(), h2.data());
  CHECK(h1 == h2);
}

TEMPLATE_TEST_CASE("segments with the state carried equal one call", "[scan]", real_op<float>, complex_op<float>,
                   log_op<float>) {
  using Op = TestType;
  using V = typename Op::value_type;
  for (int threads : {1, 2}) {
    const scan_case whole{2, 70001, 3, false, decay_regime::near_one, true, threads};
    const scan_data<Op> data(whole, 99);
    const auto [h_whole, final_whole] = data.forward([&](const auto& p) { scan_forward(cpu{threads}, p); });
    std::vector<V> h_segments(h_whole.size()), state = data.h0;
    const index_t cuts[] = {0, 1, 17, 40000, 70001};
    for (int s = 0; s + 1 < 5; ++s) {
      const scan_shape seg{whole.batch, cuts[s + 1] - cuts[s], whole.channels};
      const strides3 st = data.strides;  // the full tensor's strides: segments are views into it
      const std::size_t offset = static_cast<std::size_t>(cuts[s] * st.time);
      std::vector<V> next_state(state.size());
      scan_forward(cpu{threads}, scan_forward_args<Op>{seg, data.a.data() + offset, st, data.b.data() + offset, st,
                                                       h_segments.data() + offset, st, state.data(),
                                                       next_state.data()});
      state = next_state;
    }
    // The chunked algorithm groups products differently per segment: equal up to rounding.
    CHECK(relative_error(flatten_as_reference<Op>(h_segments), flatten_as_reference<Op>(h_whole)) <= 1e-5);
    CHECK(relative_error(flatten_as_reference<Op>(state), flatten_as_reference<Op>(final_whole)) <= 1e-5);
  }
}
