// Runs the example of docs/autodiff.md and checks the page still shows that code.
#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>
#include <string>

float train_sine_regression(int steps);

namespace {
std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}
std::string between(const std::string& text, const std::string& begin, const std::string& end) {
  const auto b = text.find(begin);
  const auto e = text.find(end);
  if (b == std::string::npos || e == std::string::npos || e < b) return {};
  const auto start = text.find('\n', b) + 1;
  return text.substr(start, text.rfind('\n', e) + 1 - start);
}
}  // namespace

TEST_CASE("the docs/autodiff.md training example learns its task", "[docs][train]") {
  const float loss = train_sine_regression(300);
  INFO("final loss " << loss << " (variance of sin(3x) on [-1,1] is about 0.5)");
  CHECK(loss < 0.01f);
}

TEST_CASE("docs/autodiff.md shows the compiled example verbatim", "[docs]") {
  const std::string root = LINREC_SOURCE_DIR;
  const auto code =
      between(read(root + "/tests/doc_autodiff_example.cpp"), "// [doc-example-begin]", "// [doc-example-end]");
  const auto doc = read(root + "/docs/autodiff.md");
  REQUIRE(code.size() > 500);
  CHECK(doc.find(code) != std::string::npos);
}
