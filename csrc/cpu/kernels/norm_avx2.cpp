// AVX2 + FMA LayerNorm: 8 floats / 4 doubles a register.
#if defined(__x86_64__)
#include "norm.h"
#include "vec/isa_avx2.h"
#include "norm_isa.h"
#endif
