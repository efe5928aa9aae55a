// Direct convolution loops written once over a register trait V (vec.h), instantiated per
// instruction set by conv_direct_<isa>.cpp. Lanes are adjacent output columns of one output
// row; every (c, r, s) tap of the kernel adds weight * (input row segment) to them.
#pragma once
// (standard headers come from vec/isa_std.h, before the instruction set is selected)

#include "conv_direct.h"
#include "vec/vec.h"

namespace fusedops::cpu::FUSEDOPS_ISA_NS {
namespace conv_detail {

// Output columns [lo, hi) whose input column ow * sw + off lies inside the row [0, W).
inline void valid_range(int64_t off, int64_t sw, int64_t W, int64_t OW, int64_t* lo, int64_t* hi) {
  const int64_t l = off >= 0 ? 0 : (-off + sw - 1) / sw;
  const int64_t h = W - off <= 0 ? 0 : (W - off + sw - 1) / sw;
  *lo = std::min(l, OW);
  *hi = std::clamp<int64_t>(h, *lo, OW);
}

// The input values of lanes ow0 .. ow0 + n - 1 for a tap at column offset off: one (partial)
// load where the lanes are contiguous and inside the row, a gather with zeros otherwise.
template <class V>
inline typename V::R row_lanes(const typename V::T* xr, int64_t ow0, int n, int64_t sw, int64_t off,
                               int64_t lo, int64_t hi) {
  using T = typename V::T;
  if (sw == 1 && ow0 >= lo && ow0 + n <= hi)
    return n == V::W ? V::loadu(xr + ow0 + off) : V::load_partial(xr + ow0 + off, n);
  alignas(64) T buf[V::W] = {};
  for (int t = 0; t < n; ++t) {
    const int64_t ow = ow0 + t;
    if (ow >= lo && ow < hi) buf[t] = xr[ow * sw + off];
  }
  return V::load(buf);
}

struct Ranges {
  std::vector<int64_t> lo, hi;  // per kernel column q
  Ranges(const Conv2dShape& s) : lo(s.S), hi(s.S) {
    for (int64_t q = 0; q < s.S; ++q) valid_range(q * s.dw - s.pw, s.sw, s.W, s.OW, &lo[q], &hi[q]);
  }
};

// KB output channels at once (a compile-time count, so the accumulators stay in registers):
// each input vector loaded serves KB fused multiply-adds.
template <class V, int KB>
void forward(const Conv2dShape& s, const typename V::T* x, const typename V::T* w,
             const typename V::T* bias, typename V::T* y, int64_t n, int64_t k0) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int kb = KB;
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, HW = s.H * s.W, P = s.OH * s.OW;
  const int64_t CRS = Cg * s.R * s.S;
  const T* xg = x + (n * s.C + (k0 / Kg) * Cg) * HW;
  const Ranges rg(s);
  // Fast path: with stride 1 in width, a full vector of output columns whose every tap lies
  // inside the image reads tap t at a fixed offset toff[t] from the row's first input.
  std::vector<int64_t> toff(static_cast<size_t>(CRS));
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t q = 0; q < s.S; ++q) toff[size_t((c * s.R + r) * s.S + q)] = c * HW + r * s.dh * s.W + q * s.dw;
  int64_t lo_all = 0, hi_all = s.OW;
  for (int64_t q = 0; q < s.S; ++q) lo_all = std::max(lo_all, rg.lo[q]), hi_all = std::min(hi_all, rg.hi[q]);
  const T* wk0 = w + k0 * CRS;
  for (int64_t oh = 0; oh < s.OH; ++oh) {
    const int64_t ih0 = oh * s.sh - s.ph;
    const bool rows_inside = s.sw == 1 && ih0 >= 0 && ih0 + (s.R - 1) * s.dh < s.H;
    for (int64_t ow0 = 0; ow0 < s.OW; ow0 += V::W) {
      const int nv = int(std::min<int64_t>(V::W, s.OW - ow0));
      R acc[KB];
      #pragma GCC unroll 4
      for (int j = 0; j < KB; ++j) acc[j] = V::set1(bias ? bias[k0 + j] : T(0));
      if (rows_inside && nv == V::W && ow0 >= lo_all && ow0 + V::W <= hi_all) {
        const T* base = xg + ih0 * s.W + ow0 - s.pw;
        for (int64_t t = 0; t < CRS; ++t) {
          const R xv = V::loadu(base + toff[size_t(t)]);
          #pragma GCC unroll 4
          for (int j = 0; j < KB; ++j) acc[j] = V::fmadd(V::set1(wk0[j * CRS + t]), xv, acc[j]);
        }
        #pragma GCC unroll 4
        for (int j = 0; j < KB; ++j) V::storeu(y + (n * s.K + k0 + j) * P + oh * s.OW + ow0, acc[j]);
        continue;
      }
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t r = 0; r < s.R; ++r) {
          const int64_t ih = oh * s.sh - s.ph + r * s.dh;
          if (ih < 0 || ih >= s.H) continue;
          const T* xr = xg + c * HW + ih * s.W;
          const T* wt = w + k0 * CRS + (c * s.R + r) * s.S;
          for (int64_t q = 0; q < s.S; ++q) {
            const R xv = row_lanes<V>(xr, ow0, nv, s.sw, q * s.dw - s.pw, rg.lo[q], rg.hi[q]);
            #pragma GCC unroll 4
            for (int j = 0; j < KB; ++j) acc[j] = V::fmadd(V::set1(wt[j * CRS + q]), xv, acc[j]);
          }
        }
      #pragma GCC unroll 4
      for (int j = 0; j < kb; ++j) {
        T* dst = y + (n * s.K + k0 + j) * P + oh * s.OW + ow0;
        if (nv == V::W) V::storeu(dst, acc[j]);
        else V::store_partial(dst, acc[j], nv);
      }
    }
  }
}

// gw for KB output channels k0 .. k0 + KB - 1 (independent accumulator chains, one input
// vector load per KB fused multiply-adds).
template <class V, int KB>
void weight(const Conv2dShape& s, const typename V::T* gy, const typename V::T* x,
            typename V::T* gw, int64_t n, int64_t k0, bool accumulate) {
  using T = typename V::T;
  using R = typename V::R;
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, HW = s.H * s.W, P = s.OH * s.OW;
  const int64_t CRS = Cg * s.R * s.S;
  const T* xg = x + (n * s.C + (k0 / Kg) * Cg) * HW;
  const T* gp = gy + (n * s.K + k0) * P;
  const Ranges rg(s);
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t q = 0; q < s.S; ++q) {
        R acc[KB];
        #pragma GCC unroll 4
        for (int j = 0; j < KB; ++j) acc[j] = V::zero();
        const int64_t off = q * s.dw - s.pw;
        for (int64_t oh = 0; oh < s.OH; ++oh) {
          const int64_t ih = oh * s.sh - s.ph + r * s.dh;
          if (ih < 0 || ih >= s.H) continue;
          const T* xr = xg + c * HW + ih * s.W;
          const T* gr = gp + oh * s.OW;
          for (int64_t ow0 = 0; ow0 < s.OW; ow0 += V::W) {
            const int nv = int(std::min<int64_t>(V::W, s.OW - ow0));
            const R xv = row_lanes<V>(xr, ow0, nv, s.sw, off, rg.lo[q], rg.hi[q]);
            #pragma GCC unroll 4
            for (int j = 0; j < KB; ++j) {
              const T* g = gr + j * P + ow0;
              acc[j] = V::fmadd(nv == V::W ? V::loadu(g) : V::load_partial(g, nv), xv, acc[j]);
            }
          }
        }
        #pragma GCC unroll 4
        for (int j = 0; j < KB; ++j) {
          T* o = gw + (k0 + j) * CRS + (c * s.R + r) * s.S + q;
          *o = accumulate ? *o + V::hsum(acc[j]) : V::hsum(acc[j]);
        }
      }
}

}  // namespace conv_detail

template <typename T>
void conv_direct_forward_run(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y,
                             int64_t n, int64_t k0, int kb) {
  using V = std::conditional_t<sizeof(T) == 4, FUSEDOPS_VEC_F32, FUSEDOPS_VEC_F64>;
  switch (kb) {
    case 1: return conv_detail::forward<V, 1>(s, x, w, bias, y, n, k0);
    case 2: return conv_detail::forward<V, 2>(s, x, w, bias, y, n, k0);
    case 3: return conv_detail::forward<V, 3>(s, x, w, bias, y, n, k0);
    default: return conv_detail::forward<V, 4>(s, x, w, bias, y, n, k0);
  }
}

template <typename T>
void conv_direct_weight_run(const Conv2dShape& s, const T* gy, const T* x, T* gw, int64_t n,
                            int64_t k0, int kb, bool accumulate) {
  using V = std::conditional_t<sizeof(T) == 4, FUSEDOPS_VEC_F32, FUSEDOPS_VEC_F64>;
  switch (kb) {
    case 1: return conv_detail::weight<V, 1>(s, gy, x, gw, n, k0, accumulate);
    case 2: return conv_detail::weight<V, 2>(s, gy, x, gw, n, k0, accumulate);
    case 3: return conv_detail::weight<V, 3>(s, gy, x, gw, n, k0, accumulate);
    default: return conv_detail::weight<V, 4>(s, gy, x, gw, n, k0, accumulate);
  }
}

template <typename T>
ConvDirectKernels<T> conv_direct_table() {
  return {&conv_direct_forward_run<T>, &conv_direct_weight_run<T>};
}
template ConvDirectKernels<float> conv_direct_table<float>();
template ConvDirectKernels<double> conv_direct_table<double>();

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
