// Tests of io/ checkpoint files: safetensors round trip, exact bytes, atomic writes, truncated
// and corrupted files, fuzzer regressions, and checkpoint metadata validation. Checksums,
// bit flips and the loaders' refusal of non-regular or oversized files are in
// test_io_integrity.cpp, text data in test_io_text.cpp, the metric log and progress display in
// test_io_run_output.cpp.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "io_test_util.hpp"
#include "linrec/io/checkpoint.hpp"
#include "linrec/io/safetensors.hpp"

namespace fs = std::filesystem;
using linrec::io::tensor_file;
using linrec::test::error_of;
using linrec::test::read_file;
using linrec::test::temp_dir;
using linrec::test::write_file;
using linrec::test::write_text;

namespace {

std::vector<std::byte> as_bytes(const std::string& text) {
  std::vector<std::byte> out(text.size());
  if (!text.empty()) std::memcpy(out.data(), text.data(), text.size());
  return out;
}

// A file from a raw header text and raw float data (no validation: for corrupt files).
std::vector<std::byte> raw_safetensors(const std::string& header, const std::vector<float>& values,
                                       std::int64_t length_override = -1) {
  std::vector<std::byte> out(8);
  const std::uint64_t length = length_override >= 0 ? static_cast<std::uint64_t>(length_override) : header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::byte>((length >> (8 * i)) & 0xff);
  const auto h = as_bytes(header);
  out.insert(out.end(), h.begin(), h.end());
  const std::size_t at = out.size();
  out.resize(at + 4 * values.size());
  if (!values.empty()) std::memcpy(out.data() + at, values.data(), 4 * values.size());
  return out;
}

tensor_file random_file(std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal;
  tensor_file file;
  const std::vector<std::vector<std::int64_t>> shapes = {{}, {1}, {7}, {3, 5}, {0}, {2, 0, 3}, {2, 3, 4}, {1, 1, 1, 9}};
  int index = 0;
  for (const auto& shape : shapes) {
    std::int64_t numel = 1;
    for (auto d : shape) numel *= d;
    std::vector<float> data(static_cast<std::size_t>(numel));
    for (float& v : data) v = normal(gen);
    file.add("blocks." + std::to_string(index++) + ".weight", shape, data);
  }
  file.metadata["config"] = R"({"dim":64,"layers":2})";
  file.metadata["step"] = "1234";
  file.metadata["rng"] = "random_window_sampler v1 seed=1 counter=99";
  file.metadata["unicode"] = "h\xc3\xa9llo";
  return file;
}

}  // namespace

TEST_CASE("safetensors: round trip of random tensors, scalars, empty tensors and metadata", "[io][safetensors]") {
  temp_dir dir;
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    const tensor_file file = random_file(seed);
    const fs::path path = dir.path / "model.safetensors";
    linrec::io::save_safetensors(path, file);
    const tensor_file back = linrec::io::load_safetensors(path);
    REQUIRE(back.size() == file.size());
    for (std::size_t i = 0; i < file.size(); ++i) {
      CHECK(back.tensors()[i].name == file.tensors()[i].name);  // order kept
      CHECK(back.tensors()[i].shape == file.tensors()[i].shape);
      const auto& got = back.tensors()[i].data;
      const auto& want = file.tensors()[i].data;
      REQUIRE(got.size() == want.size());
      for (std::size_t k = 0; k < got.size(); ++k)  // bitwise
        CHECK(std::bit_cast<std::uint32_t>(got[k]) == std::bit_cast<std::uint32_t>(want[k]));
    }
    CHECK(back.metadata == file.metadata);
    CHECK(back == file);
    CHECK(back.at("blocks.0.weight").shape.empty());
    CHECK(back.at("blocks.0.weight").data.size() == 1);
    CHECK(back.at("blocks.5.weight").data.empty());
    // the in-memory path gives the same
    CHECK(linrec::io::parse_safetensors(linrec::io::serialize_safetensors(file)) == file);
  }
  CHECK(dir.names() == std::vector<std::string>{"model.safetensors"});  // no temp files left
}

TEST_CASE("safetensors: an empty file (no tensors, no metadata) round trips", "[io][safetensors]") {
  const tensor_file empty;
  const auto bytes = linrec::io::serialize_safetensors(empty);
  // length + {"__metadata__":{"linrec.checksums":"{\"__metadata__\":\"00000000\"}"}} (71) padded to 72
  CHECK(bytes.size() == 80);
  CHECK(linrec::io::parse_safetensors(bytes) == empty);
}

TEST_CASE("safetensors: bytes match a file written by hand", "[io][safetensors]") {
  tensor_file file;
  file.add("w", {2, 2}, std::vector<float>{1.0f, -2.0f, 0.5f, 3.0f});
  file.add("s", {}, std::vector<float>{0.25f});
  file.metadata["step"] = "7";
  file.metadata["format"] = "pt";

  // 244 bytes of JSON + 4 spaces of padding = 248 = 0xf8. The CRC-32C values were computed
  // independently (a bitwise CRC-32C in Python over the byte layouts in safetensors.hpp):
  //   metadata: u64 6 "format" u64 2 "pt" u64 4 "step" u64 1 "7"        -> 7e3a4a93
  //   w:        u64 2 (rank) u64 2 u64 2 + its 16 data bytes              -> 53b593e3
  //   s:        u64 0 (rank) + its 4 data bytes                           -> 4c38b932
  const std::string header = R"({"__metadata__":{"format":"pt","step":"7","linrec.checksums":)"
                             R"("{\"__metadata__\":\"7e3a4a93\",\"w\":\"53b593e3\",\"s\":\"4c38b932\"}"},)"
                             R"("w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                             R"("s":{"dtype":"F32","shape":[],"data_offsets":[16,20]}})"
                             "    ";
  std::vector<unsigned char> expected = {0xf8, 0, 0, 0, 0, 0, 0, 0};
  expected.insert(expected.end(), header.begin(), header.end());
  const std::vector<unsigned char> data = {0x00, 0x00, 0x80, 0x3f,   // 1.0
                                           0x00, 0x00, 0x00, 0xc0,   // -2.0
                                           0x00, 0x00, 0x00, 0x3f,   // 0.5
                                           0x00, 0x00, 0x40, 0x40,   // 3.0
                                           0x00, 0x00, 0x80, 0x3e};  // 0.25
  expected.insert(expected.end(), data.begin(), data.end());

  const auto bytes = linrec::io::serialize_safetensors(file);
  REQUIRE(bytes.size() == expected.size());
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    INFO("byte " << i);
    CHECK(static_cast<unsigned char>(bytes[i]) == expected[i]);
  }
  // and the hand-made bytes load back to the same object
  std::vector<std::byte> hand(expected.size());
  std::memcpy(hand.data(), expected.data(), expected.size());
  CHECK(linrec::io::parse_safetensors(hand) == file);
}

TEST_CASE("safetensors: tensor_file::add rejects inconsistent tensors", "[io][safetensors]") {
  tensor_file file;
  file.add("a", {2}, std::vector<float>{1, 2});
  CHECK_THROWS_WITH(file.add("a", {1}, std::vector<float>{1}), Catch::Contains("duplicate tensor name 'a'"));
  CHECK_THROWS_WITH(file.add("b", {2, 2}, std::vector<float>{1, 2}), Catch::Contains("needs 4 values, got 2"));
  CHECK_THROWS_WITH(file.add("c", {-1}, std::vector<float>{}), Catch::Contains("negative dimension"));
  CHECK_THROWS_WITH(file.add("", {}, std::vector<float>{1}), Catch::Contains("empty tensor name"));
  CHECK_THROWS_WITH(file.add("__metadata__", {}, std::vector<float>{1}), Catch::Contains("reserved"));
  CHECK_THROWS_WITH(file.at("missing"), Catch::Contains("no tensor named 'missing'"));
  CHECK(file.size() == 1);
}

TEST_CASE("safetensors: NaN/Inf are refused when saving unless allowed", "[io][safetensors]") {
  temp_dir dir;
  tensor_file file;
  file.add("x", {3}, std::vector<float>{1.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f});
  const fs::path path = dir.path / "nan.safetensors";
  CHECK_THROWS_WITH(linrec::io::save_safetensors(path, file), Catch::Contains("'x' element 1"));
  CHECK_FALSE(fs::exists(path));
  linrec::io::save_safetensors(path, file, {.allow_non_finite = true});
  const std::string message = error_of([&] { linrec::io::load_safetensors(path); });
  CHECK_THAT(message, Catch::Contains(path.string()) && Catch::Contains("tensor 'x' element 1 is NaN"));
  const tensor_file back = linrec::io::load_safetensors(path, {.allow_non_finite = true});
  CHECK(std::isnan(back.at("x").data[1]));
}

TEST_CASE("safetensors: atomic save replaces the file or leaves the old one intact", "[io][safetensors]") {
  temp_dir dir;
  const fs::path path = dir.path / "ckpt.safetensors";
  const tensor_file old_file = random_file(10);
  const tensor_file new_file = random_file(11);
  linrec::io::save_safetensors(path, old_file);
  const auto old_bytes = read_file(path);

  SECTION("success replaces it and leaves no temp file") {
    linrec::io::save_safetensors(path, new_file);
    CHECK(linrec::io::load_safetensors(path) == new_file);
    CHECK(dir.names() == std::vector<std::string>{"ckpt.safetensors"});
    CHECK((fs::status(path).permissions() & fs::perms::others_read) != fs::perms::none);
  }
  SECTION("directory that does not exist") {
    const fs::path missing = dir.path / "no_such_dir" / "ckpt.safetensors";
    const std::string message = error_of([&] { linrec::io::save_safetensors(missing, new_file); });
    CHECK_THAT(message, Catch::Contains(missing.string()) && Catch::Contains("cannot create a temp file"));
    CHECK_FALSE(fs::exists(missing.parent_path()));
  }
  SECTION("rename fails: the target is a non-empty directory") {
    const fs::path blocked = dir.path / "blocked";
    fs::create_directory(blocked);
    write_text(blocked / "inside", "x");
    const std::string message = error_of([&] { linrec::io::save_safetensors(blocked, new_file); });
    CHECK_THAT(message, Catch::Contains("cannot rename"));
    CHECK(fs::is_directory(blocked));
    CHECK(dir.names() == std::vector<std::string>{"blocked", "ckpt.safetensors"});  // temp removed
  }
  SECTION("write fails half-way (file size limit): old content intact, temp removed") {
    tensor_file big;
    big.add("big", {1 << 18}, std::vector<float>(1 << 18, 1.0f));  // 1 MiB
    struct rlimit saved {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
    const auto previous_handler = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit limited = saved;
    limited.rlim_cur = 64 * 1024;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &limited) == 0);
    std::string message;
    try {
      linrec::io::save_safetensors(path, big);
    } catch (const linrec::Error& e) {
      message = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, previous_handler);
    CHECK_THAT(message, Catch::Contains(path.string()) && Catch::Contains("writing the temp file failed"));
    CHECK(read_file(path) == old_bytes);
    CHECK(dir.names() == std::vector<std::string>{"ckpt.safetensors"});
  }
  SECTION("read-only directory (skipped when running as root, who may write anyway)") {
    if (::geteuid() == 0) {
      WARN("running as root: read-only directory test skipped");
    } else {
      fs::permissions(dir.path, fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write,
                      fs::perm_options::remove);
      const std::string message = error_of([&] { linrec::io::save_safetensors(path, new_file); });
      fs::permissions(dir.path, fs::perms::owner_write, fs::perm_options::add);
      CHECK_THAT(message, Catch::Contains("cannot create a temp file"));
      CHECK(read_file(path) == old_bytes);
    }
  }
  SECTION("serialization error (NaN) before anything is written") {
    tensor_file bad = new_file;
    bad.add("nan", {1}, std::vector<float>{std::numeric_limits<float>::infinity()});
    CHECK_THROWS_AS(linrec::io::save_safetensors(path, bad), linrec::Error);
    CHECK(read_file(path) == old_bytes);
    CHECK(dir.names() == std::vector<std::string>{"ckpt.safetensors"});
  }
}

TEST_CASE("safetensors: a writer killed at random moments leaves the old or the new file", "[io][safetensors]") {
  temp_dir dir;
  const fs::path path = dir.path / "ckpt.safetensors";
  tensor_file file_a, file_b;
  file_a.add("w", {1 << 19}, std::vector<float>(1 << 19, 1.0f));  // 2 MiB each
  file_b.add("w", {1 << 19}, std::vector<float>(1 << 19, 2.0f));
  linrec::io::save_safetensors(path, file_a);
  std::mt19937 gen(7);
  int saw_a = 0, saw_b = 0;
  for (int round = 0; round < 12; ++round) {
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      for (int i = 0;; ++i) {
        try {
          linrec::io::save_safetensors(path, i % 2 ? file_a : file_b);
        } catch (...) {
          ::_exit(3);
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + gen() % 60));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    CHECK(WIFSIGNALED(status));
    const tensor_file now = linrec::io::load_safetensors(path);  // must load, whole
    const bool is_a = now == file_a, is_b = now == file_b;
    CHECK((is_a || is_b));
    saw_a += is_a;
    saw_b += is_b;
    for (const auto& name : dir.names())  // a killed writer may leave its temp file: clean up
      if (name != "ckpt.safetensors") fs::remove(dir.path / name);
  }
  INFO("old " << saw_a << " new " << saw_b);
  CHECK(saw_a + saw_b == 12);
}

TEST_CASE("safetensors: truncated files are rejected at every cut point", "[io][safetensors]") {
  temp_dir dir;
  const auto bytes = linrec::io::serialize_safetensors(random_file(5));
  const fs::path path = dir.path / "cut.safetensors";
  std::vector<std::size_t> cuts;
  for (std::size_t cut = 0; cut < std::min<std::size_t>(bytes.size(), 400); ++cut) cuts.push_back(cut);
  for (std::size_t cut = 400; cut < bytes.size(); cut += 13) cuts.push_back(cut);
  cuts.push_back(bytes.size() - 1);
  for (std::size_t cut : cuts) {
    INFO("cut at " << cut << " of " << bytes.size());
    write_file(path, std::span(bytes).first(cut));
    const std::string message = error_of([&] { linrec::io::load_safetensors(path); });
    CHECK_THAT(message, Catch::Contains(path.string()) && Catch::Contains("truncated"));
  }
  // exact wording for the header case
  const std::string header_cut = error_of([&] { linrec::io::parse_safetensors(std::span(bytes).first(50), "f"); });
  CHECK_THAT(header_cut, Catch::Contains("f: truncated: header says") && Catch::Contains("file has 42"));
}

TEST_CASE("safetensors: corrupted headers give one clear error each", "[io][safetensors]") {
  const std::vector<float> four = {1, 2, 3, 4};
  struct bad_case {
    const char* what;
    std::vector<std::byte> bytes;
    const char* expected;
  };
  const std::string ok_entry = R"("a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})";
  const std::vector<bad_case> cases = {
      {"bad JSON", raw_safetensors(R"({"a":{"dtype":"F32",)", four), "not valid JSON"},
      {"JSON not an object", raw_safetensors("[1,2,3]", four), "expected an object"},
      {"header length beyond the file", raw_safetensors("{" + ok_entry + "}", four, 1000),
       "truncated: header says 1000"},
      {"header length huge", raw_safetensors("{}", {}, std::numeric_limits<std::int64_t>::max()), "truncated"},
      {"wrong dtype", raw_safetensors(R"({"a":{"dtype":"F16","shape":[8],"data_offsets":[0,16]}})", four),
       "dtype F16, only F32"},
      {"dtype not a string", raw_safetensors(R"({"a":{"dtype":3,"shape":[4],"data_offsets":[0,16]}})", four),
       "dtype is not a string"},
      {"missing field", raw_safetensors(R"({"a":{"dtype":"F32","shape":[4]}})", four), "lacks data_offsets"},
      {"unknown field", raw_safetensors(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16],"x":1}})", four),
       "unknown field 'x'"},
      {"negative shape", raw_safetensors(R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", four),
       "expected a non-negative integer"},
      {"fractional shape", raw_safetensors(R"({"a":{"dtype":"F32","shape":[4.0],"data_offsets":[0,16]}})", four),
       "expected a non-negative integer"},
      {"shape vs span", raw_safetensors(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", four),
       "needs 12 bytes, data_offsets span 16"},
      {"overflowing shape",
       raw_safetensors(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})", four),
       "too many elements"},
      {"offsets out of range", raw_safetensors(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}})", four),
       "truncated: the tensors need 32 bytes of data, file has 16"},
      {"offsets reversed", raw_safetensors(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[16,0]}})", four),
       "end before begin"},
      {"offsets not a pair", raw_safetensors(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0]}})", four),
       "data_offsets must be [begin, end]"},
      {"overlapping",
       raw_safetensors(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                       four),
       "tensor 'b' data_offsets [8, 16] overlap the previous tensor, which ends at 12"},
      {"gap", raw_safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", four),
       "gap in the data: bytes [0, 8)"},
      {"trailing bytes", raw_safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", four),
       "data section has 16 bytes, tensors cover 8 (trailing bytes)"},
      {"metadata not strings", raw_safetensors(R"({"__metadata__":{"step":100}})", {}), "'step' is a number"},
      {"metadata not an object", raw_safetensors(R"({"__metadata__":"x"})", {}), "__metadata__ is a string"},
      {"NaN in data", raw_safetensors("{" + ok_entry + "}", {1, std::nanf(""), 3, 4}), "element 1 is NaN"},
      {"Inf in data", raw_safetensors("{" + ok_entry + "}", {1, 2, 3, -INFINITY}), "element 3 is -Inf"},
      {"deep nesting", raw_safetensors(std::string(5000, '[') + std::string(5000, ']'), {}), "nested more than"},
      {"too short", as_bytes("abc"), "truncated: file has 3 bytes"},
      {"NUL ends the JSON early", raw_safetensors(std::string("{}\0garbage", 10), {}), "NUL byte at offset 2"},
      {"name with a newline", raw_safetensors(R"({"a\n":{"dtype":"I8","shape":[4],"data_offsets":[0,16]}})", four),
       "'a\\x0a'"},
  };
  for (const bad_case& c : cases) {
    INFO(c.what);
    const std::string message = error_of([&] { linrec::io::parse_safetensors(c.bytes, "ckpt.st"); });
    CHECK_THAT(message, Catch::StartsWith("linrec: ckpt.st: ") && Catch::Contains(c.expected));
  }
  // and the same bytes that were fixed parse fine (the cases are wrong for the stated reason only)
  CHECK(linrec::io::parse_safetensors(raw_safetensors("{" + ok_entry + "}", four)).at("a").data == four);
}

TEST_CASE("safetensors: missing file names the path", "[io][safetensors]") {
  const std::string message = error_of([] { linrec::io::load_safetensors("/nonexistent/dir/x.safetensors"); });
  CHECK_THAT(message, Catch::Contains("/nonexistent/dir/x.safetensors: cannot open"));
}

// Files under tests/data/safetensors: accept_* must parse, everything else (reject_*, and the
// crash-* / timeout-* inputs kept from fuzzing) must be refused with linrec::Error — never a
// crash or another exception type.
TEST_CASE("safetensors: regression inputs from tests/data/safetensors", "[io][safetensors]") {
  const fs::path data_dir = fs::path(LINREC_IO_TEST_DATA) / "safetensors";
  REQUIRE(fs::is_directory(data_dir));
  int count = 0;
  for (const auto& entry : fs::directory_iterator(data_dir)) {
    const std::string name = entry.path().filename().string();
    if (name == "README.md") continue;
    INFO(name);
    ++count;
    if (name.rfind("accept_", 0) == 0) {
      CHECK_NOTHROW(linrec::io::load_safetensors(entry.path()));
    } else {
      CHECK_THROWS_AS(linrec::io::load_safetensors(entry.path()), linrec::Error);
    }
  }
  CHECK(count > 0);
}

TEST_CASE("checkpoint: metadata numbers are validated with errors naming the key", "[io][checkpoint]") {
  linrec::io::tensor_file file;
  file.metadata = {{"step", "120"}, {"seconds", "3.5"},  {"bad_int", "12x"}, {"huge", "99999999999999999999"},
                   {"nan", "nan"},  {"optim.step", "-3"}};
  CHECK(linrec::io::metadata_integer(file, "step") == 120);
  CHECK(linrec::io::metadata_real(file, "seconds") == 3.5);
  CHECK_THROWS_WITH(linrec::io::metadata_integer(file, "missing"), Catch::Contains("'missing' is missing"));
  CHECK_THROWS_WITH(linrec::io::metadata_integer(file, "bad_int"),
                    Catch::Contains("'bad_int' = '12x' is not an integer"));
  CHECK_THROWS_WITH(linrec::io::metadata_integer(file, "huge"), Catch::Contains("is not an integer"));
  CHECK_THROWS_WITH(linrec::io::metadata_real(file, "nan"), Catch::Contains("not a finite number"));
  CHECK_THROWS_WITH(linrec::io::optimizer_state_from(file, "optim."), Catch::Contains("negative"));
}
