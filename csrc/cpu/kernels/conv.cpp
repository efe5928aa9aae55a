// Convolution as implicit GEMM over the foundation GEMM, a direct kernel for thin products
// (depthwise, a few input channels), and max pooling. See conv.h.
#include "conv.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "conv_direct.h"
#include "cpu_features.h"
#include "parallel.h"
#include "gemm/gemm.h"
#include "scratch.h"

namespace fusedops::cpu {
namespace {

// ---- the gathered operands ------------------------------------------------------------------

// im2col(x) as a [Cg*R*S, OH*OW] matrix: row kk = (c * R + r) * S + s, column j = oh * OW + ow,
// value x[c, oh*sh - ph + r*dh, ow*sw - pw + s*dw] or 0 in the padding.
template <typename T>
struct Im2col {
  const T* x;  // the group's first input channel of one image
  int64_t H, W, R, S, OW, sh, sw, ph, pw, dh, dw;
  int64_t j_off = 0;  // column j of the operand is output pixel j_off + j
};

// d[0, len) = row[iw0 + t * sw], 0 where the column falls into the padding.
template <typename T>
inline void gather_row(T* d, int64_t dstride, const T* row, int64_t W, int64_t iw0, int64_t sw,
                       int64_t len) {
  if (sw == 1) {
    const int64_t lo = std::clamp<int64_t>(-iw0, 0, len);
    const int64_t hi = std::clamp<int64_t>(W - iw0, lo, len);
    for (int64_t t = 0; t < lo; ++t) d[t * dstride] = T(0);
    const T* src = row + iw0;
    for (int64_t t = lo; t < hi; ++t) d[t * dstride] = src[t];
    for (int64_t t = hi; t < len; ++t) d[t * dstride] = T(0);
  } else {
    for (int64_t t = 0; t < len; ++t) {
      const int64_t iw = iw0 + t * sw;
      d[t * dstride] = iw >= 0 && iw < W ? row[iw] : T(0);
    }
  }
}

// GEMM B-packing callback: the KC x NR micro-panel rows [k0, k0 + kc), columns [j0, j0 + nr)
// of im2col(x). The panel's columns split into runs lying in one output row; each (c, r, s)
// copies one input row segment per run.
template <typename T>
void pack_im2col(const void* ctx, int64_t k0, int64_t kc, int64_t j0, int64_t nr, int NR, T* Bp) {
  const Im2col<T>& a = *static_cast<const Im2col<T>*>(ctx);
  constexpr int kMaxRuns = 128;
  int64_t run_j[kMaxRuns], run_len[kMaxRuns], run_ih[kMaxRuns], run_iw[kMaxRuns];
  int nruns = 0;
  for (int64_t j = 0; j < nr && nruns < kMaxRuns;) {
    const int64_t pix = a.j_off + j0 + j, oh = pix / a.OW, ow = pix % a.OW;
    const int64_t len = std::min(nr - j, a.OW - ow);
    run_j[nruns] = j, run_len[nruns] = len;
    run_ih[nruns] = oh * a.sh - a.ph, run_iw[nruns] = ow * a.sw - a.pw;
    ++nruns;
    j += len;
  }
  const int64_t RS = a.R * a.S;
  int64_t c = k0 / RS, r = (k0 % RS) / a.S, s = k0 % a.S;
  // The common case: the whole panel is one run of a row, stride 1; rows of it that lie inside
  // the image are a copy of NR consecutive elements.
  const bool one_run = nruns == 1 && nr == NR && a.sw == 1;
  for (int64_t k = 0; k < kc; ++k) {
    T* dst = Bp + k * NR;
    if (one_run) {
      const int64_t ih = run_ih[0] + r * a.dh, iw0 = run_iw[0] + s * a.dw;
      if (ih >= 0 && ih < a.H && iw0 >= 0 && iw0 + NR <= a.W) {
        const T* src = a.x + (c * a.H + ih) * a.W + iw0;
        switch (NR) {  // constant sizes: a few vector moves
          case 8: std::memcpy(dst, src, 8 * sizeof(T)); break;
          case 16: std::memcpy(dst, src, 16 * sizeof(T)); break;
          case 32: std::memcpy(dst, src, 32 * sizeof(T)); break;
          default: std::memcpy(dst, src, size_t(NR) * sizeof(T));
        }
        if (++s == a.S) {
          s = 0;
          if (++r == a.R) r = 0, ++c;
        }
        continue;
      }
    }
    const T* xc = a.x + c * a.H * a.W;
    const int64_t roff = r * a.dh, soff = s * a.dw;
    for (int q = 0; q < nruns; ++q) {
      T* d = dst + run_j[q];
      const int64_t len = run_len[q], ih = run_ih[q] + roff;
      if (ih < 0 || ih >= a.H) {
        for (int64_t t = 0; t < len; ++t) d[t] = T(0);
        continue;
      }
      gather_row(d, 1, xc + ih * a.W, a.W, run_iw[q] + soff, a.sw, len);
    }
    for (int64_t j = nr; j < NR; ++j) dst[j] = T(0);
    if (++s == a.S) {
      s = 0;
      if (++r == a.R) r = 0, ++c;
    }
  }
}

// GEMM B-packing callback for im2col(x)^T: rows are pixels, columns (c, r, s).
template <typename T>
void pack_im2col_t(const void* ctx, int64_t k0, int64_t kc, int64_t j0, int64_t nr, int NR,
                   T* Bp) {
  const Im2col<T>& a = *static_cast<const Im2col<T>*>(ctx);
  const int64_t RS = a.R * a.S;
  for (int64_t j = 0; j < nr; ++j) {
    const int64_t kk = j0 + j, c = kk / RS, r = (kk % RS) / a.S, s = kk % a.S;
    const T* xc = a.x + c * a.H * a.W;
    const int64_t roff = r * a.dh - a.ph, soff = s * a.dw - a.pw;
    for (int64_t pix = k0, k = 0; pix < k0 + kc;) {
      const int64_t oh = pix / a.OW, ow = pix % a.OW;
      const int64_t len = std::min(k0 + kc - pix, a.OW - ow);
      T* d = Bp + k * NR + j;
      const int64_t ih = oh * a.sh + roff;
      if (ih < 0 || ih >= a.H) {
        for (int64_t t = 0; t < len; ++t) d[t * NR] = T(0);
      } else {
        gather_row(d, NR, xc + ih * a.W, a.W, ow * a.sw + soff, a.sw, len);
      }
      pix += len, k += len;
    }
  }
  for (int64_t k = 0; k < kc; ++k)
    for (int64_t j = nr; j < NR; ++j) Bp[k * NR + j] = T(0);
}

// ---- shapes and threading -------------------------------------------------------------------

struct Dims {
  int64_t Cg, Kg, HW, P, RS, CRS;
  explicit Dims(const Conv2dShape& s)
      : Cg(s.C / s.groups), Kg(s.K / s.groups), HW(s.H * s.W), P(s.OH * s.OW), RS(s.R * s.S),
        CRS(s.C / s.groups * s.R * s.S) {}
};

// 1x1, stride 1, no padding: im2col(x) is x itself, a strided matrix.
bool pointwise(const Conv2dShape& s) {
  return s.R == 1 && s.S == 1 && s.sh == 1 && s.sw == 1 && s.ph == 0 && s.pw == 0 &&
         s.OH == s.H && s.OW == s.W;
}

// A GEMM whose M (output channels per group) or K (Cg*R*S) is this small wastes most of its
// microkernel tile or its packing: the direct loops do better.
bool thin(const Conv2dShape& s) {
  const Dims d(s);
  return d.Kg < 4 || d.CRS < 8;
}

// The forward runs the SIMD direct kernel (conv_direct.h) for thin products and for short K
// (one to three input channels of a small kernel: the first layer of an image network), where
// the GEMM would spend more on packing than on its microkernel. The weight gradient keeps the
// GEMM there (its K is the pixel count, long): the direct weight kernel measured slower.
bool padded_width(const Conv2dShape& s);

bool direct(const Conv2dShape& s) {
  const Dims d(s);
  return thin(s) || (d.CRS < 32 && !padded_width(s));
}

// Images in parallel (a single-threaded GEMM each) when they split evenly between threads;
// otherwise one image after another, each GEMM parallel inside.
bool images_in_parallel(int64_t N, int nt) { return nt > 1 && (N >= 4 * nt || (N >= nt && N % nt == 0)); }

template <typename T>
Im2col<T> im2col_of(const Conv2dShape& s, const T* x_group) {
  return Im2col<T>{x_group, s.H, s.W, s.R, s.S, s.OW, s.sh, s.sw, s.ph, s.pw, s.dh, s.dw};
}

// Output column range [lo, hi) whose input column ow * sw + off lies in [0, W).
inline void valid_cols(int64_t off, int64_t sw, int64_t W, int64_t OW, int64_t* lo, int64_t* hi) {
  int64_t l = off >= 0 ? 0 : (-off + sw - 1) / sw;
  int64_t h = W - off <= 0 ? 0 : (W - off + sw - 1) / sw;
  *lo = std::min(l, OW);
  *hi = std::clamp<int64_t>(h, *lo, OW);
}

// dst[0, n) = src[0, n): rows of a few dozen elements, copied inline (a library call per row
// costs as much as the copy).
template <typename T>
inline void copy_row(T* __restrict dst, const T* __restrict src, int64_t n) {
  for (int64_t t = 0; t < n; ++t) dst[t] = src[t];
}

// ---- forward --------------------------------------------------------------------------------

// Pixel columns per GEMM call: the packed im2col panel (Cg*R*S x chunk) stays in L2 instead
// of streaming a whole image's worth through L3. The panel takes kPanelL2Share of the core's
// L2 (cpu_info(), as the GEMM's blocks do; 192 KB of a 512 KB L2), the rest left to the
// GEMM's packed A block and the output rows.
constexpr double kPanelL2Share = 0.375;

int64_t pixel_chunk(int64_t CRS, int64_t P, int64_t elem) {
  const int64_t kc = std::min<int64_t>(CRS, 512);
  const int64_t budget = int64_t(double(cpu_info().l2) * kPanelL2Share);
  const int64_t c = budget / (kc * elem) / 48 * 48;
  return std::clamp<int64_t>(c, 96, std::max<int64_t>(P, 96));
}

template <typename T>
void forward_image_gemm(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y,
                        int64_t n) {
  const Dims d(s);
  const int64_t chunk = pointwise(s) ? d.P : pixel_chunk(d.CRS, d.P, sizeof(T));
  for (int64_t g = 0; g < s.groups; ++g) {
    const T* xg = x + (n * s.C + g * d.Cg) * d.HW;
    for (int64_t j0 = 0; j0 < d.P; j0 += chunk) {
      Im2col<T> ctx = im2col_of(s, xg);
      ctx.j_off = j0;
      GemmArgs<T> a;
      a.M = d.Kg, a.N = std::min(chunk, d.P - j0), a.K = d.CRS;
      a.A = w + g * d.Kg * d.CRS, a.rsa = d.CRS, a.csa = 1;
      if (pointwise(s)) {
        a.B = xg, a.rsb = d.HW, a.csb = 1;
      } else {
        a.pack_b = &pack_im2col<T>;
        a.pack_b_ctx = &ctx;
      }
      a.C = y + (n * s.K + g * d.Kg) * d.P + j0, a.ldc = d.P;
      if (bias) a.bias = bias + g * d.Kg, a.bias_mode = BiasMode::per_row;
      gemm<T>(a);
    }
  }
}

// Stride 1 (not 1x1): the padded-width implicit GEMM. The group's input is copied once into a
// zero-padded [Cg, Hp, Wp] buffer; output position p = oh * Wp + ow then finds tap (c, r, q) at
// xp[c * Hp * Wp + r * dh * Wp + q * dw + p], so every tap is a run of consecutive positions and
// the GEMM reads its B rows in place (gemm_offset_b): no im2col packing, the weights packed
// once. Columns OW..Wp-1 of each output row are computed and dropped when the rows are copied
// out of the [Kg, (OH - 1) * Wp + OW] result.
bool padded_width(const Conv2dShape& s) { return s.sh == 1 && s.sw == 1 && !pointwise(s); }

// Buffers of the padded-width path, per call and thread (a batch is sized to about 1 MB of
// input and of output); from the scratch cache, so a call reuses the pages of the one before.
template <typename T>
struct PaddedScratch {
  ScratchVec<T> xp, out;
  ScratchVec<int64_t> off;
};

// Sizes of the padded image and of the padded-width positions: NP = (OH - 1) * Wp + OW.
struct PaddedDims {
  int64_t Hp, Wp, plane, NP;
  explicit PaddedDims(const Conv2dShape& s)
      : Hp(s.H + 2 * s.ph), Wp(s.W + 2 * s.pw), plane(Hp * Wp), NP((s.OH - 1) * Wp + s.OW) {}
};

// off[kk] = where tap kk = (c, r, q) starts in the padded image: c * plane + r * dh * Wp + q * dw.
inline void tap_offsets(const Conv2dShape& s, ScratchVec<int64_t>& off) {
  const Dims d(s);
  const PaddedDims pd(s);
  off.resize(size_t(d.CRS));
  for (int64_t kk = 0; kk < d.CRS; ++kk) {
    const int64_t c = kk / d.RS, r = (kk % d.RS) / s.S, q = kk % s.S;
    off[size_t(kk)] = c * pd.plane + r * s.dh * pd.Wp + q * s.dw;
  }
}

// Sizes sc for the shape (`images` padded images; the padded-width output too when `out`)
// and fills the tap offsets.
template <typename T>
void padded_prepare(const Conv2dShape& s, PaddedScratch<T>& sc, int64_t images = 1, bool out = true) {
  const Dims d(s);
  const PaddedDims pd(s);
  sc.xp.resize(size_t(images * d.Cg * pd.plane + kGemmOffsetSlack));
  if (out) sc.out.resize(size_t(images * d.Kg * pd.NP));
  tap_offsets(s, sc.off);
  std::fill(sc.xp.end() - kGemmOffsetSlack, sc.xp.end(), T(0));
}

// Slot `slot` of sc.xp = group g of image n, zero-padded.
template <typename T>
void padded_image(const Conv2dShape& s, const T* x, int64_t n, int64_t g, PaddedScratch<T>& sc, int64_t slot = 0) {
  const Dims d(s);
  const PaddedDims pd(s);
  const T* xg = x + (n * s.C + g * d.Cg) * d.HW;
  for (int64_t c = 0; c < d.Cg; ++c) {
    T* dst = sc.xp.data() + (slot * d.Cg + c) * pd.plane;
    std::fill(dst, dst + s.ph * pd.Wp, T(0));
    for (int64_t h = 0; h < s.H; ++h) {
      T* row = dst + (s.ph + h) * pd.Wp;
      std::fill(row, row + s.pw, T(0));
      copy_row(row + s.pw, xg + (c * s.H + h) * s.W, s.W);
      std::fill(row + s.pw + s.W, row + pd.Wp, T(0));
    }
    std::fill(dst + (s.ph + s.H) * pd.Wp, dst + pd.plane, T(0));
  }
}

// Images [n0, n0 + count): one batched GEMM per group (the weights packed once for them).
template <typename T>
void forward_images_padded(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y, int64_t n0,
                           int64_t count, int max_threads, PaddedScratch<T>& sc) {
  const Dims d(s);
  const PaddedDims pd(s);
  for (int64_t g = 0; g < s.groups; ++g) {
    for (int64_t i = 0; i < count; ++i) padded_image(s, x, n0 + i, g, sc, i);
    GemmArgs<T> a;
    a.K = d.CRS;
    a.A = w + g * d.Kg * d.CRS, a.rsa = d.CRS, a.csa = 1;
    if (bias) a.bias = bias + g * d.Kg, a.bias_mode = BiasMode::per_row;
    a.max_threads = max_threads;
    if (d.CRS < 64) {
      // Short K (an image's few channels): writing the output is most of the work, so each
      // output row is a product of its own, straight into y (a batch over rows), at the cost
      // of partial tiles at the row ends.
      a.M = d.Kg, a.N = s.OW, a.ldc = d.P;
      for (int64_t i = 0; i < count; ++i) {
        a.C = y + ((n0 + i) * s.K + g * d.Kg) * d.P;
        gemm_offset_b<T>(a, sc.xp.data() + i * d.Cg * pd.plane, sc.off.data(), s.OH, pd.Wp, s.OW);
      }
      continue;
    }
    a.M = d.Kg, a.N = pd.NP;
    a.C = sc.out.data(), a.ldc = pd.NP;
    gemm_offset_b<T>(a, sc.xp.data(), sc.off.data(), count, d.Cg * pd.plane, d.Kg * pd.NP);
    for (int64_t i = 0; i < count; ++i) {
      T* yg = y + ((n0 + i) * s.K + g * d.Kg) * d.P;
      const T* o = sc.out.data() + i * d.Kg * pd.NP;
      for (int64_t k = 0; k < d.Kg; ++k)
        for (int64_t oh = 0; oh < s.OH; ++oh)
          copy_row(yg + k * d.P + oh * s.OW, o + k * pd.NP + oh * pd.Wp, s.OW);
    }
  }
}

// Images per batched GEMM: small images go together (up to ~1 MB of padded input), so the
// weights are packed once for several and the per-call costs are shared.
inline int64_t padded_batch(const Conv2dShape& s, int64_t images) {
  const Dims d(s);
  const PaddedDims pd(s);
  const int64_t per_image = std::max<int64_t>(std::max(d.Cg * pd.plane, d.Kg * pd.NP), 1);
  return std::clamp<int64_t>((int64_t(256) << 10) / per_image, 1, std::max<int64_t>(images, 1));
}

// Weight gradient of image n, transposed: acc[g][CRS, Kg] (= or += by `accumulate`) the taps of
// the padded image times gy: gemm_offset_a, each tap read in place over the output rows (runs
// of OW every Wp), gy packed straight from its dense rows.
template <typename T>
void weight_image_padded(const Conv2dShape& s, const T* gy, const T* x, T* acc, int64_t n, bool accumulate,
                         int max_threads, PaddedScratch<T>& sc) {
  const Dims d(s);
  const PaddedDims pd(s);
  // Unpadded, the image is its own padded image (A is read exactly, never past its last tap).
  const bool in_place = s.ph == 0 && s.pw == 0;
  for (int64_t g = 0; g < s.groups; ++g) {
    if (!in_place) padded_image(s, x, n, g, sc);
    const T* X = in_place ? x + (n * s.C + g * d.Cg) * d.HW : sc.xp.data();
    GemmArgs<T> a;
    a.M = d.CRS, a.N = d.Kg, a.K = d.P;
    a.B = gy + (n * s.K + g * d.Kg) * d.P, a.rsb = 1, a.csb = d.P;  // B(p, k) = gy[k, p]
    a.beta = accumulate ? T(1) : T(0);
    a.C = acc + g * d.CRS * d.Kg, a.ldc = d.Kg;
    a.max_threads = max_threads;
    gemm_offset_a<T>(a, X, sc.off.data(), s.OW, pd.Wp);
  }
}

}  // namespace

template <typename T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  const Dims d(s);
  if (s.N == 0 || s.K == 0 || d.P == 0) return;
  const int nt = pool_threads();
  if (direct(s)) {
    // Tasks: (image, group, block of up to four output channels), each a few output planes.
    const int64_t kbs = (d.Kg + 3) / 4, tasks = s.N * s.groups * kbs;
    const double flops = 2.0 * double(s.N * s.K) * double(d.P) * double(d.CRS);
    const int use = flops < 1e6 ? 1 : nt;
#pragma omp parallel for num_threads(use) schedule(dynamic, 1) if (use > 1)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t n = t / (s.groups * kbs), g = t / kbs % s.groups, b = t % kbs;
      const int64_t k0 = g * d.Kg + 4 * b;
      conv_direct_kernels<T>().conv_direct_forward(s, x, w, bias, y, n, k0, int(std::min<int64_t>(4, d.Kg - 4 * b)));
    }
    return;
  }
  if (padded_width(s)) {
    if (images_in_parallel(s.N, nt)) {
      const int64_t per = padded_batch(s, s.N / nt), chunks = (s.N + per - 1) / per;
#pragma omp parallel num_threads(nt)
      {
        PaddedScratch<T> sc;
        padded_prepare(s, sc, per);
#pragma omp for schedule(dynamic, 1)
        for (int64_t q = 0; q < chunks; ++q)
          forward_images_padded(s, x, w, bias, y, q * per, std::min(per, s.N - q * per), 1, sc);
      }
    } else {
      const int64_t per = padded_batch(s, s.N);
      PaddedScratch<T> sc;
      padded_prepare(s, sc, per);
      for (int64_t n = 0; n < s.N; n += per) forward_images_padded(s, x, w, bias, y, n, std::min(per, s.N - n), 0, sc);
    }
    return;
  }
  if (images_in_parallel(s.N, nt)) {
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t n = 0; n < s.N; ++n) forward_image_gemm(s, x, w, bias, y, n);
  } else {
    for (int64_t n = 0; n < s.N; ++n) forward_image_gemm(s, x, w, bias, y, n);
  }
}

// ---- backward: bias -------------------------------------------------------------------------

template <typename T>
void conv2d_backward_bias(const Conv2dShape& s, const T* gy, T* gb) {
  const Dims d(s);
  const int nt = pool_threads();
  const int use = double(s.N) * double(s.K) * double(d.P) < 1e5 ? 1 : nt;
#pragma omp parallel for num_threads(use) schedule(static) if (use > 1)
  for (int64_t k = 0; k < s.K; ++k) {
    double acc = 0;  // (fp32 sums of up to N * P terms: accumulate wide)
    for (int64_t n = 0; n < s.N; ++n) {
      const T* p = gy + (n * s.K + k) * d.P;
      T lanes[8] = {};  // independent lanes: the compiler vectorizes the sum
      int64_t i = 0;
      for (; i + 8 <= d.P; i += 8)
        for (int t = 0; t < 8; ++t) lanes[t] += p[i + t];
      T part = T(0);
      for (; i < d.P; ++i) part += p[i];
      for (int t = 0; t < 8; ++t) part += lanes[t];
      acc += double(part);
    }
    gb[k] = T(acc);
  }
}

// ---- backward: weight -----------------------------------------------------------------------

namespace {

// dst[K, Cg*R*S] (= or += by beta) gy[n] @ im2col(x[n])^T, per group.
template <typename T>
void weight_image_gemm(const Conv2dShape& s, const T* gy, const T* x, T* dst, int64_t n, T beta) {
  const Dims d(s);
  for (int64_t g = 0; g < s.groups; ++g) {
    const T* xg = x + (n * s.C + g * d.Cg) * d.HW;
    const Im2col<T> ctx = im2col_of(s, xg);
    GemmArgs<T> a;
    a.M = d.Kg, a.N = d.CRS, a.K = d.P;
    a.A = gy + (n * s.K + g * d.Kg) * d.P, a.rsa = d.P, a.csa = 1;
    if (pointwise(s)) {
      a.B = xg, a.rsb = 1, a.csb = d.HW;
    } else {
      a.pack_b = &pack_im2col_t<T>;
      a.pack_b_ctx = &ctx;
    }
    a.beta = beta;
    a.C = dst + g * d.Kg * d.CRS, a.ldc = d.CRS;
    gemm<T>(a);
  }
}

}  // namespace

// Images summed in groups fixed by the batch and the weight's size (never by the thread
// count): each group into its own buffer, the buffers then added in group order, so the
// gradient has the same bits for any number of threads. Up to 16 groups, their buffers at
// most 16 MB together; one group (every image in turn, each product parallel inside) when a
// weight is too large for two.
inline int64_t image_groups(int64_t N, int64_t weight_bytes) {
  const int64_t by_memory = (int64_t(16) << 20) / std::max<int64_t>(weight_bytes, 1);
  return std::clamp<int64_t>(std::min<int64_t>(N, 16), 1, std::max<int64_t>(by_memory, 1));
}

template <typename T>
void conv2d_backward_weight(const Conv2dShape& s, const T* gy, const T* x, T* gw) {
  const Dims d(s);
  const int64_t wsize = s.K * d.CRS;
  if (wsize == 0) return;
  if (s.N == 0 || d.P == 0) {
    std::fill(gw, gw + wsize, T(0));
    return;
  }
  const int nt = pool_threads();
  if (thin(s)) {
    // Blocks of up to four output channels of one group in parallel, each over the batch in
    // order: no sums between threads.
    const double flops = 2.0 * double(s.N) * double(s.K) * double(d.P) * double(d.CRS);
    const int use = flops < 1e6 ? 1 : nt;
    const int64_t kbs = (d.Kg + 3) / 4, blocks = s.groups * kbs;
#pragma omp parallel for num_threads(use) schedule(dynamic, 1) if (use > 1)
    for (int64_t t = 0; t < blocks; ++t) {
      const int64_t k0 = t / kbs * d.Kg + 4 * (t % kbs);
      const int kb = int(std::min<int64_t>(4, d.Kg - 4 * (t % kbs)));
      for (int64_t n = 0; n < s.N; ++n) conv_direct_kernels<T>().conv_direct_weight(s, gy, x, gw, n, k0, kb, n > 0);
    }
    return;
  }
  const bool padded = padded_width(s);
  const int64_t G = image_groups(s.N, wsize * int64_t(sizeof(T)));
  // The padded-width path sums into transposed [groups][CRS][Kg] buffers; the other writes
  // gw's layout, and a single group sums straight into gw.
  std::vector<T> bufs(padded || G > 1 ? size_t(G) * size_t(wsize) : 0);
  auto sum_group = [&](int64_t grp, int max_threads) {
    T* acc = bufs.empty() ? gw : bufs.data() + size_t(grp) * size_t(wsize);
    const int64_t n0 = s.N * grp / G, n1 = s.N * (grp + 1) / G;
    if (padded) {
      PaddedScratch<T> sc;
      padded_prepare(s, sc, 1, false);  // (the weight gradient reads gy where it lies)
      for (int64_t n = n0; n < n1; ++n) weight_image_padded(s, gy, x, acc, n, n > n0, max_threads, sc);
    } else {
      for (int64_t n = n0; n < n1; ++n) weight_image_gemm(s, gy, x, acc, n, n > n0 ? T(1) : T(0));
    }
  };
  if (G == 1) {
    sum_group(0, 0);  // the products parallel inside
  } else {
    const int use = int(std::min<int64_t>(nt, G));
#pragma omp parallel for num_threads(use) schedule(dynamic, 1) if (use > 1)
    for (int64_t grp = 0; grp < G; ++grp) sum_group(grp, 1);
  }
  if (bufs.empty()) return;
  const int use = double(G) * double(wsize) < 65536 ? 1 : nt;
#pragma omp parallel for num_threads(use) schedule(static) if (use > 1)
  for (int64_t i = 0; i < wsize; ++i) {
    const int64_t src = padded ? (i / (d.Kg * d.CRS) * d.CRS + i % d.CRS) * d.Kg + i / d.CRS % d.Kg : i;
    T sum = bufs[size_t(src)];
    for (int64_t u = 1; u < G; ++u) sum += bufs[size_t(u) * size_t(wsize) + size_t(src)];
    gw[i] = sum;
  }
}

// ---- backward: input ------------------------------------------------------------------------

namespace {

// Stride 1 with padding at most the dilated kernel's reach: the input gradient is the
// convolution of gy (padded by dilation * (R - 1) - padding) with the flipped weight whose
// input and output channels are swapped.
bool transposed_as_forward(const Conv2dShape& s) {
  return s.sh == 1 && s.sw == 1 && s.ph <= s.dh * (s.R - 1) && s.pw <= s.dw * (s.S - 1);
}

// Image n, by direct loops over the planes (n, c): gx[c] += w[k, c] (*) gy[k] transposed.
template <typename T>
void input_plane_direct(const Conv2dShape& s, const T* gy, const T* w, T* gx, int64_t n,
                        int64_t c) {
  const Dims d(s);
  const int64_t g = c / d.Cg, cl = c % d.Cg;
  T* gp = gx + (n * s.C + c) * d.HW;
  std::fill(gp, gp + d.HW, T(0));
  for (int64_t k = g * d.Kg; k < (g + 1) * d.Kg; ++k) {
    const T* gyk = gy + (n * s.K + k) * d.P;
    const T* wk = w + k * d.CRS + cl * d.RS;
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t q = 0; q < s.S; ++q) {
        const T wv = wk[r * s.S + q];
        const int64_t off = q * s.dw - s.pw;
        int64_t l, h;
        valid_cols(off, s.sw, s.W, s.OW, &l, &h);
        for (int64_t oh = 0; oh < s.OH; ++oh) {
          const int64_t ih = oh * s.sh - s.ph + r * s.dh;
          if (ih < 0 || ih >= s.H) continue;
          T* xr = gp + ih * s.W;
          const T* gr = gyk + oh * s.OW;
          if (s.sw == 1) {
            T* dst = xr + off;
            for (int64_t ow = l; ow < h; ++ow) dst[ow] += wv * gr[ow];
          } else {
            for (int64_t ow = l; ow < h; ++ow) xr[ow * s.sw + off] += wv * gr[ow];
          }
        }
      }
  }
}

// Image n by GEMM + col2im: columns [Cg*R*S, pt] = w_g^T @ gy[n, g, :, p0:p0+pt] for pixel
// tiles small enough to stay in L2, each scatter-added into gx.
template <typename T>
void input_image_gemm(const Conv2dShape& s, const T* gy, const T* w, T* gx, int64_t n,
                      std::vector<T>& buf) {
  const Dims d(s);
  std::fill(gx + n * s.C * d.HW, gx + (n + 1) * s.C * d.HW, T(0));
  const int64_t pt = std::clamp<int64_t>((int64_t(256) << 10) / int64_t(sizeof(T)) /
                                             std::max<int64_t>(d.CRS, 1) / 16 * 16,
                                         16, std::max<int64_t>(d.P, 16));
  if (buf.size() < size_t(d.CRS * pt)) buf.resize(size_t(d.CRS * pt));
  T* cols = buf.data();
  for (int64_t g = 0; g < s.groups; ++g) {
    T* gxg = gx + (n * s.C + g * d.Cg) * d.HW;
    for (int64_t p0 = 0; p0 < d.P; p0 += pt) {
      const int64_t np = std::min(pt, d.P - p0);
      GemmArgs<T> a;
      a.M = d.CRS, a.N = np, a.K = d.Kg;
      a.A = w + g * d.Kg * d.CRS, a.rsa = 1, a.csa = d.CRS;
      a.B = gy + (n * s.K + g * d.Kg) * d.P + p0, a.rsb = d.P, a.csb = 1;
      a.C = cols, a.ldc = np;
      gemm<T>(a);
      for (int64_t kk = 0; kk < d.CRS; ++kk) {
        const int64_t c = kk / d.RS, r = (kk % d.RS) / s.S, q = kk % s.S;
        T* xc = gxg + c * d.HW;
        const T* col = cols + kk * np;
        for (int64_t j = 0; j < np;) {
          const int64_t pix = p0 + j, oh = pix / s.OW, ow = pix % s.OW;
          const int64_t len = std::min(np - j, s.OW - ow);
          const int64_t ih = oh * s.sh - s.ph + r * s.dh;
          if (ih >= 0 && ih < s.H) {
            T* xr = xc + ih * s.W;
            for (int64_t t = 0; t < len; ++t) {
              const int64_t iw = (ow + t) * s.sw - s.pw + q * s.dw;
              if (iw >= 0 && iw < s.W) xr[iw] += col[j + t];
            }
          }
          j += len;
        }
      }
    }
  }
}

// Stride 1: the input gradient as the adjoint of the padded-width forward. Each image's gy goes
// into a [Kg, NPs] buffer in padded-width layout (positions oh * Wp + ow, zero in the columns
// OW..Wp-1), and gemm_offset_c adds, for every tap (c, r, q) of the forward's offsets,
// sum_k w[k, c, r, q] gy_pw[k][p] into the padded gradient plane c at p + off(r, q): the
// col2im scatter done by the GEMM's stores, every product a useful one (the transposed
// convolution multiplies the zeros of gy's full padding). Without padding the padded
// gradient is gx itself; otherwise its interior is copied out.
template <typename T>
struct AdjointScratch {  // per call, as PaddedScratch
  ScratchVec<T> gyp, gxp;
  ScratchVec<int64_t> boff, coff;
};

template <typename T>
void input_adjoint(const Conv2dShape& s, const T* gy, const T* w, T* gx) {
  const Dims d(s);
  const PaddedDims pd(s);
  const bool unpadded = s.ph == 0 && s.pw == 0;
  const int64_t nps = (pd.NP + 15) / 16 * 16;  // row stride of gy_pw
  const int nt = pool_threads();
  const int64_t per_image = std::max<int64_t>(d.Kg * nps + d.Cg * pd.plane, 1);
  // Images per product: about 1 MB of gy and gradient (the product splits its rows between
  // threads too, so one large image is enough work).
  const int64_t per = std::clamp<int64_t>((int64_t(1) << 20) / int64_t(sizeof(T)) / per_image, 1, s.N);
  AdjointScratch<T> sc;
  // (Past the rows only vectors the GEMM drops are read: the slack needs no zeros.)
  sc.gyp.resize(size_t(per * d.Kg * nps + kGemmOffsetSlack));
  if (!unpadded) sc.gxp.resize(size_t(per * d.Cg * pd.plane));
  sc.boff.resize(size_t(d.Kg));
  for (int64_t k = 0; k < d.Kg; ++k) sc.boff[size_t(k)] = k * nps;
  tap_offsets(s, sc.coff);  // the rows of C: the forward's taps
  for (int64_t n0 = 0; n0 < s.N; n0 += per) {
    const int64_t count = std::min(per, s.N - n0);
    for (int64_t g = 0; g < s.groups; ++g) {
      // gy of the chunk in padded-width layout, zero in the dropped columns.
      const int64_t tasks = count * d.Kg;
#pragma omp parallel for num_threads(nt) if (nt > 1 && tasks * d.P > 32768) schedule(static)
      for (int64_t t = 0; t < tasks; ++t) {
        const int64_t i = t / d.Kg, k = t % d.Kg;
        const T* src = gy + ((n0 + i) * s.K + g * d.Kg + k) * d.P;
        T* dst = sc.gyp.data() + t * nps;
        for (int64_t oh = 0; oh < s.OH; ++oh) {
          copy_row(dst + oh * pd.Wp, src + oh * s.OW, s.OW);
          if (oh + 1 < s.OH) std::fill(dst + oh * pd.Wp + s.OW, dst + (oh + 1) * pd.Wp, T(0));
        }
      }
      T* Y;
      int64_t ys;
      if (unpadded) {
        Y = gx + (n0 * s.C + g * d.Cg) * d.HW, ys = s.C * d.HW;
        for (int64_t i = 0; i < count; ++i) std::fill(Y + i * ys, Y + i * ys + d.Cg * d.HW, T(0));
      } else {
        Y = sc.gxp.data(), ys = d.Cg * pd.plane;
        std::fill(sc.gxp.begin(), sc.gxp.begin() + count * ys, T(0));
      }
      GemmArgs<T> a;
      a.M = d.CRS, a.N = pd.NP, a.K = d.Kg;
      a.A = w + g * d.Kg * d.CRS, a.rsa = 1, a.csa = d.CRS;
      gemm_offset_c<T>(a, sc.gyp.data(), sc.boff.data(), Y, sc.coff.data(), d.RS, count, d.Kg * nps, ys);
      if (unpadded) continue;
      for (int64_t i = 0; i < count; ++i)
        for (int64_t c = 0; c < d.Cg; ++c) {
          const T* src = sc.gxp.data() + (i * d.Cg + c) * pd.plane + s.ph * pd.Wp + s.pw;
          T* dst = gx + ((n0 + i) * s.C + g * d.Cg + c) * d.HW;
          for (int64_t h = 0; h < s.H; ++h) copy_row(dst + h * s.W, src + h * pd.Wp, s.W);
        }
    }
  }
}

}  // namespace

template <typename T>
void conv2d_backward_input(const Conv2dShape& s, const T* gy, const T* w, T* gx) {
  const Dims d(s);
  if (s.N == 0 || s.C == 0 || d.HW == 0) return;
  const int nt = pool_threads();
  if (thin(s) || s.K == 0 || d.P == 0) {
    const int64_t planes = s.N * s.C;
    const double flops = 2.0 * double(planes) * double(d.Kg) * double(d.P) * double(d.RS);
    const int use = flops < 1e6 ? 1 : nt;
#pragma omp parallel for num_threads(use) schedule(dynamic, 4) if (use > 1)
    for (int64_t p = 0; p < planes; ++p) input_plane_direct(s, gy, w, gx, p / s.C, p % s.C);
    return;
  }
  // Stride 1: the transposed convolution as a forward (the padded-width implicit GEMM) when
  // that GEMM has rows enough (Cg input channels) and gy's full padding adds little; otherwise
  // the adjoint of the padded-width forward, whose GEMM scatters its own columns.
  const PaddedDims pd(s);
  const int64_t np_transposed = (s.H - 1) * (s.OW + 2 * (s.dw * (s.S - 1) - s.pw)) + s.W;
  const bool transposed = transposed_as_forward(s) && d.Cg >= 8 && double(np_transposed) <= 1.15 * double(pd.NP);
  if (s.sh == 1 && s.sw == 1 && !transposed) return input_adjoint(s, gy, w, gx);
  if (transposed) {
    // wt[C, Kg, R, S]: wt[g*Cg + c, k, R-1-r, S-1-q] = w[g*Kg + k, c, r, q].
    std::vector<T> wt(size_t(s.K) * size_t(d.CRS));
    for (int64_t g = 0; g < s.groups; ++g)
      for (int64_t k = 0; k < d.Kg; ++k)
        for (int64_t c = 0; c < d.Cg; ++c)
          for (int64_t r = 0; r < s.R; ++r)
            for (int64_t q = 0; q < s.S; ++q)
              wt[(((g * d.Cg + c) * d.Kg + k) * s.R + (s.R - 1 - r)) * s.S + (s.S - 1 - q)] =
                  w[(((g * d.Kg + k) * d.Cg + c) * s.R + r) * s.S + q];
    Conv2dShape t = s;
    t.C = s.K, t.H = s.OH, t.W = s.OW;
    t.K = s.C, t.OH = s.H, t.OW = s.W;
    t.ph = s.dh * (s.R - 1) - s.ph, t.pw = s.dw * (s.S - 1) - s.pw;
    return conv2d_forward<T>(t, gy, wt.data(), nullptr, gx);
  }
  if (images_in_parallel(s.N, nt)) {
#pragma omp parallel num_threads(nt)
    {
      std::vector<T> buf;
#pragma omp for schedule(dynamic, 1)
      for (int64_t n = 0; n < s.N; ++n) input_image_gemm(s, gy, w, gx, n, buf);
    }
  } else {
    std::vector<T> buf;
    for (int64_t n = 0; n < s.N; ++n) input_image_gemm(s, gy, w, gx, n, buf);
  }
}

// ---- max pooling ----------------------------------------------------------------------------

// Elements as the pooling compares and sums them: bf16 widened to fp32 (exact).
inline float pool_value(float v) { return v; }
inline double pool_value(double v) { return v; }
inline float pool_value(bf16_t v) { return bf16_to_float(v); }

template <typename T>
void max_pool2d_forward(const Pool2dShape& s, const T* x, T* y, int64_t* idx) {
  using A = compute_t<T>;
  const int64_t HW = s.H * s.W, P = s.OH * s.OW;
  if (s.planes == 0 || P == 0) return;
  const int nt = pool_threads();
  const int use = double(s.planes) * double(P) * double(s.kh * s.kw) < 2e5 ? 1 : nt;
#pragma omp parallel for num_threads(use) schedule(static) if (use > 1)
  for (int64_t p = 0; p < s.planes; ++p) {
    const T* xp = x + p * HW;
    T* yp = y + p * P;
    int64_t* ip = idx + p * P;
    for (int64_t oh = 0; oh < s.OH; ++oh) {
      int64_t h0 = oh * s.sh - s.ph;
      const int64_t h1 = std::min(h0 + (s.kh - 1) * s.dh + 1, s.H);
      while (h0 < 0) h0 += s.dh;
      for (int64_t ow = 0; ow < s.OW; ++ow) {
        int64_t w0 = ow * s.sw - s.pw;
        const int64_t w1 = std::min(w0 + (s.kw - 1) * s.dw + 1, s.W);
        while (w0 < 0) w0 += s.dw;
        int64_t best = h0 * s.W + w0;
        A m = -std::numeric_limits<A>::infinity();
        for (int64_t ih = h0; ih < h1; ih += s.dh)
          for (int64_t iw = w0; iw < w1; iw += s.dw) {
            const A v = pool_value(xp[ih * s.W + iw]);
            if (v > m || std::isnan(v)) m = v, best = ih * s.W + iw;
          }
        if constexpr (std::is_same_v<T, bf16_t>) yp[oh * s.OW + ow] = float_to_bf16(m);  // exact
        else yp[oh * s.OW + ow] = m;
        ip[oh * s.OW + ow] = best;
      }
    }
  }
}

// Overlapping windows add into one input element: bf16 gradients are summed per plane in fp32
// and rounded once.
template <typename T>
void max_pool2d_backward(const Pool2dShape& s, const T* gy, const int64_t* idx, T* gx) {
  const int64_t HW = s.H * s.W, P = s.OH * s.OW;
  if (s.planes == 0 || HW == 0) return;
  const int nt = pool_threads();
  const int use = double(s.planes) * double(HW + P) < 2e5 ? 1 : nt;
#pragma omp parallel num_threads(use) if (use > 1)
  {
    std::vector<float> acc(std::is_same_v<T, bf16_t> ? size_t(HW) : 0);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < s.planes; ++p) {
      T* gp = gx + p * HW;
      const T* g = gy + p * P;
      const int64_t* ip = idx + p * P;
      if constexpr (std::is_same_v<T, bf16_t>) {
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t o = 0; o < P; ++o) acc[size_t(ip[o])] += bf16_to_float(g[o]);
        for (int64_t i = 0; i < HW; ++i) gp[i] = float_to_bf16(acc[size_t(i)]);
      } else {
        std::fill(gp, gp + HW, T(0));
        for (int64_t o = 0; o < P; ++o) gp[ip[o]] += g[o];
      }
    }
  }
}

#define FUSEDOPS_INSTANTIATE(T)                                                              \
  template void conv2d_forward<T>(const Conv2dShape&, const T*, const T*, const T*, T*);    \
  template void conv2d_backward_input<T>(const Conv2dShape&, const T*, const T*, T*);       \
  template void conv2d_backward_weight<T>(const Conv2dShape&, const T*, const T*, T*);      \
  template void conv2d_backward_bias<T>(const Conv2dShape&, const T*, T*);                  \
  template void max_pool2d_forward<T>(const Pool2dShape&, const T*, T*, int64_t*);          \
  template void max_pool2d_backward<T>(const Pool2dShape&, const T*, const int64_t*, T*);
FUSEDOPS_INSTANTIATE(float)
FUSEDOPS_INSTANTIATE(double)
#undef FUSEDOPS_INSTANTIATE
template void max_pool2d_forward<bf16_t>(const Pool2dShape&, const bf16_t*, bf16_t*, int64_t*);
template void max_pool2d_backward<bf16_t>(const Pool2dShape&, const bf16_t*, const int64_t*, bf16_t*);

}  // namespace fusedops::cpu
