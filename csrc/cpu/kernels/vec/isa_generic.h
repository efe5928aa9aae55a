// Selects the portable path for the rest of this translation unit: scalar "vectors"
// (VecScalar) in namespace fusedops::cpu::generic. A kernel family instantiates its templates
// once per instruction set from three small files:
//   <family>_generic.cpp / <family>_avx2.cpp / <family>_avx512.cpp:
//     #include "<family>.h"            (the torch-free API)
//     #include "vec/isa_<isa>.h"        (this file or its siblings: pragma, namespace, traits)
//     #include "<family>_isa.h"         (templates over V, explicit instantiations)
// and <family>.cpp dispatches on fusedops::active_isa() (cpu/kernels/cpu_features.h).
#pragma once
#include "isa_std.h"

#define FUSEDOPS_ISA_NS generic
#define FUSEDOPS_VEC_F32 VecScalar<float>
#define FUSEDOPS_VEC_F64 VecScalar<double>
#include "vec.h"
#include "math.h"
