#pragma once
// Byte-level text data for language-model training: load a corpus, split it, tokenize bytes,
// and draw [batch, ctx+1] token windows — at random offsets, or contiguously per row for
// truncated BPTT with the recurrent state carried between steps. Sampler state round-trips
// through a string so a checkpoint can resume the identical data order.
//
//   auto corpus = linrec::io::load_corpus(linrec::io::default_corpus_path());
//   auto split = linrec::io::split_train_validation(corpus, 0.1);       // tail 10% = validation
//   linrec::io::random_window_sampler train(split.train, /*batch*/ 8, /*ctx*/ 128, /*seed*/ 1);
//   linrec::io::token_batch b = train.next();   // b.inputs() / b.targets(): [8, 128] int32
//   std::string saved = train.state();  ...  train.set_state(saved);   // bitwise resume
//
// Samplers keep a view of the text: the bytes they were given must outlive them.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "linrec/core/error.hpp"
#include "linrec/core/rng.hpp"
#include "linrec/io/detail/file_error.hpp"
#include "linrec/io/detail/read_file.hpp"

namespace linrec::io {

// ---- corpus ------------------------------------------------------------------------------

struct corpus_options {
  // The whole corpus is held in memory: a larger one is refused before anything is read
  // (the bound is checked against the file's size, or a directory's running total).
  std::uint64_t max_bytes = std::uint64_t{4} << 30;  // 4 GiB
};

// The bytes of one regular file (symlinks followed). A missing, unreadable or empty file, a
// non-regular one (directory, FIFO, socket, device such as /dev/zero: refused before it is
// opened, so nothing blocks or reads forever) or one above options.max_bytes is a
// linrec::Error naming it.
std::vector<std::uint8_t> load_bytes(const std::filesystem::path& path, corpus_options options = {});

// A file's bytes, or for a directory the concatenation of its plain-text files (sorted by
// name; `.dat` and `.u8` files, hidden files, non-regular files and sub-folders such as
// fortune's `off/` are skipped; a newline is added after a file that lacks one). The total
// must stay within options.max_bytes.
std::vector<std::uint8_t> load_corpus(const std::filesystem::path& path, corpus_options options = {});

// The corpus the README's setup installs: Debian's fortune files (`apt-get install fortunes`,
// or `fortunes-min`), a directory for load_corpus. Throws naming what to install if absent.
std::filesystem::path default_corpus_path();

// ---- split and tokenizer ---------------------------------------------------------------------

struct text_split {
  std::vector<std::uint8_t> train;
  std::vector<std::uint8_t> validation;  // the contiguous tail
};
// validation_fraction in [0, 1): the last round(n·fraction) bytes (at least 1 when the
// fraction is positive) are validation; train keeps at least one byte.
text_split split_train_validation(std::span<const std::uint8_t> corpus, double validation_fraction);

// Bytes are tokens: id = byte value, vocabulary 256.
struct byte_tokenizer {
  static constexpr std::int32_t vocab_size = 256;
  static std::vector<std::int32_t> encode(std::string_view text);
  static std::vector<std::int32_t> encode(std::span<const std::uint8_t> bytes);
  // Throws on ids outside [0, 256).
  static std::string decode(std::span<const std::int32_t> ids);
};

// ---- batches -----------------------------------------------------------------------------

// `batch` rows of `ctx + 1` consecutive tokens (row-major [batch, ctx+1]): a row's inputs are
// its first ctx tokens, its targets the last ctx (the next token at each position).
struct token_batch {
  std::int64_t batch = 0;
  std::int64_t ctx = 0;
  std::vector<std::int32_t> tokens;  // [batch, ctx + 1]
  // contiguous_sampler only: 1 where the row's window ran past the end of the text and
  // wrapped to its start (the carried state then spans a jump in the text).
  std::vector<std::uint8_t> wrapped;

  std::int32_t at(std::int64_t row, std::int64_t position) const { return tokens[row * (ctx + 1) + position]; }
  std::vector<std::int32_t> inputs() const { return columns(0); }   // [batch, ctx]
  std::vector<std::int32_t> targets() const { return columns(1); }  // [batch, ctx]

 private:
  std::vector<std::int32_t> columns(std::int64_t first) const {
    std::vector<std::int32_t> out(static_cast<std::size_t>(batch * ctx));
    for (std::int64_t r = 0; r < batch; ++r)
      std::copy_n(tokens.begin() + r * (ctx + 1) + first, ctx, out.begin() + r * ctx);
    return out;
  }
};

// Each row is a window at an independent uniform offset in [0, size - ctx - 1], drawn from a
// seeded linrec::rng: the same seed gives the same batches, and state()/set_state() resume
// the sequence exactly.
class random_window_sampler {
 public:
  random_window_sampler(std::span<const std::uint8_t> text, std::int64_t batch, std::int64_t ctx, std::uint64_t seed);
  token_batch next();
  // One line of text; set_state checks that it belongs to a sampler of the same shape.
  std::string state() const;
  void set_state(std::string_view saved);

 private:
  std::span<const std::uint8_t> text_;
  std::int64_t batch_, ctx_;
  rng rng_;
};

// For --carry-state training: row r reads the text contiguously, starting at r·size/batch
// and advancing by ctx each step (modulo size), so the last token of one window is the first
// of the next and the recurrent state can be carried across steps.
class contiguous_sampler {
 public:
  contiguous_sampler(std::span<const std::uint8_t> text, std::int64_t batch, std::int64_t ctx);
  token_batch next();
  const std::vector<std::uint64_t>& positions() const { return positions_; }  // next window starts
  std::string state() const;
  void set_state(std::string_view saved);

 private:
  std::span<const std::uint8_t> text_;
  std::int64_t batch_, ctx_;
  std::vector<std::uint64_t> positions_;
};

// ---- unigram baseline --------------------------------------------------------------------

std::array<std::uint64_t, 256> byte_counts(std::span<const std::uint8_t> text);
// Mean cross-entropy in nats/byte of `text` under the unigram model of `train_counts` with
// add-`smoothing` (Laplace) counts: p(b) = (n_b + s) / (N + 256 s). +infinity if a byte of
// `text` has probability 0 (smoothing 0 and unseen in training). Empty `text` is an error.
double unigram_cross_entropy(const std::array<std::uint64_t, 256>& train_counts, std::span<const std::uint8_t> text,
                             double smoothing = 1.0);

// ------------------------------------------------------------------------------------------
// implementation
// ------------------------------------------------------------------------------------------
namespace detail {

// Parses "name v1 key=value ..." where the values are unsigned integers or comma lists.
class state_reader {
 public:
  state_reader(std::string_view text, std::string_view kind) : text_(text), kind_(kind) {
    std::istringstream in{std::string(text)};
    std::string word;
    LINREC_CHECK((in >> word) && word == kind && (in >> word) && word == "v1",
                 kind << ": saved state '" << io::detail::printable(text) << "' is not a " << kind << " v1 state");
    while (in >> word) words_.push_back(word);
  }
  std::vector<std::uint64_t> values(std::string_view key) const {
    for (const std::string& w : words_) {
      if (w.size() <= key.size() || w.compare(0, key.size(), key) != 0 || w[key.size()] != '=') continue;
      std::vector<std::uint64_t> out;
      std::istringstream list(w.substr(key.size() + 1));
      std::string item;
      while (std::getline(list, item, ',')) {
        std::size_t used = 0;
        std::uint64_t v = 0;
        bool ok = !item.empty() && item[0] != '-';
        try {
          v = std::stoull(item, &used);
        } catch (const std::exception&) {
          ok = false;
        }
        LINREC_CHECK(ok && used == item.size(),
                     kind_ << ": saved state has a bad value in '" << io::detail::printable(w) << "'");
        out.push_back(v);
      }
      return out;
    }
    LINREC_CHECK(false, kind_ << ": saved state '" << io::detail::printable(text_) << "' lacks " << key);
    return {};
  }
  std::uint64_t value(std::string_view key) const {
    const auto v = values(key);
    LINREC_CHECK(v.size() == 1, kind_ << ": saved state field " << key << " should hold one value");
    return v[0];
  }
  void expect(std::string_view key, std::uint64_t wanted) const {
    const std::uint64_t got = value(key);
    LINREC_CHECK(got == wanted,
                 kind_ << ": saved state has " << key << '=' << got << ", this sampler has " << key << '=' << wanted);
  }

 private:
  std::string_view text_, kind_;
  std::vector<std::string> words_;
};

inline void check_window_shape(std::string_view kind, std::size_t text_size, std::int64_t batch, std::int64_t ctx) {
  LINREC_CHECK(batch >= 1 && ctx >= 1, kind << ": batch " << batch << " and ctx " << ctx << " must be positive");
  LINREC_CHECK(text_size >= static_cast<std::uint64_t>(ctx) + 1,
               kind << ": text of " << text_size << " bytes is shorter than one window of ctx+1 = " << ctx + 1);
}

inline bool is_corpus_file(const std::filesystem::directory_entry& entry) {
  const std::string name = entry.path().filename().string();
  const std::string ext = entry.path().extension().string();
  std::error_code ec;
  return entry.is_regular_file(ec) && !name.empty() && name[0] != '.' && ext != ".dat" && ext != ".u8";
}

}  // namespace detail

inline std::vector<std::uint8_t> load_bytes(const std::filesystem::path& path, corpus_options options) {
  std::vector<std::uint8_t> bytes =
      io::detail::read_regular_file<std::uint8_t>(path, options.max_bytes, "corpus_options::max_bytes");
  if (bytes.empty()) io::detail::throw_file_error(path.string(), "file is empty");
  return bytes;
}

inline std::vector<std::uint8_t> load_corpus(const std::filesystem::path& path, corpus_options options) {
  std::error_code ec;
  // is_directory follows symlinks; everything else (a file, /dev/zero, a FIFO, a missing
  // path) goes to load_bytes, which refuses what is not a regular file.
  if (!std::filesystem::is_directory(path, ec)) return load_bytes(path, options);
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(path, ec))
    if (detail::is_corpus_file(entry)) files.push_back(entry.path());
  if (ec) io::detail::throw_file_error(path.string(), io::detail::concat("cannot list directory: ", ec.message()));
  std::sort(files.begin(), files.end());
  std::vector<std::uint8_t> corpus;
  for (const auto& file : files) {
    std::error_code size_ec;
    const std::uint64_t size = std::filesystem::file_size(file, size_ec);  // on error load_bytes says why
    if (!size_ec && size == 0) continue;                                   // skip empty files in a folder
    // The bound counts the newline that may follow each file.
    const std::uint64_t left = options.max_bytes - corpus.size();
    if (!size_ec && size >= left)
      io::detail::throw_file_error(
          path.string(), io::detail::concat("its text files add up to more than the limit of ", options.max_bytes,
                                            " bytes (corpus_options::max_bytes) at '",
                                            io::detail::printable(file.filename().string()), "'"));
    const std::vector<std::uint8_t> bytes = load_bytes(file, {.max_bytes = left == 0 ? 0 : left - 1});
    corpus.insert(corpus.end(), bytes.begin(), bytes.end());
    if (corpus.back() != '\n') corpus.push_back('\n');
  }
  if (corpus.empty()) io::detail::throw_file_error(path.string(), "directory holds no non-empty text files");
  return corpus;
}

inline std::filesystem::path default_corpus_path() {
  for (const char* candidate : {"/usr/share/games/fortunes", "/usr/share/fortunes", "/usr/share/fortune"}) {
    std::error_code ec;
    if (!std::filesystem::is_directory(candidate, ec)) continue;
    for (const auto& entry : std::filesystem::directory_iterator(candidate, ec))
      if (detail::is_corpus_file(entry)) return candidate;
  }
  throw ::linrec::Error(
      "linrec: no default corpus: /usr/share/games/fortunes has no fortune files; install them with "
      "`sudo apt-get install fortunes` (or fortunes-min), or pass --data FILE");
}

inline text_split split_train_validation(std::span<const std::uint8_t> corpus, double validation_fraction) {
  LINREC_CHECK(validation_fraction >= 0.0 && validation_fraction < 1.0,
               "split_train_validation: fraction " << validation_fraction << " outside [0, 1)");
  const std::size_t n = corpus.size();
  std::size_t validation = static_cast<std::size_t>(std::llround(static_cast<double>(n) * validation_fraction));
  if (validation_fraction > 0.0 && validation == 0) validation = 1;
  LINREC_CHECK(validation < n, "split_train_validation: " << n << " bytes leave nothing for training at fraction "
                                                          << validation_fraction);
  text_split split;
  split.train.assign(corpus.begin(), corpus.end() - static_cast<std::ptrdiff_t>(validation));
  split.validation.assign(corpus.end() - static_cast<std::ptrdiff_t>(validation), corpus.end());
  return split;
}

inline std::vector<std::int32_t> byte_tokenizer::encode(std::string_view text) {
  std::vector<std::int32_t> ids(text.size());
  std::transform(text.begin(), text.end(), ids.begin(), [](char c) { return static_cast<unsigned char>(c); });
  return ids;
}
inline std::vector<std::int32_t> byte_tokenizer::encode(std::span<const std::uint8_t> bytes) {
  return std::vector<std::int32_t>(bytes.begin(), bytes.end());
}
inline std::string byte_tokenizer::decode(std::span<const std::int32_t> ids) {
  std::string text(ids.size(), '\0');
  for (std::size_t i = 0; i < ids.size(); ++i) {
    LINREC_CHECK(ids[i] >= 0 && ids[i] < vocab_size,
                 "byte_tokenizer::decode: id " << ids[i] << " at position " << i << " outside [0, 256)");
    text[i] = static_cast<char>(static_cast<unsigned char>(ids[i]));
  }
  return text;
}

inline random_window_sampler::random_window_sampler(std::span<const std::uint8_t> text, std::int64_t batch,
                                                    std::int64_t ctx, std::uint64_t seed)
    : text_(text), batch_(batch), ctx_(ctx), rng_(seed) {
  detail::check_window_shape("random_window_sampler", text.size(), batch, ctx);
}

inline token_batch random_window_sampler::next() {
  token_batch out{batch_, ctx_, std::vector<std::int32_t>(static_cast<std::size_t>(batch_ * (ctx_ + 1))), {}};
  const std::uint64_t offsets = text_.size() - static_cast<std::uint64_t>(ctx_);  // starts in [0, size-ctx-1]
  for (std::int64_t r = 0; r < batch_; ++r) {
    const std::uint64_t start = rng_.below(offsets);
    std::copy_n(text_.begin() + static_cast<std::ptrdiff_t>(start), ctx_ + 1, out.tokens.begin() + r * (ctx_ + 1));
  }
  return out;
}

inline std::string random_window_sampler::state() const {
  const rng_state s = rng_.state();
  return io::detail::concat("random_window_sampler v1 batch=", batch_, " ctx=", ctx_, " text=", text_.size(),
                            " seed=", s.seed, " counter=", s.counter);
}

inline void random_window_sampler::set_state(std::string_view saved) {
  const detail::state_reader in(saved, "random_window_sampler");
  in.expect("batch", static_cast<std::uint64_t>(batch_));
  in.expect("ctx", static_cast<std::uint64_t>(ctx_));
  in.expect("text", text_.size());
  rng_.set_state(rng_state{in.value("seed"), in.value("counter")});
}

inline contiguous_sampler::contiguous_sampler(std::span<const std::uint8_t> text, std::int64_t batch, std::int64_t ctx)
    : text_(text), batch_(batch), ctx_(ctx) {
  detail::check_window_shape("contiguous_sampler", text.size(), batch, ctx);
  const std::uint64_t n = text.size(), rows = static_cast<std::uint64_t>(batch);
  // floor(r·n / rows) without overflowing r·n: n = q·rows + m.
  for (std::uint64_t r = 0; r < rows; ++r) positions_.push_back(r * (n / rows) + r * (n % rows) / rows);
}

inline token_batch contiguous_sampler::next() {
  token_batch out{batch_, ctx_, std::vector<std::int32_t>(static_cast<std::size_t>(batch_ * (ctx_ + 1))),
                  std::vector<std::uint8_t>(static_cast<std::size_t>(batch_), 0)};
  const std::uint64_t n = text_.size();
  for (std::int64_t r = 0; r < batch_; ++r) {
    std::uint64_t& position = positions_[static_cast<std::size_t>(r)];
    for (std::int64_t t = 0; t <= ctx_; ++t) {
      const std::uint64_t index = (position + static_cast<std::uint64_t>(t)) % n;
      if (index < position) out.wrapped[static_cast<std::size_t>(r)] = 1;
      out.tokens[static_cast<std::size_t>(r * (ctx_ + 1) + t)] = text_[index];
    }
    position = (position + static_cast<std::uint64_t>(ctx_)) % n;
  }
  return out;
}

inline std::string contiguous_sampler::state() const {
  std::string text =
      io::detail::concat("contiguous_sampler v1 batch=", batch_, " ctx=", ctx_, " text=", text_.size(), " positions=");
  for (std::size_t r = 0; r < positions_.size(); ++r) {
    if (r > 0) text += ',';
    text += std::to_string(positions_[r]);
  }
  return text;
}

inline void contiguous_sampler::set_state(std::string_view saved) {
  const detail::state_reader in(saved, "contiguous_sampler");
  in.expect("batch", static_cast<std::uint64_t>(batch_));
  in.expect("ctx", static_cast<std::uint64_t>(ctx_));
  in.expect("text", text_.size());
  std::vector<std::uint64_t> positions = in.values("positions");
  LINREC_CHECK(positions.size() == positions_.size(),
               "contiguous_sampler: saved state has " << positions.size() << " positions, batch is " << batch_);
  for (std::uint64_t p : positions)
    LINREC_CHECK(p < text_.size(),
                 "contiguous_sampler: saved position " << p << " beyond the text of " << text_.size() << " bytes");
  positions_ = std::move(positions);
}

inline std::array<std::uint64_t, 256> byte_counts(std::span<const std::uint8_t> text) {
  std::array<std::uint64_t, 256> counts{};
  for (std::uint8_t b : text) ++counts[b];
  return counts;
}

inline double unigram_cross_entropy(const std::array<std::uint64_t, 256>& train_counts,
                                    std::span<const std::uint8_t> text, double smoothing) {
  LINREC_CHECK(!text.empty(), "unigram_cross_entropy: empty text");
  LINREC_CHECK(smoothing >= 0.0, "unigram_cross_entropy: negative smoothing " << smoothing);
  double total = 256.0 * smoothing;
  for (std::uint64_t c : train_counts) total += static_cast<double>(c);
  LINREC_CHECK(total > 0.0, "unigram_cross_entropy: no training counts and no smoothing");
  // H = -(1/|text|) Σ_b m_b ln p(b), m_b = occurrences of b in text
  const std::array<std::uint64_t, 256> text_counts = byte_counts(text);
  double nats = 0.0;
  for (std::size_t b = 0; b < 256; ++b) {
    if (text_counts[b] == 0) continue;
    const double p = (static_cast<double>(train_counts[b]) + smoothing) / total;
    if (p == 0.0) return std::numeric_limits<double>::infinity();
    nats -= static_cast<double>(text_counts[b]) * std::log(p);
  }
  return nats / static_cast<double>(text.size());
}

}  // namespace linrec::io
