"""fusedops.ops.linear and its operators (linear, linear_act, linear_backward) against torch.

Values are checked per instruction set (the `isa` fixture) and dtype over shapes chosen to
hit the GEMM's edges: size 1, odd sizes, non-multiples of the microkernel tiles (AVX2 6x16,
AVX-512 14x32, generic 4x4; fp64 6x8 / 14x16), K past the 512-deep KC block, M over several
MC blocks, N past the 8192-wide NC block; then layouts (transposed, sliced, expanded), empty
dimensions, batched and 1-D inputs, gradients, gradcheck, opcheck, torch.compile, meta
tensors, autocast and bad input; the module fusedops.nn.Linear against torch.nn.Linear; the
CUDA kernels on the simulator (and a GPU when present).
"""
import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

import fusedops
from conftest import BACKENDS, check_close, dev, op
from conftest import DTYPES as CUDA_DTYPES
from conftest import assert_raises_named  # tests/ is on sys.path under pytest
from conftest import torch_activation as torch_act
from fusedops.nn import Linear
from fusedops.ops import linear

ops = torch.ops.fusedops
DTYPES = (torch.float32, torch.float64)
ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh")
GELUS = ("gelu", "gelu_tanh")


def act_id(a):
    return "none" if a is None else a


# (M, K, N)
SHAPES = [
    (1, 1, 1),
    (1, 7, 1),
    (7, 1, 7),
    (3, 5, 2),
    (4, 4, 4),  # generic tile exactly
    (5, 3, 5),
    (6, 16, 16),  # AVX2 fp32 tile exactly
    (7, 17, 15),
    (12, 31, 33),
    (14, 32, 32),  # AVX-512 fp32 tile exactly
    (15, 33, 63),
    (29, 64, 65),
    (97, 97, 97),
    (1, 255, 257),
    (257, 1, 255),
    (255, 257, 97),
    (33, 1023, 65),  # K over the KC block (512): the k loop accumulates into C
    (7, 1025, 17),
    (300, 600, 45),  # several MC blocks (138 rows fp32, 66 fp64 here) and two KC blocks
    (1023, 97, 7),
    (3, 5, 8200),  # N over the NC block (8192)
]


def shape_id(s):
    return "x".join(map(str, s))


def make(M, K, N, dtype, bias=True):
    x = torch.randn(M, K, dtype=dtype)
    w = torch.randn(N, K, dtype=dtype)
    b = torch.randn(N, dtype=dtype) if bias else None
    return x, w, b


# ---- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=act_id)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_values(isa, dtype, shape, activation, check):
    x, w, b = make(*shape, dtype)
    check.linear(linear(x, w, b, activation), x, w, b, activation)


@pytest.mark.parametrize("activation", (None, "gelu"), ids=act_id)
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 17, 15), (15, 33, 63), (33, 1023, 65)], ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_values_without_bias(isa, dtype, shape, activation, check):
    x, w, _ = make(*shape, dtype, bias=False)
    check.linear(linear(x, w, None, activation), x, w, None, activation)
    check.linear(ops.linear(x, w), x, w, None, None, "torch.ops.fusedops.linear(x, w)")


@pytest.mark.parametrize("activation", ("relu", "gelu", "gelu_tanh"))
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 17, 15), (29, 64, 65), (33, 1023, 65)], ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_linear_act_returns_output_and_preactivation(isa, dtype, shape, activation, check):
    x, w, b = make(*shape, dtype)
    out, pre = ops.linear_act(x, w, b, activation)
    check.linear(out, x, w, b, activation, "linear_act output")
    check.linear(pre, x, w, b, None, "linear_act pre-activation")
    # the output is the activation of the returned pre-activation, up to the activation's error
    eps = torch.finfo(dtype).eps
    again = check.activation(pre.double(), activation)
    assert ((out.double() - again).abs() <= 8 * eps * pre.double().abs() + 1e-30).all()


def test_activation_table_matches_torch(isa):
    # the activations at chosen points, including the regions where erf/tanh saturate
    z = torch.cat([torch.linspace(-12, 12, 2401), torch.tensor([0.0, -0.0, 1e-30, -1e-30])])
    x = z.reshape(-1, 1)
    w = torch.ones(1, 1)
    for activation in ("relu", "gelu", "gelu_tanh"):
        out = linear(x, w, None, activation).flatten()
        ref = F.gelu(z.double(), approximate="tanh" if activation == "gelu_tanh" else "none")
        if activation == "relu":
            ref = F.relu(z.double())
        err = (out.double() - ref).abs()
        assert (err <= 1e-6 * z.abs().double() + 1e-37).all(), (activation, err.max().item())


# ---- layouts: transposed, sliced, expanded, offset ---------------------------------------------


def _layouts(M, K, N, dtype):
    r = lambda *s: torch.randn(*s, dtype=dtype)  # noqa: E731
    x, w, b = r(M, K), r(N, K), r(N)
    B, T = 2, M // 2 or 1
    return {
        "x_transposed": (x.t().contiguous().t(), w, b),
        "w_transposed": (x, w.t().contiguous().t(), b),
        "both_transposed": (x.t().contiguous().t(), w.t().contiguous().t(), b),
        "x_sliced_cols": (r(M, 2 * K)[:, ::2], w, b),
        "x_sliced_rows": (r(2 * M, K)[::2], w, b),
        "x_offset": (r(M + 1, K + 3)[1:, 3:], w, b),
        "w_sliced_cols": (x, r(N, 2 * K)[:, ::2], b),
        "w_sliced_rows": (x, r(2 * N, K)[::2], b),
        "x_expanded_rows": (r(1, K).expand(M, K), w, b),
        "x_expanded_cols": (r(M, 1).expand(M, K), w, b),
        "w_expanded_rows": (x, r(1, K).expand(N, K), b),
        "w_expanded_cols": (x, r(N, 1).expand(N, K), b),
        "x_3d_permuted": (r(K, B, T).permute(1, 2, 0), w, b),
        "x_3d_batch_expanded": (r(1, T, K).expand(B, T, K), w, b),
        "x_3d_transposed_rows": (r(B, K, T).transpose(1, 2), w, b),
        "bias_sliced": (x, w, r(2 * N)[::2]),
        "bias_expanded": (x, w, r(1).expand(N)),
    }


LAYOUTS = list(_layouts(4, 4, 4, torch.float32))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(37, 45, 29), (20, 600, 40)], ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_layouts(isa, dtype, shape, layout, check):
    x, w, b = _layouts(*shape, dtype)[layout]
    assert not (x.is_contiguous() and w.is_contiguous() and b.is_contiguous())
    for activation in (None, "gelu"):
        check.linear(linear(x, w, b, activation), x, w, b, activation, f"{layout} {activation}")


def test_noncontiguous_large_bias_survives(python_subprocess):
    # A large non-contiguous bias: if the kernel kept a pointer into a temporary contiguous
    # copy, that copy (mmap-backed at this size) is gone before the GEMM reads it.
    res = python_subprocess(
        """
        import torch, fusedops
        x = torch.randn(2, 3); w = torch.randn(300_000, 3); b = torch.randn(600_000)[::2]
        for act in (None, "gelu"):
            out = fusedops.ops.linear(x, w, b, act)
            ref = torch.nn.functional.linear(x, w, b)
            ref = ref if act is None else torch.nn.functional.gelu(ref)
            print(act, (out - ref).abs().max().item())
            assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
        """
    )
    assert res.returncode == 0, f"rc {res.returncode}\n{res.stdout}\n{res.stderr[-2000:]}"


# ---- empty dimensions, batched and 1-D inputs --------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=act_id)
@pytest.mark.parametrize("shape", [(0, 5, 7), (5, 0, 7), (5, 7, 0), (0, 0, 0), (0, 0, 3), (9, 0, 17)],
                         ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_empty(isa, dtype, shape, activation, check):
    for bias in (True, False):
        x, w, b = make(*shape, dtype, bias)
        out = linear(x, w, b, activation)
        assert out.shape == (shape[0], shape[2])
        # K == 0: the product is zero, so the output is act(bias) (or act(0))
        check.linear(out, x, w, b, activation, f"bias={bias}")


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=act_id)
@pytest.mark.parametrize("shape", [(0, 5, 7), (5, 0, 7), (5, 7, 0)], ids=shape_id)
def test_empty_backward(isa, shape, activation):
    x, w, b = (t.requires_grad_() for t in make(*shape, torch.float64))
    linear(x, w, b, activation).sum().backward()
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
    F_out = torch_act(F.linear(xr, wr, br), activation)
    F_out.sum().backward()
    for ours, ref, name in ((x.grad, xr.grad, "input"), (w.grad, wr.grad, "weight"),
                            (b.grad, br.grad, "bias")):
        assert ours.shape == ref.shape, name
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0, msg=name)


@pytest.mark.parametrize(
    "in_shape", [(2, 3, 19), (2, 3, 4, 19), (19,), (1, 1, 19), (0, 3, 19), (3, 0, 19), (5, 1, 2, 1, 19)],
    ids=shape_id,
)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_batched_and_1d(isa, dtype, in_shape, check):
    x = torch.randn(*in_shape, dtype=dtype)
    w, b = torch.randn(23, 19, dtype=dtype), torch.randn(23, dtype=dtype)
    for activation in ACTIVATIONS:
        out = linear(x, w, b, activation)
        assert out.shape == (*in_shape[:-1], 23)
        assert out.is_contiguous()
        check.linear(out, x, w, b, activation, f"{in_shape} {activation}")


def test_values_with_one_and_two_threads(check):
    x, w, b = make(301, 257, 129, torch.float32)
    for n in (1, 2):
        torch.set_num_threads(n)
        check.linear(linear(x, w, b, "gelu"), x, w, b, "gelu", f"{n} threads")


# ---- gradients vs torch (fp32, realistic shapes) ----------------------------------------------


def _grads(fn, tensors, grad_out=None):
    out = fn(*tensors)
    if grad_out is None:
        out.sum().backward()  # an expanded (stride-0) incoming gradient
    else:
        out.backward(grad_out)
    return out, [None if t is None else t.grad for t in tensors]


def _compare_grads(x, w, b, activation, grad_out, check, what=""):
    """Gradients of our linear vs torch's, both in x's dtype, against float64."""
    leaves = lambda d: [None if t is None else t.detach().to(d).requires_grad_(t.requires_grad)  # noqa: E731
                        for t in (x, w, b)]
    ours_in, torch_in, truth_in = leaves(x.dtype), leaves(x.dtype), leaves(torch.float64)
    g64 = None if grad_out is None else grad_out.double()
    out, ours = _grads(lambda *t: linear(*t, activation), ours_in, grad_out)
    ref, theirs = _grads(lambda *t: torch_act(F.linear(*t), activation), torch_in, grad_out)
    tru, truth = _grads(lambda *t: torch_act(F.linear(*t), activation), truth_in, g64)
    check.budget(out.detach(), ref.detach(), tru.detach(), f"{what} output")
    for name, o, t, r, leaf in zip(("input", "weight", "bias"), ours, theirs, truth, ours_in):
        if leaf is None or not leaf.requires_grad:
            assert o is None, f"{what} {name}: gradient computed though not required"
            continue
        check.budget(o, t, r, f"{what} grad {name}")


@pytest.mark.parametrize("bias", (True, False), ids=("bias", "nobias"))
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=act_id)
@pytest.mark.parametrize("shape", [(2, 64, 256, 384), (1, 97, 255, 257), (3, 5, 700, 33)],
                         ids=shape_id)
def test_grad_vs_torch(isa, shape, activation, bias, check):
    B, T, K, N = shape
    x = torch.randn(B, T, K, requires_grad=True)
    w = (torch.randn(N, K) / K**0.5).requires_grad_()
    b = torch.randn(N, requires_grad=True) if bias else None
    _compare_grads(x, w, b, activation, torch.randn(B, T, N), check)


def _incoming(kind, B, T, N):
    if kind == "contiguous":
        return torch.randn(B, T, N)
    if kind == "transposed":
        return torch.randn(N, T, B).permute(2, 1, 0)
    if kind == "sliced":
        return torch.randn(B, T, 2 * N)[..., ::2]
    if kind == "expanded_rows":
        return torch.randn(1, 1, N).expand(B, T, N)
    if kind == "sum":
        return None  # out.sum().backward(): every stride 0
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["transposed", "sliced", "expanded_rows", "sum"])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=act_id)
def test_grad_incoming_layouts(isa, activation, kind, check):
    B, T, K, N = 3, 37, 70, 45
    x = torch.randn(B, T, K, requires_grad=True)
    w = torch.randn(N, K, requires_grad=True)
    b = torch.randn(N, requires_grad=True)
    g = _incoming(kind, B, T, N)
    assert g is None or not g.is_contiguous()
    _compare_grads(x, w, b, activation, g, check, kind)


MASKS = [(True, False, False), (False, True, False), (False, False, True), (True, True, False),
         (False, True, True), (True, False, True)]


@pytest.mark.parametrize("mask", MASKS, ids=lambda m: "".join("xwb"[i] for i in range(3) if m[i]))
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=act_id)
def test_grad_requires_grad_subsets(isa, activation, mask, check):
    x = torch.randn(2, 33, 40).requires_grad_(mask[0])
    w = torch.randn(24, 40).requires_grad_(mask[1])
    b = torch.randn(24).requires_grad_(mask[2])
    _compare_grads(x, w, b, activation, torch.randn(2, 33, 24), check, str(mask))


@pytest.mark.parametrize("mask", MASKS + [(True, True, True), (False, False, False)],
                         ids=lambda m: "".join("xwb"[i] for i in range(3) if m[i]) or "none")
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=act_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_linear_backward_op_mask(isa, dtype, activation, mask):
    x = torch.randn(2, 9, 17, dtype=dtype)
    w = torch.randn(11, 17, dtype=dtype)
    b = torch.randn(11, dtype=dtype)
    g = torch.randn(2, 9, 11, dtype=dtype)
    pre = F.linear(x, w, b)
    act_input = F.relu(pre) if activation == "relu" else pre
    got = ops.linear_backward(g, x, w, None if activation is None else act_input, activation, list(mask))
    xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
    torch_act(F.linear(xr, wr, br), activation).backward(g)
    for name, have, want, m in zip(("input", "weight", "bias"), got, (xr.grad, wr.grad, br.grad), mask):
        if not m:
            assert have is None, f"{name} not in output_mask but returned"
            continue
        tol = dict(rtol=2e-5, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(have, want, **tol, msg=name)


# ---- gradcheck (float64) ------------------------------------------------------------------------


@pytest.mark.parametrize("direct", (False, True), ids=("ops.linear", "torch.ops"))
@pytest.mark.parametrize("bias", (True, False), ids=("bias", "nobias"))
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=act_id)
@pytest.mark.parametrize("in_shape", [(3, 5), (2, 3, 5), (5,)], ids=shape_id)
def test_gradcheck(isa, in_shape, activation, bias, direct):
    x = torch.randn(*in_shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True) if bias else None
    fn = ops.linear if direct else linear
    assert gradcheck(lambda x, w, b: fn(x, w, b, activation), (x, w, b))


@pytest.mark.parametrize("activation", ("relu", "gelu", "gelu_tanh"))
def test_gradcheck_linear_act_both_outputs(activation):
    # linear_act is a public operator with two differentiable outputs: a gradient flowing
    # into the pre-activation must reach input, weight and bias too.
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x, w, b: ops.linear_act(x, w, b, activation), (x, w, b))


def test_grad_float64_matches_torch(isa):
    # gradients through a gelu linear match torch's to float64 precision
    x = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    for activation in ACTIVATIONS:
        ours = torch.autograd.grad(linear(x, w, b, activation).pow(2).sum(), (x, w, b))
        theirs = torch.autograd.grad(torch_act(F.linear(x, w, b), activation).pow(2).sum(), (x, w, b))
        for o, t in zip(ours, theirs):
            torch.testing.assert_close(o, t, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", ["linear", "linear_gelu", "matmul"])
def test_double_backward_is_correct_or_refused(op):
    # The backward operators have no autograd formula of their own: a second derivative must
    # then raise, never come out silently as zero.
    a = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    fns = {
        "linear": (lambda: linear(a, w, b), lambda: F.linear(a, w, b)),
        "linear_gelu": (lambda: linear(a, w, b, "gelu"), lambda: F.gelu(F.linear(a, w, b))),
        "matmul": (lambda: fusedops.ops.matmul(a, w.t()), lambda: torch.matmul(a, w.t())),
    }
    ours_fn, torch_fn = fns[op]
    (g_ref,) = torch.autograd.grad(torch_fn().pow(2).sum(), a, create_graph=True)
    (gg_ref,) = torch.autograd.grad(g_ref.pow(2).sum(), w)
    (g,) = torch.autograd.grad(ours_fn().pow(2).sum(), a, create_graph=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (gg,) = torch.autograd.grad(g.pow(2).sum(), w)
    except RuntimeError:
        return  # refused: acceptable
    torch.testing.assert_close(gg, gg_ref, msg="second derivative w.r.t. weight")


# ---- opcheck -----------------------------------------------------------------------------------


def _opcheck(op, args):
    torch.library.opcheck(op, args)  # raises OpCheckError naming the failed test


@pytest.mark.parametrize("requires_grad", (True, False), ids=("grad", "nograd"))
@pytest.mark.parametrize("bias", (True, False), ids=("bias", "nobias"))
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=act_id)
def test_opcheck_linear(activation, bias, requires_grad):
    x = torch.randn(2, 3, 5, requires_grad=requires_grad)
    w = torch.randn(4, 5, requires_grad=requires_grad)
    b = torch.randn(4, requires_grad=requires_grad) if bias else None
    _opcheck(ops.linear.default, (x, w, b, activation))


@pytest.mark.parametrize("requires_grad", (True, False), ids=("grad", "nograd"))
@pytest.mark.parametrize("activation", ("relu", "gelu", "gelu_tanh"))
def test_opcheck_linear_act(activation, requires_grad):
    x = torch.randn(7, 5, requires_grad=requires_grad)
    w = torch.randn(4, 5, requires_grad=requires_grad)
    b = torch.randn(4, requires_grad=requires_grad)
    _opcheck(ops.linear_act.default, (x, w, b, activation))
    _opcheck(ops.linear_act.default, (x, w, None, activation))


@pytest.mark.parametrize("mask", [(True, True, True), (True, False, False), (False, True, True)],
                         ids=lambda m: "".join("xwb"[i] for i in range(3) if m[i]))
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=act_id)
def test_opcheck_linear_backward(activation, mask):
    x, w = torch.randn(2, 3, 5), torch.randn(4, 5)
    g, z = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    act_input = None if activation is None else z
    _opcheck(ops.linear_backward.default, (g, x, w, act_input, activation, list(mask)))


# ---- torch.compile -------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=act_id)
def test_compile_aot_eager_forward_backward(activation):
    torch._dynamo.reset()

    def f(x, w, b):
        return linear(x, w, b, activation)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    x = torch.randn(3, 8, 16, requires_grad=True)
    w = torch.randn(12, 16, requires_grad=True)
    b = torch.randn(12, requires_grad=True)
    g = torch.randn(3, 8, 12)
    out_c = compiled(x, w, b)
    grads_c = torch.autograd.grad(out_c, (x, w, b), g)
    out_e = f(x, w, b)
    grads_e = torch.autograd.grad(out_e, (x, w, b), g)
    torch.testing.assert_close(out_c, out_e)
    for gc, ge in zip(grads_c, grads_e):
        torch.testing.assert_close(gc, ge)
    torch.testing.assert_close(out_e, torch_act(F.linear(x, w, b), activation), rtol=1e-5, atol=1e-5)


def test_compile_aot_eager_no_grad():
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, w: linear(x, w, None, "gelu"), fullgraph=True, backend="aot_eager")
    x, w = torch.randn(5, 16), torch.randn(7, 16)
    with torch.no_grad():
        out = compiled(x, w)
    torch.testing.assert_close(out, F.gelu(F.linear(x, w)), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_compile_inductor_smoke():
    torch._dynamo.reset()

    def f(x, w, b):
        return linear(x, w, b, "gelu_tanh") * 2 + 1

    compiled = torch.compile(f, fullgraph=True)
    x = torch.randn(4, 32, requires_grad=True)
    w = torch.randn(16, 32, requires_grad=True)
    b = torch.randn(16, requires_grad=True)
    out = compiled(x, w, b)
    out.sum().backward()
    ref = F.gelu(F.linear(x, w, b), approximate="tanh") * 2 + 1
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    gx, gw, gb = x.grad, w.grad, b.grad
    x.grad = w.grad = b.grad = None
    ref.sum().backward()
    torch.testing.assert_close(gx, x.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gw, w.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gb, b.grad, rtol=1e-4, atol=1e-4)


# ---- meta tensors --------------------------------------------------------------------------------


def _assert_like(meta, real, what):
    assert meta.device.type == "meta", what
    assert meta.shape == real.shape, f"{what}: shape {tuple(meta.shape)} != {tuple(real.shape)}"
    assert meta.dtype == real.dtype, f"{what}: dtype {meta.dtype} != {real.dtype}"
    assert meta.stride() == real.stride(), f"{what}: strides {meta.stride()} != {real.stride()}"


META_INPUTS = {
    "2d": lambda d: torch.randn(6, 5, dtype=d),
    "3d": lambda d: torch.randn(2, 3, 5, dtype=d),
    "4d": lambda d: torch.randn(2, 1, 3, 5, dtype=d),
    "1d": lambda d: torch.randn(5, dtype=d),
    "3d_permuted": lambda d: torch.randn(5, 3, 2, dtype=d).permute(2, 1, 0),
    "empty": lambda d: torch.randn(0, 5, dtype=d),
}


@pytest.mark.parametrize("kind", list(META_INPUTS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_meta_matches_real(dtype, kind):
    x = META_INPUTS[kind](dtype)
    w = torch.randn(4, 5, dtype=dtype).t().contiguous().t()
    b = torch.randn(4, dtype=dtype)
    meta = lambda t: None if t is None else t.to("meta")  # noqa: E731
    for activation in ACTIVATIONS:
        _assert_like(linear(meta(x), meta(w), meta(b), activation),
                     linear(x, w, b, activation), f"linear {activation}")
    for activation in ("relu", "gelu"):
        for m, r in zip(ops.linear_act(meta(x), meta(w), meta(b), activation),
                        ops.linear_act(x, w, b, activation)):
            _assert_like(m, r, "linear_act")
    g = torch.randn(*x.shape[:-1], 4, dtype=dtype)
    z = torch.randn(*x.shape[:-1], 4, dtype=dtype)
    for mask in ([True, True, True], [False, True, False]):
        got = ops.linear_backward(meta(g), meta(x), meta(w), meta(z), "gelu", mask)
        want = ops.linear_backward(g, x, w, z, "gelu", mask)
        for m, r, name in zip(got, want, ("input", "weight", "bias")):
            if r is None:
                assert m is None, f"linear_backward meta {name}: not None"
            else:
                _assert_like(m, r, f"linear_backward {name}")


def test_meta_backward_through_autograd():
    x = torch.randn(2, 3, 5, device="meta", requires_grad=True)
    w = torch.randn(4, 5, device="meta", requires_grad=True)
    b = torch.randn(4, device="meta", requires_grad=True)
    for activation in ACTIVATIONS:
        x.grad = w.grad = b.grad = None
        linear(x, w, b, activation).sum().backward()
        assert x.grad.shape == x.shape and w.grad.shape == w.shape and b.grad.shape == b.shape


# ---- autocast ------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=act_id)
@pytest.mark.parametrize("in_dtype", (torch.float32, torch.bfloat16), ids=str)
def test_autocast_bf16(activation, in_dtype, check):
    x = torch.randn(4, 33, 64).to(in_dtype).requires_grad_()
    w = torch.randn(48, 64).requires_grad_()
    b = torch.randn(48).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear(x, w, b, activation)
        theirs = torch_act(F.linear(x, w, b), activation)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    truth = torch_act(F.linear(x.double(), w.double(), b.double()), activation)
    # ours computes in fp32 and rounds once; torch rounds the inputs to bf16 first
    check.budget(ours.detach(), theirs.detach(), truth, "autocast output", floor_ulps=2)
    g = torch.randn_like(ours, dtype=torch.float32).to(ours.dtype)
    ours_grads = torch.autograd.grad(ours, (x, w, b), g)
    theirs_grads = torch.autograd.grad(theirs, (x, w, b), g)
    truth_leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    truth_out = torch_act(F.linear(*truth_leaves), activation)
    truth_grads = torch.autograd.grad(truth_out, truth_leaves, g.double())
    for name, o, t, r, leaf in zip(("input", "weight", "bias"), ours_grads, theirs_grads, truth_grads,
                                    (x, w, b)):
        assert o.dtype == leaf.dtype, f"grad {name}: dtype {o.dtype} != {leaf.dtype}"
        check.budget(o, t.to(o.dtype), r, f"autocast grad {name}", floor_ulps=2)


def test_autocast_float64_stays_float64(check):
    x, w, b = make(5, 7, 3, torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = linear(x, w, b, "gelu")
        ref = F.linear(x, w, b)
    assert out.dtype == ref.dtype == torch.float64
    check.linear(out, x, w, b, "gelu")


# ---- bad input -------------------------------------------------------------------------------------


def _f32(*s):
    return torch.randn(*s)


BAD_LINEAR = {
    # name: (args for linear, exception, words the message must contain)
    "input_0d": ((torch.tensor(1.0), _f32(4, 1), None), RuntimeError, ["input"]),
    "weight_1d": ((_f32(3, 5), _f32(5), None), RuntimeError, ["weight", "2-D"]),
    "weight_3d": ((_f32(3, 5), _f32(3, 4, 5), None), RuntimeError, ["weight", "[3, 4, 5]"]),
    "in_features_mismatch": ((_f32(3, 5), _f32(4, 6), None), RuntimeError,
                             ["input", "weight", "in_features"]),
    "input_int": ((torch.ones(3, 5, dtype=torch.int64), _f32(4, 5), None), TypeError, ["input"]),
    "weight_int": ((_f32(3, 5), torch.ones(4, 5, dtype=torch.int32), None), TypeError, ["weight"]),
    "input_f16": ((_f32(3, 5).half(), _f32(4, 5).half(), None), TypeError, ["input", "float32"]),
    "mixed_f32_f64": ((_f32(3, 5), _f32(4, 5).double(), None), TypeError, ["weight", "input"]),
    "mixed_f64_f32": ((_f32(3, 5).double(), _f32(4, 5), None), TypeError, ["weight", "input"]),
    "bias_wrong_length": ((_f32(3, 5), _f32(4, 5), _f32(5)), RuntimeError, ["bias", "[5]"]),
    "bias_2d": ((_f32(3, 5), _f32(4, 5), _f32(1, 4)), RuntimeError, ["bias"]),
    "bias_0d": ((_f32(3, 5), _f32(4, 5), torch.tensor(1.0)), RuntimeError, ["bias"]),
    "bias_f64": ((_f32(3, 5), _f32(4, 5), _f32(4).double()), TypeError, ["bias"]),
    "bias_int": ((_f32(3, 5), _f32(4, 5), torch.ones(4, dtype=torch.int64)), TypeError, ["bias"]),
}


@pytest.mark.parametrize("case", list(BAD_LINEAR))
def test_bad_input_linear(case):
    args, exc, words = BAD_LINEAR[case]
    assert_raises_named(lambda: linear(*args), exc, words, "linear")
    assert_raises_named(lambda: ops.linear(*args, "relu"), exc, words, "linear")
    assert_raises_named(lambda: ops.linear_act(*args, "gelu"), exc, words, "linear_act")


@pytest.mark.parametrize("name", ["tanh", "GELU", "", "none"])
def test_bad_activation_name(name):
    x, w = _f32(3, 5), _f32(4, 5)
    assert_raises_named(lambda: linear(x, w, None, name), ValueError, ["activation", repr(name)], "linear")
    if name != "none":  # the operator itself spells "no activation" as None or "none"
        assert_raises_named(lambda: ops.linear(x, w, None, name), RuntimeError, ["activation", name], "linear")
        assert_raises_named(lambda: ops.linear_act(x, w, None, name), RuntimeError, ["activation"], "linear_act")
        assert_raises_named(lambda: ops.linear_backward(_f32(3, 4), x, w, _f32(3, 4), name, [True] * 3),
                       RuntimeError, ["activation"], "linear_backward")


BAD_LINEAR_BACKWARD = {
    # name: (grad_output, input, weight, act_input, activation), exception, words in the message
    "grad_output_shape": ((_f32(3, 5), _f32(3, 5), _f32(4, 5), None, None), RuntimeError,
                          ["grad_output", "[3, 4]"]),
    "grad_output_int": ((torch.ones(3, 4, dtype=torch.int64), _f32(3, 5), _f32(4, 5), None, None), TypeError,
                        ["grad_output"]),
    "grad_output_f64": ((_f32(3, 4).double(), _f32(3, 5), _f32(4, 5), None, None), TypeError,
                        ["grad_output"]),
    "act_input_missing": ((_f32(3, 4), _f32(3, 5), _f32(4, 5), None, "gelu"), RuntimeError, ["act_input"]),
    "act_input_shape": ((_f32(3, 4), _f32(3, 5), _f32(4, 5), _f32(4, 3), "relu"), RuntimeError,
                        ["act_input"]),
    "act_input_f64": ((_f32(3, 4), _f32(3, 5), _f32(4, 5), _f32(3, 4).double(), "gelu"), TypeError,
                      ["act_input"]),
    "weight_mismatch": ((_f32(3, 4), _f32(3, 5), _f32(4, 6), None, None), RuntimeError, ["in_features"]),
}


@pytest.mark.parametrize("case", list(BAD_LINEAR_BACKWARD))
def test_bad_input_linear_backward(case):
    args, exc, words = BAD_LINEAR_BACKWARD[case]
    assert_raises_named(lambda: ops.linear_backward(*args, [True, True, True]), exc, words, "linear_backward")


@pytest.mark.parametrize("case", [c for c in BAD_LINEAR if BAD_LINEAR[c][1] is RuntimeError])
def test_bad_shapes_rejected_on_meta(case):
    # the fake (meta) implementation refuses what the CPU kernel refuses, instead of inventing
    # an output shape for torch.compile to trace with
    args, _, _ = BAD_LINEAR[case]
    meta_args = [None if a is None else a.to("meta") for a in args]
    with pytest.raises(RuntimeError, match="fusedops.linear"):
        linear(*meta_args)


def test_bad_input_never_crashes_process(python_subprocess):
    # every rejected call, in a process of its own: a crash shows as a failed test
    res = python_subprocess(
        """
        import torch, fusedops
        ops = torch.ops.fusedops
        f = torch.randn
        calls = [
            lambda: ops.linear(f(3, 5), f(4, 6)),
            lambda: ops.linear(f(3, 5), f(4, 5), f(7)),
            lambda: ops.linear(torch.tensor(1.0), f(4, 1)),
            lambda: ops.linear_backward(f(3, 4), f(3, 5), f(4, 5), f(2, 2), "gelu", [True] * 3),
            lambda: ops.linear_backward(f(2, 4), f(3, 5), f(4, 5), None, None, [True] * 3),
            lambda: ops.matmul(f(3, 5), f(4, 6)),
            lambda: ops.matmul(f(2, 3, 5), f(3, 5, 6)),
            lambda: ops.matmul_backward(f(2, 2), f(3, 5), f(5, 6), [True, True]),
        ]
        for c in calls:
            try:
                c()
            except (RuntimeError, TypeError, ValueError) as e:
                assert "fusedops." in str(e), e
            else:
                raise SystemExit("no error raised")
        print("ok")
        """
    )
    assert res.returncode == 0 and "ok" in res.stdout, f"rc {res.returncode}\n{res.stderr[-2000:]}"

# ---- fusedops.nn.Linear: a drop-in torch.nn.Linear (same init, parameters, state_dict, repr) ----

def pair(in_features, out_features, seed=0, **kwargs):
    torch.manual_seed(seed)
    theirs = torch.nn.Linear(in_features, out_features, **kwargs)
    torch.manual_seed(seed)
    ours = Linear(in_features, out_features, **kwargs)
    return ours, theirs


# ---- construction ------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", (True, False))
@pytest.mark.parametrize("features", [(1, 1), (7, 3), (64, 96), (300, 17)], ids=lambda f: f"{f[0]}x{f[1]}")
def test_same_parameters_as_torch_under_same_seed(features, bias):
    ours, theirs = pair(*features, bias=bias)
    assert isinstance(ours, torch.nn.Linear)
    assert (ours.in_features, ours.out_features) == features
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert p.shape == q.shape and p.dtype == q.dtype, name
        assert torch.equal(p, q), f"{name} differs from torch's initialisation"
        assert p.requires_grad
    if not bias:
        assert ours.bias is None


def test_different_seed_gives_different_parameters():
    # the bitwise equality above is not an accident of a fixed initialisation
    a, _ = pair(8, 4, seed=0)
    b, _ = pair(8, 4, seed=1)
    assert not torch.equal(a.weight, b.weight)


@pytest.mark.parametrize("bias", (True, False))
def test_state_dict_keys_and_order(bias):
    ours, theirs = pair(5, 3, bias=bias)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert list(ours.state_dict()) == (["weight", "bias"] if bias else ["weight"])
    for k, v in ours.state_dict().items():
        assert torch.equal(v, theirs.state_dict()[k])


@pytest.mark.parametrize("bias", (True, False))
def test_load_state_dict_both_ways(bias, check):
    x = torch.randn(4, 7, 19)
    torch_model = torch.nn.Linear(19, 11, bias=bias)
    fused = Linear(19, 11, bias=bias)
    assert not torch.equal(fused.weight, torch_model.weight)
    fused.load_state_dict(torch_model.state_dict())
    check.linear(fused(x), x, torch_model.weight, torch_model.bias, None, "torch -> fused")
    torch.testing.assert_close(fused(x), torch_model(x), rtol=1e-5, atol=1e-5)

    fused2 = Linear(19, 11, bias=bias)
    torch_model2 = torch.nn.Linear(19, 11, bias=bias)
    torch_model2.load_state_dict(fused2.state_dict())
    torch.testing.assert_close(torch_model2(x), fused2(x), rtol=1e-5, atol=1e-5)


def test_load_state_dict_strict_errors_like_torch():
    fused = Linear(4, 3)
    with pytest.raises(RuntimeError, match="Missing key"):
        fused.load_state_dict({"weight": torch.zeros(3, 4)})
    with pytest.raises(RuntimeError, match="size mismatch"):
        fused.load_state_dict({"weight": torch.zeros(3, 5), "bias": torch.zeros(3)})


@pytest.mark.parametrize("bias", (True, False))
def test_repr(bias):
    ours, theirs = pair(12, 5, bias=bias)
    assert repr(ours) == repr(theirs)
    assert ours.extra_repr() == f"in_features=12, out_features=5, bias={bias}"


def test_dtype_and_device_kwargs(check):
    ours, theirs = pair(9, 6, dtype=torch.float64)
    assert ours.weight.dtype == ours.bias.dtype == torch.float64
    assert torch.equal(ours.weight, theirs.weight)
    x = torch.randn(3, 9, dtype=torch.float64)
    out = ours(x)
    assert out.dtype == torch.float64
    check.linear(out, x, ours.weight, ours.bias)

    cpu = Linear(9, 6, device="cpu")
    assert cpu.weight.device.type == "cpu"

    meta = Linear(9, 6, device="meta")
    assert meta.weight.device.type == "meta" and meta.bias.device.type == "meta"
    y = meta(torch.randn(2, 5, 9, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, 5, 6)


def test_to_dtype_and_deepcopy(check):
    ours, _ = pair(10, 4)
    ours64 = copy.deepcopy(ours).double()
    assert type(ours64) is Linear
    x = torch.randn(6, 10, dtype=torch.float64)
    check.linear(ours64(x), x, ours64.weight, ours64.bias)
    assert ours.weight.dtype == torch.float32  # the copy did not alias


# ---- forward and backward ------------------------------------------------------------------------


@pytest.mark.parametrize("in_shape", [(19,), (8, 19), (2, 8, 19), (2, 3, 4, 19), (0, 19)],
                         ids=lambda s: "x".join(map(str, s)))
def test_forward_matches_torch(isa, in_shape, check):
    ours, theirs = pair(19, 23)
    x = torch.randn(*in_shape)
    out = ours(x)
    assert out.shape == theirs(x).shape
    check.linear(out, x, theirs.weight, theirs.bias)


@pytest.mark.parametrize("bias", (True, False))
def test_gradients_match_torch(isa, bias, check):
    ours, theirs = pair(256, 384, bias=bias)
    truth = torch.nn.Linear(256, 384, bias=bias).double()
    truth.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 64, 256)
    xs = [x.clone().requires_grad_() for _ in range(2)] + [x.double().requires_grad_()]
    g = torch.randn(4, 64, 384)
    for module, xi, gi in zip((ours, theirs, truth), xs, (g, g, g.double())):
        module(xi).backward(gi)
    check.budget(xs[0].grad, xs[1].grad, xs[2].grad, "grad input")
    check.budget(ours.weight.grad, theirs.weight.grad, truth.weight.grad, "grad weight")
    if bias:
        check.budget(ours.bias.grad, theirs.bias.grad, truth.bias.grad, "grad bias")


def test_frozen_weight_and_no_grad():
    ours, theirs = pair(16, 8)
    ours.weight.requires_grad_(False)
    x = torch.randn(5, 16, requires_grad=True)
    ours(x).sum().backward()
    assert ours.weight.grad is None
    assert ours.bias.grad is not None and x.grad is not None
    with torch.no_grad():
        y = ours(torch.randn(5, 16))
    assert not y.requires_grad


def test_training_steps_track_torch():
    # an MLP of our layers and one of torch's, same init, same data, 20 SGD steps
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.GELU(), torch.nn.Linear(32, 3))
    ours = torch.nn.Sequential(Linear(12, 32), torch.nn.GELU(), Linear(32, 3))
    ours.load_state_dict(theirs.state_dict())
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.1)
    opt_o = torch.optim.SGD(ours.parameters(), lr=0.1)
    x, y = torch.randn(64, 12), torch.randint(0, 3, (64,))
    losses = []
    for _ in range(20):
        for model, opt in ((theirs, opt_t), (ours, opt_o)):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    lt, lo = losses[0::2], losses[1::2]
    assert lo[-1] < lo[0]  # it learns
    for a, b in zip(lt, lo):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (lt, lo)
    for (n, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=n)


# ---- torch.compile ------------------------------------------------------------------------------


def test_compile_mlp_aot_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(Linear(16, 32), torch.nn.ReLU(), Linear(32, 32, bias=False),
                                torch.nn.GELU(), Linear(32, 4))
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(8, 16)
    out_c, out_e = compiled(x), eager(x)
    torch.testing.assert_close(out_c, out_e)
    out_c.square().sum().backward()
    out_e.square().sum().backward()
    for (n, p), (_, q) in zip(model.named_parameters(), eager.named_parameters()):
        assert p.grad is not None, n
        torch.testing.assert_close(p.grad, q.grad, msg=n)


# ---- autocast --------------------------------------------------------------------------------


def test_autocast_bf16_module(check):
    ours, theirs = pair(64, 48)
    x = torch.randn(7, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = ours(x), theirs(x)
    assert a.dtype == b.dtype == torch.bfloat16
    truth = F.linear(x.double(), theirs.weight.double(), theirs.bias.double())
    check.budget(a, b, truth, "autocast nn.Linear", floor_ulps=2)
    a.float().sum().backward()
    assert ours.weight.grad is not None and ours.weight.grad.dtype == torch.float32

# ---- the CUDA kernels: on the simulator (`fusedops_sim`, CPU tensors, in every build) and on a
# GPU when one is present. Low precision follows the error-budget rule of conftest.check_close:
# |ours - ref64| <= 2 |torch_lowp - ref64| + tiny, torch computing in the same dtype on the CPU.

CUDA_SHAPES = [(1, 1, 1), (7, 16, 33), (33, 65, 7), (65, 33, 64), (40, 133, 24), (130, 70, 129)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", CUDA_DTYPES)
@pytest.mark.parametrize("M,N,K", CUDA_SHAPES)
@pytest.mark.parametrize("activation", [None, "relu", "gelu", "gelu_tanh"])
def test_cuda_linear_forward(backend, dtype, M, N, K, activation):
    torch.manual_seed(M * 1000 + N * 10 + K)
    x, w, b = torch.randn(M, K), torch.randn(N, K) / K**0.5, torch.randn(N)
    acts = {None: lambda t: t, "relu": F.relu, "gelu": F.gelu,
            "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}
    ref = acts[activation](F.linear(x.double(), w.double(), b.double()))
    lowp = acts[activation](F.linear(x.to(dtype), w.to(dtype), b.to(dtype)))
    d = dev(backend)
    out = op(backend, "linear")(x.to(d, dtype), w.to(d, dtype), b.to(d, dtype), activation)
    assert out.dtype == dtype and out.shape == (M, N)
    check_close(out, ref, lowp, dtype, "linear")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", CUDA_DTYPES)
def test_cuda_linear_strided_and_batched(backend, dtype):
    torch.manual_seed(0)
    d = dev(backend)
    x = torch.randn(3, 17, 2 * 40)[..., ::2]            # non-contiguous input, 3-D
    w = torch.randn(40, 29).t()                         # transposed weight [29, 40]
    ref = F.linear(x.double(), w.double())
    lowp = F.linear(x.to(dtype), w.to(dtype))
    out = op(backend, "linear")(x.to(d, dtype), w.to(d, dtype), None, None)
    check_close(out, ref, lowp, dtype, "linear strided")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", CUDA_DTYPES)
@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
def test_cuda_linear_backward(backend, dtype, activation):
    torch.manual_seed(1)
    M, N, K = 37, 45, 70
    x, w, b = torch.randn(M, K), torch.randn(N, K) / K**0.5, torch.randn(N)
    g = torch.randn(M, N)
    z = F.linear(x, w, b)
    act_in = F.relu(z) if activation == "relu" else z
    mask = [True, True, True]
    ref = torch.ops.fusedops.linear_backward(g.double(), x.double(), w.double(),
                                             act_in.double(), activation, mask)
    lowp = torch.ops.fusedops.linear_backward(  # a float32 CPU run of the low-precision inputs
        g.to(dtype).float(), x.to(dtype).float(), w.to(dtype).float(),
        act_in.to(dtype).float(), activation, mask)
    d = dev(backend)
    ours = op(backend, "linear_backward")(g.to(d, dtype), x.to(d, dtype), w.to(d, dtype),
                                          act_in.to(d, dtype), activation, mask)
    for name, o, r, lp in zip(("grad_input", "grad_weight", "grad_bias"), ours, ref, lowp):
        # the low-precision budget: rounding the inputs plus rounding the result to `dtype`
        lp = lp.to(dtype) if dtype in (torch.float16, torch.bfloat16) else lp
        check_close(o, r, lp, dtype, name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_bad_input(backend):
    d = dev(backend)
    f = op(backend, "linear")
    with pytest.raises(TypeError, match="fusedops.linear: input"):
        f(torch.ones(2, 3, dtype=torch.int32, device=d), torch.ones(4, 3, device=d), None, None)
    with pytest.raises(RuntimeError, match="fusedops.linear: weight must be 2-D"):
        f(torch.ones(2, 3, device=d), torch.ones(4, 3, 1, device=d), None, None)
    with pytest.raises(TypeError, match="fusedops.matmul: other must have the dtype"):
        op(backend, "matmul")(torch.ones(2, 3, device=d), torch.ones(3, 4, dtype=torch.float64, device=d))
