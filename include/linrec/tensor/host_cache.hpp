#pragma once
// A caching allocator for host tensor storage.
//
// A training step allocates the same few hundred tensors every step and frees them when the
// tape goes. Through malloc, the large ones are mmap'd or carved from a heap top that glibc
// trims again, so every step page-faults its working set back in (zero-filled by the kernel):
// 7 % of a default training step went to page faults and another 6 % to memset. Like
// PyTorch's CUDA caching allocator, freed blocks are kept, keyed by their size rounded to a
// cache line, and handed out again for the next request of that size; a steady-state step
// then allocates nothing from the system.
//
//   linrec::set_host_cache_limit(bytes);   // most bytes kept (default 1 GiB; 0: no caching)
//   linrec::release_host_cache();          // give every cached block back to the system
//   linrec::host_cache_statistics();       // cached bytes, hits, misses
//   linrec::host_buffer<float> scratch(n);  // n uninitialised floats from the cache (kernels'
//                                           // temporaries; a std::vector would zero-fill them)
//
// Blocks below `host_cache_min_bytes` go straight to the system: malloc's own per-thread
// caches serve small sizes well. Thread-safe (one mutex; row groups allocate concurrently).
// Under AddressSanitizer the default limit is 0: a cached block would hide a use after free.
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>
#include <vector>

namespace linrec {

struct host_cache_stats {
  std::size_t cached_bytes = 0;  // freed and kept, ready for reuse
  std::size_t limit_bytes = 0;
  std::size_t hits = 0;    // requests served from the cache
  std::size_t misses = 0;  // requests that went to the system
};

inline constexpr std::size_t host_cache_min_bytes = 4096;
inline constexpr std::size_t host_cache_alignment = 64;

namespace detail {

class host_cache {
 public:
  static host_cache& instance() {
    // Never destroyed: tensors in other static objects may be freed after any destructor of
    // ours would have run. The blocks stay reachable, so leak checkers do not report them.
    static host_cache* cache = new host_cache;
    return *cache;
  }

  static std::size_t rounded(std::size_t bytes) {
    return (bytes + host_cache_alignment - 1) / host_cache_alignment * host_cache_alignment;
  }

  // `bytes` must already be rounded(); nullptr when the system is out of memory.
  void* allocate(std::size_t bytes) {
    if (bytes >= host_cache_min_bytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        stats_.cached_bytes -= bytes;
        ++stats_.hits;
        return p;
      }
      ++stats_.misses;
    }
    return std::aligned_alloc(host_cache_alignment, bytes);
  }

  void deallocate(void* p, std::size_t bytes) {
    if (p == nullptr) return;
    if (bytes >= host_cache_min_bytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stats_.cached_bytes + bytes <= stats_.limit_bytes) {
        free_[bytes].push_back(p);
        stats_.cached_bytes += bytes;
        return;
      }
    }
    std::free(p);
  }

  void set_limit(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.limit_bytes = bytes;
    trim_locked();
  }

  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::size_t limit = stats_.limit_bytes;
    stats_.limit_bytes = 0;
    trim_locked();
    stats_.limit_bytes = limit;
  }

  host_cache_stats statistics() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

 private:
  host_cache() { stats_.limit_bytes = sanitized_build() ? 0 : std::size_t{1} << 30; }

  static constexpr bool sanitized_build() {
#if defined(__SANITIZE_ADDRESS__)
    return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return true;
#else
    return false;
#endif
#else
    return false;
#endif
  }

  void trim_locked() {
    for (auto it = free_.begin(); it != free_.end() && stats_.cached_bytes > stats_.limit_bytes; ++it)
      while (!it->second.empty() && stats_.cached_bytes > stats_.limit_bytes) {
        std::free(it->second.back());
        it->second.pop_back();
        stats_.cached_bytes -= it->first;
      }
  }

  std::mutex mutex_;
  std::unordered_map<std::size_t, std::vector<void*>> free_;
  host_cache_stats stats_;
};

}  // namespace detail

// A kernel's temporary array: uninitialised, move-only, its block from the cache.
template <class T>
class host_buffer {
 public:
  host_buffer() = default;
  explicit host_buffer(std::size_t n) : size_(n), bytes_(detail::host_cache::rounded((n > 0 ? n : 1) * sizeof(T))) {
    data_ = static_cast<T*>(detail::host_cache::instance().allocate(bytes_));
    if (data_ == nullptr) throw std::bad_alloc();
  }
  host_buffer(std::size_t n, T value) : host_buffer(n) { std::fill(data_, data_ + n, value); }
  host_buffer(host_buffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)), bytes_(other.bytes_) {}
  host_buffer& operator=(host_buffer&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(bytes_, other.bytes_);
    return *this;
  }
  host_buffer(const host_buffer&) = delete;
  host_buffer& operator=(const host_buffer&) = delete;
  ~host_buffer() { detail::host_cache::instance().deallocate(data_, bytes_); }

  T* data() const { return data_; }
  std::size_t size() const { return size_; }
  T& operator[](std::size_t i) const { return data_[i]; }
  T* begin() const { return data_; }
  T* end() const { return data_ + size_; }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t bytes_ = 0;
};

inline void set_host_cache_limit(std::size_t bytes) { detail::host_cache::instance().set_limit(bytes); }
inline void release_host_cache() { detail::host_cache::instance().release(); }
inline host_cache_stats host_cache_statistics() { return detail::host_cache::instance().statistics(); }

}  // namespace linrec
