// A tour of the scan primitive: exponential moving averages of a noisy signal, computed by
// the sequential reference and the parallel scan, and again in two segments with the state
// carried between them. Prints the agreement and the speed of each.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "linrec/scan/scan.hpp"

namespace {

double seconds_of(auto&& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double max_abs_difference(const std::vector<float>& x, const std::vector<float>& y) {
  double worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(double(x[i]) - double(y[i])));
  return worst;
}

}  // namespace

int main() {
  // 16 smoothing rates (channels), one long signal of 4M steps.
  const linrec::scan_shape shape{1, 1 << 22, 16};
  const auto n = static_cast<std::size_t>(shape.elements());
  std::vector<float> decay(n), input(n);
  std::mt19937 rng(42);
  std::normal_distribution<float> noise(0.0f, 1.0f);
  for (linrec::index_t t = 0; t < shape.time; ++t)
    for (linrec::index_t c = 0; c < shape.channels; ++c) {
      const float rate = 1.0f / float(2 << c);  // EMA: h = (1-rate) h + rate x
      const auto i = static_cast<std::size_t>(t * shape.channels + c);
      decay[i] = 1.0f - rate;
      input[i] = rate * (std::sin(1e-4f * float(t)) + noise(rng));
    }

  const auto btc = linrec::strides3::btc(shape);
  using args = linrec::scan_forward_args<linrec::real_op<float>>;
  std::vector<float> h_seq(n), h_par(n), h_seg(n), carry(16);
  const double t_seq = seconds_of([&] {
    linrec::scan_forward(linrec::cpu{}, args{shape, decay.data(), btc, input.data(), btc, h_seq.data(), btc},
                         linrec::scan_algorithm::sequential);
  });
  const double t_par =
      seconds_of([&] { linrec::scan_forward(linrec::cpu{}, shape, decay.data(), input.data(), h_par.data()); });

  // Two segments; the first one's final state seeds the second.
  const linrec::index_t cut = 1234567;
  const linrec::scan_shape first{1, cut, 16}, second{1, shape.time - cut, 16};
  const auto offset = static_cast<std::size_t>(cut * shape.channels);
  linrec::scan_forward(linrec::cpu{}, first, decay.data(), input.data(), h_seg.data(), nullptr, carry.data());
  linrec::scan_forward(linrec::cpu{}, second, decay.data() + offset, input.data() + offset, h_seg.data() + offset,
                       carry.data());

  std::printf("EMA of %lld steps x %lld rates\n", static_cast<long long>(shape.time),
              static_cast<long long>(shape.channels));
  std::printf("  sequential scan : %7.1f ms\n", 1e3 * t_seq);
  std::printf("  parallel scan   : %7.1f ms  (%.2fx), max |diff| = %.2e\n", 1e3 * t_par, t_seq / t_par,
              max_abs_difference(h_par, h_seq));
  std::printf("  two segments    : max |diff| vs one call = %.2e\n", max_abs_difference(h_seg, h_par));
  const auto last = n - 16;
  std::printf("  final EMA values (rate 1/2 .. 1/65536): %.3f %.3f %.3f %.3f\n", h_par[last], h_par[last + 5],
              h_par[last + 10], h_par[last + 15]);
  return max_abs_difference(h_seg, h_par) < 1e-4 && max_abs_difference(h_par, h_seq) < 1e-4 ? 0 : 1;
}
