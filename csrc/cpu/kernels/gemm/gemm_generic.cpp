// Portable GEMM: scalar "vectors", a 4 x 4 tile. The fallback on any CPU, and the build on
// non-x86 machines.
#include "gemm.h"
#include "../vec/isa_generic.h"

#define FUSEDOPS_ISA_NAME "generic 4x4"
#define FUSEDOPS_MR_F32 4
#define FUSEDOPS_NV_F32 4
#define FUSEDOPS_MR_F64 4
#define FUSEDOPS_NV_F64 4
#include "gemm_isa.h"
