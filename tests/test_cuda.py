"""The CUDA kernels against the CPU ops: on the CUDA simulator (`fusedops_sim`, CPU tensors,
in every build) and on a GPU (`cuda`, when one is present).

Low precision follows the error-budget rule: |ours - ref64| <= 2 |torch_lowp - ref64| + tiny,
with torch computing in the same dtype on the CPU.
"""
import pytest
import torch
import torch.nn.functional as F

import fusedops  # noqa: F401

from conftest import BACKENDS, DTYPES, check_close, dev, op  # noqa: E402


SHAPES = [(1, 1, 1), (7, 16, 33), (33, 65, 7), (65, 33, 64), (40, 133, 24), (130, 70, 129)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("activation", [None, "relu", "gelu", "gelu_tanh"])
def test_linear_forward(backend, dtype, M, N, K, activation):
    torch.manual_seed(M * 1000 + N * 10 + K)
    x, w, b = torch.randn(M, K), torch.randn(N, K) / K**0.5, torch.randn(N)
    acts = {None: lambda t: t, "relu": F.relu, "gelu": F.gelu,
            "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}
    ref = acts[activation](F.linear(x.double(), w.double(), b.double()))
    lowp = acts[activation](F.linear(x.to(dtype), w.to(dtype), b.to(dtype)))
    d = dev(backend)
    out = op(backend, "linear")(x.to(d, dtype), w.to(d, dtype), b.to(d, dtype), activation)
    assert out.dtype == dtype and out.shape == (M, N)
    check_close(out, ref, lowp, dtype, "linear")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_strided_and_batched(backend, dtype):
    torch.manual_seed(0)
    d = dev(backend)
    x = torch.randn(3, 17, 2 * 40)[..., ::2]            # non-contiguous input, 3-D
    w = torch.randn(40, 29).t()                         # transposed weight [29, 40]
    ref = F.linear(x.double(), w.double())
    lowp = F.linear(x.to(dtype), w.to(dtype))
    out = op(backend, "linear")(x.to(d, dtype), w.to(d, dtype), None, None)
    check_close(out, ref, lowp, dtype, "linear strided")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
def test_linear_backward(backend, dtype, activation):
    torch.manual_seed(1)
    M, N, K = 37, 45, 70
    x, w, b = torch.randn(M, K), torch.randn(N, K) / K**0.5, torch.randn(N)
    g = torch.randn(M, N)
    z = F.linear(x, w, b)
    act_in = F.relu(z) if activation == "relu" else z
    mask = [True, True, True]
    ref = torch.ops.fusedops.linear_backward(g.double(), x.double(), w.double(),
                                             act_in.double(), activation, mask)
    lowp = torch.ops.fusedops.linear_backward(  # a float32 CPU run of the low-precision inputs
        g.to(dtype).float(), x.to(dtype).float(), w.to(dtype).float(),
        act_in.to(dtype).float(), activation, mask)
    d = dev(backend)
    ours = op(backend, "linear_backward")(g.to(d, dtype), x.to(d, dtype), w.to(d, dtype),
                                          act_in.to(d, dtype), activation, mask)
    for name, o, r, lp in zip(("grad_input", "grad_weight", "grad_bias"), ours, ref, lowp):
        # the low-precision budget: rounding the inputs plus rounding the result to `dtype`
        lp = lp.to(dtype) if dtype in (torch.float16, torch.bfloat16) else lp
        check_close(o, r, lp, dtype, name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sa,sb", [((5, 6), (6, 7)), ((3, 5, 6), (6, 7)), ((5, 6), (3, 6, 7)),
                                   ((1, 5, 6), (3, 6, 7)), ((3, 5, 6), (3, 6, 7))])
def test_matmul_and_backward(backend, dtype, sa, sb):
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


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input(backend):
    d = dev(backend)
    f = op(backend, "linear")
    with pytest.raises(TypeError, match="fusedops.linear: input"):
        f(torch.ones(2, 3, dtype=torch.int32, device=d), torch.ones(4, 3, device=d), None, None)
    with pytest.raises(RuntimeError, match="fusedops.linear: weight must be 2-D"):
        f(torch.ones(2, 3, device=d), torch.ones(4, 3, 1, device=d), None, None)
    with pytest.raises(TypeError, match="fusedops.matmul: other must have the dtype"):
        op(backend, "matmul")(torch.ones(2, 3, device=d), torch.ones(3, 4, dtype=torch.float64, device=d))
