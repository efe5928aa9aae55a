// AVX2 + FMA rotary embedding: 8 floats / 4 doubles a register.
#if defined(__x86_64__)
#include "rotary.h"
#include "vec/isa_avx2.h"
#include "rotary_isa.h"
#endif
