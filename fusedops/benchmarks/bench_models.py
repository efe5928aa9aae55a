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

The GPT cases are the training program's step: fusedops.models.GPT on each backend with its
AdamW (fusedops.optim.AdamW, fused; torch.optim.AdamW) at lr 0, under
torch.autocast("cpu", bfloat16) with float32 weights ("bf16 autocast") or in float32: GPT 6 x 384
(6 heads, T256, B8, a 65-token vocabulary, the embedded corpus's) and GPT-2 124M's shape
(12 x 768, 12 heads, T256, B4, 50304 rows). FLOPs: the training program's count, 6 x parameters
+ 12 x layers x T x width per token.
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
         ("Transformer d256 h4 3+3 T64 B32", "train", "torch"): 1.3,
         ("GPT 6x384 T256 B8 V65 bf16 autocast", "train", "torch"): 1.3,
         ("GPT-2 124M 12x768 T256 B4 bf16 autocast", "train", "torch"): 1.5}


def cases(quick: bool):
    out = [mlp_case(quick), cnn_case(quick), lstm_case(quick), transformer_case(quick)]
    if quick:
        return out + [gpt_case("GPT 2x128 T64 B4 V65", 2, 2, 128, 64, 4, 65, bf16=True)]
    return out + [gpt_case("GPT 6x384 T256 B8 V65", 6, 6, 384, 256, 8, 65, bf16=True),
                  gpt_case("GPT 6x384 T256 B8 V65", 6, 6, 384, 256, 8, 65, bf16=False),
                  gpt_case("GPT-2 124M 12x768 T256 B4", 12, 12, 768, 256, 4, 50304, bf16=True)]


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


def gpt_case(name: str, n_layer: int, n_head: int, n_embd: int, T: int, B: int, V: int,
             bf16: bool) -> Case:
    cfg = M.GPTConfig(vocab_size=V, block_size=T, n_layer=n_layer, n_head=n_head, n_embd=n_embd)

    def setup():
        idx = torch.randint(0, V, (B, T), generator=_gen(1))
        tgt = torch.randint(0, V, (B, T), generator=_gen(2))
        steps = {}
        for backend in PEERS:
            torch.manual_seed(0)
            model = M.GPT(cfg, backend=backend)
            lib = fusedops.optim if backend == "fusedops" else torch.optim
            opt = lib.AdamW(model.param_groups(0.1), lr=0.0, betas=(0.9, 0.95), eps=1e-8)

            def step(model=model, opt=opt):
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    _, loss = model(idx, tgt)
                loss.backward()
                opt.step()
                return loss.detach().float()

            steps[backend] = step
        return steps

    params = n_layer * 12 * n_embd * n_embd + V * n_embd  # blocks (weights) + tied embedding
    flops = B * T * (6 * params + 12 * n_layer * T * n_embd)
    return Case(f"{name} {'bf16 autocast' if bf16 else 'fp32'}", "train", setup, flops, bf16=bf16)
