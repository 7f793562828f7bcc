#pragma once
// Whether this process was started by an MPI launcher, read from the environment the launcher
// sets (no MPI library needed): a program built without MPI can then refuse to run as N
// independent copies that would each train alone and overwrite one another's checkpoints.
#include <cstdlib>
#include <string>

namespace linrec::dist {

// The number of processes the launcher started (mpirun -np N: N), or 0 when no launcher's
// variables are set. Open MPI sets OMPI_COMM_WORLD_SIZE; MPICH and Intel MPI (Hydra) set
// PMI_SIZE; PMIx launchers set PMIX_SIZE only in some versions, so it is read last.
inline int launched_processes() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') continue;
    char* end = nullptr;
    const long n = std::strtol(value, &end, 10);
    if (*end == '\0' && n >= 1 && n <= (1 << 24)) return int(n);
  }
  return 0;
}

}  // namespace linrec::dist
