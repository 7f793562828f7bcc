#pragma once
// Everything of the optimizer layer.
#include "linrec/optim/accumulation.hpp"
#include "linrec/optim/adamw.hpp"
#include "linrec/optim/clip.hpp"
#include "linrec/optim/optimizer.hpp"
#include "linrec/optim/schedule.hpp"
#include "linrec/optim/sgd.hpp"
