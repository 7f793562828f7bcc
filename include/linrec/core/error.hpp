#pragma once
// One error type for the whole library, and one check macro that says what failed and why.
#include <sstream>
#include <stdexcept>
#include <string>

namespace linrec {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
[[noreturn]] inline void fail(const char* condition, const char* file, int line, const std::string& message) {
  std::ostringstream out;
  out << "linrec: " << message << " (check `" << condition << "` failed at " << file << ':' << line << ')';
  throw Error(out.str());
}
}  // namespace detail

}  // namespace linrec

// LINREC_CHECK(cond, stream-expression): throws linrec::Error naming the condition and the values.
// Usage: LINREC_CHECK(a.size() == b.size(), "x: expected " << a.size() << " elements, got " << b.size());
#define LINREC_CHECK(condition, message)                                                   \
  do {                                                                                     \
    if (!(condition)) {                                                                    \
      std::ostringstream linrec_check_message_;                                            \
      linrec_check_message_ << message;                                                    \
      ::linrec::detail::fail(#condition, __FILE__, __LINE__, linrec_check_message_.str()); \
    }                                                                                      \
  } while (false)
