"""fusedops.patch / unpatch on user-style models nobody tuned for: an MLP, a CNN with BatchNorm
and pooling, a torchvision-style ResNet basic block, nn.TransformerEncoder, an LSTM tagger on
packed sequences and an nn.MultiheadAttention model.

For each: outputs and every gradient after the patch within the error budget of the same
model unpatched (against the model in float64), the report lists what changed and what it
left (with why), unpatch gives bit-exact outputs again, the Parameter objects stay the same
(an optimizer built before the patch still steps them), hooks still fire, state_dict keys
and training mode stay, a second patch changes nothing, and patching works on the meta device
and under torch.no_grad."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fusedops
from fusedops.patch import is_patched
from conftest import assert_within_budget


# ---- the models, as a user would write them ------------------------------------------------


def mlp():
    return nn.Sequential(nn.Linear(20, 48), nn.ReLU(), nn.Linear(48, 48), nn.GELU(),
                         nn.Linear(48, 48), nn.Tanh(), nn.Linear(48, 10))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block, written out."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 32)
        layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 5)

    def forward(self, tokens, padding_mask=None):
        return self.head(self.encoder(self.embed(tokens), src_key_padding_mask=padding_mask))


class LSTMTagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(40, 16, padding_idx=0)
        self.lstm = nn.LSTM(16, 24, num_layers=2, bidirectional=True, batch_first=True)
        self.tag = nn.Linear(48, 7)

    def forward(self, tokens, lengths):
        packed = pack_padded_sequence(self.embed(tokens), lengths, batch_first=True,
                                      enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return F.log_softmax(self.tag(out), dim=-1)


class AttentionModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(32)
        self.attn = nn.MultiheadAttention(32, 4)
        self.out = nn.Linear(32, 3)

    def forward(self, x):  # x [T, B, 32]
        T = x.shape[0]
        causal = torch.triu(torch.full((T, T), float("-inf")), diagonal=1)
        h = self.norm(x)
        a, _ = self.attn(h, h, h, attn_mask=causal, need_weights=False)
        return self.out(x + a)


def _lengths_batch():
    lengths = torch.tensor([9, 4, 7, 1])
    tokens = torch.randint(1, 40, (4, 9))
    for i, n in enumerate(lengths):
        tokens[i, n:] = 0
    return tokens, lengths


# name: (factory, inputs, what the report must say was swapped)
CASES = {
    "mlp": (mlp, lambda: (torch.randn(6, 20),), {"0": "epilogue", "1": "fused into"}),
    "cnn": (SmallCNN, lambda: (torch.randn(4, 3, 12, 12),),
            {"features.0": "Conv2d", "features.1": "BatchNorm2d", "features.3": "MaxPool2d",
             "fc": "Linear"}),
    "resnet_block": (lambda: BasicBlock(8, 16, stride=2), lambda: (torch.randn(2, 8, 10, 10),),
                     {"conv1": "Conv2d", "bn2": "BatchNorm2d", "downsample.0": "Conv2d"}),
    "transformer_encoder": (Encoder, lambda: (torch.randint(0, 50, (3, 11)),),
                            {"encoder.layers.0": "TransformerEncoderLayer",
                             "encoder.layers.1.self_attn": "MultiheadAttention",
                             "embed": "Embedding"}),
    "lstm_tagger": (LSTMTagger, _lengths_batch, {"lstm": "LSTM", "embed": "Embedding"}),
    "mha": (AttentionModel, lambda: (torch.randn(7, 3, 32),),
            {"attn": "MultiheadAttention", "attn.out_proj": "Linear", "norm": "LayerNorm"}),
}


def _run(model, inputs):
    model.zero_grad(set_to_none=True)
    out = model(*inputs)
    (out.double().square().sum() * 0.5 + out.double().sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


def _build(name):
    factory, inputs, _ = CASES[name]
    torch.manual_seed(0)
    model = factory()
    with torch.no_grad():  # biases and norm affines away from their 0/1 initialization
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    torch.manual_seed(1)
    return model, inputs()


def _cast(inputs, dtype):
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)


@pytest.mark.parametrize("name", list(CASES))
def test_patch_matches_within_budget_and_unpatch_is_exact(name):
    model, inputs = _build(name)
    truth_model = copy.deepcopy(model).double()
    out_t, grads_t = _run(model, inputs)
    out_64, grads_64 = _run(truth_model, _cast(inputs, torch.float64))

    params = list(model.parameters())
    keys = list(model.state_dict().keys())
    report = fusedops.patch(model)
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert list(model.state_dict().keys()) == keys
    for path, word in CASES[name][2].items():
        assert report[path].swapped, f"{path} was left: {report[path].reason}"
        assert word in report[path].became, (path, report[path].became)
    assert str(report).startswith("fusedops.patch:")

    out_p, grads_p = _run(model, inputs)
    assert_within_budget(out_p, out_t, out_64, f"{name} output")
    assert grads_p.keys() == grads_t.keys()
    for n in grads_t:
        assert_within_budget(grads_p[n], grads_t[n], grads_64[n], f"{name} grad {n}",
                             scale=grads_64[n].abs().max().item())

    again = fusedops.patch(model)  # idempotent
    assert not [e for e in again.entries if e.swapped and e.became != "already patched"]
    assert torch.equal(_run(model, inputs)[0], out_p)

    restored = fusedops.unpatch(model)
    assert len(restored.swapped) == len(report.swapped)
    assert not any(is_patched(m) for m in model.modules())
    out_u, grads_u = _run(model, inputs)
    assert torch.equal(out_u, out_t)
    for n in grads_t:
        assert torch.equal(grads_u[n], grads_t[n]), n


def test_modules_run_our_kernels_after_patch():
    """The swapped modules really call fusedops ops (counted through the dispatcher)."""
    model, inputs = _build("cnn")
    fusedops.patch(model)
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = set()

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.add(func.namespace + "::" + func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    with Record():
        model(*inputs)
    for op in ("fusedops::conv2d", "fusedops::batch_norm", "fusedops::max_pool2d_with_indices",
               "fusedops::linear"):
        assert any(s.startswith(op) for s in seen), (op, sorted(seen))
    assert not any(s in seen for s in ("aten::convolution", "aten::native_batch_norm")), seen


def test_optimizer_built_before_patch_keeps_stepping():
    model, inputs = _build("mlp")
    twin = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt_twin = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    fusedops.patch(model)
    for _ in range(3):
        for m, o in ((model, opt), (twin, opt_twin)):
            o.zero_grad()
            m(*inputs).square().mean().backward()
            o.step()
    for (n, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    model(*inputs).square().mean().backward()
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_hooks_still_fire_and_mode_is_kept():
    model, inputs = _build("cnn")
    calls = []
    model.fc.register_forward_hook(lambda m, i, o: calls.append("fc"))
    model.features[0].register_forward_pre_hook(lambda m, i: calls.append("conv"))
    model.eval()
    fusedops.patch(model)
    assert not model.training and not model.features[1].training
    model(*inputs)
    assert calls == ["conv", "fc"]
    model.train()
    assert model.features[1].training


def test_hooked_sequential_pair_is_not_fused():
    model = mlp()
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(o.min().item()))
    report = fusedops.patch(model)
    assert "epilogue" not in report["0"].became
    assert "epilogue" in report["2"].became  # the GELU pair has no hook
    model(torch.randn(3, 20))
    assert seen and seen[0] < 0  # the hook saw the Linear's own output, before the ReLU


def test_left_alone_with_reasons():
    class MyLinear(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    class Renamed(nn.Linear):  # overrides nothing: still torch's Linear in forward
        pass

    model = nn.ModuleDict({
        "reflect": nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
        "mine": MyLinear(4, 4),
        "renamed": Renamed(4, 4),
        "bf16": nn.Linear(4, 4).to(torch.bfloat16),
        "inplace": nn.ReLU(inplace=True),
        "maxnorm": nn.Embedding(10, 4, max_norm=1.0),
        "conv1d": nn.Conv1d(2, 2, 3),
        "off": nn.LSTM(4, 4),
    })
    report = fusedops.patch(model, rnn=False)
    assert "padding_mode='reflect'" in report["reflect"].reason
    assert "overrides forward" in report["mine"].reason
    assert "cannot prove" in report["mine"].reason
    assert report["renamed"].swapped
    assert "bfloat16" in report["bf16"].reason
    assert "inplace=True" in report["inplace"].reason
    assert "max_norm" in report["maxnorm"].reason
    assert "no fusedops kernel" in report["conv1d"].reason
    assert report["off"].reason == "rnn=False"
    text = str(report)
    for path in ("reflect", "mine", "bf16", "conv1d"):
        assert path in text
    assert type(model["mine"]) is MyLinear and type(model["reflect"]) is nn.Conv2d


def test_meta_device_and_no_grad():
    with torch.device("meta"):
        model = SmallCNN()
    with torch.no_grad():
        report = fusedops.patch(model)
    assert report["features.0"].swapped
    out = model(torch.empty(2, 3, 12, 12, device="meta"))
    assert out.shape == (2, 10) and out.device.type == "meta"
    fusedops.unpatch(model)
    assert type(model.features[0]) is nn.Conv2d


def test_after_load_state_dict_and_under_compile():
    model, inputs = _build("mlp")
    other = mlp()
    other.load_state_dict(model.state_dict())
    fusedops.patch(other)
    ref = model(*inputs)
    torch.testing.assert_close(other(*inputs), ref, rtol=1e-5, atol=1e-6)
    compiled = torch.compile(other, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(*inputs), ref, rtol=1e-5, atol=1e-6)


def test_encoder_eval_nested_fast_path_is_unchanged():
    """torch's encoder turns a padded batch into nested tensors in inference; the patched
    layers hand those to torch's own fast path, so the outputs are what they were."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
    enc = nn.TransformerEncoder(layer, num_layers=2).eval()
    x = torch.randn(3, 6, 32)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[1, 4:] = True
    with torch.no_grad():
        ref = enc(x, src_key_padding_mask=pad)
        fusedops.patch(enc)
        out = enc(x, src_key_padding_mask=pad)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_loss_modules_and_flags():
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)
    report = fusedops.patch(loss)
    assert report[""].swapped
    x, t = torch.randn(5, 7, requires_grad=True), torch.randint(0, 7, (5,))
    torch.testing.assert_close(loss(x, t), F.cross_entropy(x, t, label_smoothing=0.1))
    model = mlp()
    report = fusedops.patch(model, linear=False)
    assert report["0"].reason == "linear=False" and report["1"].swapped
    with pytest.raises(TypeError, match="fusedops.patch: model must be a torch.nn.Module"):
        fusedops.patch(lambda x: x)


def test_deepcopy_and_pickle_keep_the_patch():
    import io

    model, inputs = _build("lstm_tagger")
    fusedops.patch(model)
    ref = model(*inputs)
    twin = copy.deepcopy(model)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for other in (twin, loaded):
        assert type(other.lstm) is type(model.lstm) and is_patched(other.lstm)
        assert torch.equal(other(*inputs), ref)
        fusedops.unpatch(other)
        assert type(other.lstm) is nn.LSTM
    assert is_patched(model.lstm)
    already = fusedops.patch(nn.Sequential(fusedops.nn.Linear(3, 3)))
    assert already["0"].reason == "already a fusedops layer"


def test_rms_norm_module_when_the_build_has_it():
    norm = nn.RMSNorm(24, eps=1e-5)
    with torch.no_grad():
        norm.weight.add_(0.1 * torch.randn(24))
    x = torch.randn(5, 24)
    ref = norm(x)
    report = fusedops.patch(norm)
    if hasattr(fusedops.nn, "RMSNorm"):
        assert report[""].became == "fusedops.nn.RMSNorm"
        torch.testing.assert_close(norm(x), ref, rtol=1e-5, atol=1e-6)
    else:
        assert report[""].reason == "no fusedops kernel for this layer"
