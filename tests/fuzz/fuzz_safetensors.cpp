// libFuzzer target: arbitrary bytes into the checkpoint parser and the restore helpers.
//
// Build and run (clang only; see the LINREC_FUZZ block of the root CMakeLists.txt):
//   CXX=clang++-14 cmake -S . -B build-fuzz -DLINREC_FUZZ=ON -DLINREC_BUILD_BENCHMARKS=OFF \
//       -DLINREC_BUILD_EXAMPLES=OFF -DLINREC_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
//   cmake --build build-fuzz --target fuzz_safetensors
//   mkdir -p build-fuzz/corpus && cp tests/data/safetensors/*.safetensors build-fuzz/corpus/
//   build-fuzz/fuzz/fuzz_safetensors build-fuzz/corpus -max_total_time=600 -jobs=1
//
// Any input must either parse into a consistent tensor_file or throw linrec::Error; anything
// else (a crash, a sanitizer report, another exception type) is a bug. A file that parses must
// also survive serialize -> parse unchanged.
#include <cstddef>
#include <cstdint>
#include <span>

#include "linrec/io/checkpoint.hpp"
#include "linrec/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  linrec::io::tensor_file parsed;
  try {
    parsed = linrec::io::parse_safetensors(bytes, "<fuzz>");
  } catch (const linrec::Error&) {
    return 0;  // rejected with a message: fine
  }
  const std::vector<std::byte> again = linrec::io::serialize_safetensors(parsed);
  const linrec::io::tensor_file reparsed = linrec::io::parse_safetensors(again, "<fuzz round trip>");
  if (!(reparsed == parsed)) __builtin_trap();
  // What a resume reads next: optimizer state and metadata numbers. Bad values must be
  // linrec::Error, never another exception.
  try {
    (void)linrec::io::optimizer_state_from(parsed, "optim.");
  } catch (const linrec::Error&) {
  }
  for (const char* key : {"step", "seconds"}) try {
      (void)linrec::io::metadata_integer(parsed, key);
      (void)linrec::io::metadata_real(parsed, key);
    } catch (const linrec::Error&) {
    }
  return 0;
}
