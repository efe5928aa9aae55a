// AVX2 + FMA direct convolution: 8 floats / 4 doubles a register.
#if defined(__x86_64__)
#include "conv_direct.h"
#include "vec/isa_avx2.h"
#include "conv_direct_isa.h"
#endif
