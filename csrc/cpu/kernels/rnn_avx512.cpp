// AVX-512 recurrent gate kernels: 16 floats a register (fp64 through <cmath>).
#if defined(__x86_64__)
#include "rnn.h"
#include "vec/isa_avx512.h"
#include "rnn_isa.h"
#endif
