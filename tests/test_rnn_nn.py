"""fusedops.nn.RNN / LSTM / GRU and the cells against torch's modules after load_state_dict:
outputs, final states and every gradient over layers, directions, batch_first, projections,
packed variable-length batches, unbatched input, given or omitted states; state_dict both
ways, dropout in training, torch.compile, and bad input."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence

import fusedops

pytestmark = pytest.mark.filterwarnings(
    "ignore:LSTM with projections is not supported with oneDNN",
    "ignore:dropout option adds dropout after all but last recurrent layer",
)

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
def test_cells(kind, batched, with_state):
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


def test_compile_fullgraph():
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


def test_bad_input():
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
