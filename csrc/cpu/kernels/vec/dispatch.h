// Run-time instruction-set dispatch: one table of kernel function pointers per family, element
// type and instruction set (the BLIS / XNNPACK pattern).
//
// A family declares its kernels once, as the fields of a table in its header:
//   template <typename T> struct NormKernels { void (*forward)(...); void (*backward)(...); };
//   template <typename T> const NormKernels<T>& norm_kernels(Isa isa = active_isa());
// its per-instruction-set file (<family>_isa.h, compiled once per set into the namespaces
// generic / avx2 / avx512, see isa_generic.h) fills the table with that set's kernels:
//   template <typename T> NormKernels<T> norm_table() { return {&forward_run<T>, ...}; }
//   template NormKernels<float> norm_table<float>();   (one line per element type)
// and its dispatcher .cpp defines the accessor, which builds the tables of every instruction set
// once (at first use) and hands out the one asked for:
//   FUSEDOPS_KERNEL_TABLE(NormKernels, norm_table, norm_kernels)
//   template const NormKernels<float>& norm_kernels<float>(Isa);
// Callers run norm_kernels<T>().forward(...). Adding an element type adds its lines to the
// family's table fill and accessor; adding an instruction set adds it here.
#pragma once

#include <iterator>

#include "../cpu_features.h"

#if defined(__x86_64__)
#define FUSEDOPS_FOR_EACH_ISA(X, ...) X(generic, __VA_ARGS__) X(avx2, __VA_ARGS__) X(avx512, __VA_ARGS__)
#define FUSEDOPS_ISA_TABLES(fill, T) {generic::fill<T>(), avx2::fill<T>(), avx512::fill<T>()}
#else
#define FUSEDOPS_FOR_EACH_ISA(X, ...) X(generic, __VA_ARGS__)
#define FUSEDOPS_ISA_TABLES(fill, T) {generic::fill<T>()}
#endif

#define FUSEDOPS_DECLARE_TABLE_FILL(ns, Table, fill) \
  namespace ns {                                     \
  template <typename T>                              \
  Table<T> fill();                                   \
  }

// Declares each instruction set's fill<T>() and defines accessor<T>(Isa) (Isa values index
// the tables: generic 0, avx2 1, avx512 2).
#define FUSEDOPS_KERNEL_TABLE(Table, fill, accessor)                               \
  FUSEDOPS_FOR_EACH_ISA(FUSEDOPS_DECLARE_TABLE_FILL, Table, fill)                  \
  template <typename T>                                                            \
  const Table<T>& accessor(Isa isa) {                                              \
    static const Table<T> tables[] = FUSEDOPS_ISA_TABLES(fill, T);                 \
    const size_t i = static_cast<size_t>(isa);                                     \
    return tables[i < std::size(tables) ? i : 0];                                  \
  }
