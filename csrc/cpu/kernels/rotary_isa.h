// Rotary embedding written once over a register trait V (vec.h), instantiated per instruction
// set by rotary_<isa>.cpp (see vec/isa_generic.h for the scheme).
//
// One pass per row: W features of each half, with their cos and sin, loaded side by side. Each
// output is one fused multiply-add over the other product, rounded: x1 c1 - (x2 s1) (the
// compiler would contract the two products and the add anyway; written out, every backend
// rounds alike: the CUDA kernel does the same, so the simulator's bits are these; the portable
// path's fmadd is not fused). Rows are memory-bound: x and y once, cos and sin per row (from
// L1/L2 across the heads of a batch row).
#pragma once
// (standard headers come from vec/isa_std.h, before the instruction set is selected)

namespace fusedops::cpu::FUSEDOPS_ISA_NS {
namespace rotary_detail {

constexpr double kMinPerThread = 16384;  // elements per thread below which one thread runs

template <class V, class S>
inline void rotate_row(int64_t D, int64_t R, const S* x, S* y, const S* c, const S* s, bool inverse) {
  using Rg = typename V::R;
  constexpr int W = V::W;
  const int64_t h = R / 2;
  for (int64_t j = 0; j < h; j += W) {
    const int64_t n = std::min<int64_t>(W, h - j);
    const Rg x1 = ld_n<V>(x + j, n), x2 = ld_n<V>(x + h + j, n);
    const Rg c1 = ld_n<V>(c + j, n), c2 = ld_n<V>(c + h + j, n);
    const Rg s1 = ld_n<V>(s + j, n), s2 = ld_n<V>(s + h + j, n);
    Rg y1, y2;
    if (!inverse) {
      y1 = V::fmadd(x1, c1, V::sub(V::zero(), V::mul(x2, s1)));
      y2 = V::fmadd(x2, c2, V::mul(x1, s2));
    } else {
      y1 = V::fmadd(x1, c1, V::mul(x2, s2));
      y2 = V::fmadd(x2, c2, V::sub(V::zero(), V::mul(x1, s1)));
    }
    st_n<V>(y + j, y1, n);
    st_n<V>(y + h + j, y2, n);
  }
  if (y != x && R < D) std::memcpy(y + R, x + R, sizeof(S) * size_t(D - R));
}

}  // namespace rotary_detail

template <class V, class S>
void rotary(const RotaryGeometry& g, const S* x, S* y, const S* cos, const S* sin, bool inverse) {
  const int64_t rows = g.B * g.H * g.T;
  if (rows <= 0 || g.D <= 0) return;
  const int nt = threads_for_work(double(rows) * double(g.D), rotary_detail::kMinPerThread);
  parallel_items(nt, rows, [&](int64_t r) {
    const int64_t b = r / (g.H * g.T), hd = (r / g.T) % g.H, t = r % g.T;
    rotary_detail::rotate_row<V>(g.D, g.R, x + b * g.xb + hd * g.xh + t * g.xt,
                                 y + b * g.yb + hd * g.yh + t * g.yt, cos + b * g.cb + t * g.ct,
                                 sin + b * g.sb + t * g.st, inverse);
  });
}

template <typename T>
void rotary_run(const RotaryGeometry& g, const T* x, T* y, const T* cos, const T* sin, bool inverse) {
  rotary<std::conditional_t<sizeof(compute_t<T>) == 4, FUSEDOPS_VEC_F32, FUSEDOPS_VEC_F64>>(g, x, y, cos, sin,
                                                                                            inverse);
}

template <typename T>
RotaryKernels<T> rotary_table() {
  return {&rotary_run<T>};
}
template RotaryKernels<float> rotary_table<float>();
template RotaryKernels<double> rotary_table<double>();
template RotaryKernels<bf16_t> rotary_table<bf16_t>();

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
