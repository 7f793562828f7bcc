#pragma once
// Where a tensor's storage lives. CPU storage is always available; CUDA storage exists only
// when a translation unit compiled by nvcc includes linrec/tensor/cuda.cuh, which registers
// the CUDA allocator. Asking for a CUDA tensor otherwise is a linrec::Error, never a crash.
#include <cstddef>
#include <cstdint>
#include <ostream>

namespace linrec {

enum class device_type : std::uint8_t { cpu, cuda };

struct device {
  device_type type = device_type::cpu;
  int index = 0;
  bool is_cpu() const { return type == device_type::cpu; }
  bool is_cuda() const { return type == device_type::cuda; }
  friend bool operator==(const device&, const device&) = default;
  friend std::ostream& operator<<(std::ostream& out, const device& d) {
    if (d.is_cpu()) return out << "cpu";
    return out << "cuda:" << d.index;
  }
};

inline constexpr device cpu_device{device_type::cpu, 0};
inline constexpr device cuda_device(int index = 0) { return {device_type::cuda, index}; }

// The hooks a CUDA backend installs: allocate/free raw bytes, copy between host and device.
struct device_allocator {
  void* (*allocate)(std::size_t bytes, int device_index) = nullptr;
  void (*deallocate)(void* ptr, int device_index) = nullptr;
  // kind: 0 host→device, 1 device→host, 2 device→device
  void (*copy)(void* dst, const void* src, std::size_t bytes, int kind) = nullptr;
  int (*device_count)() = nullptr;                   // usable CUDA devices (0 when none or no driver)
  void (*make_current)(int device_index) = nullptr;  // where the kernels of this thread run
};

namespace detail {
inline device_allocator& cuda_allocator_slot() {
  static device_allocator slot;
  return slot;
}
}  // namespace detail

// Called once by the CUDA backend (from a TU compiled by nvcc).
inline void register_cuda_allocator(const device_allocator& alloc) { detail::cuda_allocator_slot() = alloc; }
inline bool cuda_available() { return detail::cuda_allocator_slot().allocate != nullptr; }
// Usable CUDA devices: 0 without the backend, a driver or a GPU.
inline int cuda_device_count() {
  const auto& slot = detail::cuda_allocator_slot();
  return slot.device_count ? slot.device_count() : 0;
}
// The device this thread's kernels run on (ops and optimizers launch on the current device, as
// CUDA does): call it once before building tensors on cuda_device(index).
inline void make_cuda_device_current(int index) {
  const auto& slot = detail::cuda_allocator_slot();
  if (slot.make_current) slot.make_current(index);
}

}  // namespace linrec
