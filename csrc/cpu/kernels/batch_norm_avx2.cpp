// AVX2 + FMA batch norm: 8 floats / 4 doubles a register.
#if defined(__x86_64__)
#include "batch_norm.h"
#include "vec/isa_avx2.h"
#include "batch_norm_isa.h"
#endif
