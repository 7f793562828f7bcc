#pragma once
// Eigen, included once for the whole library. With -march=native on an AVX-512 machine, g++ 12
// reports "(may be) used uninitialized" inside its own avx512fintrin.h when Eigen's packet code
// (ptranspose in GEMM packing, pmin in pexp) is inlined into our code: a known false positive of
// GCC's intrinsics (GCC bug 105593, fixed in GCC 13). The warning is emitted after inlining, so
// -isystem does not silence it; the diagnostic state of the region where the intrinsics headers
// are first read does. Only these two warnings, only for the text of these headers: our own
// code keeps them.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <Eigen/Core>
#include <Eigen/QR>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
