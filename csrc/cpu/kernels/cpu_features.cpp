#include "cpu_features.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace fusedops {
namespace {

Isa detect_isa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // __builtin_cpu_supports also checks that the OS saves the wide registers (XGETBV).
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::generic;
}

int64_t cache_size(int name, int64_t fallback) {
  long v = sysconf(name);
  return v > 0 ? v : fallback;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto pos = line.find(':');
      if (pos != std::string::npos) return line.substr(pos + 2);
    }
  }
  return "unknown";
}

CpuInfo detect() {
  CpuInfo info;
  info.best = detect_isa();
#if defined(__x86_64__) || defined(__i386__)
  info.avx512_bf16 = info.best == Isa::avx512 && __builtin_cpu_supports("avx512bf16");
#endif
#ifdef _SC_LEVEL1_DCACHE_SIZE
  info.l1d = cache_size(_SC_LEVEL1_DCACHE_SIZE, info.l1d);
  info.l2 = cache_size(_SC_LEVEL2_CACHE_SIZE, info.l2);
  info.l3 = cache_size(_SC_LEVEL3_CACHE_SIZE, info.l3);
#endif
  // Guard against odd values reported by virtual machines.
  info.l1d = std::clamp<int64_t>(info.l1d, 16 * 1024, 128 * 1024);
  info.l2 = std::clamp<int64_t>(info.l2, 128 * 1024, 4 * 1024 * 1024);
  info.model = cpu_model();
  return info;
}

Isa initial_isa() {
  Isa isa = cpu_info().best;
  if (const char* env = std::getenv("FUSEDOPS_ISA")) {
    Isa want;
    if (parse_isa(env, &want)) isa = std::min(isa, want);
  }
  return isa;
}

std::atomic<int>& isa_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};
  return slot;
}

}  // namespace

const CpuInfo& cpu_info() {
  static const CpuInfo info = detect();
  return info;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

bool parse_isa(const std::string& name, Isa* out) {
  if (name == "generic") *out = Isa::generic;
  else if (name == "avx2") *out = Isa::avx2;
  else if (name == "avx512") *out = Isa::avx512;
  else return false;
  return true;
}

static std::atomic<int>& bf16_slot() {
  static std::atomic<int> slot{[] {
    Bf16Mode mode = Bf16Mode::automatic;
    if (const char* env = std::getenv("FUSEDOPS_BF16")) parse_bf16_mode(env, &mode);
    return static_cast<int>(mode);
  }()};
  return slot;
}

Isa active_isa() { return static_cast<Isa>(isa_slot().load(std::memory_order_relaxed)); }

Bf16Mode bf16_mode() { return static_cast<Bf16Mode>(bf16_slot().load(std::memory_order_relaxed)); }

void set_bf16_mode(Bf16Mode mode) { bf16_slot().store(static_cast<int>(mode)); }

bool parse_bf16_mode(const std::string& name, Bf16Mode* out) {
  if (name == "auto") *out = Bf16Mode::automatic;
  else if (name == "native") *out = Bf16Mode::native;
  else if (name == "widen") *out = Bf16Mode::widen;
  else if (name == "avx512_bf16") *out = Bf16Mode::avx512_bf16;
  else return false;
  return true;
}

Isa set_isa(Isa isa) {
  Isa capped = std::min(isa, cpu_info().best);
  isa_slot().store(static_cast<int>(capped));
  return capped;
}

}  // namespace fusedops
