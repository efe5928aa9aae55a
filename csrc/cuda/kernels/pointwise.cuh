/* Bias + activation backward for linear layers, torch-free:
     dz[m,n] = g[m*rsg + n*csg] * act'(z[m*ldz + n])   (act != none; dz row-major [M, N])
     db[n]   = sum_m dz[m,n]  (sum of g when act == none)   (db != nullptr)
   Deterministic: blocks of 32 columns x 8 row lanes; each block sums a fixed slice of rows in
   a fixed order, then either writes db directly (one row slice) or a float partial per slice
   into the workspace, which a second kernel sums in slice order. */
#pragma once
#include "gemm.cuh"

namespace fusedops::FUSEDOPS_CUDA_NS {
namespace pointwise_detail {

constexpr int kCols = 32, kRowLanes = 8;

// grid (column tiles, row slices); rows_per_slice is a multiple of kRowLanes.
template <typename T>
__global__ void __launch_bounds__(kCols * kRowLanes)
    bias_act_backward_kernel(int64_t M, int64_t N, const T* g, int64_t rsg, int64_t csg, const T* z, int64_t ldz,
                             T* dz, Activation act, T* db, float* partial, int64_t rows_per_slice) {
  using Acc = gemm_acc_t<T>;
  using gemm_detail::act_grad;
  using gemm_detail::from_acc;
  using gemm_detail::to_acc;
  SMEM_ARRAY(Acc, red, kRowLanes, kCols + 1);
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t n = int64_t(blockIdx.x) * kCols + tx;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_slice;
  const int64_t r1 = r0 + rows_per_slice < M ? r0 + rows_per_slice : M;
  Acc sum = 0;
  if (n < N) {
    for (int64_t m = r0 + ty; m < r1; m += kRowLanes) {
      Acc v = to_acc(g[m * rsg + n * csg]);
      if (act != Activation::none) {
        v *= act_grad(to_acc(z[m * ldz + n]), act);
        const T out = from_acc<T>(v);
        dz[m * N + n] = out;
        v = to_acc(out);  // db sums the dz that is returned
      }
      sum += v;
    }
  }
  if (db == nullptr) return;  // uniform across the block
  red[ty][tx] = sum;
  __syncthreads();
  if (ty == 0 && n < N) {
    Acc s = 0;
    for (int i = 0; i < kRowLanes; ++i) s += red[i][tx];
    if (partial) partial[int64_t(blockIdx.y) * N + n] = float(s);
    else db[n] = from_acc<T>(s);
  }
}

// db[n] = sum over slices of partial[slice, n], in slice order.
template <typename T>
__global__ void __launch_bounds__(256) column_sum_kernel(int64_t N, int64_t slices, const float* partial, T* db) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  float s = 0.f;
  for (int64_t i = 0; i < slices; ++i) s += partial[i * N + n];
  db[n] = gemm_detail::from_acc<T>(gemm_acc_t<T>(s));
}

inline int64_t rows_per_slice(int64_t M, int64_t slices) {
  const int64_t r = (M + slices - 1) / slices;
  return (r + kRowLanes - 1) / kRowLanes * kRowLanes;
}

}  // namespace pointwise_detail

// grid.y > 1 row slices need workspace_bytes of float partials (when db is wanted); double
// accumulates in one slice (partials are float).
template <typename T>
LaunchPlan bias_act_backward_plan(int64_t M, int64_t N) {
  using namespace pointwise_detail;
  LaunchPlan plan;
  const int64_t col_tiles = (N + kCols - 1) / kCols;
  int64_t slices = 1;
  if (!std::is_same_v<T, double> && M > 0) {  // (no rows: one slice, the launch writes zeros)
    const int64_t want = col_tiles >= 256 ? 1 : 256 / col_tiles;  // about 256+ blocks in all
    const int64_t max_slices = (M + 255) / 256;                    // at least 256 rows a slice
    slices = want < max_slices ? want : max_slices;
    if (slices < 1) slices = 1;
    slices = (M + rows_per_slice(M, slices) - 1) / rows_per_slice(M, slices);  // no empty slice
    if (slices < 1) slices = 1;
  }
  plan.grid = dim3(unsigned(col_tiles > 0 ? col_tiles : 1), unsigned(slices), 1);
  plan.block = dim3(kCols, kRowLanes, 1);
  plan.variant = int(slices);
  plan.name = slices > 1 ? "bias_act_backward_2pass" : "bias_act_backward";
  plan.workspace_bytes = slices > 1 ? size_t(slices) * size_t(N) * sizeof(float) : 0;
  return plan;
}

// workspace_or_null: plan.workspace_bytes of scratch, or nullptr (then one row slice is used).
template <typename T>
void bias_act_backward_launch(const LaunchPlan& plan, int64_t M, int64_t N, const T* g, int64_t rsg, int64_t csg,
                              const T* z, int64_t ldz, T* dz, Activation act, T* db, float* workspace_or_null,
                              cudaStream_t stream) {
  using namespace pointwise_detail;
  if (N <= 0) return;
  if (act == Activation::none && db == nullptr) return;
  if (M <= 0) {  // db of an empty sum
    if (db) {
      dim3 grid(unsigned((N + 255) / 256));
      LAUNCH(column_sum_kernel<T>, grid, dim3(256), 0, stream, N, int64_t(0), static_cast<const float*>(nullptr),
             db);
    }
    return;
  }
  int64_t slices = plan.grid.y;
  dim3 grid = plan.grid;
  const bool two_pass = db != nullptr && slices > 1 && workspace_or_null != nullptr;
  if (db != nullptr && !two_pass) slices = 1, grid.y = 1;
  const int64_t rps = rows_per_slice(M, slices);
  LAUNCH(bias_act_backward_kernel<T>, grid, plan.block, 0, stream, M, N, g, rsg, csg, z, ldz, dz, act, db,
         two_pass ? workspace_or_null : static_cast<float*>(nullptr), rps);
  if (two_pass)
    LAUNCH(column_sum_kernel<T>, dim3(unsigned((N + 255) / 256)), dim3(256), 0, stream, N, slices,
           static_cast<const float*>(workspace_or_null), db);
}

inline void bias_act_backward_instantiate_all_() {
  (void)&bias_act_backward_launch<__half>;
  (void)&bias_act_backward_launch<__nv_bfloat16>;
  (void)&bias_act_backward_launch<float>;
  (void)&bias_act_backward_launch<double>;
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS
