// The cases of dist_conformance.hpp over MPI: ctest starts this program with mpiexec -n 2.
// Every rank runs every case (the collectives must be made in the same order everywhere) and
// prints its failures; the exit status is the same on all ranks: 0 only if no rank failed.
#include <cstdio>
#include <memory>

#include "dist_conformance.hpp"
#include "linrec/dist/mpi.hpp"

int main(int argc, char** argv) {
  auto comm = std::make_shared<linrec::dist::mpi_communicator>(&argc, &argv);
  const auto report = linrec::dist_conformance::all_cases(*comm);
  for (const auto& note : report.notes) std::printf("rank %d: %s\n", comm->rank(), note.c_str());
  for (const auto& failure : report.failures) std::printf("rank %d: FAILED: %s\n", comm->rank(), failure.c_str());
  double failed[1] = {double(report.failures.size()) + (report.checks > 20 ? 0 : 1)};
  comm->all_reduce_sum(std::span<double>(failed));
  if (comm->rank() == 0)
    std::printf("test_dist_mpi: %d ranks, %d checks per rank, %g failures in all\n", comm->size(), report.checks,
                failed[0]);
  return failed[0] == 0 ? 0 : 1;
}
