#pragma once
// A small, seeded, counter-based random number generator whose whole state is two integers,
// so a checkpoint can save it and a resumed run draws exactly the same numbers.
//
//   linrec::rng gen(42);
//   double u = gen.uniform();            // [0, 1)
//   double z = gen.normal();             // N(0, 1)
//   linrec::rng_state saved = gen.state();  ...  gen.set_state(saved);
//
// Each draw is splitmix64-style mixing of (seed, counter); normals use the Box–Muller
// transform on two fresh uniforms (no cached spare, so the state stays two integers).
#include <cmath>
#include <cstdint>
#include <numbers>

namespace linrec {

struct rng_state {
  std::uint64_t seed = 0;
  std::uint64_t counter = 0;
  friend bool operator==(const rng_state&, const rng_state&) = default;
};

class rng {
 public:
  explicit rng(std::uint64_t seed = 0) : state_{seed, 0} {}

  // A 64-bit value: an avalanche mix of seed and the draw counter.
  std::uint64_t next_u64() {
    std::uint64_t z = state_.seed * 0xD1B54A32D192ED03ull + (++state_.counter) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform on [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Standard normal: z = sqrt(-2 ln u1) cos(2π u2), u1 in (0, 1].
  double normal() {
    const double u1 = 1.0 - uniform();
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }
  double normal(double mean, double stddev) { return mean + stddev * normal(); }
  // Uniform integer in [0, n), n > 0 (multiply-shift; bias below 2^-32 for n < 2^32).
  std::uint64_t below(std::uint64_t n) { return static_cast<std::uint64_t>((next_u64() >> 32) * n >> 32); }

  rng_state state() const { return state_; }
  void set_state(const rng_state& s) { state_ = s; }

 private:
  rng_state state_;
};

}  // namespace linrec
