// Running the CUDA GEMM from a binding: its launch plan, the launch (errors named after the
// op), a batch of products summed into one C, and whether TF32 is allowed. The level below the
// bindings that need products (linear_impl.h, loss_impl.h, rnn_impl.h), shared by the CUDA
// build and the simulator build. Include after the kernel headers.
#pragma once
#include <ATen/ATen.h>

#include "cuda/binding_common.h"
#include "cuda/kernels/gemm.cuh"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

namespace k = fusedops::FUSEDOPS_CUDA_NS;

inline bool tf32_allowed() { return at::globalContext().allowTF32CuBLAS(); }

template <typename T>
void run_gemm(const char* op, const k::GemmParams<T>& p, cudaStream_t s) {
  if (p.M <= 0 || p.N <= 0 || p.batch <= 0) return;
  const k::LaunchPlan plan = k::gemm_plan<T>(p);
  launch(op, [&] { k::gemm_launch<T>(p, plan, s); });
}

// A batch of products summed into one C (a broadcast operand's gradient): in order, beta 1
// after the first.
template <typename T>
void run_gemm_reduce(const char* op, k::GemmParams<T> p, int64_t batch, cudaStream_t s) {
  const T* A = p.A;
  const T* B = p.B;
  if (batch <= 0) {  // an empty sum: C = beta * C
    p.K = 0;
    p.batch = 1;
    run_gemm<T>(op, p, s);
  }
  for (int64_t b = 0; b < batch; ++b) {
    p.A = A + b * p.batch_stride_a;
    p.B = B + b * p.batch_stride_b;
    p.batch = 1;
    if (b > 0) p.beta = 1.f;
    run_gemm<T>(op, p, s);
  }
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
