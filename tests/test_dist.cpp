// Data-parallel training without MPI: the cases of dist_conformance.hpp on ranks that are
// threads of this process (1, 2 and 3 of them), plus what a single process must keep doing.
#include <catch2/catch.hpp>
#include <mutex>

#include "dist_conformance.hpp"
#include "linrec/dist/any_communicator.hpp"
#include "linrec/dist/launcher.hpp"
#include "thread_communicator.hpp"

using namespace linrec;

namespace {

// Every rank's report, checked on the test's thread (Catch2 assertions are not thread-safe).
void check_on_threads(int ranks) {
  std::mutex lock;
  std::vector<dist_conformance::report> reports(std::size_t(ranks), dist_conformance::report{});
  testing::run_ranks(ranks, [&](testing::thread_communicator& comm) {
    auto out = dist_conformance::all_cases(comm);
    std::lock_guard guard(lock);
    reports[std::size_t(comm.rank())] = std::move(out);
  });
  for (int r = 0; r < ranks; ++r) {
    const auto& report = reports[std::size_t(r)];
    INFO("rank " << r << " of " << ranks);
    for (const auto& note : report.notes) UNSCOPED_INFO(note);
    CHECK(report.checks > 20);
    for (const auto& failure : report.failures) FAIL_CHECK(failure);
  }
}

}  // namespace

TEST_CASE("dist: one rank (the trainer's default communicator) passes every case", "[dist]") { check_on_threads(1); }
TEST_CASE("dist: two ranks train like one process with the global batch", "[dist]") { check_on_threads(2); }
TEST_CASE("dist: three ranks (a mean that is not a power of two)", "[dist]") { check_on_threads(3); }

TEST_CASE("dist: the default handle is one process and its collectives leave buffers alone", "[dist]") {
  dist::any_communicator comm;
  CHECK(comm.rank() == 0);
  CHECK(comm.size() == 1);
  CHECK(comm.local_size() == 1);
  std::vector<double> x{1.5, -2.25, 3.0};
  comm.all_reduce_sum(std::span<double>(x));
  comm.all_reduce_mean(std::span<double>(x));
  comm.broadcast(std::span<double>(x), 0);
  CHECK(x == std::vector<double>{1.5, -2.25, 3.0});
}

TEST_CASE("dist: a launcher is recognised from its environment", "[dist]") {
  // Whatever this test runs under, unset first and restore after.
  const char* names[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
  std::vector<std::optional<std::string>> saved;
  for (const char* name : names) {
    const char* v = std::getenv(name);
    saved.push_back(v ? std::optional<std::string>(v) : std::nullopt);
    unsetenv(name);
  }
  CHECK(dist::launched_processes() == 0);
  setenv("PMI_SIZE", "4", 1);
  CHECK(dist::launched_processes() == 4);
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  CHECK(dist::launched_processes() == 2);  // Open MPI's variable first
  setenv("OMPI_COMM_WORLD_SIZE", "two", 1);
  CHECK(dist::launched_processes() == 4);  // not a number: the next launcher's variable
  for (std::size_t i = 0; i < saved.size(); ++i) {
    if (saved[i])
      setenv(names[i], saved[i]->c_str(), 1);
    else
      unsetenv(names[i]);
  }
}
