#pragma once
// Scratch memory of the CUDA scan: the scan's own stream-ordered pool, per-call scratch from
// it, and look-back scratch kept per stream between calls.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "linrec/scan/detail/cuda_check.cuh"

namespace linrec::detail {

// The scan's own stream-ordered memory pool on the current device, created on first use and
// kept for the process. Its release threshold is unlimited, so freed scratch stays in the
// pool across synchronisations: with the device's default pool (threshold 0) every call after
// a synchronisation went back to the driver. A private pool leaves the default pool's
// settings, which others may rely on, untouched.
// A driver allocation costs as much as a small scan, or more (H100): docs/notes/cuda_scan.md
inline cudaMemPool_t scratch_pool() {
  int device = 0;
  LINREC_CUDA_CHECK(cudaGetDevice(&device));
  static std::mutex mutex;
  static std::vector<cudaMemPool_t> pools;
  const std::lock_guard<std::mutex> lock(mutex);
  if (pools.size() <= std::size_t(device)) pools.resize(std::size_t(device) + 1, nullptr);
  if (pools[std::size_t(device)] == nullptr) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    cudaMemPool_t pool = nullptr;
    LINREC_CUDA_CHECK(cudaMemPoolCreate(&pool, &props));
    std::uint64_t threshold = UINT64_MAX;
    LINREC_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    pools[std::size_t(device)] = pool;
  }
  return pools[std::size_t(device)];
}

// Stream-ordered scratch memory owned for the duration of one call (from scratch_pool():
// after the first call this is a pool hit, not a driver allocation).
class stream_scratch {
 public:
  stream_scratch(std::size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes > 0) LINREC_CUDA_CHECK(cudaMallocFromPoolAsync(&ptr_, bytes, scratch_pool(), stream_));
  }
  stream_scratch(const stream_scratch&) = delete;
  stream_scratch& operator=(const stream_scratch&) = delete;
  ~stream_scratch() {
    if (ptr_) (void)cudaFreeAsync(ptr_, stream_);  // never throw from a destructor
  }
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

// Scratch kept between calls, per host thread and (device, stream): even a pool allocation
// is host time before the launch that a small scan notices (docs/notes/cuda_scan.md).
// Only for memory every call rewrites before it reads (the tiled kernels' epoch-tagged
// look-back records): calls on one stream run in order, so one buffer serves them all.
//  * Keyed by the stream's id (cudaStreamGetId), which is unique for the process: a destroyed
//    stream's handle may come back for a new stream while the old one's work still runs.
//  * Per host thread: two threads on one stream get two buffers, so a buffer is only ever
//    replaced by the thread that enqueues its users, in stream order (cudaFreeAsync).
//  * An event recorded after each launch marks a buffer's last use. A buffer whose stream
//    may be gone (the least recently used of a full table, or any at thread exit) is freed
//    once its event has completed, in relaxed capture mode: another thread's capture in
//    global mode stays valid, and no other stream's work is waited for.
//  * Not while the stream is being captured into a graph: a graph keeps the pointer for its
//    replays, and the cache may free it (the caller then allocates per call, in the graph).
//  * Not across cudaDeviceReset, which frees what the table holds.
class stream_scratch_cache {
 public:
  struct lease {
    void* ptr;
    cudaEvent_t last_use;  // record on the stream after the launch that uses ptr
  };

  stream_scratch_cache() = default;
  stream_scratch_cache(const stream_scratch_cache&) = delete;
  stream_scratch_cache& operator=(const stream_scratch_cache&) = delete;
  ~stream_scratch_cache() {
    for (const entry& e : entries_) release(e);  // never throws
  }

  static bool usable(cudaStream_t stream) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    LINREC_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    return capture == cudaStreamCaptureStatusNone;
  }

  // At least `bytes` for work enqueued on `stream` by this thread, until its next call here
  // (only where usable(stream)).
  lease get(std::size_t bytes, cudaStream_t stream) {
    int device = 0;
    LINREC_CUDA_CHECK(cudaGetDevice(&device));
    unsigned long long stream_id = 0;
    LINREC_CUDA_CHECK(cudaStreamGetId(stream, &stream_id));
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      if (entries_[i].device != device || entries_[i].stream_id != stream_id) continue;
      std::rotate(entries_.begin() + std::ptrdiff_t(i), entries_.begin() + std::ptrdiff_t(i) + 1, entries_.end());
      entry& e = entries_.back();  // most recently used last
      if (e.bytes < bytes) {
        std::size_t size = 0;
        void* fresh = allocate(bytes, stream, size);  // on failure e keeps its old buffer
        void* old = e.ptr;
        e.ptr = fresh;
        e.bytes = size;
        LINREC_CUDA_CHECK(cudaFreeAsync(old, stream));  // after this stream's earlier users
      }
      return {e.ptr, e.last_use};
    }
    entry e{device, stream_id, nullptr, 0, nullptr};
    LINREC_CUDA_CHECK(cudaEventCreateWithFlags(&e.last_use, cudaEventDisableTiming));
    try {
      e.ptr = allocate(bytes, stream, e.bytes);
    } catch (...) {
      (void)cudaEventDestroy(e.last_use);
      throw;
    }
    if (entries_.size() >= max_streams) {
      release(entries_.front());
      entries_.erase(entries_.begin());
    }
    entries_.push_back(e);
    return {e.ptr, e.last_use};
  }

  static stream_scratch_cache& for_this_thread() {
    thread_local stream_scratch_cache cache;
    return cache;
  }

 private:
  struct entry {
    int device;
    unsigned long long stream_id;
    void* ptr;
    std::size_t bytes;
    cudaEvent_t last_use;
  };
  static constexpr std::size_t max_streams = 16;

  // Room to grow by half again, so that slowly growing shapes do not reallocate every call.
  static void* allocate(std::size_t bytes, cudaStream_t stream, std::size_t& size) {
    size = std::max<std::size_t>(bytes + bytes / 2, 4096);
    void* ptr = nullptr;
    LINREC_CUDA_CHECK(cudaMallocFromPoolAsync(&ptr, size, scratch_pool(), stream));
    return ptr;
  }
  // Best effort, never throws: a failure leaves the buffer to the pool's teardown.
  static void release(const entry& e) {
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    if (cudaThreadExchangeStreamCaptureMode(&mode) != cudaSuccess) return;
    int current = 0;
    if (cudaGetDevice(&current) == cudaSuccess && cudaSetDevice(e.device) == cudaSuccess) {
      if (cudaEventSynchronize(e.last_use) == cudaSuccess) (void)cudaFree(e.ptr);
      (void)cudaEventDestroy(e.last_use);
      (void)cudaSetDevice(current);
    }
    (void)cudaThreadExchangeStreamCaptureMode(&mode);
  }

  std::vector<entry> entries_;
};

}  // namespace linrec::detail
