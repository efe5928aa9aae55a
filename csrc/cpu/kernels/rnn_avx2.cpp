// AVX2 + FMA recurrent gate kernels: 8 floats a register (fp64 through <cmath>).
#if defined(__x86_64__)
#include "rnn.h"
#include "vec/isa_avx2.h"
#include "rnn_isa.h"
#endif
