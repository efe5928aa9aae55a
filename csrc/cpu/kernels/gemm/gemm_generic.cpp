// Portable GEMM: scalar "vectors", a 4 x 4 tile. The fallback on any CPU, and the build on
// non-x86 machines.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include <omp.h>

#include "gemm.h"

#define FUSEDOPS_ISA_NS generic
#define FUSEDOPS_ISA_NAME "generic 4x4"
#define FUSEDOPS_VEC_F32 VecScalar<float>
#define FUSEDOPS_VEC_F64 VecScalar<double>
#define FUSEDOPS_MR_F32 4
#define FUSEDOPS_NV_F32 4
#define FUSEDOPS_MR_F64 4
#define FUSEDOPS_NV_F64 4
#include "gemm_isa.h"
