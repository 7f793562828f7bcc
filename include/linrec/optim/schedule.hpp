#pragma once
// Learning-rate schedules: functions of the (0-based) optimizer step.
//   constant_lr{3e-4}(step)                        = 3e-4
//   warmup_cosine{peak, warmup, total, min}(step)  = peak·(step+1)/warmup during warm-up, then
//       min + ½(peak − min)(1 + cos(π·progress)), progress = (step − warmup)/(total − warmup)
//       clamped to [0, 1] (so the rate stays at min after `total` steps).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>

#include "linrec/core/error.hpp"

namespace linrec {

struct constant_lr {
  double lr = 1e-3;
  double operator()(std::int64_t) const { return lr; }
};

struct warmup_cosine {
  double peak_lr = 1e-3;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1;
  double min_lr = 0.0;

  double operator()(std::int64_t step) const {
    LINREC_CHECK(step >= 0, "warmup_cosine: negative step " << step);
    if (step < warmup_steps) return peak_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
    const double span = static_cast<double>(std::max<std::int64_t>(1, total_steps - warmup_steps));
    const double progress = std::clamp(static_cast<double>(step - warmup_steps) / span, 0.0, 1.0);
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
  }
};

}  // namespace linrec
