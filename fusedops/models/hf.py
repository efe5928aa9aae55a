"""Hugging Face GPT-2 folders in and out: config.json and model.safetensors (or shards listed in
model.safetensors.index.json), read and written with `safetensors` and `json` only (no
`transformers`, no pickles: loading never runs code, and nothing is downloaded).

GPT-2's parameter names are ours with `h.` for `blocks.` (and an optional `transformer.`
prefix); its Conv1D layers store weights as [in, out], ours as Linear's [out, in], so c_attn,
c_proj and c_fc weights are transposed on the way in and out. The attention-mask buffers
(`attn.bias`, `attn.masked_bias`) are ignored, and `lm_head.weight` must be the token
embedding (GPT-2 ties them, as we do). The vocabulary is the checkpoint's: a model read here
has no padding, and a padded model is written without its padding rows.
"""
import json
import os
import re

import torch

from .gpt import GPTConfig

_CONV1D = re.compile(r"blocks\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$")
# config.json fields we cannot honour, with the only values our model computes
_FIXED = {"activation_function": ("gelu_new", "gelu_pytorch_tanh"), "layer_norm_epsilon": (1e-5,),
          "scale_attn_weights": (True,), "scale_attn_by_inverse_layer_idx": (False,),
          "reorder_and_upcast_attn": (False,), "add_cross_attention": (False,)}


def _error(folder, what):
    return ValueError(f"fusedops.models.GPT: {folder!r}: {what}")


def _read_config(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise _error(folder, "no config.json (not a Hugging Face model folder)")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise _error(folder, f"config.json is not readable JSON ({e})") from None
    if not isinstance(config, dict) or config.get("model_type") != "gpt2":
        kind = config.get("model_type") if isinstance(config, dict) else type(config).__name__
        raise _error(folder, f"config.json describes a {kind!r} model, not 'gpt2'")
    for key, allowed in _FIXED.items():
        if key in config and config[key] not in allowed:
            raise _error(folder, f"{key} = {config[key]!r} is not supported (only {allowed[0]!r})")
    n_inner = config.get("n_inner")
    if n_inner is not None and n_inner != 4 * config.get("n_embd", 768):
        raise _error(folder, f"n_inner = {n_inner} is not supported (only 4 * n_embd)")
    return config


def _read_weights(folder: str) -> dict:
    from safetensors.torch import load_file

    single = os.path.join(folder, "model.safetensors")
    index = single + ".index.json"
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
        files = [os.path.join(folder, os.path.basename(n)) for n in names]
    else:
        pickles = [n for n in ("pytorch_model.bin", "model.pt")
                   if os.path.isfile(os.path.join(folder, n))]
        why = (f" (only {pickles[0]}: a pickle, which can run code when loaded; convert it to "
               "safetensors)") if pickles else ""
        raise _error(folder, "no model.safetensors" + why)
    weights = {}
    for path in files:
        try:
            weights.update(load_file(path))
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise _error(folder, f"cannot read {os.path.basename(path)} "
                                 f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    return weights


def load_gpt2(folder: str, dropout: float = 0.0):
    """(GPTConfig, our state_dict) of the GPT-2 model in `folder`."""
    config = _read_config(folder)
    try:
        cfg = GPTConfig(vocab_size=config["vocab_size"], block_size=config["n_positions"],
                        n_layer=config["n_layer"], n_head=config["n_head"],
                        n_embd=config["n_embd"], dropout=dropout)
        cfg.validate()
    except KeyError as e:
        raise _error(folder, f"config.json lacks {e}") from None
    except (TypeError, ValueError) as e:
        raise _error(folder, f"config.json: {str(e).split(': ', 1)[-1]}") from None
    weights = {}
    for name, t in _read_weights(folder).items():
        name = name.removeprefix("transformer.")
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # GPT-2's causal-mask buffers
        name = re.sub(r"^h\.", "blocks.", name)
        weights[name] = t.t().contiguous() if _CONV1D.search(name) else t
    head = weights.pop("lm_head.weight", None)
    if head is not None and "wte.weight" in weights and not torch.equal(head, weights["wte.weight"]):
        raise _error(folder, "lm_head.weight differs from the token embedding (an untied head; "
                             "this GPT ties them)")
    if "wte.weight" not in weights and head is not None:
        weights["wte.weight"] = head
    return cfg, weights


def check_weights(model, weights: dict, folder: str) -> None:
    """One line naming the first missing, unexpected or misshapen weight, if any."""
    own = model.state_dict()
    for name, t in own.items():
        if name not in weights:
            raise _error(folder, f"the weights lack {name}")
        if weights[name].shape != t.shape:
            raise _error(folder, f"{name} is {list(weights[name].shape)} there, config.json "
                                 f"makes it {list(t.shape)}")
    extra = sorted(set(weights) - set(own))
    if extra:
        raise _error(folder, f"weights this model lacks: {', '.join(extra[:3])}")


def save_gpt2(model, folder: str) -> None:
    """Writes `model` as a Hugging Face GPT2LMHeadModel folder (float32 weights)."""
    from safetensors.torch import save_file

    cfg = model.cfg
    weights = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu", torch.float32)
        if name == "wte.weight":
            t = t[:cfg.vocab_size]  # without the padding rows
        if _CONV1D.search(name):
            t = t.t()
        weights["transformer." + re.sub(r"^blocks\.", "h.", name)] = t.contiguous()
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
              "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size, "n_ctx": cfg.block_size,
              "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": None,
              "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
              "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
              "initializer_range": 0.02, "scale_attn_weights": True, "use_cache": True,
              "tie_word_embeddings": True, "torch_dtype": "float32"}
    eot = 50256 if cfg.vocab_size == 50257 else None  # GPT-2's vocabulary: its end-of-text
    config.update(bos_token_id=eot, eos_token_id=eot)
    os.makedirs(folder, exist_ok=True)
    save_file(weights, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
