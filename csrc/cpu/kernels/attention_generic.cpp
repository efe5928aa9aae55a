// Portable flash attention: scalar "vectors", a 4 x 4 tile, 48 x 48 blocks.
#include "attention.h"
#include "vec/isa_generic.h"

#define FUSEDOPS_ATTN_MR_F32 4
#define FUSEDOPS_ATTN_NV_F32 4
#define FUSEDOPS_ATTN_BM_F32 48
#define FUSEDOPS_ATTN_BN_F32 48
#define FUSEDOPS_ATTN_MR_F64 4
#define FUSEDOPS_ATTN_NV_F64 4
#define FUSEDOPS_ATTN_BM_F64 48
#define FUSEDOPS_ATTN_BN_F64 48
#include "attention_isa.h"
