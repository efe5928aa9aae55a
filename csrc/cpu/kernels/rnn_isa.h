// Recurrent gate kernels written once over a register trait V (vec.h), instantiated per
// instruction set by rnn_<isa>.cpp. A step's rows are split between threads when the step is
// large enough to pay for the fork; each row is one pass over its gates in registers.
// fp32 SIMD traits use the vector exp/tanh of vec/math.h; other traits go lane by lane through
// <cmath> (the scalar trait VecScalar), so fp64 stays exact for gradcheck.
#pragma once
// (standard headers come from vec/isa_std.h, before the instruction set is selected)

#include "activation_ops_isa.h"
#include "rnn.h"

namespace fusedops::cpu::FUSEDOPS_ISA_NS {
namespace rnn_detail {

template <class L>
inline typename L::R gate_sigmoid(typename L::R x) {
  if constexpr (L::fast_math) {
    const typename L::R one = L::set1(1.0f);
    return L::div(one, L::add(one, vexp<L>(L::sub(L::zero(), x))));
  } else {
    return typename L::T(1) / (typename L::T(1) + std::exp(-x));
  }
}

template <class L>
inline typename L::R gate_tanh(typename L::R x) {
  if constexpr (L::fast_math) return act_detail::tanh_accurate<L>(x);
  else return std::tanh(x);
}

// Runs body(j, n) over the columns [0, H) in register-wide pieces; n < L::W only at the tail.
template <class L, class F>
inline void lanes(int64_t H, F&& body) {
  int64_t j = 0;
  for (; j + L::W <= H; j += L::W) body(j, L::W);
  if (j < H) body(j, int(H - j));
}

template <class L>
inline typename L::R ld(const typename L::T* p, int n) {
  return n == L::W ? L::loadu(p) : L::load_partial(p, n);
}
template <class L>
inline void st(typename L::T* p, typename L::R r, int n) {
  if (n == L::W) L::storeu(p, r);
  else L::store_partial(p, r, n);
}

// Runs row(r) for r in [0, rows), split between threads when the step is large.
template <class F>
void rows_parallel(int64_t rows, int64_t work_per_row, F&& row) {
  const int64_t work = rows * work_per_row;
  const int nt = threads_for_work(double(work), 32768.0, rows);
  if (nt <= 1) {
    for (int64_t r = 0; r < rows; ++r) row(r);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), nth = omp_get_num_threads();
    for (int64_t r = t * rows / nth, r1 = (t + 1) * rows / nth; r < r1; ++r) row(r);
  }
}

// The lane trait: the SIMD trait where it has vector math, else one element at a time.
template <class V>
using Lane = std::conditional_t<V::fast_math, V, VecScalar<typename V::T>>;

template <class L>
void forward(const RnnStepForward<typename L::T>& a) {
  using T = typename L::T;
  using R = typename L::R;
  const int64_t H = a.H;
  const R one = L::set1(T(1));
  auto put_h = [&](int64_t r, int64_t j, R h, int n) {
    st<L>(a.out + r * a.ldo + j, h, n);
    if (a.out2) st<L>(a.out2 + r * a.ldo2 + j, h, n);
  };
  switch (a.mode) {
    case RnnMode::rnn_tanh:
    case RnnMode::rnn_relu: {
      const bool relu = a.mode == RnnMode::rnn_relu;
      rows_parallel(a.rows, H, [&](int64_t r) {
        T* w = a.ws + r * a.ldw;
        const T* gh = a.gh ? a.gh + r * a.ldgh : nullptr;
        lanes<L>(H, [&](int64_t j, int n) {
          R x = ld<L>(w + j, n);
          if (gh) x = L::add(x, ld<L>(gh + j, n)), st<L>(w + j, x, n);
          put_h(r, j, relu ? L::max(L::zero(), x) : gate_tanh<L>(x), n);
        });
      });
      break;
    }
    case RnnMode::lstm:
      rows_parallel(a.rows, 5 * H, [&](int64_t r) {
        T* w = a.ws + r * a.ldw;
        T* c = a.c + r * H;
        const T* gh = a.gh ? a.gh + r * a.ldgh : nullptr;
        auto pre = [&](int64_t k, int64_t j, int n) {
          const R x = ld<L>(w + k + j, n);
          return gh ? L::add(x, ld<L>(gh + k + j, n)) : x;
        };
        lanes<L>(H, [&](int64_t j, int n) {
          const R i = gate_sigmoid<L>(pre(0, j, n)), f = gate_sigmoid<L>(pre(H, j, n));
          const R g = gate_tanh<L>(pre(2 * H, j, n)), o = gate_sigmoid<L>(pre(3 * H, j, n));
          const R cn = L::fmadd(f, ld<L>(c + j, n), L::mul(i, g));
          st<L>(w + j, i, n), st<L>(w + H + j, f, n), st<L>(w + 2 * H + j, g, n);
          st<L>(w + 3 * H + j, o, n), st<L>(w + 4 * H + j, cn, n), st<L>(c + j, cn, n);
          put_h(r, j, L::mul(o, gate_tanh<L>(cn)), n);
        });
      });
      break;
    case RnnMode::gru:
      rows_parallel(a.rows, 4 * H, [&](int64_t r) {
        T* w = a.ws + r * a.ldw;
        const T* gh = a.gh + r * a.ldgh;
        const T* hp = a.h_prev + r * a.ldhp;
        const T* b = a.b_hh;
        lanes<L>(H, [&](int64_t j, int n) {
          auto bias = [&](int64_t k) { return b ? ld<L>(b + k + j, n) : L::zero(); };
          const R rr = gate_sigmoid<L>(L::add(L::add(ld<L>(w + j, n), ld<L>(gh + j, n)), bias(0)));
          const R z = gate_sigmoid<L>(L::add(L::add(ld<L>(w + H + j, n), ld<L>(gh + H + j, n)), bias(H)));
          const R hn = L::add(ld<L>(gh + 2 * H + j, n), bias(2 * H));
          const R nn = gate_tanh<L>(L::fmadd(rr, hn, ld<L>(w + 2 * H + j, n)));
          const R h = L::fmadd(L::sub(one, z), nn, L::mul(z, ld<L>(hp + j, n)));
          st<L>(w + j, rr, n), st<L>(w + H + j, z, n), st<L>(w + 2 * H + j, nn, n);
          st<L>(w + 3 * H + j, hn, n);
          put_h(r, j, h, n);
        });
      });
      break;
  }
}

template <class L>
void backward(const RnnStepBackward<typename L::T>& a) {
  using T = typename L::T;
  using R = typename L::R;
  const int64_t H = a.H;
  const R one = L::set1(T(1));
  switch (a.mode) {
    case RnnMode::rnn_tanh:
    case RnnMode::rnn_relu: {
      const bool relu = a.mode == RnnMode::rnn_relu;
      rows_parallel(a.rows, 2 * H, [&](int64_t r) {
        const T* dh = a.dh + r * a.lddh;
        const T* h = a.h + r * a.ldh;
        T* dg = a.dgi + r * a.ldgi;
        lanes<L>(H, [&](int64_t j, int n) {
          const R g = ld<L>(dh + j, n), y = ld<L>(h + j, n);
          st<L>(dg + j, relu ? L::select(L::gt(y, L::zero()), g, L::zero()) : L::mul(g, L::sub(one, L::mul(y, y))), n);
        });
      });
      break;
    }
    case RnnMode::lstm:
      rows_parallel(a.rows, 10 * H, [&](int64_t r) {
        const T* w = a.ws + r * a.ldw;
        const T* dh = a.dh + r * a.lddh;
        const T* cp = a.prev + r * a.ldp;
        T* dc = a.dc + r * H;
        T* dg = a.dgi + r * a.ldgi;
        lanes<L>(H, [&](int64_t j, int n) {
          const R i = ld<L>(w + j, n), f = ld<L>(w + H + j, n), g = ld<L>(w + 2 * H + j, n);
          const R o = ld<L>(w + 3 * H + j, n), tc = gate_tanh<L>(ld<L>(w + 4 * H + j, n));
          const R dm = ld<L>(dh + j, n);
          const R dct = L::fmadd(L::mul(dm, o), L::sub(one, L::mul(tc, tc)), ld<L>(dc + j, n));
          st<L>(dc + j, L::mul(dct, f), n);
          st<L>(dg + j, L::mul(L::mul(dct, g), L::mul(i, L::sub(one, i))), n);
          st<L>(dg + H + j, L::mul(L::mul(dct, ld<L>(cp + j, n)), L::mul(f, L::sub(one, f))), n);
          st<L>(dg + 2 * H + j, L::mul(L::mul(dct, i), L::sub(one, L::mul(g, g))), n);
          st<L>(dg + 3 * H + j, L::mul(L::mul(dm, tc), L::mul(o, L::sub(one, o))), n);
        });
      });
      break;
    case RnnMode::gru:
      rows_parallel(a.rows, 11 * H, [&](int64_t r) {
        const T* w = a.ws + r * a.ldw;
        const T* hp = a.prev + r * a.ldp;
        T* dh = a.dh + r * a.lddh;
        T* dgi = a.dgi + r * a.ldgi;
        T* dgh = a.dgh + r * a.ldgh;
        lanes<L>(H, [&](int64_t j, int n) {
          const R rr = ld<L>(w + j, n), z = ld<L>(w + H + j, n), nn = ld<L>(w + 2 * H + j, n);
          const R hn = ld<L>(w + 3 * H + j, n), g = ld<L>(dh + j, n);
          const R dnp = L::mul(L::mul(g, L::sub(one, z)), L::sub(one, L::mul(nn, nn)));
          const R drp = L::mul(L::mul(dnp, hn), L::mul(rr, L::sub(one, rr)));
          const R dzp = L::mul(L::mul(g, L::sub(ld<L>(hp + j, n), nn)), L::mul(z, L::sub(one, z)));
          st<L>(dgi + j, drp, n), st<L>(dgi + H + j, dzp, n), st<L>(dgi + 2 * H + j, dnp, n);
          st<L>(dgh + j, drp, n), st<L>(dgh + H + j, dzp, n), st<L>(dgh + 2 * H + j, L::mul(dnp, rr), n);
          st<L>(dh + j, L::mul(g, z), n);
        });
      });
      break;
  }
}

}  // namespace rnn_detail

template <typename T>
void rnn_step_forward_run(const RnnStepForward<T>& a) {
  using V = std::conditional_t<sizeof(T) == 4, FUSEDOPS_VEC_F32, FUSEDOPS_VEC_F64>;
  rnn_detail::forward<rnn_detail::Lane<V>>(a);
}

template <typename T>
void rnn_step_backward_run(const RnnStepBackward<T>& a) {
  using V = std::conditional_t<sizeof(T) == 4, FUSEDOPS_VEC_F32, FUSEDOPS_VEC_F64>;
  rnn_detail::backward<rnn_detail::Lane<V>>(a);
}

template <typename T>
void lstm_cell_output_run(int64_t rows, int64_t H, const T* ws, int64_t ldw, T* m, int64_t ldm) {
  using L = rnn_detail::Lane<std::conditional_t<sizeof(T) == 4, FUSEDOPS_VEC_F32, FUSEDOPS_VEC_F64>>;
  rnn_detail::rows_parallel(rows, 2 * H, [&](int64_t r) {
    const T* w = ws + r * ldw;
    rnn_detail::lanes<L>(H, [&](int64_t j, int n) {
      rnn_detail::st<L>(m + r * ldm + j,
                        L::mul(rnn_detail::ld<L>(w + 3 * H + j, n), rnn_detail::gate_tanh<L>(rnn_detail::ld<L>(w + 4 * H + j, n))), n);
    });
  });
}

template <typename T>
RnnKernels<T> rnn_table() {
  return {&rnn_step_forward_run<T>, &rnn_step_backward_run<T>, &lstm_cell_output_run<T>};
}
template RnnKernels<float> rnn_table<float>();
template RnnKernels<double> rnn_table<double>();

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
