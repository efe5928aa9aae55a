// AVX-512 LayerNorm: 16 floats / 8 doubles a register.
#if defined(__x86_64__)
#include "norm.h"
#include "vec/isa_avx512.h"
#include "norm_isa.h"
#endif
