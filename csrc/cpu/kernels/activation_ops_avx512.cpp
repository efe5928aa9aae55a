// AVX-512 activation and softmax kernels: 16 floats a register (fp64 through <cmath>).
#if defined(__x86_64__)
#include "activation_ops.h"
#include "vec/isa_avx512.h"
#include "activation_ops_isa.h"
#endif
