"""fusedops.ops.dropout, its backward operator and fusedops.nn.Dropout: the kept fraction,
the kept values, the mask shared by forward and backward (regenerated, never stored), p = 0 and
eval mode returning the input itself, reproducibility from torch's seed, non-contiguous input,
bf16; gradcheck, opcheck, torch.compile, meta tensors, bad input; and the CUDA kernel on the
simulator (and a GPU when present) against the CPU op, bit for bit.
"""
import math

import pytest
import torch
from torch.autograd import gradcheck

import fusedops
from conftest import BACKENDS, assert_raises_named, dev, op
from fusedops import ops as fops

ops = torch.ops.fusedops
RNG = torch.tensor([20240611, 12345], dtype=torch.int64)


def _scale(p, dtype=torch.float32):
    return torch.tensor(1.0 / (1.0 - p), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("p", (0.1, 0.5, 0.9))
def test_kept_fraction_and_values(p):
    x = torch.randn(200_003)
    out = ops.dropout(x, p, RNG)
    kept = out != 0
    n = x.numel()
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(int(kept.sum()) - n * (1 - p)) < 5 * sigma, (int(kept.sum()), n * (1 - p))
    # kept elements are x / (1 - p) exactly as float32 computes it; the others are 0
    assert torch.equal(out[kept], x[kept] * _scale(p))
    assert torch.equal(out[~kept], torch.zeros_like(out[~kept]))


def test_masks_independent_of_position_neighbours():
    # a different offset shifts the counters: the masks differ, and are not a shifted copy
    x = torch.ones(4096)
    a = ops.dropout(x, 0.5, RNG) != 0
    b = ops.dropout(x, 0.5, RNG + torch.tensor([0, 1])) != 0
    assert not torch.equal(a, b)
    assert torch.equal(a[1:], b[:-1])  # counter = offset + i: offset + 1 is the mask moved by one
    c = ops.dropout(x, 0.5, RNG + torch.tensor([1, 0])) != 0
    assert 0.4 < (a == c).float().mean().item() < 0.6  # another seed: unrelated


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=str)
def test_backward_regenerates_the_mask(dtype):
    x = torch.randn(3, 257, 33, dtype=dtype, requires_grad=True)
    torch.manual_seed(7)
    out = fops.dropout(x, 0.3)
    g = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, g)
    kept = out.detach() != 0
    assert torch.equal(gx, torch.where(kept, g * _scale(0.3, dtype), torch.zeros_like(g)))


def test_p0_and_eval_return_the_input_itself():
    x = torch.randn(5, 7, requires_grad=True)
    assert fops.dropout(x, 0.0) is x
    assert fops.dropout(x, 0.5, training=False) is x
    m = fusedops.nn.Dropout(0.5).eval()
    assert m(x) is x
    assert fusedops.nn.Dropout(0.0)(x) is x


def test_p1_gives_zeros():
    x = torch.randn(100, requires_grad=True)
    out = fops.dropout(x, 1.0)
    assert torch.equal(out, torch.zeros(100))
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros(100))


def test_reproducible_from_torch_seed_and_fresh_each_call():
    x = torch.randn(10_000)
    torch.manual_seed(3)
    a, b = fops.dropout(x, 0.5), fops.dropout(x, 0.5)
    torch.manual_seed(3)
    a2 = fops.dropout(x, 0.5)
    assert torch.equal(a, a2)
    assert not torch.equal(a, b)


def test_non_contiguous_follows_logical_order():
    x = torch.randn(64, 48).t()
    assert torch.equal(ops.dropout(x, 0.4, RNG), ops.dropout(x.contiguous(), 0.4, RNG))
    xe = torch.randn(1, 37).expand(5, 37)
    assert torch.equal(ops.dropout(xe, 0.4, RNG), ops.dropout(xe.contiguous(), 0.4, RNG))


def test_empty_and_scalar():
    assert ops.dropout(torch.empty(0, 3), 0.5, RNG).shape == (0, 3)
    s = torch.tensor(2.0)
    assert ops.dropout(s, 0.5, RNG).shape == ()


def test_bf16_is_the_fp32_result_rounded():
    x = torch.randn(3001).bfloat16()
    out = ops.dropout(x, 0.25, RNG)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, ops.dropout(x.float(), 0.25, RNG).bfloat16())


def test_module_drop_in():
    t = torch.nn.Dropout(0.2, inplace=True)
    m = fusedops.nn.Dropout(0.2, inplace=True)
    assert isinstance(m, torch.nn.Dropout)
    assert repr(m) == repr(t) and m.state_dict().keys() == t.state_dict().keys()
    x = torch.randn(50_000)
    y = m(x)
    assert y is not x and not torch.equal(y, x)  # inplace=True computes out of place
    assert abs((y != 0).float().mean().item() - 0.8) < 0.01


def test_gradcheck():
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: ops.dropout(t, 0.4, RNG), (x,))
    assert torch.autograd.gradgradcheck(lambda t: ops.dropout(t, 0.4, RNG), (x,))


def test_opcheck():
    x = torch.randn(3, 5, 7, requires_grad=True)
    torch.library.opcheck(ops.dropout.default, (x, 0.3, RNG))
    torch.library.opcheck(ops.dropout_backward.default, (x.detach(), 0.3, RNG))


def test_compile_aot_eager():
    torch._dynamo.reset()

    def f(x, rng):
        return ops.dropout(x, 0.3, rng) * 2

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    x = torch.randn(6, 11, requires_grad=True)
    out_c, out_e = compiled(x, RNG), f(x, RNG)
    assert torch.equal(out_c, out_e)
    g = torch.randn(6, 11)
    assert torch.equal(torch.autograd.grad(out_c, x, g)[0], torch.autograd.grad(out_e, x, g)[0])


def test_meta_matches_real():
    x = torch.randn(3, 4, 5)
    real, meta = ops.dropout(x, 0.5, RNG), ops.dropout(x.to("meta"), 0.5, RNG)
    assert (meta.shape, meta.dtype, meta.stride()) == (real.shape, real.dtype, real.stride())


def test_bad_input():
    x = torch.randn(3, 5)
    assert_raises_named(lambda: ops.dropout(x, 1.5, RNG), RuntimeError, ["p", "[0, 1]", "1.5"], "dropout")
    assert_raises_named(lambda: ops.dropout(x, 0.5, RNG.int()), RuntimeError, ["rng", "int64"], "dropout")
    assert_raises_named(lambda: ops.dropout(x, 0.5, RNG[:1]), RuntimeError, ["rng", "2 elements"], "dropout")
    assert_raises_named(lambda: ops.dropout(x.int(), 0.5, RNG), TypeError, ["input", "Int"], "dropout")
    with pytest.raises(ValueError, match="fusedops.dropout: p must be in"):
        fops.dropout(x, -0.1)


# ---- CUDA kernel: simulator (and GPU) against the CPU op ------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64, torch.bfloat16), ids=str)
def test_cuda_same_bits_as_cpu(backend, dtype):
    d = dev(backend)
    for shape in ((1,), (7,), (33, 65), (2, 3, 257)):
        x = torch.randn(shape, dtype=dtype)
        for p in (0.0, 0.3, 1.0):
            want = ops.dropout(x, p, RNG)
            assert torch.equal(op(backend, "dropout")(x.to(d), p, RNG).cpu(), want), (shape, p)
            assert torch.equal(op(backend, "dropout_backward")(x.to(d), p, RNG).cpu(), want), (shape, p)
    xt = torch.randn(40, 24, dtype=dtype).t()
    assert torch.equal(op(backend, "dropout")(xt.to(d), 0.5, RNG).cpu(), ops.dropout(xt, 0.5, RNG))


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_half_keeps_the_same_elements(backend):
    d = dev(backend)
    x = torch.randn(1000)
    got = op(backend, "dropout")(x.half().to(d), 0.5, RNG).cpu()
    assert torch.equal(got != 0, ops.dropout(x.half().float(), 0.5, RNG) != 0)
