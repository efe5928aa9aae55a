"""fusedops.ops.embedding, its backward operator and fusedops.nn.Embedding against torch: the
gather over index shapes and dtypes, the gradient (repeated rows, padding_idx, negative
padding_idx, scale_grad_by_freq, rows never used, empty input), its determinism, the
unsupported arguments and out-of-range indices refused with clear errors; gradcheck, opcheck,
torch.compile, meta tensors; the drop-in module (constructor, init, state_dict); and the CUDA
kernels on the simulator (and a GPU when present) against the CPU op.
"""
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

import fusedops
from conftest import BACKENDS, assert_raises_named, dev, op
from fusedops import ops as fops

ops = torch.ops.fusedops
FLOATS = (torch.float32, torch.float64)


def _grads(fn, idx, w, g, **kw):
    w = w.detach().clone().requires_grad_()
    out = fn(idx, w, **kw)
    (gw,) = torch.autograd.grad(out, w, g)
    return out.detach(), gw


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("idx_dtype", (torch.int64, torch.int32), ids=str)
@pytest.mark.parametrize("shape", ((1,), (7,), (3, 5), (2, 3, 4), ()), ids=str)
@pytest.mark.parametrize("kw", ({}, {"padding_idx": 2}, {"padding_idx": -1}, {"scale_grad_by_freq": True},
                                {"padding_idx": 0, "scale_grad_by_freq": True}), ids=str)
def test_values_and_grad_vs_torch(dtype, idx_dtype, shape, kw):
    V, D = 11, 13
    w = torch.randn(V, D, dtype=dtype)
    idx = torch.randint(0, V, shape, dtype=idx_dtype)
    if idx.numel() > 2:
        idx.view(-1)[:3] = torch.tensor([2, 2, V - 1], dtype=idx_dtype)  # repeats, padding rows
    g = torch.randn(*shape, D, dtype=dtype)
    out, gw = _grads(fops.embedding, idx, w, g, **kw)
    ref, gref = _grads(F.embedding, idx.long(), w, g, **kw)
    assert torch.equal(out, ref)  # a gather is exact
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(gw, gref, rtol=tol, atol=tol)
    if "padding_idx" in kw:
        assert torch.equal(gw[kw["padding_idx"]], torch.zeros(D, dtype=dtype))


def test_grad_is_token_order_sum_and_untouched_rows_are_zero():
    V, D = 1000, 33
    w = torch.randn(V, D)
    idx = torch.randint(0, 50, (4096,))  # rows 50.. never used
    g = torch.randn(4096, D)
    gw = ops.embedding_backward(g, idx, V, None, False)
    assert torch.equal(gw[50:], torch.zeros(V - 50, D))
    for row in (0, 17, 49):  # each row: the sum of its tokens' gradients in token order
        want = torch.zeros(D)
        for t in (idx == row).nonzero().flatten().tolist():
            want = want + g[t]
        assert torch.equal(gw[row], want)


@pytest.mark.parametrize("threads", (1, 2))
def test_backward_same_bits_any_thread_count(threads):
    torch.manual_seed(1)
    V, D = 5000, 96
    idx = torch.randint(0, 300, (8192,))
    g = torch.randn(8192, D)
    torch.set_num_threads(1)
    ref = ops.embedding_backward(g, idx, V, 5, False)
    torch.set_num_threads(threads)
    assert torch.equal(ops.embedding_backward(g, idx, V, 5, False), ref)


def test_strided_weight_rows_and_non_contiguous():
    base = torch.randn(20, 30)
    w = base[:, ::2]  # rows 30 apart, elements 2 apart: copied; w[:, :8] rows apart in place
    idx = torch.tensor([[3, 1], [19, 0]])
    assert torch.equal(fops.embedding(idx, w), F.embedding(idx, w))
    assert torch.equal(fops.embedding(idx, base[:, :8]), F.embedding(idx, base[:, :8]))
    assert torch.equal(fops.embedding(idx.t(), w), F.embedding(idx.t(), w))
    g = torch.randn(2, 2, 15).transpose(0, 1)
    torch.testing.assert_close(ops.embedding_backward(g, idx.t(), 20, None, False),
                               ops.embedding_backward(g.contiguous(), idx.t().contiguous(), 20, None, False))


def test_empty():
    w = torch.randn(5, 4, requires_grad=True)
    out = fops.embedding(torch.empty(0, 3, dtype=torch.long), w)
    assert out.shape == (0, 3, 4)
    out.sum().backward()
    assert torch.equal(w.grad, torch.zeros(5, 4))
    assert fops.embedding(torch.tensor([1, 2]), torch.empty(5, 0)).shape == (2, 0)


def test_unsupported_and_bad_input():
    w = torch.randn(10, 4)
    idx = torch.tensor([1, 2])
    with pytest.raises(NotImplementedError, match="fusedops.embedding: max_norm is not supported"):
        fops.embedding(idx, w, max_norm=1.0)
    with pytest.raises(NotImplementedError, match="fusedops.embedding: sparse=True is not supported"):
        fops.embedding(idx, w, sparse=True)
    with pytest.raises(NotImplementedError, match="max_norm is not supported"):
        fusedops.nn.Embedding(10, 4, max_norm=2.0)
    with pytest.raises(NotImplementedError, match="sparse=True"):
        fusedops.nn.Embedding(10, 4, sparse=True)
    assert_raises_named(lambda: ops.embedding(idx, w, None, 1.0), RuntimeError, ["max_norm", "not supported"],
                        "embedding")
    assert_raises_named(lambda: fops.embedding(torch.tensor([1, 10]), w), IndexError,
                        ["input", "[0, 10)", "got 10", "position 1"], "embedding")
    assert_raises_named(lambda: fops.embedding(torch.tensor([[0], [-1]]), w), IndexError, ["got -1"], "embedding")
    assert_raises_named(lambda: fops.embedding(idx.float(), w), TypeError, ["input", "int64"], "embedding")
    assert_raises_named(lambda: fops.embedding(idx, w[0]), RuntimeError, ["weight", "2-D"], "embedding")
    assert_raises_named(lambda: fops.embedding(idx, w, padding_idx=10), RuntimeError, ["padding_idx"],
                        "embedding")
    assert_raises_named(lambda: fops.embedding(idx, w.int()), TypeError, ["weight"], "embedding")
    assert_raises_named(lambda: ops.embedding_backward(torch.randn(3, 4), idx, 10, None, False), RuntimeError,
                        ["grad_output", "shape"], "embedding_backward")
    assert_raises_named(lambda: ops.embedding_backward(torch.randn(2, 4), torch.tensor([0, 12]), 10, None, False),
                        IndexError, ["got 12"], "embedding_backward")


def test_module_drop_in():
    torch.manual_seed(0)
    t = torch.nn.Embedding(20, 6, padding_idx=3)
    torch.manual_seed(0)
    m = fusedops.nn.Embedding(20, 6, padding_idx=3)
    assert isinstance(m, torch.nn.Embedding)
    assert torch.equal(m.weight, t.weight)  # same init (padding row zeroed)
    assert list(m.state_dict()) == list(t.state_dict()) == ["weight"]
    assert repr(m) == repr(t)
    m2 = fusedops.nn.Embedding(20, 6, padding_idx=3)
    m2.load_state_dict(t.state_dict())
    idx = torch.randint(0, 20, (4, 9))
    assert torch.equal(m2(idx), t(idx))
    m2(idx).pow(2).sum().backward()
    t(idx).pow(2).sum().backward()
    torch.testing.assert_close(m2.weight.grad, t.weight.grad)
    e = fusedops.nn.Embedding.from_pretrained(torch.randn(4, 2))
    assert isinstance(e, fusedops.nn.Embedding) and not e.weight.requires_grad


def test_gradcheck():
    # padding_idx and scale_grad_by_freq change the gradient away from the true derivative (as
    # torch's): they are checked where they have no effect here, and against torch above
    w = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([[0, 2, 2], [5, 1, 2]])
    assert gradcheck(lambda t: fops.embedding(idx, t), (w,))
    assert gradcheck(lambda t: fops.embedding(idx, t, padding_idx=3), (w,))
    assert gradcheck(lambda t: fops.embedding(torch.tensor([4, 0, 1]), t, scale_grad_by_freq=True), (w,))


def test_opcheck():
    w = torch.randn(9, 5, requires_grad=True)
    idx = torch.tensor([[1, 8], [1, 0]])
    torch.library.opcheck(ops.embedding.default, (idx, w))
    torch.library.opcheck(ops.embedding.default, (idx.int(), w, 1, None, 2.0, True, False))
    torch.library.opcheck(ops.embedding_backward.default, (torch.randn(2, 2, 5), idx, 9, 1, True))


def test_compile_aot_eager():
    torch._dynamo.reset()
    w = torch.randn(30, 8, requires_grad=True)

    def f(idx):
        return fops.embedding(idx, w, padding_idx=0).sum(1)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    idx = torch.randint(0, 30, (5, 7))
    out_c = compiled(idx)
    (gc,) = torch.autograd.grad(out_c.sum(), w)
    out_e = f(idx)
    (ge,) = torch.autograd.grad(out_e.sum(), w)
    assert torch.equal(out_c, out_e) and torch.equal(gc, ge)


def test_meta_matches_real():
    w, idx = torch.randn(9, 5), torch.tensor([[1, 8], [1, 0]])
    real, meta = fops.embedding(idx, w), fops.embedding(idx.to("meta"), w.to("meta"))
    assert (meta.shape, meta.dtype, meta.stride()) == (real.shape, real.dtype, real.stride())


# ---- CUDA kernels: simulator (and GPU) against the CPU op ----------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=str)
def test_cuda_same_bits_as_cpu(backend, dtype):
    d = dev(backend)
    for V, D, n in ((1, 1, 1), (7, 5, 9), (70, 130, 50), (33, 129, 300)):
        w = torch.randn(V, D, dtype=dtype)
        idx = torch.randint(0, V, (n,))
        g = torch.randn(n, D, dtype=dtype)
        assert torch.equal(op(backend, "embedding")(idx.to(d), w.to(d)).cpu(), ops.embedding(idx, w))
        for pad, freq in ((None, False), (0, False), (V - 1, True)):
            got = op(backend, "embedding_backward")(g.to(d), idx.to(d), V, pad, freq).cpu()
            assert torch.equal(got, ops.embedding_backward(g, idx, V, pad, freq)), (V, D, n, pad, freq)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16), ids=str)
def test_cuda_half_types(backend, dtype):
    d = dev(backend)
    w = torch.randn(40, 24)
    idx = torch.randint(0, 40, (3, 17)).int()
    g = torch.randn(3, 17, 24)
    assert torch.equal(op(backend, "embedding")(idx.to(d), w.to(d, dtype)).cpu(), F.embedding(idx.long(), w.to(dtype)))
    got = op(backend, "embedding_backward")(g.to(d, dtype), idx.to(d), 40, None, False).cpu().float()
    ref = ops.embedding_backward(g.to(dtype).float(), idx, 40, None, False)
    torch.testing.assert_close(got, ref, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_bad_index(backend):
    d = dev(backend)
    assert_raises_named(lambda: op(backend, "embedding")(torch.tensor([0, 9]).to(d), torch.randn(9, 2).to(d)),
                        IndexError, ["got 9", "position 1"], "embedding")
