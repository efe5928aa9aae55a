"""Recurrent ops (rnn_layer, rnn_layer_backward, the cells) against torch: values and gradients
vs torch's RNN/LSTM/GRU layers and cells, vs the plain-torch formulation for packed and
reversed sequences, every instruction set, edge shapes, gradcheck in float64, opcheck,
torch.compile, and bad input. The modules (fusedops.nn.RNN, ...) are tested in test_rnn_nn.py,
the CUDA kernels on the simulator in test_rnn_cuda.py."""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_sequence

import fusedops
from conftest import assert_raises_named
from fusedops.ops.rnn import reference_rnn_layer

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
ops = torch.ops.fusedops
MODES = ("rnn_tanh", "rnn_relu", "lstm", "gru")
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def _params(mode, I, H, P=None, dtype=torch.float64, bias=True, grad=True):
    G = GATES[mode]
    P = P or H
    mk = lambda *s: (torch.randn(*s, dtype=dtype) * 0.5).requires_grad_(grad)
    w_ih, w_hh = mk(G * H, I), mk(G * H, P)
    b_ih, b_hh = (mk(G * H), mk(G * H)) if bias else (None, None)
    w_hr = mk(P, H) if P != H else None
    return w_ih, w_hh, b_ih, b_hh, w_hr


def _states(mode, B, H, P, dtype=torch.float64, grad=True):
    hx = torch.randn(B, P, dtype=dtype).requires_grad_(grad)
    cx = torch.randn(B, H, dtype=dtype).requires_grad_(grad) if mode == "lstm" else None
    return hx, cx


def _weighted_sum(outs):
    # A loss that weights every element differently, so any misplaced gradient shows.
    total = 0
    for o in outs:
        if o is not None and o.numel():
            total = total + (o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).reshape(o.shape)).sum()
    return total


def _compare(mode, x, hx, cx, params, batch_sizes, reverse, atol, rtol):
    w_ih, w_hh, b_ih, b_hh, w_hr = params
    args = (mode, x, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse)
    ours = fusedops.ops.rnn_layer(*args)
    ref = reference_rnn_layer(*args)
    for a, b, name in zip(ours, ref, ("output", "h_n", "c_n")):
        if b is None:
            assert a is None
            continue
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")
    leaves = [t for t in (x, hx, cx, *params) if t is not None and t.requires_grad]
    g1 = torch.autograd.grad(_weighted_sum(ours), leaves, allow_unused=True)
    g2 = torch.autograd.grad(_weighted_sum(ref), leaves, allow_unused=True)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


# ---- values and gradients against the torch formulation -------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_layer_matches_reference(mode, packed, reverse, isa):
    T, B, I, H = 5, 4, 7, 13
    params = _params(mode, I, H)
    hx, cx = _states(mode, B, H, H)
    if packed:
        batch_sizes = torch.tensor([4, 4, 3, 1, 1])
        x = torch.randn(int(batch_sizes.sum()), I, dtype=torch.float64, requires_grad=True)
    else:
        batch_sizes = None
        x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    _compare(mode, x, hx, cx, params, batch_sizes, reverse, 1e-10, 1e-10)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_lstm_projection_matches_reference(packed, reverse, isa):
    T, B, I, H, P = 4, 3, 5, 9, 4
    params = _params("lstm", I, H, P)
    hx, cx = _states("lstm", B, H, P)
    batch_sizes = torch.tensor([3, 2, 2, 1]) if packed else None
    x = torch.randn(int(batch_sizes.sum()) if packed else T, *([] if packed else [B]), I,
                    dtype=torch.float64, requires_grad=True)
    _compare("lstm", x, hx, cx, params, batch_sizes, reverse, 1e-10, 1e-10)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 3, 4, 8), (3, 1, 2, 17), (2, 2, 33, 31), (6, 5, 3, 16)],
                         ids=lambda s: "x".join(map(str, s)))
def test_edge_shapes_fp32(mode, shape, isa):
    # fp32 exercises the SIMD gate math (vector exp / tanh), tails included (H not a multiple of 8).
    T, B, I, H = shape
    params = _params(mode, I, H, dtype=torch.float32)
    hx, cx = _states(mode, B, H, H, dtype=torch.float32)
    x = torch.randn(T, B, I, requires_grad=True)
    _compare(mode, x, hx, cx, params, None, False, 2e-5, 2e-5)


@pytest.mark.parametrize("mode", MODES)
def test_no_bias_and_empty(mode):
    I, H, B = 3, 6, 2
    params = _params(mode, I, H, bias=False)
    hx, cx = _states(mode, B, H, H)
    _compare(mode, torch.randn(4, B, I, dtype=torch.float64, requires_grad=True), hx, cx, params, None,
             False, 1e-10, 1e-10)
    # zero steps: the output is empty and the state passes through
    out, hy, cy = fusedops.ops.rnn_layer(mode, torch.randn(0, B, I, dtype=torch.float64), hx, cx, *params)
    assert out.shape == (0, B, H)
    torch.testing.assert_close(hy, hx)
    if mode == "lstm":
        torch.testing.assert_close(cy, cx)
    # empty batch
    out, hy, _ = fusedops.ops.rnn_layer(mode, torch.randn(3, 0, I, dtype=torch.float64),
                                        torch.zeros(0, H, dtype=torch.float64),
                                        torch.zeros(0, H, dtype=torch.float64) if mode == "lstm" else None,
                                        *params)
    assert out.shape == (3, 0, H) and hy.shape == (0, H)


def test_non_contiguous_inputs():
    mode, T, B, I, H = "lstm", 4, 3, 6, 8
    params = _params(mode, I, H)
    hx, cx = _states(mode, B, H, H)
    x = torch.randn(B, T, I, dtype=torch.float64).transpose(0, 1).requires_grad_()  # batch_first data
    w_ih = params[0].detach().t().contiguous().t().requires_grad_()
    assert not x.is_contiguous()
    _compare(mode, x, hx, cx, (w_ih, *params[1:]), None, True, 1e-10, 1e-10)


# ---- against torch's own layers and cells ----------------------------------------------------


def _torch_layer(mode, I, H, P, params):
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(mode, torch.nn.RNN)
    kw = {"nonlinearity": mode[4:]} if mode.startswith("rnn") else {}
    if P != H:
        kw["proj_size"] = P
    m = cls(I, H, **kw)
    w_ih, w_hh, b_ih, b_hh, w_hr = params
    with torch.no_grad():
        m.weight_ih_l0.copy_(w_ih), m.weight_hh_l0.copy_(w_hh)
        m.bias_ih_l0.copy_(b_ih), m.bias_hh_l0.copy_(b_hh)
        if w_hr is not None:
            m.weight_hr_l0.copy_(w_hr)
    return m


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_layer_matches_torch_module(mode, packed):
    I, H, B = 10, 20, 5
    P = 7 if mode == "lstm" else H
    params = [p.detach().float() for p in _params(mode, I, H, P) if p is not None]
    w_hr = params[4] if P != H else None
    params = (*params[:4], w_hr)
    m = _torch_layer(mode, I, H, P, params)
    hx = torch.randn(B, P)
    cx = torch.randn(B, H) if mode == "lstm" else None
    if packed:
        seqs = [torch.randn(n, I) for n in (6, 5, 5, 2, 1)]
        seq = pack_sequence(seqs)
        x, batch_sizes = seq.data, seq.batch_sizes
    else:
        seq = x = torch.randn(6, B, I)
        batch_sizes = None
    want = m(seq, (hx[None], cx[None]) if mode == "lstm" else hx[None])
    out, hy, cy = fusedops.ops.rnn_layer(mode, x, hx, cx, *params, batch_sizes=batch_sizes)
    ref_out = want[0].data if packed else want[0]
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    if mode == "lstm":
        torch.testing.assert_close(hy, want[1][0][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cy, want[1][1][0], atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(hy, want[1][0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_cells_match_torch(cell, batched, with_state):
    I, H, B = 9, 11, 4
    mod = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}.get(cell)
    m = mod(I, H) if mod else torch.nn.RNNCell(I, H, nonlinearity=cell[4:])
    x = torch.randn(B, I) if batched else torch.randn(I)
    sshape = (B, H) if batched else (H,)
    args = (m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh)
    if cell == "lstm":
        hx = (torch.randn(sshape), torch.randn(sshape)) if with_state else None
        want = m(x, hx)
        got = fusedops.ops.lstm_cell(x, hx, *args)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        loss_ours, loss_ref = _weighted_sum(got), _weighted_sum(want)
    else:
        hx = torch.randn(sshape) if with_state else None
        want = m(x, hx)
        got = (fusedops.ops.gru_cell(x, hx, *args) if cell == "gru"
               else fusedops.ops.rnn_cell(x, hx, *args, nonlinearity=cell[4:]))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        loss_ours, loss_ref = _weighted_sum([got]), _weighted_sum([want])
    g1 = torch.autograd.grad(loss_ours, list(args))
    g2 = torch.autograd.grad(loss_ref, list(args))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ---- gradcheck, opcheck, compile -------------------------------------------------------------


@pytest.mark.parametrize("mode,variant", [(m, v) for m in MODES for v in ("padded", "packed-rev")]
                         + [("lstm", "proj")])
def test_gradcheck(mode, variant):
    I, H, B = 3, 4, 3
    P = 2 if variant == "proj" else H
    params = _params(mode, I, H, P)
    hx, cx = _states(mode, B, H, P)
    if variant == "packed-rev":
        bs, reverse = torch.tensor([3, 2, 1]), True
        x = torch.randn(6, I, dtype=torch.float64, requires_grad=True)
    else:
        bs, reverse = None, False
        x = torch.randn(3, B, I, dtype=torch.float64, requires_grad=True)

    def fn(x, hx, *rest):
        cx = rest[0] if mode == "lstm" else None
        w = rest[1:] if mode == "lstm" else rest
        w_hr = w[4] if P != H else None
        out = fusedops.ops.rnn_layer(mode, x, hx, cx, *w[:4], w_hr, bs, reverse)
        return tuple(o for o in out if o is not None)

    inputs = (x, hx, *([cx] if mode == "lstm" else []), *[p for p in params if p is not None])
    assert torch.autograd.gradcheck(fn, inputs)


def test_gradgradcheck():
    mode, I, H, B = "gru", 2, 3, 2
    params = [p for p in _params(mode, I, H) if p is not None]
    hx, _ = _states(mode, B, H, H)
    x = torch.randn(2, B, I, dtype=torch.float64, requires_grad=True)
    fn = lambda x, hx, *w: fusedops.ops.rnn_layer(mode, x, hx, None, *w)[0]
    assert torch.autograd.gradgradcheck(fn, (x, hx, *params))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_opcheck(mode, packed):
    I, H, B = 3, 5, 3
    P = 2 if mode == "lstm" else H
    w_ih, w_hh, b_ih, b_hh, w_hr = [p.detach().float().requires_grad_() if p is not None else None
                                   for p in _params(mode, I, H, P)]
    hx, cx = _states(mode, B, H, P, dtype=torch.float32)
    bs = torch.tensor([3, 3, 1]) if packed else None
    x = torch.randn(7, I) if packed else torch.randn(3, B, I)
    x.requires_grad_()
    args = (mode, x, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, bs, True)
    torch.library.opcheck(ops.rnn_layer.default, args)
    out, hy, cy, ws = ops.rnn_layer(*args)
    d = lambda t: t.detach() if t is not None else None
    torch.library.opcheck(
        ops.rnn_layer_backward.default,
        (mode, torch.randn_like(out), torch.randn_like(hy), torch.randn_like(cy) if mode == "lstm" else None,
         d(x), d(hx), d(cx), d(w_ih), d(w_hh), d(b_ih), d(b_hh), d(w_hr), bs, True, out.detach(), ws,
         [True, True, mode == "lstm", True, True, True, True, w_hr is not None]),
    )


def test_compile_fullgraph():
    I, H, B = 6, 8, 3
    w_ih, w_hh, b_ih, b_hh, _ = [p.detach().float().requires_grad_() if p is not None else None
                                for p in _params("lstm", I, H)]

    def fn(x, h, c):
        out, hy, cy = fusedops.ops.rnn_layer("lstm", x, h, c, w_ih, w_hh, b_ih, b_hh)
        return out.sum() + hy.sum() + cy.sum()

    x, h, c = torch.randn(5, B, I), torch.randn(B, H), torch.randn(B, H)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    got = compiled(x, h, c)
    g1 = torch.autograd.grad(got, (w_ih, w_hh))
    want = fn(x, h, c)
    g2 = torch.autograd.grad(want, (w_ih, w_hh))
    torch.testing.assert_close(got, want)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_threads_agree():
    # The result must not depend on the thread count beyond rounding of the bias sums.
    I, H, B = 32, 64, 16
    params = [p.detach().float() for p in _params("lstm", I, H) if p is not None]
    x, (hx, cx) = torch.randn(8, B, I), _states("lstm", B, H, H, dtype=torch.float32, grad=False)
    outs = []
    for n in (1, 2):
        torch.set_num_threads(n)
        outs.append(fusedops.ops.rnn_layer("lstm", x, hx, cx, *params))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


# ---- bad input ------------------------------------------------------------------------------


def test_size_overflow_errors():
    """Sizes that would wrap int64 are refused: batch_sizes of four times 2^62 (their sum wrapped
    to 0, the rows of an empty input) and an LSTM's workspace row, 5 * hidden_size, for a
    hidden_size whose 4 gates still fit (the weights are empty)."""
    assert_raises_named(lambda: ops.rnn_layer("rnn_tanh", torch.empty(0, 3), torch.empty(1, 2), None,
                                              torch.empty(2, 3), torch.empty(2, 2), batch_sizes=torch.tensor([2**62] * 4)),
                        RuntimeError, ["batch_sizes", "overflow"], "rnn_layer")
    H = 2 * 10**18
    assert_raises_named(lambda: ops.rnn_layer("lstm", torch.empty(1, 0, 0), torch.empty(0, 0), torch.empty(0, H),
                                              torch.empty(4 * H, 0), torch.empty(4 * H, 0), w_hr=torch.empty(0, H)),
                        RuntimeError, ["workspace", "overflows"], "rnn_layer")


def test_bad_input():
    I, H, B = 3, 4, 2
    w_ih, w_hh, b_ih, b_hh, _ = [p.detach().float() if p is not None else None for p in _params("lstm", I, H)]
    x, hx, cx = torch.randn(5, B, I), torch.randn(B, H), torch.randn(B, H)
    call = lambda *a, **k: ops.rnn_layer(*a, **k)
    op = "rnn_layer"
    assert_raises_named(lambda: call("lstmx", x, hx, cx, w_ih, w_hh), RuntimeError, ["mode"], op)
    assert_raises_named(lambda: call("lstm", x[0], hx, cx, w_ih, w_hh), RuntimeError, ["input", "3-D"], op)
    assert_raises_named(lambda: call("lstm", torch.randn(5, B, I + 1), hx, cx, w_ih, w_hh), RuntimeError,
                        ["input_size", str(I)], op)
    assert_raises_named(lambda: call("lstm", x, torch.randn(B + 1, H), cx, w_ih, w_hh), RuntimeError,
                        ["hx", f"[{B}, {H}]"], op)
    assert_raises_named(lambda: call("lstm", x, hx, None, w_ih, w_hh), RuntimeError, ["cx", "required"], op)
    assert_raises_named(lambda: call("lstm", x, hx, torch.randn(B, H + 1), w_ih, w_hh), RuntimeError,
                        ["cx", f"[{B}, {H}]"], op)
    assert_raises_named(lambda: call("gru", x, hx, cx, w_ih[:3 * H], w_hh[:3 * H]), RuntimeError,
                        ["cx", "lstm"], op)
    assert_raises_named(lambda: call("gru", x, hx, None, w_ih, w_hh), RuntimeError, ["w_hh", "3"], op)
    assert_raises_named(lambda: call("lstm", x, hx, cx, w_ih, w_hh, b_ih[:-1]), RuntimeError, ["b_ih"], op)
    assert_raises_named(lambda: call("gru", x, hx, None, w_ih[:3 * H], w_hh[:3 * H], w_hr=torch.randn(2, H)),
                        RuntimeError, ["w_hr", "lstm"], op)
    assert_raises_named(lambda: call("lstm", x.double(), hx, cx, w_ih, w_hh), TypeError, ["hx", "dtype"], op)
    assert_raises_named(lambda: call("lstm", x.int(), hx.int(), cx.int(), w_ih.int(), w_hh.int()), TypeError,
                        ["input", "float32"], op)
    packed = torch.randn(6, I)
    for bs, words in ((torch.tensor([2, 3, 1]), ["non-increasing"]), (torch.tensor([2, 2, 1]), ["sum"]),
                      (torch.tensor([2, 2, 2], dtype=torch.int32), ["int64"]),
                      (torch.tensor([2, 2, 2, 0]), ["positive"])):
        assert_raises_named(lambda: call("lstm", packed, hx, cx, w_ih, w_hh, batch_sizes=bs), RuntimeError,
                            words, op)
    assert_raises_named(lambda: call("lstm", x, hx, cx, w_ih, w_hh, batch_sizes=torch.tensor([2])),
                        RuntimeError, ["packed", "2-D"], op)
    # the cells' own checks
    assert_raises_named(lambda: fusedops.ops.lstm_cell(torch.randn(2, 2, I), None, w_ih, w_hh), ValueError,
                        ["1-D or 2-D"], "lstm_cell")
    assert_raises_named(lambda: fusedops.ops.gru_cell(torch.randn(B, I), torch.randn(H), w_ih[:3 * H],
                                                      w_hh[:3 * H]), ValueError, ["hidden", "2-D"], "gru_cell")
    assert_raises_named(lambda: fusedops.ops.rnn_cell(torch.randn(B, I), None, w_ih[:H], w_hh[:H],
                                                      nonlinearity="sigmoid"), ValueError, ["nonlinearity"],
                        "rnn_cell")


def test_backward_bad_input():
    I, H, B = 3, 4, 2
    w_ih, w_hh, b_ih, b_hh, _ = [p.detach().float() if p is not None else None for p in _params("gru", I, H)]
    x, hx = torch.randn(5, B, I), torch.randn(B, H)
    out, hy, cy, ws = ops.rnn_layer("gru", x, hx, None, w_ih, w_hh, b_ih, b_hh)
    mask = [True, True, False, True, True, False, False, False]
    op = "rnn_layer_backward"
    assert_raises_named(lambda: ops.rnn_layer_backward("gru", out[:2], None, None, x, hx, None, w_ih, w_hh, b_ih,
                                                       b_hh, None, None, False, out, ws, mask),
                        RuntimeError, ["grad_output"], op)
    assert_raises_named(lambda: ops.rnn_layer_backward("gru", out, None, None, x, hx, None, w_ih, w_hh, b_ih,
                                                       b_hh, None, None, False, out, ws[:, :3], mask),
                        RuntimeError, ["workspace"], op)
    mask[7] = True
    assert_raises_named(lambda: ops.rnn_layer_backward("gru", out, None, None, x, hx, None, w_ih, w_hh, b_ih,
                                                       b_hh, None, None, False, out, ws, mask),
                        RuntimeError, ["w_hr"], op)
