// Fused (flash) attention on the CPU, torch-free: softmax(scale * Q K^T + mask) V per
// (batch, head) with the softmax computed online over blocks of keys, so no L x S matrix
// exists; the forward saves the log-sum-exp of every row, the backward recomputes the
// probabilities block by block (FlashAttention-2 order: key blocks outermost).
//
// Every (batch, head) pair is one "batch" index b in [0, batch); the operands of b start at
// element offsets q_off[b], k_off[b], ... (so broadcast batch dimensions, grouped-query heads
// and transposed layouts need no copies). Rows are strided, the last dimension contiguous.
// A row whose keys are all masked gives zeros (and zero gradients); its log-sum-exp is +inf.
#pragma once
#include <cstdint>

#include "../../contracts/attention.h"
#include "../../contracts/attention_rng.h"
#include "bf16.h"
#include "cpu_features.h"

namespace fusedops::cpu {

// T: the storage type of the tensors (float, double, or bf16_t: bf16 tensors computed in fp32);
// the scale and the log-sum-exp are in the arithmetic type C.
template <typename T>
struct AttentionArgs {
  using C = compute_t<T>;
  int64_t batch = 0;           // query (batch, head) pairs
  int64_t L = 0, S = 0;        // query and key sequence lengths
  int64_t E = 0, Ev = 0;       // query/key and value head dims
  const T* q = nullptr;        // q[q_off[b] + i * q_rs + e]
  const T* k = nullptr;        // k[k_off[b] + j * k_rs + e]
  const T* v = nullptr;        // v[v_off[b] + j * v_rs + c]
  const int64_t* q_off = nullptr;
  const int64_t* k_off = nullptr;
  const int64_t* v_off = nullptr;
  int64_t q_rs = 0, k_rs = 0, v_rs = 0;
  AttnMask mask = AttnMask::none;  // element (i, j) at m_off[b] + i * m_rs + j * m_cs
  const T* mask_add = nullptr;     // additive: added to the scaled scores
  const uint8_t* mask_bool = nullptr;  // boolean: nonzero takes part
  const int64_t* m_off = nullptr;
  int64_t m_rs = 0, m_cs = 0;
  bool causal = false;  // key j visible to query i iff j <= i (top-left aligned)
  C scale = C(1);
  double dropout_p = 0.0;  // keep decision per (b, i, j): contracts/attention_rng.h
  uint64_t seed = 0, offset = 0;
  // forward: out [batch, L, Ev] and lse [batch, L] contiguous (outputs);
  // backward: inputs (the forward's results).
  T* out = nullptr;
  C* lse = nullptr;
  // backward only: dout [batch, L, Ev] contiguous; dq [batch, L, E] contiguous; dk, dv
  // [batch, S, E] / [batch, S, Ev] contiguous, one per query (batch, head) (the binding sums
  // them over the query heads that share a key head); any may be null (not needed).
  const T* dout = nullptr;
  T* dq = nullptr;
  T* dk = nullptr;
  T* dv = nullptr;
};

// Flash attention kernels, one table per instruction set (vec/dispatch.h).
template <typename T>
struct AttentionKernels {
  void (*attention_forward)(const AttentionArgs<T>& args);
  void (*attention_backward)(const AttentionArgs<T>& args);
};

// The kernels of an instruction set (default: the one in force), filled once.
template <typename T>
const AttentionKernels<T>& attention_kernels(Isa isa = active_isa());

// The bf16 forward with its products on the bf16 units (attention_avx512bf16.cpp): AMX tiles
// (amx) or vdpbf16ps; only where the CPU has them. The avx512 table runs it when bf16_kernel()
// (gemm/gemm_bf16.h) says bf16 products run natively.
namespace avx512bf16 {
void attention_forward_bf16(const AttentionArgs<bf16_t>& args, bool amx);
// The backward likewise; false where there are no products (the caller's kernel writes the zeros).
bool attention_backward_bf16(const AttentionArgs<bf16_t>& args, bool amx);
}

}  // namespace fusedops::cpu
