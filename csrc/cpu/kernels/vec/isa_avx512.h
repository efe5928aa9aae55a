// Selects AVX-512 (F, DQ, BW, VL) for the rest of this translation unit (see isa_generic.h):
// traits VecF32Avx512 / VecF64Avx512 in namespace fusedops::cpu::avx512. Only for x86-64.
#pragma once
#include "isa_std.h"

// GCC 12's AVX-512 intrinsics use self-initialised "undefined" registers that trip these.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
#define FUSEDOPS_WITH_AVX512 1
#define FUSEDOPS_ISA_NS avx512
#define FUSEDOPS_VEC_F32 VecF32Avx512
#define FUSEDOPS_VEC_F64 VecF64Avx512
#include "vec.h"
#include "math.h"
