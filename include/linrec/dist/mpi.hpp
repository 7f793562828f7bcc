#pragma once
// The communicator (dist/communicator.hpp) over MPI. Needs <mpi.h>: link the CMake target
// linrec::mpi (find_package(MPI), MPI::MPI_CXX), which the rest of linrec does not need.
//
//   int main(int argc, char** argv) {
//     auto comm = std::make_shared<linrec::dist::mpi_communicator>(&argc, &argv);  // MPI_Init
//     ...                                                   // comm->rank(), comm->all_reduce_sum(…)
//   }                                                       // MPI_Finalize when comm goes
//
// MPI errors become linrec::Error exceptions (the communicator's error handler returns
// instead of aborting), so a program can say what failed and then abort() the job.
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>

#include "linrec/core/error.hpp"
#include "linrec/dist/communicator.hpp"

namespace linrec::dist {

class mpi_communicator {
 public:
  // Initialises MPI (threads: funneled, as only the thread that made it calls MPI; OpenMP
  // threads compute between the calls) unless the program did, and finalises it in the
  // destructor if it initialised it.
  mpi_communicator(int* argc, char*** argv) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
      owns_mpi_ = true;
    }
    adopt(MPI_COMM_WORLD);
  }
  // Works on a duplicate of `comm` (its own message space); MPI must be initialised.
  explicit mpi_communicator(MPI_Comm comm) { adopt(comm); }
  mpi_communicator(const mpi_communicator&) = delete;
  mpi_communicator& operator=(const mpi_communicator&) = delete;
  ~mpi_communicator() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (local_ != MPI_COMM_NULL) MPI_Comm_free(&local_);
    if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
    if (owns_mpi_) MPI_Finalize();
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  MPI_Comm handle() const { return comm_; }

  void all_reduce_sum(std::span<float> x) { reduce(x.data(), x.size(), MPI_FLOAT); }
  void all_reduce_sum(std::span<double> x) { reduce(x.data(), x.size(), MPI_DOUBLE); }
  void all_reduce_mean(std::span<float> x) {
    all_reduce_sum(x);
    scale(x);
  }
  void all_reduce_mean(std::span<double> x) {
    all_reduce_sum(x);
    scale(x);
  }
  void broadcast(std::span<float> x, int root) { bcast(x.data(), x.size(), MPI_FLOAT, root); }
  void broadcast(std::span<double> x, int root) { bcast(x.data(), x.size(), MPI_DOUBLE, root); }
  void broadcast(std::span<std::byte> x, int root) { bcast(x.data(), x.size(), MPI_BYTE, root); }
  void barrier() { check(MPI_Barrier(comm_), "MPI_Barrier"); }
  // Ends every process of the job (MPI_Abort on the world: a failure is never partial).
  [[noreturn]] void abort(std::string_view message, int code) {
    std::fprintf(stderr, "rank %d of %d: %.*s\n", rank_, size_, int(message.size()), message.data());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; if an implementation did, stop anyway
  }

 private:
  void adopt(MPI_Comm comm) {
    check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    // The ranks that share this host's memory: they share its cores too.
    check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local_), "MPI_Comm_split_type");
    check(MPI_Comm_rank(local_, &local_rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(local_, &local_size_), "MPI_Comm_size");
  }

  // MPI counts are int: longer buffers go in pieces of at most INT_MAX elements.
  void reduce(void* data, std::size_t n, MPI_Datatype type) {
    int bytes = 0;
    MPI_Type_size(type, &bytes);
    auto* p = static_cast<char*>(data);
    for (std::size_t done = 0; done < n;) {
      const std::size_t count = std::min<std::size_t>(n - done, INT_MAX);
      check(MPI_Allreduce(MPI_IN_PLACE, p + done * std::size_t(bytes), int(count), type, MPI_SUM, comm_),
            "MPI_Allreduce");
      done += count;
    }
  }
  void bcast(void* data, std::size_t n, MPI_Datatype type, int root) {
    LINREC_CHECK(root >= 0 && root < size_, "broadcast: root " << root << " is not a rank of 0.." << size_ - 1);
    int bytes = 0;
    MPI_Type_size(type, &bytes);
    auto* p = static_cast<char*>(data);
    for (std::size_t done = 0; done < n;) {
      const std::size_t count = std::min<std::size_t>(n - done, INT_MAX);
      check(MPI_Bcast(p + done * std::size_t(bytes), int(count), type, root, comm_), "MPI_Bcast");
      done += count;
    }
  }
  template <class T>
  void scale(std::span<T> x) const {
    if (size_ == 1) return;
    const T inverse = T(1) / T(size_);
    for (T& v : x) v *= inverse;
  }
  static void check(int code, const char* call) {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, text, &length);
    throw Error(std::string("linrec: ") + call + " failed: " + std::string(text, std::size_t(length)));
  }

  MPI_Comm comm_ = MPI_COMM_NULL, local_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  bool owns_mpi_ = false;
};
static_assert(communicator<mpi_communicator>);

}  // namespace linrec::dist
