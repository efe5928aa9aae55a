"""fusedops.ops.matmul and its operators (matmul, matmul_backward) against torch.matmul.

Every rank combination the op accepts (2-D and 3-D operands, the batch broadcast as
torch.matmul broadcasts it), per instruction set and dtype, over shapes around the GEMM's
tiles and blocks; then strided, transposed and expanded operands, empty dimensions, gradients
(vs torch in fp32 and gradcheck in fp64), opcheck, torch.compile, meta tensors, autocast and
bad input; the CUDA kernels on the simulator (and a GPU when present).
"""
import pytest
import torch
from torch.autograd import gradcheck

from conftest import BACKENDS, check_close, dev, op
from conftest import DTYPES as CUDA_DTYPES
from conftest import assert_raises_named  # tests/ is on sys.path under pytest
from fusedops.ops import matmul

ops = torch.ops.fusedops
DTYPES = (torch.float32, torch.float64)


def shape_id(s):
    return "x".join(map(str, s))


# rank combination -> (shape of a, shape of b) for sizes B, M, K, N
RANKS = {
    "2d@2d": lambda B, M, K, N: ((M, K), (K, N)),
    "3d@2d": lambda B, M, K, N: ((B, M, K), (K, N)),
    "2d@3d": lambda B, M, K, N: ((M, K), (B, K, N)),
    "3d@3d": lambda B, M, K, N: ((B, M, K), (B, K, N)),
    "1@B": lambda B, M, K, N: ((1, M, K), (B, K, N)),
    "B@1": lambda B, M, K, N: ((B, M, K), (1, K, N)),
    "1@1": lambda B, M, K, N: ((1, M, K), (1, K, N)),
    "1@2d": lambda B, M, K, N: ((1, M, K), (K, N)),
    "2d@1": lambda B, M, K, N: ((M, K), (1, K, N)),
}

# (B, M, K, N): sizes 1, odd sizes, tile edges; small products run in parallel over the batch
SIZES = [
    (1, 1, 1, 1),
    (3, 1, 7, 1),
    (2, 7, 1, 7),
    (5, 7, 17, 15),
    (2, 14, 32, 32),
    (3, 13, 33, 31),
    (4, 6, 16, 16),
]
# large products (parallel inside each product): K over KC (512), M over several MC blocks
BIG_SIZES = [(2, 97, 97, 97), (2, 300, 530, 45), (2, 33, 1023, 65), (2, 1, 255, 257)]
BIG_RANKS = ["2d@2d", "3d@2d", "2d@3d", "1@B"]
VALUE_CASES = [pytest.param(r, s, id=f"{r}-{shape_id(s)}") for r in RANKS for s in SIZES] + [
    pytest.param(r, s, id=f"{r}-{shape_id(s)}") for r in BIG_RANKS for s in BIG_SIZES]


def rand(shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


# ---- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ranks, sizes", VALUE_CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_values(isa, dtype, ranks, sizes, check):
    sa, sb = RANKS[ranks](*sizes)
    a, b = rand(sa, dtype), rand(sb, dtype)
    out = matmul(a, b)
    assert out.shape == torch.matmul(a, b).shape
    assert out.is_contiguous()
    check.matmul(out, a, b)


@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 1, 7), (15, 33, 63), (255, 257, 97), (1023, 97, 7),
                                   (3, 5, 8200)], ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_values_2d_more_shapes(isa, dtype, shape, check):
    M, K, N = shape
    a, b = rand((M, K), dtype), rand((K, N), dtype)
    check.matmul(matmul(a, b), a, b)


def _layouts(B, M, K, N, dtype):
    r = lambda *s: torch.randn(*s, dtype=dtype)  # noqa: E731
    a, b = r(B, M, K), r(B, K, N)
    return {
        "a_transposed": (r(B, K, M).transpose(1, 2), b),
        "b_transposed": (a, r(B, N, K).transpose(1, 2)),
        "both_transposed": (r(B, K, M).transpose(1, 2), r(B, N, K).transpose(1, 2)),
        "a_batch_sliced": (r(2 * B, M, K)[::2], b),
        "b_batch_sliced": (a, r(2 * B, K, N)[::2]),
        "a_cols_sliced": (r(B, M, 2 * K)[..., ::2], b),
        "b_cols_sliced": (a, r(B, K, 2 * N)[..., ::2]),
        "a_batch_inner": (r(M, B, K).transpose(0, 1), b),  # batch not outermost in memory
        "a_offset_rows": (r(B, M + 1, K)[:, 1:], b),  # rows do not stack across the batch
        "a_batch_expanded": (r(1, M, K).expand(B, M, K), b),
        "b_batch_expanded": (a, r(1, K, N).expand(B, K, N)),
        "a_rows_expanded": (r(B, 1, K).expand(B, M, K), b),
        "b_cols_expanded": (a, r(B, K, 1).expand(B, K, N)),
        "b_all_expanded": (a, r(1, 1, 1).expand(B, K, N)),
        "3d@2d_a_transposed": (r(B, K, M).transpose(1, 2), r(K, N)),
        "3d@2d_a_offset_rows": (r(B, M + 1, K)[:, 1:], r(K, N)),
        "3d@2d_a_batch_inner": (r(M, B, K).transpose(0, 1), r(K, N)),
        "3d@2d_b_transposed": (a, r(N, K).t()),
        "2d@3d_a_transposed": (r(K, M).t(), b),
        "2d@3d_a_expanded": (r(1, K).expand(M, K), b),
        "2d@2d_b_expanded": (r(M, K), r(K, 1).expand(K, N)),
        "2d@2d_sliced": (r(M, 2 * K)[:, ::2], r(2 * K, N)[::2]),
    }


LAYOUTS = list(_layouts(2, 2, 2, 2, torch.float32))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("sizes", [(3, 29, 37, 21), (2, 70, 530, 21)], ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_layouts(isa, dtype, sizes, layout, check):
    a, b = _layouts(*sizes, dtype)[layout]
    assert not (a.is_contiguous() and b.is_contiguous())
    check.matmul(matmul(a, b), a, b, layout)


# ---- empty dimensions --------------------------------------------------------------------------

EMPTY = [(2, 0, 5, 7), (2, 5, 0, 7), (2, 5, 7, 0), (0, 5, 7, 3), (2, 0, 0, 0)]
# A batch of 1 against a batch of 0 runs in a subprocess (test_broadcast_one_against_empty_batch)
EMPTY_CASES = [pytest.param(r, s, id=f"{r}-{shape_id(s)}") for r in RANKS for s in EMPTY
               if not (s[0] == 0 and r in ("1@B", "B@1"))]


@pytest.mark.parametrize("ranks, sizes", EMPTY_CASES)
def test_empty(isa, ranks, sizes, check):
    sa, sb = RANKS[ranks](*sizes)
    a, b = rand(sa, torch.float64), rand(sb, torch.float64)
    out = matmul(a, b)
    assert out.shape == torch.matmul(a, b).shape
    check.matmul(out, a, b)  # an empty K must give exact zeros (the bound is 0)


@pytest.mark.parametrize("ranks, sizes", EMPTY_CASES)
def test_empty_backward(isa, ranks, sizes):
    sa, sb = RANKS[ranks](*sizes)
    a, b = rand(sa, torch.float64).requires_grad_(), rand(sb, torch.float64).requires_grad_()
    ar, br = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    matmul(a, b).sum().backward()
    torch.matmul(ar, br).sum().backward()
    for name, ours, ref in (("input", a.grad, ar.grad), ("other", b.grad, br.grad)):
        assert ours.shape == ref.shape, name
        # atol 0: a gradient that should be exactly zero must not be leftover memory
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0, msg=f"grad {name}")


def test_broadcast_one_against_empty_batch(python_subprocess):
    # torch broadcasts a batch of 1 against a batch of 0 to 0 (in a subprocess: a wrong batch
    # of 1 reads the empty operand's storage)
    res = python_subprocess(
        """
        import torch, fusedops
        for sa, sb in (((1, 3, 4), (0, 4, 5)), ((0, 3, 4), (1, 4, 5))):
            a, b = torch.randn(*sa), torch.randn(*sb)
            ref = torch.matmul(a, b)
            meta = fusedops.ops.matmul(a.to("meta"), b.to("meta"))
            assert meta.shape == ref.shape, ("meta", sa, sb, meta.shape, ref.shape)
            out = fusedops.ops.matmul(a, b)
            assert out.shape == ref.shape, ("cpu", sa, sb, out.shape, ref.shape)
        print("ok")
        """
    )
    assert res.returncode == 0 and "ok" in res.stdout, f"rc {res.returncode}\n{res.stderr[-2000:]}"


def test_values_with_one_and_two_threads(check):
    a, b = rand((3, 150, 300)), rand((300, 70))
    for n in (1, 2):
        torch.set_num_threads(n)
        check.matmul(matmul(a, b), a, b, f"{n} threads")
    for n in (1, 2):  # small products: parallel over the batch
        torch.set_num_threads(n)
        a2, b2 = rand((9, 7, 11)), rand((9, 11, 5))
        check.matmul(matmul(a2, b2), a2, b2, f"{n} threads, batch-parallel")


# ---- gradients ----------------------------------------------------------------------------------


def _incoming(kind, shape):
    if kind == "contiguous":
        return torch.randn(*shape)
    if kind == "transposed":
        return torch.randn(*reversed(shape)).permute(*reversed(range(len(shape))))
    if kind == "sum":
        return None
    raise AssertionError(kind)


def _compare_grads(a, b, kind, check, what):
    """Gradients of our matmul vs torch's in a's dtype, both against float64."""

    def leaves(dtype):
        return (a.detach().to(dtype).requires_grad_(a.requires_grad),
                b.detach().to(dtype).requires_grad_(b.requires_grad))

    (oa, ob), (ta, tb), (ra, rb) = leaves(a.dtype), leaves(a.dtype), leaves(torch.float64)
    out = matmul(oa, ob)
    g = _incoming(kind, out.shape)
    for o, gg in ((out, g), (torch.matmul(ta, tb), g),
                  (torch.matmul(ra, rb), None if g is None else g.double())):
        if gg is None:
            o.sum().backward()  # an expanded (stride-0) incoming gradient
        else:
            o.backward(gg)
    for name, o, t, r in (("input", oa, ta, ra), ("other", ob, tb, rb)):
        if not o.requires_grad:
            assert o.grad is None, f"{what}: grad of {name} computed though not required"
            continue
        check.budget(o.grad, t.grad, r.grad, f"{what} grad {name}")


@pytest.mark.parametrize("kind", ["contiguous", "transposed", "sum"])
@pytest.mark.parametrize("ranks", list(RANKS))
def test_grad_vs_torch(isa, ranks, kind, check):
    sa, sb = RANKS[ranks](4, 64, 128, 96)
    _compare_grads(rand(sa).requires_grad_(), rand(sb).requires_grad_(), kind, check, ranks)


@pytest.mark.parametrize("which", ["input", "other"])
@pytest.mark.parametrize("ranks", list(RANKS))
def test_grad_one_operand(isa, ranks, which, check):
    sa, sb = RANKS[ranks](3, 17, 40, 23)
    a = rand(sa).requires_grad_(which == "input")
    b = rand(sb).requires_grad_(which == "other")
    _compare_grads(a, b, "contiguous", check, f"{ranks} {which} only")


@pytest.mark.parametrize("layout", ["a_transposed", "b_transposed", "a_batch_expanded", "b_batch_expanded",
                                    "a_batch_inner", "3d@2d_a_offset_rows", "2d@3d_a_transposed"])
def test_grad_layouts(isa, layout, check):
    a, b = _layouts(3, 29, 37, 21, torch.float32)[layout]
    # expanded operands cannot require grad themselves; their sources can
    _compare_grads(a.detach().requires_grad_(), b.detach().requires_grad_(), "sum", check, layout)


@pytest.mark.parametrize("mask", [(True, True), (True, False), (False, True), (False, False)],
                         ids=lambda m: "".join(n for n, x in zip(("a", "b"), m) if x) or "none")
@pytest.mark.parametrize("ranks", list(RANKS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matmul_backward_op_mask(isa, dtype, ranks, mask):
    sa, sb = RANKS[ranks](3, 9, 13, 7)
    a, b = rand(sa, dtype), rand(sb, dtype)
    g = torch.randn(torch.matmul(a, b).shape, dtype=dtype)
    got = ops.matmul_backward(g, a, b, list(mask))
    ar, br = a.clone().requires_grad_(), b.clone().requires_grad_()
    torch.matmul(ar, br).backward(g)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for name, have, want, m in zip(("input", "other"), got, (ar.grad, br.grad), mask):
        if not m:
            assert have is None, f"{name} not in output_mask but returned"
        else:
            torch.testing.assert_close(have, want, **tol, msg=name)


@pytest.mark.parametrize("ranks", list(RANKS))
def test_gradcheck(isa, ranks):
    sa, sb = RANKS[ranks](2, 3, 4, 2)
    a = torch.randn(*sa, dtype=torch.float64, requires_grad=True)
    b = torch.randn(*sb, dtype=torch.float64, requires_grad=True)
    assert gradcheck(matmul, (a, b))


# ---- opcheck ------------------------------------------------------------------------------------


@pytest.mark.parametrize("requires_grad", (True, False), ids=("grad", "nograd"))
@pytest.mark.parametrize("ranks", list(RANKS))
def test_opcheck_matmul(ranks, requires_grad):
    sa, sb = RANKS[ranks](3, 4, 5, 6)
    a, b = rand(sa).requires_grad_(requires_grad), rand(sb).requires_grad_(requires_grad)
    torch.library.opcheck(ops.matmul.default, (a, b))


@pytest.mark.parametrize("mask", [(True, True), (True, False), (False, True)],
                         ids=lambda m: "".join(n for n, x in zip(("a", "b"), m) if x))
@pytest.mark.parametrize("ranks", ["2d@2d", "3d@2d", "2d@3d", "1@B", "B@1"])
def test_opcheck_matmul_backward(ranks, mask):
    sa, sb = RANKS[ranks](3, 4, 5, 6)
    a, b = rand(sa), rand(sb)
    g = torch.randn(torch.matmul(a, b).shape)
    torch.library.opcheck(ops.matmul_backward.default, (g, a, b, list(mask)))


# ---- torch.compile --------------------------------------------------------------------------------


@pytest.mark.parametrize("ranks", ["2d@2d", "3d@2d", "1@B"])
def test_compile_aot_eager_forward_backward(ranks):
    torch._dynamo.reset()

    def f(a, b):
        return matmul(a, b).relu()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    sa, sb = RANKS[ranks](3, 8, 16, 12)
    a, b = rand(sa).requires_grad_(), rand(sb).requires_grad_()
    out_c = compiled(a, b)
    g = torch.randn_like(out_c)
    grads_c = torch.autograd.grad(out_c, (a, b), g)
    out_e = f(a, b)
    grads_e = torch.autograd.grad(out_e, (a, b), g)
    torch.testing.assert_close(out_c, out_e)
    for gc, ge in zip(grads_c, grads_e):
        torch.testing.assert_close(gc, ge)
    torch.testing.assert_close(out_e, torch.matmul(a, b).relu(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_compile_inductor_smoke():
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, b: matmul(a, b) * 3, fullgraph=True)
    a, b = rand((2, 5, 8)).requires_grad_(), rand((8, 4)).requires_grad_()
    out = compiled(a, b)
    out.sum().backward()
    torch.testing.assert_close(out, torch.matmul(a, b) * 3, rtol=1e-5, atol=1e-5)
    ga, gb = a.grad, b.grad
    a.grad = b.grad = None
    (torch.matmul(a, b) * 3).sum().backward()
    torch.testing.assert_close(ga, a.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gb, b.grad, rtol=1e-5, atol=1e-5)


# ---- meta tensors ---------------------------------------------------------------------------------


def _assert_like(meta, real, what):
    assert meta.device.type == "meta", what
    assert meta.shape == real.shape, f"{what}: shape {tuple(meta.shape)} != {tuple(real.shape)}"
    assert meta.dtype == real.dtype, f"{what}: dtype {meta.dtype} != {real.dtype}"
    assert meta.stride() == real.stride(), f"{what}: strides {meta.stride()} != {real.stride()}"


@pytest.mark.parametrize("transposed", (False, True), ids=("contiguous", "transposed"))
@pytest.mark.parametrize("ranks", list(RANKS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_meta_matches_real(dtype, ranks, transposed):
    sa, sb = RANKS[ranks](3, 4, 5, 6)
    a, b = rand(sa, dtype), rand(sb, dtype)
    if transposed:
        a = a.transpose(-1, -2).contiguous().transpose(-1, -2)
        b = b.transpose(-1, -2).contiguous().transpose(-1, -2)
    _assert_like(matmul(a.to("meta"), b.to("meta")), matmul(a, b), "matmul")
    g = torch.randn(torch.matmul(a, b).shape, dtype=dtype)
    for mask in ([True, True], [False, True], [True, False]):
        got = ops.matmul_backward(g.to("meta"), a.to("meta"), b.to("meta"), mask)
        want = ops.matmul_backward(g, a, b, mask)
        for m, r, name in zip(got, want, ("input", "other")):
            if r is None:
                assert m is None, f"matmul_backward meta {name}: not None"
            else:
                _assert_like(m, r, f"matmul_backward {name}")


# ---- autocast -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ranks", ["2d@2d", "3d@2d", "1@B"])
def test_autocast_bf16(ranks, check):
    sa, sb = RANKS[ranks](3, 20, 64, 24)
    a = rand(sa).bfloat16().requires_grad_()
    b = rand(sb).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = matmul(a, b)
        theirs = torch.matmul(a, b)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    truth = torch.matmul(a.double(), b.double())
    check.budget(ours.detach(), theirs.detach(), truth, "autocast output", floor_ulps=2)
    g = torch.randn(ours.shape).bfloat16()
    ours_g = torch.autograd.grad(ours, (a, b), g)
    theirs_g = torch.autograd.grad(theirs, (a, b), g)
    ra, rb = a.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    truth_g = torch.autograd.grad(torch.matmul(ra, rb), (ra, rb), g.double())
    for name, o, t, r, leaf in zip(("input", "other"), ours_g, theirs_g, truth_g, (a, b)):
        assert o.dtype == leaf.dtype
        check.budget(o, t.to(o.dtype), r, f"autocast grad {name}", floor_ulps=2)


# ---- bad input ------------------------------------------------------------------------------------

f32 = torch.randn
BAD_MATMUL = {
    "input_1d": ((f32(5), f32(5, 3)), RuntimeError, ["input", "2-D or 3-D", "[5]"]),
    "other_1d": ((f32(3, 5), f32(5)), RuntimeError, ["other", "2-D or 3-D"]),
    "input_4d": ((f32(2, 2, 3, 5), f32(5, 3)), RuntimeError, ["input", "[2, 2, 3, 5]"]),
    "other_4d": ((f32(3, 5), f32(2, 2, 5, 3)), RuntimeError, ["other", "2-D or 3-D"]),
    "input_0d": ((torch.tensor(1.0), f32(5, 3)), RuntimeError, ["input"]),
    "inner_mismatch": ((f32(3, 5), f32(6, 3)), RuntimeError, ["input", "other", "(5)", "(6)"]),
    "inner_mismatch_3d": ((f32(2, 3, 5), f32(2, 6, 3)), RuntimeError, ["input", "other"]),
    "batch_mismatch": ((f32(2, 3, 5), f32(3, 5, 4)), RuntimeError, ["batch", "input", "other"]),
    "input_int": ((torch.ones(3, 5, dtype=torch.int64), f32(5, 3)), TypeError, ["input"]),
    "other_int": ((f32(3, 5), torch.ones(5, 3, dtype=torch.int32)), TypeError, ["other"]),
    "input_fp16": ((f32(3, 5).half(), f32(5, 3).half()), TypeError, ["input", "float32"]),
    "mixed_f32_f64": ((f32(3, 5), f32(5, 3).double()), TypeError, ["other", "input"]),
    "mixed_f64_f32": ((f32(3, 5).double(), f32(5, 3)), TypeError, ["other", "input"]),
}


@pytest.mark.parametrize("case", list(BAD_MATMUL))
def test_bad_input_matmul(case):
    args, exc, words = BAD_MATMUL[case]
    assert_raises_named(lambda: matmul(*args), exc, words, "matmul")
    g = torch.randn(3, 3)
    assert_raises_named(lambda: ops.matmul_backward(g.to(args[0].dtype), *args, [True, True]), exc,
                   [w for w in words if w in ("input", "other", "batch")], "matmul_backward")


BAD_MATMUL_BACKWARD = {
    "grad_output_shape": ((f32(3, 4), f32(3, 5), f32(5, 3)), RuntimeError, ["grad_output", "[3, 3]"]),
    "grad_output_rank": ((f32(1, 3, 3), f32(3, 5), f32(5, 3)), RuntimeError, ["grad_output"]),
    "grad_output_int": ((torch.ones(3, 3, dtype=torch.int64), f32(3, 5), f32(5, 3)), TypeError,
                        ["grad_output"]),
    "grad_output_f64": ((f32(3, 3).double(), f32(3, 5), f32(5, 3)), TypeError, ["grad_output"]),
}


@pytest.mark.parametrize("case", list(BAD_MATMUL_BACKWARD))
def test_bad_input_matmul_backward(case):
    args, exc, words = BAD_MATMUL_BACKWARD[case]
    assert_raises_named(lambda: ops.matmul_backward(*args, [True, True]), exc, words, "matmul_backward")


@pytest.mark.parametrize("case", [c for c in BAD_MATMUL if BAD_MATMUL[c][1] is RuntimeError])
def test_bad_shapes_rejected_on_meta(case):
    # the fake (meta) implementation refuses what the CPU kernel refuses, instead of inventing
    # an output shape for torch.compile to trace with
    args, _, _ = BAD_MATMUL[case]
    with pytest.raises(RuntimeError, match="fusedops.matmul"):
        matmul(*(a.to("meta") for a in args))

# ---- the CUDA kernels: on the simulator (`fusedops_sim`, CPU tensors, in every build) and on a
# GPU when one is present. Low precision follows the error-budget rule of conftest.check_close:
# |ours - ref64| <= 2 |torch_lowp - ref64| + tiny, torch computing in the same dtype on the CPU.

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", CUDA_DTYPES)
@pytest.mark.parametrize("sa,sb", [((5, 6), (6, 7)), ((3, 5, 6), (6, 7)), ((5, 6), (3, 6, 7)),
                                   ((1, 5, 6), (3, 6, 7)), ((3, 5, 6), (3, 6, 7))])
def test_cuda_matmul_and_backward(backend, dtype, sa, sb):
    torch.manual_seed(2)
    a, b = torch.randn(*sa), torch.randn(*sb)
    d = dev(backend)
    out = op(backend, "matmul")(a.to(d, dtype), b.to(d, dtype))
    check_close(out, torch.matmul(a.double(), b.double()), torch.matmul(a.to(dtype), b.to(dtype)),
                dtype, "matmul")
    g = torch.randn(out.shape)
    ref = torch.ops.fusedops.matmul_backward(g.double(), a.double(), b.double(), [True, True])
    lowp = [t.to(dtype) for t in torch.ops.fusedops.matmul_backward(
        g.to(dtype).float(), a.to(dtype).float(), b.to(dtype).float(), [True, True])]
    ours = op(backend, "matmul_backward")(g.to(d, dtype), a.to(d, dtype), b.to(d, dtype), [True, True])
    for o, r, lp in zip(ours, ref, lowp):
        assert o.shape == r.shape
        check_close(o, r, lp, dtype, "matmul_backward")
