// AVX-512 direct convolution: 16 floats / 8 doubles a register.
#if defined(__x86_64__)
#include "conv_direct.h"
#include "vec/isa_avx512.h"
#include "conv_direct_isa.h"
#endif
