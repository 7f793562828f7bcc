// Scans a known recurrence through the installed headers and checks the answer.
#include <linrec/scan/scan.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  const linrec::scan_shape shape{1, 5, 1};
  std::vector<float> a = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f}, b = {1, 2, 3, 4, 5}, h(5);
  linrec::scan_forward(linrec::cpu{}, shape, a.data(), b.data(), h.data());
  const float expected[] = {1.0f, 2.5f, 4.25f, 6.125f, 8.0625f};
  for (int t = 0; t < 5; ++t)
    if (std::abs(h[t] - expected[t]) > 1e-6f) {
      std::printf("consumer: h[%d] = %g, expected %g\n", t, h[t], expected[t]);
      return 1;
    }
  std::printf("consumer: installed linrec works\n");
  return 0;
}
