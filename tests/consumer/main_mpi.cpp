// linrec::mpi from an installed package: an MPI communicator (one process without a launcher:
// MPI's singleton start) whose collectives keep a single rank's values.
#include <cstdio>
#include <span>
#include <vector>

#include "linrec/dist/buckets.hpp"
#include "linrec/dist/mpi.hpp"

int main(int argc, char** argv) {
  linrec::dist::mpi_communicator comm(&argc, &argv);
  std::vector<float> g{1.5f, -2.0f, 0.25f};
  std::vector<std::span<float>> grads{std::span<float>(g)};
  linrec::dist::bucketed_all_reduce<float>().mean(comm, std::span<const std::span<float>>(grads));
  comm.all_reduce_sum(std::span<float>(g));
  const bool ok = comm.size() == 1 && g == std::vector<float>{1.5f, -2.0f, 0.25f};
  std::printf("consumer_mpi: rank %d of %d, all-reduce %s\n", comm.rank(), comm.size(), ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
