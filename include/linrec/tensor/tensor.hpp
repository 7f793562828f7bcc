#pragma once
// Tensor: a row-major array of up to 4 dimensions on one device, over shared storage.
//
//   auto x = linrec::Tensor::zeros({2, 3});
//   linrec::rng gen(7);
//   auto w = linrec::Tensor::randn({3, 4}, gen, /*mean*/ 0.0, /*stddev*/ 0.02);
//   auto v = w.reshape({12});          // a view: same storage
//   auto c = w.clone();                // a deep copy
//   float first = w.at({0, 0});
//
// Copying a Tensor copies a handle (the storage is shared); `clone()` copies the data. Views
// (reshape, slice along the first axis) are always contiguous, so every tensor maps onto a
// plain Eigen array (linrec/tensor/eigen.hpp). The library's tensors are float32
// (`Tensor`); `TensorD` (double) exists for gradient checks and references.
//
// Complex values (LRU, S4D) and log-space values (RWKV-4's s·e^m) are stored with a trailing
// dimension of 2: [..., 2] = (real, imaginary) or (scale, exponent). This is the memory layout
// of std::complex<T> and linrec::log_value<T>, so the scan reads such tensors without a copy.
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <vector>

#include "linrec/core/error.hpp"
#include "linrec/core/rng.hpp"
#include "linrec/tensor/device.hpp"
#include "linrec/tensor/device_kernels.hpp"
#include "linrec/tensor/host_cache.hpp"
#include "linrec/tensor/shape.hpp"

namespace linrec {

namespace detail {

// One allocation on one device; freed when the last Tensor sharing it goes away.
template <class T>
class storage {
 public:
  storage(index_t size, device dev) : size_(size), device_(dev) {
    // The byte count must fit too (and leave room to round up to 64): checked, not wrapped.
    LINREC_CHECK(size <= index_t((std::numeric_limits<std::size_t>::max() / 2 - 64) / sizeof(T)),
                 "Tensor: " << size << " elements of " << sizeof(T) << " bytes exceed the addressable memory");
    const std::size_t bytes = static_cast<std::size_t>(size > 0 ? size : 1) * sizeof(T);
    if (dev.is_cpu()) {
      data_ = static_cast<T*>(host_cache::instance().allocate(host_cache::rounded(bytes)));
      LINREC_CHECK(data_ != nullptr, "Tensor: out of host memory allocating " << bytes << " bytes");
    } else {
      const auto& alloc = cuda_allocator_slot();
      LINREC_CHECK(alloc.allocate != nullptr, "Tensor: a CUDA tensor ("
                                                  << dev << ") was requested, but this program was built without CUDA "
                                                  << "support (no CUDA backend is compiled in)");
      data_ = static_cast<T*>(alloc.allocate(bytes, dev.index));
      LINREC_CHECK(data_ != nullptr, "Tensor: CUDA allocation of " << bytes << " bytes failed on " << dev);
    }
  }
  ~storage() {
    if (device_.is_cpu())
      host_cache::instance().deallocate(
          data_, host_cache::rounded(static_cast<std::size_t>(size_ > 0 ? size_ : 1) * sizeof(T)));
    else
      cuda_allocator_slot().deallocate(data_, device_.index);
  }
  storage(const storage&) = delete;
  storage& operator=(const storage&) = delete;

  T* data() const { return data_; }
  index_t size() const { return size_; }
  device where() const { return device_; }

 private:
  T* data_ = nullptr;
  index_t size_ = 0;
  device device_;
};

}  // namespace detail

template <class T>
class basic_tensor {
 public:
  using value_type = T;

  // An undefined tensor (no storage); `defined()` is false.
  basic_tensor() = default;

  // ---- creation ------------------------------------------------------------------------
  // Uninitialised contents (for outputs that are written in full).
  static basic_tensor empty(const Shape& shape, device dev = cpu_device) {
    basic_tensor t;
    t.shape_ = shape;
    t.storage_ = std::make_shared<detail::storage<T>>(shape.numel(), dev);
    return t;
  }
  static basic_tensor zeros(const Shape& shape, device dev = cpu_device) { return full(shape, T(0), dev); }
  static basic_tensor ones(const Shape& shape, device dev = cpu_device) { return full(shape, T(1), dev); }
  static basic_tensor full(const Shape& shape, T value, device dev = cpu_device) {
    basic_tensor t = empty(shape, dev);
    t.fill_(value);
    return t;
  }
  static basic_tensor from_data(const Shape& shape, std::span<const T> values, device dev = cpu_device) {
    LINREC_CHECK(static_cast<index_t>(values.size()) == shape.numel(), "Tensor::from_data: shape "
                                                                           << shape << " needs " << shape.numel()
                                                                           << " values, got " << values.size());
    basic_tensor host = empty(shape);
    if (!values.empty()) std::memcpy(host.data(), values.data(), values.size() * sizeof(T));
    return dev.is_cpu() ? host : host.to(dev);
  }
  static basic_tensor from_data(const Shape& shape, std::initializer_list<T> values, device dev = cpu_device) {
    return from_data(shape, std::span<const T>(values.begin(), values.size()), dev);
  }
  // Normal(mean, stddev) and uniform [lo, hi) draws from a seeded generator, in row-major
  // order; the generator advances, so its saved state reproduces the next draws.
  static basic_tensor randn(const Shape& shape, rng& gen, double mean = 0.0, double stddev = 1.0) {
    basic_tensor t = empty(shape);
    T* p = t.data();
    const index_t n = t.numel();
    for (index_t i = 0; i < n; ++i) p[i] = static_cast<T>(gen.normal(mean, stddev));
    return t;
  }
  static basic_tensor rand(const Shape& shape, rng& gen, double lo = 0.0, double hi = 1.0) {
    basic_tensor t = empty(shape);
    T* p = t.data();
    const index_t n = t.numel();
    for (index_t i = 0; i < n; ++i) p[i] = static_cast<T>(gen.uniform(lo, hi));
    return t;
  }

  // ---- properties ------------------------------------------------------------------------
  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  index_t size(int axis) const { return shape_[axis]; }
  index_t numel() const { return shape_.numel(); }
  device where() const { return storage_ ? storage_->where() : cpu_device; }
  // Two tensors share storage (a view and its base, or two copies of one handle).
  bool shares_storage_with(const basic_tensor& other) const { return storage_ == other.storage_; }

  // Host pointer to the first element. Throws for a CUDA tensor: use `.to(cpu_device)`.
  T* data() const {
    LINREC_CHECK(defined(), "Tensor: data() of an undefined tensor");
    LINREC_CHECK(where().is_cpu(),
                 "Tensor: host access to a tensor on " << where() << "; copy it with .to(cpu_device)");
    return storage_->data() + offset_;
  }
  // Pointer without the host check (for device kernels).
  T* raw_data() const { return storage_->data() + offset_; }

  // ---- element access (tests, small setup code) --------------------------------------------
  T& at(std::initializer_list<index_t> index) const { return data()[flat_index(index)]; }
  // The value of a one-element tensor; on a device this copies it to the host (and waits for
  // the work that computes it, as PyTorch's .item() does).
  T item() const {
    LINREC_CHECK(numel() == 1, "Tensor::item: tensor of shape " << shape_ << " has " << numel() << " elements");
    if (where().is_cpu()) return data()[0];
    return to(cpu_device).data()[0];
  }
  std::vector<T> to_vector() const {
    const T* p = data();
    return std::vector<T>(p, p + numel());
  }

  // ---- views and copies ----------------------------------------------------------------
  // Same storage, new shape; one extent may be -1 (inferred).
  basic_tensor reshape(std::initializer_list<index_t> dims) const {
    Shape s;
    int infer = -1;
    index_t known = 1;
    for (index_t d : dims) {
      if (d == -1) {
        LINREC_CHECK(infer < 0, "Tensor::reshape: more than one -1 in the new shape");
        infer = s.rank();
        s.push_back(0);
      } else {
        s.push_back(d);
        known *= d;
      }
    }
    if (infer >= 0) {
      LINREC_CHECK(known > 0 && numel() % known == 0,
                   "Tensor::reshape: cannot infer -1 reshaping " << shape_ << " (" << numel() << " elements)");
      s[infer] = numel() / known;
    }
    return reshape(s);
  }
  basic_tensor reshape(const Shape& s) const {
    LINREC_CHECK(s.numel() == numel(), "Tensor::reshape: " << shape_ << " (" << numel() << " elements) cannot become "
                                                           << s << " (" << s.numel() << " elements)");
    basic_tensor t = *this;
    t.shape_ = s;
    return t;
  }
  // Rows [start, start + count) along the first axis, sharing storage.
  basic_tensor slice(index_t start, index_t count) const {
    LINREC_CHECK(rank() >= 1, "Tensor::slice: a scalar has no first axis");
    LINREC_CHECK(start >= 0 && count >= 0 && start + count <= shape_[0],
                 "Tensor::slice: rows [" << start << ", " << start + count << ") out of range for shape " << shape_);
    basic_tensor t = *this;
    t.shape_[0] = count;
    t.offset_ += start * shape_.inner(0);
    return t;
  }
  basic_tensor clone() const {
    basic_tensor t = empty(shape_, where());
    t.copy_from(*this);
    return t;
  }
  // A copy on another device (the same handle when already there).
  basic_tensor to(device dev) const {
    if (dev == where()) return *this;
    basic_tensor t = empty(shape_, dev);
    t.copy_from(*this);
    return t;
  }
  // Elementwise copy of equal-shaped data (any devices).
  void copy_from(const basic_tensor& src) const {
    LINREC_CHECK(src.numel() == numel(), "Tensor::copy_from: " << src.shape() << " into " << shape_);
    const std::size_t bytes = static_cast<std::size_t>(numel()) * sizeof(T);
    if (bytes == 0) return;
    if (where().is_cpu() && src.where().is_cpu()) {
      std::memmove(raw_data(), src.raw_data(), bytes);
      return;
    }
    const auto& alloc = detail::cuda_allocator_slot();
    LINREC_CHECK(alloc.copy != nullptr,
                 "Tensor: copy involving a CUDA tensor, but this program was built without CUDA");
    const int kind = src.where().is_cpu() ? 0 : (where().is_cpu() ? 1 : 2);
    alloc.copy(raw_data(), src.raw_data(), bytes, kind);
  }
  const basic_tensor& fill_(T value) const {
    if (numel() == 0) return *this;
    if (where().is_cpu()) {
      T* p = data();
      const index_t n = numel();
      for (index_t i = 0; i < n; ++i) p[i] = value;
    } else {
      detail::kernel<detail::fill_kernel<T>>()(numel(), value, raw_data());
    }
    return *this;
  }
  // this += other, elementwise (equal element counts, one device).
  const basic_tensor& add_(const basic_tensor& other) const {
    LINREC_CHECK(other.numel() == numel(), "Tensor::add_: " << other.shape() << " into " << shape_);
    LINREC_CHECK(other.where() == where(), "Tensor::add_: a tensor on " << other.where() << " into one on " << where());
    if (numel() == 0) return *this;
    if (where().is_cpu()) {
      T* p = data();
      const T* q = other.data();
      const index_t n = numel();
      for (index_t i = 0; i < n; ++i) p[i] += q[i];
    } else {
      detail::kernel<detail::add_into_kernel<T>>()(numel(), other.raw_data(), raw_data());
    }
    return *this;
  }

 private:
  index_t flat_index(std::initializer_list<index_t> index) const {
    LINREC_CHECK(static_cast<int>(index.size()) == rank(),
                 "Tensor::at: " << index.size() << " indices for a tensor of shape " << shape_);
    index_t flat = 0;
    int axis = 0;
    for (index_t i : index) {
      LINREC_CHECK(i >= 0 && i < shape_[axis],
                   "Tensor::at: index " << i << " out of range on axis " << axis << " of shape " << shape_);
      flat = flat * shape_[axis] + i;
      ++axis;
    }
    return flat;
  }

  std::shared_ptr<detail::storage<T>> storage_;
  index_t offset_ = 0;
  Shape shape_;
};

using Tensor = basic_tensor<float>;
using TensorD = basic_tensor<double>;

}  // namespace linrec
