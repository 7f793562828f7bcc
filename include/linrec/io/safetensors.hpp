#pragma once
// Checkpoints in the safetensors format: named float32 tensors plus a string→string metadata
// map, written atomically and validated completely before anything is returned.
//
//   linrec::io::tensor_file ckpt;
//   ckpt.add("blocks.0.att.time_decay", {4, 64}, decay_values);    // std::vector<float> or span
//   ckpt.metadata["step"] = "100";
//   linrec::io::save_safetensors("run/ckpt.safetensors", ckpt);     // temp + fsync + rename
//
//   linrec::io::tensor_file back = linrec::io::load_safetensors("run/ckpt.safetensors");
//   const linrec::io::named_tensor& decay = back.at("blocks.0.att.time_decay");
//
// File layout (https://github.com/huggingface/safetensors, format section):
//   [8 bytes: header length N, unsigned little-endian]
//   [N bytes: JSON {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [...],
//                                                        "data_offsets": [begin, end]}, ...},
//             padded with spaces to a multiple of 8]
//   [data: the tensors' bytes, little-endian, offsets relative to the start of this part]
// Only F32 is read or written. Tensors keep their order: they are written in insertion order
// and read back in the order of their data offsets (ties — empty tensors — in header order).
//
// Loading checks everything (lengths, JSON, dtype, shapes, offsets sorted, contiguous and
// covering the data exactly, checksums, no NaN/Inf unless allowed) and throws linrec::Error
// with one line naming the file and the problem; no partially loaded object ever escapes.
//
// Integrity (docs/io.md, "Integrity"): the structure checks above cannot see a flipped bit in
// a weight (1.0f and 1e37f are both valid floats), so every file written here carries CRC-32C
// checksums in one metadata entry, "linrec.checksums" — a compact JSON object
//   {"__metadata__": "<crc>", "<tensor name>": "<crc>", ...}     (<crc>: 8 lowercase hex digits)
// where a tensor's CRC covers its shape (rank and each dimension as u64 little-endian, so a
// damaged shape of an empty tensor is caught too) followed by its data bytes as stored, and
// "__metadata__" covers every other metadata entry (sorted by key: u64 length + bytes of the
// key, then of the value). It is ordinary string metadata, so other safetensors readers load
// the file unchanged. Loading verifies it when present and removes it from
// tensor_file::metadata (it describes the file, not the model); a file without it (the previous
// release's, other writers') loads as before, unverified. A malformed entry, or a metadata key
// one bit away from "linrec.checksums" (that key, damaged), is an error.
//
// load_safetensors reads only regular files (symlinks followed) of at most
// safetensors_options::max_bytes: /dev/zero, a FIFO, a directory are refused before reading.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "linrec/core/error.hpp"
#include "linrec/io/detail/crc32c.hpp"
#include "linrec/io/detail/file_error.hpp"
#include "linrec/io/detail/read_file.hpp"

namespace linrec::io {

// One tensor: its name, its shape (empty = a 0-d scalar with one element) and its values in
// row-major order (product of the shape elements).
struct named_tensor {
  std::string name;
  std::vector<std::int64_t> shape;
  std::vector<float> data;

  friend bool operator==(const named_tensor&, const named_tensor&) = default;
};

// The metadata key that holds the checksums (see the top of this file); reserved: saving a
// tensor_file whose metadata has it is an error.
inline constexpr std::string_view checksums_key = "linrec.checksums";

// An ordered set of uniquely named tensors plus free-form string metadata (model config,
// optimizer step, RNG state, ...). `add` checks names and shapes, so every tensor_file is
// consistent.
class tensor_file {
 public:
  std::map<std::string, std::string> metadata;
  // Where the tensors came from (load_safetensors: the path; parse_safetensors: its `source`),
  // so that errors found later — a missing tensor, a bad metadata number — name the file.
  // Empty for a tensor_file built in memory. Not part of ==.
  std::string source;

  void add(std::string name, std::vector<std::int64_t> shape, std::vector<float> data);
  void add(std::string name, std::vector<std::int64_t> shape, std::span<const float> data) {
    add(std::move(name), std::move(shape), std::vector<float>(data.begin(), data.end()));
  }

  const std::vector<named_tensor>& tensors() const { return tensors_; }
  std::size_t size() const { return tensors_.size(); }
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  const named_tensor* find(std::string_view name) const;
  // Throws linrec::Error naming the missing tensor.
  const named_tensor& at(std::string_view name) const;

  friend bool operator==(const tensor_file& a, const tensor_file& b) {
    return a.metadata == b.metadata && a.tensors_ == b.tensors_;
  }

 private:
  std::vector<named_tensor> tensors_;
};

struct safetensors_options {
  // NaN/Inf in a checkpoint means training went wrong: refused unless this is set.
  bool allow_non_finite = false;
  // load_safetensors reads the whole file into memory: a larger one is refused before any
  // byte is read.
  std::uint64_t max_bytes = std::uint64_t{16} << 30;  // 16 GiB
};

// The file's bytes, exactly as save_safetensors writes them.
std::vector<std::byte> serialize_safetensors(const tensor_file& file, safetensors_options options = {});
// Parses and validates bytes in memory; `source` names them in error messages.
tensor_file parse_safetensors(std::span<const std::byte> bytes, std::string_view source = "<memory>",
                              safetensors_options options = {});
// Atomic: writes a temp file in the same directory, fsyncs it, renames it over `path` and
// fsyncs the directory. On failure the old file is untouched and the temp file removed.
void save_safetensors(const std::filesystem::path& path, const tensor_file& file, safetensors_options options = {});
tensor_file load_safetensors(const std::filesystem::path& path, safetensors_options options = {});

// ------------------------------------------------------------------------------------------
// implementation
// ------------------------------------------------------------------------------------------
namespace detail {

inline constexpr std::uint64_t max_header_bytes = 100u << 20;            // like the reference reader
inline constexpr int max_json_depth = 8;                                 // we need 3
inline constexpr std::uint64_t max_file_bytes = std::uint64_t{1} << 60;  // bounds every offset and size

// Number of elements of `shape`, or an error text if a dimension is negative or the
// product exceeds `limit`.
inline bool checked_numel(std::span<const std::int64_t> shape, std::uint64_t limit, std::uint64_t& numel,
                          std::string& why) {
  numel = 1;
  for (std::int64_t dim : shape) {
    if (dim < 0) {
      why = io::detail::concat("negative dimension ", dim);
      return false;
    }
    if (dim == 0) {
      numel = 0;
      continue;
    }
    if (numel != 0 && numel > limit / static_cast<std::uint64_t>(dim)) {
      why = "too many elements";
      return false;
    }
    numel *= static_cast<std::uint64_t>(dim);
  }
  return true;
}

inline std::string shape_text(std::span<const std::int64_t> shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  out += ']';
  return out;
}

// A tensor's checksum, over its shape then its data bytes (`data`: little-endian F32).
inline std::uint32_t tensor_checksum(std::span<const std::int64_t> shape, std::span<const std::byte> data) {
  std::uint32_t crc = crc32c_u64(shape.size(), 0);
  for (std::int64_t dim : shape) crc = crc32c_u64(static_cast<std::uint64_t>(dim), crc);
  return crc32c(data, crc);
}
inline std::uint32_t tensor_checksum(std::span<const std::int64_t> shape, std::span<const float> values) {
  if constexpr (std::endian::native == std::endian::little) {
    return tensor_checksum(shape, std::as_bytes(values));
  } else {  // hash the bytes as stored: little-endian
    std::uint32_t crc = tensor_checksum(shape, std::span<const std::byte>());
    std::uint32_t chunk[256];
    for (std::size_t i = 0; i < values.size(); i += 256) {
      const std::size_t count = std::min<std::size_t>(256, values.size() - i);
      for (std::size_t k = 0; k < count; ++k) chunk[k] = to_little_endian(std::bit_cast<std::uint32_t>(values[i + k]));
      crc = crc32c(std::as_bytes(std::span<const std::uint32_t>(chunk, count)), crc);
    }
    return crc;
  }
}

// The metadata's checksum: every entry but the checksums themselves, in key order (std::map:
// byte-wise), each as u64 length + bytes of the key, then of the value.
inline std::uint32_t metadata_checksum(const std::map<std::string, std::string>& metadata) {
  std::uint32_t crc = 0;
  for (const auto& [key, value] : metadata) {
    if (key == checksums_key) continue;
    for (const std::string* text : {&key, &value}) {
      crc = crc32c_u64(text->size(), crc);
      crc = crc32c(std::as_bytes(std::span<const char>(*text)), crc);
    }
  }
  return crc;
}

inline std::string crc_hex(std::uint32_t crc) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(8, '0');
  for (int i = 7; i >= 0; --i, crc >>= 4) out[static_cast<std::size_t>(i)] = digits[crc & 0xfu];
  return out;
}
// Exactly 8 lowercase hex digits, as crc_hex writes them.
inline bool parse_crc_hex(std::string_view text, std::uint32_t& crc) {
  if (text.size() != 8) return false;
  crc = 0;
  for (char c : text) {
    const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (digit < 0) return false;
    crc = (crc << 4) | static_cast<std::uint32_t>(digit);
  }
  return true;
}

// A key of the same length one bit away from "linrec.checksums": that key, damaged. Without
// this rule a flip in the key's name would turn a checksummed file into an unverified one.
inline bool is_damaged_checksums_key(std::string_view key) {
  if (key.size() != checksums_key.size()) return false;
  int bits = 0;
  for (std::size_t i = 0; i < key.size(); ++i)
    bits += std::popcount(
        static_cast<unsigned>(static_cast<unsigned char>(key[i]) ^ static_cast<unsigned char>(checksums_key[i])));
  return bits == 1;
}

// Deepest nesting of [ and { outside strings; a cheap bound before the real parser runs.
inline int json_depth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

// A JSON number that is a non-negative integer (not 1.0, not -1, not 1e30).
inline bool as_uint(const nlohmann::ordered_json& value, std::uint64_t& out) {
  if (value.is_number_unsigned()) {
    out = value.get<std::uint64_t>();
    return true;
  }
  if (value.is_number_integer() && value.get<std::int64_t>() >= 0) {
    out = static_cast<std::uint64_t>(value.get<std::int64_t>());
    return true;
  }
  return false;
}

struct tensor_entry {
  std::string name;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0, numel = 0;
};

// Closes a file descriptor and removes the temp file unless released.
class temp_file_guard {
 public:
  temp_file_guard(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  temp_file_guard(const temp_file_guard&) = delete;
  temp_file_guard& operator=(const temp_file_guard&) = delete;
  ~temp_file_guard() {
    if (fd_ >= 0) ::close(fd_);
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  int fd() const { return fd_; }
  // Closes the descriptor; returns false (errno set) if close reported an error.
  bool close() {
    const int fd = std::exchange(fd_, -1);
    return ::close(fd) == 0;
  }
  void keep() { path_.clear(); }

 private:
  int fd_;
  std::string path_;
};

}  // namespace detail

inline void tensor_file::add(std::string name, std::vector<std::int64_t> shape, std::vector<float> data) {
  LINREC_CHECK(!name.empty(), "tensor_file::add: empty tensor name");
  LINREC_CHECK(name != "__metadata__", "tensor_file::add: '__metadata__' is reserved and cannot name a tensor");
  LINREC_CHECK(!contains(name), "tensor_file::add: duplicate tensor name '" << io::detail::printable(name) << "'");
  std::uint64_t numel = 0;
  std::string why;
  const bool shape_ok = detail::checked_numel(shape, std::numeric_limits<std::uint64_t>::max() / 4, numel, why);
  LINREC_CHECK(shape_ok, "tensor_file::add: tensor '" << io::detail::printable(name) << "' shape "
                                                      << detail::shape_text(shape) << ": " << why);
  LINREC_CHECK(numel == data.size(), "tensor_file::add: tensor '" << io::detail::printable(name) << "' shape "
                                                                  << detail::shape_text(shape) << " needs " << numel
                                                                  << " values, got " << data.size());
  tensors_.push_back(named_tensor{std::move(name), std::move(shape), std::move(data)});
}

inline const named_tensor* tensor_file::find(std::string_view name) const {
  for (const named_tensor& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

inline const named_tensor& tensor_file::at(std::string_view name) const {
  const named_tensor* t = find(name);
  LINREC_CHECK(t != nullptr, "tensor_file: no tensor named '" << io::detail::printable(name) << "' (file has "
                                                              << tensors_.size() << " tensors)");
  return *t;
}

inline std::vector<std::byte> serialize_safetensors(const tensor_file& file, safetensors_options options) {
  // The checksums entry is written here, from the data: a caller's copy could only be stale,
  // and a key one bit away from it would make the file unreadable (see parse_safetensors).
  for (const auto& [key, value] : file.metadata) {
    (void)value;
    LINREC_CHECK(key != checksums_key && !detail::is_damaged_checksums_key(key),
                 "save_safetensors: metadata key '" << io::detail::printable(key)
                                                    << "' is reserved for (or one bit away from) the checksums that "
                                                       "saving writes");
  }
  nlohmann::ordered_json checksums = nlohmann::ordered_json::object();
  checksums["__metadata__"] = detail::crc_hex(detail::metadata_checksum(file.metadata));
  for (const named_tensor& t : file.tensors()) {
    if (!options.allow_non_finite) {
      for (std::size_t i = 0; i < t.data.size(); ++i) {
        LINREC_CHECK(std::isfinite(t.data[i]), "save_safetensors: tensor '" << io::detail::printable(t.name)
                                                                            << "' element " << i << " is " << t.data[i]
                                                                            << " (not finite)");
      }
    }
    checksums[t.name] = detail::crc_hex(detail::tensor_checksum(t.shape, std::span<const float>(t.data)));
  }

  // dump() with error_handler strict: metadata and names must be valid UTF-8, else json throws.
  std::string header_text;
  std::uint64_t offset = 0;
  try {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : file.metadata) meta[key] = value;
    meta[std::string(checksums_key)] = checksums.dump();
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    header["__metadata__"] = std::move(meta);  // first, as the reference writer puts it
    for (const named_tensor& t : file.tensors()) {
      const std::uint64_t bytes = t.data.size() * sizeof(float);
      header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
      offset += bytes;
    }
    header_text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw ::linrec::Error(io::detail::concat("linrec: save_safetensors: ", io::detail::printable(e.what(), 200)));
  }
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // align the data to 8 bytes

  std::vector<std::byte> out(8 + header_text.size() + offset);
  std::uint64_t header_length = header_text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::byte>((header_length >> (8 * i)) & 0xff);
  std::memcpy(out.data() + 8, header_text.data(), header_text.size());
  std::byte* data_out = out.data() + 8 + header_text.size();
  for (const named_tensor& t : file.tensors()) {
    for (float value : t.data) {
      const std::uint32_t bits = detail::to_little_endian(std::bit_cast<std::uint32_t>(value));
      std::memcpy(data_out, &bits, 4);
      data_out += 4;
    }
  }
  return out;
}

inline tensor_file parse_safetensors(std::span<const std::byte> bytes, std::string_view source,
                                     safetensors_options options) {
  using io::detail::printable;
  using io::detail::throw_file_error;
  using json = nlohmann::ordered_json;
  // fail("tensor ", name, " needs ", bytes, " bytes"): builds the one-line message by appending
  // (numbers via std::to_string) and throws it, naming `source`.
  const auto fail = [&](const auto&... parts) { throw_file_error(source, io::detail::concat(parts...)); };

  // 1. header length
  if (bytes.size() < 8) fail("truncated: file has ", bytes.size(), " bytes, the header length alone needs 8");
  std::uint64_t header_length = 0;
  for (int i = 0; i < 8; ++i) header_length |= static_cast<std::uint64_t>(bytes[i]) << (8 * i);
  const std::uint64_t after_length = bytes.size() - 8;
  if (header_length > detail::max_header_bytes && header_length <= after_length)
    fail("header length ", header_length, " exceeds the limit of ", detail::max_header_bytes, " bytes");
  if (header_length > after_length)
    fail("truncated: header says ", header_length, " bytes, file has ", after_length, " after the length field");
  if (header_length < 2) fail("header of ", header_length, " bytes cannot hold a JSON object");

  // 2. JSON
  const std::string_view header_text(reinterpret_cast<const char*>(bytes.data() + 8), header_length);
  // JSON text never holds a raw NUL, and the parser would stop reading at one.
  if (const auto nul = header_text.find('\0'); nul != std::string_view::npos)
    fail("header has a NUL byte at offset ", nul, " (not JSON text)");
  if (detail::json_depth(header_text) > detail::max_json_depth)
    fail("header JSON is nested more than ", detail::max_json_depth, " levels deep");
  json header;
  try {
    header = json::parse(header_text);
  } catch (const json::exception& e) {
    fail("header is not valid JSON: ", printable(e.what(), 160));
  }
  if (!header.is_object()) fail("header JSON is a ", header.type_name(), ", expected an object");

  // 3. entries
  const std::span<const std::byte> data = bytes.subspan(8 + header_length);
  tensor_file result;
  result.source = source;
  std::vector<detail::tensor_entry> entries;
  for (const auto& [key, value] : header.items()) {
    std::string name_text = "'";
    name_text += printable(key);
    name_text += '\'';
    if (key == "__metadata__") {
      if (!value.is_object()) fail("__metadata__ is a ", value.type_name(), ", expected an object");
      for (const auto& [meta_key, meta_value] : value.items()) {
        if (!meta_value.is_string())
          fail("__metadata__ entry '", printable(meta_key), "' is a ", meta_value.type_name(), ", expected a string");
        result.metadata[meta_key] = meta_value.get<std::string>();
      }
      continue;
    }
    if (key.empty()) fail("a tensor has an empty name");
    if (!value.is_object()) fail("tensor ", name_text, " is a ", value.type_name(), ", expected an object");
    for (const auto& [field, field_value] : value.items()) {
      (void)field_value;
      if (field != "dtype" && field != "shape" && field != "data_offsets")
        fail("tensor ", name_text, " has unknown field '", printable(field), "'");
    }
    const auto dtype = value.find("dtype");
    const auto shape = value.find("shape");
    const auto offsets = value.find("data_offsets");
    if (dtype == value.end() || shape == value.end() || offsets == value.end())
      fail("tensor ", name_text, " lacks ",
           (dtype == value.end()   ? "dtype"
            : shape == value.end() ? "shape"
                                   : "data_offsets"));
    if (!dtype->is_string()) fail("tensor ", name_text, " dtype is not a string");
    if (dtype->get_ref<const std::string&>() != "F32")
      fail("tensor ", name_text, " has dtype ", printable(dtype->get_ref<const std::string&>()),
           ", only F32 is supported");

    detail::tensor_entry entry;
    entry.name = key;
    if (!shape->is_array()) fail("tensor ", name_text, " shape is not an array");
    for (const json& dim : *shape) {
      std::uint64_t d = 0;
      if (!detail::as_uint(dim, d))
        fail("tensor ", name_text, " shape has ", printable(dim.dump()), ", expected a non-negative integer");
      if (d > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        fail("tensor ", name_text, " shape dimension ", d, " is too large");
      entry.shape.push_back(static_cast<std::int64_t>(d));
    }
    std::string why;
    if (!detail::checked_numel(entry.shape, detail::max_file_bytes / 4, entry.numel, why))
      fail("tensor ", name_text, " shape ", detail::shape_text(entry.shape), ": ", why);

    if (!offsets->is_array() || offsets->size() != 2 || !detail::as_uint((*offsets)[0], entry.begin) ||
        !detail::as_uint((*offsets)[1], entry.end))
      fail("tensor ", name_text, " data_offsets must be [begin, end] with non-negative integers");
    if (entry.begin > entry.end)
      fail("tensor ", name_text, " data_offsets [", entry.begin, ", ", entry.end, "] end before begin");
    if (entry.end > detail::max_file_bytes)
      fail("tensor ", name_text, " data_offsets end ", entry.end, " is implausibly large");
    if (entry.end - entry.begin != entry.numel * 4)
      fail("tensor ", name_text, " shape ", detail::shape_text(entry.shape), " needs ", entry.numel * 4,
           " bytes, data_offsets span ", entry.end - entry.begin);
    entries.push_back(std::move(entry));
  }

  // 4. offsets: within the data, sorted, contiguous, covering the data section exactly
  std::uint64_t data_needed = 0;
  for (const detail::tensor_entry& entry : entries) data_needed = std::max(data_needed, entry.end);
  if (data_needed > data.size())
    fail("truncated: the tensors need ", data_needed, " bytes of data, file has ", data.size(), " after the header");
  std::stable_sort(entries.begin(), entries.end(),
                   [](const auto& a, const auto& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  std::uint64_t expected_begin = 0;
  for (const detail::tensor_entry& entry : entries) {
    if (entry.begin < expected_begin)
      fail("tensor '", printable(entry.name), "' data_offsets [", entry.begin, ", ", entry.end,
           "] overlap the previous tensor, which ends at ", expected_begin);
    if (entry.begin > expected_begin)
      fail("gap in the data: bytes [", expected_begin, ", ", entry.begin, ") belong to no tensor");
    expected_begin = entry.end;
  }
  if (expected_begin != data.size())
    fail("data section has ", data.size(), " bytes, tensors cover ", expected_begin,
         (expected_begin < data.size() ? " (trailing bytes)" : ""));

  // 5. checksums, before the values: a damaged weight is reported as damage, not as a NaN
  for (const auto& [key, value] : result.metadata) {
    (void)value;
    if (detail::is_damaged_checksums_key(key))
      fail("metadata key '", printable(key), "' is one bit away from '", checksums_key,
           "' (the checksums' key, damaged): the file is damaged");
  }
  if (const auto stored = result.metadata.find(std::string(checksums_key)); stored != result.metadata.end()) {
    const auto malformed = [&](const auto&... why) {
      fail("metadata '", checksums_key,
           "' is malformed (expected a JSON object of tensor name -> CRC-32C as 8 "
           "lowercase hex digits): ",
           why...);
    };
    const std::string& text = stored->second;
    if (detail::json_depth(text) > 1) malformed("it is nested");
    const json sums = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (sums.is_discarded()) malformed("it is not valid JSON");
    if (!sums.is_object()) malformed("it is a JSON ", sums.type_name());
    std::map<std::string, std::uint32_t, std::less<>> expected;
    for (const auto& [name, hex] : sums.items()) {
      std::uint32_t crc = 0;
      if (!hex.is_string() || !detail::parse_crc_hex(hex.get_ref<const std::string&>(), crc))
        malformed("the entry for '", printable(name), "' is ", printable(hex.dump(), 40));
      expected[name] = crc;
    }
    const auto check = [&](std::string_view name, std::uint32_t computed, const auto&... what) {
      const auto it = expected.find(name);
      if (it == expected.end()) malformed("no entry for ", what...);
      if (it->second != computed)
        fail(what..., " fails its checksum: the file is damaged (CRC-32C stored ", detail::crc_hex(it->second),
             ", computed ", detail::crc_hex(computed), ")");
      expected.erase(it);
    };
    check("__metadata__", detail::metadata_checksum(result.metadata), "the metadata");
    for (const detail::tensor_entry& entry : entries)
      check(entry.name, detail::tensor_checksum(entry.shape, data.subspan(entry.begin, entry.end - entry.begin)),
            "tensor '", printable(entry.name), "'");
    if (!expected.empty()) malformed("'", printable(expected.begin()->first), "' is not a tensor of the file");
    result.metadata.erase(stored);
  }

  // 6. values
  for (detail::tensor_entry& entry : entries) {
    std::vector<float> values(entry.numel);
    const std::byte* in = data.data() + entry.begin;
    for (std::uint64_t i = 0; i < entry.numel; ++i) {
      std::uint32_t bits = 0;
      std::memcpy(&bits, in + 4 * i, 4);
      values[i] = std::bit_cast<float>(detail::to_little_endian(bits));
      if (!options.allow_non_finite && !std::isfinite(values[i]))
        fail("tensor '", printable(entry.name), "' element ", i, " is ",
             (std::isnan(values[i]) ? "NaN"
              : values[i] > 0       ? "+Inf"
                                    : "-Inf"),
             " (pass allow_non_finite to load it anyway)");
    }
    result.add(std::move(entry.name), std::move(entry.shape), std::move(values));
  }
  return result;
}

inline void save_safetensors(const std::filesystem::path& path, const tensor_file& file, safetensors_options options) {
  using io::detail::errno_text;
  using io::detail::throw_file_error;
  const std::vector<std::byte> bytes = serialize_safetensors(file, options);
  const std::string target = path.string();
  const auto fail_errno = [&](const auto&... what) {
    const int error_number = errno;
    throw_file_error(target, io::detail::concat(what..., ": ", errno_text(error_number)));
  };

  std::filesystem::path directory = path.parent_path();
  if (directory.empty()) directory = ".";
  std::string temp_name = (directory / io::detail::concat(".", path.filename().string(), ".tmp.XXXXXX")).string();
  const int fd = ::mkstemp(temp_name.data());
  if (fd < 0) fail_errno("cannot create a temp file in '", directory.string(), "'");
  detail::temp_file_guard temp(fd, temp_name);
  if (::fchmod(fd, 0644) != 0) fail_errno("cannot set the temp file's permissions");

  const std::byte* next = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    const ssize_t written = ::write(fd, next, left);
    if (written < 0) {
      if (errno == EINTR) continue;
      fail_errno("writing the temp file failed");
    }
    next += written;
    left -= static_cast<std::size_t>(written);
  }
  if (::fsync(fd) != 0) fail_errno("fsync of the temp file failed");
  if (!temp.close()) fail_errno("closing the temp file failed");
  if (::rename(temp_name.c_str(), target.c_str()) != 0) fail_errno("cannot rename the temp file over it");
  temp.keep();  // it is the target now

  // Make the rename itself durable.
  const int dir_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) fail_errno("written, but cannot open its directory to fsync it");
  const int sync_result = ::fsync(dir_fd);
  const int sync_errno = errno;
  ::close(dir_fd);
  if (sync_result != 0)
    throw_file_error(target,
                     io::detail::concat("written, but fsync of its directory failed: ", errno_text(sync_errno)));
}

inline tensor_file load_safetensors(const std::filesystem::path& path, safetensors_options options) {
  const std::vector<std::byte> bytes =
      io::detail::read_regular_file<std::byte>(path, options.max_bytes, "safetensors_options::max_bytes");
  return parse_safetensors(bytes, path.string(), options);
}

}  // namespace linrec::io
