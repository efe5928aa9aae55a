// AVX2 + FMA optimizer kernels: 8 float32 / 4 float64 lanes.
#if defined(__x86_64__)
#include "optim.h"
#include "vec/isa_avx2.h"
#include "optim_isa.h"
#endif
