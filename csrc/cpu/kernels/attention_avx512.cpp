// AVX-512 flash attention: fp32 8 x 32 tile (16 zmm accumulators), 64 x 64 blocks;
// fp64 8 x 16, 64 x 64 blocks; the bf16 forward on the bf16 units where bf16 runs natively.
#if defined(__x86_64__)
#include "attention.h"
#include "gemm/gemm_bf16.h"
#include "vec/isa_avx512.h"

#define FUSEDOPS_ATTN_NATIVE_BF16 1  // bf16: the forward on the bf16 units where they run natively

#define FUSEDOPS_ATTN_MR_F32 8
#define FUSEDOPS_ATTN_NV_F32 2
#define FUSEDOPS_ATTN_BM_F32 64
#define FUSEDOPS_ATTN_BN_F32 64
#define FUSEDOPS_ATTN_MR_F64 8
#define FUSEDOPS_ATTN_NV_F64 2
#define FUSEDOPS_ATTN_BM_F64 64
#define FUSEDOPS_ATTN_BN_F64 64
#include "attention_isa.h"
#endif
