"""fusedops.ops.layer_norm / add_layer_norm, their operators and fusedops.nn.LayerNorm against
torch: values and gradients per instruction set over odd row lengths (1, 3, 97, 767: tails of
every SIMD width), multi-dimensional normalized_shape, optional weight/bias, empty and
non-contiguous inputs; gradcheck, opcheck, torch.compile, meta tensors, bad input, the module
after load_state_dict, and the CUDA kernels on the simulator (and a GPU when present).
"""
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

import fusedops
from conftest import BACKENDS, DTYPES, assert_raises_named, check_close, dev, op
from fusedops.ops import add_layer_norm, layer_norm

ops = torch.ops.fusedops
FLOATS = (torch.float32, torch.float64)
ROWS = (1, 3, 97, 767, 768, 1029)


def make(lead, shape, dtype, affine=(True, True), scale=1.0, shift=0.0):
    x = torch.randn(*lead, *shape, dtype=dtype) * scale + shift
    w = torch.randn(*shape, dtype=dtype) if affine[0] else None
    b = torch.randn(*shape, dtype=dtype) if affine[1] else None
    return x, w, b


def f64(t):
    return None if t is None else t.detach().double()


AFFINE = [(True, True), (True, False), (False, True), (False, False)]
AFFINE_IDS = ["wb", "w", "b", "none"]


# ---- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("affine", AFFINE, ids=AFFINE_IDS)
@pytest.mark.parametrize("n", ROWS)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_values(isa, dtype, n, affine, check):
    x, w, b = make((5, 7), (n,), dtype, affine, scale=3.0, shift=2.0)
    ours = layer_norm(x, (n,), w, b)
    theirs = F.layer_norm(x, (n,), w, b)
    truth = F.layer_norm(f64(x), (n,), f64(w), f64(b))
    check.budget(ours, theirs, truth, f"layer_norm n={n}")
    assert ours.shape == x.shape and ours.is_contiguous()


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4), (1,), (7, 1), (4, 97)], ids=str)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_multidim_normalized_shape(isa, dtype, shape, check):
    x, w, b = make((2, 3), shape, dtype)
    for ns in (shape, list(shape), torch.Size(shape)):
        ours = layer_norm(x, ns, w, b, eps=1e-3)
        check.budget(ours, F.layer_norm(x, shape, w, b, 1e-3),
                     F.layer_norm(f64(x), shape, f64(w), f64(b), 1e-3), f"shape {shape}")
    # an int normalized_shape is the last dimension
    x1, w1, b1 = make((4,), (9,), dtype)
    torch.testing.assert_close(layer_norm(x1, 9, w1, b1), F.layer_norm(x1, (9,), w1, b1))


@pytest.mark.parametrize("n", (1, 3, 97, 767))
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_add_layer_norm_values(isa, dtype, n, check):
    x, w, b = make((3, 11), (n,), dtype)
    r = torch.randn_like(x)
    out, s = add_layer_norm(x, r, n, w, b)
    assert torch.equal(s, x + r)
    check.budget(out, F.layer_norm(x + r, (n,), w, b), F.layer_norm(f64(x) + f64(r), (n,), f64(w), f64(b)),
                 "add_layer_norm")
    out2, s2 = ops.add_layer_norm(x, r, [n], w, b)
    assert torch.equal(out2, out) and torch.equal(s2, s)


def test_stats_are_mean_and_rstd(isa):
    x, w, b = make((4, 6), (33,), torch.float64, scale=2.0, shift=-1.0)
    out, mean, rstd = ops.layer_norm_stats(x, [33], w, b, 1e-5)
    assert mean.shape == (4, 6) and rstd.shape == (4, 6)
    torch.testing.assert_close(mean, x.mean(-1))
    torch.testing.assert_close(rstd, (x.var(-1, unbiased=False) + 1e-5).rsqrt())
    torch.testing.assert_close(out, ops.layer_norm(x, [33], w, b, 1e-5), rtol=0, atol=0)


def test_large_offset_is_accurate(isa, check):
    # the variance is centred (two passes), so a large common offset costs no precision
    x, w, b = make((16,), (768,), torch.float32, scale=1.0, shift=1000.0)
    check.budget(layer_norm(x, 768, w, b), F.layer_norm(x, (768,), w, b),
                 F.layer_norm(f64(x), (768,), f64(w), f64(b)), "offset 1000")


def test_constant_rows_and_special_values(isa):
    x = torch.tensor([[2.0] * 5, [0.0] * 5, [1.0, float("nan"), 0, 0, 0], [1.0, float("inf"), 0, 0, 0]])
    ours, ref = layer_norm(x, 5), F.layer_norm(x, (5,))
    torch.testing.assert_close(ours, ref, equal_nan=True)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_noncontiguous(isa, dtype, check):
    base = torch.randn(40, 2 * 97, dtype=dtype)
    x = base[:, ::2]  # sliced rows
    w = torch.randn(2 * 97, dtype=dtype)[::2]
    b = torch.randn(97, dtype=dtype)
    for t in (x, torch.randn(97, 40, dtype=dtype).t()):
        assert not t.is_contiguous()
        check.budget(layer_norm(t, 97, w, b), F.layer_norm(t, (97,), w, b),
                     F.layer_norm(f64(t), (97,), f64(w), f64(b)), "non-contiguous")


@pytest.mark.parametrize("lead,shape", [((0,), (5,)), ((3, 0), (5,)), ((4,), (0,)), ((0,), (0,)),
                                        ((2,), (3, 0))], ids=str)
def test_empty(isa, lead, shape):
    x, w, b = make(lead, shape, torch.float64)
    for t in (x, w, b):
        t.requires_grad_()
    out = layer_norm(x, shape, w, b)
    assert out.shape == x.shape
    out.sum().backward()
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
    F.layer_norm(xr, shape, wr, br).sum().backward()
    for ours, ref in ((x.grad, xr.grad), (w.grad, wr.grad), (b.grad, br.grad)):
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref)


def test_one_and_two_threads(check):
    x, w, b = make((301,), (257,), torch.float32)
    g = torch.randn_like(x)
    res = []
    for n in (1, 2, 2):
        torch.set_num_threads(n)
        out, mean, rstd = ops.layer_norm_stats(x, [257], w, b, 1e-5)
        res.append(ops.layer_norm_backward(g, x, [257], mean, rstd, w, [True, True, True]))
        check.budget(out, F.layer_norm(x, (257,), w, b), F.layer_norm(f64(x), (257,), f64(w), f64(b)), f"{n}")
    # the weight/bias gradients are deterministic for a thread count
    for a, c in zip(res[1], res[2]):
        assert torch.equal(a, c)


# ---- gradients vs torch ------------------------------------------------------------------------


def _grads(fn, leaves, g):
    out = fn(*leaves)
    if isinstance(out, tuple):
        torch.autograd.backward(out, g)
    else:
        out.backward(g)
    return out, [None if t is None else t.grad for t in leaves]


def _leaves(ts, dtype):
    return [None if t is None else t.detach().to(dtype).requires_grad_(t.requires_grad) for t in ts]


@pytest.mark.parametrize("affine", AFFINE, ids=AFFINE_IDS)
@pytest.mark.parametrize("n", (1, 3, 97, 767, 768))
def test_grad_vs_torch(isa, n, affine, check):
    x, w, b = make((4, 65), (n,), torch.float32, affine, scale=2.0, shift=0.5)
    for t in (x, w, b):
        if t is not None:
            t.requires_grad_()
    g = torch.randn(4, 65, n)
    ours_out, ours = _grads(lambda *t: layer_norm(t[0], n, t[1], t[2]), _leaves((x, w, b), torch.float32), g)
    ref_out, theirs = _grads(lambda *t: F.layer_norm(t[0], (n,), t[1], t[2]), _leaves((x, w, b), torch.float32), g)
    tru_out, truth = _grads(lambda *t: F.layer_norm(t[0], (n,), t[1], t[2]), _leaves((x, w, b), torch.float64),
                            g.double())
    check.budget(ours_out.detach(), ref_out.detach(), tru_out.detach(), "output")
    for name, o, t, r in zip(("input", "weight", "bias"), ours, theirs, truth):
        if r is None:
            assert o is None, name
        else:
            check.budget(o, t, r, f"grad {name}")


@pytest.mark.parametrize("use_sum", (False, True), ids=("out", "out+sum"))
@pytest.mark.parametrize("n", (3, 97, 768))
def test_add_layer_norm_grad_vs_torch(isa, n, use_sum, check):
    x, w, b = make((5, 33), (n,), torch.float32)
    r = torch.randn_like(x)
    for t in (x, r, w, b):
        t.requires_grad_()
    g, gs = torch.randn_like(x), torch.randn_like(x)

    def ours_fn(x, r, w, b):
        out, s = add_layer_norm(x, r, n, w, b)
        return (out, s) if use_sum else out

    def torch_fn(x, r, w, b):
        s = x + r
        out = F.layer_norm(s, (n,), w, b)
        return (out, s) if use_sum else out

    grad = (g, gs) if use_sum else g
    g64 = (g.double(), gs.double()) if use_sum else g.double()
    _, ours = _grads(ours_fn, _leaves((x, r, w, b), torch.float32), grad)
    _, theirs = _grads(torch_fn, _leaves((x, r, w, b), torch.float32), grad)
    _, truth = _grads(torch_fn, _leaves((x, r, w, b), torch.float64), g64)
    for name, o, t, tr in zip(("input", "residual", "weight", "bias"), ours, theirs, truth):
        check.budget(o, t, tr, f"grad {name}")


@pytest.mark.parametrize("mask", [(True, False, False), (False, True, False), (False, False, True),
                                  (False, True, True), (True, True, True), (False, False, False)],
                         ids=lambda m: "".join("xwb"[i] for i in range(3) if m[i]) or "none")
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_backward_op_mask(isa, dtype, mask):
    x, w, b = make((9,), (17,), dtype)
    g = torch.randn_like(x)
    _, mean, rstd = ops.layer_norm_stats(x, [17], w, b, 1e-5)
    got = ops.layer_norm_backward(g, x, [17], mean, rstd, w, list(mask))
    xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
    F.layer_norm(xr, (17,), wr, br).backward(g)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for name, have, want, m in zip(("input", "weight", "bias"), got, (xr.grad, wr.grad, br.grad), mask):
        if not m:
            assert have is None, name
        else:
            torch.testing.assert_close(have, want, **tol, msg=name)


def test_requires_grad_subsets(isa):
    for need in [(True, False, False), (False, True, False), (False, False, True), (False, True, True)]:
        x, w, b = make((6,), (10,), torch.float64)
        for t, n in zip((x, w, b), need):
            t.requires_grad_(n)
        layer_norm(x, 10, w, b).pow(2).sum().backward()
        xr, wr, br = (t.detach().clone().requires_grad_(n) for t, n in zip((x, w, b), need))
        F.layer_norm(xr, (10,), wr, br).pow(2).sum().backward()
        for o, r in ((x.grad, xr.grad), (w.grad, wr.grad), (b.grad, br.grad)):
            assert (o is None) == (r is None)
            if o is not None:
                torch.testing.assert_close(o, r)


def test_noncontiguous_incoming_gradient(isa):
    x, w, b = (t.requires_grad_() for t in make((6, 5), (33,), torch.float64))
    layer_norm(x, 33, w, b).sum().backward()  # an expanded (stride 0) gradient
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
    F.layer_norm(xr, (33,), wr, br).sum().backward()
    for o, r in ((x.grad, xr.grad), (w.grad, wr.grad), (b.grad, br.grad)):
        torch.testing.assert_close(o, r)


# ---- gradcheck, double backward ---------------------------------------------------------------


@pytest.mark.parametrize("direct", (False, True), ids=("ops", "torch.ops"))
@pytest.mark.parametrize("affine", AFFINE, ids=AFFINE_IDS)
@pytest.mark.parametrize("shape", [(5,), (2, 3)], ids=str)
def test_gradcheck(isa, shape, affine, direct):
    x, w, b = make((3,), shape, torch.float64, affine)
    leaves = [t.requires_grad_() for t in (x, w, b) if t is not None]
    fn = (lambda x, w, b: ops.layer_norm(x, list(shape), w, b, 1e-5)) if direct else \
        (lambda x, w, b: layer_norm(x, shape, w, b))
    assert leaves
    assert gradcheck(fn, (x, w, b))


@pytest.mark.parametrize("direct", (False, True), ids=("ops", "torch.ops"))
def test_gradcheck_add_layer_norm(isa, direct):
    x, w, b = make((3,), (6,), torch.float64)
    r = torch.randn_like(x)
    for t in (x, r, w, b):
        t.requires_grad_()
    fn = (lambda *t: ops.add_layer_norm(t[0], t[1], [6], t[2], t[3])) if direct else \
        (lambda *t: add_layer_norm(t[0], t[1], 6, t[2], t[3]))
    assert gradcheck(fn, (x, r, w, b))
    assert gradcheck(lambda *t: ops.add_layer_norm_stats(t[0], t[1], [6], t[2], t[3], 1e-5)[:2], (x, r, w, b))


def test_double_backward():
    x, w, b = (t.requires_grad_() for t in make((2,), (3,), torch.float64))
    assert torch.autograd.gradgradcheck(lambda x, w, b: layer_norm(x, 3, w, b), (x, w, b))
    r = torch.randn_like(x).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda x, r, w, b: add_layer_norm(x, r, 3, w, b), (x, r, w, b))


# ---- opcheck, compile, meta -------------------------------------------------------------------


@pytest.mark.parametrize("affine,requires_grad", [((True, True), True), ((False, False), False)],
                         ids=("wb-grad", "none-nograd"))
def test_opcheck(affine, requires_grad):
    x, w, b = make((2, 3), (5,), torch.float32, affine)
    r = torch.randn_like(x)
    for t in (x, w, b, r):
        if t is not None:
            t.requires_grad_(requires_grad)
    torch.library.opcheck(ops.layer_norm.default, (x, [5], w, b, 1e-5))
    torch.library.opcheck(ops.layer_norm_stats.default, (x, [5], w, b, 1e-5))
    torch.library.opcheck(ops.add_layer_norm.default, (x, r, [5], w, b, 1e-5))
    torch.library.opcheck(ops.add_layer_norm_stats.default, (x, r, [5], w, b, 1e-5))


def test_opcheck_backward():
    x, w, b = make((2, 3), (5,), torch.float32)
    g = torch.randn_like(x)
    _, mean, rstd = ops.layer_norm_stats(x, [5], w, b, 1e-5)
    for mask in ([True, True, True], [False, True, False]):
        torch.library.opcheck(ops.layer_norm_backward.default, (g, x, [5], mean, rstd, w, mask))
        torch.library.opcheck(ops.add_layer_norm_backward.default, (g, g.clone(), x, [5], mean, rstd, w, mask))
        torch.library.opcheck(ops.add_layer_norm_backward.default, (g, None, x, [5], mean, rstd, None, mask))


def test_compile_aot_eager():
    torch._dynamo.reset()

    def f(x, r, w, b):
        out, s = add_layer_norm(x, r, 16, w, b)
        return layer_norm(out, (16,), w, b) + s

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    x, w, b = (t.requires_grad_() for t in make((3, 8), (16,), torch.float32))
    r = torch.randn_like(x).requires_grad_()
    g = torch.randn_like(x)
    out_c = compiled(x, r, w, b)
    grads_c = torch.autograd.grad(out_c, (x, r, w, b), g)
    out_e = f(x, r, w, b)
    grads_e = torch.autograd.grad(out_e, (x, r, w, b), g)
    torch.testing.assert_close(out_c, out_e)
    for a, c in zip(grads_c, grads_e):
        torch.testing.assert_close(a, c)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, r, w, b), out_e)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_meta_matches_real(dtype):
    x, w, b = make((2, 3), (4, 5), dtype)
    m = lambda t: t.to("meta")  # noqa: E731
    for real, meta in ((ops.layer_norm(x, [4, 5], w, b), ops.layer_norm(m(x), [4, 5], m(w), m(b))),
                       *zip(ops.layer_norm_stats(x, [4, 5], w, b, 1e-5),
                            ops.layer_norm_stats(m(x), [4, 5], m(w), m(b), 1e-5)),
                       *zip(ops.add_layer_norm_stats(x, x, [4, 5], w, b, 1e-5),
                            ops.add_layer_norm_stats(m(x), m(x), [4, 5], m(w), m(b), 1e-5))):
        assert meta.device.type == "meta"
        assert (meta.shape, meta.dtype, meta.stride()) == (real.shape, real.dtype, real.stride())


# ---- bad input ---------------------------------------------------------------------------------


def test_bad_input():
    x = torch.randn(3, 5)
    assert_raises_named(lambda: ops.layer_norm(x, [4]), RuntimeError,
                        ["normalized_shape", "[4]", "[3, 5]"], "layer_norm")
    assert_raises_named(lambda: ops.layer_norm(x, []), RuntimeError, ["normalized_shape"], "layer_norm")
    assert_raises_named(lambda: ops.layer_norm(x, [5], torch.randn(4)), RuntimeError,
                        ["weight", "[5]", "[4]"], "layer_norm")
    assert_raises_named(lambda: ops.layer_norm(x, [5], None, torch.randn(5, 1)), RuntimeError,
                        ["bias", "[5, 1]"], "layer_norm")
    assert_raises_named(lambda: ops.layer_norm(x.int(), [5]), TypeError, ["input", "Int"], "layer_norm")
    assert_raises_named(lambda: ops.layer_norm(x, [5], torch.randn(5, dtype=torch.float64)), TypeError,
                        ["weight", "dtype"], "layer_norm")
    assert_raises_named(lambda: ops.add_layer_norm(x, torch.randn(3, 4), [5]), RuntimeError,
                        ["residual", "[3, 4]"], "add_layer_norm")
    _, mean, rstd = ops.layer_norm_stats(x, [5], None, None, 1e-5)
    assert_raises_named(lambda: ops.layer_norm_backward(x, x, [5], mean[:2], rstd, None, [True] * 3),
                        RuntimeError, ["mean", "[2]"], "layer_norm_backward")
    assert_raises_named(lambda: ops.layer_norm_backward(x, x, [5], mean.double(), rstd, None, [True] * 3),
                        TypeError, ["mean", "Double"], "layer_norm_backward")
    assert_raises_named(lambda: ops.layer_norm_backward(x[:2], x, [5], mean, rstd, None, [True] * 3),
                        RuntimeError, ["grad_output", "[2, 5]"], "layer_norm_backward")
    with pytest.raises(RuntimeError, match="normalized_shape"):
        layer_norm(x.to("meta"), (4,))


@pytest.mark.parametrize("backend", ["cpu", *BACKENDS])
def test_sizes_after_a_zero_overflow(backend):
    """torch checks a tensor's sizes only up to a zero: normalized_shape [5, 2^62] of an empty
    [0, 5, 2^62] input multiplies past int64, and is refused rather than wrapped."""
    x = torch.empty(0, 1, 1).expand(0, 5, 2**62)
    f = ops.layer_norm if backend == "cpu" else op(backend, "layer_norm")
    assert_raises_named(lambda: f(x.to(backend.replace("cuda-sim", "cpu")), [5, 2**62], None, None, 1e-5), RuntimeError,
                        ["normalized_shape", "overflows"], "layer_norm")


# ---- the module -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"elementwise_affine": False}, {"bias": False}, {"eps": 1e-3}],
                         ids=["default", "no_affine", "no_bias", "eps"])
def test_module_matches_torch(kwargs):
    ref = torch.nn.LayerNorm((4, 6), **kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_()
    ours = fusedops.nn.LayerNorm((4, 6), **kwargs)
    assert isinstance(ours, torch.nn.LayerNorm)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert repr(ours).replace("fusedops.nn.", "") == repr(ref) or repr(ours).split("(", 1)[1] == repr(ref).split("(", 1)[1]
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 4, 6, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    out, expected = ours(x), ref(x2)
    torch.testing.assert_close(out, expected)
    out.pow(2).sum().backward()
    expected.pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    ref.load_state_dict(ours.state_dict())  # and back


def test_module_dtype_device():
    m = fusedops.nn.LayerNorm(8, dtype=torch.float64, device="cpu")
    assert m.weight.dtype == torch.float64
    assert m(torch.randn(2, 8, dtype=torch.float64)).dtype == torch.float64


# ---- CUDA kernels: simulator (and GPU) against the CPU ops ----------------------------------------


def _lowp(t, dtype):
    return None if t is None else t.to(dtype)


def _dev(t, d, dtype):
    return None if t is None else t.to(d, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,affine", [(1, (True, True)), (3, (True, False)), (8, (False, True)),
                                      (97, (True, True)), (256, (False, False))], ids=str)
def test_cuda_forward(backend, dtype, n, affine):
    x, w, b = make((2, 5), (n,), torch.float32, affine, scale=2.0, shift=1.0)
    r = torch.randn_like(x)
    d = dev(backend)
    ref = F.layer_norm(x.double(), (n,), f64(w), f64(b))
    lowp = F.layer_norm(x.to(dtype), (n,), _lowp(w, dtype), _lowp(b, dtype))
    out, mean, rstd = op(backend, "layer_norm_stats")(x.to(d, dtype), [n], _dev(w, d, dtype), _dev(b, d, dtype), 1e-5)
    assert out.dtype == dtype and out.shape == x.shape
    assert mean.dtype == (torch.float64 if dtype == torch.float64 else torch.float32) and mean.shape == (2, 5)
    check_close(out, ref, lowp, dtype, "layer_norm")
    plain = op(backend, "layer_norm")(x.to(d, dtype), [n], _dev(w, d, dtype), _dev(b, d, dtype), 1e-5)
    assert torch.equal(plain, out)
    xr = x.to(dtype).double()
    torch.testing.assert_close(mean.double().cpu(), xr.mean(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rstd.double().cpu(), (xr.var(-1, unbiased=False) + 1e-5).rsqrt(), rtol=1e-4, atol=1e-4)
    # the residual add
    out2, s = op(backend, "add_layer_norm")(x.to(d, dtype), r.to(d, dtype), [n], _dev(w, d, dtype),
                                            _dev(b, d, dtype), 1e-5)
    assert torch.equal(s.cpu(), (x.to(dtype) + r.to(dtype)))
    s = s.cpu()
    ref2 = F.layer_norm(s.double(), (n,), f64(w), f64(b))
    check_close(out2, ref2, F.layer_norm(s, (n,), _lowp(w, dtype), _lowp(b, dtype)), dtype, "add_layer_norm")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("M,n", [(5, 1), (7, 3), (9, 96), (4, 97), (1030, 24)], ids=str)
def test_cuda_backward(backend, dtype, M, n):
    x, w, _ = make((M,), (n,), torch.float32, scale=1.5)
    g, ga = torch.randn_like(x), torch.randn_like(x)
    mask = [True, True, True]
    _, mean, rstd = ops.layer_norm_stats(x.double(), [n], w.double(), None, 1e-5)
    ref = ops.add_layer_norm_backward(g.double(), ga.double(), x.double(), [n], mean, rstd, w.double(), mask)
    xl, wl, gl, gal = (t.to(dtype).float() for t in (x, w, g, ga))
    _, ml, rl = ops.layer_norm_stats(xl, [n], wl, None, 1e-5)
    lowp = [t.to(dtype) for t in ops.add_layer_norm_backward(gl, gal, xl, [n], ml, rl, wl, mask)]
    d = dev(backend)
    xd = x.to(d, dtype)
    _, md, rd = op(backend, "layer_norm_stats")(xd, [n], w.to(d, dtype), None, 1e-5)
    args = (g.to(d, dtype), ga.to(d, dtype), xd, [n], md, rd, w.to(d, dtype), mask)
    ours = op(backend, "add_layer_norm_backward")(*args)
    for name, o, r, lp in zip(("grad_input", "grad_weight", "grad_bias"), ours, ref, lowp):
        assert o.dtype == dtype
        check_close(o, r, lp, dtype, name)
    again = op(backend, "add_layer_norm_backward")(*args)
    for o, a in zip(ours, again):  # deterministic: no atomics in the weight/bias sums
        assert torch.equal(o, a)
    # without the residual gradient, and with subsets of the outputs
    ours2 = op(backend, "layer_norm_backward")(g.to(d, dtype), xd, [n], md, rd, None, [True, False, True])
    assert ours2[1] is None
    ref2 = ops.layer_norm_backward(g.double(), x.double(), [n], mean, rstd, None, [True, False, True])
    lowp2 = [None if t is None else t.to(dtype) for t in ops.layer_norm_backward(gl, xl, [n], ml, rl, None, [True, False, True])]
    check_close(ours2[0], ref2[0], lowp2[0], dtype, "grad_input (no weight)")
    check_close(ours2[2], ref2[2], lowp2[2], dtype, "grad_bias (no weight)")


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_wide_rows_and_layouts(backend):
    # 6200 fp32 columns: the weight/bias partials do not fit in shared memory and accumulate in
    # the workspace; an offset view makes the pointers unaligned (the scalar-load variant).
    d = dev(backend)
    x, w, b = make((3,), (6200,), torch.float32)
    g = torch.randn_like(x)
    _, mean, rstd = ops.layer_norm_stats(x, [6200], w, b, 1e-5)
    want = ops.layer_norm_backward(g, x, [6200], mean, rstd, w, [True, True, True])
    _, md, rd = op(backend, "layer_norm_stats")(x.to(d), [6200], w.to(d), b.to(d), 1e-5)
    got = op(backend, "layer_norm_backward")(g.to(d), x.to(d), [6200], md, rd, w.to(d), [True, True, True])
    for o, r in zip(got, want):
        torch.testing.assert_close(o.cpu(), r, rtol=1e-4, atol=1e-4)
    base = torch.randn(5 * 33 + 1)
    xo = base[1:].view(5, 33)  # 4-byte offset
    out = op(backend, "layer_norm")(xo.to(d), [33], None, None, 1e-5)
    torch.testing.assert_close(out.cpu(), F.layer_norm(xo, (33,)), rtol=1e-5, atol=1e-5)
    xt = torch.randn(33, 5).t()  # non-contiguous
    out = op(backend, "layer_norm")(xt.to(d), [33], None, None, 1e-5)
    torch.testing.assert_close(out.cpu(), F.layer_norm(xt, (33,)), rtol=1e-5, atol=1e-5)
    empty = op(backend, "layer_norm_stats")(torch.randn(0, 8, device=d), [8], None, None, 1e-5)
    assert empty[0].shape == (0, 8) and empty[1].shape == (0,)
    gw = op(backend, "layer_norm_backward")(torch.randn(0, 8, device=d), torch.randn(0, 8, device=d), [8],
                                            empty[1], empty[2], None, [True, True, True])
    assert gw[0].shape == (0, 8) and torch.equal(gw[1].cpu(), torch.zeros(8)) and torch.equal(gw[2].cpu(), torch.zeros(8))


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_bad_input(backend):
    d = dev(backend)
    f = op(backend, "layer_norm")
    with pytest.raises(TypeError, match="fusedops.layer_norm: input"):
        f(torch.ones(2, 3, dtype=torch.int32, device=d), [3], None, None, 1e-5)
    with pytest.raises(RuntimeError, match="fusedops.layer_norm: input's trailing dimensions"):
        f(torch.ones(2, 3, device=d), [4], None, None, 1e-5)
    with pytest.raises(TypeError, match="fusedops.layer_norm: weight must have the dtype"):
        f(torch.ones(2, 3, device=d), [3], torch.ones(3, dtype=torch.float64, device=d), None, 1e-5)


def test_autocast_cpu():
    # a bfloat16 input (a linear's output under autocast) computes in float32 and comes back in
    # bfloat16, as torch's layer_norm; gradients reach the float32 leaves
    x = torch.randn(4, 16, requires_grad=True)
    w = torch.randn(8, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = F.linear(x, w)
        out = layer_norm(h, 8)
        ref = F.layer_norm(h, (8,))
        both, s = add_layer_norm(h, h, 8)
    assert out.dtype == ref.dtype == torch.bfloat16 and both.dtype == s.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)
    (out.float().sum() + both.float().pow(2).sum()).backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
