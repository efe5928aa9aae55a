"""fusedops.nn.Linear: a drop-in torch.nn.Linear (same init, parameters, state_dict, repr),
with the forward and backward passes in fusedops kernels."""
import copy

import pytest
import torch
import torch.nn.functional as F

from fusedops.nn import Linear


def pair(in_features, out_features, seed=0, **kwargs):
    torch.manual_seed(seed)
    theirs = torch.nn.Linear(in_features, out_features, **kwargs)
    torch.manual_seed(seed)
    ours = Linear(in_features, out_features, **kwargs)
    return ours, theirs


# ---- construction ------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", (True, False))
@pytest.mark.parametrize("features", [(1, 1), (7, 3), (64, 96), (300, 17)], ids=lambda f: f"{f[0]}x{f[1]}")
def test_same_parameters_as_torch_under_same_seed(features, bias):
    ours, theirs = pair(*features, bias=bias)
    assert isinstance(ours, torch.nn.Linear)
    assert (ours.in_features, ours.out_features) == features
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert p.shape == q.shape and p.dtype == q.dtype, name
        assert torch.equal(p, q), f"{name} differs from torch's initialisation"
        assert p.requires_grad
    if not bias:
        assert ours.bias is None


def test_different_seed_gives_different_parameters():
    # the bitwise equality above is not an accident of a fixed initialisation
    a, _ = pair(8, 4, seed=0)
    b, _ = pair(8, 4, seed=1)
    assert not torch.equal(a.weight, b.weight)


@pytest.mark.parametrize("bias", (True, False))
def test_state_dict_keys_and_order(bias):
    ours, theirs = pair(5, 3, bias=bias)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert list(ours.state_dict()) == (["weight", "bias"] if bias else ["weight"])
    for k, v in ours.state_dict().items():
        assert torch.equal(v, theirs.state_dict()[k])


@pytest.mark.parametrize("bias", (True, False))
def test_load_state_dict_both_ways(bias, check):
    x = torch.randn(4, 7, 19)
    torch_model = torch.nn.Linear(19, 11, bias=bias)
    fused = Linear(19, 11, bias=bias)
    assert not torch.equal(fused.weight, torch_model.weight)
    fused.load_state_dict(torch_model.state_dict())
    check.linear(fused(x), x, torch_model.weight, torch_model.bias, None, "torch -> fused")
    torch.testing.assert_close(fused(x), torch_model(x), rtol=1e-5, atol=1e-5)

    fused2 = Linear(19, 11, bias=bias)
    torch_model2 = torch.nn.Linear(19, 11, bias=bias)
    torch_model2.load_state_dict(fused2.state_dict())
    torch.testing.assert_close(torch_model2(x), fused2(x), rtol=1e-5, atol=1e-5)


def test_load_state_dict_strict_errors_like_torch():
    fused = Linear(4, 3)
    with pytest.raises(RuntimeError, match="Missing key"):
        fused.load_state_dict({"weight": torch.zeros(3, 4)})
    with pytest.raises(RuntimeError, match="size mismatch"):
        fused.load_state_dict({"weight": torch.zeros(3, 5), "bias": torch.zeros(3)})


@pytest.mark.parametrize("bias", (True, False))
def test_repr(bias):
    ours, theirs = pair(12, 5, bias=bias)
    assert repr(ours) == repr(theirs)
    assert ours.extra_repr() == f"in_features=12, out_features=5, bias={bias}"


def test_dtype_and_device_kwargs(check):
    ours, theirs = pair(9, 6, dtype=torch.float64)
    assert ours.weight.dtype == ours.bias.dtype == torch.float64
    assert torch.equal(ours.weight, theirs.weight)
    x = torch.randn(3, 9, dtype=torch.float64)
    out = ours(x)
    assert out.dtype == torch.float64
    check.linear(out, x, ours.weight, ours.bias)

    cpu = Linear(9, 6, device="cpu")
    assert cpu.weight.device.type == "cpu"

    meta = Linear(9, 6, device="meta")
    assert meta.weight.device.type == "meta" and meta.bias.device.type == "meta"
    y = meta(torch.randn(2, 5, 9, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, 5, 6)


def test_to_dtype_and_deepcopy(check):
    ours, _ = pair(10, 4)
    ours64 = copy.deepcopy(ours).double()
    assert type(ours64) is Linear
    x = torch.randn(6, 10, dtype=torch.float64)
    check.linear(ours64(x), x, ours64.weight, ours64.bias)
    assert ours.weight.dtype == torch.float32  # the copy did not alias


# ---- forward and backward ------------------------------------------------------------------------


@pytest.mark.parametrize("in_shape", [(19,), (8, 19), (2, 8, 19), (2, 3, 4, 19), (0, 19)],
                         ids=lambda s: "x".join(map(str, s)))
def test_forward_matches_torch(isa, in_shape, check):
    ours, theirs = pair(19, 23)
    x = torch.randn(*in_shape)
    out = ours(x)
    assert out.shape == theirs(x).shape
    check.linear(out, x, theirs.weight, theirs.bias)


@pytest.mark.parametrize("bias", (True, False))
def test_gradients_match_torch(isa, bias, check):
    ours, theirs = pair(256, 384, bias=bias)
    truth = torch.nn.Linear(256, 384, bias=bias).double()
    truth.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 64, 256)
    xs = [x.clone().requires_grad_() for _ in range(2)] + [x.double().requires_grad_()]
    g = torch.randn(4, 64, 384)
    for module, xi, gi in zip((ours, theirs, truth), xs, (g, g, g.double())):
        module(xi).backward(gi)
    check.budget(xs[0].grad, xs[1].grad, xs[2].grad, "grad input")
    check.budget(ours.weight.grad, theirs.weight.grad, truth.weight.grad, "grad weight")
    if bias:
        check.budget(ours.bias.grad, theirs.bias.grad, truth.bias.grad, "grad bias")


def test_frozen_weight_and_no_grad():
    ours, theirs = pair(16, 8)
    ours.weight.requires_grad_(False)
    x = torch.randn(5, 16, requires_grad=True)
    ours(x).sum().backward()
    assert ours.weight.grad is None
    assert ours.bias.grad is not None and x.grad is not None
    with torch.no_grad():
        y = ours(torch.randn(5, 16))
    assert not y.requires_grad


def test_training_steps_track_torch():
    # an MLP of our layers and one of torch's, same init, same data, 20 SGD steps
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.GELU(), torch.nn.Linear(32, 3))
    ours = torch.nn.Sequential(Linear(12, 32), torch.nn.GELU(), Linear(32, 3))
    ours.load_state_dict(theirs.state_dict())
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.1)
    opt_o = torch.optim.SGD(ours.parameters(), lr=0.1)
    x, y = torch.randn(64, 12), torch.randint(0, 3, (64,))
    losses = []
    for _ in range(20):
        for model, opt in ((theirs, opt_t), (ours, opt_o)):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    lt, lo = losses[0::2], losses[1::2]
    assert lo[-1] < lo[0]  # it learns
    for a, b in zip(lt, lo):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (lt, lo)
    for (n, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=n)


# ---- torch.compile ------------------------------------------------------------------------------


def test_compile_mlp_aot_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(Linear(16, 32), torch.nn.ReLU(), Linear(32, 32, bias=False),
                                torch.nn.GELU(), Linear(32, 4))
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(8, 16)
    out_c, out_e = compiled(x), eager(x)
    torch.testing.assert_close(out_c, out_e)
    out_c.square().sum().backward()
    out_e.square().sum().backward()
    for (n, p), (_, q) in zip(model.named_parameters(), eager.named_parameters()):
        assert p.grad is not None, n
        torch.testing.assert_close(p.grad, q.grad, msg=n)


# ---- autocast --------------------------------------------------------------------------------


def test_autocast_bf16_module(check):
    ours, theirs = pair(64, 48)
    x = torch.randn(7, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = ours(x), theirs(x)
    assert a.dtype == b.dtype == torch.bfloat16
    truth = F.linear(x.double(), theirs.weight.double(), theirs.bias.double())
    check.budget(a, b, truth, "autocast nn.Linear", floor_ulps=2)
    a.float().sum().backward()
    assert ours.weight.grad is not None and ours.weight.grad.dtype == torch.float32
