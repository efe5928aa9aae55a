// Loss kernels for the avx2 instruction set (templates in loss_isa.h).
#if defined(__x86_64__)
#include "loss.h"
#include "vec/isa_avx2.h"
#include "loss_isa.h"
#endif
