"""The CUDA recurrent kernels (rnn_layer, rnn_layer_backward) against the CPU op: on the CUDA
simulator (`fusedops_sim`, CPU tensors) and on a GPU when one is present. Every mode, padded and
packed sequences in both directions, LSTM projections, edge shapes and every dtype; low
precision follows the error-budget rule of conftest.check_close, the budget being the error of
the plain-torch formulation (reference_rnn_layer) run in that dtype."""
import zlib

import pytest
import torch

import fusedops  # noqa: F401
from conftest import BACKENDS, DTYPES, assert_raises_named, check_close, dev, op
from fusedops.ops.rnn import reference_rnn_layer

cpu = torch.ops.fusedops
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}
LOWP = (torch.float16, torch.bfloat16)

# (mode, T, B, I, H, P, batch_sizes, reverse)
CASES = [
    ("rnn_tanh", 4, 3, 5, 7, 7, None, False),
    ("rnn_relu", 3, 2, 4, 9, 9, [2, 2, 1], True),
    ("lstm", 4, 3, 5, 7, 7, None, False),
    ("lstm", 4, 3, 6, 9, 9, [3, 2, 2, 1], True),
    ("lstm", 3, 2, 5, 8, 3, None, True),          # projection
    ("lstm", 4, 3, 4, 6, 4, [3, 3, 1, 1], False),  # projection, packed
    ("gru", 4, 3, 5, 7, 7, None, False),
    ("gru", 5, 4, 3, 10, 10, [4, 3, 3, 2, 1], True),
]


def _case_id(c):
    mode, T, B, I, H, P, bs, rev = c
    return f"{mode}-T{T}B{B}I{I}H{H}" + (f"P{P}" if P != H else "") + ("-packed" if bs else "") + ("-rev" if rev else "")


def _make(case, seed):
    mode, T, B, I, H, P, bs, rev = case
    torch.manual_seed(seed)
    G = GATES[mode]
    d = torch.float64
    batch_sizes = torch.tensor(bs) if bs else None
    x = torch.randn(sum(bs), I, dtype=d) if bs else torch.randn(T, B, I, dtype=d)
    hx = torch.randn(B, P, dtype=d)
    cx = torch.randn(B, H, dtype=d) if mode == "lstm" else None
    w_ih, w_hh = torch.randn(G * H, I, dtype=d) * 0.4, torch.randn(G * H, P, dtype=d) * 0.4
    b_ih, b_hh = torch.randn(G * H, dtype=d) * 0.5, torch.randn(G * H, dtype=d) * 0.5
    w_hr = torch.randn(P, H, dtype=d) * 0.4 if P != H else None
    return mode, [x, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr], batch_sizes, rev


def _to(ts, device, dtype):
    return [None if t is None else t.to(device, dtype) for t in ts]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_layer_forward_backward(backend, dtype, case):
    mode, ts, bs, rev = _make(case, zlib.crc32(_case_id(case).encode()) % 1000)
    lstm, proj = mode == "lstm", ts[7] is not None
    ref = cpu.rnn_layer(mode, *ts, bs, rev)
    go, ghy = torch.randn_like(ref[0]), torch.randn_like(ref[1])
    gcy = torch.randn_like(ref[2]) if lstm else None
    mask = [True, True, lstm, True, True, True, True, proj]
    ref_g = cpu.rnn_layer_backward(mode, go, ghy, gcy, *ts, bs, rev, ref[0], ref[3], mask)

    lowp_out, lowp_g = ref[:3], ref_g
    if dtype in LOWP:  # the plain-torch formulation in `dtype` on the CPU: the error budget
        leaves = [t.to(dtype).requires_grad_() if t is not None else None for t in ts]
        outs = reference_rnn_layer(mode, *leaves, bs, rev)
        loss = sum((o.float() * g.float()).sum() for o, g in zip(outs, (go, ghy, gcy)) if g is not None)
        grads = torch.autograd.grad(loss, [t for t in leaves if t is not None])
        it = iter(grads)
        full = [next(it) if t is not None else None for t in leaves]
        lowp_out = outs
        # grad order of rnn_layer_backward: input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr
        lowp_g = full

    d = dev(backend)
    ours = op(backend, "rnn_layer")(mode, *_to(ts, d, dtype), bs, rev)
    for name, o, r, lp in zip(("output", "hy", "cy"), ours, ref, lowp_out):
        if name == "cy" and not lstm:
            assert o.numel() == 0
            continue
        assert o.dtype == dtype and o.shape == r.shape
        check_close(o, r, lp, dtype, f"{mode} {name}")
    if dtype in (torch.float32, torch.float64):  # same workspace layout as the CPU op
        check_close(ours[3], ref[3], None, dtype, f"{mode} workspace")

    g = op(backend, "rnn_layer_backward")(mode, *_to([go, ghy, gcy], d, dtype), *_to(ts, d, dtype), bs, rev,
                                          ours[0], ours[3], mask)
    if mode == "rnn_relu" and dtype in LOWP:
        # Near a relu kink, rounding may switch a unit on or off, and the gradient through it
        # with it. The gradients are then judged given our forward's activation pattern: the
        # float64 backward from our saved tensors, with the budget of a float32 run of the same
        # rounded inputs.
        wide = [None if t is None else t.double() for t in (go, ghy, gcy, *ts, ours[0], ours[3])]
        ref_g = cpu.rnn_layer_backward(mode, *wide[:11], bs, rev, *wide[11:], mask)
        narrow = [None if t is None else t.to(dtype).float() for t in wide]
        lowp_g = [None if t is None else t.to(dtype)
                  for t in cpu.rnn_layer_backward(mode, *narrow[:11], bs, rev, *narrow[11:], mask)]
    names = ("grad_input", "grad_hx", "grad_cx", "grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_b_hh", "grad_w_hr")
    for name, want, o, r, lp in zip(names, mask, g, ref_g, lowp_g):
        if not want:
            assert o is None
            continue
        assert o.dtype == dtype and o.shape == r.shape
        check_close(o, r, lp, dtype, f"{mode} {name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", list(GATES))
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (0, 2, 3, 4), (3, 0, 2, 5), (2, 2, 33, 17), (1, 5, 3, 40)],
                         ids=lambda s: "x".join(map(str, s)))
def test_edge_shapes(backend, mode, shape):
    T, B, I, H = shape
    case = (mode, T, B, I, H, H, None, False)
    _, ts, _, _ = _make(case, T * 100 + H)
    lstm = mode == "lstm"
    ref = cpu.rnn_layer(mode, *_to(ts, "cpu", torch.float32), None, False)
    d = dev(backend)
    ours = op(backend, "rnn_layer")(mode, *_to(ts, d, torch.float32), None, False)
    for o, r in zip(ours, ref):
        assert o.shape == r.shape
        if r.numel():
            check_close(o, r.double(), None, torch.float32, f"{mode} {shape} forward")
    mask = [True, True, lstm, True, True, True, True, False]
    go, ghy = torch.randn_like(ref[0]), torch.randn_like(ref[1])
    gcy = torch.randn_like(ref[2]) if lstm else None
    ref_g = cpu.rnn_layer_backward(mode, go, ghy, gcy, *_to(ts, "cpu", torch.float32), None, False,
                                   ref[0], ref[3], mask)
    g = op(backend, "rnn_layer_backward")(mode, *_to([go, ghy, gcy], d, torch.float32),
                                          *_to(ts, d, torch.float32), None, False, ours[0], ours[3], mask)
    for o, r in zip(g, ref_g):
        assert (o is None) == (r is None)
        if o is not None:
            assert o.shape == r.shape
            if r.numel():
                check_close(o, r.double(), None, torch.float32, f"{mode} {shape} backward")


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_masks_and_missing_grads(backend):
    # Only some gradients asked for, no grad_output / grad_hy / grad_cy: the same as the CPU.
    mode, ts, bs, rev = _make(("lstm", 3, 2, 4, 5, 5, None, False), 7)
    ref = cpu.rnn_layer(mode, *ts, bs, rev)
    d = dev(backend)
    ours = op(backend, "rnn_layer")(mode, *_to(ts, d, torch.float64), bs, rev)
    for mask in ([True, False, False, False, False, False, False, False],
                 [False, False, True, False, True, False, True, False]):
        ref_g = cpu.rnn_layer_backward(mode, ref[0], None, None, *ts, bs, rev, ref[0], ref[3], mask)
        g = op(backend, "rnn_layer_backward")(mode, ours[0], None, None, *_to(ts, d, torch.float64), bs, rev,
                                              ours[0], ours[3], mask)
        for o, r, want in zip(g, ref_g, mask):
            assert (o is not None) == want and (r is not None) == want
            if want:
                check_close(o, r, None, torch.float64, "masked gradient")


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input(backend):
    mode, ts, bs, rev = _make(("gru", 3, 2, 4, 5, 5, None, False), 1)
    d = dev(backend)
    f = op(backend, "rnn_layer")
    x, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr = _to(ts, d, torch.float32)
    args = [x, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr]
    bad = [(4, w_hh.double(), TypeError, ["w_hh", "dtype"]),   # dtype mismatch
           (1, hx[:1], RuntimeError, ["hx", "shape"]),            # batch mismatch
           (0, x[..., :3], RuntimeError, ["input_size"]),         # wrong input size
           (0, x.int(), TypeError, ["input"])]                    # integer input
    for i, t, exc, words in bad:
        a = list(args)
        a[i] = t
        assert_raises_named(lambda: f(mode, *a, bs, rev), exc, words, "rnn_layer")
    assert_raises_named(lambda: f("lstmx", *args, bs, rev), RuntimeError, ["mode"], "rnn_layer")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_modules_on_gpu(cls):
    # The modules on CUDA tensors run the CUDA kernels; torch's module is the reference.
    torch.manual_seed(3)
    kw = dict(num_layers=2, bidirectional=True, batch_first=True)
    ref = getattr(torch.nn, cls)(5, 8, **kw).cuda().double()
    ours = getattr(fusedops.nn, cls)(5, 8, **kw).cuda().double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 6, 5, device="cuda", dtype=torch.float64)
    outs = []
    for m in (ours, ref):
        xi = x.clone().requires_grad_()
        y, _ = m(xi)
        y.pow(2).sum().backward()
        outs.append((y, xi.grad, [p.grad for p in m.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])
    for a, b in zip(outs[0][2], outs[1][2]):
        torch.testing.assert_close(a, b)
