"""bf16 through the activation, softmax and LayerNorm families: bfloat16 tensors in, bfloat16
out, fp32 arithmetic inside (statistics, sums, LayerNorm's parameters and their gradients in
fp32), on every instruction set.

Two checks per op:
- The bf16 kernel equals the fp32 kernel run on the widened inputs with its outputs rounded to
  bfloat16 once (round to nearest even), bit for bit: widening is exact and both run the same
  arithmetic, so any difference is a bug in the storage path (a lost tail, a double rounding,
  a wrong lane). The one exception allowed: an fp32 result within 2^-10 ulp of a bf16 rounding
  tie may round to either neighbour (an FMA the compiler contracts in one instantiation only).
- Against a float64 reference on the same bf16 inputs: |got - ref| <= u16 |ref| + the fp32
  kernel's own error (64 u32 (|ref| + |x|) for pointwise ops; for reductions over n elements a budget
  of n u32 times the scale of the terms), u16 = 2^-8 being bf16's unit roundoff.
"""
import pytest
import torch
import torch.nn.functional as F

import fusedops
from fusedops import ops
from test_bf16 import PATHS as BF16_PATHS  # the bf16 paths this CPU runs

BF = torch.bfloat16
U16, U32 = 2.0**-8, 2.0**-24

POINTWISE = {
    "gelu": (ops.gelu, F.gelu),
    "gelu_tanh": (lambda x: ops.gelu(x, approximate="tanh"), lambda x: F.gelu(x, approximate="tanh")),
    "relu": (ops.relu, F.relu),
    "sigmoid": (ops.sigmoid, torch.sigmoid),
    "tanh": (ops.tanh, torch.tanh),
}
SIZES = [0, 1, 7, 16, 17, 33, 1000, 70001]


def rand(*shape, scale=3.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale).to(BF)


def assert_bits(got, want, what):
    """got (bf16) is want (the fp32 kernel's result) rounded once to nearest even. Where want
    sits within 2^-10 of a bf16 ulp of a rounding tie, the other neighbour is accepted too: the
    compiler may contract a multiply and an add into one FMA in one instantiation and not in
    the other, a difference of an fp32 ulp that flips such a near-tie."""
    assert got.dtype == BF, what
    if want.dtype == BF:
        diff = (got.view(torch.int16) != want.view(torch.int16)) & ~(got.isnan() & want.isnan())
        assert not diff.any(), f"{what}: {int(diff.sum())} of {got.numel()} elements differ"
        return
    rounded = want.to(BF)
    diff = (got.view(torch.int16) != rounded.view(torch.int16)) & ~(got.isnan() & rounded.isnan())
    if diff.any():
        w = want[diff].double()
        spacing = torch.ldexp(torch.ones_like(w), torch.frexp(w)[1] - 8)  # bf16 ulp at |w|
        off = (got[diff].double() - w).abs() / spacing
        near_tie = off <= 0.5 + 2.0**-10
        assert near_tie.all(), (f"{what}: {int((~near_tie).sum())} of {got.numel()} elements are not the "
                                f"fp32 kernel's result rounded once (worst {float(off.max()):.3g} ulp)")


def assert_close(got, ref, what, rel, absol=1e-30):
    err = (got.double() - ref).abs()
    bound = rel * ref.abs() + absol
    bad = err > bound
    assert not bad.any(), f"{what}: {int(bad.sum())} elements past the budget, worst {float((err / bound).max()):.3g}x"


@pytest.mark.parametrize("name", list(POINTWISE))
@pytest.mark.parametrize("n", SIZES)
def test_pointwise_forward_backward(isa, name, n):
    f, tf = POINTWISE[name]
    x = rand(n)
    y = f(x)
    assert y.dtype == BF and y.shape == x.shape
    assert_bits(y, f(x.float()), f"{name} forward n={n}")
    # fp32 kernels' floor: 64 u32 at the input's scale (gelu of a large negative x underflows)
    assert_close(y, tf(x.double()), f"{name} forward n={n}", U16 + 64 * U32, 64 * U32 * x.double().abs() + 1e-37)
    # the backward reads the input (gelu) or the output (the others) in bf16
    xr = x.clone().requires_grad_()
    g = rand(n, scale=1.0)
    (gx,) = torch.autograd.grad(f(xr), xr, g)
    x32 = x.float().requires_grad_()
    (gx32,) = torch.autograd.grad(f(x32), x32, g.float())
    assert gx.dtype == BF
    if name in ("gelu", "gelu_tanh", "relu"):  # from the same saved values in both precisions
        assert_bits(gx, gx32, f"{name} backward n={n}")
    xd = x.double().requires_grad_()
    (gd,) = torch.autograd.grad(tf(xd), xd, g.double())
    # sigmoid / tanh differentiate through their bf16-rounded output: one more u16 of the output
    slack = 0.0 if name in ("gelu", "gelu_tanh", "relu") else 3 * U16
    assert_close(gx, gd, f"{name} backward n={n}", U16 + 64 * U32 + slack, (slack + 64 * U32) * g.double().abs() + 1e-37)


@pytest.mark.parametrize("name", ["gelu", "relu", "sigmoid", "tanh"])
def test_pointwise_special_values_and_layouts(isa, name):
    f, _ = POINTWISE[name]
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-38, -3e38, 3e38], dtype=BF)
    assert_bits(f(x), f(x.float()), f"{name} special values")
    assert torch.isnan(f(x)[0])
    base = rand(9, 14)
    for view in (base.T, base[:, ::3], base.expand(2, 9, 14), base[3:3]):
        assert_bits(f(view), f(view.float()), f"{name} on a {tuple(view.stride())} view")


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,dim", [((1, 1), -1), ((3, 17), -1), ((4, 1000), -1), ((2, 5, 33), 1),
                                       ((2, 5, 33), 0), ((7, 3, 16), 1), ((0, 5), -1), ((6,), 0)])
def test_softmax(isa, name, shape, dim):
    f = getattr(ops, name)
    x = rand(*shape)
    y = f(x, dim)
    assert y.dtype == BF
    assert_bits(y, f(x.float(), dim), f"{name} {shape} dim {dim}")
    ref = getattr(torch, name)(x.double(), dim)
    D = shape[dim]
    if name == "softmax":
        assert_close(y, ref, f"{name} {shape}", U16 + (D + 64) * U32, 1e-37)
    else:  # log_softmax: the error is absolute, at the scale of log(sum) and the row's range
        err = (y.double() - ref).abs().max().item() if y.numel() else 0.0
        assert err <= U16 * (ref.abs().max().item() if y.numel() else 0) + (D + 64) * U32 * 10, f"{name} {shape}"
    g = rand(*shape, scale=1.0)
    gx = torch.ops.fusedops.__getattr__(f"{name}_backward")(g, y, dim)
    gx32 = torch.ops.fusedops.__getattr__(f"{name}_backward")(g.float(), y.float(), dim)
    assert_bits(gx, gx32, f"{name} backward {shape}")


def test_softmax_special_rows(isa):
    x = torch.tensor([[0.0, 1.0, float("nan")], [-float("inf")] * 3, [1.0, float("inf"), 2.0], [3e38, -3e38, 0.0]], dtype=BF)
    for name in ("softmax", "log_softmax"):
        f = getattr(ops, name)
        torch.testing.assert_close(f(x, -1), f(x.float(), -1).to(BF), equal_nan=True, rtol=0, atol=0)


NORM_SHAPES = [(1, 1), (3, 7), (4, 16), (5, 33), (2, 3, 129), (8, 768), (0, 12), (17, 1)]


@pytest.mark.parametrize("shape", NORM_SHAPES)
@pytest.mark.parametrize("wdtype", [torch.float32, BF, None])
def test_layer_norm(isa, shape, wdtype):
    N = shape[-1]
    x = rand(*shape) + 5  # an offset the mean must not lose precision to
    w = b = None
    if wdtype is not None:
        w = torch.randn(N, dtype=torch.float64).to(wdtype).requires_grad_()
        b = torch.randn(N, dtype=torch.float64).to(wdtype).requires_grad_()
    y = ops.layer_norm(x, (N,), w, b, 1e-5)
    assert y.dtype == BF
    w32 = None if w is None else w.detach().float()
    b32 = None if b is None else b.detach().float()
    assert_bits(y, ops.layer_norm(x.float(), (N,), w32, b32, 1e-5), f"layer_norm {shape}")
    wd = None if w is None else w.detach().double()
    bd = None if b is None else b.detach().double()
    ref = F.layer_norm(x.double(), (N,), wd, bd, 1e-5)
    scale = (wd.abs().max().item() if wd is not None else 1.0) * 4 + (bd.abs().max().item() if bd is not None else 0)
    assert_close(y, ref, f"layer_norm {shape}", U16, (N + 64) * U32 * scale * 16)
    if x.numel() == 0:
        return
    xr = x.clone().requires_grad_()
    g = rand(*shape, scale=1.0)
    params = [t for t in (w, b) if t is not None]
    grads = torch.autograd.grad(ops.layer_norm(xr, (N,), w, b, 1e-5), [xr, *params], g)
    assert grads[0].dtype == BF
    for t, gt in zip(params, grads[1:]):
        assert gt.dtype == t.dtype
    # the same gradients as the fp32 kernel on the widened tensors (dx rounded once)
    x32 = x.float().requires_grad_()
    p32 = [t.detach().float().requires_grad_() for t in params]
    grads32 = torch.autograd.grad(ops.layer_norm(x32, (N,), *(p32 + [None] * (2 - len(p32))), 1e-5), [x32, *p32], g.float())
    assert_bits(grads[0], grads32[0], f"layer_norm dx {shape}")
    for gt, g32 in zip(grads[1:], grads32[1:]):
        assert torch.equal(gt.float() if gt.dtype == torch.float32 else gt, g32 if gt.dtype == torch.float32 else g32.to(BF))


@pytest.mark.parametrize("shape", NORM_SHAPES)
def test_add_layer_norm(isa, shape):
    N = shape[-1]
    x, r = rand(*shape), rand(*shape)
    w, b = torch.randn(N), torch.randn(N)
    y, s = ops.add_layer_norm(x, r, (N,), w, b, 1e-5)
    assert y.dtype == BF and s.dtype == BF
    # the sum as torch's bf16 add rounds it, and the norm of that rounded sum
    assert torch.equal(s, x + r)
    assert_bits(y, ops.layer_norm((x + r).float(), (N,), w, b, 1e-5), f"add_layer_norm {shape}")
    if x.numel() == 0:
        return
    xr, rr = x.clone().requires_grad_(), r.clone().requires_grad_()
    y, s = ops.add_layer_norm(xr, rr, (N,), w, b, 1e-5)
    gy, gs = rand(*shape, scale=1.0), rand(*shape, scale=1.0)
    gx, gr = torch.autograd.grad((y, s), (xr, rr), (gy, gs))
    assert gx.dtype == BF and torch.equal(gx, gr)
    s32 = (x + r).float().requires_grad_()
    (ds,) = torch.autograd.grad(ops.layer_norm(s32, (N,), w, b, 1e-5), s32, gy.float())
    want = ds + gs.float()
    # dx adds grad_sum in fp32 before its one rounding
    assert_bits(gx, want, f"add_layer_norm dx {shape}")


def test_layer_norm_non_contiguous(isa):
    base = rand(12, 40)
    x = base.T  # [40, 12], normalised over 12 strided elements
    w = torch.randn(12)
    assert_bits(ops.layer_norm(x, (12,), w, None, 1e-5), ops.layer_norm(x.float(), (12,), w, None, 1e-5), "strided")


def test_layer_norm_bad_parameter_dtype_names_it():
    x = rand(3, 8)
    with pytest.raises(TypeError, match=r"fusedops\.layer_norm: weight must be bfloat16 or float32 when input is bfloat16"):
        ops.layer_norm(x, (8,), torch.ones(8, dtype=torch.float64), None, 1e-5)
    with pytest.raises(TypeError, match=r"fusedops\.gelu: input must be float32, float64 or bfloat16"):
        ops.gelu(torch.ones(3, dtype=torch.float16).to(torch.int32))
    with pytest.raises(TypeError, match=r"residual must have the dtype of input"):
        ops.add_layer_norm(x, x.float(), (8,), None, None, 1e-5)


AUTOCAST_CASES = {
    "gelu": (lambda x: ops.gelu(x), lambda x: F.gelu(x)),
    "relu": (lambda x: ops.relu(x), lambda x: F.relu(x)),
    "tanh": (lambda x: ops.tanh(x), lambda x: torch.tanh(x)),
    "softmax": (lambda x: ops.softmax(x, -1), lambda x: F.softmax(x, -1)),
    "log_softmax": (lambda x: ops.log_softmax(x, -1), lambda x: F.log_softmax(x, -1)),
    "layer_norm": (lambda x: ops.layer_norm(x, (24,), torch.ones(24), torch.zeros(24), 1e-5),
                   lambda x: F.layer_norm(x, (24,), torch.ones(24), torch.zeros(24), 1e-5)),
}


@pytest.mark.parametrize("name", list(AUTOCAST_CASES))
@pytest.mark.parametrize("dtype", [BF, torch.float32])
def test_autocast_keeps_the_input_dtype_as_torch(name, dtype):
    ours, theirs = AUTOCAST_CASES[name]
    x = rand(5, 24).to(dtype)
    with torch.autocast("cpu", dtype=BF):
        got, want = ours(x), theirs(x)
    assert got.dtype == want.dtype == dtype
    torch.testing.assert_close(got.float(), want.float(), rtol=2 * U16, atol=1e-2 if dtype == BF else 1e-5)


def test_autocast_add_layer_norm_promotes_mixed_inputs():
    x, r = rand(4, 16), torch.randn(4, 16)
    with torch.autocast("cpu", dtype=BF):
        y, s = ops.add_layer_norm(x, r, (16,), torch.ones(16), torch.zeros(16), 1e-5)
        want_s = x + r
    assert s.dtype == y.dtype == want_s.dtype == torch.float32
    torch.testing.assert_close(s, want_s)


# ---- autocast against torch's own ops: output dtypes, values within a budget -------------------


def _under_autocast(fn, *args):
    with torch.autocast("cpu", dtype=BF):
        return fn(*args)


@pytest.mark.parametrize("dtype", [torch.float32, BF])
def test_autocast_conv2d_as_torch(dtype):
    # both round the input to bf16 and sum in fp32, the output rounded once to bf16 (u16); torch
    # also rounds the fp32 weight to bf16 (2 u16 of the terms' scale S), ours reads it as it is
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 8).to(dtype).requires_grad_()
    w, b = torch.randn(5, 3, 3, 3, requires_grad=True), torch.randn(5, requires_grad=True)
    got = _under_autocast(ops.conv2d, x, w, b, 1, 1)
    want = _under_autocast(F.conv2d, x, w, b, 1, 1)
    assert got.dtype == want.dtype == BF
    xd = x.detach().to(BF).double()
    ref = F.conv2d(xd, w.detach().double(), b.detach().double(), 1, 1)
    S = F.conv2d(xd.abs(), w.detach().double().abs(), b.detach().double().abs(), 1, 1)
    K = 27
    assert_close(got, ref, "conv2d", U16, 1.2 * (K + 2) * U32 * S + 1e-6)
    assert_close(want, ref, "torch conv2d", U16, (2 * U16 + 1.2 * (K + 2) * U32) * S + 1e-6)
    g = torch.randn(got.shape).to(BF)
    gx, gw, gb = torch.autograd.grad(got, (x, w, b), g)
    tx, tw, tb = torch.autograd.grad(want, (x, w, b), g)
    assert (gx.dtype, gw.dtype, gb.dtype) == (tx.dtype, tw.dtype, tb.dtype) == (dtype, torch.float32, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, BF])
def test_autocast_max_pool2d_as_torch(dtype):
    x = torch.randn(2, 3, 9, 8).to(dtype)
    got = _under_autocast(ops.max_pool2d, x, 3, 2, 1)
    want = _under_autocast(F.max_pool2d, x, 3, 2, 1)
    assert got.dtype == want.dtype == dtype
    assert torch.equal(got, want)  # a max is exact


@pytest.mark.parametrize("dtype", [torch.float32, BF])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_autocast_mse_and_bce_return_float32_as_torch(dtype, reduction):
    # both compute in fp32 on the same widened values: the sums differ by at most n u32 of their
    # (non-negative) terms, an element by a few u32 of its terms (log1p/exp formulations)
    x, y, t = torch.randn(5, 24).to(dtype), torch.randn(5, 24).to(dtype), torch.rand(5, 24).to(dtype)
    n = x.numel()
    for ours, theirs, a in ((ops.mse_loss, F.mse_loss, (x, y)),
                            (ops.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, (x, t))):
        got = _under_autocast(lambda *v: ours(*v, reduction=reduction), *a)
        want = _under_autocast(lambda *v: theirs(*v, reduction=reduction), *a)
        assert got.dtype == want.dtype == torch.float32, ours.__name__
        torch.testing.assert_close(got, want, rtol=(n + 8) * U32, atol=8 * U32 * (1 + float(x.float().abs().max())))


@pytest.mark.parametrize("dtype", [torch.float32, BF])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_autocast_cross_entropy_as_torch(dtype, reduction):
    # bf16 logits run the bf16 kernel, whose loss is rounded once to bf16 (half an ulp: 2^-9
    # relative) and returned as float32; torch widens the logits and sums in fp32. Both carry the
    # fp32 log-sum-exp's error (64 C u32 per row). The gradient, bf16 for bf16 logits in both,
    # is rounded once (u16)
    torch.manual_seed(0)
    N, C = 6, 40
    x = (torch.randn(N, C) * 3).to(dtype).requires_grad_()
    t = torch.randint(0, C, (N,))
    t[2] = -100
    got = _under_autocast(lambda: ops.cross_entropy(x, t, reduction=reduction))
    want = _under_autocast(lambda: F.cross_entropy(x, t, reduction=reduction))
    assert got.dtype == want.dtype == torch.float32
    rows = N if reduction == "sum" else 1
    rel = 2.0**-9 if dtype == BF else 0.0
    assert_close(got, want.double(), f"cross_entropy {reduction}", rel + 64 * C * U32,
                 64 * C * U32 * rows)
    g = torch.ones_like(got)
    (gx,) = torch.autograd.grad(got, x, g)
    (tx,) = torch.autograd.grad(want, x, g)
    assert gx.dtype == tx.dtype == dtype
    assert_close(gx, tx.double(), "cross_entropy grad", U16 if dtype == BF else 64 * C * U32, 1e-7)


def _saved_dtypes(fn):
    """Runs fn under autocast and returns the tensors autograd saved for backward."""
    saved = []
    with torch.autocast("cpu", dtype=BF), torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t) or t, lambda t: t):
        fn()
    return saved


def test_autocast_conv2d_saves_no_float32_copy_of_a_bf16_input():
    x = torch.randn(2, 3, 9, 8).to(BF).requires_grad_()
    w, b = torch.randn(5, 3, 3, 3, requires_grad=True), torch.randn(5, requires_grad=True)
    saved = _saved_dtypes(lambda: ops.conv2d(x, w, b, 1, 1))
    assert any(t.dtype == BF and t.data_ptr() == x.data_ptr() for t in saved), "the input itself is saved"
    # the only float32 tensors saved are the master weight and bias themselves, not copies
    for t in saved:
        if t.dtype == torch.float32:
            assert t.data_ptr() in (w.data_ptr(), b.data_ptr()), f"a float32 copy {list(t.shape)} was saved"


def test_autocast_cross_entropy_saves_no_float32_copy_of_bf16_logits():
    x = torch.randn(6, 40).to(BF).requires_grad_()
    t = torch.randint(0, 40, (6,))
    saved = _saved_dtypes(lambda: ops.cross_entropy(x, t))
    assert any(s.dtype == BF and s.data_ptr() == x.data_ptr() for s in saved), "the logits themselves are saved"
    assert not [s for s in saved if s.dtype == torch.float32], [(s.dtype, list(s.shape)) for s in saved]


# Recurrent layers and cells under autocast against torch's, the state arguments as given. torch
# runs LSTM (unpacked, no projection) and RNN layers on oneDNN in bf16 throughout; its GRU layers,
# packed or projected LSTMs and cells take their gates from bf16 linears and promote them with
# the state's dtype.
def _pk(x):
    return torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 3]))


RNN_AUTOCAST = {  # name: (class, kwargs, input, extra args)
    "LSTM": ("LSTM", {}, lambda: torch.randn(5, 2, 6), ()),
    "LSTM bf16": ("LSTM", {}, lambda: torch.randn(5, 2, 6).to(BF), ()),
    "LSTM 2 layers bidirectional": ("LSTM", dict(num_layers=2, bidirectional=True), lambda: torch.randn(5, 2, 6), ()),
    "LSTM batch_first": ("LSTM", dict(batch_first=True), lambda: torch.randn(2, 5, 6), ()),
    "LSTM packed": ("LSTM", {}, lambda: _pk(torch.randn(5, 2, 6)), ()),
    "LSTM proj": ("LSTM", dict(proj_size=3), lambda: torch.randn(5, 2, 6), ()),
    "LSTM proj bf16": ("LSTM", dict(proj_size=3), lambda: torch.randn(5, 2, 6).to(BF), ()),
    "GRU": ("GRU", {}, lambda: torch.randn(5, 2, 6), ()),
    "GRU bf16": ("GRU", {}, lambda: torch.randn(5, 2, 6).to(BF), ()),
    "GRU bf16 x fp32 h": ("GRU", {}, lambda: torch.randn(5, 2, 6).to(BF), (torch.randn(1, 2, 8),)),
    "GRU fp32 x bf16 h": ("GRU", {}, lambda: torch.randn(5, 2, 6), (torch.randn(1, 2, 8).to(BF),)),
    "GRU packed": ("GRU", {}, lambda: _pk(torch.randn(5, 2, 6)), ()),
    "RNN": ("RNN", {}, lambda: torch.randn(5, 2, 6), ()),
    "RNN relu packed": ("RNN", dict(nonlinearity="relu"), lambda: _pk(torch.randn(5, 2, 6)), ()),
    "RNN unbatched": ("RNN", {}, lambda: torch.randn(5, 6), ()),
    "LSTMCell": ("LSTMCell", {}, lambda: torch.randn(2, 6), ()),
    "LSTMCell bf16": ("LSTMCell", {}, lambda: torch.randn(2, 6).to(BF), ()),
    "LSTMCell bf16 h fp32 c": ("LSTMCell", {}, lambda: torch.randn(2, 6),
                               ((torch.randn(2, 8).to(BF), torch.randn(2, 8)),)),
    "GRUCell": ("GRUCell", {}, lambda: torch.randn(2, 6), ()),
    "GRUCell fp32 x bf16 h": ("GRUCell", {}, lambda: torch.randn(2, 6), (torch.randn(2, 8).to(BF),)),
    "RNNCell": ("RNNCell", {}, lambda: torch.randn(2, 6), ()),
    "RNNCell unbatched": ("RNNCell", {}, lambda: torch.randn(6), ()),
}


def _flat(o):
    if isinstance(o, torch.nn.utils.rnn.PackedSequence):
        return [o.data]
    if isinstance(o, (tuple, list)):
        return [t for v in o for t in _flat(v)]
    return [o]


@pytest.mark.parametrize("name", list(RNN_AUTOCAST))
def test_autocast_recurrent_as_torch(name):
    # torch rounds the inputs, weights and each step's gates to bf16, ours computes in fp32 and
    # rounds the results once: a few bf16 roundings of the gate terms, O(1) here (unit inputs,
    # the default init), not compounding since the states stay bounded: 8 u16 (1 + |torch's|)
    from fusedops import nn as fnn

    cls, kw, make, extra = RNN_AUTOCAST[name]
    torch.manual_seed(0)
    theirs = getattr(torch.nn, cls)(6, 8, **kw)
    ours = getattr(fnn, cls)(6, 8, **kw)
    ours.load_state_dict(theirs.state_dict())
    x = make()
    got, want = _flat(_under_autocast(ours, x, *extra)), _flat(_under_autocast(theirs, x, *extra))
    assert [t.dtype for t in got] == [t.dtype for t in want], name
    for g, w in zip(got, want):
        assert_close(g, w.double(), name, 8 * U16, 8 * U16)
    sum(t.float().sum() for t in got).backward()
    assert all(p.grad is not None and p.grad.dtype == p.dtype for p in ours.parameters())


def test_autocast_recurrent_ops_compile():
    x, h, c = torch.randn(5, 2, 3), torch.zeros(2, 4), torch.zeros(2, 4)
    w_ih, w_hh = torch.randn(16, 3), torch.randn(16, 4)

    def fn(x):
        with torch.autocast("cpu", dtype=BF):
            return ops.rnn_layer("lstm", x, h, c, w_ih, w_hh)[0], ops.lstm_cell(x[0], (h, c), w_ih, w_hh)[1]

    got = torch.compile(fn, fullgraph=True, backend="aot_eager")(x)
    want = fn(x)
    assert [t.dtype for t in got] == [t.dtype for t in want] == [BF, torch.float32]
    for g, w in zip(got, want):
        assert torch.equal(g, w)


# ---- attention -------------------------------------------------------------------------------

ATTN_CASES = [  # (B, H, L, S, E, Ev, causal, mask)
    (1, 1, 1, 1, 1, 1, False, None),
    (2, 3, 17, 17, 8, 8, True, None),
    (1, 2, 33, 70, 64, 40, False, "bool"),
    (2, 2, 65, 65, 64, 64, True, "float"),
    (1, 1, 5, 0, 4, 4, False, None),
]


def _attn_inputs(B, H, L, S, E, Ev, mask):
    q, k, v = rand(B, H, L, E, scale=1.0), rand(B, H, S, E, scale=1.0), rand(B, H, S, Ev, scale=1.0)
    m = None
    if mask == "bool":
        m = torch.rand(L, S) > 0.3
    elif mask == "float":
        m = rand(L, S, scale=1.0)
    return q, k, v, m


@pytest.mark.parametrize("case", ATTN_CASES)
def test_attention_forward_backward(isa, case):
    B, H, L, S, E, Ev, causal, mask = case
    q, k, v, m = _attn_inputs(B, H, L, S, E, Ev, mask)
    sdpa = torch.ops.fusedops.scaled_dot_product_attention
    bwd = torch.ops.fusedops.scaled_dot_product_attention_backward
    out, lse = sdpa(q, k, v, m, 0.0, causal, None, False, None)
    assert out.dtype == BF and lse.dtype == torch.float32
    m32 = m.float() if m is not None and m.dtype == BF else m
    out32, lse32 = sdpa(q.float(), k.float(), v.float(), m32, 0.0, causal, None, False, None)
    native = fusedops._C._cpu_info()["bf16"].startswith("native")
    if native:
        # the products on the bf16 units (P rounded to bf16 for P V): within the budget below;
        # the scores are the same fp32 sums of exact bf16 products in another order
        qk = (q.double().abs().amax(-1, keepdim=True) * k.double().abs().amax(-1).unsqueeze(-2)).amax(-1) \
            if S > 0 and E > 0 else torch.zeros_like(lse32, dtype=torch.float64)
        budget = (E + 8) * U32 * (E * qk / max(E, 1) ** 0.5 + lse32.double().abs().nan_to_num(0, 0, 0))
        assert ((lse.double() - lse32.double()).abs().nan_to_num(0) <= budget).all(), f"attention lse {case}"
        assert torch.equal(lse.isinf(), lse32.isinf())
    else:
        # the same arithmetic on the widened operands, rounded once
        assert_bits(out, out32, f"attention out {case}")
        assert torch.equal(lse, lse32)
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                         None if m is None else m.double() if m.dtype == BF else m,
                                         is_causal=causal)
    if S > 0 and out.numel():
        # |P V| <= max |v|: a u16 rounding of the output plus fp32 sums over S keys; natively P
        # is rounded to bf16 too (|dP_j| <= u16 P_j: another u16 max |v|)
        vmax = v.double().abs().max().item()
        err = (out.double() - ref).abs().max().item()
        bound = (2 if native else 1) * U16 * vmax + (S + E + 64) * U32 * 8 * vmax
        assert err <= bound, f"attention out {case}: {err}"
    g = rand(B, H, L, Ev, scale=1.0)
    grads = bwd(g, q, k, v, out, lse, m, 0.0, causal, None, False, None, [True, True, True])
    grads32 = bwd(g.float(), q.float(), k.float(), v.float(), out.float(), lse, m32, 0.0, causal, None, False,
                  None, [True, True, True])
    budgets = _attn_grad_budgets(q, k, v, g, m, causal, 0.0) if native else (None,) * 3
    for name, gt, g32, budget in zip("qkv", grads, grads32, budgets):
        assert gt.dtype == BF
        if native:  # P and dS rounded to bf16 for their products: within the budget
            _assert_within(gt, g32, budget, f"attention d{name} {case}")
        else:
            assert_bits(gt, g32, f"attention d{name} {case}")


def _attn_grad_budgets(q, k, v, g, m, causal, p):
    """What rounding P and dS = P (dP - D) to bf16 for the backward's products may cost, per
    element of dq, dk, dv, beyond the fp32 kernel's result: u16 times the sums of absolute
    terms, |dS| K, |dS|^T Q and P^T |dO| (P, dP, D in float64 from the inputs; with dropout p
    the kept terms scaled by 1 / (1 - p)), twice over for the first-order effects on P and dS
    themselves, plus fp32 sums over L + S + E terms."""
    q, k, v, g = (t.double() for t in (q, k, v, g))
    L, S, E = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = E ** -0.5
    sc = scale * q @ k.transpose(-1, -2)
    if m is not None:
        sc = sc.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else sc + m.double()
    if causal:
        sc = sc.masked_fill(torch.ones(L, S, dtype=torch.bool).triu(1), float("-inf"))
    P = torch.softmax(sc, -1).nan_to_num(0.0)
    inv = 1.0 / (1.0 - p)
    D = (g * (P @ v)).sum(-1, keepdim=True)
    dS = P * ((g @ v.transpose(-1, -2)).abs() * inv + D.abs())
    extra = (L + S + E + 64) * U32 * 8
    bq = 2 * U16 * scale * dS @ k.abs()
    bk = 2 * U16 * scale * dS.transpose(-1, -2) @ q.abs()
    bv = 2 * U16 * inv * P.transpose(-1, -2) @ g.abs()
    return tuple(b + extra * (b.amax() if b.numel() else 0.0) + 1e-30 for b in (bq, bk, bv))


def _assert_within(got, want, budget, what):
    """got (bf16) within budget of want (the fp32 kernel's result), each rounded once more."""
    err = (got.double() - want.double()).abs()
    bound = budget + U16 * (got.double().abs() + want.double().abs())
    bad = err > bound
    assert not bad.any(), f"{what}: {int(bad.sum())} elements past the budget, worst {float((err / bound).max()):.3g}x"


NATIVE_ATTN_CASES = [  # (B, H, L, S, E, Ev, causal, mask, dropout): tile remainders on both sides
    (1, 1, 1, 1, 1, 1, False, None, 0.0),
    (2, 3, 17, 17, 8, 8, True, None, 0.0),
    (1, 2, 33, 70, 64, 40, False, "bool", 0.0),
    (2, 2, 65, 65, 64, 64, True, "float", 0.0),
    (1, 2, 130, 300, 80, 72, True, None, 0.0),
    (1, 2, 200, 129, 33, 31, False, None, 0.0),
    (1, 3, 97, 97, 64, 64, True, None, 0.3),
    (1, 1, 5, 0, 4, 4, False, None, 0.0),
]


@pytest.mark.skipif(BF16_PATHS == ["widen"], reason="the CPU lacks AVX512-BF16: only the widening path runs here")
@pytest.mark.parametrize("case", NATIVE_ATTN_CASES)
def test_attention_native_products_agree_with_widened(case):
    """Forward and backward with their products on the bf16 units (AMX, vdpbf16ps) against the
    widened fp32 kernel and a float64 reference: the output within two bf16 roundings of max |v|
    (P and the output) plus fp32 sums, the gradients within the budget of rounding P and dS;
    rows with no visible key, NaN rows and dropout as the fp32 kernel."""
    B, H, L, S, E, Ev, causal, mask, p = case
    q, k, v, m = _attn_inputs(B, H, L, S, E, Ev, mask)
    if L > 3:
        q[0, 0, 2, 0] = float("nan")  # a NaN query row stays NaN
    sdpa = torch.ops.fusedops.scaled_dot_product_attention
    outs = {}
    try:
        for path in BF16_PATHS:
            fusedops._C._set_bf16(path)
            rng = torch.tensor([5, 0], dtype=torch.int64) if p > 0 else None  # the same keys dropped
            outs[path] = sdpa(q, k, v, m, p, causal, None, False, rng)
    finally:
        fusedops._C._set_bf16("auto")
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                         None if m is None else m.double() if m.dtype == BF else m,
                                         is_causal=causal)
    vmax = v.double().abs().max().item() if v.numel() else 0.0
    wide, wlse = outs["widen"]
    for path, (out, lse) in outs.items():
        assert out.dtype == BF and out.shape == (B, H, L, Ev)
        assert torch.equal(out.isnan(), wide.isnan()), path
        assert torch.equal(lse.isinf(), wlse.isinf()) and torch.equal(lse.isnan(), wlse.isnan()), path
        fin = ~wide.isnan()
        if p == 0.0 and S > 0:
            err = (out.double() - ref)[fin].abs().max().item() if fin.any() else 0.0
            assert err <= 2 * U16 * vmax + (S + E + 64) * U32 * 8 * vmax, f"{path} {case}: {err}"
        # the same keys dropped: native and widened within the two roundings (scaled by 1/(1-p))
        d = (out.double() - wide.double())[fin].abs().max().item() if fin.any() else 0.0
        assert d <= (3 * U16 * vmax + (S + E + 64) * U32 * 8 * vmax) / (1 - p), f"{path} vs widen {case}: {d}"
    # the backward on every path, from the widened forward's out and lse: the native products
    # within the budget of rounding P and dS to bf16; the same rows NaN
    q[0, 0, 2:3] = 0.0 if L > 3 else q[0, 0, 2:3]
    g = rand(B, H, L, Ev, scale=1.0)
    bwd = torch.ops.fusedops.scaled_dot_product_attention_backward
    rng = torch.tensor([5, 0], dtype=torch.int64) if p > 0 else None
    fusedops._C._set_bf16("widen")
    try:
        out, lse = sdpa(q, k, v, m, p, causal, None, False, rng)
        grads = {}
        for path in BF16_PATHS:
            fusedops._C._set_bf16(path)
            grads[path] = bwd(g, q, k, v, out, lse, m, p, causal, None, False, rng, [True, True, True])
    finally:
        fusedops._C._set_bf16("auto")
    budgets = _attn_grad_budgets(q, k, v, g, m, causal, p)
    for path in BF16_PATHS:
        for name, got, want, budget in zip("qkv", grads[path], grads["widen"], budgets):
            assert got.dtype == BF and got.shape == want.shape
            _assert_within(got, want, budget, f"{path} d{name} {case}")


@pytest.mark.parametrize("heads", [1, 3])
def test_attention_native_threads_give_the_same_bits(heads):
    """1 to 4 threads: the same output, log-sum-exp and gradients, bit for bit (with one head
    the backward splits its key blocks into groups that do not depend on the thread count)."""
    q, k, v, g = (rand(1, heads, 150, 64, scale=1.0) for _ in range(4))
    sdpa = torch.ops.fusedops.scaled_dot_product_attention
    bwd = torch.ops.fusedops.scaled_dot_product_attention_backward
    n = torch.get_num_threads()
    try:
        got = []
        for t in (1, 2, 3, 4):
            torch.set_num_threads(t)
            o, lse = sdpa(q, k, v, None, 0.0, True, None, False, None)
            got.append((o, lse, *bwd(g, q, k, v, o, lse, None, 0.0, True, None, False, None, [True] * 3)))
    finally:
        torch.set_num_threads(n)
    for other in got[1:]:
        for a, b in zip(got[0], other):
            assert torch.equal(a, b)


def test_attention_gqa_and_strided_views():
    q = rand(2, 7, 4, 16).transpose(1, 2)  # [2, 4, 7, 16], strided
    k = rand(2, 2, 9, 16, scale=1.0)
    v = rand(2, 2, 9, 16, scale=1.0)
    got = ops.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    want = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), enable_gqa=True)
    assert got.dtype == BF
    assert (got.double() - want).abs().max().item() <= 2 * U16 * v.double().abs().max().item()
    qr, kr, vr = (t.detach().clone().requires_grad_() for t in (q, k, v))
    gk = torch.autograd.grad(ops.scaled_dot_product_attention(qr, kr, vr, enable_gqa=True), kr,
                             torch.ones(2, 4, 7, 16, dtype=BF))[0]
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    gkd = torch.autograd.grad(F.scaled_dot_product_attention(qd, kd, vd, enable_gqa=True), kd,
                              torch.ones(2, 4, 7, 16, dtype=torch.float64))[0]
    assert gk.dtype == BF
    # per query head rounded to bf16, then summed over the two heads sharing a key head
    assert (gk.double() - gkd).abs().max().item() <= 4 * U16 * gkd.abs().max().item() + 1e-6


def test_attention_autocast_runs_bf16_like_torch():
    q, k, v = torch.randn(2, 3, 20, 8), torch.randn(2, 3, 20, 8), torch.randn(2, 3, 20, 8)
    with torch.autocast("cpu", dtype=BF):
        got = ops.scaled_dot_product_attention(q, k, v, is_causal=True)
        want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert got.dtype == want.dtype == BF
    plain = ops.scaled_dot_product_attention(q.to(BF), k.to(BF), v.to(BF), is_causal=True)
    assert torch.equal(got, plain)  # autocast rounds q, k, v to bf16 and runs the bf16 kernel
    torch.testing.assert_close(got.float(), want.float(), rtol=4 * U16, atol=4 * U16)


# ---- linear_cross_entropy --------------------------------------------------------------------


@pytest.mark.parametrize("N,K,V", [(1, 1, 1), (7, 33, 65), (300, 64, 1000), (0, 8, 5)])
@pytest.mark.parametrize("wdtype", [torch.float32, BF])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_linear_cross_entropy(N, K, V, wdtype, reduction):
    x = rand(N, K, scale=1.0)
    w = (torch.randn(V, K, dtype=torch.float64) * 0.3).to(wdtype)
    b = (torch.randn(V, dtype=torch.float64) * 0.1).to(wdtype)
    t = torch.randint(0, V, (N,))
    if N > 2:
        t[1] = -100
    xr, wr, br = (u.clone().requires_grad_() for u in (x, w, b))
    loss = ops.linear_cross_entropy(xr, wr, t, br, reduction=reduction)
    assert loss.dtype == torch.promote_types(BF, wdtype)
    # reference: float64 logits of the bf16-rounded operands (the products the native kernel
    # forms; the widening path uses an fp32 weight unrounded: 2 u16 of the logits' scale more);
    # the bias is added in fp32 as it is
    xd, wd = (u.detach().to(BF).double().requires_grad_() for u in (x, w))
    bd = b.detach().double().requires_grad_()
    ref = F.cross_entropy(F.linear(xd, wd, bd), t, reduction=reduction)
    if N == 0:
        return
    logit_scale = (xd.abs() @ wd.abs().T).max().item() + bd.abs().max().item()
    # per row: fp32 sums of K products and the log-sum-exp over V; a sum adds N rows' errors
    rows = N if reduction == "sum" else 1
    widened = fusedops.cpu_info()["bf16"].startswith("widened")
    per_row = ((K + 8) * U32 * 4 + (2 * U16 if widened and wdtype == torch.float32 else 0)) * logit_scale \
        + 64 * U32 * (ref.abs().max().item() / rows + 1)
    tol = rows * per_row + (U16 * ref.abs().max().item() if loss.dtype == BF else 0.0)
    assert (loss.double() - ref).abs().max().item() <= tol, reduction
    g = torch.ones_like(loss) if reduction != "none" else rand(N, scale=1.0).to(loss.dtype)
    gx, gw, gb = torch.autograd.grad(loss, (xr, wr, br), g)
    rx, rw, rb = torch.autograd.grad(ref, (xd, wd, bd), g.double())
    assert gx.dtype == BF and gw.dtype == wdtype and gb.dtype == wdtype
    # dlogits rounded to bf16 for the products on the native path: a u16 of the terms
    for got, want, what in ((gx, rx, "dx"), (gw, rw, "dw"), (gb, rb, "db")):
        scale = want.abs().max().item() + 1e-30
        assert (got.double() - want).abs().max().item() <= 8 * U16 * scale, what


def test_linear_cross_entropy_autocast_reads_the_master_weight():
    x, w = torch.randn(50, 32), torch.randn(97, 32, requires_grad=True)
    t = torch.randint(0, 97, (50,))
    with torch.autocast("cpu", dtype=BF):
        loss = ops.linear_cross_entropy(x, w, t)
        want = F.cross_entropy(F.linear(x, w), t)
    assert loss.dtype == want.dtype == torch.float32
    torch.testing.assert_close(loss, want, rtol=2e-2, atol=2e-2)
    (gw,) = torch.autograd.grad(loss, w)
    assert gw.dtype == torch.float32
    plain = ops.linear_cross_entropy(x.to(BF), w, t)  # what autocast runs: bf16 x, fp32 w
    assert torch.equal(loss, plain)


# ---- cross_entropy on bf16 logits --------------------------------------------------------------


@pytest.mark.parametrize("N,C", [(1, 1), (5, 17), (64, 1000), (3, 5000), (0, 7)])
@pytest.mark.parametrize("kind", ["index", "smooth_weight", "probs"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(isa, N, C, kind, reduction):
    x = rand(N, C)
    kw = {}
    if kind == "probs":
        t = torch.softmax(torch.randn(N, C), -1).to(BF)
    else:
        t = torch.randint(0, C, (N,))
        if N > 2:
            t[2] = -100
    if kind == "smooth_weight":
        kw = dict(weight=torch.rand(C) + 0.5, label_smoothing=0.1)
    xr = x.clone().requires_grad_()
    loss = ops.cross_entropy(xr, t, reduction=reduction, **kw)
    assert loss.dtype == BF  # bf16 logits give a bf16 loss outside autocast, as torch's
    # the same as the fp32 kernel on the widened logits (targets, weights as given), rounded once
    x32 = x.float().requires_grad_()
    t32 = t.float() if kind == "probs" else t
    loss32 = ops.cross_entropy(x32, t32, reduction=reduction, **kw)
    assert_bits(loss, loss32, f"cross_entropy {kind} {reduction}")
    if N == 0 or (kind != "probs" and reduction == "mean" and bool((t == -100).all())):
        return
    g = torch.ones_like(loss) if reduction != "none" else rand(N, scale=1.0)
    (gx,) = torch.autograd.grad(loss, xr, g)
    (gx32,) = torch.autograd.grad(loss32, x32, g.float())
    assert gx.dtype == BF
    if reduction == "none":
        # the bf16 gradient buffer, rounded once in the forward, is scaled by the incoming
        # gradient in the backward: a second rounding
        assert_close(gx, gx32.double(), f"cross_entropy grad {kind}", 2 * U16, 1e-30)
    else:
        assert_bits(gx, gx32, f"cross_entropy grad {kind} {reduction}")
    ref = F.cross_entropy(x.double(), t.double() if kind == "probs" else t, reduction=reduction,
                          **{k: (v.double() if torch.is_tensor(v) else v) for k, v in kw.items()})
    assert_close(loss, ref, f"cross_entropy {kind} {reduction}", U16 + 64 * U32, 64 * U32 * (C + N))


# ---- max_pool2d ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,k,s,p,d,ceil", [((1, 1, 1, 1), 1, 1, 0, 1, False), ((2, 3, 9, 11), 3, 2, 1, 1, True),
                                                 ((1, 4, 8, 8), 2, 2, 0, 1, False), ((2, 2, 13, 13), 3, 1, 1, 2, False)])
def test_max_pool2d(shape, k, s, p, d, ceil):
    x = rand(*shape)
    x.view(-1)[3 % x.numel()] = float("nan")
    xr = x.clone().requires_grad_()
    y = ops.max_pool2d(xr, k, s, p, d, ceil_mode=ceil)
    want = F.max_pool2d(x.float(), k, s, p, d, ceil_mode=ceil)
    assert y.dtype == BF
    torch.testing.assert_close(y.float(), want, rtol=0, atol=0, equal_nan=True)  # max is exact
    g = rand(*y.shape, scale=1.0)
    (gx,) = torch.autograd.grad(y, xr, g)
    x32 = x.float().requires_grad_()
    (gx32,) = torch.autograd.grad(F.max_pool2d(x32, k, s, p, d, ceil_mode=ceil), x32, g.float())
    assert gx.dtype == BF
    # overlapping windows summed in fp32, rounded once
    assert_bits(gx, gx32, f"max_pool2d grad {shape}")
    cl = x.to(memory_format=torch.channels_last)
    torch.testing.assert_close(ops.max_pool2d(cl, k, s, p, d, ceil_mode=ceil).float(), want, rtol=0, atol=0, equal_nan=True)


# ---- conv2d (widened to the fp32 kernels) ----------------------------------------------------


@pytest.mark.parametrize("wdtype", [BF, torch.float32])
@pytest.mark.parametrize("shape,wshape,stride,padding,groups",
                         [((2, 3, 9, 11), (4, 3, 3, 3), 1, 1, 1), ((1, 4, 8, 8), (4, 2, 3, 3), 2, 0, 2),
                          ((1, 1, 1, 1), (1, 1, 1, 1), 1, 0, 1)])
def test_conv2d(wdtype, shape, wshape, stride, padding, groups):
    x = rand(*shape, scale=1.0)
    w = rand(*wshape, scale=0.5).to(wdtype)
    b = rand(wshape[0], scale=0.5).to(wdtype)
    xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
    y = ops.conv2d(xr, wr, br, stride, padding, 1, groups)
    assert y.dtype == BF
    y32 = ops.conv2d(x.float(), w.float(), b.float(), stride, padding, 1, groups)
    assert_bits(y, y32, "conv2d")  # the fp32 kernel on the widened operands, rounded once
    g = rand(*y.shape, scale=1.0)
    gx, gw, gb = torch.autograd.grad(y, (xr, wr, br), g)
    x32, w32, b32 = (t.float().requires_grad_() for t in (x, w, b))
    r = torch.autograd.grad(ops.conv2d(x32, w32, b32, stride, padding, 1, groups), (x32, w32, b32), g.float())
    assert gx.dtype == BF and gw.dtype == wdtype and gb.dtype == wdtype
    assert_bits(gx, r[0], "conv2d dx")
    if wdtype == torch.float32:
        assert torch.equal(gw, r[1]) and torch.equal(gb, r[2])
    else:
        assert_bits(gw, r[1], "conv2d dw")


# ---- opcheck on bf16 operands (schemas, fakes' dtypes, autograd registration) ---------------


def test_opcheck_bf16():
    fo = torch.ops.fusedops
    opcheck = torch.library.opcheck
    x = rand(4, 24, scale=1.0).requires_grad_()
    w, b = torch.randn(24, requires_grad=True), torch.randn(24, requires_grad=True)
    opcheck(fo.gelu.default, (x, "tanh"))
    opcheck(fo.softmax.default, (x, -1))
    opcheck(fo.log_softmax.default, (x, 0))
    opcheck(fo.layer_norm.default, (x, [24], w, b, 1e-5))
    opcheck(fo.add_layer_norm_stats.default, (x, rand(4, 24).requires_grad_(), [24], w, b, 1e-5))
    _, mean, rstd = fo.layer_norm_stats(x.detach(), [24], w.detach(), b.detach(), 1e-5)
    opcheck(fo.layer_norm_backward.default, (rand(4, 24), x.detach(), [24], mean, rstd, w.detach(), [True, True, True]))
    q = rand(1, 2, 5, 8, scale=1.0).requires_grad_()
    opcheck(fo.scaled_dot_product_attention.default, (q, q.detach().clone(), q.detach().clone(), None, 0.0, True, None, False, None))
    t = torch.randint(0, 24, (4,))
    opcheck(fo.cross_entropy.default, (x.detach(), t, None, -100, "mean", 0.0, True))
    wl = torch.randn(24, 24, requires_grad=True)
    opcheck(fo.linear_cross_entropy.default, (x, wl, t, None, -100, "mean", 0.0, [True, True, False]))
    img = rand(1, 2, 6, 6).requires_grad_()
    opcheck(fo.max_pool2d_with_indices.default, (img, [2, 2], [2, 2], [0, 0], [1, 1], False))
    opcheck(fo.conv2d.default, (img, torch.randn(3, 2, 3, 3, requires_grad=True), None, [1, 1], [1, 1], [1, 1], 1))


# ---- recurrent layers (widened to the fp32 kernels) ------------------------------------------


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_recurrent_module_in_bf16(cls):
    from fusedops import nn as fnn

    torch.manual_seed(3)
    m = getattr(fnn, cls)(12, 16, num_layers=2, batch_first=True)
    m32 = getattr(fnn, cls)(12, 16, num_layers=2, batch_first=True)
    m32.load_state_dict(m.state_dict())
    m = m.to(BF)  # a bf16 model: bf16 weights, states and outputs
    x = rand(3, 7, 12, scale=1.0)
    out, _ = m(x)
    assert out.dtype == BF
    # the fp32 layer over the bf16 weights widened, each layer's output rounded once
    m32.load_state_dict({k: v.float() for k, v in m.state_dict().items()})
    ref, _ = m32(x.float())
    assert (out.double() - ref.double()).abs().max().item() <= 4 * U16 * ref.abs().max().item()
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == BF for p in m.parameters())


def test_cells_in_bf16():
    x, h, c = rand(4, 8), rand(4, 6), rand(4, 6)
    w_ih, w_hh, b = torch.randn(24, 8), torch.randn(24, 6), torch.randn(24)
    hy, cy = ops.lstm_cell(x, (h, c), w_ih, w_hh, b, b)  # fp32 master weights read as they are
    hy32, cy32 = ops.lstm_cell(x.float(), (h.float(), c.float()), w_ih, w_hh, b, b)
    assert hy.dtype == cy.dtype == BF
    assert_bits(hy, hy32, "lstm_cell h")
    assert_bits(cy, cy32, "lstm_cell c")


# ---- recurrent layers: what a bf16 call saves, and its gradients ------------------------------
#
# A bf16 recurrent call runs the fp32 kernels on widened operands (the forward's results are the
# fp32 kernel's rounded once, checked bit for bit above) but saves only what it was given (bf16
# tensors, or the caller's fp32 master weights as they are), the bf16 output it returns and the
# workspace rounded to bf16. So the backward reads rounded gate values, and its gradients are no
# longer the fp32 kernel's bit for bit. The budget, to first order in u = u16 = 2^-8:
# - every saved value v (the gates i, f, g, o, r, z in (0, 1) and g, n in (-1, 1), LSTM's c, GRU's
#   W_hn h + b_hn, the RNN pre-activation, each step's h, which is the next step's h_prev) is
#   off by at most u |v|;
# - a step's backward multiplies the incoming gradient by local derivatives that are products of
#   at most three saved factors (LSTM dc = dh o (1 - tanh^2 c) + dc' f, di = dc g i (1 - i); GRU
#   dn = dh (1 - z) (1 - n^2); RNN (1 - tanh^2)), and a weight gradient's term multiplies one more
#   (h_prev). A factor like 1 - s, s a gate, is off by at most u s <= u, i.e. u of its scale 1:
#   each local derivative, and so each step, carries at most 4u of its scale;
# - a gradient term that crosses k steps is a product of k such derivatives: at most 4 k u <=
#   4 T u of the term's size; the gradient sums such terms, so |g - ref| <= 4 T u sum |terms|;
# - plus the results' rounding to bf16 (u) and, per layer after the first, the bf16 output the
#   next layer reads (u, as in the forward): L + 1 more u over L layers.
# The terms carry random signs (random inputs and weights), so the test takes the tensor's largest
# reference gradient as the scale of the terms: max |g - ref| <= (4 T + L + 1) u max |ref|, the
# reference being the same module run in float64 on the same bf16 values (the fp64 kernels). The
# gates contract, so the errors do not compound: measured, the worst case is 1-2 u, whatever T.


def _rnn_budget(T, layers):
    return (4 * T + layers + 1) * U16


RNN_BF16 = {  # name: (class, kwargs, T, packed)
    "LSTM": ("LSTM", {}, 9, False),
    "LSTM packed": ("LSTM", {}, 9, True),
    "LSTM 2 layers bidirectional": ("LSTM", dict(num_layers=2, bidirectional=True), 7, False),
    "LSTM bidirectional packed": ("LSTM", dict(bidirectional=True), 7, True),
    "LSTM proj": ("LSTM", dict(proj_size=5), 6, False),
    "GRU": ("GRU", {}, 9, False),
    "GRU 2 layers bidirectional packed": ("GRU", dict(num_layers=2, bidirectional=True), 7, True),
    "RNN": ("RNN", {}, 9, False),
    "RNN relu bidirectional packed": ("RNN", dict(nonlinearity="relu", bidirectional=True), 7, True),
    "RNN 2 layers bidirectional": ("RNN", dict(num_layers=2, bidirectional=True), 5, False),
}
RNN_CELLS = ["LSTMCell", "GRUCell", "RNNCell"]


def _record_saved(fn):
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fn()
    return out, saved


def _assert_no_float32_copy(saved, own, what):
    """Every floating tensor saved is bf16, or one of the caller's own fp32 tensors (`own`)."""
    ptrs = {t.data_ptr() for t in own if t is not None and t.dtype == torch.float32}
    wide = [(t.dtype, list(t.shape)) for t in saved
            if t.is_floating_point() and t.dtype != BF and t.data_ptr() not in ptrs]
    assert not wide, f"{what}: saved {wide}"


def _rnn_case(name, dtype=BF, seed=0):
    from fusedops import nn as fnn

    cls, kw, T, packed = RNN_BF16[name]
    torch.manual_seed(seed)
    m = getattr(fnn, cls)(12, 16, **kw).to(dtype)
    dirs = 2 if kw.get("bidirectional") else 1
    P = kw.get("proj_size", 16)
    B = 5
    x = rand(T, B, 12, scale=1.0)
    h0 = rand(kw.get("num_layers", 1) * dirs, B, P, scale=0.5)
    hx = (h0, rand(kw.get("num_layers", 1) * dirs, B, 16, scale=0.5)) if cls == "LSTM" else h0
    lengths = torch.tensor([T, T - 1, T - 3, 2, 1]) if packed else None
    return m, x, hx, lengths, T, kw.get("num_layers", 1)


def _rnn_run(m, x, hx, lengths, dtype):
    """Runs module m on x (cast to dtype), hx (cast) with a fixed bf16-valued gradient of the
    output and of h_n; returns the saved tensors and the gradients of x, the states and the
    parameters."""
    x = x.to(dtype).requires_grad_()
    hx = tuple(h.to(dtype).requires_grad_() for h in hx) if isinstance(hx, tuple) else hx.to(dtype).requires_grad_()
    inp = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False) if lengths is not None else x
    (out, h_n), saved = _record_saved(lambda: m(inp, hx))
    o = out.data if lengths is not None else out
    h_last = h_n[0] if isinstance(h_n, tuple) else h_n
    gen = torch.Generator().manual_seed(1)
    go = torch.randn(o.shape, generator=gen).to(BF).to(dtype)
    gh = torch.randn(h_last.shape, generator=gen).to(BF).to(dtype)
    states = list(hx) if isinstance(hx, tuple) else [hx]
    grads = torch.autograd.grad([o, h_last], [x, *states, *m.parameters()], [go, gh])
    return saved, grads, [x, *states]


@pytest.mark.parametrize("name", list(RNN_BF16))
def test_recurrent_bf16_saves_bf16_and_grads_within_budget(name):
    m, x, hx, lengths, T, L = _rnn_case(name)
    m64 = type(m)(12, 16, **RNN_BF16[name][1]).double()
    m64.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
    saved, grads, leaves = _rnn_run(m, x, hx, lengths, BF)
    floating = [t for t in saved if t.is_floating_point()]
    assert floating and all(t.dtype == BF for t in floating), [(t.dtype, list(t.shape)) for t in floating]
    _, ref, _ = _rnn_run(m64, x, hx, lengths, torch.float64)
    names = ["input"] + ["h0", "c0"][:len(leaves) - 1] + [n for n, _ in m.named_parameters()]
    for n, g, r in zip(names, grads, ref):
        assert g.dtype == BF, n
        scale = r.abs().max().item()
        err = (g.double() - r).abs().max().item()
        assert err <= _rnn_budget(T, L) * scale, f"{name} grad {n}: {err:.3g} > budget {_rnn_budget(T, L) * scale:.3g}"


def _cell_case(cls, wdtype, seed=0):
    from fusedops import nn as fnn

    torch.manual_seed(seed)
    m = getattr(fnn, cls)(12, 16).to(wdtype)
    x, h = rand(5, 12, scale=1.0), rand(5, 16, scale=0.5)
    hx = (h, rand(5, 16, scale=0.5)) if cls == "LSTMCell" else h
    return m, x, hx


@pytest.mark.parametrize("wdtype", [BF, torch.float32], ids=["bf16-weights", "fp32-masters"])
@pytest.mark.parametrize("cls", RNN_CELLS)
def test_recurrent_cell_bf16_saves_bf16_and_grads_within_budget(cls, wdtype):
    m, x, hx = _cell_case(cls, wdtype)
    m64 = type(m)(12, 16).double()
    m64.load_state_dict({k: v.double() for k, v in m.state_dict().items()})

    def run(m, dtype):
        xs = x.to(dtype).requires_grad_()
        hs = tuple(h.to(dtype).requires_grad_() for h in hx) if isinstance(hx, tuple) else hx.to(dtype).requires_grad_()
        out, saved = _record_saved(lambda: m(xs, hs))
        outs = list(out) if isinstance(out, tuple) else [out]
        gen = torch.Generator().manual_seed(1)
        gs = [torch.randn(o.shape, generator=gen).to(BF).to(o.dtype) for o in outs]
        states = list(hs) if isinstance(hs, tuple) else [hs]
        return saved, outs, torch.autograd.grad(outs, [xs, *states, *m.parameters()], gs)

    saved, outs, grads = run(m, BF)
    assert all(o.dtype == BF for o in outs)
    _assert_no_float32_copy(saved, list(m.parameters()), cls)
    _, _, ref = run(m64, torch.float64)
    for g, r, t in zip(grads, ref, [x, *(hx if isinstance(hx, tuple) else [hx]), *m.parameters()]):
        assert g.dtype == t.dtype
        assert (g.double() - r).abs().max().item() <= _rnn_budget(1, 1) * r.abs().max().item(), cls


def test_recurrent_bf16_saved_bytes_halved():
    # an LSTM layer over bf16 saves its input, states, weights, output and the 5-wide workspace,
    # all in bf16: 2 bytes an element (the fp32 copies it saved before took 4)
    from fusedops import nn as fnn

    T, B, I, H = 6, 3, 8, 10
    m = fnn.LSTM(I, H).to(BF)
    x = rand(T, B, I).requires_grad_()
    _, saved = _record_saved(lambda: m(x))
    elements = T * B * I + 2 * B * H + 4 * H * (I + H) + 2 * 4 * H + T * B * H + T * B * 5 * H
    assert sum(t.numel() * t.element_size() for t in saved) == 2 * elements


@pytest.mark.parametrize("name", ["LSTM", "LSTM bf16", "LSTM packed", "LSTM proj bf16", "GRU bf16",
                                  "GRU bf16 x fp32 h", "GRU fp32 x bf16 h", "RNN relu packed",
                                  "LSTMCell bf16", "LSTMCell bf16 h fp32 c", "GRUCell fp32 x bf16 h",
                                  "RNNCell"])
def test_autocast_recurrent_saves_no_float32_copy(name):
    # under autocast the results keep torch's dtypes (test_autocast_recurrent_as_torch); what is
    # saved is the caller's own tensors as given, the returned output and a bf16 workspace
    from fusedops import nn as fnn

    cls, kw, make, extra = RNN_AUTOCAST[name]
    torch.manual_seed(0)
    m = getattr(fnn, cls)(6, 8, **kw)
    x = make()
    if isinstance(x, torch.nn.utils.rnn.PackedSequence):
        x.data.requires_grad_()
    else:
        x.requires_grad_()
    got = []
    saved = _saved_dtypes(lambda: got.append(m(x, *extra)))
    # (an fp32 result, as torch returns for an fp32 state, is saved as it is returned)
    own = [*m.parameters(), *_flat(x), *_flat(list(extra)), *_flat(got)]
    if _flat(x)[0].dtype == torch.float32 and not extra:
        # the zero initial states a module makes for an fp32 input are fp32, as torch's are
        own += [t for t in saved if t.dtype == torch.float32 and t.dim() <= 2 and not t.any()]
    _assert_no_float32_copy(saved, own, name)


def test_recurrent_float32_and_float64_keep_the_op_autograd():
    # fp32 and fp64 calls go straight to the op (its registered autograd), as before
    from fusedops import nn as fnn

    for dtype in (torch.float32, torch.float64):
        m = fnn.GRU(4, 5).to(dtype)
        out, _ = m(torch.randn(3, 2, 4, dtype=dtype))
        assert "Lowp" not in type(out.grad_fn).__name__ and "Lowp" not in out.grad_fn.name()
    m = fnn.GRU(4, 5).to(BF)
    out, _ = m(torch.randn(3, 2, 4).to(BF))
    assert "Lowp" in out.grad_fn.name()


def test_recurrent_bf16_double_backward():
    # create_graph differentiates the torch formulation in fp32 on the widened saved tensors
    from fusedops import nn as fnn

    torch.manual_seed(2)
    m = fnn.LSTM(6, 8).to(BF)
    x = rand(3, 2, 6, scale=1.0).requires_grad_()
    (g,) = torch.autograd.grad(m(x)[0].float().sum(), x, create_graph=True)
    (g1,) = torch.autograd.grad(m(x)[0].float().sum(), x)
    assert g.dtype == BF
    assert (g.double() - g1.double()).abs().max() <= _rnn_budget(3, 1) * g1.double().abs().max()
    (gw,) = torch.autograd.grad(g.float().square().sum(), m.weight_ih_l0)
    assert gw.dtype == BF and torch.isfinite(gw.float()).all() and gw.abs().max() > 0


def test_recurrent_bf16_compile():
    from fusedops import nn as fnn

    torch.manual_seed(4)
    m = fnn.LSTM(6, 8, num_layers=2).to(BF)
    x = rand(5, 3, 6, scale=1.0)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    with torch._dynamo.config.patch(allow_rnn=True):
        got, _ = compiled(x)
    want, _ = m(x)
    assert got.dtype == BF and torch.equal(got, want)
    got.float().sum().backward()
    g1 = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    want.float().sum().backward()
    for a, b in zip(g1, m.parameters()):
        assert torch.equal(a, b.grad)


# ---- optimizers on bf16 parameters -----------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda ps: fusedops.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    lambda ps: fusedops.optim.Adam(ps, lr=1e-2, amsgrad=True),
    lambda ps: fusedops.optim.SGD(ps, lr=1e-1, momentum=0.9, nesterov=True, weight_decay=1e-3),
], ids=["adamw", "adam-amsgrad", "sgd-nesterov"])
def test_optimizer_on_bf16_params(isa, make):
    import fusedops.optim  # noqa: F401

    torch.manual_seed(5)
    p = torch.randn(1000 + 7).to(BF).requires_grad_()
    p32 = p.detach().float().requires_grad_()  # the fp32 twin: the same update in fp32
    opt, opt32 = make([p]), make([p32])
    for _ in range(3):
        g = torch.randn(p.shape).to(BF)
        p.grad, p32.grad = g, g.float()
        opt.step()
        opt32.step()
        # fp32 state; each step's parameter is the fp32 update of the bf16 parameter, rounded
        # once; the twin keeps its unrounded value, so compare one step from the same point
        p32.data.copy_(p.detach().float())
        for k, v in opt.state[p].items():
            if k != "step":
                assert v.dtype == torch.float32, k
                opt32.state[p32][k].copy_(v)
    assert p.dtype == BF
    before = p.detach().clone()
    g = torch.randn(p.shape).to(BF)
    p.grad, p32.grad = g, g.float()
    opt.step()
    opt32.step()
    assert_bits(p.detach(), p32.detach(), "one step on a bf16 parameter")
    assert not torch.equal(before, p.detach())


def test_bf16_state_from_torch_is_widened_once():
    import fusedops.optim

    p = torch.randn(10).to(BF).requires_grad_()
    tp = torch.optim.AdamW([p], lr=1e-3)
    p.grad = torch.randn(10).to(BF)
    tp.step()  # torch keeps a bf16 parameter's state in bf16
    opt = fusedops.optim.AdamW([p], lr=1e-3)
    opt.load_state_dict(tp.state_dict())
    opt.step()
    assert opt.state[p]["exp_avg"].dtype == torch.float32


def test_clip_grad_norm_bf16():
    import fusedops.optim

    gs = [torch.randn(100).to(BF), torch.randn(37).to(BF)]
    ps = [torch.zeros(g.shape, dtype=BF, requires_grad=True) for g in gs]
    for p, g in zip(ps, gs):
        p.grad = g.clone()
    norm = fusedops.optim.clip_grad_norm_(ps, 1.0)
    want = torch.linalg.vector_norm(torch.cat([g.double() for g in gs]))
    assert norm.dtype == BF
    assert abs(norm.double().item() - want.item()) <= U16 * want.item()
    total = torch.linalg.vector_norm(torch.cat([p.grad.double() for p in ps])).item()
    assert abs(total - 1.0) <= 4 * U16


# ---- elementwise losses (widened to the fp32 kernels) ----------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_and_bce_in_bf16(reduction):
    x, y = rand(7, 13, scale=1.0), rand(7, 13, scale=1.0)
    for name, f in (("mse", lambda a, b: ops.mse_loss(a, b, reduction=reduction)),
                    ("bce", lambda a, b: ops.binary_cross_entropy_with_logits(a, b.abs(), reduction=reduction))):
        xr = x.clone().requires_grad_()
        loss = f(xr, y)
        assert loss.dtype == BF
        x32 = x.float().requires_grad_()
        loss32 = f(x32, y.float())
        assert_bits(loss, loss32, f"{name} {reduction}")
        g = torch.ones_like(loss)
        (gx,) = torch.autograd.grad(loss, xr, g)
        (gx32,) = torch.autograd.grad(loss32, x32, g.float())
        assert gx.dtype == BF
        assert_bits(gx, gx32, f"{name} grad {reduction}")
