"""conv2d and max_pool2d (CPU kernels, and the CUDA kernels on the simulator) against torch:
values, gradients, memory formats, fake tensors, torch.compile, bad input, modules."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import BACKENDS, DTYPES, assert_product_close, assert_raises_named, assert_within_budget
from conftest import check_close, dev, op

import fusedops
from fusedops.ops import conv2d, max_pool2d

# (N, C, H, W, K, kH, kW, stride, padding, dilation, groups)
CASES = [
    (2, 3, 8, 9, 4, 3, 3, 1, 1, 1, 1),        # 3x3 same-size
    (2, 4, 9, 7, 6, 3, 2, 2, 1, 1, 2),        # stride 2, groups 2, non-square kernel
    (1, 8, 10, 10, 8, 3, 3, 1, 1, 1, 8),      # depthwise, batch 1
    (2, 1, 28, 28, 32, 3, 3, 1, 0, 1, 1),     # one input channel (direct kernel)
    (2, 5, 7, 6, 7, 1, 1, 1, 0, 1, 1),        # 1x1 pointwise, odd channels
    (2, 6, 11, 13, 4, 5, 5, 3, 2, 2, 2),      # 5x5 stride 3 dilation 2
    (1, 3, 3, 2, 5, 7, 7, 1, 3, 1, 1),        # H, W smaller than the kernel, padded
    (3, 16, 12, 12, 16, 3, 3, 1, 1, 1, 1),
    (2, 16, 12, 12, 32, 3, 3, 2, 1, 1, 1),    # stride 2: input gradient by GEMM + col2im
    (2, 16, 12, 12, 32, 1, 1, 2, 0, 1, 1),    # strided 1x1
    (2, 16, 9, 9, 24, 3, 3, 1, 0, 2, 1),      # dilation 2
    (1, 7, 6, 6, 9, 2, 2, 1, 2, 1, 1),        # padding beyond the kernel reach
    (2, 12, 9, 10, 12, 3, 3, 1, 1, 1, 3),     # groups 3
    (2, 9, 7, 8, 15, 7, 7, 1, 3, 1, 1),       # 7x7
    (2, 6, 10, 9, 6, 3, 5, (1, 2), (1, 2), (2, 1), 2),  # pairs everywhere
    (1, 512, 4, 5, 6, 3, 3, 1, 1, 1, 1),      # input gradient as a transposed convolution
    # stride 1: the padded-width implicit GEMM; many small images batched per GEMM and split
    # between threads, asymmetric padding, 7 and 10 output channels (partial microkernel rows)
    (9, 8, 6, 5, 10, 3, 3, 1, (2, 0), 1, 2),
    (5, 6, 13, 13, 7, 3, 3, 1, 1, 2, 1),      # dilation 2
    (8, 32, 13, 13, 64, 3, 3, 1, 1, 1, 1),    # the benchmark's 13x13 layer, smaller batch
]


def _case(c, dtype=torch.float32, bias=True, grad=False):
    n, ci, h, w, k, kh, kw, s, p, d, g = c
    x = torch.randn(n, ci, h, w, dtype=dtype, requires_grad=grad)
    wt = torch.randn(k, ci // g, kh, kw, dtype=dtype, requires_grad=grad)
    b = torch.randn(k, dtype=dtype, requires_grad=grad) if bias else None
    return x, wt, b, dict(stride=s, padding=p, dilation=d, groups=g)


def assert_conv_close(out, x, w, b, kw, what="conv2d"):
    x64, w64 = x.detach().double(), w.detach().double()
    b64 = None if b is None else b.detach().double()
    ref = F.conv2d(x64, w64, b64, **kw)
    bound = F.conv2d(x64.abs(), w64.abs(), None if b64 is None else b64.abs(), **kw)
    k = w.shape[1] * w.shape[2] * w.shape[3]
    assert out.dtype == x.dtype
    assert_product_close(out, ref, bound, k, what=what)


def _check_forward_backward(c, tag=""):
    """Values against float64 truth; gradients within twice torch's float32 error."""
    x, w, b, kw = _case(c, grad=True)
    out = conv2d(x, w, b, **kw)
    assert_conv_close(out, x, w, b, kw, what=f"conv2d{tag}")
    go = torch.randn_like(out)
    ours = torch.autograd.grad(out, (x, w, b), go)
    theirs = torch.autograd.grad(F.conv2d(x, w, b, **kw), (x, w, b), go)
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    truth = torch.autograd.grad(F.conv2d(x64, w64, b64, **kw), (x64, w64, b64), go.double())
    for name, o, t, r in zip(("grad_input", "grad_weight", "grad_bias"), ours, theirs, truth):
        assert_within_budget(o, t, r, f"{name}{tag}", floor_ulps=64)
    return x, w, kw


@pytest.mark.parametrize("c", CASES, ids=[str(i) for i in range(len(CASES))])
def test_conv2d_forward_backward(c):
    _check_forward_backward(c)


# Few input channels of a small kernel (Cg * R * S < 32): at stride 1 the padded-width GEMM with
# each output row written straight into y (short K), at other strides the SIMD direct kernel;
# thin products (Kg < 4) direct loops. Output widths around the vector width (tails), borders
# from padding, strides, dilation, channel counts that leave partial tiles.
DIRECT_CASES = [
    (4, 1, 28, 28, 32, 3, 3, 1, 0, 1, 1),     # an MNIST first layer
    (2, 3, 19, 21, 6, 3, 3, 1, 1, 1, 1),      # RGB, padded, 6 = 4 + 2 channels
    (2, 1, 17, 33, 5, 5, 5, 2, 2, 1, 1),      # stride 2, padding 2
    (1, 2, 12, 40, 7, 3, 3, 1, 2, 2, 1),      # dilation 2, padding 2, 7 channels
    (3, 1, 9, 8, 3, 1, 3, (1, 3), (0, 1), 1, 1),  # 1x3 kernel, width stride 3
    (2, 4, 9, 9, 8, 3, 3, 1, 1, 1, 2),        # groups 2 (Cg = 2)
]


@pytest.mark.parametrize("c", DIRECT_CASES, ids=[str(i) for i in range(len(DIRECT_CASES))])
def test_conv2d_direct_every_isa(isa, c):
    x, w, kw = _check_forward_backward(c, f"[{isa}]")
    x64 = x.detach().double().requires_grad_()
    w64 = w.detach().double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, bw: conv2d(a, bw, None, **kw), (x64[:1, :, :7, :9], w64))


@pytest.mark.parametrize("c", [CASES[0], CASES[2], CASES[3], CASES[8]], ids=str)
def test_conv2d_every_isa(isa, c):
    x, w, b, kw = _case(c)
    assert_conv_close(conv2d(x, w, b, **kw), x, w, b, kw, what=f"conv2d[{isa}]")


@pytest.mark.parametrize("c", [CASES[1], CASES[5], CASES[11]], ids=str)
def test_conv2d_float64_exact_enough(c):
    x, w, b, kw = _case(c, dtype=torch.float64)
    torch.testing.assert_close(conv2d(x, w, b, **kw), F.conv2d(x, w, b, **kw), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kh,kw_,d", [(3, 3, 1), (2, 4, 1), (4, 2, 2), (1, 1, 1), (5, 2, 2)])
def test_padding_same_and_valid(kh, kw_, d):
    x = torch.randn(2, 3, 9, 8, requires_grad=True)
    w = torch.randn(5, 3, kh, kw_, requires_grad=True)
    for padding in ("same", "valid"):
        out = conv2d(x, w, None, padding=padding, dilation=d)
        ref = F.conv2d(x, w, None, padding=padding, dilation=d)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        g = torch.randn_like(ref)
        for a, r in zip(torch.autograd.grad(out, (x, w), g), torch.autograd.grad(ref, (x, w), g)):
            torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-3)


def test_unbatched_input():
    x, w, b = torch.randn(3, 7, 6), torch.randn(4, 3, 3, 3), torch.randn(4)
    out = conv2d(x, w, b, padding=1)
    assert out.shape == (4, 7, 6)
    torch.testing.assert_close(out, F.conv2d(x, w, b, padding=1), rtol=1e-4, atol=1e-4)


def test_channels_last_and_strided_inputs():
    x = torch.randn(2, 6, 10, 11).to(memory_format=torch.channels_last)
    w, b = torch.randn(8, 6, 3, 3), torch.randn(8)
    out, ref = conv2d(x, w, b, padding=1), F.conv2d(x, w, b, padding=1)
    assert out.stride() == ref.stride() and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    wcl = w.to(memory_format=torch.channels_last)
    xc = x.contiguous()
    assert conv2d(xc, wcl, b).stride() == F.conv2d(xc, wcl, b).stride()
    xs = torch.randn(2, 12, 20, 11)[:, ::2, ::2]  # non-contiguous
    torch.testing.assert_close(conv2d(xs, w, b), F.conv2d(xs, w, b), rtol=1e-4, atol=1e-4)
    xs.requires_grad_()
    (conv2d(xs, w, b) * 2).sum().backward()
    g = xs.grad.clone()
    xs.grad = None
    (F.conv2d(xs, w, b) * 2).sum().backward()
    torch.testing.assert_close(g, xs.grad, rtol=1e-4, atol=1e-4)


def test_empty_batch_and_no_bias():
    x, w = torch.randn(0, 3, 5, 5, requires_grad=True), torch.randn(4, 3, 3, 3, requires_grad=True)
    out = conv2d(x, w)
    assert out.shape == (0, 4, 3, 3)
    out.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w))


@pytest.mark.parametrize("c", [(1, 4, 4, 5, 2, 3, 3, 1, 1, 1, 2), (1, 2, 5, 4, 2, 3, 2, 2, 1, 2, 1),
                               (1, 3, 4, 4, 3, 3, 3, 1, 1, 1, 3)], ids=str)
def test_gradcheck_float64(c):
    x, w, b, kw = _case(c, dtype=torch.float64, grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: conv2d(x, w, b, **kw), (x, w, b))


@pytest.mark.slow
def test_gradgradcheck_float64():
    x, w, b, kw = _case((1, 2, 4, 3, 2, 2, 2, 1, 1, 1, 1), dtype=torch.float64, grad=True)
    assert torch.autograd.gradgradcheck(lambda x, w, b: conv2d(x, w, b, **kw), (x, w, b))


def test_opcheck_conv_and_pool():
    x = torch.randn(2, 4, 7, 6, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    torch.library.opcheck(torch.ops.fusedops.conv2d, (x, w, b, [2, 1], [1, 1], [1, 2], 2))
    xcl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(torch.ops.fusedops.conv2d, (xcl, w, None, [1, 1], [0, 0], [1, 1], 2))
    torch.library.opcheck(torch.ops.fusedops.max_pool2d_with_indices,
                          (x, [3, 2], [2, 2], [1, 1], [1, 1], True))
    torch.library.opcheck(torch.ops.fusedops.max_pool2d_with_indices,
                          (xcl, [2, 2], [2, 2], [0, 0], [1, 1], False))


def test_torch_compile_fullgraph():
    conv = fusedops.nn.Conv2d(3, 8, 3, padding=1)
    pool = fusedops.nn.MaxPool2d(2)

    def f(x):
        return pool(torch.relu(conv(x))).sum()

    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    y = cf(x)
    (gx,) = torch.autograd.grad(y, x)
    x2 = x.detach().requires_grad_()
    y2 = f(x2)
    (gx2,) = torch.autograd.grad(y2, x2)
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(gx, gx2)


def test_bad_input_errors():
    x, w = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3)
    assert_raises_named(lambda: conv2d(torch.randn(4, 8), w), RuntimeError, ["input", "3-D", "4-D"], "conv2d")
    assert_raises_named(lambda: conv2d(x, torch.randn(6, 4, 3)), RuntimeError, ["weight", "4-D"], "conv2d")
    assert_raises_named(lambda: conv2d(x, torch.randn(6, 3, 3, 3)), RuntimeError, ["channels"], "conv2d")
    assert_raises_named(lambda: conv2d(x, torch.randn(6, 4, 3, 3), groups=3), RuntimeError,
                        ["groups", "divide"], "conv2d")
    assert_raises_named(lambda: conv2d(x, w, padding=-1), RuntimeError, ["padding", "non-negative"], "conv2d")
    assert_raises_named(lambda: conv2d(x, w, stride=0), RuntimeError, ["stride", "positive"], "conv2d")
    assert_raises_named(lambda: conv2d(x, w, dilation=0), RuntimeError, ["dilation", "positive"], "conv2d")
    assert_raises_named(lambda: conv2d(torch.randn(1, 4, 2, 2), w), RuntimeError, ["output size"], "conv2d")
    assert_raises_named(lambda: conv2d(x, w, torch.randn(5)), RuntimeError, ["bias"], "conv2d")
    assert_raises_named(lambda: conv2d(x, w.double()), TypeError, ["weight", "dtype"], "conv2d")
    assert_raises_named(lambda: conv2d(x.int(), w.int()), TypeError, ["input", "float32"], "conv2d")
    assert_raises_named(lambda: conv2d(x, w, padding="full"), ValueError, ["padding"], "conv2d")
    assert_raises_named(lambda: conv2d(x, w, stride=2, padding="same"), ValueError, ["same"], "conv2d")
    assert_raises_named(lambda: max_pool2d(x, 3, padding=2), RuntimeError, ["padding", "half"], "max_pool2d")
    assert_raises_named(lambda: max_pool2d(x, 3, stride=0), RuntimeError, ["stride"], "max_pool2d")
    assert_raises_named(lambda: max_pool2d(torch.randn(8, 8), 2), RuntimeError, ["3-D"], "max_pool2d")
    assert_raises_named(lambda: max_pool2d(torch.randn(1, 1, 2, 2), 3), RuntimeError, ["output size"], "max_pool2d")
    assert_raises_named(lambda: conv2d(x, torch.randn(6, 4, 0, 3)), RuntimeError, ["kernel size", "positive"], "conv2d")


def test_geometry_overflow_errors():
    """Sizes derived from padding, dilation and stride are computed without int64 wrap-around:
    what would overflow is refused, naming the argument (a dilation of 2^62 + 1 over 5 taps
    wrapped to a kernel of 5 and indexed far outside the input)."""
    x, w5, big = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 5, 1), 2**62 + 1
    assert_raises_named(lambda: conv2d(x, w5, dilation=(big, 1)), RuntimeError, ["dilation", "overflows"], "conv2d")
    gy = torch.randn(1, 1, 4, 8)
    assert_raises_named(lambda: torch.ops.fusedops.conv2d_backward(gy, x, w5, [1, 1], [0, 0], [big, 1], 1, [True] * 3),
                        RuntimeError, ["dilation", "overflows"], "conv2d_backward")
    assert_raises_named(lambda: conv2d(x, w5, padding=(2**62, 0)), RuntimeError, ["padding", "overflows"], "conv2d")
    # an 8 x 8 output from a padded image of (2^32 + 8)^2 elements (stride 1, dilated kernel)
    assert_raises_named(lambda: conv2d(x, torch.randn(1, 1, 3, 3), padding=2**31, dilation=2**31),
                        RuntimeError, ["padding", "overflows"], "conv2d")
    assert_raises_named(lambda: max_pool2d(x, 5, 1, 0, big), RuntimeError, ["dilation", "overflows"], "max_pool2d")
    empty = torch.empty(0, 1, 2**62, 1)  # no elements: any height
    assert_raises_named(lambda: max_pool2d(empty, (2**62, 1), 1, (2**61, 0)), RuntimeError,
                        ["padding", "overflows"], "max_pool2d")
    # ceil_mode with a stride near 2^63: one window, without overflowing the rounding
    out, idx = max_pool2d(x, 2, 2**63 - 1, ceil_mode=True, return_indices=True)
    assert out.shape == (1, 1, 1, 1) and out.item() == x[0, 0, :2, :2].max() and idx.item() in (0, 1, 8, 9)


# ---- max pooling ------------------------------------------------------------------------------

POOLS = [  # kernel, stride, padding, dilation, ceil_mode
    (2, None, 0, 1, False), (3, 2, 1, 1, True), (3, 2, 1, 2, False), (2, 3, 1, 1, True),
    ((3, 2), (1, 2), (1, 0), (1, 2), True), (3, 1, 1, 1, False), (1, 1, 0, 1, False),
]


@pytest.mark.parametrize("p", POOLS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_max_pool2d_matches_torch(p, dtype):
    k, s, pad, d, ceil = p
    x = torch.randn(2, 3, 9, 10, dtype=dtype, requires_grad=True)
    a, ia = max_pool2d(x, k, s, pad, d, ceil, return_indices=True)
    r, ir = F.max_pool2d(x, k, s, pad, d, ceil, return_indices=True)
    assert torch.equal(a, r) and torch.equal(ia, ir)
    g = torch.randn_like(r)
    assert torch.equal(torch.autograd.grad(a, x, g)[0], torch.autograd.grad(r, x, g)[0])


def test_max_pool2d_ties_nan_channels_last_unbatched():
    x = torch.zeros(1, 2, 6, 6)
    x[0, 0, 1, 1] = float("nan")
    x[0, 1, 2, 3] = float("-inf")
    for xx in (x, x.to(memory_format=torch.channels_last), x[0]):
        a, ia = max_pool2d(xx, 3, 1, 1, return_indices=True)
        r, ir = F.max_pool2d(xx, 3, 1, 1, return_indices=True)
        assert torch.equal(a.isnan(), r.isnan()) and torch.equal(a.nan_to_num(), r.nan_to_num())
        assert torch.equal(ia, ir) and a.stride() == r.stride()
    xg = x.clone().requires_grad_()
    max_pool2d(xg, 2).sum().backward()
    xt = x.clone().requires_grad_()
    F.max_pool2d(xt, 2).sum().backward()
    assert torch.equal(xg.grad, xt.grad)


def test_max_pool2d_window_in_padding_refused():
    """Kernel 2, padding 1, dilation 3 on an input 2 high: the first row of windows takes rows
    -1 and 2, both outside. torch returns -inf there with an index past the plane, which its
    backward writes through; forward, backward and fake shape refuse such geometry instead."""
    x = torch.randn(1, 2, 2, 4)
    assert_raises_named(lambda: max_pool2d(x, 2, 1, 1, 3), RuntimeError, ["window", "row 0", "padding"], "max_pool2d")
    assert_raises_named(lambda: max_pool2d(x.transpose(2, 3), 2, 1, 1, 3), RuntimeError, ["column 0"], "max_pool2d")
    g, idx = torch.zeros(1, 2, 1, 3), torch.zeros(1, 2, 1, 3, dtype=torch.long)
    assert_raises_named(lambda: torch.ops.fusedops.max_pool2d_backward(g, x, idx, [2, 2], [1, 1], [1, 1], [3, 3], False),
                        RuntimeError, ["window"], "max_pool2d_backward")
    with pytest.raises(RuntimeError, match="window"):
        max_pool2d(x.to("meta"), 2, 1, 1, 3)
    # one more row: every window holds an input element, and torch agrees
    x3 = torch.randn(1, 2, 3, 4, requires_grad=True)
    a, ia = max_pool2d(x3, 2, 1, 1, 3, return_indices=True)
    r, ir = F.max_pool2d(x3, 2, 1, 1, 3, return_indices=True)
    assert torch.equal(a, r) and torch.equal(ia, ir)
    assert torch.equal(torch.autograd.grad(a.sum(), x3)[0], torch.autograd.grad(r.sum(), x3)[0])


@pytest.mark.parametrize("backend", ["cpu", *BACKENDS])
def test_max_pool2d_backward_checks_indices(backend):
    """An index outside its plane is refused, not dropped (the CUDA kernel used to skip it)."""
    D = "cpu" if backend == "cpu" else dev(backend)
    bwd = torch.ops.fusedops.max_pool2d_backward if backend == "cpu" else op(backend, "max_pool2d_backward")
    x, g = torch.randn(1, 2, 4, 4, device=D), torch.ones(1, 2, 2, 2, device=D)
    conf = ([2, 2], [2, 2], [0, 0], [1, 1], False)
    for bad in (16, -1):
        idx = torch.zeros(1, 2, 2, 2, dtype=torch.long, device=D)
        idx[0, 1, 1, 0] = bad
        assert_raises_named(lambda: bwd(g, x, idx, *conf), RuntimeError, ["indices", "[0, 16)", str(bad)],
                            "max_pool2d_backward")
    if D != "cpu":
        assert_raises_named(lambda: bwd(g, x, idx.cpu(), *conf), RuntimeError, ["indices", "device"],
                            "max_pool2d_backward")
    pos = torch.tensor([0, 3, 12, 15, 5, 6, 9, 10])  # valid: each in its output's window
    gy = torch.arange(1.0, 9.0)
    gx = bwd(gy.view(1, 2, 2, 2).to(D), x, pos.view(1, 2, 2, 2).to(D), *conf).cpu().view(2, 16)
    want = torch.zeros(2, 16)
    want[0, pos[:4]], want[1, pos[4:]] = gy[:4], gy[4:]
    assert torch.equal(gx, want)


def test_max_pool2d_gradcheck():
    x = torch.randn(2, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: max_pool2d(x, 3, 2, 1, 1, True), (x,))
    assert torch.autograd.gradgradcheck(lambda x: max_pool2d(x, 3, 2, 1, 1, True), (x,))


# ---- modules ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1, bias=False),
                                    dict(padding="same", dilation=2, groups=2)], ids=str)
def test_conv2d_module_matches_torch(kwargs):
    torch.manual_seed(3)
    theirs = torch.nn.Conv2d(4, 6, 3, **kwargs)
    torch.manual_seed(3)
    ours = fusedops.nn.Conv2d(4, 6, 3, **kwargs)
    assert isinstance(ours, torch.nn.Conv2d) and repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()):
        assert torch.equal(a, b)
    torch.manual_seed(4)
    other = torch.nn.Conv2d(4, 6, 3, **kwargs)
    ours.load_state_dict(other.state_dict())
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(ours(x), other(x), rtol=1e-4, atol=1e-4)


def test_conv2d_module_padding_mode_and_pool_module():
    with pytest.raises(ValueError, match="padding_mode"):
        fusedops.nn.Conv2d(3, 4, 3, padding_mode="reflect")
    ours, theirs = fusedops.nn.MaxPool2d(3, 2, 1, ceil_mode=True), torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True)
    assert repr(ours) == repr(theirs)
    x = torch.randn(2, 3, 9, 9)
    assert torch.equal(ours(x), theirs(x))
    oi = fusedops.nn.MaxPool2d(2, return_indices=True)(x)
    assert torch.equal(oi[1], torch.nn.MaxPool2d(2, return_indices=True)(x)[1])


# ---- CUDA kernels (simulator, GPU) ------------------------------------------------------------


SIM_CASES = [CASES[0], CASES[1], CASES[2], CASES[5], CASES[10], CASES[11], CASES[12], (2, 3, 5, 4, 70, 3, 3, 1, 1, 1, 1)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("c", SIM_CASES, ids=[str(i) for i in range(len(SIM_CASES))])
def test_cuda_conv2d(backend, dtype, c):
    x, w, b, kw = _case(c, dtype=torch.float64)
    conv, conv_bwd = op(backend, "conv2d"), op(backend, "conv2d_backward")
    pair = lambda v: [v, v] if isinstance(v, int) else list(v)  # noqa: E731
    s, p, d, g = pair(kw["stride"]), pair(kw["padding"]), pair(kw["dilation"]), kw["groups"]
    D = dev(backend)
    xd, wd, bd = (t.to(D, dtype) for t in (x, w, b))
    out = conv(xd, wd, bd, s, p, d, g)
    xl, wl, bl = (t.to(dtype) for t in (x, w, b))
    lowp = lambda f, *a: f(*(t.float() for t in a)).to(dtype) if dtype in (torch.float16, torch.bfloat16) else f(*a)  # noqa: E731
    fconv = lambda x_, w_, b_: F.conv2d(x_, w_, b_, s, p, d, g)  # noqa: E731
    ref64 = fconv(xl.double(), wl.double(), bl.double())
    check_close(out, ref64, lowp(fconv, xl, wl, bl), dtype, "conv2d")
    go = torch.randn_like(ref64)
    gx, gw, gb = conv_bwd(go.to(D, dtype), xd, wd, s, p, d, g, [True, True, True])
    x64, w64, b64 = (t.double().requires_grad_() for t in (xl, wl, bl))
    truth = torch.autograd.grad(fconv(x64, w64, b64), (x64, w64, b64), go.to(dtype).double())
    for name, o, t in zip(("grad_input", "grad_weight", "grad_bias"), (gx, gw, gb), truth):
        # low precision: the budget of a rounding of the inputs and the sum
        check_close(o, t, t.to(dtype), dtype, name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_max_pool2d(backend, dtype):
    D = dev(backend)
    x = torch.randn(2, 3, 9, 10).to(dtype)
    x[0, 0, 2, 2] = float("nan")
    for k, s, pad, d, ceil in POOLS[:5]:
        k2 = [k, k] if isinstance(k, int) else list(k)
        s2 = k2 if s is None else ([s, s] if isinstance(s, int) else list(s))
        p2 = [pad, pad] if isinstance(pad, int) else list(pad)
        d2 = [d, d] if isinstance(d, int) else list(d)
        a, ia = op(backend, "max_pool2d_with_indices")(x.to(D), k2, s2, p2, d2, ceil)
        r, ir = F.max_pool2d(x.double(), k2, s2, p2, d2, ceil, return_indices=True)
        assert torch.equal(a.cpu().double().nan_to_num(), r.nan_to_num()) and torch.equal(ia.cpu(), ir)
        g = torch.randn(r.shape).to(dtype)
        gx = op(backend, "max_pool2d_backward")(g.to(D), x.to(D), ia, k2, s2, p2, d2, ceil)
        xr = x.double().requires_grad_()
        ref = torch.autograd.grad(F.max_pool2d(xr, k2, s2, p2, d2, ceil), xr, g.double())[0]
        check_close(gx, ref, ref.to(dtype), dtype, "max_pool2d_backward")


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_max_pool2d_window_in_padding_refused(backend):
    x = torch.randn(1, 2, 2, 4, device=dev(backend))
    conf = ([2, 2], [1, 1], [1, 1], [3, 3], False)
    assert_raises_named(lambda: op(backend, "max_pool2d_with_indices")(x, *conf), RuntimeError,
                        ["window", "row 0"], "max_pool2d")
    g, idx = torch.zeros(1, 2, 1, 3, device=x.device), torch.zeros(1, 2, 1, 3, dtype=torch.long, device=x.device)
    assert_raises_named(lambda: op(backend, "max_pool2d_backward")(g, x, idx, *conf), RuntimeError,
                        ["window"], "max_pool2d_backward")


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_conv2d_more_groups_than_grid_y(backend):
    """65537 groups (depthwise): the (channel tile, group) pairs past grid.y's 65535 go on along
    grid.z (tests/sim/grid_tests.cu covers every layout, and the backward, with a lower limit)."""
    D, C = dev(backend), 65537
    x, w, b = torch.randn(1, C, 2, 3), torch.randn(C, 1, 2, 1), torch.randn(C)
    out = op(backend, "conv2d")(x.to(D), w.to(D), b.to(D), [1, 1], [1, 0], [1, 1], C)
    torch.testing.assert_close(out.cpu(), F.conv2d(x, w, b, 1, (1, 0), 1, C))
