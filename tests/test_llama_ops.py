"""The Llama-family fused ops against torch: rms_norm / add_rms_norm (and fusedops.nn.RMSNorm),
rotary_embedding / rotary_embedding_ (rotate-half convention, strided q/k, grouped-query heads,
partial rotary) and swiglu (two tensors or the halves of one). Per op: values per instruction
set over edge shapes (size 1, odd sizes, SIMD tails, non-contiguous, empty) against torch's
composite and a float64 reference, gradients (float32 against torch within the error budget,
float64 gradcheck), opcheck, torch.compile, meta tensors, autocast, bfloat16 against float64
within the budget, the same bits for 1 and 2 threads, and the CUDA kernels on the simulator
(and a GPU when present) against the CPU ops.

bf16 budget (all three ops): max |ours - fp64| <= 2 max |torch_bf16 - fp64| + 16 bf16 ulps of
the largest value (conftest.assert_within_budget), for outputs and every gradient.
"""
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

import fusedops
from conftest import BACKENDS, START_ISA, assert_raises_named, check_close, dev, op
from fusedops.ops import add_rms_norm, rms_norm, rotary_embedding, rotary_embedding_, swiglu

ops = torch.ops.fusedops
FLOATS = (torch.float32, torch.float64)
BF = torch.bfloat16
ROWS = (1, 3, 17, 97, 384, 767, 1029)


def f64(t):
    return None if t is None else t.detach().double()


def _grads(fn, leaves, g):
    out = fn(*leaves)
    torch.autograd.backward(out, g)
    return out, [None if t is None else t.grad for t in leaves]


def _leaves(ts, dtype):
    return [None if t is None else t.detach().to(dtype).requires_grad_(t.requires_grad) for t in ts]


# ---- references -------------------------------------------------------------------------------


def hf_rms_norm(x, w, eps):
    """Hugging Face's LlamaRMSNorm.forward."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * xf.to(x.dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def ref_rotary(q, k, cos, sin):
    """Hugging Face's apply_rotary_pos_emb (cos/sin [B, T, R] or [T, R], unsqueezed at dim 1),
    with the first R features rotated and the rest passed through (partial rotary)."""
    c = cos.unsqueeze(1) if cos.dim() == 3 else (cos if cos.dim() == 4 else cos[None, None])
    s = sin.unsqueeze(1) if sin.dim() == 3 else (sin if sin.dim() == 4 else sin[None, None])
    r = c.shape[-1]

    def one(x):
        xr = x[..., :r] * c + rotate_half(x[..., :r]) * s
        return torch.cat((xr, x[..., r:]), dim=-1)

    return one(q), one(k)


def rope_tables(B, T, R, dtype=torch.float32, batched=True, base=10000.0):
    """cos/sin as Hugging Face's LlamaRotaryEmbedding builds them (positions per batch row)."""
    inv = 1.0 / (base ** (torch.arange(0, R, 2, dtype=torch.float64) / R))
    pos = torch.arange(T, dtype=torch.float64)[None].expand(B, T) + torch.arange(B)[:, None] * 3
    freqs = pos[..., None] * inv
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    return (cos, sin) if batched else (cos[0], sin[0])


def rope_close(got, want):
    """Rotary outputs against torch's composite: each output of ours is one FMA over a rounded
    product, torch's two rounded products and an add; they differ by at most a few roundings."""
    for a, b in zip(got, want):
        eps = torch.finfo(a.dtype).eps
        torch.testing.assert_close(a, b, rtol=4 * eps, atol=4 * eps * max(b.abs().max().item(), 1.0) if b.numel() else 0)


def qk_views(B, T, Hq, Hk, D, dtype=torch.float32):
    """q and k as attention sees them: projections [B, T, H * D] viewed as [B, H, T, D]."""
    q = torch.randn(B, T, Hq * D, dtype=dtype).view(B, T, Hq, D).transpose(1, 2)
    k = torch.randn(B, T, Hk * D, dtype=dtype).view(B, T, Hk, D).transpose(1, 2)
    return q, k


# ---- the operator contract ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rms_norm", "add_rms_norm", "rotary_embedding", "rotary_embedding_", "swiglu"])
def test_schema_matches_python_signature(name):
    schema = getattr(ops, name).default._schema
    params = inspect.signature(getattr(fusedops.ops, name)).parameters
    assert [a.name for a in schema.arguments] == list(params), (str(schema), list(params))
    for arg in schema.arguments:
        p = params[arg.name]
        assert arg.has_default_value() == (p.default is not inspect.Parameter.empty), arg.name
        if arg.has_default_value():
            assert arg.default_value == p.default, arg.name


@pytest.mark.parametrize("name", ["rms_norm", "add_rms_norm", "rotary_embedding", "swiglu"])
def test_backward_op_exists(name):
    schema = getattr(ops, f"{name}_backward").default._schema
    assert schema.arguments[-1].name in ("output_mask", "sin")


# ---- RMSNorm: values ----------------------------------------------------------------------------


@pytest.mark.parametrize("affine", (True, False), ids=("w", "none"))
@pytest.mark.parametrize("n", ROWS)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_rms_norm_values(isa, dtype, n, affine, check):
    x = torch.randn(5, 7, n, dtype=dtype) * 3 + 1
    w = torch.randn(n, dtype=dtype) if affine else None
    ours = rms_norm(x, w, 1e-6)
    check.budget(ours, F.rms_norm(x, (n,), w, 1e-6), F.rms_norm(f64(x), (n,), f64(w), 1e-6), f"rms_norm n={n}")
    assert ours.shape == x.shape and ours.is_contiguous()
    if dtype == torch.float32 and affine:
        torch.testing.assert_close(ours, hf_rms_norm(x, w, 1e-6), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64, BF), ids=str)
def test_rms_norm_default_eps_is_torchs(dtype):
    # tiny rows: the eps decides the result (float32's epsilon for a bfloat16 input, as torch)
    x = (torch.randn(4, 8) * 1e-4).to(dtype)
    w = torch.randn(8, dtype=dtype)
    torch.testing.assert_close(rms_norm(x, w).double(), F.rms_norm(x.double(), (8,), w.double(),
                                                                    torch.finfo(torch.float64 if dtype == torch.float64
                                                                                else torch.float32).eps),
                               rtol=2e-2 if dtype == BF else 1e-5, atol=1e-6)
    assert not torch.allclose(rms_norm(x, w).double(), rms_norm(x, w, 1e-2).double())


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4), (1,), (7, 1)], ids=str)
def test_rms_norm_multidim(isa, shape, check):
    x = torch.randn(2, 3, *shape)
    w = torch.randn(*shape)
    check.budget(rms_norm(x, w), F.rms_norm(x, shape, w), F.rms_norm(f64(x), shape, f64(w)), f"{shape}")
    # without a weight, normalized_shape says which dimensions
    check.budget(rms_norm(x, None, 1e-5, shape), F.rms_norm(x, shape, None, 1e-5),
                 F.rms_norm(f64(x), shape, None, 1e-5), f"{shape} no weight")


@pytest.mark.parametrize("n", (1, 3, 97, 767))
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_add_rms_norm_values(isa, dtype, n, check):
    x, r = torch.randn(3, 11, n, dtype=dtype), torch.randn(3, 11, n, dtype=dtype)
    w = torch.randn(n, dtype=dtype)
    out, s = add_rms_norm(x, r, w, 1e-5)
    assert torch.equal(s, x + r)
    check.budget(out, F.rms_norm(x + r, (n,), w, 1e-5), F.rms_norm(f64(x) + f64(r), (n,), f64(w), 1e-5), "add")
    out2, s2 = ops.add_rms_norm(x, r, w, 1e-5)
    assert torch.equal(out2, out) and torch.equal(s2, s)


def test_rms_norm_stats_are_rstd(isa):
    x = torch.randn(4, 6, 33, dtype=torch.float64)
    out, rstd = ops.rms_norm_stats(x, None, 1e-5, None)
    assert rstd.shape == (4, 6) and rstd.dtype == torch.float64
    torch.testing.assert_close(rstd, (x.pow(2).mean(-1) + 1e-5).rsqrt())
    assert torch.equal(out, ops.rms_norm(x, None, 1e-5))
    _, rstd32 = ops.rms_norm_stats(x.to(BF), None, None, None)
    assert rstd32.dtype == torch.float32


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_rms_norm_noncontiguous(isa, dtype, check):
    w = torch.randn(2 * 97, dtype=dtype)[::2]
    for t in (torch.randn(40, 2 * 97, dtype=dtype)[:, ::2], torch.randn(97, 40, dtype=dtype).t()):
        assert not t.is_contiguous()
        check.budget(rms_norm(t, w), F.rms_norm(t, (97,), w), F.rms_norm(f64(t), (97,), f64(w)), "non-contiguous")


@pytest.mark.parametrize("lead,n", [((0,), 5), ((3, 0), 5), ((4,), 0), ((0,), 0)], ids=str)
def test_rms_norm_empty(isa, lead, n):
    x = torch.randn(*lead, n, dtype=torch.float64, requires_grad=True)
    w = torch.randn(n, dtype=torch.float64, requires_grad=True)
    out = rms_norm(x, w)
    assert out.shape == x.shape
    out.sum().backward()
    xr, wr = (t.detach().clone().requires_grad_() for t in (x, w))
    F.rms_norm(xr, (n,), wr).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(w.grad, wr.grad)


def test_rms_norm_threads_same_bits():
    x, w = torch.randn(301, 257), torch.randn(257)
    r = torch.randn_like(x)
    g = torch.randn_like(x)
    res = []
    for n in (1, 2):
        torch.set_num_threads(n)
        out, s, rstd = ops.add_rms_norm_stats(x, r, w, 1e-5, None)
        res.append((out, s, rstd, *ops.add_rms_norm_backward(g, g, s, rstd, w, None, [True, True])))
    for a, b in zip(*res):
        assert torch.equal(a, b)


# ---- RMSNorm: gradients -------------------------------------------------------------------------


@pytest.mark.parametrize("affine", (True, False), ids=("w", "none"))
@pytest.mark.parametrize("n", (1, 3, 97, 384, 768))
def test_rms_norm_grad_vs_torch(isa, n, affine, check):
    x = (torch.randn(4, 65, n) * 2 + 0.5).requires_grad_()
    w = torch.randn(n).requires_grad_() if affine else None
    g = torch.randn(4, 65, n)
    o, ours = _grads(lambda x, w: rms_norm(x, w, 1e-6), _leaves((x, w), torch.float32), g)
    t, theirs = _grads(lambda x, w: F.rms_norm(x, (n,), w, 1e-6), _leaves((x, w), torch.float32), g)
    tr, truth = _grads(lambda x, w: F.rms_norm(x, (n,), w, 1e-6), _leaves((x, w), torch.float64), g.double())
    check.budget(o.detach(), t.detach(), tr.detach(), "output")
    for name, a, b, c in zip(("input", "weight"), ours, theirs, truth):
        if c is None:
            assert a is None
        else:
            check.budget(a, b, c, f"grad {name}", scale=float(g.abs().max()))


@pytest.mark.parametrize("use_sum", (False, True), ids=("out", "out+sum"))
@pytest.mark.parametrize("n", (3, 97, 384))
def test_add_rms_norm_grad_vs_torch(isa, n, use_sum, check):
    x, r, w = torch.randn(5, 33, n), torch.randn(5, 33, n), torch.randn(n)
    for t in (x, r, w):
        t.requires_grad_()
    g, gs = torch.randn_like(x), torch.randn_like(x)

    def ours_fn(x, r, w):
        out, s = add_rms_norm(x, r, w)
        return (out, s) if use_sum else out

    def torch_fn(x, r, w):
        s = x + r
        return (F.rms_norm(s, (n,), w), s) if use_sum else F.rms_norm(s, (n,), w)

    grad = (g, gs) if use_sum else g
    _, ours = _grads(ours_fn, _leaves((x, r, w), torch.float32), grad)
    _, theirs = _grads(torch_fn, _leaves((x, r, w), torch.float32), grad)
    _, truth = _grads(lambda x, r, w: (lambda s: (F.rms_norm(s, (n,), w, torch.finfo(torch.float32).eps), s)
                                       if use_sum else F.rms_norm(s, (n,), w, torch.finfo(torch.float32).eps))(x + r),
                      _leaves((x, r, w), torch.float64), tuple(t.double() for t in grad) if use_sum else g.double())
    for name, a, b, c in zip(("input", "residual", "weight"), ours, theirs, truth):
        check.budget(a, b, c, f"grad {name}", scale=float(g.abs().max()))


@pytest.mark.parametrize("mask", [(True, False), (False, True), (True, True), (False, False)], ids=str)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_rms_norm_backward_mask(isa, dtype, mask):
    x, w = torch.randn(9, 17, dtype=dtype), torch.randn(17, dtype=dtype)
    g = torch.randn_like(x)
    _, rstd = ops.rms_norm_stats(x, w, 1e-5, None)
    got = ops.rms_norm_backward(g, x, rstd, w, None, list(mask))
    xr, wr = (t.clone().requires_grad_() for t in (x, w))
    F.rms_norm(xr, (17,), wr, 1e-5).backward(g)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for have, want, m in zip(got, (xr.grad, wr.grad), mask):
        if m:
            torch.testing.assert_close(have, want, **tol)
        else:
            assert have is None


@pytest.mark.parametrize("direct", (False, True), ids=("ops", "torch.ops"))
@pytest.mark.parametrize("affine", (True, False), ids=("w", "none"))
def test_rms_norm_gradcheck(isa, affine, direct):
    x = torch.randn(3, 2, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, dtype=torch.float64, requires_grad=True) if affine else None
    r = torch.randn_like(x).requires_grad_()
    f = (lambda x, w: ops.rms_norm(x, w, 1e-5)) if direct else (lambda x, w: rms_norm(x, w, 1e-5))
    assert gradcheck(f, (x, w))
    g = (lambda x, r, w: ops.add_rms_norm(x, r, w, 1e-5)) if direct else (lambda x, r, w: add_rms_norm(x, r, w, 1e-5))
    assert gradcheck(g, (x, r, w))
    w2 = torch.randn(2, 5, dtype=torch.float64, requires_grad=True) if affine else None
    assert gradcheck(lambda x, w: ops.rms_norm(x, w, 1e-5, [2, 5]), (x, w2))


def test_rms_norm_double_backward():
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    r = torch.randn_like(x).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda x, w: rms_norm(x, w), (x, w))
    assert torch.autograd.gradgradcheck(lambda x, r, w: add_rms_norm(x, r, w), (x, r, w))


def test_rms_norm_opcheck():
    x, w = torch.randn(2, 3, 5), torch.randn(5)
    r = torch.randn_like(x)
    for grad in (True, False):
        for t in (x, w, r):
            t.requires_grad_(grad)
        torch.library.opcheck(ops.rms_norm.default, (x, w, 1e-5, None))
        torch.library.opcheck(ops.rms_norm.default, (x, None, None, [3, 5]))
        torch.library.opcheck(ops.rms_norm_stats.default, (x, w, None, None))
        torch.library.opcheck(ops.add_rms_norm.default, (x, r, w, 1e-5, None))
        torch.library.opcheck(ops.add_rms_norm_stats.default, (x, r, w, 1e-5, None))
    x, w, r = x.detach(), w.detach(), r.detach()
    _, rstd = ops.rms_norm_stats(x, w, 1e-5, None)
    for mask in ([True, True], [False, True]):
        torch.library.opcheck(ops.rms_norm_backward.default, (x, x, rstd, w, None, mask))
        torch.library.opcheck(ops.add_rms_norm_backward.default, (x, r, x, rstd, w, None, mask))
        torch.library.opcheck(ops.add_rms_norm_backward.default, (x, None, x, rstd, None, [5], mask))


def test_rms_norm_meta_matches_real():
    x, w = torch.randn(2, 3, 4, 5), torch.randn(4, 5)
    m = lambda t: t.to("meta")  # noqa: E731
    pairs = [(ops.rms_norm(x, w), ops.rms_norm(m(x), m(w))),
             *zip(ops.rms_norm_stats(x, w, None, None), ops.rms_norm_stats(m(x), m(w), None, None)),
             *zip(ops.add_rms_norm_stats(x, x, w, None, None), ops.add_rms_norm_stats(m(x), m(x), m(w), None, None))]
    for real, meta in pairs:
        assert meta.device.type == "meta"
        assert (meta.shape, meta.dtype, meta.stride()) == (real.shape, real.dtype, real.stride())


def test_rms_norm_bad_input():
    x = torch.randn(3, 5)
    assert_raises_named(lambda: ops.rms_norm(x, torch.randn(4)), RuntimeError, ["normalized_shape", "[4]"], "rms_norm")
    assert_raises_named(lambda: ops.rms_norm(x, None, None, [4]), RuntimeError, ["normalized_shape"], "rms_norm")
    assert_raises_named(lambda: ops.add_rms_norm(x, torch.randn(3, 4)), RuntimeError, ["residual", "[3, 4]"],
                        "add_rms_norm")
    _, rstd = ops.rms_norm_stats(x, None, None, None)
    assert_raises_named(lambda: ops.rms_norm_backward(x, x, rstd[:2], None, None, [True, True]), RuntimeError,
                        ["rstd", "[2]"], "rms_norm_backward")
    assert_raises_named(lambda: ops.rms_norm_backward(x, x, rstd.double(), None, None, [True, True]), TypeError,
                        ["rstd", "Double"], "rms_norm_backward")
    with pytest.raises(RuntimeError, match="normalized_shape"):
        rms_norm(x.to("meta"), torch.randn(4, device="meta"))


# ---- RMSNorm: the module, compile, autocast, bf16 ------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"elementwise_affine": False}, {"eps": 1e-3}], ids=["default", "no_affine", "eps"])
def test_rms_norm_module_matches_torch(kwargs):
    ref = torch.nn.RMSNorm((4, 6), **kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_()
    ours = fusedops.nn.RMSNorm((4, 6), **kwargs)
    assert isinstance(ours, torch.nn.RMSNorm)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert repr(ours) == repr(ref)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 4, 6, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    out, expected = ours(x), ref(x2)
    torch.testing.assert_close(out, expected)
    out.pow(2).sum().backward()
    expected.pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad)


def test_rms_norm_module_loads_llama_rms_norm():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    hf = LlamaRMSNorm(48, eps=1e-6)
    with torch.no_grad():
        hf.weight.normal_()
    ours = fusedops.nn.RMSNorm(48, eps=1e-6)
    ours.load_state_dict(hf.state_dict())
    x = torch.randn(2, 9, 48)
    torch.testing.assert_close(ours(x), hf(x), rtol=1e-5, atol=1e-5)


def test_rms_norm_compile_aot_eager():
    torch._dynamo.reset()

    def f(x, r, w):
        out, s = add_rms_norm(x, r, w)
        return rms_norm(out, w, 1e-6) + s

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    x, r, w = torch.randn(3, 8, 16, requires_grad=True), torch.randn(3, 8, 16, requires_grad=True), \
        torch.randn(16, requires_grad=True)
    g = torch.randn(3, 8, 16)
    got = torch.autograd.grad(compiled(x, r, w), (x, r, w), g)
    want = torch.autograd.grad(f(x, r, w), (x, r, w), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_rms_norm_autocast_keeps_input_dtype():
    x, w = torch.randn(4, 33).to(BF), torch.randn(33)  # a bf16 activation, an fp32 weight
    with torch.autocast("cpu", dtype=BF):
        y = rms_norm(x, w)
        ref = F.rms_norm(x, (33,), w)
        out, s = add_rms_norm(x, torch.randn(4, 33), w)  # mixed dtypes are promoted
    assert y.dtype == ref.dtype == BF
    assert out.dtype == s.dtype == torch.float32
    torch.testing.assert_close(y.float(), ref.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("n", (3, 97, 384, 4096))
def test_rms_norm_bf16_budget(isa, n, check):
    x, r, w = torch.randn(6, n) * 2, torch.randn(6, n), torch.randn(n)
    g = torch.randn(6, n)
    xb, rb, wb = (t.to(BF) for t in (x, r, w))
    for t in (xb, rb, wb):
        t.requires_grad_()
    out, s = add_rms_norm(xb, rb, wb)
    torch.autograd.backward(out, g.to(BF))
    xt, rt, wt = (t.detach().clone().requires_grad_() for t in (xb, rb, wb))
    st = xt + rt
    ref = F.rms_norm(st, (n,), wt)
    ref.backward(g.to(BF))
    # the float64 truth from the sum as stored in bf16, a leaf (a gradient passing back through
    # the cast would be rounded to bf16); d/dx = d/dr = d/ds
    s64 = (f64(xb) + f64(rb)).to(BF).double().requires_grad_()
    w64 = f64(wb).requires_grad_()
    tru = F.rms_norm(s64, (n,), w64, torch.finfo(torch.float32).eps)
    tru.backward(g.to(BF).double())
    check.budget(out, ref, tru, "bf16 output")
    check.budget(xb.grad, xt.grad, s64.grad, "bf16 grad input", scale=float(g.abs().max()))
    assert torch.equal(xb.grad, rb.grad)
    check.budget(wb.grad, wt.grad, w64.grad, "bf16 grad weight", scale=float(g.abs().max()) * 6)


# ---- rotary embedding: values --------------------------------------------------------------------

ROPE_SHAPES = [  # B, T, Hq, Hk, D, R
    (1, 1, 1, 1, 2, 2),
    (2, 5, 3, 1, 8, 8),
    (2, 17, 6, 2, 64, 64),
    (1, 7, 4, 4, 34, 34),   # half 17: a tail for every SIMD width
    (3, 9, 2, 1, 66, 66),
    (2, 6, 4, 2, 64, 32),   # partial rotary
    (1, 3, 2, 2, 10, 6),    # partial, odd half
]


@pytest.mark.parametrize("batched", (True, False), ids=("BTR", "TR"))
@pytest.mark.parametrize("shape", ROPE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_rotary_values(isa, dtype, shape, batched):
    B, T, Hq, Hk, D, R = shape
    q, k = qk_views(B, T, Hq, Hk, D, dtype)
    cos, sin = rope_tables(B, T, R, dtype, batched)
    rq, rk = ref_rotary(q, k, cos, sin)
    oq, ok = rotary_embedding(q, k, cos, sin)
    assert oq.is_contiguous() and ok.is_contiguous()
    rope_close((oq, ok), (rq, rk))
    tq, tk = ref_rotary(f64(q), f64(k), f64(cos), f64(sin))
    tol = 4 * torch.finfo(dtype).eps
    torch.testing.assert_close(oq.double(), tq, rtol=tol, atol=tol)
    torch.testing.assert_close(ok.double(), tk, rtol=tol, atol=tol)


def test_rotary_table_layouts(isa):
    B, T, D = 3, 5, 16
    q, k = qk_views(B, T, 4, 2, D)
    cos, sin = rope_tables(B, T, D)
    want = ref_rotary(q, k, cos, sin)
    for c, s in ((cos.unsqueeze(1), sin.unsqueeze(1)),                         # [B, 1, T, R]
                 (cos.transpose(0, 1).contiguous().transpose(0, 1), sin),       # strided batch
                 (torch.cat((cos, cos), -1)[..., ::2].contiguous(), sin)):      # cos differs: not used alone
        rope_close(rotary_embedding(q, k, c, s), ref_rotary(q, k, c, s))
    rope_close(rotary_embedding(q, k, cos[:1], sin[:1]), ref_rotary(q, k, cos[:1], sin[:1]))  # batch 1 broadcasts
    rope_close(rotary_embedding(q, k, cos, sin), want)


def test_rotary_strided_last_dim_and_contiguous(isa):
    q = torch.randn(2, 3, 5, 16)
    k = torch.randn(2, 1, 5, 32)[..., ::2]  # a strided last dimension: copied once
    cos, sin = rope_tables(2, 5, 16)
    rope_close(rotary_embedding(q, k, cos, sin), ref_rotary(q, k, cos, sin))


@pytest.mark.parametrize("shape", [(0, 4, 2, 1, 8, 8), (2, 0, 2, 1, 8, 8), (2, 4, 0, 1, 8, 8)], ids=str)
def test_rotary_empty(isa, shape):
    B, T, Hq, Hk, D, R = shape
    q, k = torch.randn(B, Hq, T, D, requires_grad=True), torch.randn(B, Hk, T, D, requires_grad=True)
    cos, sin = rope_tables(max(B, 1), T, R)
    oq, ok = rotary_embedding(q, k, cos[:B] if B else cos[:1], sin[:B] if B else sin[:1])
    assert oq.shape == q.shape and ok.shape == k.shape
    (oq.sum() + ok.sum()).backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape


def test_rotary_in_place_matches(isa):
    B, T, Hq, Hk, D = 2, 7, 6, 2, 64
    base_q = torch.randn(B, T, Hq * D)
    base_k = torch.randn(B, T, Hk * D)
    q = base_q.view(B, T, Hq, D).transpose(1, 2)
    k = base_k.view(B, T, Hk, D).transpose(1, 2)
    cos, sin = rope_tables(B, T, D)
    want_q, want_k = rotary_embedding(q, k, cos, sin)
    ptr = base_q.data_ptr()
    with torch.no_grad():
        rq, rk = rotary_embedding_(q, k, cos, sin)
    assert rq is q and rk is k and base_q.data_ptr() == ptr
    # the projections' own storage was rotated, through the strided views
    assert torch.equal(base_q.view(B, T, Hq, D).transpose(1, 2), want_q)
    assert torch.equal(base_k.view(B, T, Hk, D).transpose(1, 2), want_k)
    # partial rotary in place leaves the pass-through features alone
    q2, k2 = qk_views(1, 3, 2, 1, 12)
    c2, s2 = rope_tables(1, 3, 8)
    wq, wk = rotary_embedding(q2, k2, c2, s2)
    rotary_embedding_(q2, k2, c2, s2)
    assert torch.equal(q2, wq) and torch.equal(k2, wk)


def test_rotary_threads_same_bits():
    q, k = qk_views(4, 64, 6, 2, 64)
    cos, sin = rope_tables(4, 64, 64)
    g = torch.randn(4, 6, 64, 64)
    res = []
    for n in (1, 2):
        torch.set_num_threads(n)
        res.append((*rotary_embedding(q, k, cos, sin), *ops.rotary_embedding_backward(g, None, cos, sin)[:1]))
    for a, b in zip(*res):
        assert torch.equal(a, b)


# ---- rotary embedding: gradients ------------------------------------------------------------------


@pytest.mark.parametrize("shape", ROPE_SHAPES[1:], ids=str)
def test_rotary_grad_vs_composite(isa, shape, check):
    B, T, Hq, Hk, D, R = shape
    q, k = qk_views(B, T, Hq, Hk, D)
    cos, sin = rope_tables(B, T, R)
    gq, gk = torch.randn(B, Hq, T, D), torch.randn(B, Hk, T, D)
    _, ours = _grads(lambda q, k: rotary_embedding(q, k, cos, sin), _leaves((q.requires_grad_(), k.requires_grad_()),
                                                                            torch.float32), (gq, gk))
    _, theirs = _grads(lambda q, k: ref_rotary(q, k, cos, sin), _leaves((q, k), torch.float32), (gq, gk))
    _, truth = _grads(lambda q, k: ref_rotary(q, k, f64(cos), f64(sin)), _leaves((q, k), torch.float64),
                      (gq.double(), gk.double()))
    for name, a, b, c in zip(("q", "k"), ours, theirs, truth):
        check.budget(a, b, c, f"grad {name}")


def test_rotary_one_output_used():
    q, k = qk_views(2, 4, 2, 1, 8)
    q.requires_grad_()
    cos, sin = rope_tables(2, 4, 8)
    oq, _ = rotary_embedding(q, k, cos, sin)
    oq.pow(2).sum().backward()
    qr = q.detach().clone().requires_grad_()
    ref_rotary(qr, k, cos, sin)[0].pow(2).sum().backward()
    torch.testing.assert_close(q.grad, qr.grad)


@pytest.mark.parametrize("direct", (False, True), ids=("ops", "torch.ops"))
@pytest.mark.parametrize("shape", [(2, 3, 2, 1, 6, 6), (1, 4, 2, 2, 8, 4)], ids=str)
def test_rotary_gradcheck(isa, shape, direct):
    B, T, Hq, Hk, D, R = shape
    q, k = qk_views(B, T, Hq, Hk, D, torch.float64)
    q.requires_grad_(), k.requires_grad_()
    cos, sin = rope_tables(B, T, R, torch.float64)
    f = ops.rotary_embedding if direct else rotary_embedding
    assert gradcheck(lambda q, k: f(q, k, cos, sin), (q, k))
    assert torch.autograd.gradgradcheck(lambda q, k: f(q, k, cos, sin), (q, k))
    # tables whose halves differ: the backward is the exact transpose, not only a rotation by -theta
    c, s = torch.randn(B, T, R, dtype=torch.float64), torch.randn(B, T, R, dtype=torch.float64)
    assert gradcheck(lambda q, k: f(q, k, c, s), (q, k))


def test_rotary_opcheck():
    q, k = qk_views(2, 5, 4, 2, 16)
    cos, sin = rope_tables(2, 5, 16)
    for grad in (True, False):
        q.requires_grad_(grad), k.requires_grad_(grad)
        torch.library.opcheck(ops.rotary_embedding.default, (q, k, cos, sin))
        torch.library.opcheck(ops.rotary_embedding.default, (q, k, cos[0], sin[0]))
    q, k = q.detach(), k.detach()
    torch.library.opcheck(ops.rotary_embedding_.default, (q.clone(), k.clone(), cos, sin))
    torch.library.opcheck(ops.rotary_embedding_backward.default, (q.contiguous(), k.contiguous(), cos, sin))
    torch.library.opcheck(ops.rotary_embedding_backward.default, (None, k.contiguous(), cos, sin))


def test_rotary_compile_aot_eager():
    torch._dynamo.reset()

    def f(q, k, cos, sin):
        a, b = rotary_embedding(q, k, cos, sin)
        return a.sum(1) + b.sum(1)

    def g(q, k, cos, sin):
        return rotary_embedding_(q.clone(), k.clone(), cos, sin)

    q, k = qk_views(2, 5, 4, 2, 16)
    q.requires_grad_(), k.requires_grad_()
    cos, sin = rope_tables(2, 5, 16)
    got = torch.autograd.grad(torch.compile(f, fullgraph=True, backend="aot_eager")(q, k, cos, sin).sum(), (q, k))
    want = torch.autograd.grad(f(q, k, cos, sin).sum(), (q, k))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        for a, b in zip(torch.compile(g, fullgraph=True, backend="aot_eager")(q, k, cos, sin), g(q, k, cos, sin)):
            assert torch.equal(a, b)


def test_rotary_meta_and_autocast():
    q, k = qk_views(2, 5, 4, 2, 16)
    cos, sin = rope_tables(2, 5, 16)
    m = lambda t: t.to("meta")  # noqa: E731
    for real, meta in zip(ops.rotary_embedding(q, k, cos, sin), ops.rotary_embedding(m(q), m(k), m(cos), m(sin))):
        assert (meta.shape, meta.dtype, meta.stride()) == (real.shape, real.dtype, real.stride())
    # under autocast, bf16 q/k with fp32 tables promote to fp32, as Hugging Face's composite
    qb, kb = q.to(BF), k.to(BF)
    with torch.autocast("cpu", dtype=BF):
        oq, ok = rotary_embedding(qb, kb, cos, sin)
        rq, rk = ref_rotary(qb, kb, cos, sin)
    assert oq.dtype == rq.dtype == torch.float32
    rope_close((oq, ok), (rq, rk))


@pytest.mark.parametrize("shape", [(2, 17, 6, 2, 64, 64), (1, 9, 4, 4, 34, 34)], ids=str)
def test_rotary_bf16_budget(isa, shape, check):
    B, T, Hq, Hk, D, R = shape
    q, k = qk_views(B, T, Hq, Hk, D, BF)
    cos, sin = rope_tables(B, T, R, BF)
    gq, gk = torch.randn(B, Hq, T, D).to(BF), torch.randn(B, Hk, T, D).to(BF)
    for t in (q, k):
        t.requires_grad_()
    outs, ours = _grads(lambda q, k: rotary_embedding(q, k, cos, sin), (q, k), (gq, gk))
    q.grad = k.grad = None
    refs, theirs = _grads(lambda q, k: ref_rotary(q, k, cos, sin), (q, k), (gq, gk))
    q64, k64 = f64(q).requires_grad_(), f64(k).requires_grad_()
    trus, truth = _grads(lambda q, k: ref_rotary(q, k, f64(cos), f64(sin)), (q64, k64), (gq.double(), gk.double()))
    for name, a, b, c in zip(("q", "k"), outs, refs, trus):
        check.budget(a.detach(), b.detach(), c.detach(), f"bf16 {name}")
    for name, a, b, c in zip(("q", "k"), ours, theirs, truth):
        check.budget(a, b, c, f"bf16 grad {name}")


def test_rotary_bad_input():
    q, k = qk_views(2, 4, 3, 1, 8)
    cos, sin = rope_tables(2, 4, 8)
    assert_raises_named(lambda: ops.rotary_embedding(q, k, cos[..., :7], sin[..., :7]), RuntimeError,
                        ["cos", "even"], "rotary_embedding")
    assert_raises_named(lambda: ops.rotary_embedding(q, k[:1], cos, sin), RuntimeError, ["k", "[1, 1, 4, 8]"],
                        "rotary_embedding")
    assert_raises_named(lambda: ops.rotary_embedding(q, k, cos.unsqueeze(1).expand(2, 2, 4, 8), sin), RuntimeError,
                        ["cos", "[2, 2, 4, 8]"], "rotary_embedding")
    assert_raises_named(lambda: ops.rotary_embedding_backward(None, None, cos, sin), RuntimeError,
                        ["grad_q", "None"], "rotary_embedding_backward")
    with pytest.raises(RuntimeError, match="require grad"):
        rotary_embedding_(q.detach().requires_grad_(), k, cos, sin)
    # views of one fused qkv buffer: refused in place (documented), rotated by the functional op
    qkv = torch.randn(2, 4, 3 * 3 * 8)
    fq, fk = (qkv[..., i * 24:(i + 1) * 24].view(2, 4, 3, 8).transpose(1, 2) for i in range(2))
    assert_raises_named(lambda: ops.rotary_embedding_(fq, fk, cos, sin), RuntimeError, ["q and k"],
                        "rotary_embedding_")
    rope_close(rotary_embedding(fq, fk, cos, sin), ref_rotary(fq, fk, cos, sin))


# ---- SwiGLU -------------------------------------------------------------------------------------

SWIGLU_SHAPES = [(1,), (3, 1), (5, 17), (4, 97), (2, 3, 384), (7, 1029)]


@pytest.mark.parametrize("shape", SWIGLU_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_swiglu_values(isa, dtype, shape, check):
    x = torch.randn(*shape[:-1], 2 * shape[-1], dtype=dtype) * 3
    a, b = x.chunk(2, -1)  # halves of one projection: strided views
    ours = swiglu(a, b)
    check.budget(ours, F.silu(a) * b, F.silu(f64(a)) * f64(b), f"swiglu {shape}")
    a2, b2 = torch.randn(*shape, dtype=dtype), torch.randn(*shape, dtype=dtype)  # two tensors
    check.budget(swiglu(a2, b2), F.silu(a2) * b2, F.silu(f64(a2)) * f64(b2), f"swiglu two {shape}")


def test_swiglu_layouts(isa, check):
    base = torch.randn(6, 40)
    for a, b in ((base[:, :20], base[:, 20:]),                 # row stride 40
                 (base.t()[:20], base.t()[20:]),               # strided last dim: copied
                 (torch.randn(20, 6).t(), torch.randn(6, 20)),  # one of each
                 (torch.randn(1, 20).expand(6, 20), torch.randn(6, 20))):  # stride 0 rows
        check.budget(swiglu(a, b), F.silu(a) * b, F.silu(f64(a)) * f64(b), "layout")


@pytest.mark.parametrize("shape", [(0,), (0, 5), (3, 0)], ids=str)
def test_swiglu_empty(shape):
    a, b = torch.randn(*shape, requires_grad=True), torch.randn(*shape, requires_grad=True)
    y = swiglu(a, b)
    assert y.shape == a.shape
    y.sum().backward()
    assert a.grad.shape == a.shape and b.grad.shape == b.shape


@pytest.mark.parametrize("shape", SWIGLU_SHAPES[1:], ids=str)
@pytest.mark.parametrize("chunked", (True, False), ids=("chunk", "two"))
def test_swiglu_grad_vs_torch(isa, shape, chunked, check):
    g = torch.randn(*shape)

    def run(dtype, fn):
        torch.manual_seed(1)
        if chunked:
            x = (torch.randn(*shape[:-1], 2 * shape[-1]) * 3).to(dtype).requires_grad_()
            out = fn(*x.chunk(2, -1))
            out.backward(g.to(dtype))
            return out, [x.grad]
        a = (torch.randn(*shape) * 3).to(dtype).requires_grad_()
        b = torch.randn(*shape).to(dtype).requires_grad_()
        out = fn(a, b)
        out.backward(g.to(dtype))
        return out, [a.grad, b.grad]

    o, ours = run(torch.float32, swiglu)
    t, theirs = run(torch.float32, lambda a, b: F.silu(a) * b)
    r, truth = run(torch.float64, lambda a, b: F.silu(a) * b)
    check.budget(o.detach(), t.detach(), r.detach(), "output")
    for a, b, c in zip(ours, theirs, truth):
        check.budget(a, b, c, "grad")


@pytest.mark.parametrize("mask", [(True, False), (False, True), (True, True), (False, False)], ids=str)
def test_swiglu_backward_mask(mask):
    a, b, g = torch.randn(5, 9, dtype=torch.float64), torch.randn(5, 9, dtype=torch.float64), \
        torch.randn(5, 9, dtype=torch.float64)
    got = ops.swiglu_backward(g, a, b, list(mask))
    ar, br = a.clone().requires_grad_(), b.clone().requires_grad_()
    (F.silu(ar) * br).backward(g)
    for have, want, m in zip(got, (ar.grad, br.grad), mask):
        if m:
            torch.testing.assert_close(have, want)
        else:
            assert have is None


@pytest.mark.parametrize("direct", (False, True), ids=("ops", "torch.ops"))
def test_swiglu_gradcheck(isa, direct):
    f = ops.swiglu if direct else swiglu
    x = torch.randn(3, 10, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x: f(*x.chunk(2, -1)), (x,))
    a, b = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True), torch.randn(2, 3, 5, dtype=torch.float64,
                                                                                       requires_grad=True)
    assert gradcheck(f, (a, b))
    assert torch.autograd.gradgradcheck(f, (a, b))


def test_swiglu_opcheck_compile_meta():
    x = torch.randn(4, 3, 12)
    a, b = x.chunk(2, -1)
    for grad in (True, False):
        a2, b2 = a.clone().requires_grad_(grad), b.clone().requires_grad_(grad)
        torch.library.opcheck(ops.swiglu.default, (a2, b2))
    torch.library.opcheck(ops.swiglu.default, (a, b))
    for mask in ([True, True], [False, True]):
        torch.library.opcheck(ops.swiglu_backward.default, (torch.randn(4, 3, 6), a, b, mask))
    m = ops.swiglu(a.to("meta"), b.to("meta"))
    assert m.shape == a.shape and m.stride() == ops.swiglu(a, b).stride()
    torch._dynamo.reset()
    xr = x.clone().requires_grad_()
    f = lambda x: swiglu(*x.chunk(2, -1)).sum()  # noqa: E731
    got = torch.autograd.grad(torch.compile(f, fullgraph=True, backend="aot_eager")(xr), xr)[0]
    torch.testing.assert_close(got, torch.autograd.grad(f(xr), xr)[0])


def test_swiglu_threads_same_bits():
    x = torch.randn(257, 2 * 1031)
    a, b = x.chunk(2, -1)
    g = torch.randn(257, 1031)
    res = []
    for n in (1, 2):
        torch.set_num_threads(n)
        res.append((swiglu(a, b), *ops.swiglu_backward(g, a, b, [True, True])))
    for p, q in zip(*res):
        assert torch.equal(p, q)


@pytest.mark.parametrize("n", (17, 384, 1024))
def test_swiglu_bf16_budget(isa, n, check):
    x = (torch.randn(9, 2 * n) * 3).to(BF)
    g = torch.randn(9, n).to(BF)

    def run(fn, dtype):
        xr = x.to(dtype).clone().requires_grad_()
        out = fn(*xr.chunk(2, -1))
        out.backward(g.to(dtype))
        return out.detach(), xr.grad

    o, go = run(swiglu, BF)
    t, gt = run(lambda a, b: F.silu(a) * b, BF)
    r, gr = run(lambda a, b: F.silu(a) * b, torch.float64)
    check.budget(o, t, r, "bf16 output")
    check.budget(go, gt, gr, "bf16 grad")
    with torch.autocast("cpu", dtype=BF):
        y = swiglu(*x.chunk(2, -1))
    assert y.dtype == BF


def test_swiglu_bad_input():
    assert_raises_named(lambda: ops.swiglu(torch.randn(2, 3), torch.randn(2, 4)), RuntimeError, ["b", "[2, 4]"],
                        "swiglu")
    assert_raises_named(lambda: ops.swiglu_backward(torch.randn(2, 4), torch.randn(2, 3), torch.randn(2, 3),
                                                    [True, True]),
                        RuntimeError, ["grad_output", "[2, 4]"], "swiglu_backward")


# ---- the CUDA kernels: simulator (and GPU) against the CPU ops ------------------------------------

SIM_DTYPES = (torch.float32, torch.float64, torch.float16, BF)


def _ref_dtype_cpu(t, dtype):
    # torch's CPU result in a low precision dtype, for the budget (float16 computed by torch too)
    return t.to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", SIM_DTYPES, ids=str)
@pytest.mark.parametrize("n", (1, 7, 64, 97))
def test_cuda_rms_norm(backend, dtype, n):
    d = dev(backend)
    x, r, w = torch.randn(5, 3, n), torch.randn(5, 3, n), torch.randn(n)
    g, gs = torch.randn(5, 3, n), torch.randn(5, 3, n)
    X, Rr, Wt, G, GS = (t.to(dtype).to(d) for t in (x, r, w, g, gs))
    out, s, rstd = op(backend, "add_rms_norm_stats")(X, Rr, Wt, 1e-5, None)
    dx, dw = op(backend, "add_rms_norm_backward")(G, GS, s, rstd, Wt, None, [True, True])
    out2 = op(backend, "rms_norm")(X, Wt, None, None)
    # the float64 truth from the sum as stored (rounded to dtype), a leaf: the gradient must not
    # pass back through a cast to dtype
    s64 = (f64(X.cpu()) + f64(Rr.cpu())).to(dtype).double().requires_grad_()
    w64 = f64(Wt.cpu()).requires_grad_()
    ref = F.rms_norm(s64, (n,), w64, 1e-5)
    ref.backward(f64(G.cpu()))
    lowp = lambda t: t.to(dtype)  # noqa: E731
    check_close(out, ref.detach(), lowp(ref.detach()), dtype, "add_rms_norm out")
    ref_g = s64.grad + f64(GS.cpu())
    check_close(dx, ref_g, lowp(ref_g), dtype, "add_rms_norm grad")
    check_close(dw, w64.grad, lowp(w64.grad), dtype, "add_rms_norm grad weight")
    ref1 = F.rms_norm(f64(X.cpu()), (n,), f64(Wt.cpu()), torch.finfo(torch.float64 if dtype == torch.float64
                                                                      else torch.float32).eps)
    check_close(out2, ref1, lowp(ref1), dtype, "rms_norm out")
    if dtype in FLOATS + (BF,) and backend == "cuda-sim":  # the CPU op on the same inputs
        cpu_out, cpu_s, cpu_rstd = ops.add_rms_norm_stats(X, Rr, Wt, 1e-5, None)
        assert torch.equal(s, cpu_s)
        torch.testing.assert_close(rstd, cpu_rstd, rtol=1e-5, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", SIM_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 5, 3, 1, 8, 8), (1, 7, 4, 2, 34, 34), (2, 3, 2, 2, 12, 8)], ids=str)
def test_cuda_rotary(backend, dtype, shape):
    d = dev(backend)
    B, T, Hq, Hk, D, R = shape
    q, k = qk_views(B, T, Hq, Hk, D)
    cos, sin = rope_tables(B, T, R)
    Q, K, C, S = (t.to(dtype).to(d) for t in (q, k, cos, sin))
    oq, ok = op(backend, "rotary_embedding")(Q, K, C, S)
    tq, tk = ref_rotary(f64(Q.cpu()), f64(K.cpu()), f64(C.cpu()), f64(S.cpu()))
    check_close(oq, tq, tq.to(dtype), dtype, "rotary q")
    check_close(ok, tk, tk.to(dtype), dtype, "rotary k")
    gq, gk = op(backend, "rotary_embedding_backward")(oq, None, C, S)
    assert gk is None
    q64 = f64(Q.cpu()).requires_grad_()
    ref_rotary(q64, f64(K.cpu()), f64(C.cpu()), f64(S.cpu()))[0].backward(f64(oq.cpu()))
    check_close(gq, q64.grad, q64.grad.to(dtype), dtype, "rotary grad q")
    # tables whose halves differ: the exact transpose
    C2, S2 = (torch.randn(B, T, R).to(dtype).to(d) for _ in range(2))
    _, gk2 = op(backend, "rotary_embedding_backward")(None, ok, C2, S2)
    k64 = f64(K.cpu()).requires_grad_()
    ref_rotary(f64(Q.cpu()), k64, f64(C2.cpu()), f64(S2.cpu()))[1].backward(f64(ok.cpu()))
    check_close(gk2, k64.grad, k64.grad.to(dtype), dtype, "rotary grad k, random tables")
    Q2, K2 = Q.clone(), K.clone()
    op(backend, "rotary_embedding_")(Q2, K2, C, S)
    assert torch.equal(Q2, oq) and torch.equal(K2, ok)
    if backend == "cuda-sim" and dtype != torch.float16 and START_ISA != "generic":  # the CPU kernel's bits
        cq, ck = ops.rotary_embedding(Q, K, C, S)
        assert torch.equal(cq, oq) and torch.equal(ck, ok)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", SIM_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1,), (3, 17), (2, 5, 64)], ids=str)
def test_cuda_swiglu(backend, dtype, shape):
    d = dev(backend)
    x = (torch.randn(*shape[:-1], 2 * shape[-1]) * 3).to(dtype).to(d)
    a, b = x.chunk(2, -1)
    g = torch.randn(*shape).to(dtype).to(d)
    y = op(backend, "swiglu")(a, b)
    da, db = op(backend, "swiglu_backward")(g, a, b, [True, True])
    a64, b64 = f64(a.cpu()).requires_grad_(), f64(b.cpu()).requires_grad_()
    ref = F.silu(a64) * b64
    ref.backward(f64(g.cpu()))
    check_close(y, ref.detach(), ref.detach().to(dtype), dtype, "swiglu")
    check_close(da, a64.grad, a64.grad.to(dtype), dtype, "swiglu grad a")
    check_close(db, b64.grad, b64.grad.to(dtype), dtype, "swiglu grad b")


# ---- strided views are read in place ------------------------------------------------------------

COPIES = {"aten::copy_", "aten::clone", "aten::contiguous"}


def _aten_ops(fn):
    """The ATen ops that fn runs (what the profiler records, ours' internals included)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as p:
        fn()
    return {e.name for e in p.events()}


def test_strided_views_are_not_copied():
    q, k = qk_views(2, 5, 4, 2, 16)  # transposed projections
    cos, sin = rope_tables(2, 5, 16)
    x = torch.randn(3, 7, 2 * 33)
    a, b = x.chunk(2, -1)  # halves of one projection
    g = torch.randn(3, 7, 33)
    for what, fn in (("rotary_embedding", lambda: ops.rotary_embedding(q, k, cos, sin)),
                     ("rotary_embedding_", lambda: ops.rotary_embedding_(q, k, cos, sin)),
                     ("rotary_embedding_backward", lambda: ops.rotary_embedding_backward(q, k, cos, sin)),
                     ("swiglu", lambda: ops.swiglu(a, b)),
                     ("swiglu_backward", lambda: ops.swiglu_backward(g, a, b, [True, True]))):
        ran = _aten_ops(fn)
        assert f"fusedops::{what}" in ran, ran
        assert not ran & COPIES, f"{what} copied an input: {sorted(ran & COPIES)}"
    # a strided last dimension is copied, and the check above would see it
    assert _aten_ops(lambda: ops.swiglu(x.transpose(0, 2)[:33], x.transpose(0, 2)[33:])) & COPIES


# ---- in a Hugging Face Llama ---------------------------------------------------------------------


def test_in_a_tiny_hf_llama():
    """The three ops in place of a tiny random LlamaForCausalLM's RMSNorms, rotary embedding and
    MLP activation (as Hugging Face calls them: its shapes, strides and dtypes) give its logits,
    loss and every gradient."""
    from unittest import mock

    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama import modeling_llama

    cfg = LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64,
                      rms_norm_eps=1e-6, attn_implementation="eager")
    torch.manual_seed(0)
    ref = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    ids = torch.randint(0, 97, (2, 13))

    def run(model):
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        return out.logits.detach(), out.loss.detach(), {n: p.grad for n, p in model.named_parameters()}

    want = run(ref)
    ours = LlamaForCausalLM(cfg).eval()
    ours.load_state_dict(ref.state_dict())
    for parent in list(ours.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, modeling_llama.LlamaRMSNorm):
                fused = fusedops.nn.RMSNorm(child.weight.shape[0], eps=child.variance_epsilon)
                fused.load_state_dict(child.state_dict())
                setattr(parent, child_name, fused)
    calls = {"rope": 0, "swiglu": 0}

    def rope(q, k, cos, sin, unsqueeze_dim=1):
        calls["rope"] += 1
        return rotary_embedding(q, k, cos, sin)

    def mlp(self, x):
        calls["swiglu"] += 1
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))

    with mock.patch.object(modeling_llama, "apply_rotary_pos_emb", rope), \
            mock.patch.object(modeling_llama.LlamaMLP, "forward", mlp):
        got = run(ours)
    assert calls == {"rope": 2, "swiglu": 2}
    assert sum(isinstance(m, fusedops.nn.RMSNorm) for m in ours.modules()) == 5
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6)
    assert got[2].keys() == want[2].keys()
    for name in want[2]:
        torch.testing.assert_close(got[2][name], want[2][name], rtol=1e-4, atol=1e-6, msg=name)
