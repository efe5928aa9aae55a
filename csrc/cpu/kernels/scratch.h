// Scratch memory of the CPU kernels (packed GEMM panels, padded images, partial sums), from
// one process-wide cache of idle blocks instead of buffers kept per thread.
//
// Fresh memory costs a page fault per 4 KiB page on first touch, so blocks freed at the end of
// a call are kept for the next one; but a buffer kept per thread grows to the largest problem
// any call ever had and stays with every thread alive. Here a call takes blocks and gives them
// back when it ends; the cache keeps idle blocks up to a cap for the whole process (default
// 32 MB, FUSEDOPS_SCRATCH_MB sets it, 0 keeps none) and frees the rest at once, so after any
// call at most the cap stays allocated, however many threads ran. Small blocks (< 64 KiB)
// bypass the cache (malloc reuses them cheaply).
#pragma once

#include <cstddef>
#include <new>
#include <utility>
#include <vector>

namespace fusedops::cpu {

void* scratch_take(size_t bytes);       // 64-byte aligned, uninitialised
void scratch_give(void* p) noexcept;    // p from scratch_take
size_t scratch_idle_bytes();            // held by the cache now
size_t scratch_release();               // frees every idle block; returns the bytes freed

// An allocator over the cache for std::vector. resize() leaves new elements uninitialised
// (the kernels write before they read), as a per-call buffer must not pay a zero fill.
template <typename T>
struct ScratchAllocator {
  using value_type = T;
  ScratchAllocator() = default;
  template <typename U>
  ScratchAllocator(const ScratchAllocator<U>&) noexcept {}
  T* allocate(size_t n) { return static_cast<T*>(scratch_take(n * sizeof(T))); }
  void deallocate(T* p, size_t) noexcept { scratch_give(p); }
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
  template <typename U>
  bool operator==(const ScratchAllocator<U>&) const noexcept { return true; }
  template <typename U>
  bool operator!=(const ScratchAllocator<U>&) const noexcept { return false; }
};

template <typename T>
using ScratchVec = std::vector<T, ScratchAllocator<T>>;

}  // namespace fusedops::cpu
