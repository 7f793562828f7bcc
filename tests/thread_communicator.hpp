#pragma once
// A communicator whose ranks are threads of one process (tests only): N trainers run side by
// side in one test program, so the data-parallel logic is tested without MPI (and under the
// sanitizers, which Open MPI's own allocations would drown). Collectives meet at a barrier;
// a sum adds the ranks' buffers in rank order, so every rank gets the same bits, like MPI.
#include <barrier>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <thread>
#include <vector>

#include "linrec/dist/communicator.hpp"

namespace linrec::testing {

class thread_group {
 public:
  explicit thread_group(int ranks) : ranks_(ranks), barrier_(ranks), slots_(std::size_t(ranks)) {}
  int ranks() const { return ranks_; }

 private:
  friend class thread_communicator;
  struct slot {
    void* data = nullptr;
    std::size_t bytes = 0;
  };
  int ranks_;
  std::barrier<> barrier_;
  std::vector<slot> slots_;
};

class thread_communicator {
 public:
  thread_communicator(std::shared_ptr<thread_group> group, int rank) : group_(std::move(group)), rank_(rank) {}
  int rank() const { return rank_; }
  int size() const { return group_->ranks(); }

  void all_reduce_sum(std::span<float> x) { sum(x); }
  void all_reduce_sum(std::span<double> x) { sum(x); }
  void all_reduce_mean(std::span<float> x) { mean(x); }
  void all_reduce_mean(std::span<double> x) { mean(x); }
  void broadcast(std::span<float> x, int root) { copy_from(x.data(), x.size_bytes(), root); }
  void broadcast(std::span<double> x, int root) { copy_from(x.data(), x.size_bytes(), root); }
  void broadcast(std::span<std::byte> x, int root) { copy_from(x.data(), x.size_bytes(), root); }
  void barrier() { group_->barrier_.arrive_and_wait(); }
  [[noreturn]] void abort(std::string_view message, int) {
    std::fprintf(stderr, "thread rank %d: %.*s\n", rank_, int(message.size()), message.data());
    std::abort();
  }

 private:
  // Publishes this rank's buffer; every rank's buffer must have the same length (a mismatch is a
  // bug in the caller, which would make MPI read out of bounds: stop loudly).
  void publish(void* data, std::size_t bytes) {
    group_->slots_[std::size_t(rank_)] = {data, bytes};
    barrier();
    for (const auto& s : group_->slots_)
      if (s.bytes != bytes) abort("collective called with buffers of different lengths", 1);
  }
  template <class T>
  void sum(std::span<T> x) {
    publish(x.data(), x.size_bytes());
    std::vector<T> total(x.size(), T(0));
    for (const auto& s : group_->slots_)
      for (std::size_t i = 0; i < x.size(); ++i) total[i] += static_cast<const T*>(s.data)[i];
    barrier();  // every rank has read every buffer before any is overwritten
    std::copy(total.begin(), total.end(), x.begin());
    barrier();
  }
  template <class T>
  void mean(std::span<T> x) {
    sum(x);
    const T inverse = T(1) / T(size());
    for (T& v : x) v *= inverse;
  }
  void copy_from(void* data, std::size_t bytes, int root) {
    publish(data, bytes);
    if (rank_ != root) std::memcpy(data, group_->slots_[std::size_t(root)].data, bytes);
    barrier();
  }

  std::shared_ptr<thread_group> group_;
  int rank_;
};
static_assert(dist::communicator<thread_communicator>);

// Runs body(comm) on `ranks` threads, one communicator each; returns when all are done.
inline void run_ranks(int ranks, const std::function<void(thread_communicator&)>& body) {
  auto group = std::make_shared<thread_group>(ranks);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      thread_communicator comm(group, r);
      body(comm);
    });
  for (auto& t : threads) t.join();
}

}  // namespace linrec::testing
