// fusedops.empty_cache() and the cache statistics: the sum over every cache the CPU code keeps
// (common/caches.h). It lives at the top, beside module.cpp, because it reaches into the kernels
// (cpu/kernels/scratch.h) as well as common/ and the bindings.
#include "common/caches.h"

#include "common/fresh_output.h"
#include "cpu/kernels/scratch.h"

namespace fusedops {

CacheBytes cache_bytes() {
  return {cpu::scratch_idle_bytes(), BlockPool::instance().idle_bytes(), loss_cache_bytes()};
}

size_t empty_caches() {
  return cpu::scratch_release() + BlockPool::instance().release() + release_loss_cache();
}

}  // namespace fusedops
