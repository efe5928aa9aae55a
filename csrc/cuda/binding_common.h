// What every CUDA binding needs, shared by the CUDA build (<family>.cu: CUDA tensors, the
// current stream) and the simulator build (sim/sim_<family>.cpp: CPU tensors, kernels run by
// csrc/sim/cuda_sim.h): the device test, stream, guard, launch wrapper (simulator errors become
// RuntimeErrors), the tensor check and the dtype dispatch to CUDA element types. Include after
// the kernel headers, with FUSEDOPS_CUDA_NS defined by the simulator build.
#pragma once
#include <ATen/ATen.h>

#include "common/checks.h"
#include "cuda/kernels/ptx.cuh"

#ifndef CUDASIM
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

namespace k = fusedops::FUSEDOPS_CUDA_NS;

#ifdef CUDASIM
constexpr const char* kDevice = "a CPU tensor (fusedops_sim runs the CUDA kernels on the CPU)";
inline bool on_device(const at::Tensor& t) { return t.device().is_cpu(); }
inline cudaStream_t stream_for(const at::Tensor&) { return nullptr; }
struct DeviceGuard {
  explicit DeviceGuard(const at::Tensor&) {}
};
// Simulator errors (divergent barriers, bad shapes, traps) become RuntimeErrors.
template <class F>
void launch(const char* op, F&& f) {
  try {
    f();
  } catch (const cudasim::Error& e) {
    TORCH_CHECK(false, "fusedops_sim.", op, ": the simulated kernel failed: ", e.what());
  }
}
#else
constexpr const char* kDevice = "a CUDA tensor";
inline bool on_device(const at::Tensor& t) { return t.is_cuda(); }
inline cudaStream_t stream_for(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}
struct DeviceGuard {
  explicit DeviceGuard(const at::Tensor& t) : guard(t.device()) {}
  c10::cuda::CUDAGuard guard;
};
template <class F>
void launch(const char*, F&& f) {
  f();
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
#endif

inline void check_tensor(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* arg,
                         const char* ref_arg) {
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
                   "fusedops.", op, ": ", arg,
                   " must be float32, float64, float16 or bfloat16, got ", st);
  FUSEDOPS_CHECK(on_device(t), op, arg, " must be ", kDevice, ", got device ", t.device());
  if (&t != &ref) {
    check_same_dtype(t, ref, op, arg, ref_arg);
    FUSEDOPS_CHECK(t.device() == ref.device(), op, arg, " must be on the device of ", ref_arg,
                   " (", ref.device(), "), got ", t.device());
  }
}

// The CUDA element type of a torch dtype.
template <class F>
void dispatch(at::ScalarType st, F&& f) {
  switch (st) {
    case at::kFloat: return f(float{});
    case at::kDouble: return f(double{});
    case at::kHalf: return f(__half{});
    case at::kBFloat16: return f(__nv_bfloat16{});
    default: TORCH_CHECK(false, "fusedops: unsupported dtype ", st);
  }
}

template <typename T>
T* ptr(const at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
