// Portable LayerNorm: scalar "vectors" (the fallback, and the build on non-x86 machines).
#include "norm.h"
#include "vec/isa_generic.h"
#include "norm_isa.h"
