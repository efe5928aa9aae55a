"""fusedops.ops.gelu / relu / sigmoid / tanh / softmax / log_softmax, their backward operators
and the fusedops.nn modules against torch: values and gradients per instruction set over sizes
hitting every SIMD tail, special values (NaN, +-inf, +-0, saturation), softmax over every
dimension, empty and non-contiguous inputs; gradcheck, opcheck, torch.compile, meta tensors,
bad input; and the CUDA kernels on the simulator (and a GPU when present).
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

import fusedops
from conftest import BACKENDS, DTYPES, assert_raises_named, check_close, dev, op
from fusedops import ops as fops

ops = torch.ops.fusedops
FLOATS = (torch.float32, torch.float64)
SIZES = (1, 3, 7, 8, 15, 16, 17, 33, 97, 767, 4099)

# name -> (ours, torch)
POINTWISE = {
    "relu": (fops.relu, F.relu),
    "sigmoid": (fops.sigmoid, torch.sigmoid),
    "tanh": (fops.tanh, torch.tanh),
    "gelu": (fops.gelu, F.gelu),
    "gelu_tanh": (lambda x: fops.gelu(x, approximate="tanh"), lambda x: F.gelu(x, approximate="tanh")),
}
SOFTMAX = {
    "softmax": (fops.softmax, F.softmax),
    "log_softmax": (fops.log_softmax, F.log_softmax),
}
SPECIAL = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-30, -1e-30, 1e-6, -1e-6, 0.3, -0.39,
           0.41, 5.0, -5.0, 9.0, -9.0, 20.0, -20.0, 88.0, -88.0, 100.0, -100.0, 1e4, -1e4, 3e38, -3e38]


# ---- pointwise values --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(POINTWISE))
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_pointwise_values(isa, dtype, n, name, check):
    ours_fn, torch_fn = POINTWISE[name]
    x = torch.randn(n, dtype=dtype) * 4
    check.budget(ours_fn(x), torch_fn(x), torch_fn(x.double()), f"{name} n={n}")


@pytest.mark.parametrize("name", list(POINTWISE))
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_pointwise_special_values(isa, dtype, name):
    ours_fn, torch_fn = POINTWISE[name]
    x = torch.tensor(SPECIAL, dtype=dtype)
    x.requires_grad_()
    xr = x.detach().clone().requires_grad_()
    out, ref = ours_fn(x), torch_fn(xr)
    # The values' reference is torch in float64, rounded: torch's vectorised float32 GELU gives
    # NaN at +inf on AVX-512 machines (its float64 kernel, and the math, give +inf).
    want = torch_fn(x.detach().double()).to(dtype)
    # NaN where torch has NaN, and close elsewhere: a few eps of the value and of the input
    # (GELU's negative tail is 1 + erf(x) after cancellation, in torch as in ours)
    assert torch.equal(out.isnan(), want.isnan()), (out, want)
    eps = torch.finfo(dtype).eps
    scale = want.abs() + x.detach().abs().clamp(max=100)
    ok = out.isnan() | (out == want) | ((out - want).abs() <= 8 * eps * scale)
    assert ok.all(), (x[~ok], out[~ok], want[~ok])
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out))
    (gr,) = torch.autograd.grad(ref, xr, torch.ones_like(ref))
    assert torch.equal(g.isnan(), gr.isnan()), (g, gr)
    ok = g.isnan() | (g == gr) | ((g - gr).abs() <= 16 * eps * (gr.abs() + 1))
    assert ok.all(), (x[~ok], g[~ok], gr[~ok])


def test_tanh_sigmoid_relative_accuracy_near_zero(isa):
    x = torch.logspace(-30, 0, 301)
    x = torch.cat([x, -x])
    for ours, ref in ((fops.tanh(x), torch.tanh(x.double())), (fops.gelu(x, "tanh"), F.gelu(x.double(), approximate="tanh")),
                      (fops.gelu(x), F.gelu(x.double()))):
        rel = ((ours.double() - ref).abs() / ref.abs()).max().item()
        assert rel < 8 * torch.finfo(torch.float32).eps, rel


@pytest.mark.parametrize("name", list(POINTWISE))
def test_pointwise_layouts_and_empty(isa, name):
    ours_fn, torch_fn = POINTWISE[name]
    for x in (torch.randn(37, 2 * 41)[:, ::2], torch.randn(5, 6, 7).transpose(0, 2), torch.randn(0, 3),
              torch.randn(()), torch.randn(1).expand(19)):
        out = ours_fn(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out, torch_fn(x), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name", list(POINTWISE))
def test_pointwise_threads(name):
    ours_fn, torch_fn = POINTWISE[name]
    x = torch.randn(300_001)
    for n in (1, 2):
        torch.set_num_threads(n)
        torch.testing.assert_close(ours_fn(x), torch_fn(x), rtol=2e-6, atol=1e-6)


# ---- pointwise gradients ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(POINTWISE))
@pytest.mark.parametrize("n", (1, 17, 4099))
def test_pointwise_grad_vs_torch(isa, name, n, check):
    ours_fn, torch_fn = POINTWISE[name]
    x = (torch.randn(n) * 3).requires_grad_()
    g = torch.randn(n)
    (ours,) = torch.autograd.grad(ours_fn(x), x, g)
    (theirs,) = torch.autograd.grad(torch_fn(x), x, g)
    x64 = x.detach().double().requires_grad_()
    (truth,) = torch.autograd.grad(torch_fn(x64), x64, g.double())
    check.budget(ours, theirs, truth, f"grad {name}")


@pytest.mark.parametrize("name", list(POINTWISE))
def test_pointwise_gradcheck(isa, name):
    ours_fn, _ = POINTWISE[name]
    x = torch.randn(3, 7, dtype=torch.float64)
    x = (x + 0.1 * x.sign()).requires_grad_()  # away from relu's kink
    assert gradcheck(ours_fn, (x,))
    assert torch.autograd.gradgradcheck(ours_fn, (x,))


def test_backward_ops_direct(isa):
    x = torch.randn(50, dtype=torch.float64)
    g = torch.randn(50, dtype=torch.float64)
    for approx in ("none", "tanh"):
        xr = x.clone().requires_grad_()
        (want,) = torch.autograd.grad(F.gelu(xr, approximate=approx), xr, g)
        torch.testing.assert_close(ops.gelu_backward(g, x, approx), want)
    y = torch.sigmoid(x)
    torch.testing.assert_close(ops.sigmoid_backward(g, y), g * y * (1 - y))
    y = torch.tanh(x)
    torch.testing.assert_close(ops.tanh_backward(g, y), g * (1 - y * y))
    y = F.relu(x)
    torch.testing.assert_close(ops.relu_backward(g, y), torch.where(y > 0, g, 0))


# ---- softmax ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SOFTMAX))
@pytest.mark.parametrize("n", (1, 3, 7, 16, 17, 97, 767, 1029))
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_softmax_last_dim(isa, dtype, name, n, check):
    ours_fn, torch_fn = SOFTMAX[name]
    x = torch.randn(6, n, dtype=dtype) * 5
    for dim in (-1, 1):
        check.budget(ours_fn(x, dim), torch_fn(x, dim), torch_fn(x.double(), dim), f"{name} n={n}")


@pytest.mark.parametrize("name", list(SOFTMAX))
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_softmax_every_dim(isa, dtype, name, check):
    ours_fn, torch_fn = SOFTMAX[name]
    x = torch.randn(3, 5, 19, 4, dtype=dtype) * 3
    for dim in range(-4, 4):
        check.budget(ours_fn(x, dim), torch_fn(x, dim), torch_fn(x.double(), dim), f"{name} dim={dim}")
    for x in (torch.randn(4, 33, 21, dtype=dtype), torch.randn(7, 40, dtype=dtype).t()):  # inner 21, non-contiguous
        for dim in (0, 1):
            check.budget(ours_fn(x, dim), torch_fn(x, dim), torch_fn(x.double(), dim), f"{name} {tuple(x.shape)}")


@pytest.mark.parametrize("name", list(SOFTMAX))
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_softmax_special_values(isa, dtype, name):
    ours_fn, torch_fn = SOFTMAX[name]
    inf, nan = float("inf"), float("nan")
    rows = [[inf, 1.0, 2.0], [-inf, -inf, -inf], [nan, 1.0, 2.0], [-inf, 0.0, 1.0], [1e4, -1e4, 0.0],
            [-1e4, -1e4, -1e4], [3e38, 3e38, -3e38], [1.0, 2.0, nan]]
    x = torch.tensor(rows, dtype=dtype)
    for dim in (-1, 0):
        out, ref = ours_fn(x, dim), torch_fn(x, dim)
        torch.testing.assert_close(out, ref, equal_nan=True)
        wide = x.repeat(1, 11)  # the same over a row long enough for the SIMD path
        torch.testing.assert_close(ours_fn(wide, -1), torch_fn(wide, -1), equal_nan=True)
        tall = x.t().repeat(1, 11)  # columns of special values, side by side (inner > 1)
        torch.testing.assert_close(ours_fn(tall, 0), torch_fn(tall, 0), equal_nan=True)


@pytest.mark.parametrize("name", list(SOFTMAX))
def test_softmax_empty_scalar_and_implicit_dim(name):
    ours_fn, torch_fn = SOFTMAX[name]
    for x, dim in ((torch.randn(0, 5), -1), (torch.randn(4, 0), 1), (torch.randn(4, 0), 0), (torch.randn(()), 0),
                   (torch.randn(()), -1)):
        out = ours_fn(x, dim)
        assert out.shape == x.shape
        torch.testing.assert_close(out, torch_fn(x, dim))
    x = torch.randn(2, 3, 4)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        out = ours_fn(x)
    torch.testing.assert_close(out, torch_fn(x, 0))
    torch.testing.assert_close(ours_fn(x, -1, dtype=torch.float64), torch_fn(x, -1, dtype=torch.float64))


@pytest.mark.parametrize("name", list(SOFTMAX))
@pytest.mark.parametrize("dim", (0, 1, 2))
def test_softmax_grad_vs_torch(isa, name, dim, check):
    ours_fn, torch_fn = SOFTMAX[name]
    x = (torch.randn(5, 97, 9) * 2).requires_grad_()
    g = torch.randn(5, 97, 9)
    (ours,) = torch.autograd.grad(ours_fn(x, dim), x, g)
    (theirs,) = torch.autograd.grad(torch_fn(x, dim), x, g)
    x64 = x.detach().double().requires_grad_()
    (truth,) = torch.autograd.grad(torch_fn(x64, dim), x64, g.double())
    check.budget(ours, theirs, truth, f"grad {name} dim={dim}")


@pytest.mark.parametrize("name", list(SOFTMAX))
def test_softmax_gradcheck(isa, name):
    ours_fn, _ = SOFTMAX[name]
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    for dim in (0, 1, -1):
        assert gradcheck(lambda t: ours_fn(t, dim), (x,))
        assert torch.autograd.gradgradcheck(lambda t: ours_fn(t, dim), (x,))


# ---- opcheck, compile, meta, bad input ----------------------------------------------------------


def test_opcheck():
    x = torch.randn(3, 5, 7, requires_grad=True)
    g = torch.randn(3, 5, 7)
    for name in ("relu", "sigmoid", "tanh"):
        torch.library.opcheck(getattr(ops, name).default, (x,))
        torch.library.opcheck(getattr(ops, f"{name}_backward").default, (g, x.detach()))
    for approx in ("none", "tanh"):
        torch.library.opcheck(ops.gelu.default, (x, approx))
        torch.library.opcheck(ops.gelu_backward.default, (g, x.detach(), approx))
    for name in ("softmax", "log_softmax"):
        for dim in (-1, 0):
            torch.library.opcheck(getattr(ops, name).default, (x, dim))
            torch.library.opcheck(getattr(ops, f"{name}_backward").default, (g, x.detach(), dim))


def test_compile_aot_eager():
    torch._dynamo.reset()

    def f(x):
        h = fops.gelu(x, approximate="tanh") + fops.relu(x) + fops.sigmoid(x) * fops.tanh(x)
        return fops.log_softmax(h, -1) + fops.softmax(h, 0)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 9, requires_grad=True)
    g = torch.randn(4, 9)
    out_c = compiled(x)
    (gc,) = torch.autograd.grad(out_c, x, g)
    out_e = f(x)
    (ge,) = torch.autograd.grad(out_e, x, g)
    torch.testing.assert_close(out_c, out_e)
    torch.testing.assert_close(gc, ge)


def test_meta_matches_real():
    x = torch.randn(3, 4, 5)
    m = x.to("meta")
    for fn in (fops.relu, fops.sigmoid, fops.tanh, fops.gelu, lambda t: fops.softmax(t, 1),
               lambda t: fops.log_softmax(t, -1)):
        real, meta = fn(x), fn(m)
        assert (meta.shape, meta.dtype, meta.stride()) == (real.shape, real.dtype, real.stride())


def test_bad_input():
    x = torch.randn(3, 5)
    assert_raises_named(lambda: ops.gelu(x, "fast"), RuntimeError, ["approximate", "fast"], "gelu")
    with pytest.raises(ValueError, match="fusedops.gelu: approximate"):
        fops.gelu(x, approximate="fast")
    assert_raises_named(lambda: ops.relu(x.int()), TypeError, ["input", "Int"], "relu")
    assert_raises_named(lambda: ops.softmax(x, 2), RuntimeError, ["dim", "[-2, 1]", "2"], "softmax")
    assert_raises_named(lambda: ops.log_softmax(x, -3), RuntimeError, ["dim"], "log_softmax")
    assert_raises_named(lambda: ops.tanh_backward(x[:2], x), RuntimeError, ["grad_output", "[2, 5]"],
                        "tanh_backward")
    assert_raises_named(lambda: ops.gelu_backward(x, x.double()), TypeError, ["grad_output", "dtype"],
                        "gelu_backward")
    assert_raises_named(lambda: ops.softmax_backward(x, x[:, :2], 1), RuntimeError, ["grad_output"],
                        "softmax_backward")


@pytest.mark.parametrize("backend", ["cpu", *BACKENDS])
def test_softmax_sizes_after_a_zero_overflow(backend):
    """torch checks a tensor's sizes only up to a zero: the dimensions after dim of an empty
    [0, 5, 2^62] input multiply past int64, and are refused rather than wrapped."""
    x = torch.empty(0, 1, 1).expand(0, 5, 2**62)
    for name in ("softmax", "log_softmax"):
        f = getattr(ops, name) if backend == "cpu" else op(backend, name)
        assert_raises_named(lambda: f(x.to(backend.replace("cuda-sim", "cpu")), 0), RuntimeError,
                            ["after dim", "overflows"], name)


# ---- modules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ours,ref", [
    (fusedops.nn.GELU(), torch.nn.GELU()),
    (fusedops.nn.GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh")),
    (fusedops.nn.ReLU(), torch.nn.ReLU()),
    (fusedops.nn.ReLU(inplace=True), torch.nn.ReLU(inplace=True)),
    (fusedops.nn.Sigmoid(), torch.nn.Sigmoid()),
    (fusedops.nn.Tanh(), torch.nn.Tanh()),
    (fusedops.nn.Softmax(dim=1), torch.nn.Softmax(dim=1)),
    (fusedops.nn.Softmax(-1), torch.nn.Softmax(-1)),
    (fusedops.nn.LogSoftmax(dim=0), torch.nn.LogSoftmax(dim=0)),
], ids=lambda m: repr(m))
def test_modules(ours, ref):
    assert isinstance(ours, type(ref))
    assert ours.extra_repr() == ref.extra_repr()
    assert ours.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(4, 6, 5, requires_grad=True)
    x2 = x.detach().clone()
    out = ours(x)
    torch.testing.assert_close(out, ref(x2.clone()), rtol=2e-6, atol=1e-6)
    assert torch.equal(x.detach(), x2)  # inplace=True is documented as out of place
    out.sum().backward()
    assert x.grad is not None


# ---- CUDA kernels: simulator (and GPU) against the CPU ops ----------------------------------------

TORCH_POINTWISE = {
    "relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "gelu": F.gelu,
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
}


def _cuda_forward(backend, name):
    if name.startswith("gelu"):
        approx = "tanh" if name == "gelu_tanh" else "none"
        return lambda x: op(backend, "gelu")(x, approx)
    return op(backend, name)


def _cuda_backward(backend, name):
    if name.startswith("gelu"):
        approx = "tanh" if name == "gelu_tanh" else "none"
        return lambda g, s: op(backend, "gelu_backward")(g, s, approx)
    return op(backend, f"{name}_backward")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(TORCH_POINTWISE))
def test_cuda_pointwise(backend, dtype, name):
    d = dev(backend)
    fn = TORCH_POINTWISE[name]
    for n, offset in ((1, 0), (37, 0), (1000, 0), (1000, 1)):  # offset 1: unaligned, scalar loads
        x = (torch.randn(n + offset) * 3)[offset:]
        ref, lowp = fn(x.double()), fn(x.to(dtype))
        out = _cuda_forward(backend, name)(x.to(d, dtype))
        assert out.dtype == dtype
        check_close(out, ref, lowp, dtype, f"{name} n={n}")
        g = torch.randn(n)
        # gelu's backward reads the input, the others' the output
        saved = x.double() if name.startswith("gelu") else fn(x.double())
        gref = _cpu_backward(name, g.double(), saved)
        glow = _cpu_backward(name, g.to(dtype).float(), saved.to(dtype).float()).to(dtype)
        got = _cuda_backward(backend, name)(g.to(d, dtype), saved.to(d, dtype))
        check_close(got, gref, glow, dtype, f"{name} backward n={n}")


def _cpu_backward(name, g, saved):
    if name.startswith("gelu"):
        return ops.gelu_backward(g, saved, "tanh" if name == "gelu_tanh" else "none")
    return getattr(ops, f"{name}_backward")(g, saved)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ("softmax", "log_softmax"))
def test_cuda_softmax(backend, dtype, name):
    d = dev(backend)
    fn = getattr(torch, name)
    for shape, dim in (((5, 1), -1), ((6, 7), -1), ((3, 64), 1), ((4, 100), -1), ((9, 4, 5), 1), ((7, 6), 0)):
        x = torch.randn(*shape) * 3
        out = op(backend, name)(x.to(d, dtype), dim)
        assert out.dtype == dtype and out.shape == x.shape and out.is_contiguous()
        check_close(out, fn(x.double(), dim), fn(x.to(dtype), dim), dtype, f"{name} {shape} dim={dim}")
        y = fn(x, dim)
        g = torch.randn(*shape)
        ref = getattr(ops, f"{name}_backward")(g.double(), y.double(), dim)
        lowp = getattr(ops, f"{name}_backward")(g.to(dtype).float(), y.to(dtype).float(), dim).to(dtype)
        got = op(backend, f"{name}_backward")(g.to(d, dtype), y.to(d, dtype), dim)
        check_close(got, ref, lowp, dtype, f"{name} backward {shape} dim={dim}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_special_values(backend):
    d = dev(backend)
    inf, nan = float("inf"), float("nan")
    x = torch.tensor([[inf, 1.0, 2.0, 0.0], [-inf, -inf, -inf, -inf], [nan, 1.0, 2.0, 0.0], [-inf, 0.0, 1.0, 2.0],
                      [1e4, -1e4, 0.0, 1.0]])
    for name in ("softmax", "log_softmax"):
        torch.testing.assert_close(op(backend, name)(x.to(d), -1).cpu(), getattr(torch, name)(x, -1), equal_nan=True)
    v = torch.tensor([nan, inf, -inf, 0.0, -0.0, 1e-30, -100.0, 100.0])
    for name, fn in TORCH_POINTWISE.items():
        # (torch in float64: its float32 GELU is NaN at +inf on AVX-512 machines)
        torch.testing.assert_close(_cuda_forward(backend, name)(v.to(d)).cpu(), fn(v.double()).float(), equal_nan=True)
    torch.testing.assert_close(op(backend, "relu_backward")(torch.ones(8, device=d), F.relu(v).to(d)).cpu(),
                               torch.tensor([1.0, 1, 0, 0, 0, 1, 0, 1]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_empty_and_bad_input(backend):
    d = dev(backend)
    assert op(backend, "gelu")(torch.randn(0, 3, device=d), "none").shape == (0, 3)
    assert op(backend, "softmax")(torch.randn(4, 0, device=d), -1).shape == (4, 0)
    assert op(backend, "softmax")(torch.randn(0, 4, device=d), 0).shape == (0, 4)
    torch.testing.assert_close(op(backend, "softmax")(torch.randn((), device=d), 0).cpu(), torch.tensor(1.0))
    with pytest.raises(TypeError, match="fusedops.relu: input"):
        op(backend, "relu")(torch.ones(3, dtype=torch.int32, device=d))
    with pytest.raises(RuntimeError, match="fusedops.softmax: dim"):
        op(backend, "softmax")(torch.ones(3, device=d), 1)
    with pytest.raises(RuntimeError, match="fusedops.gelu: approximate"):
        op(backend, "gelu")(torch.ones(3, device=d), "fast")


def test_autocast_cpu():
    x = torch.randn(4, 16, requires_grad=True)
    w = torch.randn(8, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = F.linear(x, w)
        outs = [fops.gelu(h, "tanh"), fops.relu(h), fops.sigmoid(h), fops.tanh(h), fops.softmax(h, -1),
                fops.log_softmax(h, 0)]
        refs = [F.gelu(h, approximate="tanh"), F.relu(h), torch.sigmoid(h), torch.tanh(h), torch.softmax(h, -1),
                torch.log_softmax(h, 0)]
    for o, r in zip(outs, refs):
        assert o.dtype == r.dtype == torch.bfloat16
        torch.testing.assert_close(o.float(), r.float(), rtol=2e-2, atol=2e-2)
    sum(o.float().sum() for o in outs).backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
