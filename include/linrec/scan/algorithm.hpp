#pragma once
// How a scan is computed. `automatic` lets the backend's dispatcher choose by shape; the others
// force an algorithm (benchmarks and tests use them to compare).

namespace linrec {

enum class scan_algorithm { automatic, sequential, parallel };

}  // namespace linrec
