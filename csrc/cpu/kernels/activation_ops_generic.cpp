// Portable activation and softmax kernels: element by element through <cmath> (the fallback).
#include "activation_ops.h"
#include "vec/isa_generic.h"
#include "activation_ops_isa.h"
