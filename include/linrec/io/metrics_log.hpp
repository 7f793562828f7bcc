#pragma once
// A JSON-lines metric log: one JSON object per line, flushed as soon as it is written, so a
// plot script or `tail -f` sees every step and a crash loses nothing already logged.
//
//   linrec::io::metrics_log log("run/metrics.jsonl");                      // truncates
//   log.write({{"step", 10}, {"train_loss", 2.31}, {"tokens_per_second", 5400.0}});
//   linrec::io::metrics_log resumed("run/metrics.jsonl", linrec::io::log_mode::append);
//
// Fields are the caller's; non-finite numbers are written as null (JSON has no NaN).
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "linrec/core/error.hpp"
#include "linrec/io/detail/file_error.hpp"

namespace linrec::io {

enum class log_mode { truncate, append };

class metrics_log {
 public:
  explicit metrics_log(const std::filesystem::path& path, log_mode mode = log_mode::truncate) : path_(path.string()) {
    stream_ = std::fopen(path_.c_str(), mode == log_mode::append ? "ab" : "wb");
    if (stream_ == nullptr)
      io::detail::throw_file_error(path_,
                                   io::detail::concat("cannot open the metric log: ", io::detail::errno_text(errno)));
  }
  metrics_log(const metrics_log&) = delete;
  metrics_log& operator=(const metrics_log&) = delete;
  metrics_log(metrics_log&& other) noexcept
      : path_(std::move(other.path_)), stream_(std::exchange(other.stream_, nullptr)) {}
  metrics_log& operator=(metrics_log&& other) noexcept {
    if (this != &other) {
      close();
      path_ = std::move(other.path_);
      stream_ = std::exchange(other.stream_, nullptr);
    }
    return *this;
  }
  ~metrics_log() { close(); }

  // Writes `record` (a JSON object) as one line and flushes it.
  void write(const nlohmann::json& record) {
    LINREC_CHECK(record.is_object(),
                 "metrics_log::write: a record must be a JSON object, got a " << record.type_name());
    LINREC_CHECK(stream_ != nullptr, "metrics_log::write: the log was moved from");
    std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    line += '\n';
    if (std::fwrite(line.data(), 1, line.size(), stream_) != line.size() || std::fflush(stream_) != 0)
      io::detail::throw_file_error(
          path_, io::detail::concat("writing the metric log failed: ", io::detail::errno_text(errno)));
  }

  const std::string& path() const { return path_; }

 private:
  void close() {
    if (stream_ != nullptr) std::fclose(std::exchange(stream_, nullptr));
  }
  std::string path_;
  std::FILE* stream_ = nullptr;
};

}  // namespace linrec::io
