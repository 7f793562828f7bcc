// Tests of what a training run prints and logs: the JSON-lines metric log and the progress
// display.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "io_test_util.hpp"
#include "linrec/io/metrics_log.hpp"
#include "linrec/io/progress.hpp"

namespace fs = std::filesystem;
using linrec::test::error_of;
using linrec::test::temp_dir;

TEST_CASE("metrics log: one flushed JSON object per line, append mode", "[io][log]") {
  temp_dir dir;
  const fs::path path = dir.path / "m.jsonl";
  {
    linrec::io::metrics_log log(path);
    log.write({{"step", 1}, {"train_loss", 2.5}});
    // flushed already: visible before the log is closed
    std::ifstream peek(path);
    std::string line;
    REQUIRE(std::getline(peek, line));
    CHECK(nlohmann::json::parse(line) == nlohmann::json{{"step", 1}, {"train_loss", 2.5}});
    log.write({{"step", 2}, {"train_loss", std::nan("")}, {"note", "x\ny"}});
    CHECK_THROWS_AS(log.write(nlohmann::json::array({1, 2})), linrec::Error);
  }
  {
    linrec::io::metrics_log log(path, linrec::io::log_mode::append);
    log.write({{"step", 3}});
  }
  std::ifstream in(path);
  std::vector<nlohmann::json> records;
  for (std::string line; std::getline(in, line);) records.push_back(nlohmann::json::parse(line));
  REQUIRE(records.size() == 3);
  CHECK(records[1]["train_loss"].is_null());
  CHECK(records[1]["note"] == "x\ny");
  CHECK(records[2]["step"] == 3);
  linrec::io::metrics_log truncated(path);
  CHECK(fs::file_size(path) == 0);
  CHECK_THAT(error_of([&] { linrec::io::metrics_log bad(dir.path / "no" / "m.jsonl"); }),
             Catch::Contains("no/m.jsonl: cannot open"));
}

TEST_CASE("progress: formatting", "[io][progress]") {
  CHECK(linrec::io::format_duration(std::nullopt) == "--");
  CHECK(linrec::io::format_duration(12.4) == "12s");
  CHECK(linrec::io::format_duration(245.0) == "4m05s");
  CHECK(linrec::io::format_duration(3720.0) == "1h02m");
  const std::string line = linrec::io::format_progress({120, 1000, 2.31415, 2.401, 54321.0, 245.0}, 10);
  CHECK(line == "[#.........] 120/1000 loss 2.3142 val 2.4010 54.3k tok/s ETA 4m05s");
  CHECK(linrec::io::format_progress({5, 10, 1.0, std::nullopt, 12.0, std::nullopt}, 0) ==
        "5/10 loss 1.0000 12 tok/s ETA --");
}

namespace {
std::string captured(std::FILE* file) {
  std::fflush(file);
  std::rewind(file);
  std::string text;
  for (int c; (c = std::fgetc(file)) != EOF;) text += static_cast<char>(c);
  return text;
}
}  // namespace

TEST_CASE("progress: plain lines when not a terminal, one redrawn line on a terminal", "[io][progress]") {
  SECTION("plain") {
    std::FILE* out = std::tmpfile();
    REQUIRE(out != nullptr);
    {
      linrec::io::progress_bar bar(100, out, {.tty = false, .plain_every_seconds = 3600});
      CHECK_FALSE(bar.is_tty());
      for (int step = 1; step <= 100; ++step)
        bar.update(step, 3.0, 1000.0, step == 50 ? std::optional(2.5) : std::nullopt);
    }
    const std::string text = captured(out);
    std::fclose(out);
    CHECK(std::count(text.begin(), text.end(), '\n') == 3);  // first, the validation step, last
    CHECK(text.find('\r') == std::string::npos);
    CHECK_THAT(text, Catch::StartsWith("1/100 loss 3.0000") && Catch::Contains("50/100") &&
                         Catch::Contains("100/100 loss 3.0000 val 2.5000"));
  }
  SECTION("terminal") {
    std::FILE* out = std::tmpfile();
    REQUIRE(out != nullptr);
    linrec::io::progress_bar bar(3, out, {.tty = true});
    bar.update(1, 3.0, 10.0);
    bar.update(2, 2.0, 10.0);
    bar.update(3, 1.0, 10.0);
    const std::string before_finish = captured(out);
    CHECK(before_finish.find('\n') == std::string::npos);
    CHECK(std::count(before_finish.begin(), before_finish.end(), '\r') >= 2);  // first and last at least
    CHECK_THAT(before_finish, Catch::Contains("3/3 loss 1.0000"));
    std::fseek(out, 0, SEEK_END);
    bar.finish();
    const std::string after = captured(out);
    CHECK(after.back() == '\n');
    std::fclose(out);
  }
}
