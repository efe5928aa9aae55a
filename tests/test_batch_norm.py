"""fusedops.ops.batch_norm, its backward operator and fusedops.nn.BatchNorm1d / BatchNorm2d
against torch: training and eval outputs, every gradient, the running statistics (momentum,
momentum=None, num_batches_tracked), affine or not, track_running_stats=False, over edge shapes
(N=1 with spatial > 1, C=1, odd sizes, [N, C] and [N, C, L], non-contiguous, channels-last,
large offsets); state_dict and parameter order; gradcheck, opcheck, torch.compile, meta
tensors, bad input; and the CUDA kernels on the simulator (and a GPU when present) against the
CPU op.
"""
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

import fusedops
from conftest import BACKENDS, assert_raises_named, dev, op
from fusedops import ops as fops

ops = torch.ops.fusedops
SHAPES = [(4, 3), (5, 1), (2, 6, 7), (1, 3, 5), (3, 1, 9, 11), (1, 4, 3, 5), (7, 5, 1, 1), (2, 16, 17, 13),
          (2, 3, 1, 33), (33, 8, 2, 2)]


def _layouts(x):
    yield "contiguous", x
    if x.dim() == 4:
        yield "channels_last", x.contiguous(memory_format=torch.channels_last)
    yield "transposed", x.transpose(0, -1).contiguous().transpose(0, -1)  # non-contiguous


def _run(fn, x, w, b, rm, rv, training, g):
    x = x.detach().clone().requires_grad_()
    ins = [x] + [t.detach().clone().requires_grad_() for t in (w, b) if t is not None]
    wb = ins[1:] + [None] * (2 - len(ins[1:]))
    out = fn(x, rm, rv, wb[0], wb[1], training)
    grads = torch.autograd.grad(out, ins, g)
    return out.detach(), grads


def _tol(dtype):
    return dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("training", (True, False))
@pytest.mark.parametrize("affine", (True, False))
def test_values_and_grads_vs_torch(dtype, shape, training, affine):
    C = shape[1]
    x = torch.randn(shape, dtype=dtype) * 2 + 0.5
    w = torch.rand(C, dtype=dtype) + 0.5 if affine else None
    b = torch.randn(C, dtype=dtype) if affine else None
    g = torch.randn(shape, dtype=dtype)
    for name, xl in _layouts(x):
        rm, rv = torch.randn(C, dtype=dtype), torch.rand(C, dtype=dtype) + 0.5
        rm2, rv2 = rm.clone(), rv.clone()
        out, grads = _run(lambda *a: fops.batch_norm(*a, momentum=0.3), xl, w, b, rm, rv, training, g)
        ref, rgrads = _run(lambda *a: F.batch_norm(*a, momentum=0.3), xl, w, b, rm2, rv2, training, g)
        torch.testing.assert_close(out, ref, **_tol(dtype), msg=f"{name} output")
        for got, want, what in zip(grads, rgrads, ("input", "weight", "bias")):
            torch.testing.assert_close(got, want, **_tol(dtype), msg=f"{name} grad {what}")
        torch.testing.assert_close(rm, rm2, **_tol(dtype), msg=f"{name} running_mean")
        torch.testing.assert_close(rv, rv2, **_tol(dtype), msg=f"{name} running_var")
        if name == "channels_last":
            assert out.is_contiguous(memory_format=torch.channels_last)
            assert grads[0].is_contiguous(memory_format=torch.channels_last)


def test_large_offset_statistics():
    # a common offset of 1e4 over small noise: the shifted two-level sums keep the variance
    x = 1e4 + torch.randn(8, 4, 33, 31)
    out = fops.batch_norm(x, None, None, training=True)
    ref = F.batch_norm(x.double(), None, None, training=True).float()
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
    xl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fops.batch_norm(xl, None, None, training=True), ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("threads", (1, 2))
def test_same_bits_any_thread_count(threads):
    torch.manual_seed(2)
    x = torch.randn(16, 8, 40, 40)
    g = torch.randn_like(x)
    w, b = torch.rand(8), torch.randn(8)

    def run():
        outs = []
        for xl in (x, x.contiguous(memory_format=torch.channels_last), x[:, :, 0, :].permute(0, 2, 1).reshape(-1, 8)):
            y, mean, rstd, var = ops.batch_norm(xl, None, None, w, b, True, 1e-5)
            gl = g if xl.dim() == 4 else g[:, :, 0, :].permute(0, 2, 1).reshape(-1, 8)
            outs += [y, mean, rstd, var, *ops.batch_norm_backward(gl, xl, mean, rstd, w, True, [True, True, True])]
        return outs

    torch.set_num_threads(1)
    ref = run()
    torch.set_num_threads(threads)
    for a, r in zip(run(), ref):
        assert torch.equal(a, r)


@pytest.mark.parametrize("cls", ("BatchNorm1d", "BatchNorm2d"))
@pytest.mark.parametrize("kw", ({}, {"momentum": None}, {"affine": False}, {"track_running_stats": False},
                                {"momentum": 0.5, "eps": 1e-3}), ids=str)
def test_module_drop_in(cls, kw):
    C = 5
    shape = (6, C, 4, 3) if cls == "BatchNorm2d" else (6, C, 7)
    torch.manual_seed(0)
    t = getattr(torch.nn, cls)(C, **kw)
    m = getattr(fusedops.nn, cls)(C, **kw)
    assert isinstance(m, getattr(torch.nn, cls)) and repr(m) == repr(t)
    assert list(m.state_dict()) == list(t.state_dict())
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in t.named_parameters()]
    with torch.no_grad():
        for p in t.parameters():
            p.uniform_(0.5, 1.5)
    m.load_state_dict(t.state_dict())
    for step in range(3):  # training steps: outputs, gradients and running statistics
        x = torch.randn(shape) + step
        xm, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
        ym, yt = m(xm), t(xt)
        torch.testing.assert_close(ym, yt, rtol=2e-4, atol=2e-5)
        ym.square().sum().backward()
        yt.square().sum().backward()
        torch.testing.assert_close(xm.grad, xt.grad, rtol=2e-4, atol=2e-4)
        for pm, pt in zip(m.parameters(), t.parameters()):
            torch.testing.assert_close(pm.grad, pt.grad, rtol=2e-4, atol=2e-4)
    for (k, vm), (_, vt) in zip(m.state_dict().items(), t.state_dict().items()):
        torch.testing.assert_close(vm, vt, rtol=1e-5, atol=1e-6, msg=k)
    m.eval(), t.eval()
    x = torch.randn(shape)
    torch.testing.assert_close(m(x), t(x), rtol=2e-4, atol=2e-5)
    if cls == "BatchNorm1d":
        x2 = torch.randn(9, C)
        torch.testing.assert_close(m(x2), t(x2), rtol=2e-4, atol=2e-5)


def test_one_value_per_channel_refused_in_training():
    m = fusedops.nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        m(torch.randn(1, 3))
    m.eval()
    assert m(torch.randn(1, 3)).shape == (1, 3)
    assert fusedops.nn.BatchNorm2d(3)(torch.randn(1, 3, 2, 1)).shape == (1, 3, 2, 1)  # N=1, spatial > 1


def test_empty_batch_keeps_running_statistics():
    t, m = torch.nn.BatchNorm2d(3), fusedops.nn.BatchNorm2d(3)
    x = torch.randn(0, 3, 4, 4, requires_grad=True)
    ym, yt = m(x), t(x)
    assert ym.shape == yt.shape == (0, 3, 4, 4)
    assert torch.equal(m.running_mean, t.running_mean) and torch.equal(m.running_var, t.running_var)
    ym.sum().backward()
    assert x.grad.shape == x.shape


def test_gradcheck():
    for shape in ((4, 3), (2, 3, 5), (3, 2, 3, 2)):
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        w = torch.rand(shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.randn(shape[1], dtype=torch.float64, requires_grad=True)
        rm, rv = torch.randn(shape[1], dtype=torch.float64), torch.rand(shape[1], dtype=torch.float64) + 0.5
        assert gradcheck(lambda *a: fops.batch_norm(a[0], None, None, a[1], a[2], True), (x, w, b))
        assert gradcheck(lambda *a: fops.batch_norm(a[0], rm, rv, a[1], a[2], False), (x, w, b))
        if len(shape) == 4:
            xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
            assert gradcheck(lambda *a: fops.batch_norm(a[0], None, None, a[1], a[2], True), (xc, w, b))


def test_opcheck():
    x = torch.randn(4, 3, 5, 2, requires_grad=True)
    w, b = torch.rand(3, requires_grad=True), torch.randn(3, requires_grad=True)
    rm, rv = torch.randn(3), torch.rand(3) + 0.5
    torch.library.opcheck(ops.batch_norm.default, (x, None, None, w, b, True, 1e-5))
    torch.library.opcheck(ops.batch_norm.default, (x, rm, rv, w, b, False, 1e-5))
    xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(ops.batch_norm.default, (xc, None, None, None, None, True, 1e-5))
    _, mean, rstd, _ = ops.batch_norm(x.detach(), None, None, w.detach(), b.detach(), True, 1e-5)
    torch.library.opcheck(ops.batch_norm_backward.default,
                          (torch.randn(4, 3, 5, 2), x.detach(), mean, rstd, w.detach(), True, [True, True, False]))


def test_compile_aot_eager():
    torch._dynamo.reset()
    m = fusedops.nn.BatchNorm2d(4)
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    ref = fusedops.nn.BatchNorm2d(4)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    out_c, out_e = compiled(x), ref(x)
    torch.testing.assert_close(out_c, out_e)
    torch.testing.assert_close(m.running_mean, ref.running_mean)
    (gc,) = torch.autograd.grad(out_c.sum() + out_c.pow(2).sum(), x)
    (ge,) = torch.autograd.grad(out_e.sum() + out_e.pow(2).sum(), x)
    torch.testing.assert_close(gc, ge)


def test_meta_matches_real():
    for x in (torch.randn(3, 4, 5, 6), torch.randn(3, 4, 5, 6).contiguous(memory_format=torch.channels_last),
              torch.randn(7, 4)):
        real = ops.batch_norm(x, None, None, None, None, True, 1e-5)
        meta = ops.batch_norm(x.to("meta"), None, None, None, None, True, 1e-5)
        for r, mt in zip(real, meta):
            assert (mt.shape, mt.dtype, mt.stride()) == (r.shape, r.dtype, r.stride())


def test_bad_input():
    x = torch.randn(4, 3, 5)
    assert_raises_named(lambda: ops.batch_norm(x, None, None, torch.ones(4), None, True, 1e-5), RuntimeError,
                        ["weight", "[3]", "[4]"], "batch_norm")
    assert_raises_named(lambda: ops.batch_norm(x, None, None, None, None, False, 1e-5), RuntimeError,
                        ["running_mean", "training=False"], "batch_norm")
    assert_raises_named(lambda: ops.batch_norm(x[0, 0], None, None, None, None, True, 1e-5), RuntimeError,
                        ["input", "2 dimensions"], "batch_norm")
    assert_raises_named(lambda: ops.batch_norm(x.int(), None, None, None, None, True, 1e-5), TypeError,
                        ["input"], "batch_norm")
    assert_raises_named(lambda: ops.batch_norm(x, torch.zeros(2), torch.ones(3), None, None, False, 1e-5),
                        RuntimeError, ["running_mean", "[3]"], "batch_norm")
    assert_raises_named(lambda: ops.batch_norm_backward(x[:2], x, torch.zeros(3), torch.ones(3), None, True,
                                                        [True, False, False]), RuntimeError,
                        ["grad_output", "shape"], "batch_norm_backward")
    with pytest.raises(ValueError, match="expected 4D input"):
        fusedops.nn.BatchNorm2d(3)(x)


def test_autocast_bf16_input():
    x = torch.randn(4, 3, 5, 5).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fops.batch_norm(x, None, None, training=True)
    assert out.dtype == torch.bfloat16
    ref = F.batch_norm(x.float(), None, None, training=True)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


# ---- CUDA kernels: simulator (and GPU) against the CPU op ----------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=str)
@pytest.mark.parametrize("training", (True, False))
def test_cuda_vs_cpu(backend, dtype, training):
    d = dev(backend)
    for shape in ((5, 3), (1, 2, 7, 3), (3, 4, 9, 10), (2, 5, 33)):
        C = shape[1]
        x = torch.randn(shape, dtype=dtype) + 3
        w, b = torch.rand(C, dtype=dtype) + 0.5, torch.randn(C, dtype=dtype)
        rm, rv = torch.randn(C, dtype=dtype), torch.rand(C, dtype=dtype) + 0.5
        g = torch.randn(shape, dtype=dtype)
        for _, xl in _layouts(x):
            args = (None, None) if training else (rm, rv)
            want = ops.batch_norm(xl, *args, w, b, training, 1e-5)
            got = op(backend, "batch_norm")(xl.to(d), *[a if a is None else a.to(d) for a in args], w.to(d), b.to(d),
                                            training, 1e-5)
            for gt, wt in zip(got, want):
                torch.testing.assert_close(gt.cpu(), wt, **_tol(dtype))
            assert got[0].stride() == want[0].stride()
            gw = ops.batch_norm_backward(g, xl, want[1], want[2], w, training, [True, True, True])
            gg = op(backend, "batch_norm_backward")(g.to(d), xl.to(d), want[1].to(d), want[2].to(d), w.to(d),
                                                    training, [True, True, True])
            for gt, wt in zip(gg, gw):
                torch.testing.assert_close(gt.cpu(), wt, **_tol(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_bf16(backend):
    d = dev(backend)
    x = torch.randn(4, 3, 6, 5)
    got = op(backend, "batch_norm")(x.to(d, torch.bfloat16), None, None, None, None, True, 1e-5)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.float32
    ref = F.batch_norm(x.bfloat16().float(), None, None, training=True)
    torch.testing.assert_close(got[0].cpu().float(), ref, rtol=2e-2, atol=2e-2)
