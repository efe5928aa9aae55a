// Portable direct convolution: scalar "vectors" (the fallback).
#include "conv_direct.h"
#include "vec/isa_generic.h"
#include "conv_direct_isa.h"
