"""The bad-input matrix: every public op and module against wrong dtypes, ranks and shapes,
tensors on another device (meta), NaN and infinity, out-of-range targets and indices, and
sizes past what memory or int64 holds (expanded or meta tensors: nothing that size is
allocated). Each case either raises the exception class the op uses today with a message
naming `fusedops.<op>` and the argument, or gives the documented result.

Run as a program (`python tests/bad_inputs.py FIRST`), it runs the cases from FIRST on in this
one process, printing `start N` before and a JSON result after each, so that a parent
(tests/test_bad_inputs.py) can tell which case a crash killed and go on after it. The address
space is capped (RLIMIT_AS) so that a case that allocates by mistake fails instead of taking
the machine's memory.
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fusedops  # noqa: E402
from fusedops import nn as fnn, ops  # noqa: E402

NAN, INF = float("nan"), float("inf")
BIG = 2**40  # elements: 4 TiB of float32, far past any machine's memory


def r(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


def meta(*shape):
    return torch.randn(*shape, device="meta")


def huge(*shape):
    """A float32 tensor of `shape` that stores one element (an expanded view)."""
    return torch.zeros(1).expand(*shape)


def i64(*v):
    return torch.tensor(v, dtype=torch.int64)


CASES = []  # (id, expectation, thunk)


def raises(cid, exc, op, words, fn):
    """The case `cid` must raise `exc` naming fusedops.<op> and each of `words`."""
    CASES.append((cid, ("raises", exc.__name__, op, list(words)), fn))


def gives(cid, check, fn):
    """The case `cid` must return a result for which check(result) is true (the documented
    one: NaN propagates, and so on)."""
    CASES.append((cid, ("gives", check), fn))


def all_nan(t):
    return bool(torch.isnan(t).all())


# ---- pointwise activations and softmax -----------------------------------------------------------

for name in ("relu", "sigmoid", "tanh", "gelu"):
    fn = getattr(ops, name)
    raises(f"{name}-int", TypeError, name, ["input", "float32"], lambda fn=fn: fn(torch.ones(3, dtype=torch.int64)))
    raises(f"{name}-bool", TypeError, name, ["input"], lambda fn=fn: fn(torch.ones(3, dtype=torch.bool)))
    raises(f"{name}-huge", RuntimeError, None, ["allocate"], lambda fn=fn: fn(huge(BIG)))
    gives(f"{name}-nan", lambda t: bool(torch.isnan(t[0])) and bool(torch.isfinite(t[1:]).all()),
          lambda fn=fn: fn(torch.tensor([NAN, 1.0, -2.0])))
    gives(f"{name}-meta", lambda t: t.device.type == "meta" and t.shape == (BIG,), lambda fn=fn: fn(meta(BIG)))
raises("gelu-approximate", ValueError, "gelu", ["approximate", "'none'"], lambda: ops.gelu(r(3), approximate="fast"))
# as torch in float64: -inf * Phi(-inf) is NaN
gives("gelu-inf", lambda t: t[0].item() == INF and bool(torch.isnan(t[1])), lambda: ops.gelu(torch.tensor([INF, -INF])))
gives("relu-inf", lambda t: t.tolist() == [INF, 0.0], lambda: ops.relu(torch.tensor([INF, -INF])))
for name in ("softmax", "log_softmax"):
    fn = getattr(ops, name)
    raises(f"{name}-dim", RuntimeError, name, ["dim"], lambda fn=fn: fn(r(2, 3), 2))
    raises(f"{name}-dim-neg", RuntimeError, name, ["dim"], lambda fn=fn: fn(r(2, 3), -3))
    raises(f"{name}-int", TypeError, name, ["input"], lambda fn=fn: fn(torch.ones(2, 3, dtype=torch.int64), 1))
    gives(f"{name}-nan-row", lambda t: all_nan(t[0]) and bool(torch.isfinite(t[1]).all()),
          lambda fn=fn: fn(torch.tensor([[NAN, 1.0], [1.0, 2.0]]), 1))
    gives(f"{name}-inf-row", lambda t: all_nan(t[0]), lambda fn=fn: fn(torch.tensor([[INF, 1.0], [1.0, 2.0]]), 1))
    raises(f"{name}-huge", RuntimeError, None, ["allocate"], lambda fn=fn: fn(huge(2**20, 2**20), 1))

# ---- linear, matmul ------------------------------------------------------------------------------

raises("linear-int-input", TypeError, "linear", ["input"], lambda: ops.linear(torch.ones(2, 3, dtype=torch.int64), r(4, 3)))
raises("linear-weight-dtype", TypeError, "linear", ["weight"], lambda: ops.linear(r(2, 3), r(4, 3, dtype=torch.float64)))
raises("linear-bias-dtype", TypeError, "linear", ["bias"], lambda: ops.linear(r(2, 3), r(4, 3), r(4, dtype=torch.float64)))
raises("linear-weight-rank", RuntimeError, "linear", ["weight", "2-D"], lambda: ops.linear(r(2, 3), r(4, 3, 1)))
raises("linear-input-0d", RuntimeError, "linear", ["input"], lambda: ops.linear(torch.randn(()), r(4, 3)))
raises("linear-in-features", RuntimeError, "linear", ["in_features"], lambda: ops.linear(r(2, 3), r(4, 5)))
raises("linear-bias-shape", RuntimeError, "linear", ["bias"], lambda: ops.linear(r(2, 3), r(4, 3), r(5)))
raises("linear-activation", ValueError, "linear", ["activation"], lambda: ops.linear(r(2, 3), r(4, 3), activation="silu"))
raises("linear-meta-weight", RuntimeError, "linear", ["device", "weight"], lambda: ops.linear(r(2, 3), meta(4, 3)))
raises("linear-meta-bias", RuntimeError, "linear", ["device", "bias"], lambda: ops.linear(r(2, 3), r(4, 3), meta(4)))
raises("linear-huge-output", RuntimeError, None, ["allocate"], lambda: ops.linear(huge(2**30, 1), huge(2**30, 1)))
raises("linear-overflow", RuntimeError, None, ["overflow"], lambda: ops.linear(huge(2**40, 1), huge(2**40, 1)))
gives("linear-meta", lambda t: t.shape == (2**40, 2**10), lambda: ops.linear(meta(2**40, 1), meta(2**10, 1)))
raises("linear-meta-overflow", RuntimeError, None, ["overflow"], lambda: ops.linear(meta(2**40, 1), meta(2**30, 1)))
gives("linear-nan", lambda t: all_nan(t[0]) and bool(torch.isfinite(t[1]).all()),
      lambda: ops.linear(torch.tensor([[NAN, 1.0], [1.0, 2.0]]), r(3, 2)))
raises("matmul-rank", RuntimeError, "matmul", ["input"], lambda: ops.matmul(r(2, 3, 4, 5), r(5, 2)))
raises("matmul-inner", RuntimeError, "matmul", ["other"], lambda: ops.matmul(r(2, 3), r(4, 2)))
raises("matmul-batch", RuntimeError, "matmul", ["batch"], lambda: ops.matmul(r(2, 2, 3), r(3, 3, 2)))
raises("matmul-dtype", TypeError, "matmul", ["other"], lambda: ops.matmul(r(2, 3), r(3, 2, dtype=torch.float64)))
raises("matmul-meta", RuntimeError, "matmul", ["device", "other"], lambda: ops.matmul(r(2, 3), meta(3, 2)))
gives("matmul-inf", lambda t: bool(torch.isinf(t[0, 0]) or torch.isnan(t[0, 0])),
      lambda: ops.matmul(torch.tensor([[INF, 1.0]]), torch.tensor([[1.0], [1.0]])))

# ---- conv2d, max_pool2d --------------------------------------------------------------------------

raises("conv2d-rank", RuntimeError, "conv2d", ["input"], lambda: ops.conv2d(r(1, 1, 4), r(1, 1, 3, 3)))
raises("conv2d-weight-rank", RuntimeError, "conv2d", ["weight"], lambda: ops.conv2d(r(1, 1, 4, 4), r(1, 1, 3)))
raises("conv2d-channels", RuntimeError, "conv2d", ["channels"], lambda: ops.conv2d(r(1, 2, 4, 4), r(1, 3, 3, 3)))
raises("conv2d-groups", RuntimeError, "conv2d", ["groups"], lambda: ops.conv2d(r(1, 4, 4, 4), r(3, 2, 3, 3), groups=2))
raises("conv2d-groups-zero", RuntimeError, "conv2d", ["groups"], lambda: ops.conv2d(r(1, 4, 4, 4), r(4, 4, 3, 3), groups=0))
raises("conv2d-stride-zero", RuntimeError, "conv2d", ["stride"], lambda: ops.conv2d(r(1, 1, 4, 4), r(1, 1, 3, 3), stride=0))
raises("conv2d-padding-neg", RuntimeError, "conv2d", ["padding"], lambda: ops.conv2d(r(1, 1, 4, 4), r(1, 1, 3, 3), padding=-1))
raises("conv2d-dilation-zero", RuntimeError, "conv2d", ["dilation"], lambda: ops.conv2d(r(1, 1, 4, 4), r(1, 1, 3, 3), dilation=0))
raises("conv2d-kernel-too-big", RuntimeError, "conv2d", ["kernel"], lambda: ops.conv2d(r(1, 1, 2, 2), r(1, 1, 3, 3)))
raises("conv2d-bias-shape", RuntimeError, "conv2d", ["bias"], lambda: ops.conv2d(r(1, 1, 4, 4), r(2, 1, 3, 3), r(3)))
raises("conv2d-dtype", TypeError, "conv2d", ["weight"], lambda: ops.conv2d(r(1, 1, 4, 4), r(1, 1, 3, 3, dtype=torch.float64)))
raises("conv2d-int", TypeError, "conv2d", ["input"], lambda: ops.conv2d(torch.ones(1, 1, 4, 4, dtype=torch.int64), r(1, 1, 3, 3)))
raises("conv2d-padding-str", ValueError, "conv2d", ["padding"], lambda: ops.conv2d(r(1, 1, 4, 4), r(1, 1, 3, 3), padding="full"))
raises("conv2d-same-strided", ValueError, "conv2d", ["padding='same'"], lambda: ops.conv2d(r(1, 1, 4, 4), r(1, 1, 3, 3), stride=2, padding="same"))
raises("conv2d-meta-weight", RuntimeError, "conv2d", ["device", "weight"], lambda: ops.conv2d(r(1, 1, 4, 4), meta(1, 1, 3, 3)))
raises("conv2d-huge-output", RuntimeError, None, ["allocate"], lambda: ops.conv2d(huge(1, 1, 2**20, 2**20), huge(4, 1, 1, 1)))
gives("conv2d-nan", lambda t: bool(torch.isnan(t).any()),
      lambda: ops.conv2d(torch.full((1, 1, 3, 3), NAN), r(1, 1, 2, 2)))
raises("max_pool2d-rank", RuntimeError, "max_pool2d", ["input"], lambda: ops.max_pool2d(r(4, 4), 2))
raises("max_pool2d-kernel-zero", RuntimeError, "max_pool2d", ["kernel_size"], lambda: ops.max_pool2d(r(1, 1, 4, 4), 0))
raises("max_pool2d-stride-zero", RuntimeError, "max_pool2d", ["stride"], lambda: ops.max_pool2d(r(1, 1, 4, 4), 2, 0))
raises("max_pool2d-padding-big", RuntimeError, "max_pool2d", ["padding"], lambda: ops.max_pool2d(r(1, 1, 4, 4), 2, 1, 2))
raises("max_pool2d-int", TypeError, "max_pool2d", ["input"], lambda: ops.max_pool2d(torch.ones(1, 1, 4, 4, dtype=torch.int64), 2))
raises("max_pool2d-kernel-too-big", RuntimeError, "max_pool2d", ["output"], lambda: ops.max_pool2d(r(1, 1, 2, 2), 3))
gives("max_pool2d-nan", lambda t: bool(torch.isnan(t[0, 0, 0, 0])) and bool(torch.isfinite(t[0, 0, 0, 1])),
      lambda: ops.max_pool2d(torch.tensor([[[[NAN, 1.0, 2.0, 3.0], [0.0] * 4]]]), 2))
gives("max_pool2d-inf", lambda t: t[0, 0, 0, 0].item() == -INF,
      lambda: ops.max_pool2d(torch.full((1, 1, 2, 2), -INF), 2))

# ---- attention -----------------------------------------------------------------------------------

raises("sdpa-rank", RuntimeError, "scaled_dot_product_attention", ["query"], lambda: ops.scaled_dot_product_attention(r(3), r(3), r(3)))
raises("sdpa-embed", RuntimeError, "scaled_dot_product_attention", ["key"], lambda: ops.scaled_dot_product_attention(r(1, 2, 4), r(1, 3, 5), r(1, 3, 4)))
raises("sdpa-seq", RuntimeError, "scaled_dot_product_attention", ["value"], lambda: ops.scaled_dot_product_attention(r(1, 2, 4), r(1, 3, 4), r(1, 5, 4)))
raises("sdpa-mask-shape", RuntimeError, "scaled_dot_product_attention", ["attn_mask"], lambda: ops.scaled_dot_product_attention(r(1, 2, 4), r(1, 3, 4), r(1, 3, 4), attn_mask=torch.ones(2, 5, dtype=torch.bool)))
raises("sdpa-mask-dtype", TypeError, "scaled_dot_product_attention", ["attn_mask"], lambda: ops.scaled_dot_product_attention(r(1, 2, 4), r(1, 3, 4), r(1, 3, 4), attn_mask=torch.ones(2, 3, dtype=torch.int64)))
raises("sdpa-causal-and-mask", ValueError, "scaled_dot_product_attention", ["attn_mask"], lambda: ops.scaled_dot_product_attention(r(1, 2, 4), r(1, 3, 4), r(1, 3, 4), attn_mask=torch.ones(2, 3, dtype=torch.bool), is_causal=True))
raises("sdpa-dtype", TypeError, "scaled_dot_product_attention", ["key"], lambda: ops.scaled_dot_product_attention(r(1, 2, 4), r(1, 3, 4, dtype=torch.float64), r(1, 3, 4)))
raises("sdpa-gqa-heads", RuntimeError, "scaled_dot_product_attention", ["head"], lambda: ops.scaled_dot_product_attention(r(1, 3, 2, 4), r(1, 2, 3, 4), r(1, 2, 3, 4), enable_gqa=True))
raises("sdpa-dropout", RuntimeError, "scaled_dot_product_attention", ["dropout_p"], lambda: ops.scaled_dot_product_attention(r(1, 2, 4), r(1, 3, 4), r(1, 3, 4), dropout_p=1.5))
raises("sdpa-meta", RuntimeError, "scaled_dot_product_attention", ["device", "value"], lambda: ops.scaled_dot_product_attention(r(1, 2, 4), r(1, 3, 4), meta(1, 3, 4)))
gives("sdpa-all-masked", lambda t: bool((t[0, 0] == 0).all()),
      lambda: ops.scaled_dot_product_attention(r(1, 2, 4), r(1, 3, 4), r(1, 3, 4), attn_mask=torch.tensor([[False] * 3, [True] * 3])))
gives("sdpa-nan-key", lambda t: all_nan(t), lambda: ops.scaled_dot_product_attention(r(1, 2, 4), torch.full((1, 3, 4), NAN), r(1, 3, 4)))

# ---- norms ---------------------------------------------------------------------------------------

raises("layer_norm-shape", RuntimeError, "layer_norm", ["normalized_shape"], lambda: ops.layer_norm(r(2, 3), [4]))
raises("layer_norm-empty-shape", RuntimeError, "layer_norm", ["normalized_shape"], lambda: ops.layer_norm(r(2, 3), []))
raises("layer_norm-weight", RuntimeError, "layer_norm", ["weight"], lambda: ops.layer_norm(r(2, 3), [3], r(4)))
raises("layer_norm-bias", RuntimeError, "layer_norm", ["bias"], lambda: ops.layer_norm(r(2, 3), [3], r(3), r(2)))
raises("layer_norm-dtype", TypeError, "layer_norm", ["weight"], lambda: ops.layer_norm(r(2, 3), [3], r(3, dtype=torch.float64)))
raises("layer_norm-int", TypeError, "layer_norm", ["input"], lambda: ops.layer_norm(torch.ones(2, 3, dtype=torch.int64), [3]))
raises("layer_norm-meta", RuntimeError, "layer_norm", ["device", "weight"], lambda: ops.layer_norm(r(2, 3), [3], meta(3)))
raises("layer_norm-huge", RuntimeError, None, ["allocate"], lambda: ops.layer_norm(huge(2**20, 2**20), [2**20]))
gives("layer_norm-nan-row", lambda t: all_nan(t[0]) and bool(torch.isfinite(t[1]).all()),
      lambda: ops.layer_norm(torch.tensor([[NAN, 1.0, 2.0], [1.0, 2.0, 4.0]]), [3]))
gives("layer_norm-inf-row", lambda t: all_nan(t[0]) and bool(torch.isfinite(t[1]).all()),
      lambda: ops.layer_norm(torch.tensor([[INF, 1.0, 2.0], [1.0, 2.0, 4.0]]), [3]))
gives("layer_norm-constant-row", lambda t: bool((t == 0).all()), lambda: ops.layer_norm(torch.full((2, 5), 3.0), [5]))
raises("add_layer_norm-residual", RuntimeError, "add_layer_norm", ["residual"], lambda: ops.add_layer_norm(r(2, 3), r(3, 3), [3]))
raises("add_layer_norm-dtype", TypeError, "add_layer_norm", ["residual"], lambda: ops.add_layer_norm(r(2, 3), r(2, 3, dtype=torch.float64), [3]))
raises("add_layer_norm-meta", RuntimeError, "add_layer_norm", ["device", "residual"], lambda: ops.add_layer_norm(r(2, 3), meta(2, 3), [3]))

# ---- losses --------------------------------------------------------------------------------------

raises("cross_entropy-target-high", IndexError, "cross_entropy", ["target", "[0, 4)"], lambda: ops.cross_entropy(r(3, 4), i64(0, 4, 1)))
raises("cross_entropy-target-neg", IndexError, "cross_entropy", ["target", "-2"], lambda: ops.cross_entropy(r(3, 4), i64(0, -2, 1)))
raises("cross_entropy-target-huge", IndexError, "cross_entropy", ["target"], lambda: ops.cross_entropy(r(3, 4), i64(0, 2**62, 1)))
raises("cross_entropy-target-int32", TypeError, "cross_entropy", ["target", "int64"], lambda: ops.cross_entropy(r(3, 4), torch.tensor([0, 1, 1], dtype=torch.int32)))
raises("cross_entropy-target-shape", RuntimeError, "cross_entropy", ["target", "shape"], lambda: ops.cross_entropy(r(3, 4), i64(0, 1)))
raises("cross_entropy-input-0d", RuntimeError, "cross_entropy", ["input"], lambda: ops.cross_entropy(torch.randn(()), torch.tensor(0)))
raises("cross_entropy-weight-shape", RuntimeError, "cross_entropy", ["weight"], lambda: ops.cross_entropy(r(3, 4), i64(0, 1, 2), weight=r(3)))
raises("cross_entropy-reduction", ValueError, "cross_entropy", ["reduction"], lambda: ops.cross_entropy(r(3, 4), i64(0, 1, 2), reduction="avg"))
raises("cross_entropy-smoothing", RuntimeError, "cross_entropy", ["label_smoothing"], lambda: ops.cross_entropy(r(3, 4), i64(0, 1, 2), label_smoothing=1.5))
raises("cross_entropy-probs-ignore", RuntimeError, "cross_entropy", ["ignore_index"], lambda: ops.cross_entropy(r(3, 4), r(3, 4).softmax(1), ignore_index=0))
raises("cross_entropy-probs-shape", RuntimeError, "cross_entropy", ["target", "shape"], lambda: ops.cross_entropy(r(3, 4), r(3, 5)))
raises("cross_entropy-int", TypeError, "cross_entropy", ["input"], lambda: ops.cross_entropy(torch.ones(3, 4, dtype=torch.int64), i64(0, 1, 2)))
raises("cross_entropy-meta-weight", RuntimeError, "cross_entropy", ["device", "weight"], lambda: ops.cross_entropy(r(3, 4), i64(0, 1, 2), weight=meta(4)))
gives("cross_entropy-nan", lambda t: all_nan(t[0]) and bool(torch.isfinite(t[1])),
      lambda: ops.cross_entropy(torch.tensor([[NAN, 1.0], [1.0, 2.0]]), i64(0, 1), reduction="none"))
gives("cross_entropy-all-ignored", lambda t: all_nan(t), lambda: ops.cross_entropy(r(2, 3), i64(-100, -100)))
gives("cross_entropy-inf-logit", lambda t: t[0].item() == 0.0 and t[1].item() == INF,
      lambda: ops.cross_entropy(torch.tensor([[50.0, -INF], [1.0, -INF]]), i64(0, 1), reduction="none"))
raises("linear_cross_entropy-target", IndexError, "linear_cross_entropy", ["target", "[0, 5)"], lambda: ops.linear_cross_entropy(r(3, 4), r(5, 4), i64(0, 5, 1)))
raises("linear_cross_entropy-weight", RuntimeError, "linear_cross_entropy", ["weight"], lambda: ops.linear_cross_entropy(r(3, 4), r(5, 3), i64(0, 1, 1)))
raises("linear_cross_entropy-target-shape", RuntimeError, "linear_cross_entropy", ["target"], lambda: ops.linear_cross_entropy(r(3, 4), r(5, 4), i64(0, 1)))
raises("linear_cross_entropy-bias", RuntimeError, "linear_cross_entropy", ["bias"], lambda: ops.linear_cross_entropy(r(3, 4), r(5, 4), i64(0, 1, 1), r(4)))
raises("linear_cross_entropy-meta", RuntimeError, "linear_cross_entropy", ["device", "weight"], lambda: ops.linear_cross_entropy(r(3, 4), meta(5, 4), i64(0, 1, 1)))
raises("linear_cross_entropy-dtype", TypeError, "linear_cross_entropy", ["weight"], lambda: ops.linear_cross_entropy(r(3, 4), r(5, 4, dtype=torch.float64), i64(0, 1, 1)))
raises("mse_loss-shape", RuntimeError, None, ["size"], lambda: ops.mse_loss(r(3, 4), r(3, 5)))  # torch's broadcast error
raises("mse_loss-dtype", TypeError, "mse_loss", ["target"], lambda: ops.mse_loss(r(3), r(3, dtype=torch.float64)))
raises("mse_loss-reduction", ValueError, "mse_loss", ["reduction"], lambda: ops.mse_loss(r(3), r(3), "avg"))
raises("mse_loss-meta", RuntimeError, "mse_loss", ["device", "target"], lambda: ops.mse_loss(r(3), meta(3)))
gives("mse_loss-inf", lambda t: t.item() == INF, lambda: ops.mse_loss(torch.tensor([INF, 1.0]), r(2)))
raises("bce-shape", ValueError, "binary_cross_entropy_with_logits", ["target"], lambda: ops.binary_cross_entropy_with_logits(r(3), r(4)))
raises("bce-weight", RuntimeError, "binary_cross_entropy_with_logits", ["weight"], lambda: ops.binary_cross_entropy_with_logits(r(3, 2), r(3, 2), r(4)))
raises("bce-pos-weight", RuntimeError, "binary_cross_entropy_with_logits", ["pos_weight"], lambda: ops.binary_cross_entropy_with_logits(r(3, 2), r(3, 2), pos_weight=r(3)))
raises("bce-dtype", TypeError, "binary_cross_entropy_with_logits", ["target"], lambda: ops.binary_cross_entropy_with_logits(r(3), r(3, dtype=torch.float64)))
raises("bce-meta", RuntimeError, "binary_cross_entropy_with_logits", ["device", "target"], lambda: ops.binary_cross_entropy_with_logits(r(3), meta(3)))
gives("bce-inf", lambda t: all_nan(t),  # as torch: inf - inf
      lambda: ops.binary_cross_entropy_with_logits(torch.tensor([INF, -INF]), torch.tensor([1.0, 1.0]), reduction="none"))

# ---- recurrent -----------------------------------------------------------------------------------

raises("rnn_layer-mode", RuntimeError, "rnn_layer", ["mode"], lambda: ops.rnn_layer("lstm2", r(2, 1, 3), r(1, 4), None, r(4, 3), r(4, 4)))
raises("rnn_layer-w_ih", RuntimeError, "rnn_layer", ["w_ih"], lambda: ops.rnn_layer("lstm", r(2, 1, 3), r(1, 4), r(1, 4), r(16, 5), r(16, 4)))
raises("rnn_layer-w_hh", RuntimeError, "rnn_layer", ["w_hh"], lambda: ops.rnn_layer("gru", r(2, 1, 3), r(1, 4), None, r(12, 3), r(12, 5)))
raises("rnn_layer-hx", RuntimeError, "rnn_layer", ["hx"], lambda: ops.rnn_layer("rnn_tanh", r(2, 1, 3), r(2, 4), None, r(4, 3), r(4, 4)))
raises("rnn_layer-cx-missing", RuntimeError, "rnn_layer", ["cx"], lambda: ops.rnn_layer("lstm", r(2, 1, 3), r(1, 4), None, r(16, 3), r(16, 4)))
raises("rnn_layer-input-rank", RuntimeError, "rnn_layer", ["input"], lambda: ops.rnn_layer("gru", r(2, 1, 1, 3), r(1, 4), None, r(12, 3), r(12, 4)))
raises("rnn_layer-dtype", TypeError, "rnn_layer", ["w_hh"], lambda: ops.rnn_layer("gru", r(2, 1, 3), r(1, 4), None, r(12, 3), r(12, 4, dtype=torch.float64)))
raises("rnn_layer-meta", RuntimeError, "rnn_layer", ["device", "w_ih"], lambda: ops.rnn_layer("gru", r(2, 1, 3), r(1, 4), None, meta(12, 3), r(12, 4)))
raises("rnn_layer-batch-sizes-sum", RuntimeError, "rnn_layer", ["batch_sizes"], lambda: ops.rnn_layer("lstm", r(5, 3), r(3, 4), r(3, 4), r(16, 3), r(16, 4), batch_sizes=i64(3, 3)))
raises("rnn_layer-batch-sizes-order", RuntimeError, "rnn_layer", ["batch_sizes"], lambda: ops.rnn_layer("gru", r(5, 3), r(3, 4), None, r(12, 3), r(12, 4), batch_sizes=i64(2, 3)))
raises("rnn_layer-batch-sizes-neg", RuntimeError, "rnn_layer", ["batch_sizes"], lambda: ops.rnn_layer("gru", r(1, 3), r(3, 4), None, r(12, 3), r(12, 4), batch_sizes=i64(3, -2)))
raises("rnn_layer-batch-sizes-short", RuntimeError, "rnn_layer", ["batch_sizes"], lambda: ops.rnn_layer("gru", r(8, 3), r(3, 4), None, r(12, 3), r(12, 4), batch_sizes=i64(3, 3)))
raises("rnn_cell-nonlinearity", ValueError, "rnn_cell", ["nonlinearity"], lambda: ops.rnn_cell(r(2, 3), r(2, 4), r(4, 3), r(4, 4), nonlinearity="sigmoid"))
raises("rnn_cell-rank", ValueError, "rnn_cell", ["input"], lambda: ops.rnn_cell(r(1, 2, 3), r(2, 4), r(4, 3), r(4, 4)))
raises("lstm_cell-hx", ValueError, "lstm_cell", ["hx"], lambda: ops.lstm_cell(r(2, 3), r(2, 4), r(16, 3), r(16, 4)))
raises("gru_cell-hidden-rank", ValueError, "gru_cell", ["hidden"], lambda: ops.gru_cell(r(2, 3), r(4), r(12, 3), r(12, 4)))
gives("gru_cell-nan", lambda t: all_nan(t[0]) and bool(torch.isfinite(t[1]).all()),
      lambda: ops.gru_cell(torch.tensor([[NAN, 1.0], [1.0, 2.0]]), r(2, 3), r(9, 2), r(9, 3)))

# ---- Llama-family ops: rms_norm, add_rms_norm, rotary_embedding, swiglu ---------------------------

raises("rms_norm-shape", RuntimeError, "rms_norm", ["normalized_shape"], lambda: ops.rms_norm(r(2, 3), r(4)))
raises("rms_norm-given-shape", RuntimeError, "rms_norm", ["normalized_shape", "[4]"],
       lambda: ops.rms_norm(r(2, 3), None, None, [4]))
raises("rms_norm-weight-vs-shape", RuntimeError, "rms_norm", ["weight"], lambda: ops.rms_norm(r(2, 3), r(2), None, [3]))
raises("rms_norm-dtype", TypeError, "rms_norm", ["weight"], lambda: ops.rms_norm(r(2, 3), r(3, dtype=torch.float64)))
raises("rms_norm-int", TypeError, "rms_norm", ["input"], lambda: ops.rms_norm(torch.ones(2, 3, dtype=torch.int64)))
raises("rms_norm-0d", RuntimeError, "rms_norm", ["input", "0-d"], lambda: ops.rms_norm(torch.tensor(1.0)))
raises("rms_norm-meta", RuntimeError, "rms_norm", ["device", "weight"], lambda: ops.rms_norm(r(2, 3), meta(3)))
raises("rms_norm-huge", RuntimeError, None, ["allocate"], lambda: ops.rms_norm(huge(2**20, 2**20)))
gives("rms_norm-nan-row", lambda t: all_nan(t[0]) and bool(torch.isfinite(t[1]).all()),
      lambda: ops.rms_norm(torch.tensor([[NAN, 1.0, 2.0], [1.0, 2.0, 4.0]])))
gives("rms_norm-zero-row", lambda t: bool((t == 0).all()), lambda: ops.rms_norm(torch.zeros(2, 5)))
raises("add_rms_norm-residual", RuntimeError, "add_rms_norm", ["residual"], lambda: ops.add_rms_norm(r(2, 3), r(3, 3)))
raises("add_rms_norm-dtype", TypeError, "add_rms_norm", ["residual"],
       lambda: ops.add_rms_norm(r(2, 3), r(2, 3, dtype=torch.float64)))
raises("add_rms_norm-meta", RuntimeError, "add_rms_norm", ["device", "residual"], lambda: ops.add_rms_norm(r(2, 3), meta(2, 3)))
raises("rotary-q-rank", RuntimeError, "rotary_embedding", ["q", "4-D"],
       lambda: ops.rotary_embedding(r(2, 4, 8), r(2, 1, 4, 8), r(4, 8), r(4, 8)))
raises("rotary-k-shape", RuntimeError, "rotary_embedding", ["k", "head_dim"],
       lambda: ops.rotary_embedding(r(2, 3, 4, 8), r(2, 1, 5, 8), r(4, 8), r(4, 8)))
raises("rotary-cos-odd", RuntimeError, "rotary_embedding", ["cos", "even"],
       lambda: ops.rotary_embedding(r(2, 3, 4, 8), r(2, 1, 4, 8), r(4, 7), r(4, 7)))
raises("rotary-cos-wide", RuntimeError, "rotary_embedding", ["cos", "head dimension"],
       lambda: ops.rotary_embedding(r(2, 3, 4, 8), r(2, 1, 4, 8), r(4, 10), r(4, 10)))
raises("rotary-cos-positions", RuntimeError, "rotary_embedding", ["cos", "positions"],
       lambda: ops.rotary_embedding(r(2, 3, 4, 8), r(2, 1, 4, 8), r(5, 8), r(5, 8)))
raises("rotary-sin-shape", RuntimeError, "rotary_embedding", ["sin"],
       lambda: ops.rotary_embedding(r(2, 3, 4, 8), r(2, 1, 4, 8), r(4, 8), r(2, 4, 8)))
raises("rotary-dtype", TypeError, "rotary_embedding", ["cos"],
       lambda: ops.rotary_embedding(r(2, 3, 4, 8), r(2, 1, 4, 8), r(4, 8, dtype=torch.float64), r(4, 8)))
raises("rotary-int", TypeError, "rotary_embedding", ["q"],
       lambda: ops.rotary_embedding(torch.ones(2, 3, 4, 8, dtype=torch.int64), r(2, 1, 4, 8), r(4, 8), r(4, 8)))
raises("rotary-meta", RuntimeError, "rotary_embedding", ["device"],
       lambda: ops.rotary_embedding(r(2, 3, 4, 8), meta(2, 1, 4, 8), r(4, 8), r(4, 8)))
raises("rotary-grad-cos", RuntimeError, "rotary_embedding", ["cos"],
       lambda: ops.rotary_embedding(r(1, 1, 2, 4), r(1, 1, 2, 4), r(2, 4).requires_grad_(), r(2, 4)))
raises("rotary_-requires-grad", RuntimeError, "rotary_embedding_", ["require grad"],
       lambda: ops.rotary_embedding_(r(1, 1, 2, 4).requires_grad_(), r(1, 1, 2, 4), r(2, 4), r(2, 4)))
raises("rotary_-expanded", RuntimeError, "rotary_embedding_", ["q", "in place"],
       lambda: ops.rotary_embedding_(r(1, 1, 1, 4).expand(1, 3, 2, 4), r(1, 1, 2, 4), r(2, 4), r(2, 4)))
raises("rotary_-same", RuntimeError, "rotary_embedding_", ["q and k"],
       lambda: (lambda x: ops.rotary_embedding_(x, x, r(2, 4), r(2, 4)))(r(1, 1, 2, 4)))
gives("rotary-nan", lambda t: all_nan(t[0][0, 0, 0, ::2]) and bool(torch.isfinite(t[0][0, 0, 1]).all()),
      lambda: ops.rotary_embedding(torch.tensor([[[[NAN, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]]]]), r(1, 1, 2, 4),
                                   torch.ones(2, 4), torch.ones(2, 4)))
raises("swiglu-shape", RuntimeError, "swiglu", ["b", "[2, 3]"], lambda: ops.swiglu(r(2, 3), r(2, 4)))
raises("swiglu-dtype", TypeError, "swiglu", ["b"], lambda: ops.swiglu(r(2, 3), r(2, 3, dtype=torch.float64)))
raises("swiglu-int", TypeError, "swiglu", ["a"], lambda: ops.swiglu(torch.ones(3, dtype=torch.int64), torch.ones(3, dtype=torch.int64)))
raises("swiglu-0d", RuntimeError, "swiglu", ["a", "0-d"], lambda: ops.swiglu(torch.tensor(1.0), torch.tensor(2.0)))
raises("swiglu-meta", RuntimeError, "swiglu", ["device", "b"], lambda: ops.swiglu(r(2, 3), meta(2, 3)))
raises("swiglu-huge", RuntimeError, None, ["allocate"], lambda: ops.swiglu(huge(BIG), huge(BIG)))
gives("swiglu-nan", lambda t: bool(torch.isnan(t[0])) and bool(torch.isfinite(t[1:]).all()),
      lambda: ops.swiglu(torch.tensor([NAN, 1.0, -2.0]), torch.tensor([1.0, 2.0, 3.0])))
gives("swiglu-meta-out", lambda t: t.device.type == "meta" and t.shape == (BIG,), lambda: ops.swiglu(meta(BIG), meta(BIG)))

# ---- modules -------------------------------------------------------------------------------------

raises("nn.Linear-in-features", RuntimeError, "linear", ["in_features"], lambda: fnn.Linear(3, 4)(r(2, 5)))
raises("nn.Conv2d-padding-mode", ValueError, "nn.Conv2d", ["padding_mode"], lambda: fnn.Conv2d(1, 1, 3, padding_mode="reflect"))
raises("nn.LayerNorm-shape", RuntimeError, "layer_norm", ["normalized_shape"], lambda: fnn.LayerNorm(4)(r(2, 3)))
raises("nn.RMSNorm-shape", RuntimeError, "rms_norm", ["normalized_shape"], lambda: fnn.RMSNorm(4)(r(2, 3)))
raises("nn.CrossEntropyLoss-target", IndexError, "cross_entropy", ["target"], lambda: fnn.CrossEntropyLoss()(r(2, 3), i64(0, 3)))
raises("nn.MultiheadAttention-rank", ValueError, "nn.MultiheadAttention", ["query"], lambda: fnn.MultiheadAttention(4, 2)(r(4), r(4), r(4)))
raises("nn.MultiheadAttention-embed", ValueError, "nn.MultiheadAttention", ["embedding dim"], lambda: fnn.MultiheadAttention(4, 2)(r(2, 1, 6), r(2, 1, 6), r(2, 1, 6)))
raises("nn.MultiheadAttention-mask", RuntimeError, "nn.MultiheadAttention", ["attn_mask"], lambda: fnn.MultiheadAttention(4, 2)(r(2, 1, 4), r(3, 1, 4), r(3, 1, 4), attn_mask=torch.zeros(2, 2)))
raises("nn.MultiheadAttention-kpm", RuntimeError, "nn.MultiheadAttention", ["key_padding_mask"], lambda: fnn.MultiheadAttention(4, 2)(r(2, 1, 4), r(3, 1, 4), r(3, 1, 4), key_padding_mask=torch.zeros(1, 2, dtype=torch.bool)))
raises("nn.LSTM-input-rank", ValueError, "nn.LSTM", ["input"], lambda: fnn.LSTM(3, 4)(r(3)))
raises("nn.LSTM-input-size", RuntimeError, "nn.LSTM", ["input_size"], lambda: fnn.LSTM(3, 4)(r(2, 1, 5)))
raises("nn.LSTM-hx", RuntimeError, "nn.LSTM", ["hx"], lambda: fnn.LSTM(3, 4)(r(2, 1, 3), r(1, 1, 4)))
raises("nn.GRU-h0-shape", RuntimeError, "nn.GRU", ["h_0"], lambda: fnn.GRU(3, 4)(r(2, 1, 3), r(2, 1, 4)))
raises("nn.RNN-meta", RuntimeError, "rnn_layer", ["device"], lambda: fnn.RNN(3, 4)(meta(2, 1, 3)))

# ---- optimizer -----------------------------------------------------------------------------------


def _adamw_nan():
    p = torch.nn.Parameter(torch.ones(3))
    opt = fusedops.optim.AdamW([p], lr=0.1)
    p.grad = torch.tensor([NAN, 1.0, 1.0])
    opt.step()
    return p.detach()


gives("AdamW-nan-grad", lambda t: bool(torch.isnan(t[0])) and bool(torch.isfinite(t[1:]).all()), _adamw_nan)


def _adamw_meta_grad():
    p = torch.nn.Parameter(torch.ones(3))
    opt = fusedops.optim.AdamW([p], lr=0.1)
    p.grad = meta(3)
    opt.step()


raises("AdamW-meta-grad", RuntimeError, None, ["device"], _adamw_meta_grad)


# ---- the worker ----------------------------------------------------------------------------------


def run_case(expect, fn):
    """'pass' or why the case failed."""
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001 - every exception is a result to check
        msg = str(e)
        if expect[0] != "raises":
            return f"raised {type(e).__name__}: {msg[:300]}"
        _, exc, op, words = expect
        if type(e).__name__ != exc and exc not in [c.__name__ for c in type(e).__mro__]:
            return f"raised {type(e).__name__} (expected {exc}): {msg[:300]}"
        missing = ([f"fusedops.{op}"] if op else []) + [w for w in words if w not in msg]
        missing = [w for w in missing if w not in msg]
        return f"message lacks {missing}: {msg[:300]}" if missing else "pass"
    if expect[0] == "raises":
        return f"returned {type(out).__name__} instead of raising {expect[1]}"
    try:
        ok = expect[1](out)
    except Exception as e:  # noqa: BLE001
        return f"result check failed: {type(e).__name__}: {e}"
    return "pass" if ok else f"unexpected result: {out!r}"[:300]


def main(first):
    import resource

    if "libasan" not in os.environ.get("LD_PRELOAD", ""):  # AddressSanitizer maps terabytes
        cap = 48 << 30  # address space: enough for torch and OpenMP, not for a stray 2**40 allocation
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    torch.set_num_threads(2)
    for i in range(first, len(CASES)):
        cid, expect, fn = CASES[i]
        print(f"start {i}", flush=True)
        print(json.dumps({"case": i, "id": cid, "result": run_case(expect, fn)}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
