// Selects AVX-512 with AVX512-BF16 and AMX (amx-tile, amx-bf16) for the rest of this translation
// unit (see isa_generic.h): traits VecF32Avx512 / VecF64Avx512 in namespace
// fusedops::cpu::avx512bf16, for the native bf16 kernels (gemm_avx512bf16.cpp,
// attention_avx512bf16.cpp). Only for x86-64; callers check the CPU before running them.
#pragma once
#include "isa_std.h"

// GCC 12's AVX-512 intrinsics use self-initialised "undefined" registers that trip these.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,avx2,fma,amx-tile,amx-bf16")
#define FUSEDOPS_WITH_AVX512 1
#define FUSEDOPS_ISA_NS avx512bf16
#define FUSEDOPS_VEC_F32 VecF32Avx512
#define FUSEDOPS_VEC_F64 VecF64Avx512
#include "vec.h"
#include "math.h"
