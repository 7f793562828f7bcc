#pragma once
// The signed index type of every extent, offset and element count in linrec. Signed so that
// differences and reverse loops need no casts; 64-bit so a tensor or scan may exceed 2^31
// elements.
#include <cstdint>

namespace linrec {

using index_t = std::int64_t;

}  // namespace linrec
