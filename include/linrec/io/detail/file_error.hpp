#pragma once
// Errors of the io/ layer: one line, naming the file and what was wrong with it.
//
//   throw_file_error("ckpt/step100.safetensors", "truncated: header says 1234 bytes, file has 1000");
//   -> linrec::Error("linrec: ckpt/step100.safetensors: truncated: header says 1234 bytes, file has 1000")
//
// Text that comes from a file (tensor names, JSON parser messages) goes through `printable`
// first, so a hostile or corrupted file can never put a newline or a terminal escape into
// the message.
#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

#include "linrec/core/error.hpp"

namespace linrec::io::detail {

// Escapes control and non-ASCII bytes as \xNN and cuts the text at `max_chars` (adding "...").
inline std::string printable(std::string_view text, std::size_t max_chars = 80) {
  static constexpr char hex_digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (out.size() >= max_chars) {
      out += "...";
      break;
    }
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte >= 0x20 && byte < 0x7f) {
      out += static_cast<char>(byte);
    } else {
      out += "\\x";
      out += hex_digits[byte >> 4];
      out += hex_digits[byte & 0xf];
    }
  }
  return out;
}

// Appends text or a number (via std::to_string) to a message.
inline void append_text(std::string& out, std::string_view text) { out += text; }
inline void append_text(std::string& out, char c) { out += c; }
template <class Number>
requires(std::is_arithmetic_v<Number> && !std::is_same_v<Number, char>) inline void append_text(std::string& out,
                                                                                                Number value) {
  out += std::to_string(value);
}
// concat("tensor '", name, "' needs ", bytes, " bytes"): builds a message by appending, which
// also sidesteps GCC 12's false -Wrestrict report on "literal" + std::string&&.
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::string out;
  (append_text(out, parts), ...);
  return out;
}

[[noreturn]] inline void throw_file_error(std::string_view file, std::string_view what) {
  std::string message = "linrec: ";
  message += printable(file, 300);
  message += ": ";
  message += what;
  throw ::linrec::Error(message);
}

// The text of errno, for messages about failed system calls.
inline std::string errno_text(int error_number) { return std::strerror(error_number); }

}  // namespace linrec::io::detail
