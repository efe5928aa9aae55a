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
#include <cstdlib>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

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

// Large internal buffers (an RNN layer's workspace, its backward's scratch) from a small pool
// of blocks that return to it when their tensor dies. Huge pages still have to be zeroed by the
// kernel on first touch: a 42 MB LSTM workspace, above glibc's 32 MB mmap ceiling, is fresh
// memory on every call, ~7% of the layer's forward. The pool keeps at most kPoolKeep bytes of
// idle blocks (a training loop's steady state of a few same-sized blocks; default 64 MB,
// FUSEDOPS_RNN_POOL_MB sets it, 0 keeps none); below kPoolMin bytes this is empty_output. Not
// for tensors handed to users (a pooled tensor cannot be resized).
constexpr int64_t kPoolMin = int64_t(16) << 20;

inline size_t pool_keep_bytes() {
  static const size_t keep = [] {
    const char* e = std::getenv("FUSEDOPS_RNN_POOL_MB");
    char* end = nullptr;
    const long long mb = e && *e ? std::strtoll(e, &end, 10) : -1;
    return mb >= 0 && end != e ? size_t(mb) << 20 : size_t(64) << 20;
  }();
  return keep;
}

class BlockPool {
 public:
  static BlockPool& instance() {
    static BlockPool* pool = new BlockPool;  // never destroyed: tensors may outlive statics
    return *pool;
  }
  // A block of at least `bytes` (rounded up to huge pages); its size in *got.
  void* take(size_t bytes, size_t* got) {
    const size_t want = (bytes + kHugePage - 1) / size_t(kHugePage) * size_t(kHugePage);
    {
      std::lock_guard<std::mutex> lock(mu_);
      // The smallest idle block that fits, if it is no more than twice the request.
      size_t best = free_.size();
      for (size_t i = 0; i < free_.size(); ++i)
        if (free_[i].first >= want && free_[i].first <= 2 * want && (best == free_.size() || free_[i].first < free_[best].first))
          best = i;
      if (best < free_.size()) {
        auto [size, ptr] = free_[best];
        free_.erase(free_.begin() + std::ptrdiff_t(best));
        idle_ -= size;
        *got = size;
        return ptr;
      }
    }
    void* p = std::aligned_alloc(size_t(kHugePage), want);
    if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    (void)madvise(p, want, MADV_HUGEPAGE);  // advice only
#endif
    *got = want;
    return p;
  }
  size_t idle_bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return idle_;
  }
  // Frees every idle block; returns the bytes freed.
  size_t release() {
    std::vector<std::pair<size_t, void*>> blocks;
    size_t bytes;
    {
      std::lock_guard<std::mutex> lock(mu_);
      blocks.swap(free_);
      bytes = idle_;
      idle_ = 0;
    }
    for (auto& b : blocks) std::free(b.second);
    return bytes;
  }
  void give(void* p, size_t size) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (idle_ + size <= pool_keep_bytes()) {
        free_.emplace_back(size, p);
        idle_ += size;
        return;
      }
    }
    std::free(p);
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<size_t, void*>> free_;
  size_t idle_ = 0;
};

inline at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  int64_t n = 1;
  for (int64_t v : sizes) n *= v;
  const int64_t nbytes = n * int64_t(c10::elementSize(c10::typeMetaToScalarType(options.dtype())));
  if (nbytes < kPoolMin || !options.device().is_cpu()) return empty_output(sizes, options);
  size_t got = 0;
  void* p = BlockPool::instance().take(size_t(nbytes), &got);
  return at::from_blob(p, sizes, [got](void* q) { BlockPool::instance().give(q, got); }, options);
}

}  // namespace fusedops
