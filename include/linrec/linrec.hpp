#pragma once
// Umbrella header: everything that compiles with a plain C++ compiler.
#include "linrec/autodiff/autodiff.hpp"
#include "linrec/core/error.hpp"
#include "linrec/core/exec.hpp"
#include "linrec/core/rng.hpp"
#include "linrec/optim/optim.hpp"
#include "linrec/scan/scan.hpp"
#include "linrec/tensor/eigen.hpp"
#include "linrec/tensor/tensor.hpp"
