// AVX-512 rotary embedding: 16 floats / 8 doubles a register.
#if defined(__x86_64__)
#include "rotary.h"
#include "vec/isa_avx512.h"
#include "rotary_isa.h"
#endif
