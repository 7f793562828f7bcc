// Autodiff: tape semantics (parameters, accumulation, no-grad, release) and bad input.
#include <catch2/catch.hpp>

#include "linrec/autodiff/autodiff.hpp"

using namespace linrec;
