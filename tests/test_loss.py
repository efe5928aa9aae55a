"""Losses: cross_entropy, linear_cross_entropy, mse_loss, binary_cross_entropy_with_logits and
their modules, against torch.

Values and gradients follow the error-budget rule (ours may be off the float64 truth by at most
twice torch's own float32 error plus a few eps); every instruction set via `isa`; row lengths
1, 3, 97, 767 and 50257 (the last on few rows); ignore_index, all rows ignored, label
smoothing, class weights, probability targets, extreme logits, [N, C, d...] inputs; gradcheck
in float64, opcheck, torch.compile(fullgraph=True); bad input.
"""
import math
import os

import pytest
import torch
import torch.nn.functional as F

import fusedops
from fusedops import ops as fops

from conftest import assert_raises_named, assert_within_budget

ops = torch.ops.fusedops
REDUCTIONS = ("mean", "sum", "none")


def _ce_both(x, t, dtype, **kw):
    """(ours, torch in dtype, float64 truth) for loss and grad of sum(loss * r)."""
    out = []
    for impl, dt in ((fops.cross_entropy, dtype), (F.cross_entropy, dtype),
                     (F.cross_entropy, torch.float64)):
        xx = x.detach().to(dt).requires_grad_()
        tt = t.to(dt) if t.is_floating_point() else t
        kw2 = dict(kw)
        if kw2.get("weight") is not None:
            kw2["weight"] = kw2["weight"].to(dt)
        loss = impl(xx, tt, **kw2)
        r = torch.linspace(0.5, 1.5, max(loss.numel(), 1), dtype=dt)[: loss.numel()].reshape(loss.shape)
        (loss * r).sum().backward()
        out.append((loss.detach(), xx.grad))
    return out


def _check_ce(x, t, dtype=torch.float32, what="ce", **kw):
    (lo, go), (lt, gt), (l64, g64) = _ce_both(x, t, dtype, **kw)
    assert_within_budget(lo, lt, l64, f"{what} loss")
    assert_within_budget(go, gt, g64, f"{what} grad")


# ---- cross_entropy: values and gradients ------------------------------------------------------


@pytest.mark.parametrize("C", [1, 3, 97, 767])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ce_class_targets(isa, C, reduction):
    N = 13
    x = torch.randn(N, C) * 3
    t = torch.randint(0, C, (N,))
    t[[2, 7]] = -100
    _check_ce(x, t, reduction=reduction)
    _check_ce(x, t, torch.float64, reduction=reduction)


@pytest.mark.parametrize("C", [3, 97, 767])
@pytest.mark.parametrize("ls", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ce_weights_smoothing_ignore(isa, C, ls, weighted, reduction):
    N = 11
    x = torch.randn(N, C) * 2
    t = torch.randint(0, C, (N,))
    t[[0, 5]] = 1  # ignore_index 1 is a real class index: those rows are ignored
    w = torch.rand(C) + 0.1 if weighted else None
    _check_ce(x, t, weight=w, ignore_index=1, label_smoothing=ls, reduction=reduction)


@pytest.mark.parametrize("C", [1, 3, 97, 767])
@pytest.mark.parametrize("ls", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_ce_probability_targets(isa, C, ls, weighted):
    N = 9
    x = torch.randn(N, C) * 2
    q = torch.softmax(torch.randn(N, C) * 2, 1)
    w = torch.rand(C) + 0.1 if weighted else None
    for reduction in REDUCTIONS:
        _check_ce(x, q, weight=w, label_smoothing=ls, reduction=reduction)


def test_ce_big_rows(isa):
    x = torch.randn(3, 50257) * 4
    t = torch.tensor([0, 50256, 31337])
    _check_ce(x, t)
    _check_ce(x, t, label_smoothing=0.1, reduction="none")


def test_ce_threads_agree():
    x, t = torch.randn(64, 1000), torch.randint(0, 1000, (64,))
    torch.set_num_threads(1)
    l1, g1 = ops.cross_entropy(x, t, None, -100, "none", 0.0, True)
    torch.set_num_threads(2)
    l2, g2 = ops.cross_entropy(x, t, None, -100, "none", 0.0, True)
    assert torch.equal(l1, l2) and torch.equal(g1, g2)


@pytest.mark.parametrize("shape", [(4, 5, 3), (2, 7, 3, 4), (3, 6, 1)])
def test_ce_spatial_and_unbatched(shape):
    x = torch.randn(*shape)
    t = torch.randint(0, shape[1], (shape[0], *shape[2:]))
    t.view(-1)[0] = -100
    for reduction in REDUCTIONS:
        _check_ce(x, t, reduction=reduction, label_smoothing=0.1)
        q = torch.softmax(torch.randn(*shape), 1)
        _check_ce(x, q, reduction=reduction)
    xu = torch.randn(7)
    for reduction in REDUCTIONS:
        _check_ce(xu, torch.tensor(3), reduction=reduction)
        _check_ce(xu, torch.softmax(torch.randn(7), 0), reduction=reduction)
        out = fops.cross_entropy(xu, torch.tensor(3), reduction=reduction)
        assert out.shape == F.cross_entropy(xu, torch.tensor(3), reduction=reduction).shape


def test_ce_noncontiguous():
    base = torch.randn(10, 40)
    x = base[:, ::2]  # column stride 2
    t = torch.randint(0, 20, (10,))
    _check_ce(x, t)
    xt = torch.randn(30, 10).t()  # transposed
    _check_ce(xt, torch.randint(0, 30, (10,)))
    xr = torch.randn(10, 64)[:, :33]  # row stride 64, unit column stride
    _check_ce(xr, torch.randint(0, 33, (10,)), reduction="none")


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_ce_all_rows_ignored(weighted, ls):
    x = torch.randn(5, 7, requires_grad=True)
    t = torch.full((5,), -100)
    w = torch.rand(7) if weighted else None
    kw = dict(weight=w, label_smoothing=ls)
    ours = fops.cross_entropy(x, t, **kw)
    theirs = F.cross_entropy(x, t, **kw)
    assert math.isnan(ours.item()) and math.isnan(theirs.item())
    (g,) = torch.autograd.grad(ours, x)
    (gt,) = torch.autograd.grad(theirs, x)
    torch.testing.assert_close(g, gt, equal_nan=True)
    assert fops.cross_entropy(x, t, reduction="sum", **kw).item() == 0.0
    assert torch.equal(fops.cross_entropy(x, t, reduction="none", **kw), torch.zeros(5))


def test_ce_empty():
    x = torch.randn(0, 5, requires_grad=True)
    t = torch.zeros(0, dtype=torch.long)
    for reduction in REDUCTIONS:
        ours = fops.cross_entropy(x, t, reduction=reduction)
        theirs = F.cross_entropy(x, t, reduction=reduction)
        torch.testing.assert_close(ours, theirs, equal_nan=True)
    out = fops.cross_entropy(x, t, reduction="sum")
    out.backward()
    assert x.grad.shape == (0, 5)


@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_ce_extreme_logits(isa, ls):
    x = torch.randn(6, 40)
    x[0, 3] = 1e4
    x[1] = -1e4
    x[1, 5] = 1e4
    x[2, ::3] = -float("inf")
    x[3, :20] = 1e4
    x[4, 7] = -float("inf")  # the target of row 4
    x[5, :] = x[5, :] * 1e3
    t = torch.tensor([3, 5, 1, 2, 7, 0])
    for reduction in ("none", "sum"):
        xo = x.clone().requires_grad_()
        xt = x.clone().requires_grad_()
        lo = fops.cross_entropy(xo, t, label_smoothing=ls, reduction=reduction)
        lt = F.cross_entropy(xt, t, label_smoothing=ls, reduction=reduction)
        torch.testing.assert_close(lo, lt, equal_nan=True, rtol=1e-5, atol=1e-3)
        if reduction == "none":
            assert not torch.isnan(lo).any(), lo  # torch's are finite or +inf here too
        lo.sum().backward()
        lt.sum().backward()
        assert not torch.isnan(xo.grad).any()
        torch.testing.assert_close(xo.grad, xt.grad, rtol=1e-5, atol=1e-6)


def test_ce_nan_propagates(isa):
    x = torch.randn(3, 50)
    x[1, 17] = float("nan")
    l = fops.cross_entropy(x, torch.tensor([0, 1, 2]), reduction="none")
    assert not torch.isnan(l[0]) and torch.isnan(l[1]) and not torch.isnan(l[2])


def test_ce_retain_graph_second_backward():
    x = torch.randn(6, 9, requires_grad=True)
    t = torch.randint(0, 9, (6,))
    loss = fops.cross_entropy(x, t)
    (g1,) = torch.autograd.grad(loss * 3, x, retain_graph=True)
    g1 = g1.clone()
    (g2,) = torch.autograd.grad(loss * 3, x)
    (gt,) = torch.autograd.grad(F.cross_entropy(x, t) * 3, x)
    torch.testing.assert_close(g1, gt)
    torch.testing.assert_close(g2, gt)


_CE_CACHE = r"""
import torch, fusedops
from fusedops import ops as fops
x = torch.randn(4, 4_200_000, requires_grad=True)
t = torch.tensor([0, 5, 7, 9])
(g1,) = torch.autograd.grad(fops.cross_entropy(x, t), x)
keep = g1.clone()
(g2,) = torch.autograd.grad(fops.cross_entropy(x, t + 1), x)
assert g1.data_ptr() != g2.data_ptr() and torch.equal(g1, keep)
ptr = g2.data_ptr()
del g1, g2
print(fusedops._C._cache_bytes()["loss"])
(g3,) = torch.autograd.grad(fops.cross_entropy(x, t), x)
assert torch.equal(g3, keep)
print(int(g3.data_ptr() == ptr))  # the cached (second) buffer, free again, reused?
"""


@pytest.mark.parametrize("cache", ["1", "0"])
def test_ce_gradient_buffer_reuse_never_clobbers_a_live_gradient(cache):
    # With FUSEDOPS_CE_GRAD_CACHE=1, buffers of 64 MB and more are reused once nothing refers to
    # them; by default none is kept after its tensor dies.
    import subprocess
    import sys

    env = {**os.environ, "FUSEDOPS_CE_GRAD_CACHE": cache}
    proc = subprocess.run([sys.executable, "-c", _CE_CACHE], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    held, reused = map(int, proc.stdout.split())
    if cache == "1":
        assert held >= 4 * 4_200_000 * 4 and reused == 1
    else:
        assert held == 0


def test_ce_no_grad_needed_returns_no_buffer():
    x, t = torch.randn(4, 5), torch.randint(0, 5, (4,))
    loss, buf = ops.cross_entropy(x, t, None, -100, "mean", 0.0, False)
    assert buf.numel() == 0
    loss2, buf2 = ops.cross_entropy(x, t, None, -100, "mean", 0.0, True)
    assert torch.equal(loss, loss2) and buf2.shape == (4, 5)


def test_ce_backward_ops():
    x, t = torch.randn(4, 5), torch.randint(0, 5, (4,))
    _, buf = ops.cross_entropy(x, t, None, -100, "none", 0.0, True)
    g = torch.randn(4)
    out = ops.cross_entropy_backward(g, buf)
    torch.testing.assert_close(out, buf * g[:, None])
    b2 = buf.clone()
    ops.loss_grad_scale(b2, torch.tensor(2.5))
    torch.testing.assert_close(b2, buf * 2.5)
    b3 = buf.clone()
    ops.loss_grad_scale(b3, g)
    torch.testing.assert_close(b3, out)


@pytest.mark.parametrize("kind", ["class", "class_ls_w", "probs", "probs_ls_w", "spatial"])
@pytest.mark.parametrize("reduction", ["mean", pytest.param("sum", marks=pytest.mark.slow), "none"])
def test_ce_gradcheck(kind, reduction):
    C = 6
    x = torch.randn(5, C, dtype=torch.float64, requires_grad=True)
    w = torch.rand(C, dtype=torch.float64) + 0.2
    if kind.startswith("probs"):
        t = torch.softmax(torch.randn(5, C, dtype=torch.float64), 1).requires_grad_()
        kw = dict(weight=w, label_smoothing=0.2) if kind == "probs_ls_w" else {}
        fn = lambda x, t: fops.cross_entropy(x, t, reduction=reduction, **kw)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, t))
        if reduction == "mean":  # double backward: torch's composite formula
            assert torch.autograd.gradgradcheck(fn, (x, t))
        return
    if kind == "spatial":
        x = torch.randn(3, C, 4, dtype=torch.float64, requires_grad=True)
        t = torch.randint(0, C, (3, 4))
        kw = {}
    else:
        t = torch.tensor([0, 5, -100, 2, 3])
        kw = dict(weight=w, label_smoothing=0.3) if kind == "class_ls_w" else {}
    fn = lambda x: fops.cross_entropy(x, t, reduction=reduction, **kw)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    if reduction == "mean":
        assert torch.autograd.gradgradcheck(fn, (x,))


# ---- opcheck and torch.compile --------------------------------------------------------------


@pytest.mark.parametrize("compute_grad", [False, True])
@pytest.mark.parametrize("probs", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_opcheck_cross_entropy(compute_grad, probs, reduction):
    x = torch.randn(5, 7, requires_grad=True)
    t = torch.softmax(torch.randn(5, 7), 1) if probs else torch.tensor([0, 6, -100, 2, 2])
    w = torch.rand(7)
    torch.library.opcheck(ops.cross_entropy.default,
                          (x, t, w, -100, reduction, 0.1, compute_grad))


def test_opcheck_backward_ops():
    buf = torch.randn(5, 7)
    torch.library.opcheck(ops.cross_entropy_backward.default, (torch.tensor(2.0), buf))
    torch.library.opcheck(ops.cross_entropy_backward.default, (torch.randn(5), buf))
    torch.library.opcheck(ops.loss_grad_scale.default, (buf.clone(), torch.tensor(0.5)))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_opcheck_linear_cross_entropy(reduction):
    x = torch.randn(2, 3, 8, requires_grad=True)
    w = torch.randn(11, 8, requires_grad=True)
    b = torch.randn(11, requires_grad=True)
    t = torch.randint(0, 11, (2, 3))
    mask = [False] * 3 if reduction == "none" else [True, True, True]
    torch.library.opcheck(ops.linear_cross_entropy.default, (x, w, t, b, -100, reduction, 0.1, mask))
    g = torch.randn(2, 3) if reduction == "none" else torch.tensor(1.5)
    torch.library.opcheck(ops.linear_cross_entropy_backward.default,
                          (g, x.detach(), w.detach(), t, b.detach(), -100, reduction, 0.1,
                           [True, True, True]))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_opcheck_mse_bce(reduction):
    x = torch.randn(4, 5, requires_grad=True)
    y = torch.rand(4, 5, requires_grad=True)
    torch.library.opcheck(ops.mse_loss.default, (x, y, reduction))
    torch.library.opcheck(ops.binary_cross_entropy_with_logits.default,
                          (x, y, torch.rand(4, 1), torch.rand(5) + 0.5, reduction))
    g = torch.randn(4, 5) if reduction == "none" else torch.tensor(0.7)
    torch.library.opcheck(ops.mse_loss_backward.default, (g, x.detach(), y.detach(), reduction))
    torch.library.opcheck(ops.binary_cross_entropy_with_logits_backward.default,
                          (g, x.detach(), y.detach(), None, torch.rand(5) + 0.5, reduction,
                           [True, True]))


def test_compile_fullgraph_losses():
    torch._dynamo.reset()

    def f(x, t, q, w, h, y):
        a = fops.cross_entropy(x, t, label_smoothing=0.1)
        b = fops.cross_entropy(x, q, reduction="sum")
        c = fops.linear_cross_entropy(h, w, t)
        d = fops.mse_loss(x, q) + fops.binary_cross_entropy_with_logits(x, y)
        return a + b + c + d

    def ref(x, t, q, w, h, y):
        return (F.cross_entropy(x, t, label_smoothing=0.1) + F.cross_entropy(x, q, reduction="sum")
                + F.cross_entropy(F.linear(h, w), t) + F.mse_loss(x, q)
                + F.binary_cross_entropy_with_logits(x, y))

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    args = [torch.randn(6, 9, requires_grad=True), torch.randint(0, 9, (6,)),
            torch.softmax(torch.randn(6, 9), 1), torch.randn(9, 5, requires_grad=True),
            torch.randn(6, 5, requires_grad=True), torch.rand(6, 9)]
    diff = [args[0], args[3], args[4]]
    out = compiled(*args)
    grads = torch.autograd.grad(out * 2, diff)
    out_r = ref(*args)
    grads_r = torch.autograd.grad(out_r * 2, diff)
    torch.testing.assert_close(out, out_r)
    for g, gr in zip(grads, grads_r):
        torch.testing.assert_close(g, gr)


# ---- linear_cross_entropy -------------------------------------------------------------------


def _lce_check(x, w, t, b, dtype, **kw):
    res = []
    for impl, dt in (("ours", dtype), ("torch", dtype), ("torch", torch.float64)):
        xx = x.detach().to(dt).requires_grad_()
        ww = w.detach().to(dt).requires_grad_()
        bb = None if b is None else b.detach().to(dt).requires_grad_()
        if impl == "ours":
            loss = fops.linear_cross_entropy(xx, ww, t, bb, **kw)
        else:
            loss = F.cross_entropy(F.linear(xx, ww, bb).flatten(0, -2), t.flatten(), **kw)
            if kw.get("reduction") == "none":
                loss = loss.reshape(t.shape)
        r = torch.linspace(0.5, 1.5, max(loss.numel(), 1), dtype=dt)[: loss.numel()].reshape(loss.shape)
        grads = torch.autograd.grad((loss * r).sum(), [v for v in (xx, ww, bb) if v is not None])
        res.append((loss.detach(), *grads))
    for name, o, th, tr in zip(("loss", "grad_input", "grad_weight", "grad_bias"), *res):
        assert_within_budget(o, th, tr, f"linear_cross_entropy {name}")


@pytest.mark.parametrize("chunk", ["1", "7", "0"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_lce_values_and_grads(isa, chunk, reduction, lce_chunk_rows):
    lce_chunk_rows(chunk)  # 0: the default (one chunk here)
    x, w, b = torch.randn(2, 13, 24), torch.randn(97, 24) / 5, torch.randn(97)
    t = torch.randint(0, 97, (2, 13))
    t[0, 3] = -100
    _lce_check(x, w, t, b, torch.float32, reduction=reduction)
    _lce_check(x, w, t, None, torch.float32, reduction=reduction, label_smoothing=0.1)
    t5 = torch.where(t == -100, 5, t)
    _lce_check(x, w, t5, b, torch.float64, reduction=reduction, ignore_index=5)


def test_lce_grad_subsets_and_noncontiguous():
    x = torch.randn(24, 10)[::2]  # row stride 20
    w = torch.randn(10, 33).t()   # transposed weight
    t = torch.randint(0, 33, (12,))
    for need in [(True, False), (False, True)]:
        xx = x.clone().requires_grad_(need[0])
        ww = w.clone().requires_grad_(need[1])
        loss = fops.linear_cross_entropy(x if not need[0] else xx, ww if need[1] else w, t)
        ref = F.cross_entropy(F.linear(xx, ww), t)
        torch.testing.assert_close(loss, ref)
        wrt = [v for v, n in zip((xx, ww), need) if n]
        for a, b in zip(torch.autograd.grad(loss, wrt), torch.autograd.grad(ref, wrt)):
            torch.testing.assert_close(a, b)


def test_lce_all_ignored_and_empty():
    x, w = torch.randn(4, 6, requires_grad=True), torch.randn(9, 6, requires_grad=True)
    t = torch.full((4,), -100)
    assert math.isnan(fops.linear_cross_entropy(x, w, t).item())
    x0 = torch.randn(0, 6, requires_grad=True)
    t0 = torch.zeros(0, dtype=torch.long)
    loss = fops.linear_cross_entropy(x0, w, t0, reduction="sum")
    loss.backward()
    assert loss.item() == 0 and torch.equal(w.grad, torch.zeros(9, 6))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_lce_gradcheck(reduction):
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 7, -100, 3, 3, 1, 6])
    fn = lambda x, w, b: fops.linear_cross_entropy(x, w, t, b, reduction=reduction,  # noqa: E731
                                                   label_smoothing=0.1)
    assert torch.autograd.gradcheck(fn, (x, w, b))
    if reduction == "mean":
        assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_lce_retain_graph():
    x, w = torch.randn(5, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    t = torch.randint(0, 6, (5,))
    loss = fops.linear_cross_entropy(x, w, t)
    g1 = [g.clone() for g in torch.autograd.grad(loss * 2, (x, w), retain_graph=True)]
    g2 = torch.autograd.grad(loss * 2, (x, w))
    gr = torch.autograd.grad(F.cross_entropy(F.linear(x, w), t) * 2, (x, w))
    for a, b, c in zip(g1, g2, gr):
        torch.testing.assert_close(a, c)
        torch.testing.assert_close(b, c)


# ---- mse_loss, binary_cross_entropy_with_logits ---------------------------------------------


@pytest.mark.parametrize("shape,tshape", [((4, 7), (4, 7)), ((3, 1, 5), (3, 4, 5)), ((0, 3), (0, 3)),
                                          ((97,), (97,))])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse(isa, shape, tshape, reduction):
    x, y = torch.randn(*shape), torch.randn(*tshape)
    res = []
    for impl, dt in ((fops.mse_loss, torch.float32), (F.mse_loss, torch.float32),
                     (F.mse_loss, torch.float64)):
        xx = x.to(dt).requires_grad_()
        yy = y.to(dt).requires_grad_()
        with pytest.warns(UserWarning) if shape != tshape else _nullctx():
            loss = impl(xx, yy, reduction=reduction)
        if loss.numel() and not torch.isnan(loss).any():
            gx, gy = torch.autograd.grad(loss.sum(), (xx, yy))
        else:
            gx, gy = torch.zeros_like(xx), torch.zeros_like(yy)
        res.append((loss.detach(), gx, gy))
    if reduction == "mean" and x.numel() == 0:
        assert math.isnan(res[0][0].item())
        return
    for name, o, th, tr in zip(("loss", "grad_input", "grad_target"), *res):
        assert_within_budget(o, th, tr, f"mse {name}")


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize("weighted", [None, "full", "row"])
@pytest.mark.parametrize("pos", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits(isa, weighted, pos, reduction):
    x = torch.randn(6, 5) * 4
    x[0, 0], x[1, 1] = 80.0, -80.0
    y = torch.rand(6, 5)
    w = {None: None, "full": torch.rand(6, 5), "row": torch.rand(6, 1)}[weighted]
    pw = torch.rand(5) * 2 if pos else None
    res = []
    for impl, dt in ((fops.binary_cross_entropy_with_logits, torch.float32),
                     (F.binary_cross_entropy_with_logits, torch.float32),
                     (F.binary_cross_entropy_with_logits, torch.float64)):
        xx, yy = x.to(dt).requires_grad_(), y.to(dt).requires_grad_()
        ww = None if w is None else w.to(dt)
        pp = None if pw is None else pw.to(dt)
        loss = impl(xx, yy, ww, reduction=reduction, pos_weight=pp)
        gx, gy = torch.autograd.grad(loss.sum(), (xx, yy))
        res.append((loss.detach(), gx, gy))
    for name, o, th, tr in zip(("loss", "grad_input", "grad_target"), *res):
        assert_within_budget(o, th, tr, f"bce {name}")


def test_mse_bce_gradcheck():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    w, pw = torch.rand(3, 1, dtype=torch.float64), torch.rand(4, dtype=torch.float64) + 0.5
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(lambda a, b: fops.mse_loss(a, b, reduction), (x, y))
        fn = lambda a, b: fops.binary_cross_entropy_with_logits(  # noqa: E731
            a, b, w, reduction=reduction, pos_weight=pw)
        assert torch.autograd.gradcheck(fn, (x, y))
    assert torch.autograd.gradgradcheck(fn, (x, y))


# ---- modules --------------------------------------------------------------------------------


def test_modules_match_torch():
    w = torch.rand(7)
    ours = fusedops.nn.CrossEntropyLoss(weight=w, ignore_index=2, label_smoothing=0.1)
    theirs = torch.nn.CrossEntropyLoss(weight=torch.ones(7), ignore_index=2, label_smoothing=0.1)
    theirs.load_state_dict(ours.state_dict())
    assert isinstance(ours, torch.nn.CrossEntropyLoss)
    assert list(ours.state_dict()) == ["weight"] and repr(ours) == repr(theirs)
    x, t = torch.randn(8, 7), torch.randint(0, 7, (8,))
    torch.testing.assert_close(ours(x, t), theirs(x, t))
    assert list(fusedops.nn.CrossEntropyLoss().state_dict()) == []

    pw = torch.rand(7) + 0.5
    b_ours = fusedops.nn.BCEWithLogitsLoss(weight=w, pos_weight=pw, reduction="sum")
    b_theirs = torch.nn.BCEWithLogitsLoss(weight=torch.ones(7), pos_weight=torch.ones(7), reduction="sum")
    b_theirs.load_state_dict(b_ours.state_dict())
    y = torch.rand(8, 7)
    torch.testing.assert_close(b_ours(x, y), b_theirs(x, y))
    m_ours, m_theirs = fusedops.nn.MSELoss(reduction="none"), torch.nn.MSELoss(reduction="none")
    torch.testing.assert_close(m_ours(x, y), m_theirs(x, y))


def test_modules_deprecated_arguments():
    with pytest.warns(UserWarning):
        m = fusedops.nn.CrossEntropyLoss(size_average=False)
    assert m.reduction == "sum"
    with pytest.warns(UserWarning):
        assert fusedops.nn.MSELoss(reduce=False).reduction == "none"
    with pytest.warns(UserWarning):
        assert fusedops.nn.BCEWithLogitsLoss(size_average=True, reduce=True).reduction == "mean"


# ---- bad input ------------------------------------------------------------------------------


def _f(*s):
    return torch.randn(*s)


BAD_CE = {
    "target_too_big": ((_f(3, 5), torch.tensor([0, 5, 1])), IndexError, ["target", "5", "[0, 5)"]),
    "target_negative": ((_f(3, 5), torch.tensor([0, -3, 1])), IndexError, ["target", "-3"]),
    "target_huge": ((_f(3, 5), torch.tensor([0, 2**40, 1])), IndexError, ["target"]),
    "target_int32": ((_f(3, 5), torch.tensor([0, 1, 1], dtype=torch.int32)), TypeError, ["int64"]),
    "target_shape": ((_f(3, 5), torch.tensor([0, 1])), RuntimeError, ["target", "[3]"]),
    "probs_shape": ((_f(3, 5), _f(3, 4)), RuntimeError, ["target", "[3, 5]"]),
    "probs_dtype": ((_f(3, 5), _f(3, 5).double()), TypeError, ["target"]),
    "input_int": ((torch.ones(3, 5, dtype=torch.long), torch.tensor([0, 1, 1])), TypeError, ["input"]),
    "input_0d": ((torch.tensor(1.0), torch.tensor(0)), RuntimeError, ["input"]),
}


@pytest.mark.parametrize("case", list(BAD_CE))
def test_bad_input_cross_entropy(case):
    args, exc, words = BAD_CE[case]
    assert_raises_named(lambda: fops.cross_entropy(*args), exc, words, "cross_entropy")


def test_bad_arguments_cross_entropy():
    x, t = _f(3, 5), torch.tensor([0, 1, 2])
    assert_raises_named(lambda: fops.cross_entropy(x, t, reduction="avg"), ValueError,
                        ["reduction", "'avg'"], "cross_entropy")
    assert_raises_named(lambda: fops.cross_entropy(x, t, weight=_f(4)), RuntimeError,
                        ["weight", "[5]"], "cross_entropy")
    assert_raises_named(lambda: fops.cross_entropy(x, t, weight=_f(5).double()), TypeError,
                        ["weight"], "cross_entropy")
    assert_raises_named(lambda: fops.cross_entropy(x, t, label_smoothing=1.5), RuntimeError,
                        ["label_smoothing"], "cross_entropy")
    assert_raises_named(lambda: fops.cross_entropy(x, torch.softmax(x, 1), ignore_index=1),
                        RuntimeError, ["ignore_index"], "cross_entropy")
    assert_raises_named(lambda: ops.cross_entropy(x, t, None, -100, "max", 0.0, False),
                        RuntimeError, ["reduction", "max"], "cross_entropy")


def test_bad_input_linear_cross_entropy():
    x, w = _f(4, 6), _f(9, 6)
    name = "linear_cross_entropy"
    assert_raises_named(lambda: fops.linear_cross_entropy(x, w, torch.tensor([0, 9, 1, 1])),
                        IndexError, ["target", "9"], name)
    assert_raises_named(lambda: fops.linear_cross_entropy(x, _f(9, 5), torch.tensor([0, 1, 1, 1])),
                        RuntimeError, ["in_features"], name)
    assert_raises_named(lambda: fops.linear_cross_entropy(x, w, torch.tensor([0, 1, 1])),
                        RuntimeError, ["target", "[4]"], name)
    assert_raises_named(lambda: fops.linear_cross_entropy(x, w, torch.tensor([0, 1, 1, 1]), _f(8)),
                        RuntimeError, ["bias"], name)


def test_bad_input_mse_bce():
    assert_raises_named(lambda: ops.mse_loss(_f(3, 4), _f(3, 5), "mean"), RuntimeError,
                        ["target", "[3, 4]"], "mse_loss")
    assert_raises_named(lambda: fops.binary_cross_entropy_with_logits(_f(3, 4), _f(3, 5)),
                        ValueError, ["target size"], "binary_cross_entropy_with_logits")
    assert_raises_named(lambda: fops.binary_cross_entropy_with_logits(_f(3, 4), _f(3, 4), _f(5)),
                        RuntimeError, ["weight", "broadcast"], "binary_cross_entropy_with_logits")
    assert_raises_named(lambda: fops.mse_loss(_f(3, 4), _f(3, 4), reduction="x"), ValueError,
                        ["reduction"], "mse_loss")


def test_bad_input_never_crashes_process(python_subprocess):
    res = python_subprocess(
        """
        import torch, fusedops
        ops = torch.ops.fusedops
        f = torch.randn
        calls = [
            lambda: ops.cross_entropy(f(3, 5), torch.tensor([0, 1 << 60, 1]), None, -100, "mean", 0.0, True),
            lambda: ops.cross_entropy(f(3, 5), torch.tensor([0, -(1 << 60), 1]), None, -100, "none", 0.0, True),
            lambda: ops.cross_entropy(f(3, 5), torch.tensor([0, 1, 7]), f(5), -100, "sum", 0.1, False),
            lambda: ops.linear_cross_entropy(f(3, 5), f(4, 5), torch.tensor([0, 1, 4]), None, -100, "mean", 0.0, [True] * 3),
            lambda: ops.linear_cross_entropy_backward(torch.tensor(1.0), f(3, 5), f(4, 5), torch.tensor([0, 1, 99]), None, -100, "mean", 0.0, [True] * 3),
            lambda: ops.loss_grad_scale(f(3, 5), f(4)),
        ]
        for c in calls:
            try:
                c()
            except (RuntimeError, TypeError, ValueError, IndexError) as e:
                assert "fusedops." in str(e), e
            else:
                raise AssertionError("accepted bad input")
        print("ok")
        """
    )
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


# ---- CUDA kernels: simulator (and GPU) against the CPU ops ----------------------------------

from conftest import BACKENDS, DTYPES, check_close, dev, op  # noqa: E402


def _lowp(dtype, fn, *tensors):
    """The low-precision budget: the CPU op on inputs rounded to dtype, in float32, its result
    rounded to dtype."""
    if dtype not in (torch.float16, torch.bfloat16):
        return None
    args = [t.to(dtype).float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t
            for t in tensors]
    out = fn(*args)
    return tuple(o if o is None else o.to(dtype) for o in out) if isinstance(out, tuple) else out.to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [1, 3, 37, 64, 300])
@pytest.mark.parametrize("kind", ["plain", "weights_ls", "probs"])
def test_cuda_cross_entropy(backend, dtype, C, kind):
    torch.manual_seed(C)
    N = 6
    x = torch.randn(N, C) * 3
    w = torch.rand(C) + 0.2 if kind != "plain" else None
    ls = 0.2 if kind != "plain" else 0.0
    if kind == "probs":
        t, ii = torch.softmax(torch.randn(N, C), 1), -100
    else:
        t, ii = torch.randint(0, C, (N,)), -100
        t[2] = -100
    d = dev(backend)
    for red in REDUCTIONS:
        def cpu(x_, t_, w_):
            return ops.cross_entropy(x_, t_, w_, ii, red, ls, True)
        ref = cpu(x.double(), t.double() if kind == "probs" else t, None if w is None else w.double())
        lowp = _lowp(dtype, cpu, x, t, w) or (None, None)
        tt = t.to(d, dtype) if kind == "probs" else t.to(d)
        ours = op(backend, "cross_entropy")(x.to(d, dtype), tt, None if w is None else w.to(d, dtype),
                                            ii, red, ls, True)
        assert ours[0].dtype == dtype and ours[1].shape == (N, C)
        check_close(ours[0], ref[0], lowp[0], dtype, f"cross_entropy loss {red}")
        check_close(ours[1], ref[1], lowp[1], dtype, f"cross_entropy grad {red}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_cross_entropy_edges(backend):
    d = dev(backend)
    f = op(backend, "cross_entropy")
    x = torch.randn(4, 40)
    x[0, 3], x[1], x[2, ::3] = 1e4, -1e4, -float("inf")
    t = torch.tensor([3, 5, 1, -100])
    for ls in (0.0, 0.1):
        ours = f(x.to(d), t.to(d), None, -100, "none", ls, True)
        ref = ops.cross_entropy(x, t, None, -100, "none", ls, True)
        torch.testing.assert_close(ours[0].cpu(), ref[0], rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(ours[1].cpu(), ref[1], rtol=1e-5, atol=1e-6)
    allign = f(x.to(d), torch.full((4,), -100, device=d), None, -100, "mean", 0.0, True)
    assert math.isnan(allign[0].item()) and not allign[1].abs().sum().item()
    with pytest.raises(IndexError, match="fusedops.cross_entropy"):
        f(x.to(d), torch.tensor([0, 40, 1, 1], device=d), None, -100, "mean", 0.0, False)
    buf = torch.randn(4, 40)
    g = torch.randn(4)
    torch.testing.assert_close(op(backend, "cross_entropy_backward")(g.to(d), buf.to(d)).cpu(),
                               buf * g[:, None])
    b2 = buf.to(d).clone()
    op(backend, "loss_grad_scale")(b2, torch.tensor(3.0, device=d))
    torch.testing.assert_close(b2.cpu(), buf * 3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cuda_linear_cross_entropy(backend, dtype, reduction, lce_chunk_rows):
    lce_chunk_rows(7)  # three chunks, the last partial
    torch.manual_seed(3)
    N, K, V = 17, 24, 45
    x, w, b = torch.randn(N, K), torch.randn(V, K) / 5, torch.randn(V)
    t = torch.randint(0, V, (N,))
    t[4] = -100
    mask = [True, True, True]
    d = dev(backend)
    fwd_mask = [False] * 3 if reduction == "none" else mask

    def cpu(x_, w_, b_):
        return ops.linear_cross_entropy(x_, w_, t, b_, -100, reduction, 0.1, fwd_mask)
    ref = cpu(x.double(), w.double(), b.double())
    lowp = _lowp(dtype, cpu, x, w, b) or (None,) * 4
    ours = op(backend, "linear_cross_entropy")(x.to(d, dtype), w.to(d, dtype), t.to(d), b.to(d, dtype),
                                               -100, reduction, 0.1, fwd_mask)
    for name, o, r, lp in zip(("loss", "grad_input", "grad_weight", "grad_bias"), ours, ref, lowp):
        if r is None:
            assert o is None
            continue
        check_close(o, r, lp, dtype, f"linear_cross_entropy {name}")
    g = torch.rand(N) + 0.5 if reduction == "none" else torch.tensor(1.7)

    def cpu_b(g_, x_, w_, b_):
        return ops.linear_cross_entropy_backward(g_, x_, w_, t, b_, -100, reduction, 0.1, mask)
    ref = cpu_b(g.double(), x.double(), w.double(), b.double())
    lowp = _lowp(dtype, cpu_b, g, x, w, b) or (None,) * 3
    ours = op(backend, "linear_cross_entropy_backward")(g.to(d, dtype), x.to(d, dtype), w.to(d, dtype),
                                                        t.to(d), b.to(d, dtype), -100, reduction, 0.1,
                                                        mask)
    for name, o, r, lp in zip(("grad_input", "grad_weight", "grad_bias"), ours, ref, lowp):
        check_close(o, r, lp, dtype, f"linear_cross_entropy_backward {name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cuda_mse_bce(backend, dtype, reduction):
    torch.manual_seed(4)
    x, y = torch.randn(5, 7) * 3, torch.rand(5, 7)
    w, pw = torch.rand(5, 1), torch.rand(7) + 0.5
    d = dev(backend)
    g = torch.randn(5, 7) if reduction == "none" else torch.tensor(0.8)
    cases = [
        ("mse_loss", lambda *a: ops.mse_loss(*a, reduction), (x, y)),
        ("binary_cross_entropy_with_logits",
         lambda *a: ops.binary_cross_entropy_with_logits(*a, reduction), (x, y, w, pw)),
    ]
    for name, cpu, args in cases:
        ref = cpu(*[a.double() for a in args])
        lowp = _lowp(dtype, cpu, *args)
        ours = op(backend, name)(*[a.to(d, dtype) for a in args], reduction)
        assert ours.dtype == dtype
        check_close(ours, ref, lowp, dtype, name)
    ref = ops.mse_loss_backward(g.double(), x.double(), y.double(), reduction)
    lowp = _lowp(dtype, lambda *a: ops.mse_loss_backward(*a, reduction), g, x, y)
    ours = op(backend, "mse_loss_backward")(g.to(d, dtype), x.to(d, dtype), y.to(d, dtype), reduction)
    check_close(ours, ref, lowp, dtype, "mse_loss_backward")

    def bce_b(g_, x_, y_, w_, pw_):
        return ops.binary_cross_entropy_with_logits_backward(g_, x_, y_, w_, pw_, reduction, [True, True])
    ref = bce_b(g.double(), x.double(), y.double(), w.double(), pw.double())
    lowp = _lowp(dtype, bce_b, g, x, y, w, pw) or (None, None)
    ours = op(backend, "binary_cross_entropy_with_logits_backward")(
        g.to(d, dtype), x.to(d, dtype), y.to(d, dtype), w.to(d, dtype), pw.to(d, dtype), reduction,
        [True, True])
    for nm, o, r, lp in zip(("grad_input", "grad_target"), ours, ref, lowp):
        check_close(o, r, lp, dtype, f"bce {nm}")
