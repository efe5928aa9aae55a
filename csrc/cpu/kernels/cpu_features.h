// CPU facts the kernels dispatch on: instruction set and cache sizes, read once at load.
// FUSEDOPS_ISA=generic|avx2|avx512 in the environment caps the instruction set (tests use it
// to run every path the CPU supports).
#pragma once
#include <cstdint>
#include <string>

namespace fusedops {

enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2 };

struct CpuInfo {
  Isa best = Isa::generic;       // widest instruction set the CPU and OS support
  bool avx512_bf16 = false;      // bf16 dot products (vdpbf16ps), with avx512
  int64_t l1d = 32 * 1024;       // bytes, per core
  int64_t l2 = 512 * 1024;       // bytes, per core
  int64_t l3 = 8 * 1024 * 1024;  // bytes, shared
  std::string model;
};

const CpuInfo& cpu_info();
const char* isa_name(Isa isa);
// Parses "generic" / "avx2" / "avx512"; returns false for anything else.
bool parse_isa(const std::string& name, Isa* out);

// The instruction set kernels use now: the CPU's best, capped by FUSEDOPS_ISA or set_isa().
Isa active_isa();
// Caps the instruction set (never above what the CPU supports). Returns the one in force.
Isa set_isa(Isa isa);

// How bf16 products run (FUSEDOPS_BF16=auto|native|avx512_bf16|widen, default auto): natively
// (AMX tiles where the CPU lends them, else AVX512-BF16 dot products; auto takes the latter only
// where they beat the fp32 FMA, see gemm_bf16.h), on AVX512-BF16 even where AMX exists
// (avx512_bf16), or widened to fp32 for the fp32 kernels (widen). Native needs avx512 in force.
enum class Bf16Mode : int { automatic = 0, native = 1, widen = 2, avx512_bf16 = 3 };
Bf16Mode bf16_mode();
void set_bf16_mode(Bf16Mode mode);
bool parse_bf16_mode(const std::string& name, Bf16Mode* out);

}  // namespace fusedops
