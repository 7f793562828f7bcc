// The CPU scan: its sequential and parallel backends through the shared conformance cases
// (scan_conformance.hpp: every operator, both layouts, T from 1 to 2^20, decay regimes, thread
// counts, forward and backward against the double reference), and the CPU-only checks below.
// Backward against finite differences: test_scan_gradcheck.cpp.
#include "scan_conformance.hpp"  // before anything that includes Catch: it needs the listener interfaces

using namespace linrec;
using namespace linrec::test;

CATCH_REGISTER_LISTENER(conformance_error_report)

namespace {

// The CPU's backends: the sequential scan, and the parallel scan with the case's thread count.
const auto sequential =
    scan_backend{"sequential", [](const scan_case&, const auto& args) { scan_forward_sequential(args); },
                 [](const scan_case&, const auto& args) { scan_backward_sequential(args); }};
const auto parallel = scan_backend{
    "parallel", [](const scan_case& c, const auto& args) { scan_forward_parallel(cpu{c.cpu_threads}, args); },
    [](const scan_case& c, const auto& args) { scan_backward_parallel(cpu{c.cpu_threads}, args); }};

}  // namespace

TEMPLATE_TEST_CASE("scan matches the sequential scan and the double reference", "[scan]", real_op<float>,
                   complex_op<float>, log_op<float>, real_op<double>) {
  for (const scan_case& c : conformance_cases()) check_conformance<TestType>(c, sequential, parallel);
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
    const scan_case whole{2, 70001, 3, false, decay_regime::near_one, true, threads, false, /*seed=*/99};
    const scan_inputs<Op> data(whole);
    std::vector<V> h_whole(data.elements()), final_whole(data.states());
    scan_forward(cpu{threads},
                 scan_forward_args<Op>{data.shape, data.a.data(), data.strides, data.b.data(), data.strides,
                                       h_whole.data(), data.strides, data.h0_ptr(), final_whole.data()});
    std::vector<V> h_segments(h_whole.size()), state = data.h0;
    const index_t cuts[] = {0, 1, 17, 40000, 70001};
    for (int s = 0; s + 1 < 5; ++s) {
      const scan_shape seg{whole.batch, cuts[s + 1] - cuts[s], whole.channels};
      const strides3 st = data.strides;  // the full tensor's strides: segments are views into it
      const std::size_t offset = static_cast<std::size_t>(cuts[s] * st.time);
      std::vector<V> next_state(state.size());
      scan_forward(cpu{threads},
                   scan_forward_args<Op>{seg, data.a.data() + offset, st, data.b.data() + offset, st,
                                         h_segments.data() + offset, st, state.data(), next_state.data()});
      state = next_state;
    }
    // The chunked algorithm groups products differently per segment: equal up to rounding.
    CHECK(relative_error(flatten_as_reference<Op>(h_segments), flatten_as_reference<Op>(h_whole)) <= 1e-5);
    CHECK(relative_error(flatten_as_reference<Op>(state), flatten_as_reference<Op>(final_whole)) <= 1e-5);
  }
}

TEMPLATE_TEST_CASE("streaming row stores copy every element at every alignment", "[scan]", float, double,
                   std::complex<float>, std::complex<double>) {
  // The large-output path of the parallel scan writes rows through this (peeled head, aligned
  // streaming body, tail); the conformance cases above reach it through their shapes over 32 MiB
  // (complex and double at (5, 9001, 131)).
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal(0, 1);
  std::vector<TestType> src(96), dst(96);
  for (auto& x : src) x = TestType(normal(rng));
  for (index_t offset = 0; offset < 17; ++offset)
    for (index_t n : {0, 1, 3, 15, 16, 17, 33, 64, 79}) {
      std::fill(dst.begin(), dst.end(), TestType(-7));
      detail::store_row_streaming(dst.data() + offset, src.data(), n);
      detail::streaming_store_fence();
      for (index_t i = 0; i < 96; ++i) {
        const bool written = i >= offset && i < offset + n;
        INFO("offset " << offset << ", n " << n << ", i " << i);
        CHECK(dst[std::size_t(i)] == (written ? src[std::size_t(i - offset)] : TestType(-7)));
      }
    }
}
