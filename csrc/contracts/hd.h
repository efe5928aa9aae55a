// FUSEDOPS_HD marks a function of csrc/contracts/ that runs on the host and on the device:
// `__host__ __device__` under nvcc and in the CUDA simulator (where sim/cuda_sim.h defines both
// as nothing), nothing for the host compiler alone. Headers in this folder include no torch, no
// CUDA toolkit and no x86 intrinsics, so CPU code, nvcc and the simulator all compile them.
#pragma once

#if defined(__CUDACC__) || defined(CUDASIM)
#define FUSEDOPS_HD __host__ __device__
#else
#define FUSEDOPS_HD
#endif
