// A recurrent layer over its time steps, torch-free: the sequence of GEMMs and step kernels
// that cpu/rnn.cpp (checks, allocation) calls, reachable from the standalone C++ tests.
//   forward:  Gi = X W_ih^T + bias for every row in one GEMM, straight into the workspace;
//             per step one recurrent GEMM (into a small buffer that stays in cache; gru keeps it
//             apart for r * (.)) and one fused gate kernel; with a projection h = m W_hr^T.
//   backward: per step (last first) the gate kernel turns d h (and d c) into the gate
//             gradients, and one GEMM carries them back to the previous state; then the input
//             gradient and the weight gradients are single GEMMs over all steps.
// The state buffers hy / cy (dh0 / dc0) hold the running state: step t updates their rows
// [0, batch_sizes[t]), which gives each packed sequence's own final state. Sizes, modes and
// the workspace layout: contracts/rnn.h.
#pragma once
#include "../../contracts/rnn.h"

namespace fusedops::cpu {

template <typename T>
void rnn_layer_forward(const RnnDims& d, bool reverse, const RnnLayerForward<T>& p);

template <typename T>
void rnn_layer_backward(const RnnDims& d, bool reverse, const RnnLayerBackwardIn<T>& in,
                        const RnnLayerBackwardOut<T>& o);

}  // namespace fusedops::cpu
