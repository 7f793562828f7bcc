#pragma once
// All-reduce of many buffers (a model's gradients: dozens of tensors, most of them small) in
// buckets of a few MB: each bucket is packed into one contiguous buffer, reduced in one
// collective and unpacked, so a step makes a handful of calls, not one per tensor, and no call
// is larger than a bucket (the latency of small messages and the memory of one huge staging
// copy both stay bounded). The same idea as PyTorch DDP's gradient buckets (25 MB there; 4 MB
// by default here, where models are small and there are few cores).
#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include "linrec/core/error.hpp"
#include "linrec/dist/communicator.hpp"

namespace linrec::dist {

template <class T>
class bucketed_all_reduce {
 public:
  static constexpr std::size_t default_bucket_bytes = std::size_t(4) << 20;

  explicit bucketed_all_reduce(std::size_t bucket_bytes = default_bucket_bytes)
      : capacity_(std::max<std::size_t>(1, bucket_bytes / sizeof(T))) {}

  // Every buffer ← its sum over the ranks.
  template <communicator C>
  void sum(C& comm, std::span<const std::span<T>> buffers) {
    run(comm, buffers, T(1));
  }
  // Every buffer ← (its sum over the ranks) · (1/size): summed, then scaled once while unpacked.
  template <communicator C>
  void mean(C& comm, std::span<const std::span<T>> buffers) {
    run(comm, buffers, T(1) / T(comm.size()));
  }
  // Collectives the last call made (its bucket count).
  std::size_t calls() const { return calls_; }
  std::size_t bucket_elements() const { return capacity_; }

 private:
  struct piece {
    std::size_t buffer, offset, length;
  };

  template <communicator C>
  void run(C& comm, std::span<const std::span<T>> buffers, T scale) {
    calls_ = 0;
    if (comm.size() == 1) return;  // a sum over one rank is the buffer itself
    staging_.resize(capacity_);
    std::vector<piece> pieces;
    std::size_t filled = 0;
    const auto flush = [&] {
      if (filled == 0) return;
      comm.all_reduce_sum(std::span<T>(staging_.data(), filled));
      ++calls_;
      std::size_t at = 0;
      for (const piece& p : pieces) {
        T* out = buffers[p.buffer].data() + p.offset;
        for (std::size_t i = 0; i < p.length; ++i) out[i] = scale == T(1) ? staging_[at + i] : staging_[at + i] * scale;
        at += p.length;
      }
      pieces.clear();
      filled = 0;
    };
    for (std::size_t b = 0; b < buffers.size(); ++b) {
      const std::span<T> buffer = buffers[b];
      for (std::size_t offset = 0; offset < buffer.size();) {
        const std::size_t length = std::min(buffer.size() - offset, capacity_ - filled);
        std::copy_n(buffer.data() + offset, length, staging_.data() + filled);
        pieces.push_back({b, offset, length});
        filled += length;
        offset += length;
        if (filled == capacity_) flush();
      }
    }
    flush();
  }

  std::size_t capacity_;
  std::vector<T> staging_;
  std::size_t calls_ = 0;
};

}  // namespace linrec::dist
