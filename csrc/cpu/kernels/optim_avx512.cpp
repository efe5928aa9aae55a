// AVX-512 optimizer kernels: 16 float32 / 8 float64 lanes.
#if defined(__x86_64__)
#include "optim.h"
#include "vec/isa_avx512.h"
#include "optim_isa.h"
#endif
