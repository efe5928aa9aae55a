// The CPU ops follow torch's thread setting in every calling thread.
//
// libgomp keeps the thread count per calling thread: after torch.set_num_threads(n) in the
// main thread, a new Python thread would still start the machine's full count of OpenMP
// threads. torch applies its setting to a thread lazily, at its first parallel call; every
// CPU op does the same on entry (a thread-local flag, then nothing), so no call from any thread
// runs more than torch.get_num_threads() threads.
#pragma once
#include <ATen/Parallel.h>

#include <utility>

namespace fusedops {

template <auto Fn>
struct CpuOp;

template <class R, class... A, R (*Fn)(A...)>
struct CpuOp<Fn> {
  static R call(A... args) {
    at::internal::lazy_init_num_threads();
    return Fn(std::forward<A>(args)...);
  }
};

}  // namespace fusedops

// m.impl("name", FUSEDOPS_CPU(fn)) registers fn behind the thread-setting guard.
#define FUSEDOPS_CPU(fn) (&::fusedops::CpuOp<&(fn)>::call)
