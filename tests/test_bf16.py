"""bf16 on the CPU: linear and matmul (forward and backward) on the mixed-precision GEMM, on the
native AVX512-BF16 kernel where the CPU has it and on the widening path, against float64
references within a budget derived from the roundings, and under torch.autocast against torch.

Budget for a product of length K whose exact value is r, with S = sum_k |a_k b_k|:
    |got - r| <= u16 * (|r| + e) + e,   e = 1.2 * ((K + 2) * u32 + m * 2 * u16) * S + 1e-6
u16 = 2^-8, u32 = 2^-24: bf16's and fp32's unit roundoffs (the result rounded once to bf16; fp32
sums); m = 1 when an fp32 operand (a master weight) is rounded to bf16 in the kernel, else 0;
1.2 covers an activation's slope (GELU's stays below 1.13).
"""
import pytest
import torch

import fusedops
from fusedops import ops

U16, U32 = 2.0**-8, 2.0**-24
BF = torch.bfloat16


def paths():
    """The bf16 paths this CPU can run: always 'widen'; 'avx512_bf16' (vdpbf16ps) where it has
    AVX512-BF16; 'native' where that is AMX."""
    out = ["widen"]
    if fusedops._C._set_bf16("avx512_bf16").startswith("native"):
        out.append("avx512_bf16")
    if fusedops._C._set_bf16("native").startswith("native: amx"):
        out.append("native")
    fusedops._C._set_bf16("auto")
    return out


PATHS = paths()


@pytest.fixture(params=PATHS)
def bf16_path(request):
    got = fusedops._C._set_bf16(request.param)
    assert got.startswith("widened" if request.param == "widen" else "native")
    yield request.param
    fusedops._C._set_bf16("auto")


def check(got, ref, S, K, rounded_master, out_bf16=True, what="", extra=0.0):
    """got vs ref (float64) within the budget above, S the |a||b| sums; `extra`: an error
    already in an operand (bounded by the caller), added as it is."""
    e = 1.2 * ((K + 2) * U32 + (2 * U16 if rounded_master else 0.0)) * S + 1e-6 + extra
    bound = (U16 * (ref.abs() + e) if out_bf16 else 0) + e
    err = (got.double() - ref).abs()
    bad = err > bound
    assert not bad.any(), f"{what}: {int(bad.sum())} elements past the budget, worst {float((err / bound).max()):.3g}x"


def rand(*shape, dtype=BF, scale=1.0):
    return (torch.rand(*shape, dtype=torch.float64) * 2 - 1).mul(scale).to(dtype)


SHAPES = [(1, 1, 1), (3, 17, 5), (29, 45, 67), (64, 33, 70), (0, 8, 4), (5, 0, 7), (6, 9, 0)]


@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("wdtype", [BF, torch.float32])
@pytest.mark.parametrize("act", [None, "relu", "gelu", "gelu_tanh"])
def test_linear_forward(bf16_path, M, N, K, wdtype, act):
    x, w, b = rand(M, K), rand(N, K, dtype=wdtype), rand(N, dtype=wdtype)
    out = ops.linear(x, w, b, act)
    assert out.dtype == BF and out.shape == (M, N)
    z = x.double() @ w.to(BF).double().T + b.double()  # exact over the bf16-rounded weight...
    ref = {None: z, "relu": torch.relu(z), "gelu": torch.nn.functional.gelu(z),
           "gelu_tanh": torch.nn.functional.gelu(z, approximate="tanh")}[act]
    # ...and the budget counts the rounding of an fp32 weight (the widening path keeps it fp32)
    S = x.double().abs() @ w.double().abs().T
    check(out, (x.double() @ w.double().T + b.double()) if act is None else ref, S, K,
          wdtype == torch.float32, what=f"linear {act}")


def test_linear_non_contiguous_and_batched(bf16_path):
    x = rand(7, 3, 40).transpose(0, 1)  # [3, 7, 40], not contiguous
    w = rand(40, 24).T  # [24, 40] transposed view
    out = ops.linear(x, w)
    ref = x.double() @ w.double().T
    check(out, ref, x.double().abs() @ w.double().abs().T, 40, False, what="strided linear")


@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (13, 31, 33), (70, 20, 130)])
@pytest.mark.parametrize("wdtype", [BF, torch.float32])
@pytest.mark.parametrize("act", [None, "gelu_tanh"])
def test_linear_backward(bf16_path, M, N, K, wdtype, act):
    x = rand(M, K).requires_grad_()
    w = rand(N, K, dtype=wdtype).requires_grad_()
    b = rand(N, dtype=wdtype).requires_grad_()
    out = ops.linear(x, w, b, act)
    g = rand(M, N)
    out.backward(g)
    assert x.grad.dtype == BF and w.grad.dtype == wdtype and b.grad.dtype == wdtype
    # Reference: the same formulas in float64 over the kernel's own pre-activation gradient
    # (bf16 inputs exact; the fp32 weight's rounding counted by the budget).
    xd, wd, gd = x.detach().double(), w.detach().double(), g.double()
    z = xd @ wd.T + b.detach().double()
    if act:
        zz = z.clone().requires_grad_()
        torch.nn.functional.gelu(zz, approximate="tanh").backward(gd)
        dz = zz.grad
        # z itself went through bf16 (the saved pre-activation): its rounding (u16 |z|, plus
        # the fp32 sums' and an fp32 weight's) moves act'(z) by at most |act''| <= 0.8 times it
        zerr = (U16 * 1.01 + (K + 2) * U32 + (2 * U16 if wdtype == torch.float32 else 0)) * (
            xd.abs() @ wd.abs().T + b.detach().double().abs())
        slack = 0.8 * zerr * gd.abs()
    else:
        dz, slack = gd, torch.zeros_like(gd)
    dzs = dz.abs() + slack
    check(x.grad, dz @ wd, dzs @ wd.abs(), N, wdtype == torch.float32, what="grad x", extra=slack @ wd.abs())
    check(w.grad, dz.T @ xd, dzs.T @ xd.abs(), M, False, out_bf16=wdtype == BF, what="grad w",
          extra=slack.T @ xd.abs())
    check(b.grad, dz.sum(0), dzs.sum(0), M, False, out_bf16=wdtype == BF, what="grad b", extra=slack.sum(0))


@pytest.mark.parametrize("sa,sb", [((5, 7), (7, 3)), ((4, 5, 7), (7, 3)), ((5, 7), (4, 7, 3)),
                                   ((1, 5, 7), (4, 7, 3)), ((4, 5, 7), (1, 7, 3)), ((3, 0, 7), (3, 7, 2))])
def test_matmul(bf16_path, sa, sb):
    a, b = rand(*sa).requires_grad_(), rand(*sb).requires_grad_()
    out = ops.matmul(a, b)
    assert out.dtype == BF
    ad, bd = a.detach().double(), b.detach().double()
    check(out, ad @ bd, ad.abs() @ bd.abs(), sa[-1], False, what="matmul")
    g = rand(*out.shape)
    out.backward(g)
    ta, tb = ad.clone().requires_grad_(), bd.clone().requires_grad_()
    (ta @ tb).backward(g.double())
    sa_, sb_ = ad.abs().clone().requires_grad_(), bd.abs().clone().requires_grad_()
    (sa_ @ sb_).backward(g.double().abs())
    check(a.grad, ta.grad, sa_.grad, sb[-1] * max(out.shape[0], 1), False, what="matmul grad a")
    check(b.grad, tb.grad, sb_.grad, sa[-2] * max(out.shape[0], 1), False, what="matmul grad b")


def test_native_and_widened_agree():
    if len(PATHS) == 1:
        pytest.skip("the CPU lacks AVX512-BF16: only the widening path runs here")
    x, w = rand(37, 300), rand(50, 300, dtype=torch.float32)
    outs = {}
    for p in PATHS:
        fusedops._C._set_bf16(p)
        outs[p] = ops.linear(x, w, None, "gelu")
    fusedops._C._set_bf16("auto")
    S = x.double().abs() @ w.double().abs().T
    ref = torch.nn.functional.gelu(x.double() @ w.double().T)
    for p in PATHS:
        check(outs[p], ref, S, 300, p != "widen", what=p)


def test_native_and_widened_agree_linear_cross_entropy():
    """linear_cross_entropy runs its products on the bf16 GEMM: each path against float64
    within the budget above. A logit z_ij is off by at most e_ij (the product's budget, the
    fp32 master rounded to bf16 on the native paths); a row's loss lse(z_i) - z_it by at most
    2 max_j e_ij plus the fp32 log-sum-exp's 4 V u32 (|lse| + 1); the mean by the mean of those.
    The input gradient (p - y) / n @ W: the budget of a product of length V over |p - y| / n,
    plus the rounding of p - y to bf16 (2 u16 of its terms) and the softmax's shift from the
    logits' error (|dp_ij| <= 2.01 max_j e_ij p_ij)."""
    if len(PATHS) == 1:
        pytest.skip("the CPU lacks AVX512-BF16: only the widening path runs here")
    N, K, V = 37, 300, 130
    x, w = rand(N, K), rand(V, K, dtype=torch.float32, scale=0.3)
    t = torch.randint(0, V, (N,))
    t[4] = -100
    outs = {}
    for p in PATHS:
        fusedops._C._set_bf16(p)
        try:
            xr = x.clone().requires_grad_()
            loss = ops.linear_cross_entropy(xr, w, t)
            outs[p] = (loss.detach(), torch.autograd.grad(loss, xr)[0])
        finally:
            fusedops._C._set_bf16("auto")
    xd, wd = x.double(), w.double()
    keep = t != -100
    n = int(keep.sum())
    z = xd @ wd.T
    ref = torch.nn.functional.cross_entropy(z, t)
    prob = torch.softmax(z, -1)
    dz = (prob - torch.nn.functional.one_hot(t.clamp(min=0), V).double()) * keep[:, None] / n
    S = xd.abs() @ wd.abs().T
    bounds = {}
    for p in PATHS:
        m = p != "widen"
        e = 1.2 * ((K + 2) * U32 + (2 * U16 if m else 0.0)) * S + 1e-6
        E = e.max(1).values
        lse = torch.logsumexp(z, -1)
        bounds[p] = float(((2 * E + 4 * V * U32 * (lse.abs() + 1)) * keep).sum() / n)
        loss, gx = outs[p]
        assert loss.dtype == torch.float32 and gx.dtype == BF
        assert abs(float(loss) - float(ref)) <= bounds[p], f"{p}: loss off by {abs(float(loss) - float(ref)):.3g}"
        shift = 2.01 * E[:, None] * prob * keep[:, None] / n
        check(gx, dz @ wd, dz.abs() @ wd.abs(), V, m, what=f"{p} grad input",
              extra=(2 * U16 * dz.abs() + shift) @ wd.abs())
    for p in PATHS[1:]:
        diff = abs(float(outs[p][0]) - float(outs["widen"][0]))
        assert diff <= bounds[p] + bounds["widen"], f"{p} and widen disagree by {diff:.3g}"


def test_bad_dtypes_name_the_argument():
    x = rand(3, 4)
    with pytest.raises(TypeError, match=r"fusedops.linear: weight must be bfloat16 or float32 when input is bfloat16"):
        ops.linear(x, rand(5, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"fusedops.linear: bias must be bfloat16 or float32"):
        ops.linear(x, rand(5, 4), rand(5, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"fusedops.matmul: other must have the dtype of input"):
        ops.matmul(x, rand(4, 2, dtype=torch.float32))
    with pytest.raises(TypeError, match=r"fusedops.linear: input must be float32, float64 or bfloat16"):
        ops.linear(torch.ones(3, 4, dtype=torch.int32), torch.ones(5, 4, dtype=torch.int32))


def test_cpu_info_says_how_bf16_runs():
    info = fusedops.cpu_info()["bf16"]
    assert info.startswith("native") or info.startswith("widened"), info


# ---- autocast -------------------------------------------------------------------------------


def test_autocast_linear_matches_torch():
    torch.manual_seed(0)
    ours = fusedops.nn.Linear(64, 48)
    ref = torch.nn.Linear(64, 48)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(10, 64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya, yb = ours(xa), ref(xb)
    assert ya.dtype == yb.dtype == BF
    # Both round the same operands to bf16 and sum in fp32: a few bf16 ulps apart at most.
    torch.testing.assert_close(ya.float(), yb.float(), rtol=2 * U16, atol=2 * U16 * float(yb.detach().abs().max()))
    g = torch.randn(10, 48)
    ya.float().backward(g)
    yb.float().backward(g)
    assert xa.grad.dtype == torch.float32 and ours.weight.grad.dtype == torch.float32
    # torch rounds the weight gradient to bf16 before casting it back; ours stays fp32.
    for a, b in ((xa.grad, xb.grad), (ours.weight.grad, ref.weight.grad), (ours.bias.grad, ref.bias.grad)):
        torch.testing.assert_close(a, b, rtol=4 * U16, atol=4 * U16 * float(b.abs().max()))


def test_autocast_reads_master_weight_in_place():
    """Under bf16 autocast the linear saves the fp32 weight itself for backward, no bf16 copy."""
    lin = fusedops.nn.Linear(32, 16)
    x = torch.randn(4, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lin(x)
    saved = [t for t in y.grad_fn.saved_tensors if isinstance(t, torch.Tensor)] if hasattr(y.grad_fn, "saved_tensors") else []
    y.float().sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.dtype == torch.float32
    if saved:
        assert any(t.data_ptr() == lin.weight.data_ptr() for t in saved)


def test_autocast_float16_and_float64_keep_their_paths():
    x, w = torch.randn(3, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ops.linear(x, w).dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.float16):
        out = ops.linear(x.float(), w.float())
    assert out.dtype == torch.float16
