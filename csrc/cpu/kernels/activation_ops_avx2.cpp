// AVX2 + FMA activation and softmax kernels: 8 floats a register (fp64 through <cmath>).
#if defined(__x86_64__)
#include "activation_ops.h"
#include "vec/isa_avx2.h"
#include "activation_ops_isa.h"
#endif
