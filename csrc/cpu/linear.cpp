// CPU bindings of linear, linear_act, linear_backward, matmul, matmul_backward: argument
// checks, output allocation, strides handed to the GEMM (no copies of transposed or expanded
// operands), dispatch on dtype. The math is in kernels/gemm.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string>

#include "common/threads.h"
#include "common/checks.h"
#include "common/linear_args.h"
#include "cpu/kernels/gemm/gemm.h"
#include "cpu/kernels/gemm/gemm_bf16.h"
#include "common/register.h"

namespace fusedops {
namespace {

using cpu::GemmArgs;
using cpu::GemmMixedArgs;

// ---- bf16 -----------------------------------------------------------------------------------
// A bf16 input runs the mixed-precision GEMM (fp32 sums, the epilogue in fp32, bf16 stores);
// its weight and bias may be bf16 or fp32 masters, read in place (rounded while packed): what
// autocast needs without a bf16 copy of every weight.

cpu::DType dtype_of(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16 ? cpu::DType::bf16 : cpu::DType::f32; }

bool is_bf16(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16; }

// args with A = a (strided), B(k, j) = b[k * rsb + j * csb], C = c (row-major, ldc).
GemmMixedArgs mixed(int64_t M, int64_t N, int64_t K, const at::Tensor& a, int64_t rsa, int64_t csa,
                    const at::Tensor& b, int64_t rsb, int64_t csb, at::Tensor& c, int64_t ldc) {
  GemmMixedArgs g;
  g.M = M, g.N = N, g.K = K;
  g.A = a.data_ptr(), g.a_type = dtype_of(a), g.rsa = rsa, g.csa = csa;
  g.B = b.data_ptr(), g.b_type = dtype_of(b), g.rsb = rsb, g.csb = csb;
  g.C = c.data_ptr(), g.c_type = dtype_of(c), g.ldc = ldc;
  return g;
}

// A batch of mixed GEMMs: entry b reads A + b * sa and B + b * sb (elements) and writes C of
// out + b * sc; sc == 0 sums every product into out (through an fp32 buffer when out is bf16:
// the sums stay in fp32 until the end).
void mixed_batched(const GemmMixedArgs& g, int64_t batch, int64_t sa, int64_t sb, int64_t sc, at::Tensor& out) {
  auto shift = [](const void* p, cpu::DType t, int64_t n) {
    return static_cast<const char*>(p) + n * (t == cpu::DType::bf16 ? 2 : 4);
  };
  if (sc != 0) {
    for (int64_t b = 0; b < batch; ++b) {
      GemmMixedArgs h = g;
      h.A = shift(g.A, g.a_type, b * sa), h.B = shift(g.B, g.b_type, b * sb);
      h.C = const_cast<char*>(shift(g.C, g.c_type, b * sc));
      cpu::gemm_mixed(h);
    }
    return;
  }
  at::Tensor acc = g.c_type == cpu::DType::f32 ? out : at::empty({g.M, g.N}, out.options().dtype(at::kFloat));
  for (int64_t b = 0; b < std::max<int64_t>(batch, 1); ++b) {
    GemmMixedArgs h = g;
    if (batch == 0) h.K = 0;  // an empty sum: zeros
    h.A = shift(g.A, g.a_type, b * sa), h.B = shift(g.B, g.b_type, b * sb);
    h.C = acc.data_ptr(), h.c_type = cpu::DType::f32, h.ldc = g.N;
    h.beta = b > 0 ? 1.0f : g.beta;
    cpu::gemm_mixed(h);
  }
  if (!acc.is_same(out)) out.copy_(acc.view(out.sizes()));
}

// ---- linear ---------------------------------------------------------------------------------

void check_linear(const at::Tensor& input, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias, const char* op) {
  if (is_bf16(input)) {
    check_cpu_float_or_bf16(input, op, "input");
    check_cpu_float_or_bf16(weight, op, "weight");
    check_bf16_or_master(weight, op, "weight", "input");
    if (bias.has_value()) {
      check_cpu_float_or_bf16(*bias, op, "bias");
      check_bf16_or_master(*bias, op, "bias", "input");
    }
    check_linear_shapes(input, weight, bias, op);
    return;
  }
  check_cpu_float_or_bf16(input, op, "input");
  check_cpu_float(weight, op, "weight");
  check_same_dtype(weight, input, op, "weight", "input");
  if (bias.has_value()) {
    check_cpu_float(*bias, op, "bias");
    check_same_dtype(*bias, input, op, "bias", "input");
  }
  check_linear_shapes(input, weight, bias, op);
}

// out2[M, N] = act(x2 @ w.T + bias); preact2 receives the pre-activation when defined.
void linear_into(const at::Tensor& x2, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                 Activation act, at::Tensor& out2, at::Tensor* preact2) {
  const at::Tensor bias_c = bias.has_value() ? bias->contiguous() : at::Tensor();
  if (is_bf16(x2)) {
    GemmMixedArgs g = mixed(x2.size(0), w.size(0), x2.size(1), x2, x2.stride(0), x2.stride(1), w, w.stride(1),
                            w.stride(0), out2, w.size(0));
    if (bias_c.defined()) g.bias = bias_c.data_ptr(), g.bias_type = dtype_of(bias_c), g.bias_mode = BiasMode::per_col;
    g.act = act;
    if (preact2) g.preact = preact2->data_ptr(), g.ld_preact = g.N;
    return cpu::gemm_mixed(g);
  }
  AT_DISPATCH_FLOATING_TYPES(x2.scalar_type(), "fusedops.linear", [&] {
    GemmArgs<scalar_t> g;
    g.M = x2.size(0);
    g.N = w.size(0);
    g.K = x2.size(1);
    g.A = x2.data_ptr<scalar_t>();
    g.rsa = x2.stride(0);
    g.csa = x2.stride(1);
    g.B = w.data_ptr<scalar_t>();  // B(k, n) = w[n, k]
    g.rsb = w.stride(1);
    g.csb = w.stride(0);
    g.C = out2.data_ptr<scalar_t>();
    g.ldc = g.N;
    if (bias_c.defined()) {
      g.bias = bias_c.data_ptr<scalar_t>();
      g.bias_mode = BiasMode::per_col;
    }
    g.act = act;
    if (preact2) {
      g.preact = preact2->data_ptr<scalar_t>();
      g.ld_preact = g.N;
    }
    cpu::gemm<scalar_t>(g);
  });
}

at::Tensor linear_cpu(const at::Tensor& input, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias,
                      std::optional<c10::string_view> activation) {
  check_linear(input, weight, bias, "linear");
  const Activation act = activation_arg(activation, "linear");
  const at::Tensor x2 = rows_of(input);
  at::Tensor out = at::empty(with_last(input.sizes(), weight.size(0)), input.options());
  at::Tensor out2 = out.view({x2.size(0), weight.size(0)});
  linear_into(x2, weight, bias, act, out2, nullptr);
  return out;
}

std::tuple<at::Tensor, at::Tensor> linear_act_cpu(const at::Tensor& input, const at::Tensor& weight,
                                                  const std::optional<at::Tensor>& bias,
                                                  c10::string_view activation) {
  check_linear(input, weight, bias, "linear_act");
  const Activation act = activation_arg(activation, "linear_act");
  const auto shape = with_last(input.sizes(), weight.size(0));
  at::Tensor out = at::empty(shape, input.options());
  at::Tensor pre = at::empty(shape, input.options());
  const at::Tensor x2 = rows_of(input);
  at::Tensor out2 = out.view({x2.size(0), weight.size(0)});
  at::Tensor pre2 = pre.view({x2.size(0), weight.size(0)});
  linear_into(x2, weight, bias, act, out2, &pre2);
  return {out, pre};
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
linear_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                    const std::optional<at::Tensor>& act_input,
                    std::optional<c10::string_view> activation, std::array<bool, 3> mask) {
  const char* op = "linear_backward";
  check_linear(input, weight, std::nullopt, op);
  check_cpu_float_or_bf16(grad_output, op, "grad_output");
  check_same_dtype(grad_output, input, op, "grad_output", "input");
  const Activation act = activation_arg(activation, op);
  check_linear_backward_shapes(grad_output, input, weight, act_input, act != Activation::none, op);
  if (act != Activation::none) check_same_dtype(*act_input, input, op, "act_input", "input");
  const at::Tensor x2 = rows_of(input);
  const int64_t M = x2.size(0), K = x2.size(1), N = weight.size(0);
  const at::Tensor g2 = grad_output.reshape({M, N});
  std::optional<at::Tensor> gx, gw, gb;
  if (mask[0]) gx = at::empty(input.sizes(), input.options());
  // The weight's and bias's gradients in the weight's dtype (an fp32 master's in fp32).
  if (mask[1]) gw = at::empty({N, K}, weight.options());
  if (mask[2]) gb = at::empty({N}, weight.options());
  if (is_bf16(input)) {
    // dz, the gradient of the pre-activation: the bf16 gradient itself, or (an activation, a
    // bias gradient) fp32 from the fp32 kernel over widened copies, the column sums in fp32.
    at::Tensor dz = g2;
#if defined(__x86_64__)
    const bool row_kernel = cpu_info().avx512_bf16 && active_isa() == Isa::avx512;
#else
    const bool row_kernel = false;
#endif
    if ((act != Activation::none || gb) && row_kernel) {
#if defined(__x86_64__)
      // One pass over the bf16 gradient: dz in fp32 (with an activation), the bias gradient.
      at::Tensor gb32 = gb ? (gb->scalar_type() == at::kFloat ? *gb : at::empty({N}, gb->options().dtype(at::kFloat)))
                           : at::Tensor();
      at::Tensor z2;
      if (act != Activation::none) {
        z2 = act_input->reshape({M, N}).contiguous();
        dz = at::empty({M, N}, g2.options().dtype(at::kFloat));
      }
      cpu::avx512bf16::bias_act_backward(M, N, g2.data_ptr(), dtype_of(g2), g2.stride(0), g2.stride(1),
                                         z2.defined() ? z2.data_ptr() : nullptr, dtype_of(z2.defined() ? z2 : g2), N,
                                         act != Activation::none ? dz.data_ptr() : nullptr, cpu::DType::f32, act,
                                         gb ? gb32.data_ptr<float>() : nullptr);
      if (gb && !gb32.is_same(*gb)) gb->copy_(gb32);
#endif
    } else if (act != Activation::none || gb) {
      const at::Tensor g32 = g2.to(at::kFloat).contiguous();
      at::Tensor gb32 = gb ? (gb->scalar_type() == at::kFloat ? *gb : at::empty({N}, gb->options().dtype(at::kFloat)))
                           : at::Tensor();
      if (act != Activation::none) {
        const at::Tensor z32 = act_input->reshape({M, N}).to(at::kFloat).contiguous();
        dz = at::empty({M, N}, g32.options());
        cpu::bias_act_backward<float>(M, N, g32.data_ptr<float>(), N, 1, z32.data_ptr<float>(), N,
                                      dz.data_ptr<float>(), act, gb ? gb32.data_ptr<float>() : nullptr);
      } else {
        cpu::bias_act_backward<float>(M, N, g32.data_ptr<float>(), N, 1, nullptr, 0, nullptr, Activation::none,
                                      gb32.data_ptr<float>());
      }
      if (gb && !gb32.is_same(*gb)) gb->copy_(gb32);
    }
    if (gx) {  // [M, K] = dz @ w
      at::Tensor gx2 = gx->view({M, K});
      cpu::gemm_mixed(mixed(M, K, N, dz, dz.stride(0), dz.stride(1), weight, weight.stride(0), weight.stride(1), gx2, K));
    }
    if (gw)  // [N, K] = dz.T @ x
      cpu::gemm_mixed(mixed(N, K, M, dz, dz.stride(1), dz.stride(0), x2, x2.stride(0), x2.stride(1), *gw, K));
    return {gx, gw, gb};
  }

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fusedops.linear_backward", [&] {
    // dz: the gradient w.r.t. the pre-activation, as a strided [M, N] matrix.
    const scalar_t* dz = g2.data_ptr<scalar_t>();
    int64_t rs = g2.stride(0), cs = g2.stride(1);
    at::Tensor dz_buf;
    if (act != Activation::none && (mask[0] || mask[1] || mask[2])) {
      const at::Tensor z2 = act_input->reshape({M, N}).contiguous();
      dz_buf = at::empty({M, N}, input.options());
      cpu::bias_act_backward<scalar_t>(M, N, dz, rs, cs, z2.data_ptr<scalar_t>(), N,
                                       dz_buf.data_ptr<scalar_t>(), act,
                                       gb ? gb->data_ptr<scalar_t>() : nullptr);
      dz = dz_buf.data_ptr<scalar_t>();
      rs = N;
      cs = 1;
    } else if (gb) {
      cpu::bias_act_backward<scalar_t>(M, N, dz, rs, cs, nullptr, 0, nullptr, Activation::none,
                                       gb->data_ptr<scalar_t>());
    }
    if (gx) {  // [M, K] = dz @ w
      GemmArgs<scalar_t> g;
      g.M = M, g.N = K, g.K = N;
      g.A = dz, g.rsa = rs, g.csa = cs;
      g.B = weight.data_ptr<scalar_t>(), g.rsb = weight.stride(0), g.csb = weight.stride(1);
      g.C = gx->data_ptr<scalar_t>(), g.ldc = K;
      cpu::gemm<scalar_t>(g);
    }
    if (gw) {  // [N, K] = dz.T @ x
      GemmArgs<scalar_t> g;
      g.M = N, g.N = K, g.K = M;
      g.A = dz, g.rsa = cs, g.csa = rs;
      g.B = x2.data_ptr<scalar_t>(), g.rsb = x2.stride(0), g.csb = x2.stride(1);
      g.C = gw->data_ptr<scalar_t>(), g.ldc = K;
      cpu::gemm<scalar_t>(g);
    }
  });
  return {gx, gw, gb};
}

// ---- matmul ---------------------------------------------------------------------------------

void check_matmul(const at::Tensor& a, const at::Tensor& b, const char* op) {
  check_cpu_float_or_bf16(a, op, "input");
  check_cpu_float_or_bf16(b, op, "other");
  check_same_dtype(b, a, op, "other", "input");
  check_matmul_shapes(a, b, op);
}

at::Tensor matmul_cpu(const at::Tensor& self, const at::Tensor& other) {
  check_matmul(self, other, "matmul");
  const auto shape = matmul_shape(self, other);
  at::Tensor out = at::empty(shape, self.options());
  if (out.numel() == 0) return out;
  const int64_t batch = shape.size() == 3 ? shape[0] : 1;
  // [B, M, K] @ [K, N] with rows that stack: one GEMM of B*M rows.
  at::Tensor a = self;
  if (other.dim() == 2 && rows_stack(self)) a = stack_rows(self);
  if (is_bf16(self)) {
    const Batched A = batched(a), B = batched(other);
    at::Tensor c = out;
    const GemmMixedArgs g = mixed(A.rows, B.cols, A.cols, a, A.rs, A.cs, other, B.rs, B.cs, c, B.cols);
    mixed_batched(g, a.dim() == 2 && other.dim() == 2 ? 1 : batch, A.bs, B.bs, g.M * g.N, c);
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES(self.scalar_type(), "fusedops.matmul", [&] {
    const Batched A = batched(a), B = batched(other);
    GemmArgs<scalar_t> g;
    g.M = A.rows, g.N = B.cols, g.K = A.cols;
    g.A = a.data_ptr<scalar_t>(), g.rsa = A.rs, g.csa = A.cs;
    g.B = other.data_ptr<scalar_t>(), g.rsb = B.rs, g.csb = B.cs;
    g.C = out.data_ptr<scalar_t>(), g.ldc = g.N;
    if (a.dim() == 2 && other.dim() == 2) return cpu::gemm<scalar_t>(g);
    cpu::gemm_batched<scalar_t>(g, batch, A.bs, B.bs, g.M * g.N);
  });
  return out;
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>> matmul_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& self, const at::Tensor& other,
    std::array<bool, 2> mask) {
  const char* op = "matmul_backward";
  check_matmul(self, other, op);
  check_cpu_float_or_bf16(grad_output, op, "grad_output");
  check_same_dtype(grad_output, self, op, "grad_output", "input");
  const auto shape = matmul_shape(self, other);
  FUSEDOPS_CHECK(grad_output.sizes().vec() == shape, op, "grad_output must have shape ",
                 shape_str(shape), ", got ", shape_str(grad_output.sizes()));
  std::optional<at::Tensor> ga, gb;
  if (mask[0]) ga = at::empty(self.sizes(), self.options());
  if (mask[1]) gb = at::empty(other.sizes(), other.options());
  const int64_t batch = shape.size() == 3 ? shape[0] : 1;
  // An operand whose batch broadcasts (2-D, or batch 1 against B != 1) sums its gradient (an
  // empty sum when B == 0).
  auto reduces = [&](const at::Tensor& t) { return batch != 1 && (t.dim() == 2 || t.size(0) == 1); };
  if (is_bf16(self)) {
    const Batched G = batched(grad_output), A = batched(self), B = batched(other);
    if (ga && ga->numel() > 0) {  // dA = dC @ B.T
      const GemmMixedArgs g = mixed(A.rows, A.cols, B.cols, grad_output, G.rs, G.cs, other, B.cs, B.rs, *ga, A.cols);
      mixed_batched(g, batch, G.bs, B.bs, reduces(self) ? 0 : g.M * g.N, *ga);
    }
    if (gb && gb->numel() > 0) {  // dB = A.T @ dC
      at::Tensor a = self, gr = grad_output;
      int64_t nb = batch, abs = A.bs, grbs = G.bs;
      if (reduces(other) && self.dim() == 3 && self.size(0) == batch) {
        a = stack_rows(self);
        gr = stack_rows(grad_output);
        nb = 1, abs = 0, grbs = 0;
      }
      const Batched A2 = batched(a), G2 = batched(gr);
      const GemmMixedArgs g = mixed(B.rows, B.cols, A2.rows, a, A2.cs, A2.rs, gr, G2.rs, G2.cs, *gb, B.cols);
      mixed_batched(g, nb, abs, grbs, reduces(other) ? 0 : g.M * g.N, *gb);
    }
    return {ga, gb};
  }
  AT_DISPATCH_FLOATING_TYPES(self.scalar_type(), "fusedops.matmul_backward", [&] {
    const Batched G = batched(grad_output), A = batched(self), B = batched(other);
    if (ga && ga->numel() > 0) {  // dA = dC @ B.T
      GemmArgs<scalar_t> g;
      g.M = A.rows, g.N = A.cols, g.K = B.cols;
      g.A = grad_output.data_ptr<scalar_t>(), g.rsa = G.rs, g.csa = G.cs;
      g.B = other.data_ptr<scalar_t>(), g.rsb = B.cs, g.csb = B.rs;
      g.C = ga->data_ptr<scalar_t>(), g.ldc = g.N;
      cpu::gemm_batched<scalar_t>(g, batch, G.bs, B.bs, reduces(self) ? 0 : g.M * g.N);
    }
    if (gb && gb->numel() > 0) {  // dB = A.T @ dC
      GemmArgs<scalar_t> g;
      g.M = B.rows, g.N = B.cols, g.K = A.rows;
      at::Tensor a = self, gr = grad_output;
      int64_t nb = batch, abs = A.bs, grbs = G.bs;
      if (reduces(other) && self.dim() == 3 && self.size(0) == batch) {
        // sum_b A_b.T dC_b = [B*M, K].T @ [B*M, N]: one GEMM with a long K.
        a = stack_rows(self);
        gr = stack_rows(grad_output);
        nb = 1, abs = 0, grbs = 0;
        g.K = a.size(0);
      }
      const Batched A2 = batched(a), G2 = batched(gr);
      g.A = a.data_ptr<scalar_t>(), g.rsa = A2.cs, g.csa = A2.rs;
      g.B = gr.data_ptr<scalar_t>(), g.rsb = G2.rs, g.csb = G2.cs;
      g.C = gb->data_ptr<scalar_t>(), g.ldc = g.N;
      cpu::gemm_batched<scalar_t>(g, nb, abs, grbs, reduces(other) ? 0 : g.M * g.N);
    }
  });
  return {ga, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedops, CPU, m) { FUSEDOPS_LINEAR_OPS(FUSEDOPS_IMPL_CPU) }

}  // namespace fusedops
