// The CUDA scan: its three algorithms (sequential, parallel, automatic) as backends of the
// shared conformance cases (scan_conformance.hpp: every operator, both layouts, T from 1 to
// 2^20, h0/h_final, dh_final/dh0 against the double reference) plus shapes that reach every
// tile of the CUDA dispatcher; channel tiles of each width, also forced; a time-invariant
// decay; segments with the state carried; streams and the scratch kept per stream; host
// pointers and CUDA failures as linrec::Error.
// Without a GPU the program prints why and exits 77, which ctest reports as skipped.
#define EIGEN_NO_CUDA
#define CATCH_CONFIG_RUNNER
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "cuda_test_util.cuh"
#include "linrec/scan/cuda.cuh"
#include "scan_conformance.hpp"

using namespace linrec;
using namespace linrec::test;

CATCH_REGISTER_LISTENER(conformance_error_report)

// Hopper gets its own policy; devices older than every policy get the oldest.
static_assert(std::is_same_v<detail::cuda_scan::policy_for<900, detail::cuda_scan::default_policies>::type,
                             detail::cuda_scan::policy_sm90>);
static_assert(std::is_same_v<detail::cuda_scan::policy_for<700, detail::cuda_scan::default_policies>::type,
                             detail::cuda_scan::policy_sm90>);

namespace {

// RAII device array; contents start as NaN bytes (0xFF) so unwritten outputs never pass.
template <class T>
class device_array {
 public:
  explicit device_array(std::size_t n) : n_(n) {
    LINREC_CUDA_CHECK(cudaMalloc(&ptr_, std::max<std::size_t>(1, n) * sizeof(T)));
    poison();
  }
  // n values copied from host (none when n is 0).
  device_array(const T* host, std::size_t n) : device_array(n) {
    if (n > 0) LINREC_CUDA_CHECK(cudaMemcpy(ptr_, host, n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  explicit device_array(const std::vector<T>& host) : device_array(host.data(), host.size()) {}
  device_array(const device_array&) = delete;
  device_array& operator=(const device_array&) = delete;
  ~device_array() { cudaFree(ptr_); }
  void poison() const { LINREC_CUDA_CHECK(cudaMemset(ptr_, 0xFF, std::max<std::size_t>(1, n_) * sizeof(T))); }
  T* get() const { return ptr_; }
  void download_to(T* host) const {
    LINREC_CUDA_CHECK(cudaDeviceSynchronize());
    LINREC_CUDA_CHECK(cudaMemcpy(host, ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    download_to(host.data());
    return host;
  }

 private:
  T* ptr_ = nullptr;
  std::size_t n_;
};

// The CUDA side of a conformance backend: copies the harness's host tensors to the device
// (outputs start as NaN there), runs `launch` on device arguments and copies the outputs back.
// The harness's tensors are dense: shape.elements() values, states batch × channels.
template <class Op, class Launch>
void on_device(const scan_forward_args<Op>& host, Launch launch) {
  using A = typename Op::decay_type;
  using V = typename Op::value_type;
  const auto n = static_cast<std::size_t>(host.shape.elements());
  const auto states = static_cast<std::size_t>(host.shape.batch * host.shape.channels);
  const device_array<A> a(host.a, n);
  const device_array<V> b(host.b, n), h(n), h0(host.h0, host.h0 ? states : 0), h_final(states);
  scan_forward_args<Op> args = host;
  args.a = a.get();
  args.b = b.get();
  args.h = h.get();
  args.h0 = host.h0 ? h0.get() : nullptr;
  args.h_final = host.h_final ? h_final.get() : nullptr;
  launch(args);
  h.download_to(host.h);
  if (host.h_final) h_final.download_to(host.h_final);
}

template <class Op, class Launch>
void on_device(const scan_backward_args<Op>& host, Launch launch) {
  using A = typename Op::decay_type;
  using V = typename Op::value_type;
  using G = typename Op::grad_type;
  using DA = typename Op::decay_grad_type;
  const auto n = static_cast<std::size_t>(host.shape.elements());
  const auto states = static_cast<std::size_t>(host.shape.batch * host.shape.channels);
  const device_array<A> a(host.a, n);
  const device_array<V> h(host.h, n), h0(host.h0, host.h0 ? states : 0);
  const device_array<G> dh(host.dh, n), dh_final(host.dh_final, host.dh_final ? states : 0), db(n), dh0(states);
  const device_array<DA> da(n);
  scan_backward_args<Op> args = host;
  args.a = a.get();
  args.h = h.get();
  args.h0 = host.h0 ? h0.get() : nullptr;
  args.dh = dh.get();
  args.dh_final = host.dh_final ? dh_final.get() : nullptr;
  args.da = da.get();
  args.db = db.get();
  args.dh0 = host.dh0 ? dh0.get() : nullptr;
  launch(args);
  da.download_to(host.da);
  db.download_to(host.db);
  if (host.dh0) dh0.download_to(host.dh0);
}

// One backend per scan_algorithm, through the public entry points.
auto cuda_backend(const char* name, scan_algorithm algorithm) {
  return scan_backend{
      name,
      [algorithm](const scan_case&, const auto& args) {
        on_device(args, [&](const auto& device_args) { scan_forward(linrec::cuda{}, device_args, algorithm); });
      },
      [algorithm](const scan_case&, const auto& args) {
        on_device(args, [&](const auto& device_args) { scan_backward(linrec::cuda{}, device_args, algorithm); });
      }};
}
const auto cuda_sequential = cuda_backend("CUDA sequential", scan_algorithm::sequential);
const auto cuda_parallel = cuda_backend("CUDA parallel", scan_algorithm::parallel);
const auto cuda_automatic = cuda_backend("CUDA automatic", scan_algorithm::automatic);

template <class Op>
void check_cuda(const scan_case& c) {
  check_conformance<Op>(c, cuda_sequential, cuda_parallel, cuda_automatic);
}

// The shared cases (among them one-row tiles: T = 100003 in 25 chunks, T = 2^20 in 256
// chunks of one row), plus shapes that exercise every tile shape of the CUDA dispatcher (1, 8
// and 32 channels per tile; full and partial tiles; one and many chunks per row).
// LINREC_TEST_QUICK=1 (used under compute-sanitizer) drops the large ones.
std::vector<scan_case> cuda_cases() {
  std::vector<scan_case> extra;
  for (bool bct : {false, true}) {
    extra.push_back({2, 4096, 64, bct, decay_regime::typical, true});  // full tiles only
    extra.push_back({3, 1537, 19, bct, decay_regime::typical, true});  // 8-channel tiles, partial
    extra.push_back({2, 3001, 45, bct, decay_regime::near_zero, true});
  }
  // Register-tiled kernels: channel tiles with 16-byte accesses ([B,T,C]; few lines, so 8-lane
  // tiles: 12 chunks per line) and a partial 16-byte row tile ([B,C,T], T % 4 == 0). Wider
  // channel tiles: the two tests below.
  for (bool bct : {false, true}) {
    extra.push_back({2, 3001, 256, bct, decay_regime::typical, true});
    extra.push_back({3, 2500, 132, bct, decay_regime::near_zero, false});
  }
  // Long chains of channel tiles (the block-wide look-back over many rounds), 8-lane tiles of
  // 256 steps: 1 line × 118 chunks and 4 lines × 79 chunks.
  extra.push_back({1, 30001, 32, false, decay_regime::typical, true});
  extra.push_back({1, 20000, 128, false, decay_regime::near_one, true});
  // A row deep enough for the dispatcher's deep-chain row tiles (≥ 1024 tiles of 4096 steps).
  extra.push_back({1, (index_t(1) << 22) + 3, 1, false, decay_regime::typical, true, 2, /*large=*/true});
  return conformance_cases(extra);
}

}  // namespace

TEMPLATE_TEST_CASE("CUDA scan matches the double reference", "[cuda][scan]", real_op<float>, complex_op<float>,
                   log_op<float>, real_op<double>) {
  for (const scan_case& c : cuda_cases()) check_cuda<TestType>(c);
}

// The channel tile's width depends on how many lines (batch entry × channel group) a shape has
// relative to the tiles resident on this GPU, so the shapes that reach 32- and 16-lane tiles
// come from its SM count and the residency of the policy that runs on it. Several chunks per
// line, the last channel group partial.
template <class Op>
struct every_channel_width {
  template <class Policy>
  void invoke() const {
    namespace cs = detail::cuda_scan;
    using T = typename Op::value_type;
    constexpr index_t v = index_t(16 / sizeof(T));
    using fwd = typename Policy::forward;
    using bwd = typename Policy::backward;
    const int sms = cs::current_device().multiprocessors;
    // Forward and backward must agree on the width for one shape to reach it in both.
    STATIC_REQUIRE(fwd::channels_wide::min_blocks == bwd::channels_wide::min_blocks);
    STATIC_REQUIRE(fwd::channels_narrow::min_blocks == bwd::channels_narrow::min_blocks);
    // Twice the resident tiles of each width.
    const index_t wide_lines = 2 * index_t(sms) * fwd::channels_wide::min_blocks;
    const index_t narrow_lines = 2 * index_t(sms) * fwd::channels_narrow::min_blocks;
    const index_t time = 131;  // 32 lanes: 3 chunks; 16 lanes: 2 chunks (64 and 128 steps per tile)
    struct target {
      int lanes;
      index_t batch, channels;
    };
    // 32 lanes: 4 full groups of 32·v channels and a partial one. 16 lanes: 32·v channels in
    // ⌈narrow_lines / 2⌉ batch entries: enough lines at 16 lanes, too few at 32 while the
    // narrow tiles are not twice as many per SM as the wide ones.
    REQUIRE((narrow_lines + 1) / 2 < wide_lines);
    const index_t wide_channels = 4 * 32 * v + v;
    const target targets[] = {{32, (wide_lines + 4) / 5, wide_channels}, {16, (narrow_lines + 1) / 2, 32 * v}};
    std::uint64_t seed = 1000;
    for (const target& t : targets) {
      const scan_case c{t.batch, time, t.channels, false, decay_regime::typical, true, 2, false, seed++};
      INFO("expected lanes " << t.lanes);
      const scan_shape shape{c.batch, c.time, c.channels};
      REQUIRE(cs::channel_lanes<Policy, cs::scan_direction::forward>(shape, v) == t.lanes);
      REQUIRE(cs::channel_lanes<Policy, cs::scan_direction::backward>(shape, v) == t.lanes);
      check_cuda<Op>(c);
    }
  }
};

TEMPLATE_TEST_CASE("CUDA channel tiles of every width", "[cuda][scan]", real_op<float>, real_op<double>) {
  detail::cuda_scan::default_policies::invoke(every_channel_width<TestType>{});
}

// Shapes with many lines settle most look-backs with the early read, so the block-wide
// look-back over many rounds is tested here: one or two long lines, each width forced
// through the dispatcher's launcher (a backend of its own) under the policy this device
// runs, forward and backward against the double reference.
template <int LANES, class Args>
struct forced_width_launch {
  const Args& args;
  template <class Policy>
  void invoke() const {
    namespace cs = detail::cuda_scan;
    using traits = cs::direction_traits<Args>;
    using T = typename traits::op::value_type;
    cs::launch_channels<Policy, traits::direction, T, int(16 / sizeof(T)), LANES>(args, cudaStreamLegacy);
  }
};

template <class T, int LANES>
auto forced_width_backend() {
  auto run = [](const auto& device_args) {
    detail::cuda_scan::default_policies::invoke(
        forced_width_launch<LANES, std::decay_t<decltype(device_args)>>{device_args});
  };
  return scan_backend{
      LANES == 32 ? "CUDA channel tiles forced to 32 lanes"
                  : (LANES == 16 ? "CUDA channel tiles forced to 16 lanes" : "CUDA channel tiles forced to 8 lanes"),
      [run](const scan_case&, const scan_forward_args<real_op<T>>& args) { on_device(args, run); },
      [run](const scan_case&, const scan_backward_args<real_op<T>>& args) { on_device(args, run); }};
}

TEMPLATE_TEST_CASE("CUDA channel tiles of every width on long chains", "[cuda][scan]", float, double) {
  // 32 lanes: 1 line of 313 chunks (128-channel tiles of 64 steps); 16 and 8 lanes: 2 and 4
  // lines of 157 and 79 chunks. The second shape ends in a partial channel group and a
  // partial chunk.
  using Op = real_op<TestType>;
  const scan_shape shapes[] = {{1, 20000, 128}, {2, 3001, 132}};
  std::uint64_t seed = 2000;
  for (const scan_shape& s : shapes) {
    auto next_case = [&] {
      return scan_case{s.batch, s.time, s.channels, false, decay_regime::typical, true, 2, false, seed++};
    };
    check_conformance<Op>(next_case(), forced_width_backend<TestType, 32>());
    check_conformance<Op>(next_case(), forced_width_backend<TestType, 16>());
    check_conformance<Op>(next_case(), forced_width_backend<TestType, 8>());
  }
}

TEST_CASE("CUDA scan with a time-invariant decay (time stride 0)", "[cuda][scan]") {
  using Op = real_op<float>;
  for (bool bct : {false, true})
    for (index_t time : {index_t(1), index_t(1001), index_t(70001)}) {
      const scan_shape shape{2, time, 37};
      INFO("T=" << time << (bct ? " [B,C,T]" : " [B,T,C]"));
      const strides3 st = bct ? strides3::bct(shape) : strides3::btc(shape);
      std::mt19937_64 rng(21);
      std::vector<float> decay(static_cast<std::size_t>(shape.batch * shape.channels));
      std::vector<float> b(static_cast<std::size_t>(shape.elements())), dh(b.size());
      for (auto& x : decay) x = random_decay<float>(rng, decay_regime::typical);
      for (auto& x : b) x = float(std::normal_distribution<double>(0, 1)(rng));
      for (auto& x : dh) x = float(std::normal_distribution<double>(0, 1)(rng));
      const strides3 inv = strides3::time_invariant(shape);
      std::vector<float> h_cpu(b.size()), da_cpu(b.size()), db_cpu(b.size());
      scan_forward_sequential(scan_forward_args<Op>{shape, decay.data(), inv, b.data(), st, h_cpu.data(), st});
      scan_backward_sequential(scan_backward_args<Op>{shape, decay.data(), inv, h_cpu.data(), st, nullptr, dh.data(),
                                                      st, nullptr, da_cpu.data(), st, db_cpu.data(), st});
      const device_array<float> d_decay(decay), d_b(b), d_dh(dh), d_h(b.size()), d_da(b.size()), d_db(b.size());
      for (scan_algorithm algorithm : {scan_algorithm::sequential, scan_algorithm::parallel}) {
        d_h.poison();
        d_da.poison();
        d_db.poison();
        scan_forward(linrec::cuda{}, scan_forward_args<Op>{shape, d_decay.get(), inv, d_b.get(), st, d_h.get(), st},
                     algorithm);
        scan_backward(linrec::cuda{},
                      scan_backward_args<Op>{shape, d_decay.get(), inv, d_h.get(), st, nullptr, d_dh.get(), st, nullptr,
                                             d_da.get(), st, d_db.get(), st},
                      algorithm);
        auto as_double = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
        // Float against the CPU's float scan, not the double reference: in the error table as
        // a row of its own.
        auto recorded = [&](double error) {
          return conformance_errors().record("real_op<float> time-invariant decay vs CPU", error, 1e-5,
                                             "T=" + std::to_string(time) + (bct ? " [B,C,T]" : " [B,T,C]"));
        };
        CHECK(recorded(relative_error(as_double(d_h.download()), as_double(h_cpu))) <= 1e-5);
        CHECK(recorded(relative_error(as_double(d_db.download()), as_double(db_cpu))) <= 1e-5);
        CHECK(recorded(relative_error(as_double(d_da.download()), as_double(da_cpu))) <= 1e-5);
      }
    }
}

TEMPLATE_TEST_CASE("CUDA segments with the state carried equal one call", "[cuda][scan]", real_op<float>,
                   complex_op<float>, log_op<float>) {
  using Op = TestType;
  using V = typename Op::value_type;
  for (bool bct : {false, true}) {
    const scan_shape whole{2, 70001, 3};
    const strides3 st = bct ? strides3::bct(whole) : strides3::btc(whole);
    std::mt19937_64 rng(99);
    std::vector<typename Op::decay_type> a(static_cast<std::size_t>(whole.elements()));
    std::vector<V> b(a.size()), h0(static_cast<std::size_t>(whole.batch * whole.channels));
    for (auto& x : a) x = op_traits<Op>::decay(rng, decay_regime::near_one);
    for (auto& x : b) x = op_traits<Op>::value(rng);
    for (auto& x : h0) x = op_traits<Op>::value(rng);
    const device_array<typename Op::decay_type> d_a(a);
    const device_array<V> d_b(b), d_h0(h0), d_whole(b.size()), d_segments(b.size()), d_final(h0.size()), d_state_a(h0),
        d_state_b(h0.size());
    scan_forward(linrec::cuda{}, scan_forward_args<Op>{whole, d_a.get(), st, d_b.get(), st, d_whole.get(), st,
                                                       d_h0.get(), d_final.get()});
    const index_t cuts[] = {0, 1, 17, 40000, 70001};
    V* state_in = d_state_a.get();
    V* state_out = d_state_b.get();
    for (int s = 0; s + 1 < 5; ++s) {
      const scan_shape seg{whole.batch, cuts[s + 1] - cuts[s], whole.channels};
      const std::size_t offset = static_cast<std::size_t>(cuts[s] * st.time);
      scan_forward(linrec::cuda{}, scan_forward_args<Op>{seg, d_a.get() + offset, st, d_b.get() + offset, st,
                                                         d_segments.get() + offset, st, state_in, state_out});
      std::swap(state_in, state_out);
    }
    std::vector<V> final_segments(h0.size());
    LINREC_CUDA_CHECK(cudaMemcpy(final_segments.data(), state_in, h0.size() * sizeof(V), cudaMemcpyDeviceToHost));
    INFO((bct ? "[B,C,T]" : "[B,T,C]"));
    // Two float computations, not one: the carries are combined in an order that depends on
    // which look-back records a tile finds written, so they differ by rounding. Log space ×10,
    // as in the conformance harness (seen: 1.006e-5 under compute-sanitizer's timing).
    const double tolerance = std::is_same_v<Op, log_op<float>> ? 1e-4 : 1e-5;
    CHECK(relative_error(flatten_as_reference<Op>(d_segments.download()),
                         flatten_as_reference<Op>(d_whole.download())) <= tolerance);
    CHECK(relative_error(flatten_as_reference<Op>(final_segments), flatten_as_reference<Op>(d_final.download())) <=
          tolerance);
  }
}

TEST_CASE("CUDA scan on a non-default stream", "[cuda][scan]") {
  const scan_shape shape{4, 5000, 33};
  std::mt19937_64 rng(5);
  std::vector<float> a(static_cast<std::size_t>(shape.elements())), b(a.size()), h_cpu(a.size());
  for (auto& x : a) x = random_decay<float>(rng, decay_regime::typical);
  for (auto& x : b) x = float(std::normal_distribution<double>(0, 1)(rng));
  scan_forward(cpu{1}, shape, a.data(), b.data(), h_cpu.data());
  cudaStream_t stream = nullptr;
  LINREC_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const device_array<float> d_a(a), d_b(b), d_h(a.size());
  scan_forward(linrec::cuda{stream}, shape, d_a.get(), d_b.get(), d_h.get());
  LINREC_CUDA_CHECK(cudaStreamSynchronize(stream));
  LINREC_CUDA_CHECK(cudaStreamDestroy(stream));
  CHECK(relative_error(std::vector<double>(h_cpu.begin(), h_cpu.end()), [&] {
          auto h = d_h.download();
          return std::vector<double>(h.begin(), h.end());
        }()) <= 1e-5);
}

// Problems for the tests of the look-back scratch kept per (thread, stream) between calls.
// What they exercise is the number of tiles, not of elements: small, so that the tests stay
// quick under compute-sanitizer. Look-back records per call, in this order: 1280, 96256,
// 5024, 75 (channel and row tiles).
struct scratch_problems {
  struct problem {
    scan_shape shape;
    std::vector<float> a, b, h_cpu;
    std::unique_ptr<device_array<float>> d_a, d_b, d_h;
  };
  std::vector<problem> list;

  scratch_problems() {
    std::mt19937_64 rng(11);
    for (const scan_shape& shape :
         {scan_shape{1, 5000, 64}, scan_shape{2, 12001, 256}, scan_shape{1, 40000, 32}, scan_shape{3, 100001, 1}}) {
      problem p{shape, {}, {}, {}, {}, {}, {}};
      const auto n = static_cast<std::size_t>(shape.elements());
      p.a.resize(n);
      p.b.resize(n);
      p.h_cpu.resize(n);
      for (auto& x : p.a) x = random_decay<float>(rng, decay_regime::typical);
      for (auto& x : p.b) x = float(std::normal_distribution<double>(0, 1)(rng));
      scan_forward(cpu{1}, shape, p.a.data(), p.b.data(), p.h_cpu.data());
      p.d_a = std::make_unique<device_array<float>>(p.a);
      p.d_b = std::make_unique<device_array<float>>(p.b);
      p.d_h = std::make_unique<device_array<float>>(n);
      list.push_back(std::move(p));
    }
  }
  void enqueue(cudaStream_t stream, std::size_t i) const {
    const problem& p = list[i];
    scan_forward(linrec::cuda{stream}, p.shape, p.d_a->get(), p.d_b->get(), p.d_h->get());
  }
  void run_on(cudaStream_t stream, std::size_t i) const {
    enqueue(stream, i);
    LINREC_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  double error_of(std::size_t i) const {
    const auto h = list[i].d_h->download();
    return relative_error(std::vector<double>(h.begin(), h.end()),
                          std::vector<double>(list[i].h_cpu.begin(), list[i].h_cpu.end()));
  }
  void poison(std::size_t i) const {
    list[i].d_h->poison();
    LINREC_CUDA_CHECK(cudaDeviceSynchronize());  // the poison is on the legacy stream
  }
};

// Calls that need more than the kept buffer (it is replaced in stream order), streams
// destroyed and created again, more streams than the cache keeps, and a stream captured into
// a graph (per-call scratch inside the graph) all give the CPU result.
TEST_CASE("CUDA scan scratch kept per stream", "[cuda][scan]") {
  const scratch_problems problems;
  const std::size_t count = problems.list.size();
  SECTION("growing and shrinking needs on one stream, streams recreated, more streams than kept") {
    for (int round = 0; round < 20; ++round) {
      cudaStream_t stream = nullptr;
      LINREC_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      for (std::size_t k = 0; k < count; ++k) {
        const std::size_t i = (k + std::size_t(round)) % count;
        problems.poison(i);
        problems.run_on(stream, i);
        INFO("round " << round << " problem " << i);
        CHECK(problems.error_of(i) <= 1e-5);
      }
      LINREC_CUDA_CHECK(cudaStreamDestroy(stream));
    }
  }
  SECTION("queued back to back: the buffer grows, is kept, grows again, in stream order") {
    for (std::size_t i = 0; i < count; ++i) problems.poison(i);
    cudaStream_t stream = nullptr;
    LINREC_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    for (std::size_t i : {0, 2, 1, 3, 2, 1, 0}) problems.enqueue(stream, i);
    LINREC_CUDA_CHECK(cudaStreamSynchronize(stream));
    LINREC_CUDA_CHECK(cudaStreamDestroy(stream));
    for (std::size_t i = 0; i < count; ++i) {
      INFO("problem " << i);
      CHECK(problems.error_of(i) <= 1e-5);
    }
  }
  SECTION("captured into a graph, replayed with new inputs") {
    cudaStream_t stream = nullptr;
    LINREC_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    const auto& p = problems.list[2];
    LINREC_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    scan_forward(linrec::cuda{stream}, p.shape, p.d_a->get(), p.d_b->get(), p.d_h->get());
    LINREC_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    LINREC_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    std::vector<float> b = p.b, expected(p.b.size());
    for (int replay = 0; replay < 3; ++replay) {
      // New inputs each replay: a replay that took the last one's look-back records for its
      // own would reproduce the old result.
      for (auto& x : b) x = -0.5f * x + 0.25f;
      scan_forward(cpu{1}, p.shape, p.a.data(), b.data(), expected.data());
      LINREC_CUDA_CHECK(cudaMemcpy(p.d_b->get(), b.data(), b.size() * sizeof(float), cudaMemcpyHostToDevice));
      problems.poison(2);
      problems.run_on(stream, std::size_t(replay % 2));  // uses (and grows) the kept scratch
      LINREC_CUDA_CHECK(cudaGraphLaunch(exec, stream));
      LINREC_CUDA_CHECK(cudaStreamSynchronize(stream));
      INFO("replay " << replay);
      const auto h = p.d_h->download();
      CHECK(relative_error(std::vector<double>(h.begin(), h.end()),
                           std::vector<double>(expected.begin(), expected.end())) <= 1e-5);
    }
    LINREC_CUDA_CHECK(cudaGraphExecDestroy(exec));
    LINREC_CUDA_CHECK(cudaGraphDestroy(graph));
    LINREC_CUDA_CHECK(cudaStreamDestroy(stream));
  }
}

// Two host threads on one stream: each keeps its own buffer for it. Tagged [threads]:
// compute-sanitizer racecheck loses track of launches from two threads ("failure to track a
// kernel launch") and hangs, so tools/gpu_check.sh leaves this case out of racecheck only.
TEST_CASE("CUDA scan from two host threads on one stream", "[cuda][scan][threads]") {
  const scratch_problems problems;
  cudaStream_t stream = nullptr;
  LINREC_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  // Thread t runs problems t and t + 2 (each problem's output belongs to one thread) and
  // checks every run; failures travel back as exceptions, not through Catch in a thread.
  double worst[2] = {1, 1};
  std::exception_ptr failure[2];
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      try {
        double w = 0;
        for (int i = 0; i < 6; ++i) {
          const std::size_t k = t + 2 * std::size_t(i % 2);
          problems.poison(k);
          problems.run_on(stream, k);
          w = std::max(w, problems.error_of(k));
        }
        worst[t] = w;
      } catch (...) {
        failure[t] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  LINREC_CUDA_CHECK(cudaStreamDestroy(stream));
  for (std::size_t t = 0; t < 2; ++t) {
    INFO("thread " << t);
    if (failure[t]) std::rethrow_exception(failure[t]);
    CHECK(worst[t] <= 1e-5);
  }
}

TEST_CASE("CUDA scan refuses host pointers with a clear error", "[cuda][scan]") {
  const scan_shape shape{1, 16, 4};
  std::vector<float> host(static_cast<std::size_t>(shape.elements()), 0.5f);
  const device_array<float> device(host);
  const device_array<float> out(host.size());
  REQUIRE_THROWS_WITH(scan_forward(linrec::cuda{}, shape, host.data(), device.get(), out.get()),
                      Catch::Contains("a (") && Catch::Contains("is host memory"));
  REQUIRE_THROWS_WITH(scan_forward(linrec::cuda{}, shape, device.get(), device.get(), host.data()),
                      Catch::Contains("h (") && Catch::Contains("host memory"));
  float* pinned = nullptr;
  LINREC_CUDA_CHECK(cudaMallocHost(&pinned, host.size() * sizeof(float)));
  CHECK_THROWS_WITH(scan_forward(linrec::cuda{}, shape, device.get(), pinned, out.get()),
                    Catch::Contains("pinned host memory"));
  LINREC_CUDA_CHECK(cudaFreeHost(pinned));
  // Shape errors come from the same validation as on the CPU.
  CHECK_THROWS_AS(scan_forward(linrec::cuda{}, scan_shape{1, 0, 4}, device.get(), device.get(), out.get()),
                  linrec::Error);
}

// Tagged [cuda_error]: it makes a CUDA call fail on purpose, which compute-sanitizer counts
// as an error, so gpu_check.sh leaves it out of the sanitizer runs ("~[cuda_error]").
TEST_CASE("CUDA failures become linrec::Error with CUDA's message", "[cuda][cuda_error]") {
  int devices = 0;
  LINREC_CUDA_CHECK(cudaGetDeviceCount(&devices));
  auto select_missing_device = [&] { LINREC_CUDA_CHECK(cudaSetDevice(devices + 7)); };
  CHECK_THROWS_WITH(select_missing_device(), Catch::Contains("cudaErrorInvalidDevice"));
  (void)cudaGetLastError();
}

int main(int argc, char** argv) {
  if (!usable_cuda_device("test_scan_cuda")) return 77;
  const int result = Catch::Session().run(argc, argv);
  std::printf("test_scan_cuda: largest relative error vs reference: %.3g\n", conformance_errors().largest());
  return result;
}
