#pragma once
#include <torch/library.h>

namespace fusedops {
// Declares every fusedops operator schema on `m` (ops.cpp): used for the fusedops namespace
// and, with the same schemas, for fusedops_sim.
void define_schemas(torch::Library& m);
}  // namespace fusedops
