"""The model set (fusedops.models) on fusedops layers against the same model on torch's layers
(backend="torch"): same seed, same parameters and state_dict keys; the same outputs, loss and
every gradient. Training techniques: penalties, weight decay, torch's learning-rate schedulers
driving fusedops.optim optimizers, early stopping. Bad configurations raise clear errors."""
import math

import pytest
import torch

import fusedops
from fusedops import models as M


def twins(make):
    torch.manual_seed(0)
    ours = make("fusedops")
    torch.manual_seed(0)
    theirs = make("torch")
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (n, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), n
    return ours, theirs


def compare(ours, theirs, inputs, target, atol=2e-5, rtol=1e-4):
    """Outputs, loss and every parameter gradient of the loss agree."""
    torch.testing.assert_close(ours(*inputs), theirs(*inputs), atol=atol, rtol=rtol)
    lo, lt = ours.loss(*inputs, target), theirs.loss(*inputs, target)
    torch.testing.assert_close(lo, lt, atol=atol, rtol=rtol)
    lo.backward()
    lt.backward()
    for (n, a), b in zip(ours.named_parameters(), theirs.parameters()):
        assert a.grad is not None, n
        torch.testing.assert_close(a.grad, b.grad, atol=atol, rtol=rtol, msg=n)


def test_linear_regression_twin():
    ours, theirs = twins(lambda b: M.LinearRegression(7, backend=b))
    x, y = torch.randn(33, 7), torch.randn(33)
    compare(ours, theirs, (x,), y)
    assert ours(x).shape == (33,)
    ours2, theirs2 = twins(lambda b: M.LinearRegression(7, 3, backend=b))
    compare(ours2, theirs2, (x,), torch.randn(33, 3))


@pytest.mark.parametrize("classes", [2, 5])
def test_logistic_regression_twin(classes):
    ours, theirs = twins(lambda b: M.LogisticRegression(6, classes, backend=b))
    x, y = torch.randn(40, 6), torch.randint(0, classes, (40,))
    compare(ours, theirs, (x,), y)
    p = ours.predict_proba(x)
    if classes == 2:
        assert p.shape == (40,) and ((p > 0.5).long() == ours.predict(x)).all()
    else:
        torch.testing.assert_close(p.sum(-1), torch.ones(40))
        assert (p.argmax(-1) == ours.predict(x)).all()


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("init", ["kaiming", "xavier", "default"])
def test_mlp_twin(activation, batch_norm, init):
    ours, theirs = twins(lambda b: M.MLP(13, [17, 9], 4, activation, batch_norm=batch_norm,
                                         init=init, backend=b))
    x, y = torch.randn(21, 13), torch.randint(0, 4, (21,))
    compare(ours, theirs, (x,), y)


def test_mlp_init_choices():
    torch.manual_seed(0)
    k = M.MLP(400, [300], 10, init="kaiming")
    x = M.MLP(400, [300], 10, init="xavier")
    w_k, w_x = k.layers[0].weight, x.layers[0].weight
    assert abs(w_k.std().item() - math.sqrt(2 / 400)) < 0.1 * math.sqrt(2 / 400)
    bound = math.sqrt(6 / (400 + 300))
    assert w_x.abs().max() <= bound and w_x.abs().max() > 0.9 * bound
    assert torch.count_nonzero(k.layers[0].bias) == 0


def test_mlp_dropout_active_in_training_only():
    m = M.MLP(8, [64], 3, dropout=0.5)
    x = torch.randn(4, 8)
    m.train()
    assert not torch.equal(m(x), m(x))
    m.eval()
    assert torch.equal(m(x), m(x))


@pytest.mark.parametrize("arch", ["small", "mnist"])
@pytest.mark.parametrize("shape", [(1, 28), (1, 8), (3, 12)])
def test_cnn_twin(arch, shape):
    c, s = shape
    ours, theirs = twins(lambda b: getattr(M.CNN, arch)(in_channels=c, image_size=s,
                                                        num_classes=7, backend=b))
    x, y = torch.randn(5, c, s, s), torch.randint(0, 7, (5,))
    compare(ours, theirs, (x,), y, atol=5e-5)


def test_cnn_architectures():
    small, mnist = M.CNN.small(), M.CNN.mnist()
    assert [c.out_channels for c in small.convs] == [32]
    assert [f.out_features for f in small.fcs] == [128, 10]
    assert small.fcs[0].in_features == 32 * 13 * 13
    assert [c.out_channels for c in mnist.convs] == [32, 64]
    assert [f.out_features for f in mnist.fcs] == [64, 10]
    assert mnist.fcs[0].in_features == 64 * 7 * 7
    assert small(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert mnist(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert isinstance(small.convs[0], fusedops.nn.Conv2d)
    assert isinstance(M.CNN.small(backend="torch").convs[0], torch.nn.Conv2d)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_rnn_classifier_twin(cell):
    ours, theirs = twins(lambda b: M.RNN(6, 10, 4, cell=cell, num_layers=2, backend=b))
    x, y = torch.randn(3, 9, 6), torch.randint(0, 4, (3,))
    compare(ours, theirs, (x,), y)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_next_token_twin(cell):
    ours, theirs = twins(lambda b: M.RNN(8, 12, 11, cell=cell, vocab_size=11,
                                         task="next_token", backend=b))
    x, y = torch.randint(0, 11, (3, 7)), torch.randint(0, 11, (3, 7))
    y[0, :3] = -100
    compare(ours, theirs, (x,), y)
    prefix = torch.randint(0, 11, (3, 4))
    assert torch.equal(ours.generate(prefix, 5), theirs.generate(prefix, 5))


def test_rnn_generate_continues_state():
    torch.manual_seed(0)
    m = M.RNN(8, 12, 11, vocab_size=11, task="next_token")
    prefix = torch.randint(0, 11, (2, 4))
    got = m.generate(prefix, 3)
    seq = prefix
    for _ in range(3):  # the same greedy choices, recomputed from scratch each step
        seq = torch.cat([seq, m(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(got, seq[:, 4:])


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_twin(norm_first):
    ours, theirs = twins(lambda b: M.Transformer(13, 11, 16, 4, 2, 2, 32, dropout=0.0,
                                                 norm_first=norm_first, backend=b))
    src = torch.randint(1, 13, (3, 8))
    src[0, -2:] = 0  # padding
    tgt = torch.randint(1, 11, (3, 6))
    tgt[1, -1] = 0
    torch.testing.assert_close(ours(src, tgt), theirs(src, tgt), atol=5e-5, rtol=1e-4)
    lo, lt = ours.loss(src, tgt), theirs.loss(src, tgt)
    torch.testing.assert_close(lo, lt, atol=2e-5, rtol=1e-4)
    lo.backward()
    lt.backward()
    for (n, a), b in zip(ours.named_parameters(), theirs.parameters()):
        assert a.grad is not None, n
        torch.testing.assert_close(a.grad, b.grad, atol=5e-5, rtol=1e-3, msg=n)
    ours.eval()
    theirs.eval()
    assert torch.equal(ours.greedy_decode(src, 1, 5), theirs.greedy_decode(src, 1, 5))


def test_transformer_parts():
    m = M.Transformer(13, 11, 16, 4, 1, 1, 32)
    assert isinstance(m.transformer, fusedops.nn.Transformer)
    pe = m.positions
    assert pe.shape == (512, 16)
    torch.testing.assert_close(pe[:, 0], torch.sin(torch.arange(512.0)))
    torch.testing.assert_close(pe[:, 1], torch.cos(torch.arange(512.0)))
    assert "positions" not in m.state_dict()
    # padding in the source must not change the decoding of the other tokens' meaning
    m.eval()
    src = torch.tensor([[3, 4, 5, 0, 0]])
    out_padded = m(src, torch.tensor([[1, 2]]))
    out_short = m(src[:, :3], torch.tensor([[1, 2]]))
    torch.testing.assert_close(out_padded, out_short, atol=1e-5, rtol=1e-5)


def test_gpt_is_exported():
    assert M.GPT is fusedops.models.gpt.GPT


# ---- training techniques ----------------------------------------------------------------------


def test_penalties():
    m = M.MLP(3, [4], 2)
    w = [m.layers[0].weight, m.layers[1].weight]
    torch.testing.assert_close(M.l1_penalty(m, 0.1), 0.1 * sum(x.abs().sum() for x in w))
    torch.testing.assert_close(M.l2_penalty(m, 0.2), 0.2 * sum((x * x).sum() for x in w))
    M.l2_penalty(m, 1.0).backward()
    torch.testing.assert_close(m.layers[0].weight.grad, 2 * m.layers[0].weight.detach())
    assert m.layers[0].bias.grad is None  # biases are not penalised


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw"])
@pytest.mark.parametrize("sched", ["step", "exponential", "cosine", "plateau", "onecycle"])
def test_torch_schedulers_drive_fusedops_optimizers(name, sched):
    """A torch scheduler on a fusedops optimizer sets the same learning rates and gives the
    same parameters as on torch's optimizer."""
    ours, theirs = twins(lambda b: M.LogisticRegression(5, 3, backend=b))
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    runs = []
    for model, backend in ((ours, "fusedops"), (theirs, "torch")):
        opt = M.make_optimizer(name, model.parameters(), lr=0.1, weight_decay=0.01,
                               backend=backend)
        if sched == "step":
            s = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        elif sched == "exponential":
            s = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.8)
        elif sched == "cosine":
            s = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8)
        elif sched == "plateau":
            s = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0,
                                                           threshold=10.0)
        else:
            s = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=10)
        lrs = []
        for _ in range(8):
            opt.zero_grad()
            loss = model.loss(x, y)
            loss.backward()
            opt.step()
            s.step(loss.item()) if sched == "plateau" else s.step()
            lrs.append(opt.param_groups[0]["lr"])
        runs.append((lrs, [p.detach().clone() for p in model.parameters()]))
    (lr_o, p_o), (lr_t, p_t) = runs
    assert lr_o == pytest.approx(lr_t) and len(set(lr_o)) > 1  # the rate did change
    for a, b in zip(p_o, p_t):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_weight_decay_shrinks_weights():
    torch.manual_seed(0)
    m = M.LinearRegression(4)
    opt = M.make_optimizer("sgd", m.parameters(), lr=0.1, weight_decay=0.5)
    before = m.linear.weight.detach().clone()
    m.linear.weight.grad = torch.zeros_like(before)
    m.linear.bias.grad = torch.zeros_like(m.linear.bias)
    opt.step()
    torch.testing.assert_close(m.linear.weight.detach(), before * (1 - 0.1 * 0.5))
    assert isinstance(opt, fusedops.optim.SGD)


def test_early_stopping_restores_best():
    m = M.LinearRegression(2)
    stop = M.EarlyStopping(patience=2)
    losses = [1.0, 0.5, 0.7, 0.4, 0.6, 0.8, 0.3]
    stopped_at = None
    for i, loss in enumerate(losses):
        with torch.no_grad():
            m.linear.weight.fill_(i)
        if stop.step(loss, m):
            stopped_at = i
            break
    assert stopped_at == 5 and stop.best == 0.4 and stop.best_step == 3
    stop.restore(m)
    assert torch.equal(m.linear.weight, torch.full((1, 2), 3.0))
    with pytest.raises(ValueError, match="patience"):
        M.EarlyStopping(patience=0)
    with pytest.raises(RuntimeError, match="no validation loss"):
        M.EarlyStopping().restore(m)


# ---- bad configurations -----------------------------------------------------------------------


def test_bad_configurations():
    with pytest.raises(ValueError, match="backend must be 'fusedops' or 'torch'"):
        M.MLP(3, [4], 2, backend="numpy")
    with pytest.raises(ValueError, match=r"Transformer: d_model \(30\) must be divisible by "
                                         r"nhead \(4\)"):
        M.Transformer(10, 10, 30, 4)
    with pytest.raises(ValueError, match="activation must be one of"):
        M.MLP(3, [4], 2, activation="tanh")
    with pytest.raises(ValueError, match="init must be one of"):
        M.MLP(3, [4], 2, init="orthogonal")
    with pytest.raises(ValueError, match=r"hidden_sizes\[1\] must be a positive integer"):
        M.MLP(3, [4, 0], 2)
    with pytest.raises(ValueError, match="cell must be one of"):
        M.RNN(3, 4, 2, cell="transformer")
    with pytest.raises(ValueError, match="too small"):
        M.CNN.mnist(image_size=2)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        M.LogisticRegression(3, 1)
    with pytest.raises(ValueError, match="name must be one of"):
        M.make_optimizer("lbfgs", M.MLP(3, [4], 2).parameters(), 0.1)


def test_bad_inputs_and_labels():
    mlp = M.MLP(3, [4], 2)
    with pytest.raises(ValueError, match=r"MLP: input must be \[N, 3\], got shape \[5, 4\]"):
        mlp(torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"MLP: labels must be in \[0, 2\), got values in \[0, 2\]"):
        mlp.loss(torch.randn(3, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        mlp.loss(torch.randn(3, 3), torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        M.LogisticRegression(3).loss(torch.randn(2, 3), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match=r"CNN: input must be \[N, 1, 28, 28\]"):
        M.CNN.small()(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="target must have shape"):
        M.LinearRegression(3).loss(torch.randn(4, 3), torch.randn(4, 1))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\)"):
        M.Transformer(5, 5, 8, 2, 1, 1, 16)(torch.tensor([[1, 7]]), torch.tensor([[1]]))
    with pytest.raises(ValueError, match=r"RNN: input must be \[B, T, 4\]"):
        M.RNN(4, 8, 2)(torch.randn(2, 3, 5))
