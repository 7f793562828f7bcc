// Tests of io/text_data: corpus loading (files, fortune-style directories, the default
// corpus), the train/validation split, the byte tokenizer, both samplers and the unigram
// baseline.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "io_test_util.hpp"
#include "linrec/io/text_data.hpp"

namespace fs = std::filesystem;
using linrec::test::error_of;
using linrec::test::temp_dir;
using linrec::test::write_text;

TEST_CASE("text data: missing and empty files are one-line errors naming the path", "[io][text]") {
  temp_dir dir;
  const fs::path missing = dir.path / "missing.txt";
  CHECK_THAT(error_of([&] { linrec::io::load_corpus(missing); }),
             Catch::Contains(missing.string()) && Catch::Contains("no such file"));
  write_text(dir.path / "empty.txt", "");
  CHECK_THAT(error_of([&] { linrec::io::load_corpus(dir.path / "empty.txt"); }),
             Catch::Contains((dir.path / "empty.txt").string()) && Catch::Contains("empty"));
  write_text(dir.path / "ok.txt", "hi");
  CHECK(linrec::io::load_bytes(dir.path / "ok.txt") == std::vector<std::uint8_t>{'h', 'i'});
  CHECK_THAT(error_of([&] { linrec::io::load_bytes(dir.path); }), Catch::Contains("is a directory"));
}

TEST_CASE("text data: a corpus directory concatenates plain-text files like fortune's", "[io][text]") {
  temp_dir dir;
  write_text(dir.path / "b_file", "second\n");
  write_text(dir.path / "a_file", "first");  // no newline: one is added
  write_text(dir.path / "a_file.dat", "BINARY");
  fs::create_symlink("a_file", dir.path / "a_file.u8");
  write_text(dir.path / ".hidden", "HIDDEN");
  write_text(dir.path / "empty", "");
  fs::create_directory(dir.path / "off");
  write_text(dir.path / "off" / "rude", "OFFENSIVE");
  const auto corpus = linrec::io::load_corpus(dir.path);
  CHECK(std::string(corpus.begin(), corpus.end()) == "first\nsecond\n");

  temp_dir empty_dir;
  CHECK_THAT(error_of([&] { linrec::io::load_corpus(empty_dir.path); }), Catch::Contains("no non-empty text files"));
}

TEST_CASE("text data: default corpus is found or the error says what to install", "[io][text]") {
  try {
    const fs::path path = linrec::io::default_corpus_path();
    const auto corpus = linrec::io::load_corpus(path);
    CHECK(corpus.size() > 1000);
    const std::string text(corpus.begin(), corpus.end());
    CHECK(text.find(std::string(1, '\0')) == std::string::npos);  // no .dat index bytes slipped in
  } catch (const linrec::Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("apt-get install fortunes"));
  }
}

TEST_CASE("text data: train/validation split by fraction, validation is the tail", "[io][text]") {
  std::vector<std::uint8_t> corpus(1000);
  for (std::size_t i = 0; i < corpus.size(); ++i) corpus[i] = static_cast<std::uint8_t>(i * 7);
  const auto split = linrec::io::split_train_validation(corpus, 0.1);
  CHECK(split.train.size() == 900);
  CHECK(split.validation.size() == 100);
  CHECK(std::equal(split.train.begin(), split.train.end(), corpus.begin()));
  CHECK(std::equal(split.validation.begin(), split.validation.end(), corpus.begin() + 900));
  CHECK(linrec::io::split_train_validation(corpus, 0.0).validation.empty());
  CHECK(linrec::io::split_train_validation(corpus, 0.0001).validation.size() == 1);
  CHECK(linrec::io::split_train_validation(corpus, 0.3337).validation.size() == 334);
  CHECK_THROWS_AS(linrec::io::split_train_validation(corpus, 1.0), linrec::Error);
  CHECK_THROWS_AS(linrec::io::split_train_validation(corpus, -0.1), linrec::Error);
  CHECK_THROWS_AS(linrec::io::split_train_validation(std::vector<std::uint8_t>{1}, 0.5), linrec::Error);
}

TEST_CASE("text data: byte tokenizer", "[io][text]") {
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  const auto ids = linrec::io::byte_tokenizer::encode(all);
  for (int b = 0; b < 256; ++b) CHECK(ids[b] == b);
  CHECK(linrec::io::byte_tokenizer::decode(ids) == all);
  CHECK(linrec::io::byte_tokenizer::vocab_size == 256);
  CHECK_THROWS_AS(linrec::io::byte_tokenizer::decode(std::vector<std::int32_t>{65, 256}), linrec::Error);
  CHECK_THROWS_AS(linrec::io::byte_tokenizer::decode(std::vector<std::int32_t>{-1}), linrec::Error);
}

namespace {
// text[i] = i mod 256: every window of a row counts up by one, which identifies its offset.
std::vector<std::uint8_t> counting_text(std::size_t n) {
  std::vector<std::uint8_t> text(n);
  for (std::size_t i = 0; i < n; ++i) text[i] = static_cast<std::uint8_t>(i % 256);
  return text;
}
}  // namespace

TEST_CASE("text data: random window sampler is seeded, in range and resumable", "[io][text]") {
  const auto text = counting_text(5000);
  linrec::io::random_window_sampler a(text, 4, 16, 42), b(text, 4, 16, 42), c(text, 4, 16, 43);
  const auto first_a = a.next();
  CHECK(first_a.tokens == b.next().tokens);
  CHECK(first_a.tokens != c.next().tokens);
  REQUIRE(first_a.tokens.size() == 4 * 17);
  for (std::int64_t r = 0; r < 4; ++r)
    for (std::int64_t t = 0; t < 16; ++t) CHECK(first_a.at(r, t + 1) == (first_a.at(r, t) + 1) % 256);
  // inputs/targets are the shifted views
  const auto inputs = first_a.inputs(), targets = first_a.targets();
  CHECK(inputs.size() == 64);
  CHECK(inputs[16] == first_a.at(1, 0));
  CHECK(targets[16] == first_a.at(1, 1));
  CHECK(targets[63] == first_a.at(3, 16));

  // state round trip: continue from a saved state = the original continuation, bitwise
  for (int i = 0; i < 5; ++i) a.next();
  const std::string saved = a.state();
  std::vector<std::vector<std::int32_t>> continuation;
  for (int i = 0; i < 10; ++i) continuation.push_back(a.next().tokens);
  linrec::io::random_window_sampler resumed(text, 4, 16, 999);
  resumed.set_state(saved);
  for (int i = 0; i < 10; ++i) CHECK(resumed.next().tokens == continuation[i]);

  CHECK_THROWS_WITH(linrec::io::random_window_sampler(text, 4, 8, 1).set_state(saved),
                    Catch::Contains("ctx=16, this sampler has ctx=8"));
  CHECK_THROWS_AS(resumed.set_state("garbage"), linrec::Error);
  CHECK_THROWS_AS(resumed.set_state("random_window_sampler v1 batch=4 ctx=16 text=5000 seed=-1 counter=2"),
                  linrec::Error);
  CHECK_THROWS_AS(linrec::io::random_window_sampler(counting_text(16), 1, 16, 1), linrec::Error);

  // every offset in [0, size-ctx-1] is drawn, none beyond
  const auto small = counting_text(20);
  linrec::io::random_window_sampler s(small, 8, 4, 3);
  std::vector<int> seen(20, 0);
  for (int i = 0; i < 300; ++i) {
    const auto batch = s.next();
    for (std::int64_t r = 0; r < 8; ++r) ++seen[static_cast<std::size_t>(batch.at(r, 0))];
  }
  for (int start = 0; start < 16; ++start) CHECK(seen[start] > 0);
  for (int start = 16; start < 20; ++start) CHECK(seen[start] == 0);
}

TEST_CASE("text data: contiguous (carry-state) sampler reads each row contiguously", "[io][text]") {
  const std::size_t n = 203;
  const auto text = counting_text(n);
  const std::int64_t batch = 4, ctx = 7;
  linrec::io::contiguous_sampler sampler(text, batch, ctx);
  CHECK(sampler.positions() == std::vector<std::uint64_t>{0, 50, 101, 152});  // floor(r·203/4)

  std::vector<std::vector<std::int32_t>> streams(batch);  // each row's inputs, step after step
  std::vector<std::int32_t> previous_last(batch, -1);
  int wraps = 0;
  for (int step = 0; step < 40; ++step) {
    const auto b = sampler.next();
    for (std::int64_t r = 0; r < batch; ++r) {
      if (previous_last[r] >= 0) CHECK(b.at(r, 0) == previous_last[r]);  // carried across steps
      previous_last[r] = b.at(r, ctx);
      for (std::int64_t t = 0; t < ctx; ++t) streams[r].push_back(b.at(r, t));
      wraps += b.wrapped[r];
    }
  }
  for (std::int64_t r = 0; r < batch; ++r) {
    const std::size_t start = static_cast<std::size_t>(r) * n / batch;
    for (std::size_t i = 0; i < streams[r].size(); ++i) {
      INFO("row " << r << " token " << i);
      CHECK(streams[r][i] == text[(start + i) % n]);
    }
  }
  CHECK(wraps == 4 * 1 + 1);  // 280 tokens each: every row wraps once; row 3 (start 152) twice

  const std::string saved = sampler.state();
  std::vector<std::vector<std::int32_t>> continuation;
  for (int i = 0; i < 5; ++i) continuation.push_back(sampler.next().tokens);
  linrec::io::contiguous_sampler resumed(text, batch, ctx);
  resumed.set_state(saved);
  for (int i = 0; i < 5; ++i) CHECK(resumed.next().tokens == continuation[i]);
  CHECK_THROWS_AS(linrec::io::contiguous_sampler(text, 3, ctx).set_state(saved), linrec::Error);
  CHECK_THROWS_WITH(resumed.set_state("contiguous_sampler v1 batch=4 ctx=7 text=203 positions=0,1,2,203"),
                    Catch::Contains("beyond the text"));
}

TEST_CASE("text data: unigram cross-entropy against hand-computed values", "[io][text]") {
  const std::vector<std::uint8_t> train = {'a', 'a', 'b'};
  const std::vector<std::uint8_t> text = {'a', 'b'};
  const auto counts = linrec::io::byte_counts(train);
  CHECK(counts['a'] == 2);
  CHECK(counts['b'] == 1);
  // no smoothing: -(ln 2/3 + ln 1/3)/2 = ln(4.5)/2
  CHECK(linrec::io::unigram_cross_entropy(counts, text, 0.0) == Approx(0.7520386983881371).epsilon(1e-12));
  // add-one over 256 bytes: -(ln 3/259 + ln 2/259)/2 = ln(259²/6)/2
  CHECK(linrec::io::unigram_cross_entropy(counts, text, 1.0) == Approx(4.66094832708551).epsilon(1e-12));
  CHECK(std::isinf(linrec::io::unigram_cross_entropy(counts, std::vector<std::uint8_t>{'c'}, 0.0)));
  CHECK_THROWS_AS(linrec::io::unigram_cross_entropy(counts, std::vector<std::uint8_t>{}), linrec::Error);
}
