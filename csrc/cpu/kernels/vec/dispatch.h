// Run-time instruction-set dispatch shared by the kernel families. Each family compiles its
// templates once per instruction set into namespaces generic / avx2 / avx512 (see
// isa_generic.h) and, in its dispatcher .cpp:
//   #define FUSEDOPS_DECLARE_ISA(ns) namespace ns { template <typename T> void f_run(...); }
//   FUSEDOPS_FOR_EACH_ISA(FUSEDOPS_DECLARE_ISA)
//   template <typename T> void f(...) { FUSEDOPS_DISPATCH(f_run, args...); }
// FUSEDOPS_DISPATCH returns the call of the entry point for the instruction set in force
// (active_isa()); the function's element type must be named T.
#pragma once

#include "../../../common/cpu_features.h"

#if defined(__x86_64__)
#define FUSEDOPS_FOR_EACH_ISA(DECL) DECL(generic) DECL(avx2) DECL(avx512)
#define FUSEDOPS_DISPATCH(fn, ...)                                          \
  do {                                                                      \
    const ::fusedops::Isa isa_ = ::fusedops::active_isa();                  \
    if (isa_ == ::fusedops::Isa::avx512) return avx512::fn<T>(__VA_ARGS__); \
    if (isa_ == ::fusedops::Isa::avx2) return avx2::fn<T>(__VA_ARGS__);     \
    return generic::fn<T>(__VA_ARGS__);                                     \
  } while (0)
#else
#define FUSEDOPS_FOR_EACH_ISA(DECL) DECL(generic)
#define FUSEDOPS_DISPATCH(fn, ...) return generic::fn<T>(__VA_ARGS__)
#endif
