"""Model training steps (fp32): each model of fusedops.models on fusedops layers with a
fusedops.optim optimizer, against the same model on torch's layers (backend="torch") with
torch.optim's, same weights and data. One call = forward, loss, backward and Adam step.

Adam runs with lr=0, so every call does the whole step's work while the weights stay put: the
loss of any call can be compared between the peers (the harness checks it against torch's).
FLOPs are analytic: 3x the forward's matrix products (forward, input and weight gradients);
elementwise work, pooling and the optimizer are left out.

Cases (the issue's): MLP 784-512-512-10 B256; CNN.mnist() B64 (1x28x28, 10 classes); LSTM
classifier I128 H256 T64 B64 (10 classes); Transformer encoder-decoder d_model 256, 4 heads,
3+3 layers, feed-forward 1024, T64 source and target, B32, vocabulary 1000.
"""
import torch

import fusedops  # noqa: F401  (loads the kernels)
from fusedops import models as M

from .harness import Case

PEERS = ("fusedops", "torch")
# the speed goals (ratio = torch's time / ours), 2 threads
GOALS = {("MLP 784-512-512-10 B256", "train", "torch"): 1.3,
         ("CNN.mnist() B64", "train", "torch"): 1.3,
         ("LSTM classifier I128 H256 T64 B64", "train", "torch"): 1.2,
         ("Transformer d256 h4 3+3 T64 B32", "train", "torch"): 1.3}


def cases(quick: bool):
    return [mlp_case(quick), cnn_case(quick), lstm_case(quick), transformer_case(quick)]


def _train_step(model, inputs, target):
    opt_cls = fusedops.optim.Adam if model.backend == "fusedops" else torch.optim.Adam
    opt = opt_cls(model.parameters(), lr=0.0)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model.loss(*inputs, target)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def _twins(make, inputs, target):
    def setup():
        steps = {}
        for backend in PEERS:
            torch.manual_seed(0)
            steps[backend] = _train_step(make(backend), inputs(), target())
        return steps

    return setup


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def mlp_case(quick: bool) -> Case:
    B = 64 if quick else 256
    dims = (784, 512, 512, 10)
    setup = _twins(lambda b: M.MLP(784, [512, 512], 10, backend=b),
                   lambda: (torch.randn(B, 784, generator=_gen(1)),),
                   lambda: torch.randint(0, 10, (B,), generator=_gen(2)))
    flops = 3 * 2 * B * sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    return Case(f"MLP 784-512-512-10 B{B}", "train", setup, flops)


def cnn_case(quick: bool) -> Case:
    B = 16 if quick else 64
    setup = _twins(lambda b: M.CNN.mnist(backend=b),
                   lambda: (torch.randn(B, 1, 28, 28, generator=_gen(1)),),
                   lambda: torch.randint(0, 10, (B,), generator=_gen(2)))
    macs = 28 * 28 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 64 * 7 * 7 * 64 + 64 * 10
    return Case(f"CNN.mnist() B{B}", "train", setup, 3 * 2 * B * macs)


def lstm_case(quick: bool) -> Case:
    B, T, I, H = 64, 16 if quick else 64, 128, 256
    setup = _twins(lambda b: M.RNN(I, H, 10, cell="lstm", backend=b),
                   lambda: (torch.randn(B, T, I, generator=_gen(1)),),
                   lambda: torch.randint(0, 10, (B,), generator=_gen(2)))
    flops = 3 * 2 * (T * B * 4 * H * (I + H) + B * H * 10)
    return Case(f"LSTM classifier I{I} H{H} T{T} B{B}", "train", setup, flops)


def transformer_case(quick: bool) -> Case:
    B, T, d, ff, V, layers = 32, 16 if quick else 64, 256, 1024, 1000, 3
    setup = _twins(lambda b: M.Transformer(V, V, d, 4, layers, layers, ff, dropout=0.0,
                                           max_len=T + 1, backend=b),
                   lambda: (torch.randint(1, V, (B, T), generator=_gen(1)),),
                   lambda: torch.randint(1, V, (B, T + 1), generator=_gen(2)))
    enc = layers * (2 * B * T * (4 * d * d + 2 * d * ff) + 4 * B * T * T * d)
    dec = layers * (2 * B * T * (8 * d * d + 2 * d * ff) + 8 * B * T * T * d)
    head = 2 * B * T * d * V
    return Case(f"Transformer d{d} h4 {layers}+{layers} T{T} B{B}", "train", setup,
                3 * (enc + dec + head))
