"""fusedops.nn Transformer layers against torch.nn's: same state_dict both ways, and with the
same weights (dropout 0) the same outputs and gradients, over masks, key-padding masks, causal
hints, batch_first and norm_first; bad configurations raise clear errors.

Budget (STYLE.md's error-budget rule): against a float64 run of torch's layer, our error may be
at most a small multiple of torch's own float32 error, plus a floor near float32's epsilon.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

import fusedops

E, H, FF = 24, 4, 40


def assert_budget(ours, theirs, ref, what):
    ref = ref.double()
    scale = ref.abs().max().clamp_min(1e-12)
    err = (ours.double() - ref).abs().max() / scale
    budget = 4 * (theirs.double() - ref).abs().max() / scale + 2e-6
    assert err <= budget, f"{what}: relative error {err:.3g} over budget {budget:.3g}"


def twins(cls_name, *args, **kw):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, cls_name)(*args, **kw)
    ours = getattr(fusedops.nn, cls_name)(*args, **kw)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs, copy.deepcopy(theirs).double()


def run_and_compare(ours, theirs, ref, inputs, kwargs):
    """Forward + backward of a fixed weighted sum in all three; outputs, input gradients and
    every parameter gradient within budget."""
    outs = []
    for m, dt in ((ours, torch.float32), (theirs, torch.float32), (ref, torch.float64)):
        xs = [x.detach().to(dt).requires_grad_() for x in inputs]
        kw = {k: (v.to(dt) if torch.is_tensor(v) and v.is_floating_point() else v)
              for k, v in kwargs.items()}
        y = m(*xs, **kw)
        w = torch.linspace(-1, 1, y.numel(), dtype=dt).reshape(y.shape)
        (y * w).sum().backward()
        outs.append((y, [x.grad for x in xs], [p.grad for p in m.parameters()]))
    (yo, gxo, gpo), (yt, gxt, gpt), (yr, gxr, gpr) = outs
    assert_budget(yo, yt, yr, "output")
    for i, (a, b, r) in enumerate(zip(gxo, gxt, gxr)):
        assert_budget(a, b, r, f"input {i} gradient")
    names = [n for n, _ in ours.named_parameters()]
    assert len(gpo) == len(gpt) and all(g is not None for g in gpo)
    for n, a, b, r in zip(names, gpo, gpt, gpr):
        assert_budget(a, b, r, f"gradient of {n}")


def _shape(batch_first, N, S):
    return (N, S, E) if batch_first else (S, N, E)


def _masks(kind, S, N):
    if kind == "none":
        return {}
    if kind == "causal_float":
        return {"src_mask": torch.nn.Transformer.generate_square_subsequent_mask(S)}
    if kind == "causal_hint":
        return {"src_mask": torch.nn.Transformer.generate_square_subsequent_mask(S),
                "is_causal": True}
    if kind == "bool":
        g = torch.Generator().manual_seed(1)
        m = torch.rand(S, S, generator=g) < 0.3
        m.fill_diagonal_(False)  # True = not allowed (torch's convention); every row sees itself
        return {"src_mask": m}
    if kind == "padding":
        kpm = torch.zeros(N, S, dtype=torch.bool)
        kpm[0, S - 2:] = True
        kpm[-1, S - 1:] = True
        return {"src_key_padding_mask": kpm}
    if kind == "padding_float_causal":
        kpm = torch.zeros(N, S)
        kpm[0, S - 2:] = float("-inf")
        return {"src_key_padding_mask": kpm,
                "src_mask": torch.nn.Transformer.generate_square_subsequent_mask(S)}
    raise AssertionError(kind)


ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "silu": F.silu,
               "gelu_tanh_module": torch.nn.GELU(approximate="tanh")}


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("masks", ["none", "causal_float", "causal_hint", "bool", "padding",
                                   "padding_float_causal"])
def test_encoder_layer_twin(batch_first, norm_first, masks):
    N, S = 3, 7
    ours, theirs, ref = twins("TransformerEncoderLayer", E, H, FF, dropout=0.0,
                              batch_first=batch_first, norm_first=norm_first)
    torch.manual_seed(2)
    x = torch.randn(_shape(batch_first, N, S))
    run_and_compare(ours, theirs, ref, [x], _masks(masks, S, N))


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("bias", [True, False])
def test_encoder_layer_activations_and_bias(activation, bias):
    ours, theirs, ref = twins("TransformerEncoderLayer", E, H, FF, dropout=0.0,
                              activation=ACTIVATIONS[activation], bias=bias, batch_first=True)
    x = torch.randn(2, 5, E)
    run_and_compare(ours, theirs, ref, [x], {})


def test_encoder_layer_unbatched():
    ours, theirs, ref = twins("TransformerEncoderLayer", E, H, FF, dropout=0.0)
    run_and_compare(ours, theirs, ref, [torch.randn(6, E)], {})


def _dec_masks(kind, T, S, N):
    out = {}
    if kind == "causal":
        out["tgt_mask"] = torch.nn.Transformer.generate_square_subsequent_mask(T)
    if kind == "all":  # bool masks throughout (torch warns on mixed mask types)
        out["tgt_mask"] = torch.ones(T, T, dtype=torch.bool).triu(1)
    if kind == "causal_hint":
        out["tgt_mask"] = torch.nn.Transformer.generate_square_subsequent_mask(T)
        out["tgt_is_causal"] = True
    if kind in ("memory", "all"):
        m = torch.zeros(T, S, dtype=torch.bool)
        m[:, -1] = True
        out["memory_mask"] = m
    if kind in ("padding", "all"):
        t = torch.zeros(N, T, dtype=torch.bool)
        t[0, -1] = True
        s = torch.zeros(N, S, dtype=torch.bool)
        s[-1, -2:] = True
        out["tgt_key_padding_mask"] = t
        out["memory_key_padding_mask"] = s
    return out


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("masks", ["none", "causal", "causal_hint", "memory", "padding", "all"])
def test_decoder_layer_twin(batch_first, norm_first, masks):
    N, T, S = 2, 5, 6
    ours, theirs, ref = twins("TransformerDecoderLayer", E, H, FF, dropout=0.0,
                              batch_first=batch_first, norm_first=norm_first, activation="gelu")
    torch.manual_seed(3)
    tgt = torch.randn(_shape(batch_first, N, T))
    mem = torch.randn(_shape(batch_first, N, S))
    run_and_compare(ours, theirs, ref, [tgt, mem], _dec_masks(masks, T, S, N))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
def test_stacks_twin(batch_first, norm_first):
    N, S = 2, 6
    torch.manual_seed(0)
    kw = dict(dropout=0.0, batch_first=batch_first, norm_first=norm_first)
    t_enc = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(E, H, FF, **kw), 2,
                                        torch.nn.LayerNorm(E), enable_nested_tensor=False)
    f_enc = fusedops.nn.TransformerEncoder(fusedops.nn.TransformerEncoderLayer(E, H, FF, **kw), 2,
                                           fusedops.nn.LayerNorm(E))
    f_enc.load_state_dict(t_enc.state_dict())
    x = torch.randn(_shape(batch_first, N, S))
    mask = torch.nn.Transformer.generate_square_subsequent_mask(S)  # detected as causal
    run_and_compare(f_enc, t_enc, copy.deepcopy(t_enc).double(), [x], {"mask": mask})

    t_dec = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(E, H, FF, **kw), 2)
    f_dec = fusedops.nn.TransformerDecoder(fusedops.nn.TransformerDecoderLayer(E, H, FF, **kw), 2)
    f_dec.load_state_dict(t_dec.state_dict())
    mem = torch.randn(_shape(batch_first, N, S + 1))
    run_and_compare(f_dec, t_dec, copy.deepcopy(t_dec).double(), [x, mem],
                    {"tgt_mask": mask})


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_twin(batch_first, norm_first):
    N, S, T = 2, 7, 5
    ours, theirs, ref = twins("Transformer", E, H, 2, 2, FF, dropout=0.0,
                              batch_first=batch_first, norm_first=norm_first)
    torch.manual_seed(4)
    src = torch.randn(_shape(batch_first, N, S))
    tgt = torch.randn(_shape(batch_first, N, T))
    kpm = torch.zeros(N, S, dtype=torch.bool)
    kpm[1, -3:] = True
    kw = {"tgt_mask": torch.nn.Transformer.generate_square_subsequent_mask(T),
          "src_key_padding_mask": kpm, "memory_key_padding_mask": kpm}
    run_and_compare(ours, theirs, ref, [src, tgt], kw)


def test_same_seed_same_init_and_order():
    for args in (("TransformerEncoderLayer", E, H), ("TransformerDecoderLayer", E, H),
                 ("Transformer", E, H, 2, 1, FF)):
        torch.manual_seed(7)
        theirs = getattr(torch.nn, args[0])(*args[1:])
        torch.manual_seed(7)
        ours = getattr(fusedops.nn, args[0])(*args[1:])
        t_names = [n for n, _ in theirs.named_parameters()]
        assert [n for n, _ in ours.named_parameters()] == t_names
        assert list(ours.state_dict()) == list(theirs.state_dict())
        for (n, a), b in zip(ours.named_parameters(), theirs.parameters()):
            assert torch.equal(a, b), n
        assert isinstance(ours, getattr(torch.nn, args[0]))


def test_state_dict_both_ways():
    torch.manual_seed(0)
    ours = fusedops.nn.Transformer(E, H, 1, 1, FF, dropout=0.0)
    theirs = torch.nn.Transformer(E, H, 1, 1, FF, dropout=0.0)
    theirs.load_state_dict(ours.state_dict())
    src, tgt = torch.randn(5, 2, E), torch.randn(4, 2, E)
    torch.testing.assert_close(ours(src, tgt), theirs(src, tgt), atol=2e-5, rtol=1e-4)
    assert isinstance(ours.encoder.layers[0].self_attn, fusedops.nn.MultiheadAttention)
    assert isinstance(ours.decoder.layers[0].linear1, fusedops.nn.Linear)
    assert isinstance(ours.encoder.norm, fusedops.nn.LayerNorm)


def test_dropout_trains_and_eval_is_deterministic():
    layer = fusedops.nn.TransformerEncoderLayer(E, H, FF, dropout=0.5, batch_first=True)
    x = torch.randn(2, 5, E)
    layer.train()
    assert not torch.equal(layer(x), layer(x))
    layer.eval()
    assert torch.equal(layer(x), layer(x))


def test_bad_configurations():
    with pytest.raises(ValueError, match=r"TransformerEncoderLayer: d_model \(10\) must be "
                                         r"divisible by nhead \(3\)"):
        fusedops.nn.TransformerEncoderLayer(10, 3)
    with pytest.raises(ValueError, match="divisible by nhead"):
        fusedops.nn.TransformerDecoderLayer(10, 4)
    with pytest.raises(ValueError, match="divisible by nhead"):
        fusedops.nn.Transformer(10, 4)
    with pytest.raises(ValueError, match="positive integers"):
        fusedops.nn.TransformerEncoderLayer(8, 0)
    layer = fusedops.nn.TransformerEncoderLayer(E, H, FF, batch_first=True)
    with pytest.raises(ValueError, match=r"src must be .* got shape \[2, 5, 16\]"):
        layer(torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="src must be"):
        layer(torch.randn(2, 3, 5, E))
    with pytest.raises(RuntimeError, match="key_padding_mask"):
        layer(torch.randn(2, 5, E), src_key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="attn_mask"):
        layer(torch.randn(2, 5, E), src_mask=torch.zeros(4, 4, dtype=torch.bool))
    dec = fusedops.nn.TransformerDecoderLayer(E, H, FF)
    with pytest.raises(ValueError, match="memory must be"):
        dec(torch.randn(4, 2, E), torch.randn(4, 2, E + 1))
    with pytest.raises(TypeError, match="must be a fusedops.nn.TransformerEncoderLayer"):
        fusedops.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(E, H), 2)
    with pytest.raises(ValueError, match="num_layers"):
        fusedops.nn.TransformerEncoder(layer, 0)
