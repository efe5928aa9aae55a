// Portable optimizer kernels: scalar "vectors". The fallback on any CPU.
#include "optim.h"
#include "vec/isa_generic.h"
#include "optim_isa.h"
