// Portable rotary embedding: scalar "vectors" (the fallback, and the build on non-x86 machines).
#include "rotary.h"
#include "vec/isa_generic.h"
#include "rotary_isa.h"
