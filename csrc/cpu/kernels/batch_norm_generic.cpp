// Portable batch norm: scalar "vectors" (the fallback, and the build on non-x86 machines).
#include "batch_norm.h"
#include "vec/isa_generic.h"
#include "batch_norm_isa.h"
