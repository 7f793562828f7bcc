#pragma once
// Shapes, strides and argument bundles of the scan. The scan works on raw pointers so any
// caller (tensors, Eigen arrays, PyTorch storage, CUDA buffers) can use it without copies.
#include <cstddef>
#include <cstdint>

#include "linrec/core/error.hpp"
#include "linrec/core/index.hpp"

namespace linrec {

struct scan_shape {
  index_t batch = 0;
  index_t time = 0;
  index_t channels = 0;
  index_t elements() const { return batch * time * channels; }
};

// Element (b, t, c) lives at ptr[b*batch + t*time + c*channel] (strides in elements).
struct strides3 {
  index_t batch = 0;
  index_t time = 0;
  index_t channel = 0;

  index_t offset(index_t b, index_t t, index_t c) const { return b * batch + t * time + c * channel; }
  // [batch, time, channels], channels contiguous: the layout layers produce.
  static strides3 btc(const scan_shape& s) { return {s.time * s.channels, s.channels, 1}; }
  // [batch, channels, time], time contiguous.
  static strides3 bct(const scan_shape& s) { return {s.channels * s.time, 1, s.time}; }
  // One value per (batch, channel), shared by every time step (a constant decay).
  static strides3 time_invariant(const scan_shape& s) { return {s.channels, 0, 1}; }
  // One value per channel, shared by every batch row and time step.
  static strides3 per_channel() { return {0, 0, 1}; }
};

// Arguments of h[t] = a[t] ⊙ h[t-1] + b[t]. h0 and h_final are [batch, channels] contiguous;
// h0 == nullptr means a zero initial state, h_final == nullptr means "not needed".
template <class Op>
struct scan_forward_args {
  using decay_type = typename Op::decay_type;
  using value_type = typename Op::value_type;

  scan_shape shape;
  const decay_type* a = nullptr;
  strides3 a_strides;
  const value_type* b = nullptr;
  strides3 b_strides;
  value_type* h = nullptr;
  strides3 h_strides;
  const value_type* h0 = nullptr;
  value_type* h_final = nullptr;
};

// Backward of the scan above. Inputs: a, h (the forward output), h0, dh = ∂L/∂h, and
// dh_final = ∂L/∂h_final (nullptr = zero). Outputs: da, db and dh0 (nullptr = not needed).
// da has its own strides: where a broadcasts (a zero stride), da still holds one value per
// (b, t, c) and the caller sums over the broadcast dimensions.
template <class Op>
struct scan_backward_args {
  using decay_type = typename Op::decay_type;
  using value_type = typename Op::value_type;
  using grad_type = typename Op::grad_type;
  using decay_grad_type = typename Op::decay_grad_type;

  scan_shape shape;
  const decay_type* a = nullptr;
  strides3 a_strides;
  const value_type* h = nullptr;
  strides3 h_strides;
  const value_type* h0 = nullptr;
  const grad_type* dh = nullptr;
  strides3 dh_strides;
  const grad_type* dh_final = nullptr;
  decay_grad_type* da = nullptr;
  strides3 da_strides;
  grad_type* db = nullptr;
  strides3 db_strides;
  grad_type* dh0 = nullptr;
};

namespace detail {

inline void check_shape(const scan_shape& s, const char* where) {
  LINREC_CHECK(s.batch > 0 && s.time > 0 && s.channels > 0,
               where << ": shape must have batch, time, channels > 0, got (" << s.batch << ", " << s.time << ", "
                     << s.channels << ")");
}

// Inputs may broadcast (a zero stride reads one value many times); strides must only be
// non-negative. Outputs must give distinct (b, t, c) distinct addresses: strides non-zero
// where the extent is > 1 and not overlapping one another.
inline void check_strides(const scan_shape& s, const strides3& st, const char* where, const char* name, bool written) {
  LINREC_CHECK(st.batch >= 0 && st.time >= 0 && st.channel >= 0,
               where << ": " << name << " strides must be non-negative, got (" << st.batch << ", " << st.time << ", "
                     << st.channel << ")");
  if (!written) return;
  LINREC_CHECK((s.time == 1 || st.time > 0),
               where << ": " << name << " (output) time stride is 0 but time = " << s.time);
  LINREC_CHECK((s.channels == 1 || st.channel > 0),
               where << ": " << name << " (output) channel stride is 0 but channels = " << s.channels);
  LINREC_CHECK((s.batch == 1 || st.batch > 0),
               where << ": " << name << " (output) batch stride is 0 but batch = " << s.batch);
  // Non-overlap: sort the (extent, stride) pairs by stride; each stride must step over the
  // whole span of the smaller ones.
  struct dim {
    index_t extent, stride;
  } dims[3] = {{s.batch, st.batch}, {s.time, st.time}, {s.channels, st.channel}};
  for (int i = 0; i < 3; ++i)
    for (int j = i + 1; j < 3; ++j)
      if (dims[j].stride < dims[i].stride) {
        const dim tmp = dims[i];
        dims[i] = dims[j];
        dims[j] = tmp;
      }
  index_t span = 1;
  for (const dim& d : dims) {
    if (d.extent == 1) continue;
    LINREC_CHECK(d.stride >= span, where << ": " << name << " strides (" << st.batch << ", " << st.time << ", "
                                         << st.channel << ") make elements of shape (" << s.batch << ", " << s.time
                                         << ", " << s.channels << ") overlap");
    span = d.stride * d.extent;
  }
}

template <class Op>
void validate(const scan_forward_args<Op>& p) {
  constexpr const char* where = "scan_forward";
  check_shape(p.shape, where);
  LINREC_CHECK(p.a != nullptr, where << ": a (decay) is a null pointer");
  LINREC_CHECK(p.b != nullptr, where << ": b (input) is a null pointer");
  LINREC_CHECK(p.h != nullptr, where << ": h (output) is a null pointer");
  check_strides(p.shape, p.a_strides, where, "a", /*written=*/false);
  check_strides(p.shape, p.b_strides, where, "b", false);
  check_strides(p.shape, p.h_strides, where, "h", true);
}

template <class Op>
void validate(const scan_backward_args<Op>& p) {
  constexpr const char* where = "scan_backward";
  check_shape(p.shape, where);
  LINREC_CHECK(p.a != nullptr, where << ": a (decay) is a null pointer");
  LINREC_CHECK(p.h != nullptr, where << ": h (forward output) is a null pointer");
  LINREC_CHECK(p.dh != nullptr, where << ": dh (gradient of h) is a null pointer");
  LINREC_CHECK(p.da != nullptr, where << ": da (output) is a null pointer");
  LINREC_CHECK(p.db != nullptr, where << ": db (output) is a null pointer");
  check_strides(p.shape, p.a_strides, where, "a", /*written=*/false);
  check_strides(p.shape, p.h_strides, where, "h", false);
  check_strides(p.shape, p.dh_strides, where, "dh", false);
  check_strides(p.shape, p.da_strides, where, "da", true);
  check_strides(p.shape, p.db_strides, where, "db", true);
}

}  // namespace detail
}  // namespace linrec
