// The process-wide cache of scratch blocks (scratch.h). Each block carries its size in a
// 64-byte header before the address handed out.
#include "scratch.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <mutex>

namespace fusedops::cpu {
namespace {

constexpr size_t kHeader = 64;
constexpr size_t kCacheMin = size_t(64) << 10;  // smaller blocks go straight to malloc

size_t cap_from_env() {
  const char* e = std::getenv("FUSEDOPS_SCRATCH_MB");
  if (!e || !*e) return size_t(32) << 20;
  char* end = nullptr;
  const long long mb = std::strtoll(e, &end, 10);
  if (end == e || mb < 0) return size_t(32) << 20;
  return size_t(mb) << 20;
}

struct Cache {
  std::mutex mu;
  std::vector<char*> idle;  // block starts (header included)
  size_t idle_bytes = 0;
  const size_t cap = cap_from_env();
};

Cache& cache() {
  static Cache* c = new Cache;  // never destroyed: blocks may be given back during exit
  return *c;
}

size_t& size_of(char* block) { return *reinterpret_cast<size_t*>(block); }

}  // namespace

void* scratch_take(size_t bytes) {
  const size_t want = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  if (want >= kCacheMin) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    // The smallest idle block that fits, if at most twice the request.
    size_t best = c.idle.size();
    for (size_t i = 0; i < c.idle.size(); ++i) {
      const size_t s = size_of(c.idle[i]) - kHeader;
      if (s >= want && s <= 2 * want && (best == c.idle.size() || s < size_of(c.idle[best]) - kHeader)) best = i;
    }
    if (best < c.idle.size()) {
      char* block = c.idle[best];
      c.idle.erase(c.idle.begin() + std::ptrdiff_t(best));
      c.idle_bytes -= size_of(block);
      return block + kHeader;
    }
  }
  char* block = static_cast<char*>(std::aligned_alloc(64, want + kHeader));
  if (!block) throw std::bad_alloc();
  size_of(block) = want + kHeader;
  return block + kHeader;
}

void scratch_give(void* p) noexcept {
  if (!p) return;
  char* block = static_cast<char*>(p) - kHeader;
  const size_t size = size_of(block);
  if (size - kHeader >= kCacheMin) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.idle_bytes + size <= c.cap) {
      c.idle.push_back(block);
      c.idle_bytes += size;
      return;
    }
  }
  std::free(block);
}

size_t scratch_idle_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.idle_bytes;
}

size_t scratch_release() {
  std::vector<char*> blocks;
  size_t bytes;
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    blocks.swap(c.idle);
    bytes = c.idle_bytes;
    c.idle_bytes = 0;
  }
  for (char* b : blocks) std::free(b);
  return bytes;
}

}  // namespace fusedops::cpu
