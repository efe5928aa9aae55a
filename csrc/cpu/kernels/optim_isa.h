// Optimizer steps, gradient norm and scaling over a SIMD trait V (see optim.h for the math);
// included by optim_<isa>.cpp after the instruction-set selector, which instantiates them.
//
// Work split: the tensors' elements, concatenated, are cut into chunks of 64K elements that
// the threads take dynamically (a big tensor spans many chunks, small ones share one); one
// pass per element; tails of tensors go through partial loads/stores.
#pragma once

namespace fusedops::cpu::FUSEDOPS_ISA_NS {
namespace optim_detail {

// The concatenated elements are cut into chunks of kChunk elements (a multiple of 16: whole
// cache lines for float32), handed to the threads dynamically: a thread that the OS delays
// (other processes on the cores) leaves its chunks to the others instead of holding up the
// call. Results that are reduced per chunk are combined in chunk order, so they do not depend
// on the thread count. A call with a single chunk runs on the calling thread.
constexpr int64_t kChunk = 64 * 1024;

inline int64_t chunk_count(const int64_t* sizes, int64_t count) {
  int64_t total = 0;
  for (int64_t k = 0; k < count; ++k) total += sizes[k];
  return (total + kChunk - 1) / kChunk;
}

// Calls f(tensor, begin, end, chunk) for every piece of every chunk; a chunk's pieces run on
// one thread, in order.
template <class F>
void parallel_spans(const int64_t* sizes, int64_t count, F&& f) {
  std::vector<int64_t> start(static_cast<size_t>(count) + 1, 0);
  for (int64_t k = 0; k < count; ++k) start[k + 1] = start[k] + sizes[k];
  const int64_t total = start[count];
  const int64_t chunks = (total + kChunk - 1) / kChunk;
  if (chunks == 0) return;
  auto run = [&](int64_t c) {
    const int64_t lo = c * kChunk, hi = std::min(total, lo + kChunk);
    int64_t k = std::upper_bound(start.begin(), start.end(), lo) - start.begin() - 1;
    for (; k < count && start[k] < hi; ++k) {
      const int64_t b = std::max(lo, start[k]) - start[k];
      const int64_t e = std::min(hi, start[k + 1]) - start[k];
      if (e > b) f(k, b, e, c);
    }
  };
  const int64_t nt = std::min<int64_t>(pool_threads(), chunks);
  if (nt <= 1) {
    for (int64_t c = 0; c < chunks; ++c) run(c);
    return;
  }
#pragma omp parallel for num_threads(int(nt)) schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) run(c);
}

// ---- Adam ------------------------------------------------------------------------------------

// S: the storage type of the parameter and its gradient (bf16 widened on load, the parameter
// rounded once on store); the state (m, v, vmax) is in T.
template <class V, class S = typename V::T>
struct AdamSpan {
  using T = typename V::T;
  using R = typename V::R;
  R lerp_coef, beta2, one_minus_beta2, decay, wd, bc2_sqrt, eps, neg_step_size;
  bool small_weight, amsgrad, maximize, decoupled, has_wd;

  AdamSpan(const AdamTensor<S>& t, const AdamHyper& h) {
    // torch: exp_avg.lerp_(grad, 1 - beta1) with the weight rounded to T; lerp computes
    // m + w (g - m) for |w| < 0.5, else g + (w - 1) (g - m), each as one fused multiply-add.
    const T w = T(1.0 - h.beta1);
    small_weight = std::abs(w) < T(0.5);
    lerp_coef = V::set1(small_weight ? w : T(w - T(1)));
    beta2 = V::set1(T(h.beta2));
    one_minus_beta2 = V::set1(T(1.0 - h.beta2));
    decay = V::set1(T(1.0 - h.lr * h.weight_decay));
    wd = V::set1(T(h.weight_decay));
    bc2_sqrt = V::set1(T(t.bc2_sqrt));
    eps = V::set1(T(h.eps));
    neg_step_size = V::set1(T(-t.step_size));
    amsgrad = h.amsgrad, maximize = h.maximize, decoupled = h.decoupled;
    has_wd = h.weight_decay != 0;
  }

  // One register of elements: p, m, v (and vm) updated in place.
  void update(R& p, R g, R& m, R& v, R& vm) const {
    if (maximize) g = V::sub(V::zero(), g);
    if (has_wd) {
      if (decoupled) p = V::mul(p, decay);
      else g = V::fmadd(p, wd, g);
    }
    const R diff = V::sub(g, m);
    m = V::fmadd(lerp_coef, diff, small_weight ? m : g);
    v = V::fmadd(V::mul(one_minus_beta2, g), g, V::mul(v, beta2));
    R second = v;
    if (amsgrad) second = vm = V::max(vm, v);
    const R denom = V::add(V::div(V::sqrt(second), bc2_sqrt), eps);
    p = V::add(p, V::div(V::mul(neg_step_size, m), denom));
  }

  void run(const AdamTensor<S>& t, int64_t b, int64_t e) const {
    constexpr int W = V::W;
    S* p = t.p;
    const S* g = t.g;
    T* m = t.m;
    T* v = t.v;
    T* vm = t.vmax;
    int64_t i = b;
    R rvm = V::zero();
    for (; i + W <= e; i += W) {
      R rp = ld<V>(p + i), rm = V::loadu(m + i), rv = V::loadu(v + i);
      if (amsgrad) rvm = V::loadu(vm + i);
      update(rp, ld<V>(g + i), rm, rv, rvm);
      st<V>(p + i, rp);
      V::storeu(m + i, rm);
      V::storeu(v + i, rv);
      if (amsgrad) V::storeu(vm + i, rvm);
    }
    if (i < e) {
      const int n = int(e - i);
      R rp = ld_part<V>(p + i, n), rm = V::load_partial(m + i, n);
      R rv = V::load_partial(v + i, n);
      if (amsgrad) rvm = V::load_partial(vm + i, n);
      update(rp, ld_part<V>(g + i, n), rm, rv, rvm);
      st_part<V>(p + i, rp, n);
      V::store_partial(m + i, rm, n);
      V::store_partial(v + i, rv, n);
      if (amsgrad) V::store_partial(vm + i, rvm, n);
    }
  }
};

// ---- SGD -------------------------------------------------------------------------------------

template <class V, class S = typename V::T>
struct SgdSpan {
  using T = typename V::T;
  using R = typename V::R;
  R wd, momentum, one_minus_dampening, neg_lr;
  bool has_wd, has_momentum, nesterov, maximize;

  explicit SgdSpan(const SgdHyper& h) {
    wd = V::set1(T(h.weight_decay));
    momentum = V::set1(T(h.momentum));
    one_minus_dampening = V::set1(T(1.0 - h.dampening));
    neg_lr = V::set1(T(-h.lr));
    has_wd = h.weight_decay != 0, has_momentum = h.momentum != 0;
    nesterov = h.nesterov, maximize = h.maximize;
  }

  // torch: grad.add(param, alpha=wd), buf.mul_(momentum).add_(grad, alpha=1 - dampening),
  // grad.add(buf, alpha=momentum), param.add_(grad, alpha=-lr): each add-with-alpha is one
  // fused multiply-add.
  void update(R& p, R g, R& buf, bool fresh) const {
    if (maximize) g = V::sub(V::zero(), g);
    if (has_wd) g = V::fmadd(p, wd, g);
    if (has_momentum) {
      buf = fresh ? g : V::fmadd(g, one_minus_dampening, V::mul(buf, momentum));
      g = nesterov ? V::fmadd(buf, momentum, g) : buf;
    }
    p = V::fmadd(g, neg_lr, p);
  }

  void run(const SgdTensor<S>& t, int64_t b, int64_t e) const {
    constexpr int W = V::W;
    const bool fresh = t.fresh, use_buf = has_momentum;
    int64_t i = b;
    R rb = V::zero();
    for (; i + W <= e; i += W) {
      R rp = ld<V>(t.p + i);
      if (use_buf && !fresh) rb = V::loadu(t.buf + i);
      update(rp, ld<V>(t.g + i), rb, fresh);
      st<V>(t.p + i, rp);
      if (use_buf) V::storeu(t.buf + i, rb);
    }
    if (i < e) {
      const int n = int(e - i);
      R rp = ld_part<V>(t.p + i, n);
      if (use_buf && !fresh) rb = V::load_partial(t.buf + i, n);
      update(rp, ld_part<V>(t.g + i, n), rb, fresh);
      st_part<V>(t.p + i, rp, n);
      if (use_buf) V::store_partial(t.buf + i, rb, n);
    }
  }
};

// ---- norm --------------------------------------------------------------------------------------

// NormKind and norm_kind(p): contracts/optim.h.

// |x| from the operations every trait has (max(x, -x) keeps NaN: x86 max returns its second
// operand when either is NaN).
template <class V>
typename V::R vabs(typename V::R x) {
  return V::max(x, V::sub(V::zero(), x));
}

// Sum of |x| (one) or x^2 (two) of x[b, e), or max |x| (inf): SIMD in T over blocks of at
// most kBlock elements, each block's result added to a double.
template <class V, class S>
double span_reduce(const S* x, int64_t b, int64_t e, NormKind kind) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  constexpr int64_t kBlock = 256;
  auto term = [&](R r) { return kind == NormKind::two ? V::mul(r, r) : vabs<V>(r); };
  if (kind == NormKind::inf) {
    // max drops NaN on SIMD registers, so NaN is tracked apart: x - x is NaN for NaN and +-inf,
    // and only then are the elements looked at one by one (torch's norm propagates NaN).
    R mx = V::zero(), nonfinite = V::zero();
    int64_t i = b;
    for (; i + W <= e; i += W) {
      const R r = ld<V>(x + i);
      mx = V::max(mx, vabs<V>(r));
      nonfinite = V::add(nonfinite, V::sub(r, r));
    }
    if (i < e) {
      const R r = ld_part<V>(x + i, int(e - i));
      mx = V::max(mx, vabs<V>(r));
      nonfinite = V::add(nonfinite, V::sub(r, r));
    }
    const T check = V::hsum(nonfinite);
    if (check != check)
      for (int64_t j = b; j < e; ++j)
        if (to_t<T>(x[j]) != to_t<T>(x[j])) return std::numeric_limits<double>::quiet_NaN();
    return double(V::hmax(mx));
  }
  double total = 0;
  if constexpr (W == 1) {  // scalar registers: straight into the double
    for (int64_t i = b; i < e; ++i) {
      const double a = double(to_t<T>(x[i]));
      total += kind == NormKind::two ? a * a : std::abs(a);
    }
    return total;
  }
  // 4 registers of partial sums, each lane summing at most kBlock / (4 W) terms in T
  for (int64_t blk = b; blk < e; blk += kBlock) {
    const int64_t end = std::min(e, blk + kBlock);
    R a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
    int64_t i = blk;
    for (; i + 4 * W <= end; i += 4 * W) {
      a0 = V::add(a0, term(ld<V>(x + i)));
      a1 = V::add(a1, term(ld<V>(x + i + W)));
      a2 = V::add(a2, term(ld<V>(x + i + 2 * W)));
      a3 = V::add(a3, term(ld<V>(x + i + 3 * W)));
    }
    for (; i + W <= end; i += W) a0 = V::add(a0, term(ld<V>(x + i)));
    if (i < end) a1 = V::add(a1, term(ld_part<V>(x + i, int(end - i))));
    total += double(V::hsum(V::add(V::add(a0, a1), V::add(a2, a3))));
  }
  return total;
}

// The slow kinds (-inf, 0, general p) element by element in double.
template <typename T>
double span_reduce_scalar(const T* x, int64_t b, int64_t e, NormKind kind, double p,
                          double acc) {
  for (int64_t i = b; i < e; ++i) {
    const double a = std::abs(double(to_t<compute_t<T>>(x[i])));
    if (kind == NormKind::neg_inf) acc = a < acc || a != a ? a : acc;
    else if (kind == NormKind::zero) acc += a != 0;
    else acc += std::pow(a, p);
  }
  return acc;
}

}  // namespace optim_detail

// ---- entry points ---------------------------------------------------------------------------

// V: the trait of the arithmetic type (fp32 for bf16 storage).
template <typename T>
using OptimVec = std::conditional_t<sizeof(compute_t<T>) == 4, FUSEDOPS_VEC_F32, FUSEDOPS_VEC_F64>;

template <typename T>
void adam_step_run(const AdamTensor<T>* tensors, int64_t count, const AdamHyper& h) {
  using V = OptimVec<T>;
  std::vector<int64_t> sizes(static_cast<size_t>(count));
  for (int64_t k = 0; k < count; ++k) sizes[k] = tensors[k].n;
  optim_detail::parallel_spans(sizes.data(), count, [&](int64_t k, int64_t b, int64_t e, int64_t) {
    const optim_detail::AdamSpan<V, T> span(tensors[k], h);  // registers of constants, on the stack
    span.run(tensors[k], b, e);
  });
}

template <typename T>
void sgd_step_run(const SgdTensor<T>* tensors, int64_t count, const SgdHyper& h) {
  using V = OptimVec<T>;
  const optim_detail::SgdSpan<V, T> span(h);
  std::vector<int64_t> sizes(static_cast<size_t>(count));
  for (int64_t k = 0; k < count; ++k) sizes[k] = tensors[k].n;
  optim_detail::parallel_spans(sizes.data(), count, [&](int64_t k, int64_t b, int64_t e, int64_t) {
    span.run(tensors[k], b, e);
  });
}

template <typename T>
double total_norm_run(const T* const* data, const int64_t* sizes, int64_t count, double p) {
  using V = OptimVec<T>;
  using namespace optim_detail;
  const NormKind kind = norm_kind(p);
  const double init = kind == NormKind::neg_inf ? std::numeric_limits<double>::infinity() : 0.0;
  std::vector<double> partial(static_cast<size_t>(chunk_count(sizes, count)), init);
  if (partial.empty()) return 0.0;
  parallel_spans(sizes, count, [&](int64_t k, int64_t b, int64_t e, int64_t c) {
    double& acc = partial[size_t(c)];
    switch (kind) {
      case NormKind::two:
      case NormKind::one: acc += span_reduce<V>(data[k], b, e, kind); break;
      case NormKind::inf: {
        const double m = span_reduce<V>(data[k], b, e, kind);
        acc = m > acc || m != m ? m : acc;
        break;
      }
      default: acc = span_reduce_scalar(data[k], b, e, kind, p, acc);
    }
  });
  double r = init;
  for (double x : partial) {  // chunk order: the same result for any thread count
    if (kind == NormKind::inf) r = x > r || x != x ? x : r;
    else if (kind == NormKind::neg_inf) r = x < r || x != x ? x : r;
    else r += x;
  }
  switch (kind) {
    case NormKind::two: return std::sqrt(r);
    case NormKind::general: return std::pow(r, 1.0 / p);
    default: return r;
  }
}

template <typename T>
void scale_all_run(T* const* data, const int64_t* sizes, int64_t count, compute_t<T> scale) {
  using V = OptimVec<T>;
  using R = typename V::R;
  constexpr int W = V::W;
  const R s = V::set1(scale);
  optim_detail::parallel_spans(sizes, count, [&](int64_t k, int64_t b, int64_t e, int64_t) {
    T* x = data[k];
    int64_t i = b;
    for (; i + W <= e; i += W) st<V>(x + i, V::mul(ld<V>(x + i), s));
    if (i < e) st_part<V>(x + i, V::mul(ld_part<V>(x + i, int(e - i)), s), int(e - i));
  });
}

template <typename T>
OptimKernels<T> optim_table() {
  return {&adam_step_run<T>, &sgd_step_run<T>, &total_norm_run<T>, &scale_all_run<T>};
}
template OptimKernels<float> optim_table<float>();
template OptimKernels<double> optim_table<double>();
template OptimKernels<bf16_t> optim_table<bf16_t>();

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
