// AVX-512 batch norm: 16 floats / 8 doubles a register.
#if defined(__x86_64__)
#include "batch_norm.h"
#include "vec/isa_avx512.h"
#include "batch_norm_isa.h"
#endif
