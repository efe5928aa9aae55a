"""fusedops.ops.scaled_dot_product_attention (flash attention, CPU) against
torch.nn.functional.scaled_dot_product_attention: values and gradients over odd sequence
lengths, head dims, L != S, causal, bool/float masks (fully masked rows), GQA, broadcast and
non-contiguous operands, every instruction set; dropout statistics and reproducibility;
gradcheck, opcheck, torch.compile; bad input.

fp32 results follow the error-budget rule against float64 truth (torch in float64): our error
may be at most twice torch's own fp32 error plus a few ulps.
"""
import pytest
import torch
import torch.nn.functional as F

import fusedops
from conftest import assert_raises_named, assert_within_budget
from fusedops.ops.attention import reference_attention

ops = torch.ops.fusedops
sdpa = fusedops.ops.scaled_dot_product_attention


def _inputs(shape_q, shape_k, shape_v, dtype=torch.float32, requires_grad=True):
    q = torch.randn(shape_q, dtype=dtype)
    k = torch.randn(shape_k, dtype=dtype)
    v = torch.randn(shape_v, dtype=dtype)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


def _compare(q, k, v, what, floor_ulps=64, grads=True, **kw):
    """Ours (fp32) vs torch fp32 and float64 truth: output and the three gradients."""
    out = sdpa(q, k, v, **kw)
    theirs = F.scaled_dot_product_attention(q, k, v, **kw)
    q64, k64, v64 = [t.detach().double().requires_grad_(grads) for t in (q, k, v)]
    kw64 = dict(kw)
    if kw.get("attn_mask") is not None and kw["attn_mask"].is_floating_point():
        kw64["attn_mask"] = kw["attn_mask"].double()
    truth = F.scaled_dot_product_attention(q64, k64, v64, **kw64)
    assert out.shape == theirs.shape and out.is_contiguous()
    assert_within_budget(out.detach(), theirs.detach(), truth.detach(), f"{what}: output", floor_ulps)
    if not grads:
        return
    g = torch.randn_like(out)
    ours_g = torch.autograd.grad(out, (q, k, v), g)
    their_g = torch.autograd.grad(theirs, (q, k, v), g)
    truth_g = torch.autograd.grad(truth, (q64, k64, v64), g.double())
    # dQ and dK are sums of P (dP - D): zero by cancellation where a row sees one key (S = 1),
    # rounded at the scale of the gradients that do not cancel (dV).
    scale = max((t.abs().max().item() for t in truth_g if t.numel()), default=0.0)
    for name, a, b, c in zip("qkv", ours_g, their_g, truth_g):
        assert a.shape == c.shape, f"{what}: d{name} shape"
        assert_within_budget(a, b, c, f"{what}: d{name}", floor_ulps, scale=scale)


# ---- values and gradients -------------------------------------------------------------------

SHAPES = [  # (B, H, L, S, E, Ev)
    (1, 1, 1, 1, 8, 8),
    (2, 3, 2, 2, 16, 16),
    (1, 2, 17, 17, 64, 64),
    (2, 2, 97, 97, 32, 32),
    (1, 2, 128, 128, 64, 64),
    (1, 1, 255, 255, 64, 64),
    (1, 1, 257, 257, 128, 128),
    (2, 2, 33, 70, 64, 64),   # L < S (cross-attention)
    (1, 2, 70, 33, 64, 48),   # L > S, Ev != E
    (1, 1, 5, 300, 8, 24),
]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_values_and_grads(isa, shape, causal):
    B, H, L, S, E, Ev = shape
    q, k, v = _inputs((B, H, L, E), (B, H, S, E), (B, H, S, Ev))
    _compare(q, k, v, f"{shape} causal={causal}", is_causal=causal)


@pytest.mark.parametrize("E", [1, 3, 8, 32, 64, 80, 96, 112, 128, 256])
def test_head_dims(E):
    q, k, v = _inputs((1, 2, 41, E), (1, 2, 37, E), (1, 2, 37, E))
    _compare(q, k, v, f"E={E}")
    _compare(q, k, v, f"E={E} causal", is_causal=True)


@pytest.mark.parametrize("Ev", [1, 7, 80, 200])
def test_value_dims(Ev):
    q, k, v = _inputs((2, 1, 23, 16), (2, 1, 51, 16), (2, 1, 51, Ev))
    _compare(q, k, v, f"Ev={Ev}", is_causal=True)


def test_long_sequence_few_heads():
    q, k, v = _inputs((1, 1, 1023, 64), (1, 1, 1023, 64), (1, 1, 1023, 64))
    _compare(q, k, v, "T=1023 causal", is_causal=True)


@pytest.mark.slow
@pytest.mark.parametrize("causal", [False, True])
def test_long_sequence_slow(causal):
    q, k, v = _inputs((1, 2, 1023, 64), (1, 2, 1023, 64), (1, 2, 1023, 64))
    _compare(q, k, v, f"T=1023 causal={causal}", is_causal=causal)
    q, k, v = _inputs((1, 1, 2048, 128), (1, 1, 2048, 128), (1, 1, 2048, 128))
    _compare(q, k, v, f"T=2048 D=128 causal={causal}", is_causal=causal)


def test_scale():
    q, k, v = _inputs((2, 2, 19, 16), (2, 2, 21, 16), (2, 2, 21, 16))
    _compare(q, k, v, "scale=0.3", scale=0.3)
    _compare(q, k, v, "scale=1.7 causal", scale=1.7, is_causal=True)


@pytest.mark.parametrize("dims", [2, 3, 5])
def test_other_ranks(dims):
    lead = [(), (3,), (2, 2, 3)][[2, 3, 5].index(dims)]
    q, k, v = _inputs((*lead, 13, 16), (*lead, 11, 16), (*lead, 11, 8))
    _compare(q, k, v, f"{dims}-D")


# ---- masks ----------------------------------------------------------------------------------

MASK_SHAPES = [(29, 31), (2, 1, 29, 31), (1, 3, 1, 31), (1, 31), (2, 3, 29, 31)]


@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("mshape", MASK_SHAPES, ids=str)
def test_masks(isa, kind, mshape):
    q, k, v = _inputs((2, 3, 29, 16), (2, 3, 31, 16), (2, 3, 31, 16))
    if kind == "bool":
        mask = torch.rand(mshape) > 0.3
        mask[..., 0] = True  # torch's math path gives NaN for fully masked rows: keep one key
    else:
        mask = torch.randn(mshape) * 2
    _compare(q, k, v, f"{kind} mask {mshape}", attn_mask=mask)


def test_float_mask_with_neg_inf():
    q, k, v = _inputs((1, 2, 40, 16), (1, 2, 50, 16), (1, 2, 50, 16))
    mask = torch.randn(40, 50)
    mask[torch.rand(40, 50) > 0.5] = float("-inf")
    mask[:, 3] = 0.0
    _compare(q, k, v, "float mask with -inf", attn_mask=mask)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_fully_masked_rows_give_zeros(isa, kind):
    q, k, v = _inputs((2, 2, 60, 16), (2, 2, 70, 16), (2, 2, 70, 16), dtype=torch.float64)
    visible = torch.rand(60, 70) > 0.5
    visible[[0, 7, 59]] = False  # fully masked rows
    mask = visible if kind == "bool" else torch.zeros(60, 70, dtype=torch.float64).masked_fill(
        ~visible, float("-inf"))
    out = sdpa(q, k, v, attn_mask=mask)
    ref = reference_attention(q, k, v, mask)
    assert torch.isfinite(out).all()
    assert (out[..., [0, 7, 59], :] == 0).all()
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    ours = torch.autograd.grad(out, (q, k, v), g)
    theirs = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(ours, theirs):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b)
    assert (ours[0][..., [0, 7, 59], :] == 0).all()


def test_no_keys_gives_zeros():
    q, k, v = _inputs((2, 3, 5, 8), (2, 3, 0, 8), (2, 3, 0, 4))
    out = sdpa(q, k, v)
    assert out.shape == (2, 3, 5, 4) and (out == 0).all()
    dq, dk, dv = torch.autograd.grad(out.sum(), (q, k, v))
    assert (dq == 0).all() and dk.shape == k.shape and dv.shape == v.shape


def test_empty_batch_and_queries():
    for sq, sk in [((0, 2, 5, 8), (0, 2, 6, 8)), ((2, 2, 0, 8), (2, 2, 6, 8))]:
        q, k, v = _inputs(sq, sk, sk)
        out = sdpa(q, k, v)
        assert out.shape == sq
        dq, dk, dv = torch.autograd.grad(out.sum(), (q, k, v))
        assert dq.shape == q.shape and (dk == 0).all() and (dv == 0).all()


# ---- layouts, GQA, broadcasting -------------------------------------------------------------


def test_noncontiguous_from_btHd(isa):
    B, T, H, D = 2, 37, 3, 32
    qkv = torch.randn(B, T, 3, H, D, requires_grad=True)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # [B, H, T, D], strided
    assert not q.is_contiguous()
    out = sdpa(q, k, v, is_causal=True)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    g = torch.randn_like(out)
    (a,) = torch.autograd.grad(out, qkv, g)
    (b,) = torch.autograd.grad(ref, qkv, g)
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_last_dim_strided():
    q, k, v = _inputs((1, 2, 10, 16), (1, 2, 12, 32), (1, 2, 12, 16))
    _compare(q, k[..., ::2], v, "key with last-dim stride 2")


def test_broadcast_batch():
    q, k, v = _inputs((3, 2, 17, 16), (1, 2, 19, 16), (3, 1, 19, 8))
    out = sdpa(q, k, v)
    ref = F.scaled_dot_product_attention(q, k.expand(3, 2, 19, 16), v.expand(3, 2, 19, 8))
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    g = torch.randn_like(out)
    ours = torch.autograd.grad(out, (q, k, v), g)
    theirs = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("hkv", [1, 2])
def test_gqa(isa, hkv):
    q, k, v = _inputs((2, 4, 33, 16), (2, hkv, 45, 16), (2, hkv, 45, 24))
    _compare(q, k, v, f"gqa hkv={hkv}", enable_gqa=True)
    _compare(q, k, v, f"gqa hkv={hkv} causal", enable_gqa=True, is_causal=True)


def test_threads_agree():
    # one head and two threads: the key blocks of a head in parallel, dQ summed over threads
    q, k, v = _inputs((1, 1, 300, 32), (1, 1, 300, 32), (1, 1, 300, 32))
    g = torch.randn(1, 1, 300, 32)
    res = []
    for n in (1, 2):
        torch.set_num_threads(n)
        out = sdpa(q, k, v, is_causal=True)
        res.append((out, *torch.autograd.grad(out, (q, k, v), g)))
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ---- gradcheck ------------------------------------------------------------------------------

GRADCHECK_CASES = {
    "plain": dict(shapes=((1, 2, 5, 8), (1, 2, 7, 8), (1, 2, 7, 6)), kw={}),
    "causal L>S": dict(shapes=((2, 1, 9, 4), (2, 1, 6, 4), (2, 1, 6, 3)), kw=dict(is_causal=True)),
    "causal L<S": dict(shapes=((1, 2, 4, 4), (1, 2, 9, 4), (1, 2, 9, 5)), kw=dict(is_causal=True)),
    "gqa": dict(shapes=((1, 4, 5, 4), (1, 2, 6, 4), (1, 2, 6, 4)), kw=dict(enable_gqa=True)),
    "multi-block": dict(shapes=((1, 1, 53, 3), (1, 1, 61, 3), (1, 1, 61, 2)), kw=dict(is_causal=True)),
}


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gradcheck(case):
    c = GRADCHECK_CASES[case]
    q, k, v = _inputs(*c["shapes"], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda q, k, v: sdpa(q, k, v, **c["kw"]), (q, k, v))


def test_gradcheck_masks():
    q, k, v = _inputs((1, 2, 6, 4), (1, 2, 7, 4), (1, 2, 7, 3), dtype=torch.float64)
    bmask = torch.rand(6, 7) > 0.4
    bmask[2] = False  # one fully masked row
    fmask = torch.randn(2, 1, 7, dtype=torch.float64)
    for m in (bmask, fmask):
        assert torch.autograd.gradcheck(lambda q, k, v: sdpa(q, k, v, attn_mask=m), (q, k, v))


def test_gradcheck_dropout_fixed_rng():
    q, k, v = _inputs((1, 2, 6, 4), (1, 2, 7, 4), (1, 2, 7, 3), dtype=torch.float64)
    rng = torch.tensor([123, 456])
    fn = lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, None, 0.3, True, None, False, rng)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))


@pytest.mark.slow
def test_double_backward():
    q, k, v = _inputs((1, 1, 4, 3), (1, 1, 5, 3), (1, 1, 5, 2), dtype=torch.float64)
    assert torch.autograd.gradgradcheck(lambda q, k, v: sdpa(q, k, v, is_causal=True), (q, k, v))


# ---- dropout --------------------------------------------------------------------------------


def _keep_matrix(p, L, S, seed):
    """The keep decisions of one head, read back exactly: uniform attention (q = 0) over
    one-hot values gives out[i, j] = keep[i, j] / ((1 - p) S)."""
    torch.manual_seed(seed)
    q = torch.zeros(1, 1, L, 4, dtype=torch.float64)
    k = torch.zeros(1, 1, S, 4, dtype=torch.float64)
    v = torch.eye(S, dtype=torch.float64).view(1, 1, S, S)
    out = sdpa(q, k, v, dropout_p=p)[0, 0] * ((1 - p) * S)
    return out


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_statistics(p):
    out = _keep_matrix(p, 200, 300, 0)
    keep = out.round()
    assert ((keep == 0) | (keep == 1)).all()
    torch.testing.assert_close(out, keep)  # scaled by exactly 1 / (1 - p)
    rate = keep.mean().item()
    n = keep.numel()
    sigma = ((1 - p) * p / n) ** 0.5
    assert abs(rate - (1 - p)) < 5 * sigma, (rate, 1 - p)
    # rows and columns are not correlated: per-row rates spread as binomials
    rows = keep.mean(1)
    assert rows.std().item() < 3 * ((1 - p) * p / 300) ** 0.5


def test_dropout_reproducible_and_fresh():
    a = _keep_matrix(0.5, 40, 50, 7)
    b = _keep_matrix(0.5, 40, 50, 7)
    c = _keep_matrix(0.5, 40, 50, 8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(3)
    q, k, v = _inputs((1, 1, 40, 4), (1, 1, 50, 4), (1, 1, 50, 4))
    x = sdpa(q, k, v, dropout_p=0.5)
    y = sdpa(q, k, v, dropout_p=0.5)
    assert not torch.equal(x, y)  # each call draws a new seed


def test_dropout_p_one_and_zero():
    q, k, v = _inputs((1, 2, 9, 4), (1, 2, 11, 4), (1, 2, 11, 4))
    assert (sdpa(q, k, v, dropout_p=1.0) == 0).all()
    torch.testing.assert_close(sdpa(q, k, v, dropout_p=0.0), sdpa(q, k, v))


def test_dropout_grads_match_masked_reference():
    """Forward and backward with dropout equal softmax(..) * keep / (1 - p) @ v with the keep
    decisions read back through the same (seed, offset)."""
    p, L, S = 0.4, 23, 29
    rng = torch.tensor([99, 12345])
    qz = torch.zeros(1, 2, L, 4, dtype=torch.float64)
    eye = torch.eye(S, dtype=torch.float64).expand(1, 2, S, S)
    keep = ops.scaled_dot_product_attention(qz, qz[:, :, :1].expand(1, 2, S, 4), eye, None, p,
                                            False, None, False, rng)[0] * ((1 - p) * S)
    keep = keep.round()
    q, k, v = _inputs((1, 2, L, 8), (1, 2, S, 8), (1, 2, S, 5), dtype=torch.float64)
    out = ops.scaled_dot_product_attention(q, k, v, None, p, False, None, False, rng)[0]
    probs = torch.softmax(q @ k.transpose(-2, -1) / 8**0.5, -1)
    ref = (probs * keep / (1 - p)) @ v
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        torch.testing.assert_close(a, b)


# ---- opcheck, compile, meta -----------------------------------------------------------------


@pytest.mark.parametrize("variant", [
    "plain", "dropout", *(pytest.param(v, marks=pytest.mark.slow)
                          for v in ("causal", "bool mask", "float mask", "gqa"))])
def test_opcheck(variant):
    q, k, v = _inputs((1, 4, 7, 8), (1, 4, 9, 8), (1, 4, 9, 6))
    mask, p, causal, gqa, rng = None, 0.0, False, False, None
    if variant == "causal":
        causal = True
    elif variant == "bool mask":
        mask = torch.rand(7, 9) > 0.3
    elif variant == "float mask":
        mask = torch.randn(1, 1, 7, 9)
    elif variant == "dropout":
        p, rng = 0.2, torch.tensor([5, 6])
    elif variant == "gqa":
        q, k, v = _inputs((1, 4, 7, 8), (1, 2, 9, 8), (1, 2, 9, 6))
        gqa = True
    torch.library.opcheck(ops.scaled_dot_product_attention.default,
                          (q, k, v, mask, p, causal, None, gqa, rng))
    out, lse = ops.scaled_dot_product_attention(q, k, v, mask, p, causal, None, gqa, rng)
    torch.library.opcheck(
        ops.scaled_dot_product_attention_backward.default,
        (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(), lse, mask, p,
         causal, None, gqa, rng, [True, True, True]),
    )


@pytest.mark.parametrize("dropout_p", [0.0, 0.25])
def test_compile_fullgraph(dropout_p):
    q, k, v = _inputs((2, 2, 21, 8), (2, 2, 21, 8), (2, 2, 21, 8))

    def fn(q, k, v):
        return sdpa(q, k, v, is_causal=True, dropout_p=dropout_p)

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.manual_seed(1)
    out = compiled(q, k, v)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    torch.manual_seed(1)
    ref = fn(q, k, v)
    ref_grads = torch.autograd.grad(ref.sum(), (q, k, v))
    if dropout_p == 0.0:
        torch.testing.assert_close(out, ref)
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b)
    else:
        assert out.shape == ref.shape and torch.isfinite(out).all()


def test_meta_shapes():
    q = torch.empty(2, 3, 5, 8, device="meta")
    k = torch.empty(2, 3, 7, 8, device="meta")
    v = torch.empty(2, 3, 7, 4, device="meta")
    out, lse = ops.scaled_dot_product_attention(q, k, v)
    assert out.shape == (2, 3, 5, 4) and lse.shape == (2, 3, 5)


# ---- bad input ------------------------------------------------------------------------------

OP = "scaled_dot_product_attention"


def test_bad_inputs():
    q, k, v = _inputs((1, 2, 5, 8), (1, 2, 6, 8), (1, 2, 6, 4), requires_grad=False)
    assert_raises_named(lambda: sdpa(q, k[..., :4], v), RuntimeError, ["head dim", "8", "4"], OP)
    assert_raises_named(lambda: sdpa(q, k, v[:, :, :5]), RuntimeError, ["sequence length"], OP)
    assert_raises_named(lambda: sdpa(q, k, v, attn_mask=torch.ones(5, 7, dtype=torch.bool)),
                        RuntimeError, ["attn_mask", "[5, 7]", "[1, 2, 5, 6]"], OP)
    assert_raises_named(lambda: sdpa(q, k, v, attn_mask=torch.ones(5, 6, dtype=torch.int32)),
                        TypeError, ["attn_mask", "Int"], OP)
    assert_raises_named(lambda: sdpa(q.int(), k.int(), v.int()), TypeError, ["query", "float32"], OP)
    assert_raises_named(lambda: sdpa(q, k.double(), v), TypeError, ["key", "dtype"], OP)
    assert_raises_named(lambda: sdpa(q, k[:, :1].expand(1, 3, 6, 8), v), RuntimeError,
                        ["dimension 1", "enable_gqa"], OP)
    q4 = torch.randn(1, 4, 5, 8)
    assert_raises_named(lambda: sdpa(q4, torch.randn(1, 3, 6, 8), torch.randn(1, 3, 6, 4),
                                     enable_gqa=True), RuntimeError, ["head count", "divide"], OP)
    assert_raises_named(lambda: sdpa(q[0, 0, 0], k, v), RuntimeError, ["dimensions"], OP)
    assert_raises_named(lambda: sdpa(q, k, v, dropout_p=1.5), RuntimeError, ["dropout_p"], OP)
    with pytest.raises(ValueError, match="fusedops.scaled_dot_product_attention"):
        sdpa(q, k, v, attn_mask=torch.ones(5, 6, dtype=torch.bool), is_causal=True)


def test_bad_backward_inputs():
    q, k, v = _inputs((1, 2, 5, 8), (1, 2, 6, 8), (1, 2, 6, 4), requires_grad=False)
    out, lse = ops.scaled_dot_product_attention(q, k, v)
    assert_raises_named(
        lambda: ops.scaled_dot_product_attention_backward(
            out[..., :3], q, k, v, out, lse, None, 0.0, False, None, False, None, [True] * 3),
        RuntimeError, ["grad_out", "shape"], OP + "_backward")
    assert_raises_named(
        lambda: ops.scaled_dot_product_attention(q, k, v, None, 0.5, False, None, False, None),
        RuntimeError, ["rng"], OP)


def test_mask_gradient_refused():
    q, k, v = _inputs((1, 1, 3, 4), (1, 1, 3, 4), (1, 1, 3, 4))
    mask = torch.randn(3, 3, requires_grad=True)
    out = sdpa(q, k, v, attn_mask=mask)
    with pytest.raises(NotImplementedError, match="attn_mask"):
        out.sum().backward()


# ---- MultiheadAttention ---------------------------------------------------------------------

MHA_CONFIGS = {
    "self bf": dict(kw=dict(batch_first=True), self_attn=True),
    "self seq-first": dict(kw=dict(), self_attn=True),
    "cross kdim vdim": dict(kw=dict(kdim=12, vdim=20, batch_first=True), self_attn=False),
    "no bias": dict(kw=dict(bias=False), self_attn=False),
    "bias_kv zero_attn": dict(kw=dict(add_bias_kv=True, add_zero_attn=True, batch_first=True),
                              self_attn=False),
}


def _mha_pair(kw, E=24, H=4):
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(E, H, **kw)
    torch.manual_seed(0)
    ours = fusedops.nn.MultiheadAttention(E, H, **kw)
    assert isinstance(ours.out_proj, fusedops.nn.Linear)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (n, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert torch.equal(a, b), f"init of {n} differs from torch's"  # same init, same RNG use
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _mha_inputs(m, N, L, S, self_attn):
    E = m.embed_dim
    kd, vd = m.kdim, m.vdim
    shape = (lambda T, D: (N, T, D)) if m.batch_first else (lambda T, D: (T, N, D))
    x = torch.randn(shape(L, E), requires_grad=True)
    if self_attn:
        return x, x, x
    return (x, torch.randn(shape(S, kd), requires_grad=True),
            torch.randn(shape(S, vd), requires_grad=True))


def _check_mha(ours, theirs, inputs, **fkw):
    out_a, w_a = ours(*inputs, **fkw)
    out_b, w_b = theirs(*inputs, **fkw)
    torch.testing.assert_close(out_a, out_b, atol=2e-5, rtol=1e-4)
    if w_b is None:
        assert w_a is None
    else:
        torch.testing.assert_close(w_a, w_b, atol=2e-6, rtol=1e-4)
    g = torch.randn_like(out_b)
    leaves = [t for t in dict.fromkeys(inputs) if t.requires_grad]
    pa = leaves + [p for p in ours.parameters()]
    pb = leaves + [p for p in theirs.parameters()]
    ga = torch.autograd.grad(out_a, pa, g, allow_unused=True)
    gb = torch.autograd.grad(out_b, pb, g, allow_unused=True)
    for a, b in zip(ga, gb):
        if b is None:
            assert a is None or (a == 0).all()
        else:
            torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("config", list(MHA_CONFIGS))
def test_mha_matches_torch(config, need_weights):
    c = MHA_CONFIGS[config]
    ours, theirs = _mha_pair(c["kw"])
    inputs = _mha_inputs(ours, 3, 7, 7 if c["self_attn"] else 9, c["self_attn"])
    _check_mha(ours, theirs, inputs, need_weights=need_weights)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_mha_masks(kind):
    ours, theirs = _mha_pair(dict(batch_first=True))
    inputs = _mha_inputs(ours, 2, 6, 8, False)
    kpm = torch.zeros(2, 8, dtype=torch.bool)
    kpm[0, 5:] = True
    amask = torch.rand(6, 8) > 0.8
    amask[:, 0] = False
    if kind == "float":
        kpm = torch.zeros(2, 8).masked_fill(kpm, float("-inf"))
        amask = torch.randn(6, 8)
    for fkw in (dict(key_padding_mask=kpm), dict(attn_mask=amask),
                dict(key_padding_mask=kpm, attn_mask=amask)):
        for nw in (True, False):
            _check_mha(ours, theirs, inputs, need_weights=nw, **fkw)
    m3 = torch.randn(2 * 4, 6, 8)
    _check_mha(ours, theirs, inputs, need_weights=False, attn_mask=m3)


def test_mha_causal_and_per_head_weights():
    ours, theirs = _mha_pair(dict(batch_first=True))
    inputs = _mha_inputs(ours, 2, 9, 9, True)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(9)
    for nw in (True, False):
        _check_mha(ours, theirs, inputs, need_weights=nw, attn_mask=causal, is_causal=True)
    _check_mha(ours, theirs, inputs, need_weights=True, average_attn_weights=False)


def test_mha_unbatched():
    ours, theirs = _mha_pair(dict())
    x = torch.randn(5, 24, requires_grad=True)
    _check_mha(ours, theirs, (x, x, x))
    kpm = torch.tensor([False, False, True, False, False])
    _check_mha(ours, theirs, (x, x, x), key_padding_mask=kpm, need_weights=False)


def test_mha_dropout_training():
    ours, theirs = _mha_pair(dict(dropout=0.3, batch_first=True))
    ours.train()
    x = torch.randn(2, 16, 24)
    torch.manual_seed(5)
    a, _ = ours(x, x, x, need_weights=False)
    torch.manual_seed(5)
    b, _ = ours(x, x, x, need_weights=False)
    torch.testing.assert_close(a, b)  # reproducible under manual_seed
    ours.eval()
    theirs.eval()
    _check_mha(ours, theirs, (x.requires_grad_(), x, x), need_weights=False)


def test_mha_bad_input():
    m = fusedops.nn.MultiheadAttention(24, 4, batch_first=True)
    x = torch.randn(2, 5, 24)
    with pytest.raises(ValueError, match="fusedops.nn.MultiheadAttention"):
        m(x, x, torch.randn(2, 5, 24, 1))
    with pytest.raises(RuntimeError, match="attn_mask"):
        m(x, x, x, attn_mask=torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="is_causal"):
        m(x, x, x, is_causal=True)


# ---- CUDA kernels (simulator, and a GPU when present) ---------------------------------------

from conftest import BACKENDS, DTYPES, check_close, dev, op  # noqa: E402

SIM_CASES = {
    "plain": dict(shapes=((2, 2, 37, 16), (2, 2, 41, 16), (2, 2, 41, 24)), kw={}),
    "causal L>S": dict(shapes=((1, 2, 45, 8), (1, 2, 33, 8), (1, 2, 33, 8)), kw=dict(causal=True)),
    "bool mask": dict(shapes=((1, 3, 20, 32), (1, 3, 35, 32), (1, 3, 35, 32)), kw=dict(mask="bool")),
    "float mask": dict(shapes=((2, 1, 20, 16), (2, 1, 35, 16), (2, 1, 35, 8)), kw=dict(mask="float")),
    "gqa": dict(shapes=((1, 4, 19, 16), (1, 2, 23, 16), (1, 2, 23, 16)), kw=dict(gqa=True)),
    "E=80 Ev=40": dict(shapes=((1, 1, 9, 80), (1, 1, 70, 80), (1, 1, 70, 40)), kw=dict(causal=True)),
    "E=128": dict(shapes=((1, 1, 40, 128), (1, 1, 50, 128), (1, 1, 50, 128)), kw=dict(causal=True)),
    "E=24 Ev=12": dict(shapes=((1, 2, 17, 24), (1, 2, 19, 24), (1, 2, 19, 12)), kw={}),  # SIMT
    # tensor-core backwards (fp16 / bf16, E and Ev multiples of 16): L > S and L < S causal,
    # a float mask, E != Ev, partial 16-row tiles at both ends
    "tc causal L>S": dict(shapes=((1, 2, 45, 16), (1, 2, 33, 16), (1, 2, 33, 32)), kw=dict(causal=True)),
    "tc causal L<S": dict(shapes=((2, 1, 21, 32), (2, 1, 50, 32), (2, 1, 50, 16)), kw=dict(causal=True)),
    "tc float mask": dict(shapes=((1, 2, 30, 64), (1, 2, 47, 64), (1, 2, 47, 64)), kw=dict(mask="float")),
}


def _sim_inputs(case, dtype, device):
    c = SIM_CASES[case]
    q, k, v = (torch.randn(s).to(device=device, dtype=dtype) for s in c["shapes"])
    kw = c["kw"]
    mask = None
    L, S = q.shape[-2], k.shape[-2]
    if kw.get("mask") == "bool":
        mask = torch.rand(L, S) > 0.4
        mask[5] = False  # a fully masked row: zeros
        mask = mask.to(device)
    elif kw.get("mask") == "float":
        mask = (torch.randn(q.shape[0], 1, L, S) * 2).to(device=device, dtype=dtype)
    return q, k, v, mask, kw.get("causal", False), kw.get("gqa", False)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(SIM_CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_forward_backward(backend, case, dtype):
    q, k, v, mask, causal, gqa = _sim_inputs(case, dtype, dev(backend))
    f = op(backend, "scaled_dot_product_attention")
    out, lse = f(q, k, v, mask, 0.0, causal, None, gqa, None)
    assert lse.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    g = torch.randn(out.shape).to(out)
    dq, dk, dv = op(backend, "scaled_dot_product_attention_backward")(
        g, q, k, v, out, lse, mask, 0.0, causal, None, gqa, None, [True, True, True])
    # float64 truth; torch's math in the same low precision (on the CPU) sets the budget
    m64 = None if mask is None or mask.dtype == torch.bool else mask.double().cpu()
    m_ = mask.cpu() if mask is not None and mask.dtype == torch.bool else m64
    q64, k64, v64 = (t.detach().double().cpu().requires_grad_() for t in (q, k, v))
    ref = reference_attention(q64, k64, v64, m_, causal, None, gqa)
    refg = torch.autograd.grad(ref, (q64, k64, v64), g.double().cpu())
    lowp = None
    if dtype in (torch.float16, torch.bfloat16):
        ql, kl, vl = (t.detach().cpu().float().to(dtype).requires_grad_() for t in (q, k, v))
        ml = None if m_ is None else (m_ if m_.dtype == torch.bool else m_.to(dtype))
        lowp = reference_attention(ql, kl, vl, ml, causal, None, gqa)
        lowpg = torch.autograd.grad(lowp, (ql, kl, vl), g.cpu())
    check_close(out, ref.detach(), lowp, dtype, f"{case} output")
    for name, ours, r, i in zip("qkv", (dq, dk, dv), refg, range(3)):
        check_close(ours, r, None if lowp is None else lowpg[i], dtype, f"{case} d{name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_dropout_matches_cpu(backend):
    """The simulator (and a GPU) drop exactly the elements the CPU op drops."""
    q, k, v = (torch.randn(1, 2, 23 if i == 0 else 29, 8, dtype=torch.float64) for i in range(3))
    rng = torch.tensor([7, 11])
    args = (None, 0.4, True, None, False, rng)
    cpu_out, cpu_lse = ops.scaled_dot_product_attention(q, k, v, *args)
    d = dev(backend)
    out, lse = op(backend, "scaled_dot_product_attention")(q.to(d), k.to(d), v.to(d), *args)
    torch.testing.assert_close(out.cpu(), cpu_out)
    g = torch.randn_like(cpu_out)
    a = ops.scaled_dot_product_attention_backward(g, q, k, v, cpu_out, cpu_lse, *args, [True] * 3)
    b = op(backend, "scaled_dot_product_attention_backward")(
        g.to(d), q.to(d), k.to(d), v.to(d), out, lse, *args, [True] * 3)
    for x, y in zip(a, b):
        torch.testing.assert_close(y.cpu(), x)
    # fp16 (the tensor-core forward): the same elements dropped as the CPU op on the same values
    q16, k16, v16 = (torch.randn(1, 2, 33, 16).half() for _ in range(3))
    out16, lse16 = op(backend, "scaled_dot_product_attention")(q16.to(d), k16.to(d), v16.to(d), *args)
    ref32, lse32 = ops.scaled_dot_product_attention(q16.float(), k16.float(), v16.float(), *args)
    torch.testing.assert_close(out16.cpu().float(), ref32, atol=2e-2, rtol=0)
    # and its tensor-core backward regenerates the same mask
    g16 = torch.randn_like(q16)
    a = ops.scaled_dot_product_attention_backward(g16.float(), q16.float(), k16.float(), v16.float(), ref32,
                                                  lse32, *args, [True] * 3)
    b = op(backend, "scaled_dot_product_attention_backward")(
        g16.to(d), q16.to(d), k16.to(d), v16.to(d), out16, lse16, *args, [True] * 3)
    for x, y in zip(a, b):
        torch.testing.assert_close(y.cpu().float(), x, atol=3e-2, rtol=2e-2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_noncontiguous_and_bad_input(backend):
    d = dev(backend)
    qkv = torch.randn(2, 13, 3, 2, 8, device=d)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    out, _ = op(backend, "scaled_dot_product_attention")(q, k, v, None, 0.0, True, None, False, None)
    ref, _ = ops.scaled_dot_product_attention(q.cpu(), k.cpu(), v.cpu(), None, 0.0, True, None,
                                              False, None)
    torch.testing.assert_close(out.cpu(), ref, atol=1e-5, rtol=1e-5)
    f = op(backend, "scaled_dot_product_attention")
    with pytest.raises(RuntimeError, match="head dim"):
        f(q, k[..., :4], v, None, 0.0, False, None, False, None)
    with pytest.raises(RuntimeError, match="256"):
        big = torch.randn(1, 1, 3, 300, device=d)
        f(big, big, big, None, 0.0, False, None, False, None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_more_pairs_than_grid_y(backend):
    """65537 (batch, head) pairs: those past grid.y's 65535 go on along grid.z (fp16, the
    tensor-core forward, the fastest on the simulator; tests/sim/grid_tests.cu covers every
    layout, every kernel and the backward with a lower limit)."""
    d = dev(backend)
    q, k, v = (torch.randn(65537, 1, n, 16).half() for n in (2, 3, 3))
    args = (None, 0.0, True, None, False, None)
    out, lse = op(backend, "scaled_dot_product_attention")(q.to(d), k.to(d), v.to(d), *args)
    ref, ref_lse = ops.scaled_dot_product_attention(q.float(), k.float(), v.float(), *args)
    torch.testing.assert_close(out.cpu().float(), ref, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(lse.cpu(), ref_lse, atol=1e-4, rtol=1e-4)
