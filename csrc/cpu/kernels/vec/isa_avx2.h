// Selects AVX2 + FMA for the rest of this translation unit (see isa_generic.h): traits
// VecF32Avx2 / VecF64Avx2 in namespace fusedops::cpu::avx2. Only for x86-64 builds; the
// including file wraps itself in `#if defined(__x86_64__)`.
#pragma once
#include "isa_std.h"

#pragma GCC target("avx2,fma")
#define FUSEDOPS_WITH_AVX2 1
#define FUSEDOPS_ISA_NS avx2
#define FUSEDOPS_VEC_F32 VecF32Avx2
#define FUSEDOPS_VEC_F64 VecF64Avx2
#include "vec.h"
#include "math.h"
