"""fusedops.patch on Hugging Face transformers models built from tiny random configs (nothing
downloaded): GPT2LMHeadModel and LlamaForCausalLM (grouped-query attention).

Logits, loss and every gradient after the patch within the error budget of the unpatched model
(against the model in float64); the report names what was swapped and the attention
implementation; ``fused_head_loss=True`` gives the same loss and gradients with no logits;
greedy generation with the KV cache gives the same tokens; unpatch gives bit-exact logits and
the previous attention implementation back."""
import copy

import pytest
import torch

import fusedops
from fusedops import ops
from fusedops.patch import is_patched
from conftest import assert_within_budget

transformers = pytest.importorskip("transformers")

VOCAB = 97


def gpt2():
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=48, n_layer=2,
                                  n_head=3, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=None, eos_token_id=None)
    return transformers.GPT2LMHeadModel(cfg)


def llama():
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=80,
                                   num_hidden_layers=2, num_attention_heads=6,
                                   num_key_value_heads=2, max_position_embeddings=64,
                                   bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return transformers.LlamaForCausalLM(cfg)


MODELS = {"gpt2": gpt2, "llama": llama}


def _build(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    with torch.no_grad():  # biases and norm weights away from their 0/1 initialization
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    torch.manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, 13))
    return model, ids


def _run(model, ids, **kw):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids, **kw)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    logits = None if out.logits is None else out.logits.detach()
    return logits, out.loss.detach(), grads


def _check_grads(grads_p, grads_t, grads_64, what):
    assert grads_p.keys() == grads_t.keys(), what
    for n in grads_t:
        assert_within_budget(grads_p[n], grads_t[n], grads_64[n], f"{what} grad {n}",
                             scale=grads_64[n].abs().max().item())


@pytest.mark.parametrize("name", list(MODELS))
def test_logits_loss_and_grads_within_budget_unpatch_exact(name):
    model, ids = _build(name)
    truth = copy.deepcopy(model).double()
    logits_t, loss_t, grads_t = _run(model, ids)
    logits_64, loss_64, grads_64 = _run(truth, ids)
    impl = model.config._attn_implementation
    params = list(model.parameters())
    keys = list(model.state_dict())

    report = fusedops.patch(model)
    assert model.config._attn_implementation == "fusedops"
    assert any("'fusedops'" in n for n in report.notes)
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert list(model.state_dict()) == keys
    assert report[""].swapped and "cross_entropy" in report[""].became
    assert report["lm_head"].swapped
    if name == "gpt2":
        for path in ("transformer.h.0.attn.c_attn", "transformer.h.1.mlp", "transformer.ln_f",
                     "transformer.h.0.mlp.act", "transformer.wte", "transformer.h.1"):
            assert report[path].swapped, (path, report[path].reason)
        assert "no copy" in report["transformer.h.0.attn.c_attn"].became
    else:
        for path, op in (("model.norm", "rms_norm"), ("model.layers.0.mlp", "swiglu"),
                         ("model.layers.1.self_attn", "rotary_embedding"),
                         ("model.layers.0", "add_rms_norm")):
            entry = report[path]
            if hasattr(ops, op):
                assert entry.swapped, (path, entry.reason)
            else:
                assert f"fusedops.ops.{op} is not in this build" in entry.reason, entry
    assert "fusedops" in str(report)

    logits_p, loss_p, grads_p = _run(model, ids)
    assert_within_budget(logits_p, logits_t, logits_64, f"{name} logits")
    assert_within_budget(loss_p, loss_t, loss_64, f"{name} loss")
    _check_grads(grads_p, grads_t, grads_64, name)

    fusedops.unpatch(model)
    assert model.config._attn_implementation == impl
    assert not any(is_patched(m) for m in model.modules())
    logits_u, loss_u, _ = _run(model, ids)
    assert torch.equal(logits_u, logits_t) and torch.equal(loss_u, loss_t)


@pytest.mark.parametrize("name", list(MODELS))
def test_fused_head_loss(name):
    model, ids = _build(name)
    truth = copy.deepcopy(model).double()
    _, loss_t, grads_t = _run(model, ids)
    _, loss_64, grads_64 = _run(truth, ids)
    report = fusedops.patch(model, fused_head_loss=True)
    assert "linear_cross_entropy" in report[""].became
    logits_p, loss_p, grads_p = _run(model, ids)
    assert logits_p is None  # the logits never existed
    assert_within_budget(loss_p, loss_t, loss_64, f"{name} fused loss")
    _check_grads(grads_p, grads_t, grads_64, f"{name} fused")
    # without labels the forward is the usual one, logits included
    out = model(input_ids=ids)
    assert out.logits.shape == (3, 13, VOCAB)
    # ignored labels and num_items_in_batch follow transformers' loss
    labels = ids.clone()
    labels[:, :4] = -100
    n = torch.tensor(17)
    fused = model(input_ids=ids, labels=labels, num_items_in_batch=n).loss
    fusedops.unpatch(model)
    plain = model(input_ids=ids, labels=labels, num_items_in_batch=n).loss
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(MODELS))
def test_generate_same_greedy_tokens(name):
    model, ids = _build(name)
    model.eval()
    prompt = ids[:2, :5]
    kw = dict(max_new_tokens=12, do_sample=False, use_cache=True, pad_token_id=0)
    ref = model.generate(prompt, **kw)
    fusedops.patch(model)
    out = model.generate(prompt, **kw)
    assert torch.equal(out, ref)
    assert out.shape == (2, 17)


def test_padding_mask_and_registered_name():
    model, ids = _build("gpt2")
    model.eval()
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
        fusedops.patch(model)
        out = model(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()
    torch.testing.assert_close(out[keep], ref[keep], rtol=1e-4, atol=1e-5)
    # the implementation is registered by name: set_attn_implementation accepts it
    fusedops.unpatch(model)
    model.set_attn_implementation("fusedops")
    assert model.config._attn_implementation == "fusedops"


def test_unsupported_dtype_left_with_reason():
    model, _ = _build("gpt2")
    model.to(torch.bfloat16)
    report = fusedops.patch(model)
    assert "bfloat16" in report["transformer.h.0.attn.c_attn"].reason
    assert any("left as" in n for n in report.notes)
    assert model.config._attn_implementation != "fusedops"


def test_llama_wiring_with_reference_ops(monkeypatch):
    """The Llama pieces call the ops with the documented contract (rms_norm(x, w, eps),
    add_rms_norm(x, residual, w, eps) -> (y, x + residual), rotary_embedding(q, k, cos, sin)
    in the rotate-half convention, swiglu(a, b) = silu(a) * b): with torch stand-ins of that
    contract the patched model reproduces the library's logits, loss and tokens closely,
    whichever of the ops this build has."""
    def rms_norm(x, w, eps):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def rotate(x):
        h = x.shape[-1] // 2
        return torch.cat((-x[..., h:], x[..., :h]), -1)

    stand_ins = {
        "rms_norm": rms_norm,
        "add_rms_norm": lambda x, r, w, eps: (rms_norm(x + r, w, eps), x + r),
        "rotary_embedding": lambda q, k, cos, sin: (
            q * cos[:, None] + rotate(q) * sin[:, None],
            k * cos[:, None] + rotate(k) * sin[:, None]),
        "swiglu": lambda a, b: torch.nn.functional.silu(a) * b,
    }
    for name, fn in stand_ins.items():
        monkeypatch.setattr(ops, name, fn, raising=False)
    model, ids = _build("llama")
    model.eval()
    ref = model(input_ids=ids, labels=ids)
    tokens = model.generate(ids[:2, :5], max_new_tokens=8, do_sample=False, pad_token_id=0)
    report = fusedops.patch(model)
    for path in ("model.norm", "model.layers.0", "model.layers.0.mlp",
                 "model.layers.1.self_attn"):
        assert report[path].swapped, (path, report[path].reason)
    out = model(input_ids=ids, labels=ids)
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-6)
    assert torch.equal(model.generate(ids[:2, :5], max_new_tokens=8, do_sample=False,
                                      pad_token_id=0), tokens)


def test_library_model_inside_a_user_model():
    model, ids = _build("gpt2")

    class Classifier(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm
            self.head = torch.nn.Linear(VOCAB, 2)

        def forward(self, ids):
            return self.head(self.lm(input_ids=ids).logits[:, -1])

    wrapper = Classifier(model)
    ref = wrapper(ids)
    report = fusedops.patch(wrapper, fused_head_loss=True)
    assert model.config._attn_implementation == "fusedops"
    assert report["lm"].swapped and report["head"].swapped
    torch.testing.assert_close(wrapper(ids), ref, rtol=1e-5, atol=1e-5)
    assert model(input_ids=ids, labels=ids).logits is None
    fusedops.unpatch(wrapper)
    assert model.config._attn_implementation == "sdpa"
    assert model(input_ids=ids, labels=ids).logits is not None
    assert torch.equal(wrapper(ids), ref)


@pytest.mark.parametrize("name", list(MODELS))
def test_patched_step_runs_our_kernels(name):
    """Forward and backward of a patched model with fused_head_loss: the projections,
    attention, norms and loss are fusedops operators; no torch matmul or attention is left."""
    from torch.utils._python_dispatch import TorchDispatchMode

    model, ids = _build(name)
    fusedops.patch(model, fused_head_loss=True)
    seen = set()

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.add(f"{func.namespace}::{func.__name__.split('.')[0]}")
            return func(*args, **(kwargs or {}))

    with Record():
        model(input_ids=ids, labels=ids).loss.backward()
    want = {"fusedops::linear", "fusedops::linear_cross_entropy",
            "fusedops::scaled_dot_product_attention", "fusedops::embedding"}
    if name == "gpt2":
        want |= {"fusedops::linear_act", "fusedops::add_layer_norm_stats"}
    else:
        want |= {f"fusedops::{op}" for op in ("rms_norm", "add_rms_norm", "rotary_embedding",
                                              "swiglu") if hasattr(ops, op)}
    missing = [w for w in want if not any(s == w or s.startswith(w + "_") for s in seen)]
    assert not missing, (missing, sorted(seen))
    torch_math = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::_log_softmax",
                  "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::native_layer_norm"}
    assert not seen & torch_math, sorted(seen & torch_math)
