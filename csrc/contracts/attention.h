// Attention's mask kinds, shared by the CPU kernels (cpu/kernels/attention.h) and the CUDA
// kernels (cuda/kernels/attention.cuh). The dropout hash is in attention_rng.h.
#pragma once

namespace fusedops {

// none; boolean: a nonzero element takes part; additive: added to the scaled scores.
enum class AttnMask : int { none = 0, boolean = 1, additive = 2 };

}  // namespace fusedops
