"""Drop-in adoption (fp32): one training step of a model as its user wrote it, after
``fusedops.patch(model)``, against the same model unpatched, same weights and data, in the same
run. One call = forward, loss, backward and a torch.optim.AdamW step with lr=0 (the weights stay,
so every call does the same work and the losses can be compared); the optimizer is torch's on
both sides, so only the patch differs.

Cases (the issue's):
- Hugging Face GPT2LMHeadModel, 6 layers, 384 wide, 6 heads, T256, B8, vocabulary 50257,
  patched with ``fused_head_loss=True`` (the loss from the last hidden states through
  fusedops.ops.linear_cross_entropy: the [2048, 50257] logits never exist);
- Hugging Face LlamaForCausalLM, 6 layers, 384 wide (MLP 1024), 6 heads with 2 KV heads,
  T256, B8, vocabulary 32000, ``fused_head_loss=True``;
- a user-style CNN (conv-BN-ReLU x4 with max pooling, 3x32x32 images, B32, 10 classes);
- a user-style LSTM tagger (embedding 128, bidirectional LSTM 256 on packed sequences of
  lengths 16..64, B32, 20 tags).
FLOPs are analytic: 3x the forward's matrix products (forward, input and weight gradients);
attention counts the full T x T products.
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fusedops

from .harness import Case

PEERS = ("fusedops", "torch")
GPT2 = dict(layers=6, d=384, heads=6, T=256, B=8, vocab=50257)
LLAMA = dict(layers=6, d=384, heads=6, kv_heads=2, ff=1024, T=256, B=8, vocab=32000)


def _gpt2_name(c):
    return f"HF GPT-2 {c['layers']}L d{c['d']} h{c['heads']} T{c['T']} B{c['B']} V{c['vocab']}"


def _llama_name(c):
    return (f"HF Llama {c['layers']}L d{c['d']} h{c['heads']}/kv{c['kv_heads']} T{c['T']} "
            f"B{c['B']} V{c['vocab']}")


CNN_NAME, LSTM_NAME = "user CNN 4xconv-BN B32 3x32x32", "user LSTM tagger packed T64 B32"
GOALS = {(_gpt2_name(GPT2), "train", "torch"): 1.3,
         (_llama_name(LLAMA), "train", "torch"): 1.3,
         (CNN_NAME, "train", "torch"): 1.1,
         (LSTM_NAME, "train", "torch"): 1.1}


def cases(quick: bool):
    gpt2 = dict(GPT2, layers=2, T=64, B=2) if quick else GPT2
    llama = dict(LLAMA, layers=2, T=64, B=2) if quick else LLAMA
    return [gpt2_case(gpt2), llama_case(llama), cnn_case(quick), lstm_case(quick)]


# ---- the user-style models --------------------------------------------------------------------


class UserCNN(nn.Module):
    def __init__(self, widths=(32, 64, 128, 128), classes=10):
        super().__init__()
        layers, cin = [], 3
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            if i % 2 == 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin * 8 * 8, 256), nn.ReLU(),
                                        nn.Linear(256, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class UserTagger(nn.Module):
    def __init__(self, vocab=5000, embed=128, hidden=256, tags=20):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed, padding_idx=0)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, tags)

    def forward(self, tokens, lengths):
        packed = pack_padded_sequence(self.embed(tokens), lengths, batch_first=True,
                                      enforce_sorted=False)
        h, _ = self.lstm(packed)
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=tokens.shape[1])
        return self.out(h)


# ---- the step and the twins ----------------------------------------------------------------------


def _step(model, loss_fn):
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def _twins(make, loss_fn, **patch_options):
    def setup():
        torch.manual_seed(0)
        plain = make()
        patched = copy.deepcopy(plain)
        fusedops.patch(patched, **patch_options)
        return {"fusedops": _step(patched, loss_fn), "torch": _step(plain, loss_fn)}

    return setup


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _lm_loss(ids):
    return lambda model: model(input_ids=ids, labels=ids).loss


def _lm_flops(c, ff, kv_dim):
    d, N, L = c["d"], c["B"] * c["T"], c["layers"]
    per_layer = 2 * N * (d * (d + 2 * kv_dim) + d * d + (3 if ff != 4 * d else 2) * d * ff)
    attention = 4 * c["B"] * c["T"] * c["T"] * d
    return 3 * (L * (per_layer + attention) + 2 * N * d * c["vocab"])


def gpt2_case(c) -> Case:
    import transformers

    def make():
        cfg = transformers.GPT2Config(vocab_size=c["vocab"], n_positions=c["T"], n_embd=c["d"],
                                      n_layer=c["layers"], n_head=c["heads"], resid_pdrop=0.0,
                                      embd_pdrop=0.0, attn_pdrop=0.0)
        return transformers.GPT2LMHeadModel(cfg)

    ids = torch.randint(0, c["vocab"], (c["B"], c["T"]), generator=_gen(1))
    setup = _twins(make, _lm_loss(ids), fused_head_loss=True)
    return Case(_gpt2_name(c), "train", setup, _lm_flops(c, 4 * c["d"], c["d"]))


def llama_case(c) -> Case:
    import transformers

    def make():
        cfg = transformers.LlamaConfig(vocab_size=c["vocab"], hidden_size=c["d"],
                                       intermediate_size=c["ff"], num_hidden_layers=c["layers"],
                                       num_attention_heads=c["heads"],
                                       num_key_value_heads=c["kv_heads"],
                                       max_position_embeddings=c["T"])
        return transformers.LlamaForCausalLM(cfg)

    ids = torch.randint(0, c["vocab"], (c["B"], c["T"]), generator=_gen(1))
    setup = _twins(make, _lm_loss(ids), fused_head_loss=True)
    kv_dim = c["d"] // c["heads"] * c["kv_heads"]
    return Case(_llama_name(c), "train", setup, _lm_flops(c, c["ff"], kv_dim))


def cnn_case(quick: bool) -> Case:
    B = 8 if quick else 32
    x = torch.randn(B, 3, 32, 32, generator=_gen(1))
    y = torch.randint(0, 10, (B,), generator=_gen(2))
    setup = _twins(UserCNN, lambda m: F.cross_entropy(m(x), y))
    macs = 32 * 32 * (3 * 32 + 32 * 64) * 9 + 16 * 16 * (64 * 128 + 128 * 128) * 9
    macs += 128 * 8 * 8 * 256 + 256 * 10
    name = CNN_NAME if not quick else CNN_NAME.replace("B32", f"B{B}")
    return Case(name, "train", setup, 3 * 2 * B * macs)


def lstm_case(quick: bool) -> Case:
    B, T, E, H = 32, 16 if quick else 64, 128, 256
    lengths = torch.randint(T // 4, T + 1, (B,), generator=_gen(3))
    lengths[0] = T
    tokens = torch.randint(1, 5000, (B, T), generator=_gen(1))
    tags = torch.randint(0, 20, (B, T), generator=_gen(2))
    for i, n in enumerate(lengths.tolist()):
        tokens[i, n:] = 0
        tags[i, n:] = -100

    def loss(model):
        return F.cross_entropy(model(tokens, lengths).reshape(-1, 20), tags.reshape(-1))

    setup = _twins(UserTagger, loss)
    steps = int(lengths.sum())
    flops = 3 * 2 * (2 * steps * 4 * H * (E + H) + B * T * 2 * H * 20)
    name = LSTM_NAME if not quick else LSTM_NAME.replace("T64", f"T{T}")
    return Case(name, "train", setup, flops)
