// Bad arguments to the scan raise linrec::Error with a message naming the argument.
#include <catch2/catch.hpp>
#include <vector>

#include "linrec/scan/scan.hpp"

using namespace linrec;
using Catch::Matchers::Contains;

TEST_CASE("scan rejects bad arguments with a clear error", "[scan][errors]") {
  const scan_shape shape{2, 5, 3};
  std::vector<float> a(30, 0.5f), b(30, 1.0f), h(30);
  const auto btc = strides3::btc(shape);
  using args = scan_forward_args<real_op<float>>;
  auto forward = [](const args& p) { scan_forward(cpu{}, p); };

  CHECK_THROWS_WITH(forward(args{shape, nullptr, btc, b.data(), btc, h.data(), btc}),
                    Contains("a (decay) is a null pointer"));
  CHECK_THROWS_WITH(forward(args{shape, a.data(), btc, nullptr, btc, h.data(), btc}),
                    Contains("b (input) is a null pointer"));
  CHECK_THROWS_WITH(forward(args{shape, a.data(), btc, b.data(), btc, nullptr, btc}),
                    Contains("h (output) is a null pointer"));
  CHECK_THROWS_WITH(forward(args{{2, 0, 3}, a.data(), btc, b.data(), btc, h.data(), btc}),
                    Contains("time, channels > 0"));
  CHECK_THROWS_WITH(forward(args{{-1, 5, 3}, a.data(), btc, b.data(), btc, h.data(), btc}), Contains("got (-1, 5, 3)"));
  CHECK_THROWS_WITH(forward(args{shape, a.data(), btc, b.data(), {15, 3, -1}, h.data(), btc}),
                    Contains("b strides must be non-negative"));
  CHECK_THROWS_WITH(forward(args{shape, a.data(), btc, b.data(), btc, h.data(), {15, 0, 1}}),
                    Contains("h (output) time stride is 0"));
  // Time stride 2 with 3 channels: element (t=1, c=0) aliases (t=0, c=2).
  CHECK_THROWS_WITH(forward(args{shape, a.data(), btc, b.data(), btc, h.data(), {15, 2, 1}}), Contains("overlap"));
  CHECK_THROWS_AS(
      scan_backward(cpu{}, scan_backward_args<real_op<float>>{shape, a.data(), btc, h.data(), btc, nullptr, nullptr,
                                                              btc, nullptr, a.data(), btc, b.data(), btc}),
      Error);
  CHECK_THROWS_WITH(
      scan_backward(cpu{}, scan_backward_args<real_op<float>>{shape, a.data(), btc, h.data(), btc, nullptr, nullptr,
                                                              btc, nullptr, a.data(), btc, b.data(), btc}),
      Contains("dh (gradient of h) is a null pointer"));
  // A valid call still works after all that.
  CHECK_NOTHROW(forward(args{shape, a.data(), btc, b.data(), btc, h.data(), btc}));
  CHECK(h[29] != 0.0f);
}
