// Tests of checkpoint integrity and bounded loading (docs/io.md, "Integrity"): the CRC-32C
// checksums that save_safetensors writes and loading verifies, every single-bit flip of a file
// refused, files without checksums (the previous release's) still loading, malformed checksum
// entries, restore errors naming the file, and the loaders refusing /dev/zero, FIFOs,
// sockets, directories, symlinks to them and oversized files — promptly.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "io_test_util.hpp"
#include "linrec/io/checkpoint.hpp"
#include "linrec/io/safetensors.hpp"
#include "linrec/io/text_data.hpp"

namespace fs = std::filesystem;
using linrec::io::tensor_file;
using linrec::test::error_of;
using linrec::test::read_file;
using linrec::test::temp_dir;
using linrec::test::write_file;
using linrec::test::write_text;

namespace {

// CRC-32C bit by bit, straight from its definition (reflected polynomial 0x82F63B78, initial
// and final XOR 0xFFFFFFFF), to check the table-driven one against.
std::uint32_t crc32c_reference(std::span<const std::byte> bytes) {
  std::uint32_t crc = 0xffffffffu;
  for (std::byte b : bytes) {
    crc ^= std::to_integer<std::uint32_t>(b);
    for (int k = 0; k < 8; ++k) crc = (crc & 1u) ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
  }
  return ~crc;
}

// A small checkpoint shaped like the trainer's: parameters, an empty tensor, a scalar, metadata.
tensor_file small_checkpoint() {
  tensor_file file;
  std::vector<float> emb(12), head(12);
  for (std::size_t i = 0; i < 12; ++i) {
    emb[i] = 0.1f * static_cast<float>(i) - 0.5f;
    head[i] = 1.0f / static_cast<float>(i + 1);
  }
  head[3] = 0.25f;  // 0x3e800000: flipping bit 30 gives 0x7e800000, about 8.5e37 (finite)
  file.add("model.emb.weight", {4, 3}, emb);
  file.add("model.head.weight", {3, 4}, head);
  file.add("model.empty", {2, 0, 3}, std::vector<float>{});
  file.add("optim.step_scale", {}, std::vector<float>{0.5f});
  file.metadata["format"] = "linrec.train_rwkv.v1";
  file.metadata["config"] = R"({"dim":4,"layers":1})";
  file.metadata["step"] = "7";
  file.metadata["seconds"] = "1.5";
  return file;
}

std::uint64_t header_length(std::span<const std::byte> bytes) {
  std::uint64_t length = 0;
  for (int i = 0; i < 8; ++i) length |= std::to_integer<std::uint64_t>(bytes[i]) << (8 * i);
  return length;
}

nlohmann::ordered_json header_of(std::span<const std::byte> bytes) {
  const std::uint64_t length = header_length(bytes);
  return nlohmann::ordered_json::parse(std::string(reinterpret_cast<const char*>(bytes.data() + 8), length));
}

// `original` with its header replaced by `header` (re-padded), the data section unchanged.
std::vector<std::byte> with_header(const nlohmann::ordered_json& header, std::span<const std::byte> original) {
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::vector<std::byte> out(8 + text.size());
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::byte>((text.size() >> (8 * i)) & 0xff);
  std::memcpy(out.data() + 8, text.data(), text.size());
  const auto data = original.subspan(8 + header_length(original));
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Runs `load` in a child process with a deadline and returns the linrec::Error message it
// caught (or what else happened). A loader that blocks on a FIFO or reads /dev/zero forever
// then fails the test in seconds, instead of hanging it or taking the machine's memory.
template <class Load>
std::string error_within(std::chrono::seconds deadline, Load&& load) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(fds[0]);
#if !defined(__SANITIZE_ADDRESS__) && !defined(LINREC_TEST_NO_RLIMIT)
    // A regression reading /dev/zero stops at 2 GiB here (ASan reserves far more address
    // space than that up front, so the limit is left out under it).
    const struct rlimit memory { std::uint64_t{2} << 30, std::uint64_t{2} << 30 };
    ::setrlimit(RLIMIT_AS, &memory);
#endif
    std::string message = "no error";
    try {
      load();
    } catch (const linrec::Error& e) {
      message = e.what();
    } catch (const std::exception& e) {
      message = std::string("not a linrec::Error: ") + e.what();
    }
    const ssize_t written = ::write(fds[1], message.data(), message.size());
    ::_exit(written == static_cast<ssize_t>(message.size()) ? 0 : 1);
  }
  ::close(fds[1]);
  const auto give_up = std::chrono::steady_clock::now() + deadline;
  int status = 0;
  bool exited = false;
  while (!(exited = ::waitpid(child, &status, WNOHANG) == child) && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (!exited) {
    ::kill(child, SIGKILL);
    ::waitpid(child, &status, 0);
    ::close(fds[0]);
    return "TIMED OUT (blocked or reading forever)";
  }
  std::string message;
  char buffer[4096];
  for (ssize_t got; (got = ::read(fds[0], buffer, sizeof buffer)) > 0;) message.append(buffer, std::size_t(got));
  ::close(fds[0]);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "CHILD DIED: " + message;
  return message;
}

// A listening Unix socket at `path`, closed at scope exit.
struct unix_socket {
  int fd = -1;
  explicit unix_socket(const fs::path& path) {
    fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    REQUIRE(path.string().size() < sizeof address.sun_path);
    std::memcpy(address.sun_path, path.c_str(), path.string().size());
    REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
  }
  unix_socket(const unix_socket&) = delete;
  unix_socket& operator=(const unix_socket&) = delete;
  ~unix_socket() { ::close(fd); }
};

}  // namespace

TEST_CASE("integrity: CRC-32C gives the published check values and matches its bitwise definition", "[io][integrity]") {
  using linrec::io::detail::crc32c;
  // CRC-32/ISCSI's check value in the CRC catalogue (reveng.sourceforge.io/crc-catalogue)
  const std::string check = "123456789";
  CHECK(crc32c(std::as_bytes(std::span<const char>(check))) == 0xe3069283u);
  // RFC 3720 appendix B.4 (its CRCs are listed in transmission order: least significant byte first)
  std::vector<std::byte> block(32);
  CHECK(crc32c(block) == 0x8a9136aau);  // 32 bytes of zeros: aa 36 91 8a
  for (std::size_t i = 0; i < 32; ++i) block[i] = std::byte{0xff};
  CHECK(crc32c(block) == 0x62a8ab43u);  // 32 bytes of 0xff: 43 ab a8 62
  for (std::size_t i = 0; i < 32; ++i) block[i] = static_cast<std::byte>(i);
  CHECK(crc32c(block) == 0x46dd794eu);  // 0x00, 0x01, ... 0x1f: 4e 79 dd 46
  for (std::size_t i = 0; i < 32; ++i) block[i] = static_cast<std::byte>(31 - i);
  CHECK(crc32c(block) == 0x113fdb5cu);  // 0x1f, 0x1e, ... 0x00: 5c db 3f 11
  CHECK(crc32c({}) == 0u);
  std::mt19937 gen(3);
  std::vector<std::byte> buffer(300);
  for (std::byte& b : buffer) b = static_cast<std::byte>(gen() & 0xff);
  int mismatches = 0;
  for (std::size_t offset = 0; offset < 9; ++offset)  // every alignment of the 8-byte loop
    for (std::size_t size = 0; size + offset <= buffer.size(); size += 7) {
      const auto part = std::span<const std::byte>(buffer).subspan(offset, size);
      mismatches += crc32c(part) != crc32c_reference(part);
      // chaining: crc(a + b) == crc(b, crc(a))
      mismatches += crc32c(part.subspan(size / 3), crc32c(part.first(size / 3))) != crc32c(part);
    }
  CHECK(mismatches == 0);
}

TEST_CASE("integrity: saving writes one checksums entry; loading verifies it and hides it", "[io][integrity]") {
  temp_dir dir;
  const fs::path path = dir.path / "ckpt.safetensors";
  const tensor_file file = small_checkpoint();
  linrec::io::save_safetensors(path, file);
  const auto bytes = read_file(path);
  const auto header = header_of(bytes);
  // ordinary string metadata, so any safetensors reader loads the file
  REQUIRE(header.at("__metadata__").at("linrec.checksums").is_string());
  const auto sums = nlohmann::ordered_json::parse(header["__metadata__"]["linrec.checksums"].get<std::string>());
  REQUIRE(sums.is_object());
  CHECK(sums.size() == file.size() + 1);
  CHECK(sums.begin().key() == "__metadata__");
  for (const auto& t : file.tensors()) {
    INFO(t.name);
    REQUIRE(sums.contains(t.name));
    const std::string hex = sums[t.name].get<std::string>();
    CHECK(hex.size() == 8);
    CHECK(hex.find_first_not_of("0123456789abcdef") == std::string::npos);
    // shape as u64 little-endian (rank, then each dimension), then the data bytes as stored
    std::vector<std::byte> covered;
    const auto put_u64 = [&](std::uint64_t v) {
      for (int i = 0; i < 8; ++i) covered.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xff));
    };
    put_u64(t.shape.size());
    for (std::int64_t d : t.shape) put_u64(static_cast<std::uint64_t>(d));
    const auto data = std::as_bytes(std::span<const float>(t.data));  // little-endian hosts (x86, ARM)
    covered.insert(covered.end(), data.begin(), data.end());
    CHECK(hex == linrec::io::detail::crc_hex(crc32c_reference(covered)));
  }

  const tensor_file back = linrec::io::load_safetensors(path);
  CHECK(back == file);
  CHECK_FALSE(back.metadata.contains("linrec.checksums"));  // describes the file, not the model
  CHECK(back.source == path.string());
  CHECK(linrec::io::parse_safetensors(bytes, "named").source == "named");
  // saving what was loaded writes the same bytes (the entry is recomputed, not copied)
  CHECK(linrec::io::serialize_safetensors(back) == bytes);
}

TEST_CASE("integrity: every single-bit flip in the data section is detected and names the tensor", "[io][integrity]") {
  const tensor_file file = small_checkpoint();
  const auto bytes = linrec::io::serialize_safetensors(file);
  const std::size_t data_begin = 8 + header_length(bytes);
  // which tensor owns each data byte (tensors are stored in order)
  std::vector<std::string> owner;
  for (const auto& t : file.tensors()) owner.insert(owner.end(), 4 * t.data.size(), t.name);
  REQUIRE(owner.size() == bytes.size() - data_begin);
  for (std::size_t at = data_begin; at < bytes.size(); ++at)
    for (int bit = 0; bit < 8; ++bit) {
      INFO("byte " << at << " bit " << bit);
      auto flipped = bytes;
      flipped[at] ^= static_cast<std::byte>(1 << bit);
      const std::string message = error_of([&] { linrec::io::parse_safetensors(flipped, "ckpt.safetensors"); });
      CHECK_THAT(message, Catch::StartsWith("linrec: ckpt.safetensors: tensor '" + owner[at - data_begin] +
                                            "' fails its checksum: the file is damaged"));
    }
}

TEST_CASE("integrity: a flip that makes a weight 8.5e37 is reported as damage, naming file and tensor",
          "[io][integrity]") {
  temp_dir dir;
  const fs::path path = dir.path / "latest.safetensors";
  linrec::io::save_safetensors(path, small_checkpoint());
  auto bytes = read_file(path);
  const std::size_t at = 8 + header_length(bytes) + 4 * (12 + 3) + 3;  // top byte of head.weight[3]
  REQUIRE(bytes[at] == std::byte{0x3e});
  bytes[at] ^= std::byte{0x40};
  write_file(path, bytes);
  CHECK_THAT(error_of([&] { linrec::io::load_safetensors(path); }),
             Catch::StartsWith("linrec: " + path.string() +
                               ": tensor 'model.head.weight' fails its checksum: the file is damaged"));
  // without the checksums it would have loaded: the value is finite and the structure valid
  const float value = std::bit_cast<float>(std::uint32_t{0x7e800000});
  CHECK(std::isfinite(value));
  CHECK(value > 8e37f);
  // a flip onto +Inf (head.weight[0] = 1.0f = 0x3f800000) is reported as damage too, not as
  // "element 0 is +Inf": the checksums are checked before the values
  bytes[at] ^= std::byte{0x40};
  const std::size_t first = 8 + header_length(bytes) + 4 * 12 + 3;
  REQUIRE(bytes[first] == std::byte{0x3f});
  bytes[first] ^= std::byte{0x40};
  write_file(path, bytes);
  CHECK_THAT(error_of([&] { linrec::io::load_safetensors(path); }),
             Catch::Contains("tensor 'model.head.weight' fails its checksum"));
}

TEST_CASE("integrity: every single-bit flip anywhere in a small file is refused", "[io][integrity]") {
  // The header is covered too: structure checks refuse most flips there, the checksums of the
  // metadata and of each tensor's shape the rest (a digit of a metadata value, the shape of an
  // empty tensor), and a flip in the name "linrec.checksums" itself is recognised as one.
  const auto bytes = linrec::io::serialize_safetensors(small_checkpoint());
  std::vector<std::string> loaded;  // flips that loaded: must stay empty
  std::size_t refused = 0;
  for (std::size_t at = 0; at < bytes.size(); ++at)
    for (int bit = 0; bit < 8; ++bit) {
      auto flipped = bytes;
      flipped[at] ^= static_cast<std::byte>(1 << bit);
      try {
        (void)linrec::io::parse_safetensors(flipped, "ckpt");
        loaded.push_back("byte " + std::to_string(at) + " bit " + std::to_string(bit));
      } catch (const linrec::Error& e) {
        refused += std::string_view(e.what()).starts_with("linrec: ckpt: ");
      }
    }
  INFO("file of " << bytes.size() << " bytes; first flips that loaded: "
                  << (loaded.empty() ? "" : loaded.front() + ", " + loaded.back()));
  CHECK(loaded.empty());
  CHECK(refused == 8 * bytes.size());
}

TEST_CASE("integrity: random bit flips and bursts in a 1 MiB checkpoint are detected", "[io][integrity]") {
  tensor_file file;
  std::vector<float> big(1 << 18);
  std::mt19937 gen(11);
  std::normal_distribution<float> normal;
  for (float& v : big) v = normal(gen);
  file.add("model.big", {512, 512}, big);
  const auto bytes = linrec::io::serialize_safetensors(file);
  const std::size_t data_begin = 8 + header_length(bytes);
  int undetected = 0;
  for (int round = 0; round < 300; ++round) {
    auto flipped = bytes;
    const std::size_t at = data_begin + gen() % (bytes.size() - data_begin - 4);
    if (round % 2 == 0) {
      flipped[at] ^= static_cast<std::byte>(1 << (gen() % 8));  // one bit
    } else {
      for (int k = 0; k < 4; ++k) flipped[at + k] ^= static_cast<std::byte>(gen() | 1);  // a burst of <= 32 bits
    }
    try {
      (void)linrec::io::parse_safetensors(flipped, "big", {.allow_non_finite = true});
      ++undetected;
    } catch (const linrec::Error& e) {
      undetected += !std::string_view(e.what()).ends_with(")") ||
                    std::string_view(e.what()).find("'model.big' fails its checksum") == std::string_view::npos;
    }
  }
  CHECK(undetected == 0);
}

TEST_CASE("integrity: files without checksums load unverified (previous release, other writers)", "[io][integrity]") {
  const fs::path legacy = fs::path(LINREC_IO_TEST_DATA) / "train_rwkv_v1";
  for (const char* name : {"rwkv4_step4.safetensors", "rwkv6_carry_step4.safetensors"}) {
    INFO(name);
    const tensor_file file = linrec::io::load_safetensors(legacy / name);
    CHECK(file.size() > 50);
    CHECK(file.metadata.at("format") == "linrec.train_rwkv.v1");
    CHECK(linrec::io::metadata_integer(file, "step") == 4);
    CHECK_FALSE(file.metadata.contains("linrec.checksums"));
    // saved again, it gains checksums and loads back the same
    CHECK(linrec::io::parse_safetensors(linrec::io::serialize_safetensors(file)) == file);
  }
  // The limitation: damage in a file without checksums cannot be seen (a mantissa bit here).
  auto bytes = read_file(legacy / "rwkv4_step4.safetensors");
  const tensor_file original = linrec::io::parse_safetensors(bytes);
  bytes[8 + header_length(bytes) + 64] ^= std::byte{0x01};
  const tensor_file damaged = linrec::io::parse_safetensors(bytes);
  CHECK_FALSE(damaged == original);

  // A file from another writer: metadata of its own, no checksums.
  nlohmann::ordered_json header = header_of(linrec::io::serialize_safetensors(small_checkpoint()));
  header["__metadata__"].erase("linrec.checksums");
  header["__metadata__"]["format"] = "pt";
  const tensor_file other =
      linrec::io::parse_safetensors(with_header(header, linrec::io::serialize_safetensors(small_checkpoint())));
  CHECK(other.metadata.at("format") == "pt");
  CHECK(other.tensors() == small_checkpoint().tensors());
}

TEST_CASE("integrity: a malformed checksums entry is an error naming the file", "[io][integrity]") {
  const auto bytes = linrec::io::serialize_safetensors(small_checkpoint());
  const auto header = header_of(bytes);
  const auto sums = nlohmann::ordered_json::parse(header["__metadata__"]["linrec.checksums"].get<std::string>());
  const std::string malformed = "metadata 'linrec.checksums' is malformed";
  struct bad_case {
    const char* what;
    std::string entry;  // the new value of "linrec.checksums"
    std::string expected;
  };
  const auto edited = [&](auto&& edit) {
    nlohmann::ordered_json copy = sums;
    edit(copy);
    return copy.dump();
  };
  const std::vector<bad_case> cases = {
      {"not JSON", "{\"__metadata__\":",
       malformed + " (expected a JSON object of tensor name -> CRC-32C as 8 "
                   "lowercase hex digits): it is not valid JSON"},
      {"empty", "", "it is not valid JSON"},
      {"an array", "[\"00000000\"]", "it is a JSON array"},
      {"a string", "\"00000000\"", "it is a JSON string"},
      {"nested object", R"({"__metadata__":{"a":"00000000"}})", "it is nested"},
      {"a number", edited([](auto& j) { j["model.emb.weight"] = 1234; }), "the entry for 'model.emb.weight' is 1234"},
      {"7 digits", edited([](auto& j) { j["model.emb.weight"] = "0123456"; }), "is \"0123456\""},
      {"9 digits", edited([](auto& j) { j["model.emb.weight"] = "012345678"; }), "is \"012345678\""},
      {"upper case", edited([](auto& j) { j["__metadata__"] = "ABCDEF01"; }), "the entry for '__metadata__'"},
      {"not hex", edited([](auto& j) { j["__metadata__"] = "0000000g"; }), "the entry for '__metadata__'"},
      {"a tensor missing", edited([](auto& j) { j.erase("model.head.weight"); }),
       malformed + " (expected a JSON object of tensor name -> CRC-32C as 8 lowercase hex digits): no entry for "
                   "tensor 'model.head.weight'"},
      {"the empty tensor missing", edited([](auto& j) { j.erase("model.empty"); }),
       "no entry for tensor 'model.empty'"},
      {"the metadata missing", edited([](auto& j) { j.erase("__metadata__"); }), "no entry for the metadata"},
      {"a name that is not a tensor", edited([](auto& j) { j["model.extra"] = "00000000"; }),
       "'model.extra' is not a tensor of the file"},
      {"an empty object", "{}", "no entry for the metadata"},
      {"a wrong tensor CRC", edited([](auto& j) { j["optim.step_scale"] = "00000000"; }),
       "tensor 'optim.step_scale' fails its checksum: the file is damaged"},
      {"a wrong metadata CRC", edited([](auto& j) { j["__metadata__"] = "00000000"; }),
       "the metadata fails its checksum: the file is damaged"},
  };
  for (const bad_case& c : cases) {
    INFO(c.what);
    auto changed = header;
    changed["__metadata__"]["linrec.checksums"] = c.entry;
    const std::string message =
        error_of([&] { linrec::io::parse_safetensors(with_header(changed, bytes), "ckpt.safetensors"); });
    CHECK_THAT(message, Catch::StartsWith("linrec: ckpt.safetensors: ") && Catch::Contains(c.expected));
  }
  SECTION("a metadata value changed behind the checksums' back") {
    auto changed = header;
    changed["__metadata__"]["step"] = "8";
    CHECK_THAT(error_of([&] { linrec::io::parse_safetensors(with_header(changed, bytes), "f"); }),
               Catch::Contains("f: the metadata fails its checksum"));
    changed["__metadata__"]["step"] = "7";
    changed["__metadata__"]["added"] = "";
    CHECK_THAT(error_of([&] { linrec::io::parse_safetensors(with_header(changed, bytes), "f"); }),
               Catch::Contains("f: the metadata fails its checksum"));
  }
  SECTION("a key one bit away from linrec.checksums is that key, damaged") {
    auto changed = header;
    changed["__metadata__"]["linrec.checksumr"] = changed["__metadata__"]["linrec.checksums"];
    changed["__metadata__"].erase("linrec.checksums");
    CHECK_THAT(error_of([&] { linrec::io::parse_safetensors(with_header(changed, bytes), "f"); }),
               Catch::Contains("f: metadata key 'linrec.checksumr' is one bit away from 'linrec.checksums'"));
    // two bits away is someone else's key: loads, unverified
    changed["__metadata__"]["linrec.checksumz"] = changed["__metadata__"]["linrec.checksumr"];
    changed["__metadata__"].erase("linrec.checksumr");
    CHECK(linrec::io::parse_safetensors(with_header(changed, bytes)).metadata.contains("linrec.checksumz"));
  }
}

TEST_CASE("integrity: saving refuses metadata that would collide with the checksums entry", "[io][integrity]") {
  tensor_file file = small_checkpoint();
  file.metadata["linrec.checksums"] = "{}";
  CHECK_THAT(error_of([&] { linrec::io::serialize_safetensors(file); }),
             Catch::Contains("metadata key 'linrec.checksums' is reserved"));
  file.metadata.erase("linrec.checksums");
  file.metadata["linrec.checksumS"] = "x";  // 's' ^ 0x20
  CHECK_THAT(error_of([&] { linrec::io::serialize_safetensors(file); }), Catch::Contains("'linrec.checksumS'"));
}

TEST_CASE("loaders: /dev/zero, FIFOs, sockets, directories and symlinks to them are refused promptly",
          "[io][integrity]") {
  temp_dir dir;
  const fs::path fifo = dir.path / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const fs::path folder = dir.path / "folder";
  fs::create_directory(folder);
  const fs::path to_zero = dir.path / "latest.safetensors";
  fs::create_symlink("/dev/zero", to_zero);
  const fs::path to_fifo = dir.path / "to_fifo";
  fs::create_symlink(fifo, to_fifo);
  const fs::path dangling = dir.path / "dangling";
  fs::create_symlink(dir.path / "nowhere", dangling);
  const unix_socket socket(dir.path / "sock");
  REQUIRE(fs::exists("/dev/zero"));

  struct refused_case {
    fs::path path;
    std::string expected;
  };
  const std::vector<refused_case> cases = {
      {"/dev/zero", "is not a regular file (it is a character device)"},
      {to_zero, "is not a regular file (it is a character device)"},
      {fifo, "is not a regular file (it is a FIFO)"},
      {to_fifo, "is not a regular file (it is a FIFO)"},
      {dir.path / "sock", "is not a regular file (it is a socket)"},
      {dangling, "cannot open: no such file"},
  };
  const auto deadline = std::chrono::seconds(10);
  for (const refused_case& c : cases) {
    INFO(c.path);
    const std::string named = c.path.string() + ": " + c.expected;
    CHECK_THAT(error_within(deadline, [&] { linrec::io::load_safetensors(c.path); }), Catch::Contains(named));
    CHECK_THAT(error_within(deadline, [&] { linrec::io::load_corpus(c.path); }), Catch::Contains(named));
    CHECK_THAT(error_within(deadline, [&] { linrec::io::load_bytes(c.path); }), Catch::Contains(named));
  }
  CHECK_THAT(error_within(deadline, [&] { linrec::io::load_safetensors(folder); }),
             Catch::Contains(folder.string() + ": is not a regular file (it is a directory)"));
  CHECK_THAT(error_within(deadline, [&] { linrec::io::load_bytes(folder); }), Catch::Contains("it is a directory"));

  // In a corpus folder, what is not a regular file is skipped, without opening it.
  fs::create_symlink("/dev/zero", folder / "zero");
  REQUIRE(::mkfifo((folder / "pipe").c_str(), 0600) == 0);
  CHECK_THAT(error_within(deadline, [&] { linrec::io::load_corpus(folder); }),
             Catch::Contains("directory holds no non-empty text files"));
  write_text(folder / "text", "hello\n");
  CHECK(error_within(deadline, [&] {
          if (linrec::io::load_corpus(folder).size() != 6) throw linrec::Error("wrong size");
        }) == "no error");
}

TEST_CASE("loaders: files above the size bound are refused before reading", "[io][integrity]") {
  CHECK(linrec::io::safetensors_options{}.max_bytes == std::uint64_t{16} << 30);
  CHECK(linrec::io::corpus_options{}.max_bytes == std::uint64_t{4} << 30);
  temp_dir dir;
  const fs::path ckpt = dir.path / "ckpt.safetensors";
  linrec::io::save_safetensors(ckpt, small_checkpoint());
  const std::uint64_t size = fs::file_size(ckpt);
  CHECK_THAT(error_of([&] { linrec::io::load_safetensors(ckpt, {.max_bytes = size - 1}); }),
             Catch::Contains(ckpt.string() + ": is " + std::to_string(size) + " bytes, more than the limit of " +
                             std::to_string(size - 1) + " bytes (safetensors_options::max_bytes)"));
  CHECK(linrec::io::load_safetensors(ckpt, {.max_bytes = size}) == small_checkpoint());

  const fs::path text = dir.path / "corpus.txt";
  write_text(text, std::string(4999, 'x') + "\n");
  CHECK_THAT(error_of([&] { linrec::io::load_corpus(text, {.max_bytes = 4096}); }),
             Catch::Contains(text.string() + ": is 5000 bytes, more than the limit of 4096 bytes "
                                             "(corpus_options::max_bytes)"));
  CHECK(linrec::io::load_bytes(text, {.max_bytes = 5000}).size() == 5000);

  const fs::path folder = dir.path / "folder";
  fs::create_directory(folder);
  write_text(folder / "a", std::string(2999, 'a') + "\n");
  write_text(folder / "b", std::string(2999, 'b') + "\n");
  CHECK_THAT(error_of([&] { linrec::io::load_corpus(folder, {.max_bytes = 5000}); }),
             Catch::Contains(folder.string() + ": its text files add up to more than the limit of 5000 bytes "
                                               "(corpus_options::max_bytes) at 'b'"));
  CHECK(linrec::io::load_corpus(folder, {.max_bytes = 6001}).size() == 6000);
}

TEST_CASE("loaders: a file whose size changes while it is read is refused", "[io][integrity]") {
  // /proc files are regular files that report size 0 and then have content: exactly what a
  // file growing between stat and read looks like.
  const fs::path status = "/proc/self/status";
  if (!fs::exists(status)) {
    WARN("no /proc: test skipped");
    return;
  }
  CHECK_THAT(error_of([&] { linrec::io::load_bytes(status); }),
             Catch::Contains(status.string() + ": grew while being read: it had 0 bytes when opened"));
  CHECK_THAT(error_of([&] { linrec::io::load_safetensors(status); }), Catch::Contains("grew while being read"));
}

TEST_CASE("checkpoint: restore and metadata errors name the file", "[io][integrity]") {
  temp_dir dir;
  const fs::path path = dir.path / "run" / "latest.safetensors";
  fs::create_directory(path.parent_path());
  tensor_file file;
  file.add("model.w", {2}, std::vector<float>{1, 2});
  file.add("optim.m.w", {2}, std::vector<float>{0, 0});
  file.metadata["optim.step"] = "-1";
  file.metadata["seconds"] = "x";
  linrec::io::save_safetensors(path, file);
  const tensor_file loaded = linrec::io::load_safetensors(path);
  const std::string named = "linrec: " + path.string() + ": checkpoint: ";

  const linrec::Parameter w(linrec::Tensor::zeros({2}), "w"), b(linrec::Tensor::zeros({2}), "b");
  const linrec::Parameter wide(linrec::Tensor::zeros({3}), "w");
  CHECK_THAT(error_of([&] {
               linrec::io::restore_parameters(loaded, {w, b}, "model.");
             }),
             Catch::StartsWith(named + "no tensor 'model.b' (was it written by another model?)"));
  CHECK_THAT(error_of([&] { linrec::io::restore_parameters(loaded, {wide}, "model."); }),
             Catch::StartsWith(named + "tensor 'model.w' has shape") && Catch::Contains("the model expects"));
  CHECK(w.value().data()[0] == 0.0f);  // nothing half-restored
  CHECK_THAT(error_of([&] { linrec::io::metadata_integer(loaded, "step"); }),
             Catch::StartsWith(named + "metadata 'step' is missing"));
  CHECK_THAT(error_of([&] { linrec::io::metadata_string(loaded, "config"); }),
             Catch::StartsWith(named + "metadata 'config' is missing"));
  CHECK_THAT(error_of([&] { linrec::io::metadata_real(loaded, "seconds"); }),
             Catch::StartsWith(named + "metadata 'seconds' = 'x' is not a finite number"));
  CHECK_THAT(error_of([&] { linrec::io::optimizer_state_from(loaded, "optim."); }),
             Catch::StartsWith(named + "metadata 'optim.step' = -1 is negative"));
  linrec::io::restore_parameters(loaded, {w}, "model.");
  CHECK(w.value().data()[1] == 2.0f);

  // built in memory: no file to name
  CHECK_THAT(error_of([&] { linrec::io::metadata_integer(file, "step"); }),
             Catch::StartsWith("linrec: checkpoint: metadata 'step' is missing"));
  // source is not part of ==
  CHECK(loaded == file);
}
