#pragma once
// A communicator of any type behind one handle, so that code which is not a template (the
// trainer) can hold MPI's, a test's or the single-process one. A copy shares the communicator
// it was made from; the default handle is a single process.
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "linrec/dist/communicator.hpp"

namespace linrec::dist {

class any_communicator {
 public:
  any_communicator() : any_communicator(std::make_shared<single_process>()) {}
  template <communicator C>
  explicit any_communicator(std::shared_ptr<C> comm) : self_(std::make_shared<model<C>>(std::move(comm))) {}

  int rank() const { return self_->rank(); }
  int size() const { return self_->size(); }
  int local_rank() const { return self_->local_rank(); }
  int local_size() const { return self_->local_size(); }
  void all_reduce_sum(std::span<float> x) { self_->all_reduce_sum(x); }
  void all_reduce_sum(std::span<double> x) { self_->all_reduce_sum(x); }
  void all_reduce_mean(std::span<float> x) { self_->all_reduce_mean(x); }
  void all_reduce_mean(std::span<double> x) { self_->all_reduce_mean(x); }
  void broadcast(std::span<float> x, int root) { self_->broadcast(x, root); }
  void broadcast(std::span<double> x, int root) { self_->broadcast(x, root); }
  void broadcast(std::span<std::byte> x, int root) { self_->broadcast(x, root); }
  void barrier() { self_->barrier(); }
  [[noreturn]] void abort(std::string_view message, int code) {
    self_->abort(message, code);
    std::abort();  // GCC does not carry [[noreturn]] through the virtual call
  }

 private:
  struct concept_base {
    virtual ~concept_base() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    virtual int local_rank() const = 0;
    virtual int local_size() const = 0;
    virtual void all_reduce_sum(std::span<float>) = 0;
    virtual void all_reduce_sum(std::span<double>) = 0;
    virtual void all_reduce_mean(std::span<float>) = 0;
    virtual void all_reduce_mean(std::span<double>) = 0;
    virtual void broadcast(std::span<float>, int) = 0;
    virtual void broadcast(std::span<double>, int) = 0;
    virtual void broadcast(std::span<std::byte>, int) = 0;
    virtual void barrier() = 0;
    [[noreturn]] virtual void abort(std::string_view, int) = 0;
  };

  template <class C>
  struct model final : concept_base {
    explicit model(std::shared_ptr<C> c) : comm(std::move(c)) {}
    int rank() const override { return comm->rank(); }
    int size() const override { return comm->size(); }
    // A communicator without host-local counts is treated as one process per host.
    int local_rank() const override {
      if constexpr (requires { comm->local_rank(); })
        return comm->local_rank();
      else
        return 0;
    }
    int local_size() const override {
      if constexpr (requires { comm->local_size(); })
        return comm->local_size();
      else
        return 1;
    }
    void all_reduce_sum(std::span<float> x) override { comm->all_reduce_sum(x); }
    void all_reduce_sum(std::span<double> x) override { comm->all_reduce_sum(x); }
    void all_reduce_mean(std::span<float> x) override { comm->all_reduce_mean(x); }
    void all_reduce_mean(std::span<double> x) override { comm->all_reduce_mean(x); }
    void broadcast(std::span<float> x, int root) override { comm->broadcast(x, root); }
    void broadcast(std::span<double> x, int root) override { comm->broadcast(x, root); }
    void broadcast(std::span<std::byte> x, int root) override { comm->broadcast(x, root); }
    void barrier() override { comm->barrier(); }
    [[noreturn]] void abort(std::string_view message, int code) override {
      comm->abort(message, code);
      std::abort();  // unreachable when C::abort keeps its promise
    }
    std::shared_ptr<C> comm;
  };

  std::shared_ptr<concept_base> self_;
};
static_assert(communicator<any_communicator>);

}  // namespace linrec::dist
