#pragma once
// What data-parallel training needs from a transport, and the transport of a single process.
//
// A communicator joins `size()` processes (ranks 0 … size-1) that run the same program on
// different data. The calls are collective: every rank makes the same calls in the same order
// with buffers of the same length (like MPI's, which dist/mpi.hpp implements; a NCCL
// communicator would implement the same calls on device buffers).
//
//   all_reduce_sum(x)   x ← Σ_ranks x, the same bits on every rank
//   all_reduce_mean(x)  x ← (Σ_ranks x) · (1/size): the sum, then one scaling
//   broadcast(x, root)  x ← root's x
//   barrier()           returns once every rank has entered it
//   abort(message)      prints message (naming the rank) and ends every rank of the job
//
// `single_process` is the default everywhere: all of it is a no-op, so a program that never
// heard of MPI trains exactly as before.
#include <concepts>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>

namespace linrec::dist {

template <class C>
concept communicator = requires(C& c, const C& cc, std::span<float> f, std::span<double> d, std::span<std::byte> b,
                                std::string_view message) {
  { cc.rank() } -> std::same_as<int>;
  { cc.size() } -> std::same_as<int>;
  c.all_reduce_sum(f);
  c.all_reduce_sum(d);
  c.all_reduce_mean(f);
  c.all_reduce_mean(d);
  c.broadcast(f, 0);
  c.broadcast(d, 0);
  c.broadcast(b, 0);
  c.barrier();
  c.abort(message, 1);
};

// One process, no transport: every collective leaves its buffer as it is.
class single_process {
 public:
  int rank() const { return 0; }
  int size() const { return 1; }
  // Processes of this job on this host, and this one's index among them (thread defaults).
  int local_rank() const { return 0; }
  int local_size() const { return 1; }
  void all_reduce_sum(std::span<float>) {}
  void all_reduce_sum(std::span<double>) {}
  void all_reduce_mean(std::span<float>) {}
  void all_reduce_mean(std::span<double>) {}
  void broadcast(std::span<float>, int) {}
  void broadcast(std::span<double>, int) {}
  void broadcast(std::span<std::byte>, int) {}
  void barrier() {}
  [[noreturn]] void abort(std::string_view message, int code) {
    std::fprintf(stderr, "%.*s\n", int(message.size()), message.data());
    std::fflush(stderr);
    std::exit(code);
  }
};
static_assert(communicator<single_process>);

}  // namespace linrec::dist
