// libFuzzer target: arbitrary bytes into the checkpoint parser (checksum verification
// included), the metadata readers and the restore helpers.
//
// Build and run (clang only; see the LINREC_FUZZ block of the root CMakeLists.txt):
//   CXX=clang++-14 cmake -S . -B build-fuzz -DLINREC_FUZZ=ON -DLINREC_BUILD_BENCHMARKS=OFF \
//       -DLINREC_BUILD_EXAMPLES=OFF -DLINREC_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
//   cmake --build build-fuzz --target fuzz_safetensors
//   mkdir -p build-fuzz/corpus && cp tests/data/safetensors/*.safetensors \
//       tests/data/train_rwkv_v1/*.safetensors build-fuzz/corpus/
//   cd build-fuzz   # -jobs=1 writes fuzz-0.log into the working directory
//   ./fuzz/fuzz_safetensors corpus -dict=../tests/fuzz/safetensors.dict -max_total_time=600 -jobs=1
// Add a few files written by save_safetensors (they carry "linrec.checksums") to the corpus
// too, so that mutations also start from verified files.
// last run: 2026-12-06, the commands above (clang 14, RelWithDebInfo, one job) with the 11 seeds
//   plus checksummed copies of the 4 loadable ones (15 files): 601 s, 155568 executions
//   ("#155568 DONE cov: 2736 ft: 10890 corp: 1033/57Mb exec/s: 258"), no finding.
//
// Properties (anything else — a crash, a sanitizer report, another exception type, a message
// that does not name the file — traps):
//  1. Any input parses into a consistent tensor_file or throws linrec::Error whose message
//     starts with "linrec: <fuzz>: " (it names the file). Inputs that carry checksums go
//     through the verification (malformed entries, mismatches).
//  2. A parsed file survives serialize -> parse unchanged; the re-serialized bytes carry
//     checksums, so this also drives a successful verification.
//  3. Every single-bit flip of those re-serialized bytes is refused (a handful of flips per
//     input, positions drawn from the input): the checksums cover data, shapes and metadata.
//  4. The metadata readers (metadata_string/_integer/_real) on every key of the file and on a
//     key taken from the input, optimizer_state_from and restore_parameters either succeed or
//     throw linrec::Error naming the file ("linrec: <fuzz>: checkpoint: ").
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "linrec/io/checkpoint.hpp"
#include "linrec/io/safetensors.hpp"

namespace {

constexpr std::string_view source = "<fuzz>";

// Runs `action`; a linrec::Error must name the file, any other outcome is fine.
template <class Action>
void expect_named_error_or_success(Action&& action, std::string_view prefix) {
  try {
    action();
  } catch (const linrec::Error& e) {
    if (!std::string_view(e.what()).starts_with(prefix)) __builtin_trap();
  }
}

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  const std::string file_prefix = "linrec: " + std::string(source) + ": ";
  linrec::io::tensor_file parsed;
  try {
    parsed = linrec::io::parse_safetensors(bytes, source);
  } catch (const linrec::Error& e) {
    if (!std::string_view(e.what()).starts_with(file_prefix)) __builtin_trap();  // 1.
    return 0;                                                                    // rejected with a message: fine
  }
  if (parsed.source != source) __builtin_trap();

  // 2. round trip, through a verified parse
  const std::vector<std::byte> again = linrec::io::serialize_safetensors(parsed);
  const linrec::io::tensor_file reparsed = linrec::io::parse_safetensors(again, "<fuzz round trip>");
  if (!(reparsed == parsed)) __builtin_trap();

  // 3. single-bit flips of a checksummed file are all refused
  std::uint64_t state = linrec::io::detail::crc32c(bytes);
  for (int round = 0; round < 4; ++round) {
    std::vector<std::byte> flipped = again;
    const std::uint64_t draw = splitmix64(state);
    flipped[(draw >> 3) % flipped.size()] ^= static_cast<std::byte>(1u << (draw & 7u));
    bool refused = false;
    try {
      (void)linrec::io::parse_safetensors(flipped, source);
    } catch (const linrec::Error&) {
      refused = true;
    }
    if (!refused) __builtin_trap();
  }

  // 4. what a resume reads next: metadata, optimizer state, parameters
  const std::string checkpoint_prefix = file_prefix + "checkpoint: ";
  std::vector<std::string> keys = {"step", "seconds", "optim.step"};
  for (const auto& [key, value] : parsed.metadata) keys.push_back(key);
  // a key from the input's tail: arbitrary bytes, usually missing
  keys.emplace_back(reinterpret_cast<const char*>(data + size - std::min<std::size_t>(size, 12)),
                    std::min<std::size_t>(size, 12));
  for (const std::string& key : keys) {
    expect_named_error_or_success([&] { (void)linrec::io::metadata_string(parsed, key); }, checkpoint_prefix);
    expect_named_error_or_success([&] { (void)linrec::io::metadata_integer(parsed, key); }, checkpoint_prefix);
    expect_named_error_or_success([&] { (void)linrec::io::metadata_real(parsed, key); }, checkpoint_prefix);
  }
  expect_named_error_or_success([&] { (void)linrec::io::optimizer_state_from(parsed, "optim."); }, file_prefix);
  // Parameters shaped like the file's (small) tensors restore; one of the wrong shape or
  // with a missing name is refused naming the file.
  std::vector<linrec::Parameter> params;
  for (const auto& t : parsed.tensors()) {
    if (t.shape.size() > static_cast<std::size_t>(linrec::Shape::max_rank) || t.data.size() > (1u << 16) ||
        t.data.empty() || params.size() >= 8)
      continue;
    params.emplace_back(linrec::Tensor::zeros(linrec::io::detail::shape_of(t.shape)), t.name);
  }
  linrec::io::restore_parameters(parsed, params, "");  // must succeed, copying the values bitwise
  for (const linrec::Parameter& p : params) {
    const std::vector<float>& stored = parsed.at(p.name()).data;
    if (std::memcmp(p.value().data(), stored.data(), stored.size() * sizeof(float)) != 0) __builtin_trap();
  }
  params.emplace_back(linrec::Tensor::zeros({1}), std::string(1, '\x01'));  // a name no file can match: refused
  expect_named_error_or_success([&] { linrec::io::restore_parameters(parsed, params, "\x02"); }, checkpoint_prefix);
  return 0;
}
