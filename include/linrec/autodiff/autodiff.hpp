#pragma once
// Everything of the autodiff layer: Var/Parameter, Tape, and every op.
#include "linrec/autodiff/ops/complex.hpp"
#include "linrec/autodiff/ops/elementwise.hpp"
#include "linrec/autodiff/ops/linalg.hpp"
#include "linrec/autodiff/ops/nn.hpp"
#include "linrec/autodiff/ops/norm.hpp"
#include "linrec/autodiff/ops/reduce.hpp"
#include "linrec/autodiff/ops/scan.hpp"
#include "linrec/autodiff/ops/shape_ops.hpp"
#include "linrec/autodiff/tape.hpp"
#include "linrec/autodiff/var.hpp"
