// Output allocation for the memory-bound CPU ops. A large tensor from at::empty is memory the
// process has never touched: each 4 KiB page faults (and is zeroed) on its first write, which
// made a fresh 100 MB fill about 5x slower than a fill of touched memory here. Where the kernel
// offers transparent huge pages on request (THP "madvise" mode, or "always"), asking for them on
// the tensor's 2 MiB-aligned interior turns 512 of those faults into one.
#pragma once
#include <ATen/ATen.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <cstdint>

namespace fusedops {

constexpr int64_t kHugePage = int64_t(1) << 21;
constexpr int64_t kHugeMin = int64_t(8) << 20;  // below this, faults are a small share

inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const int64_t nbytes = int64_t(t.nbytes());
  if (t.device().is_cpu() && nbytes >= kHugeMin) {
    const auto p = reinterpret_cast<uintptr_t>(t.data_ptr());
    const uintptr_t a = (p + kHugePage - 1) & ~uintptr_t(kHugePage - 1);
    const uintptr_t e = (p + nbytes) & ~uintptr_t(kHugePage - 1);
    if (e > a) (void)madvise(reinterpret_cast<void*>(a), e - a, MADV_HUGEPAGE);  // advice only
  }
#endif
  return t;
}

}  // namespace fusedops
