#pragma once
// Kernel slots: how a header-only library calls device kernels from code compiled by the host
// compiler. An op (a template in a .hpp, compiled by g++ in the user's own translation units)
// calls `kernel<Tag>()`; a translation unit compiled by nvcc that includes a backend header
// (e.g. linrec/autodiff/cuda.cuh) fills the slot at static initialisation with a launcher of
// signature `Tag::signature`. One slot per tag exists in the whole program (a function-local
// static of an inline function), so the launchers reach every translation unit.
//
//   struct my_kernel { using signature = void(index_t n, const float* x, float* y);
//                      static constexpr const char* name = "my_op"; };
//   linrec::detail::kernel_slot<my_kernel>() = &launch_my_kernel;     // in the nvcc TU
//   linrec::detail::kernel<my_kernel>()(n, x, y);                     // anywhere
#include "linrec/core/error.hpp"

namespace linrec::detail {

template <class Tag>
typename Tag::signature*& kernel_slot() {
  static typename Tag::signature* launcher = nullptr;
  return launcher;
}

// The installed launcher; a linrec::Error naming the op when no backend installed one.
template <class Tag>
typename Tag::signature& kernel() {
  auto* launcher = kernel_slot<Tag>();
  LINREC_CHECK(launcher != nullptr, "op '" << Tag::name
                                           << "' on a CUDA tensor: no CUDA kernel is linked in (compile one "
                                              "translation unit with nvcc that includes linrec/cuda.cuh)");
  return *launcher;
}

}  // namespace linrec::detail
