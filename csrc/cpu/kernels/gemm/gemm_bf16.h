// Mixed-precision GEMM: C = act(alpha * A @ B + beta * C + bias) with bf16 products and fp32
// accumulation, torch-free. Each of A, B, C, bias is bf16 or fp32 on its own (DType): an fp32
// operand (a master weight under autocast) is rounded to bf16 while it is packed, so no bf16
// copy of it is ever made. The products are those of the bf16-rounded operands, summed in
// fp32; C, the pre-activation and the epilogue are computed in fp32 and rounded once when
// stored (round to nearest even) where they are bf16.
//
// Where bf16_native() says so the products run natively: on AMX tiles where the CPU has them
// (Intel Sapphire Rapids and later), else, with AVX512-BF16 faster than the fp32 FMA (or
// FUSEDOPS_BF16=native / avx512_bf16), the
// microkernel runs on `vdpbf16ps`: B packed as K-pairs interleaved per column (the pair
// B(2p, j), B(2p+1, j) in one 32-bit lane), A broadcast by pairs, 16 columns of fp32 sums per
// register. Elsewhere bf16 operands are widened to fp32 (exactly) and the fp32 GEMM of the
// instruction set in force runs; fp32 operands are then used as they are (more precise, never
// less, than their bf16 rounding).
// Like the AVX512-BF16 instructions themselves, the native path treats subnormal bf16 inputs
// and products as zero.
#pragma once
#include <cstdint>

#include "../bf16.h"
#include "gemm.h"

namespace fusedops::cpu {

// Whether bf16 products run natively now (AMX or vdpbf16ps; cpu_features.h: bf16_mode()). In
// the automatic mode, without AMX, vdpbf16ps is timed against the fp32 FMA once per process
// for a millisecond: on some CPUs (measured: a Sapphire-Rapids-class Xeon) it runs at half the
// fp32 FMA's flops, and the fp32 kernels over widened operands are faster.
bool bf16_native();
// Which kernel runs bf16 products now: widened to fp32, vdpbf16ps, or AMX tiles (for the
// families that have their own products on the bf16 units, as attention).
enum class Bf16Kernel { widened, dot, amx };
Bf16Kernel bf16_kernel();
// Why: "native (avx512_bf16)", "widened: ..." with the reason; for cpu_info().
const char* bf16_path();
// The sustained rate of the bf16 path in force on `threads` threads, GFLOP/s (the fp32 FMA's
// where bf16 is widened): the benchmarks' bf16 peak.
double bf16_peak_gflops(int threads, double seconds);

struct GemmMixedArgs {
  int64_t M = 0, N = 0, K = 0;
  float alpha = 1.0f;
  const void* A = nullptr;
  DType a_type = DType::bf16;
  int64_t rsa = 0, csa = 0;  // A(i, k) = A[i * rsa + k * csa]
  const void* B = nullptr;
  DType b_type = DType::bf16;
  int64_t rsb = 0, csb = 0;  // B(k, j) = B[k * rsb + j * csb]
  float beta = 0.0f;         // beta == 0 never reads C
  void* C = nullptr;
  DType c_type = DType::bf16;
  int64_t ldc = 0;  // C(i, j) = C[i * ldc + j]
  const void* bias = nullptr;
  DType bias_type = DType::f32;
  BiasMode bias_mode = BiasMode::none;
  Activation act = Activation::none;
  void* preact = nullptr;  // optional, of C's type: alpha*AB + beta*C + bias before the activation
  int64_t ld_preact = 0;
  int max_threads = 0;  // 0: the OpenMP pool's size
};

void gemm_mixed(const GemmMixedArgs& args);
// The widening path whatever the CPU (for tests: the two paths agree within bf16's budget).
void gemm_mixed_widened(const GemmMixedArgs& args);
// Long-double oracle over the operands as given (fp32 ones not rounded): the tests' budget
// counts the rounding of fp32 operands to bf16.
void gemm_mixed_reference(const GemmMixedArgs& args);

// The native kernel (gemm_avx512bf16.cpp); only on CPUs with AVX512-BF16.
namespace avx512bf16 {
void gemm_mixed(const GemmMixedArgs& args);
double dot_peak_gflops(int threads, double seconds);  // sustained vdpbf16ps rate
double amx_peak_gflops(int threads, double seconds);  // sustained tdpbf16ps rate
// Intel's AMX tile unit (tdpbf16ps, 32 x 32 tiles): whether the CPU has it and the OS lends
// it to this process; the GEMM on it.
bool amx_available();
void gemm_mixed_amx(const GemmMixedArgs& args);
// A linear's backward before its GEMMs, for bf16 or fp32 operands: dz = g * act'(z) (g when
// act is none) into dz (row-major [M, N], of type dzt; null: not wanted) and db = the fp32
// column sums of dz (null: not wanted), in fixed row chunks: the same bits for any thread
// count. g strided (rsg, csg; 0 for expanded), z row-major with ldz.
void bias_act_backward(int64_t M, int64_t N, const void* g, DType gt, int64_t rsg, int64_t csg, const void* z,
                       DType zt, int64_t ldz, void* dz, DType dzt, Activation act, float* db);
}  // namespace avx512bf16

}  // namespace fusedops::cpu
