// Recurrent layers, torch-free: the pointwise gate kernels of one time step (rnn_isa.h holds the
// math, instantiated per instruction set by rnn_<isa>.cpp; rnn.cpp dispatches on active_isa()).
// The GEMMs around them (input projections, recurrent products, weight gradients) are the
// foundation's (gemm/gemm.h); the bindings in cpu/rnn.cpp sequence them.
// Modes, gate formulas, workspace layout and step arguments: contracts/rnn.h.
#pragma once
#include <cstdint>

#include "cpu_features.h"
#include "../../contracts/rnn.h"

namespace fusedops::cpu {

// Recurrent step kernels, one table per instruction set (vec/dispatch.h).
template <typename T>
struct RnnKernels {
  void (*rnn_step_forward)(const RnnStepForward<T>& a);
  void (*rnn_step_backward)(const RnnStepBackward<T>& a);
  // lstm: m = o * tanh(c) from workspace rows (the input of a projection, for its gradient).
  void (*lstm_cell_output)(int64_t rows, int64_t H, const T* ws, int64_t ldw, T* m, int64_t ldm);
};

// The kernels of an instruction set (default: the one in force), filled once.
template <typename T>
const RnnKernels<T>& rnn_kernels(Isa isa = active_isa());

}  // namespace fusedops::cpu
