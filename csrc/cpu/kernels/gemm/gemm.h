// CPU GEMM: C[M,N] = act(alpha * A[M,K] @ B[K,N] + beta * C + bias), torch-free.
//
// A and B are read through (row stride, column stride) pairs, so transposed, strided and
// expanded (stride 0) operands need no copies: packing absorbs them. C is row-major with
// leading dimension ldc. beta == 0 never reads C (NaN in C does not leak). The epilogue
// (bias, pre-activation store, activation) runs on each tile while it is in L1.
//
// Structure (BLIS): loops over NC columns of B, KC rows of K, MC rows of A; B packed into
// KC x NR micro-panels shared by all threads, A into MR x KC micro-panels per thread; a
// register-blocked microkernel per instruction set. See gemm_impl.h.
#pragma once
#include <cstdint>
#include <vector>

#include "../cpu_features.h"
#include "../../../contracts/activation.h"
#include "../activation.h"

namespace fusedops::cpu {

template <typename T>
struct GemmArgs {
  int64_t M = 0, N = 0, K = 0;
  T alpha = T(1);
  const T* A = nullptr;
  int64_t rsa = 0, csa = 0;  // A(i, k) = A[i * rsa + k * csa]
  const T* B = nullptr;
  int64_t rsb = 0, csb = 0;  // B(k, j) = B[k * rsb + j * csb]
  T beta = T(0);
  T* C = nullptr;
  int64_t ldc = 0;  // C(i, j) = C[i * ldc + j]
  const T* bias = nullptr;
  BiasMode bias_mode = BiasMode::none;
  Activation act = Activation::none;
  T* preact = nullptr;  // optional: receives alpha*AB + beta*C + bias before the activation
  int64_t ld_preact = 0;
  int max_threads = 0;  // 0: the OpenMP pool's size (torch.set_num_threads)
  // Optional implicit B operand (convolution's im2col gather): when pack_b is set, B, rsb and
  // csb are unused and the driver calls pack_b(pack_b_ctx, k0, kc, j0, nr, NR, Bp) for each
  // micro-panel, which must write B(k0 + k, j0 + j) to Bp[k * NR + j] for k < kc, j < nr and
  // zero for nr <= j < NR. Called concurrently from several threads.
  void (*pack_b)(const void* ctx, int64_t k0, int64_t kc, int64_t j0, int64_t nr, int NR,
                 T* Bp) = nullptr;
  const void* pack_b_ctx = nullptr;
  // Optional B packed ahead by gemm_pack_b (same N, K and instruction set): products that
  // share one B (a recurrent weight at every time step) skip its packing. B, rsb, csb, pack_b
  // unused then; packed_m must be the M given to gemm_pack_b (the microkernel tile it packed
  // for follows from it), whatever this product's M.
  const T* packed_b = nullptr;
  int64_t packed_m = 0;
  // The instruction set packed_b was packed for (gemm_pack_b says): the product runs on it,
  // whatever the instruction set in force is now, since each set packs its own panel layout.
  Isa packed_isa = Isa::generic;
};

// Packs the B operand of args (N, K and B/rsb/csb or pack_b) once, into `storage`, for
// GemmArgs::packed_b; returns the (aligned) start to put there, and in *isa the instruction
// set it was packed for (for GemmArgs::packed_isa). args.M: the rows of the products that will
// use it (their largest; the packing suits the tile chosen for it).
template <typename T>
const T* gemm_pack_b(const GemmArgs<T>& args, std::vector<T>& storage, Isa* isa);

// Runs on the instruction set in force (active_isa()), or on args.packed_isa with packed_b.
template <typename T>
void gemm(const GemmArgs<T>& args);

// C = act(alpha * A @ B + beta * C + bias) with an implicit B whose row k is N consecutive
// elements of X from boff[k]: B(k, j) = X[boff[k] + j] (a convolution's tap k over a padded
// image, j the output positions). B, rsb, csb, pack_b and packed_b of args are unused. X must
// be readable up to kGemmOffsetSlack elements past every boff[k] + N (whole vectors are read).
// A batch of such products sharing A (images): the b-th reads X + b * x_stride and writes
// C + b * c_stride; A is packed once for all.
constexpr int64_t kGemmOffsetSlack = 64;
template <typename T>
void gemm_offset_b(const GemmArgs<T>& args, const T* X, const int64_t* boff, int64_t batch = 1,
                   int64_t x_stride = 0, int64_t c_stride = 0);

// Y[coff[i] + j] += alpha * (A @ B)(i, j), B implicit as for gemm_offset_b (beta, bias, C and
// ldc of args unused): the transpose of a convolution, each row of A @ B (an input channel's
// tap over the output positions) added into a shifted view of the input gradient. Rows may
// overlap; rows that may overlap each other must lie in one aligned group of `row_group` rows
// (one channel's taps), which one thread adds in order. A batch as in gemm_offset_b (Y + b *
// y_stride). X needs the same slack as for gemm_offset_b.
template <typename T>
void gemm_offset_c(const GemmArgs<T>& args, const T* X, const int64_t* boff, T* Y, const int64_t* coff,
                   int64_t row_group, int64_t batch = 1, int64_t x_stride = 0, int64_t y_stride = 0);

// C = alpha * A @ B + beta * C with an implicit A whose row i is K consecutive elements of X
// from aoff[i]: A(i, k) = X[aoff[i] + k] (a convolution's tap i over the output positions, for
// its weight gradient). A, rsa and csa of args are unused; B is read through its strides; no
// bias or activation. With run > 0 a row of A is read in runs of `run` elements every
// `stride`: A(i, k) = X[aoff[i] + k / run * stride + k % run] (a tap over an image's output
// rows, read from its padded rows: B, the output gradient, stays dense).
template <typename T>
void gemm_offset_a(const GemmArgs<T>& args, const T* X, const int64_t* aoff, int64_t run = 0, int64_t stride = 0);

// A batch of GEMMs: the b-th reads A + b * stride_a, B + b * stride_b, writes C + b * stride_c
// (bias, preact unbatched). A stride of 0 broadcasts that operand; stride_c == 0 sums every
// product into the one C (beta applies once). Small products run in parallel over the batch.
template <typename T>
void gemm_batched(const GemmArgs<T>& args, int64_t batch, int64_t stride_a, int64_t stride_b,
                  int64_t stride_c);

// Runs on the given instruction set (must be supported by the CPU); for tests.
template <typename T>
void gemm_with_isa(Isa isa, const GemmArgs<T>& args);

// Plain triple loop in long double accumulation: the oracle for the tests.
template <typename T>
void gemm_reference(const GemmArgs<T>& args);

// Gradient of bias + activation for a [M, N] gradient g (strides rsg, csg; 0 for expanded):
// dz = g * act'(z) when act != none (z row-major with ldz, dz row-major [M, N]); db = column
// sums of dz (of g when act == none) when db != nullptr.
template <typename T>
void bias_act_backward(int64_t M, int64_t N, const T* g, int64_t rsg, int64_t csg, const T* z,
                       int64_t ldz, T* dz, Activation act, T* db);

// Sustained fp32 FMA rate of the instruction set in force on `threads` threads, GFLOP/s.
double fma_peak_gflops(int threads, double seconds);

struct MicrokernelInfo {
  int mr, nr;
  const char* name;
};
template <typename T>
MicrokernelInfo microkernel_info(Isa isa);

// The GEMM's kernels of one instruction set, the table the entry points above dispatch through
// (vec/dispatch.h); the arguments as for the entry point of the same name.
template <typename T>
struct GemmKernels {
  void (*run)(const GemmArgs<T>& args);
  void (*offset_b)(const GemmArgs<T>& args, const T* X, const int64_t* boff, int64_t batch, int64_t x_stride,
                   int64_t c_stride);
  void (*offset_c)(const GemmArgs<T>& args, const T* X, const int64_t* boff, T* Y, const int64_t* coff,
                   int64_t row_group, int64_t batch, int64_t x_stride, int64_t y_stride);
  void (*offset_a)(const GemmArgs<T>& args, const T* X, const int64_t* aoff, int64_t run, int64_t stride);
  int64_t (*packed_b_size)(int64_t M, int64_t N, int64_t K);  // elements gemm_pack_b writes
  void (*pack_b)(const GemmArgs<T>& args, T* dst);
  void (*bias_act_backward)(int64_t M, int64_t N, const T* g, int64_t rsg, int64_t csg, const T* z,
                            int64_t ldz, T* dz, Activation act, T* db);
  double (*fma_peak)(int threads, double seconds);
  MicrokernelInfo info;
};

template <typename T>
const GemmKernels<T>& gemm_kernels(Isa isa = active_isa());

}  // namespace fusedops::cpu
