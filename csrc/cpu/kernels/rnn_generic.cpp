// Portable recurrent gate kernels: scalar "vectors" (the fallback).
#include "rnn.h"
#include "vec/isa_generic.h"
#include "rnn_isa.h"
