#pragma once
// A training progress display: step/total, a bar, loss, validation loss, tokens/s and ETA.
// On a terminal it redraws one line in place (\r, at most ~10 times a second); when output
// goes to a file or pipe it prints a plain line every `plain_every_seconds` instead (and at
// the first and last step), so logs stay readable.
//
//   linrec::io::progress_bar bar(total_steps);
//   for (step = 1..total) { ...; bar.update(step, loss, tokens_per_second, val_loss_or_nullopt); }
//   bar.finish();
//
// The ETA comes from the time per step measured since the bar's first update (so a resumed
// run does not count the steps it skipped), capped by `max_seconds` when one is set.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

#include "linrec/core/error.hpp"

namespace linrec::io {

struct progress_stats {
  std::int64_t step = 0;
  std::int64_t total = 0;
  double loss = 0.0;
  std::optional<double> val_loss;
  double tokens_per_second = 0.0;
  std::optional<double> eta_seconds;
};

// "1h02m", "4m05s", "12s", "--" for unknown.
std::string format_duration(std::optional<double> seconds);
// One line, no newline: "[#####.....] 120/1000 loss 2.3141 val 2.4010 5.4k tok/s ETA 4m05s".
// bar_width 0 leaves the bar out.
std::string format_progress(const progress_stats& stats, int bar_width = 24);

struct progress_options {
  std::optional<bool> tty;            // default: isatty(fileno(out))
  double plain_every_seconds = 10.0;  // plain mode: at most one line per interval
  double max_seconds = 0.0;           // > 0: the run stops by then; caps the ETA
  int bar_width = 24;
};

class progress_bar {
 public:
  explicit progress_bar(std::int64_t total_steps, std::FILE* out = stdout, progress_options options = {})
      : total_(total_steps), out_(out), options_(options), start_(clock::now()) {
    LINREC_CHECK(total_steps >= 0, "progress_bar: negative total " << total_steps);
    tty_ = options.tty.value_or(::isatty(::fileno(out)) != 0);
  }
  ~progress_bar() {
    try {
      finish();
    } catch (...) {
    }
  }
  progress_bar(const progress_bar&) = delete;
  progress_bar& operator=(const progress_bar&) = delete;

  void update(std::int64_t step, double loss, double tokens_per_second, std::optional<double> val_loss = {}) {
    const clock::time_point now = clock::now();
    if (!first_step_) {
      first_step_ = step;
      first_time_ = now;
    }
    if (val_loss) last_val_loss_ = val_loss;
    progress_stats stats{step, total_, loss, last_val_loss_, tokens_per_second, {}};
    const double since_first = seconds(now - first_time_);
    if (step > *first_step_ && total_ >= step)
      stats.eta_seconds = since_first / static_cast<double>(step - *first_step_) * static_cast<double>(total_ - step);
    if (options_.max_seconds > 0.0) {
      const double left = std::max(0.0, options_.max_seconds - seconds(now - start_));
      stats.eta_seconds = stats.eta_seconds ? std::min(*stats.eta_seconds, left) : left;
    }
    const bool last = step >= total_;
    const bool first = !last_draw_;
    const double since_draw = last_draw_ ? seconds(now - *last_draw_) : 0.0;
    if (tty_) {
      if (!(first || last || val_loss || since_draw >= 0.1)) return;
      std::fprintf(out_, "\r%s\x1b[K", format_progress(stats, options_.bar_width).c_str());
      open_line_ = true;
    } else {
      if (!(first || last || val_loss || since_draw >= options_.plain_every_seconds)) return;
      std::fprintf(out_, "%s\n", format_progress(stats, 0).c_str());
    }
    std::fflush(out_);
    last_draw_ = now;
  }

  // Ends the redrawn line (terminal mode) so later output starts on a fresh line.
  void finish() {
    if (open_line_) {
      std::fputc('\n', out_);
      std::fflush(out_);
      open_line_ = false;
    }
  }
  // Prints a message line without garbling the bar (the bar is redrawn on the next update).
  void message(const std::string& text) {
    finish();
    std::fprintf(out_, "%s\n", text.c_str());
    std::fflush(out_);
    last_draw_.reset();
  }

  bool is_tty() const { return tty_; }

 private:
  using clock = std::chrono::steady_clock;
  static double seconds(clock::duration d) { return std::chrono::duration<double>(d).count(); }

  std::int64_t total_;
  std::FILE* out_;
  progress_options options_;
  bool tty_ = false;
  bool open_line_ = false;
  clock::time_point start_;
  clock::time_point first_time_;
  std::optional<std::int64_t> first_step_;
  std::optional<clock::time_point> last_draw_;
  std::optional<double> last_val_loss_;
};

inline std::string format_duration(std::optional<double> seconds) {
  if (!seconds || !std::isfinite(*seconds) || *seconds < 0) return "--";
  const auto total = static_cast<long long>(std::llround(*seconds));
  char text[32];
  if (total >= 3600)
    std::snprintf(text, sizeof text, "%lldh%02lldm", total / 3600, total % 3600 / 60);
  else if (total >= 60)
    std::snprintf(text, sizeof text, "%lldm%02llds", total / 60, total % 60);
  else
    std::snprintf(text, sizeof text, "%llds", total);
  return text;
}

inline std::string format_progress(const progress_stats& stats, int bar_width) {
  std::string line;
  char text[160];
  if (bar_width > 0) {
    const double done = stats.total > 0
                            ? std::clamp(static_cast<double>(stats.step) / static_cast<double>(stats.total), 0.0, 1.0)
                            : 0.0;
    const int filled = static_cast<int>(done * bar_width);
    line += '[';
    line.append(static_cast<std::size_t>(filled), '#');
    line.append(static_cast<std::size_t>(bar_width - filled), '.');
    line += "] ";
  }
  std::snprintf(text, sizeof text, "%lld/%lld loss %.4f", static_cast<long long>(stats.step),
                static_cast<long long>(stats.total), stats.loss);
  line += text;
  if (stats.val_loss) {
    std::snprintf(text, sizeof text, " val %.4f", *stats.val_loss);
    line += text;
  }
  const double tps = stats.tokens_per_second;
  if (tps >= 1e6)
    std::snprintf(text, sizeof text, " %.2fM tok/s", tps / 1e6);
  else if (tps >= 1e4)
    std::snprintf(text, sizeof text, " %.1fk tok/s", tps / 1e3);
  else
    std::snprintf(text, sizeof text, " %.0f tok/s", tps);
  line += text;
  line += " ETA ";
  line += format_duration(stats.eta_seconds);
  return line;
}

}  // namespace linrec::io
