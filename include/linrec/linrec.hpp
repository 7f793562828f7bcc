#pragma once
// Umbrella header: everything that compiles with a plain C++ compiler.
#include "linrec/core/error.hpp"
#include "linrec/core/exec.hpp"
#include "linrec/scan/scan.hpp"
