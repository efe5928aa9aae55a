"""Recurrent ops (rnn_layer, rnn_layer_backward, the cells) against torch: values and gradients
vs torch's RNN/LSTM/GRU layers and cells, vs the plain-torch formulation for packed and
reversed sequences, every instruction set, edge shapes, gradcheck in float64, opcheck,
torch.compile, and bad input. Then the modules (fusedops.nn.RNN / LSTM / GRU and the cells)
against torch's after load_state_dict, and the CUDA kernels on the simulator (and a GPU when
present) against the CPU op."""
import zlib

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence

import fusedops
from conftest import BACKENDS, assert_raises_named, check_close, dev, op
from conftest import DTYPES as CUDA_DTYPES
from fusedops.ops.rnn import reference_rnn_layer

pytestmark = pytest.mark.filterwarnings(
    "ignore:LSTM with projections is not supported with oneDNN",
    "ignore:dropout option adds dropout after all but last recurrent layer",
)
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


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("wrt", ["all", "weights"])
@pytest.mark.parametrize("loss_of", ["all", "h_n"])
def test_eager_path_matches_registered_autograd(mode, wrt, loss_of):
    """fusedops.ops.rnn_layer (and the cells) run eagerly through their own autograd.Function
    over the op below autograd (fusedops.ops.rnn._RnnLayerFn); torch.ops.fusedops.rnn_layer
    goes through the formula registered with torch.library, which torch.compile and opcheck
    see. Both give the same bits: outputs, gradients (all inputs, or the weights only; of a loss
    of every output, or of h_n alone, whose other output gradients stay None) and second
    derivatives."""
    I, H, B = 3, 5, 2
    P = 4 if mode == "lstm" else H
    w = list(_params(mode, I, H, P))
    hx, cx = _states(mode, B, H, P, grad=wrt == "all")
    x = torch.randn(3, B, I, dtype=torch.float64, requires_grad=wrt == "all")
    leaves = [t for t in (x, hx, cx, *w) if t is not None and t.requires_grad]
    results = []
    for call in (fusedops.ops.rnn_layer, ops.rnn_layer):
        out, hy, cy = call(mode, x, hx, cx, *w, None, False)[:3]
        outs = [out, hy] + ([cy] if mode == "lstm" else [])
        loss = _weighted_sum(outs if loss_of == "all" else [hy])
        grads = torch.autograd.grad(loss, leaves, retain_graph=True)
        first = torch.autograd.grad(loss, leaves, create_graph=True)
        second = torch.autograd.grad(sum((g * g).sum() for g in first), leaves, allow_unused=True)
        results.append((outs, grads, second))
    for a, b in zip(*results):
        for u, v in zip(a, b):
            assert (u is None) == (v is None)
            if u is not None:
                assert torch.equal(u, v)


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

# ---- the modules: fusedops.nn.RNN / LSTM / GRU and the cells against torch's modules after
# load_state_dict: outputs, final states and every gradient over layers, directions, batch_first,
# projections, packed variable-length batches, unbatched input, given or omitted states.

KINDS = {"rnn": (torch.nn.RNN, fusedops.nn.RNN), "lstm": (torch.nn.LSTM, fusedops.nn.LSTM),
         "gru": (torch.nn.GRU, fusedops.nn.GRU)}


def _pair(kind, *args, dtype=torch.float64, **kw):
    theirs_cls, ours_cls = KINDS[kind]
    theirs = theirs_cls(*args, dtype=dtype, **kw)
    ours = ours_cls(*args, dtype=dtype, **kw)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _flat(out):
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        return [out.data]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    return [out]


def _fresh_args(kind, x, h, c, with_state):
    """A callable giving fresh leaf copies of (input, state) for each module under comparison."""
    def args():
        xs = x.clone().requires_grad_()
        if not with_state:
            return (xs,)
        hs, cs = h.clone().requires_grad_(), c.clone().requires_grad_()
        return (xs, (hs, cs)) if kind == "lstm" else (xs, hs)
    return args


def _check(ours, theirs, make_args, tol=1e-9):
    a1, a2 = make_args(), make_args()
    o1, o2 = ours(*a1), theirs(*a2)
    f1, f2 = _flat(o1), _flat(o2)
    assert len(f1) == len(f2)
    for x, y in zip(f1, f2):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, atol=tol, rtol=tol)
    weights = [torch.linspace(-1, 1, t.numel(), dtype=t.dtype).reshape(t.shape) for t in f2]
    l1 = sum((x * w).sum() for x, w in zip(f1, weights))
    l2 = sum((y * w).sum() for y, w in zip(f2, weights))
    leaves1 = list(ours.parameters()) + [t for t in _flat(a1) if t.requires_grad]
    leaves2 = list(theirs.parameters()) + [t for t in _flat(a2) if t.requires_grad]
    g1 = torch.autograd.grad(l1, leaves1, allow_unused=True)
    g2 = torch.autograd.grad(l2, leaves2, allow_unused=True)
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y, atol=tol, rtol=tol)


CONFIGS = [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=3, batch_first=True, dropout=0.3),
    dict(num_layers=2, bias=False, bidirectional=True, batch_first=True),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("with_state", [False, True])
def test_padded_matches_torch(kind, cfg, with_state):
    I, H, T, B = 5, 7, 6, 3
    ours, theirs = _pair(kind, I, H, **cfg)
    ours.eval(), theirs.eval()
    D = 2 if cfg.get("bidirectional") else 1
    shape = (B, T, I) if cfg.get("batch_first") else (T, B, I)
    torch.manual_seed(1)
    x = torch.randn(*shape, dtype=torch.float64)
    h = torch.randn(cfg["num_layers"] * D, B, H, dtype=torch.float64)
    c = torch.randn(cfg["num_layers"] * D, B, H, dtype=torch.float64)

    _check(ours, theirs, _fresh_args(kind, x, h, c, with_state))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_lstm_projection(bidirectional, layers):
    ours, theirs = _pair("lstm", 4, 9, num_layers=layers, proj_size=3, bidirectional=bidirectional)
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    D = 2 if bidirectional else 1
    h, c = torch.randn(layers * D, 2, 3, dtype=torch.float64), torch.randn(layers * D, 2, 9, dtype=torch.float64)
    _check(ours, theirs, lambda: (x.clone().requires_grad_(),
                                  (h.clone().requires_grad_(), c.clone().requires_grad_())))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_matches_torch(kind, enforce_sorted, bidirectional):
    I, H = 3, 6
    ours, theirs = _pair(kind, I, H, num_layers=2, bidirectional=bidirectional)
    lengths = [7, 5, 5, 2, 1] if enforce_sorted else [2, 7, 1, 5, 5]
    seqs = [torch.randn(n, I, dtype=torch.float64) for n in lengths]
    D = 2 if bidirectional else 1
    h = torch.randn(2 * D, len(lengths), H, dtype=torch.float64)
    c = torch.randn(2 * D, len(lengths), H, dtype=torch.float64)

    def args():
        leaves = [s.clone().requires_grad_() for s in seqs]
        packed = pack_sequence(leaves, enforce_sorted=enforce_sorted)
        hs, cs = h.clone().requires_grad_(), c.clone().requires_grad_()
        args.leaves = leaves
        return (packed, (hs, cs)) if kind == "lstm" else (packed, hs)

    a1 = args()
    l1 = args.leaves
    a2 = args()
    l2 = args.leaves
    o1, o2 = ours(*a1), theirs(*a2)
    assert isinstance(o1[0], torch.nn.utils.rnn.PackedSequence)
    torch.testing.assert_close(o1[0].batch_sizes, o2[0].batch_sizes)
    f1, f2 = _flat(o1), _flat(o2)
    for x, y in zip(f1, f2):
        torch.testing.assert_close(x, y, atol=1e-9, rtol=1e-9)
    w = [torch.randn_like(t) for t in f2]
    g1 = torch.autograd.grad(sum((x * v).sum() for x, v in zip(f1, w)), l1 + list(_flat(a1[1:])) + list(ours.parameters()))
    g2 = torch.autograd.grad(sum((x * v).sum() for x, v in zip(f2, w)), l2 + list(_flat(a2[1:])) + list(theirs.parameters()))
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y, atol=1e-9, rtol=1e-9)


def test_packed_padded_batch_first_fp32():
    ours, theirs = _pair("lstm", 8, 16, num_layers=2, batch_first=True, dtype=torch.float32)
    x = torch.randn(4, 9, 8)
    lengths = torch.tensor([9, 3, 6, 1])
    p1 = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    o1, (h1, c1) = ours(p1)
    o2, (h2, c2) = theirs(p1)
    torch.testing.assert_close(o1.data, o2.data, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h1, h2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c1, c2, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_and_edges(kind):
    ours, theirs = _pair(kind, 3, 13, num_layers=2, bidirectional=True)
    # unbatched, sequence length 1, batch 1, hidden size 13 (not a multiple of 8)
    _check(ours, theirs, lambda: (torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_(),))
    _check(ours, theirs, lambda: (torch.randn(1, 1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).requires_grad_(),))


def test_fp32_lstm_matches_torch():
    ours, theirs = _pair("lstm", 32, 48, num_layers=2, dtype=torch.float32)
    x = torch.randn(10, 4, 32)
    o1, (h1, c1) = ours(x)
    o2, (h2, c2) = theirs(x)
    for a, b in ((o1, o2), (h1, h2), (c1, c2)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_module_cells(kind, batched, with_state):
    I, H = 5, 9
    if kind.startswith("rnn"):
        theirs = torch.nn.RNNCell(I, H, nonlinearity=kind[4:], dtype=torch.float64)
        ours = fusedops.nn.RNNCell(I, H, nonlinearity=kind[4:], dtype=torch.float64)
    else:
        theirs = getattr(torch.nn, kind.upper() + "Cell")(I, H, dtype=torch.float64)
        ours = getattr(fusedops.nn, kind.upper() + "Cell")(I, H, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    g = torch.Generator().manual_seed(4)
    x = torch.randn(*((3, I) if batched else (I,)), dtype=torch.float64, generator=g)
    sshape = (3, H) if batched else (H,)
    h, c = torch.randn(sshape, dtype=torch.float64, generator=g), torch.randn(sshape, dtype=torch.float64, generator=g)

    _check(ours, theirs, _fresh_args(kind, x, h, c, with_state))


def test_state_dict_and_repr_match_torch():
    for ours_cls, theirs_cls, kw in ((fusedops.nn.LSTM, torch.nn.LSTM, dict(num_layers=2, bidirectional=True, proj_size=3)),
                                     (fusedops.nn.GRU, torch.nn.GRU, dict(bias=False, batch_first=True)),
                                     (fusedops.nn.RNN, torch.nn.RNN, dict(nonlinearity="relu", num_layers=2))):
        torch.manual_seed(5)
        ours = ours_cls(4, 6, **kw)
        torch.manual_seed(5)
        theirs = theirs_cls(4, 6, **kw)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()):
            torch.testing.assert_close(a, b)  # same init from the same seed
        assert repr(ours).split("(", 1)[1] == repr(theirs).split("(", 1)[1]
        theirs.load_state_dict(ours.state_dict())
        assert isinstance(ours, theirs_cls)


def test_dropout_in_training():
    m = fusedops.nn.LSTM(4, 8, num_layers=3, dropout=0.5)
    x = torch.randn(5, 2, 4)
    m.eval()
    e1, e2 = m(x)[0], m(x)[0]
    torch.testing.assert_close(e1, e2)
    m.train()
    torch.manual_seed(7)
    t1 = m(x)[0]
    torch.manual_seed(7)
    t2 = m(x)[0]
    torch.testing.assert_close(t1, t2)  # reproducible under the seed
    assert not torch.allclose(t1, e1)  # and actually dropping


def test_module_compile_fullgraph():
    m = fusedops.nn.LSTM(6, 8, num_layers=2, batch_first=True)
    x = torch.randn(3, 5, 6)
    # Dynamo refuses every torch.nn.RNNBase (our modules subclass it) unless allowed: with the
    # flag it traces our forward, whose ops are registered custom ops.
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    with torch._dynamo.config.patch(allow_rnn=True):
        out, (h, c) = compiled(x)
    ref, (hr, cr) = m(x)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(h, hr)
    (out.sum() + h.sum()).backward()
    assert m.weight_hh_l1.grad is not None and torch.isfinite(m.weight_hh_l1.grad).all()


def test_module_bad_input():
    m = fusedops.nn.LSTM(4, 8, num_layers=2)
    with pytest.raises(RuntimeError, match=r"fusedops.nn.LSTM: input.size\(-1\) must be equal to input_size"):
        m(torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="fusedops.nn.LSTM: expected input to be 2-D"):
        m(torch.randn(5, 2, 3, 4))
    with pytest.raises(RuntimeError, match=r"fusedops.nn.LSTM: expected hidden state h_0 of shape \[2, 2, 8\]"):
        m(torch.randn(5, 2, 4), (torch.randn(2, 3, 8), torch.randn(2, 3, 8)))
    with pytest.raises(RuntimeError, match="fusedops.nn.LSTM: hx must be a tuple"):
        m(torch.randn(5, 2, 4), torch.randn(2, 2, 8))
    g = fusedops.nn.GRU(4, 8)
    with pytest.raises(RuntimeError, match="fusedops.nn.GRU: for unbatched 2-D input, hx should be 2-D"):
        g(torch.randn(5, 4), torch.randn(1, 1, 8))
    cell = fusedops.nn.GRUCell(4, 8)
    with pytest.raises(RuntimeError, match="fusedops.rnn_layer"):
        cell(torch.randn(3, 4), torch.randn(2, 8))  # mismatched batch
    with pytest.raises(RuntimeError, match="fusedops.rnn_layer"):
        cell(torch.randn(3, 5))  # wrong input size

# ---- the CUDA recurrent kernels (rnn_layer, rnn_layer_backward) against the CPU op: on the CUDA
# simulator (`fusedops_sim`, CPU tensors) and on a GPU when one is present; low precision follows
# the error-budget rule of conftest.check_close, the budget being the error of the plain-torch
# formulation (reference_rnn_layer) run in that dtype.

cpu = torch.ops.fusedops
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
@pytest.mark.parametrize("dtype", CUDA_DTYPES)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_cuda_layer_forward_backward(backend, dtype, case):
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
def test_cuda_edge_shapes(backend, mode, shape):
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
def test_cuda_grad_masks_and_missing_grads(backend):
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
def test_cuda_bad_input(backend):
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
