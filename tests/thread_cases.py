"""Every CPU op on shapes large enough that its kernels split work between threads, with its
outputs and gradients: what tests/test_threads.py compares bit for bit across thread counts,
OpenMP team limits and Python threads.

Run as a program it computes every case and saves the results (`python tests/thread_cases.py
OUT.pt [NAME ...]`), so that a child process under other OpenMP settings can be compared with
the parent.
"""
import sys

import torch
import torch.nn.functional as F

import fusedops
from fusedops import nn as fnn
from fusedops import ops


def _inputs(seed, *shapes, grad=True):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g).requires_grad_(grad) for s in shapes]


def _grads(out, inputs, seed=99):
    """Output, then the gradient of every input for a fixed random cotangent."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    g = torch.Generator().manual_seed(seed)
    cot = [torch.randn(o.shape, generator=g).to(o.dtype) for o in outs]
    grads = torch.autograd.grad(outs, inputs, cot, allow_unused=True)
    return [o.detach() for o in outs] + [x for x in grads if x is not None]


def linear():
    x, w, b = _inputs(1, (300, 257), (513, 257), (513,))
    return _grads(ops.linear(x, w, b, activation="gelu_tanh"), [x, w, b])


def linear_small_m():
    x, w, b = _inputs(2, (40, 1024), (1536, 1024), (1536,))
    return _grads(ops.linear(x, w, b), [x, w, b])


def linear_bf16():  # bf16 input, fp32 master weight (autocast's case): the bf16 GEMM
    x, w, b = _inputs(21, (300, 257), (513, 257), (513,))
    xb = x.detach().bfloat16().requires_grad_()
    out = ops.linear(xb, w, b, activation="gelu_tanh")
    g = torch.Generator().manual_seed(99)
    cot = torch.randn(out.shape, generator=g).bfloat16()
    return [out.detach(), *torch.autograd.grad(out, [xb, w, b], cot)]


def matmul_bf16():
    a, b = _inputs(22, (3, 130, 200), (200, 190))
    a, b = a.detach().bfloat16().requires_grad_(), b.detach().bfloat16().requires_grad_()
    out = ops.matmul(a, b)
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(99)).bfloat16()
    return [out.detach(), *torch.autograd.grad(out, [a, b], cot)]


def matmul():
    a, b = _inputs(3, (3, 130, 200), (3, 200, 190))
    return _grads(ops.matmul(a, b), [a, b])


def conv_padded():  # stride 1: the padded-width implicit GEMM and its adjoint
    x, w, b = _inputs(4, (9, 16, 19, 19), (32, 16, 3, 3), (32,))
    return _grads(ops.conv2d(x, w, b, padding=1), [x, w, b])


def conv_first_layer():  # one input channel
    x, w, b = _inputs(5, (37, 1, 28, 28), (16, 1, 5, 5), (16,))
    return _grads(ops.conv2d(x, w, b, padding=2), [x, w, b])


def conv_strided():
    x, w, b = _inputs(6, (7, 12, 23, 23), (24, 6, 3, 3), (24,))
    return _grads(ops.conv2d(x, w, b, stride=2, padding=1, dilation=2, groups=2), [x, w, b])


def conv_pointwise():  # 1x1: the input is its own im2col
    x, w, b = _inputs(24, (5, 32, 14, 14), (48, 32, 1, 1), (48,))
    return _grads(ops.conv2d(x, w, b), [x, w, b])


def conv_thin():  # two output channels: the direct kernels
    x, w, b = _inputs(25, (6, 3, 40, 40), (2, 3, 3, 3), (2,))
    return _grads(ops.conv2d(x, w, b, stride=2), [x, w, b])


def max_pool():
    (x,) = _inputs(7, (9, 24, 33, 33))
    return _grads(ops.max_pool2d(x, 3, 2, padding=1), [x])


def attention_one_head():  # fewer heads than threads: the key blocks of a head split
    q, k, v = _inputs(8, (1, 1, 300, 64), (1, 1, 333, 64), (1, 1, 333, 64))
    return _grads(ops.scaled_dot_product_attention(q, k, v), [q, k, v])


def attention_causal_heads():
    q, k, v = _inputs(9, (2, 3, 200, 40), (2, 3, 200, 40), (2, 3, 200, 40))
    return _grads(ops.scaled_dot_product_attention(q, k, v, is_causal=True), [q, k, v])


def attention_dropout():
    q, k, v = _inputs(10, (1, 2, 150, 32), (1, 2, 170, 32), (1, 2, 170, 32))
    rng = torch.tensor([12345, 678], dtype=torch.int64)  # (seed, offset): no global generator
    out = torch.ops.fusedops.scaled_dot_product_attention(q, k, v, None, 0.3, False, None, False, rng)[0]
    return _grads(out, [q, k, v])


def layer_norm():
    x, w, b = _inputs(11, (4099, 384), (384,), (384,))
    return _grads(ops.layer_norm(x, [384], w, b), [x, w, b])


def add_layer_norm():
    x, r, w, b = _inputs(12, (2051, 384), (2051, 384), (384,), (384,))
    return _grads(ops.add_layer_norm(x, r, [384], w, b), [x, r, w, b])


def activations():
    (x,) = _inputs(13, (1001, 999))
    out = []
    for f in (lambda t: ops.gelu(t), lambda t: ops.gelu(t, approximate="tanh"), ops.sigmoid, ops.tanh,
              lambda t: ops.relu(t), lambda t: ops.softmax(t, -1), lambda t: ops.log_softmax(t, -1)):
        out += _grads(f(x), [x])
    return out


def norm_bf16():  # bf16 activations, fp32 parameters and statistics
    x, r, w, b = _inputs(15, (2051, 384), (2051, 384), (384,), (384,))
    xb, rb = x.detach().bfloat16().requires_grad_(), r.detach().bfloat16().requires_grad_()
    return (_grads(ops.layer_norm(xb, [384], w, b), [xb, w, b])
            + _grads(ops.add_layer_norm(xb, rb, [384], w, b), [xb, rb, w, b]))


def attention_bf16():  # the products on the bf16 units (or widened); dQ of a head split over key-block groups
    q, k, v = _inputs(17, (1, 2, 200, 64), (1, 2, 200, 64), (1, 2, 200, 64))
    qb, kb, vb = (t.detach().bfloat16().requires_grad_() for t in (q, k, v))
    return _grads(ops.scaled_dot_product_attention(qb, kb, vb, is_causal=True), [qb, kb, vb])


def cross_entropy_bf16():
    (x,) = _inputs(18, (1031, 3001))
    xb = x.detach().bfloat16().requires_grad_()
    t = torch.randint(0, 3001, (1031,), generator=torch.Generator().manual_seed(2))
    return _grads(ops.cross_entropy(xb, t, label_smoothing=0.1), [xb])


def optimizers_bf16():  # bf16 parameters, fp32 state
    import fusedops.optim as fo
    ps = [torch.randn(s, generator=torch.Generator().manual_seed(i)).bfloat16() for i, s in enumerate((70001, 33, 4096))]
    gs = [torch.randn(p.shape, generator=torch.Generator().manual_seed(9 + i)).bfloat16() for i, p in enumerate(ps)]
    out = []
    for make in (lambda q: fo.AdamW(q, lr=1e-2, weight_decay=0.1), lambda q: fo.SGD(q, lr=0.1, momentum=0.9)):
        q = [p.clone().requires_grad_() for p in ps]
        opt = make(q)
        for _ in range(2):
            for t, g in zip(q, gs):
                t.grad = g.clone()
            opt.step()
        out += [t.detach() for t in q]
    return out


def activations_bf16():
    (x,) = _inputs(16, (1001, 999))
    xb = x.detach().bfloat16().requires_grad_()
    out = []
    for f in (lambda t: ops.gelu(t, approximate="tanh"), ops.sigmoid, lambda t: ops.softmax(t, -1),
              lambda t: ops.log_softmax(t, 0)):
        out += _grads(f(xb), [xb])
    return out


def cross_entropy():
    (x,) = _inputs(14, (1031, 3001))
    t = torch.randint(0, 3001, (1031,), generator=torch.Generator().manual_seed(1))
    return _grads(ops.cross_entropy(x, t, label_smoothing=0.1), [x])


def linear_cross_entropy():
    x, w = _inputs(15, (777, 128), (2053, 128))
    t = torch.randint(0, 2053, (777,), generator=torch.Generator().manual_seed(2))
    return _grads(ops.linear_cross_entropy(x, w, t), [x, w])


def other_losses():
    x, y = _inputs(16, (2000, 513), (2000, 513))
    p = torch.rand(2000, 513, generator=torch.Generator().manual_seed(3))
    return _grads(ops.mse_loss(x, y), [x, y]) + _grads(ops.binary_cross_entropy_with_logits(x, p), [x])


def _seeded(module, seed):
    """The module's parameters drawn from their own generator (cases run from several Python
    threads at once must not share torch's global one)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=g) * 0.2 - 0.1)
    return module


def _recurrent(cls, seed, **kw):
    layer = _seeded(cls(96, 160, num_layers=2, batch_first=True, **kw), seed)
    (x,) = _inputs(seed, (21, 33, 96))
    out, _ = layer(x)
    return _grads(out, [x, *layer.parameters()])


def lstm():
    return _recurrent(fnn.LSTM, 17, bidirectional=True)


def gru():
    return _recurrent(fnn.GRU, 18)


def rnn():
    return _recurrent(fnn.RNN, 19)


def cells():
    out = []
    for i, cls in enumerate((fnn.LSTMCell, fnn.GRUCell, fnn.RNNCell)):
        cell = _seeded(cls(200, 300), 20 + i)
        (x,) = _inputs(20 + i, (64, 200))
        h = cell(x)
        out += _grads(h, [x, *cell.parameters()])
    return out


def optimizers():
    out = []
    for make in (lambda p: fusedops.optim.AdamW(p, lr=1e-2), lambda p: fusedops.optim.SGD(p, lr=1e-2, momentum=0.9)):
        params = [torch.nn.Parameter(t.detach()) for t in _inputs(23, (1000, 1001), (333,), grad=False)]
        for p in params:
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()))
        opt = make(params)
        for _ in range(2):
            opt.step()
        norm = fusedops.optim.clip_grad_norm_(params, 1.0)
        out += [p.detach().clone() for p in params] + [p.grad.clone() for p in params] + [norm]
    return out


def dropout():
    (x,) = _inputs(23, (1001, 517))
    rng = torch.tensor([4321, 99], dtype=torch.int64)  # (seed, offset): no global generator
    return _grads(torch.ops.fusedops.dropout(x, 0.3, rng), [x])


def embedding():  # repeated rows, a padding row: the row-parallel backward
    w = _inputs(24, (5003, 96))[0]
    idx = torch.randint(0, 700, (37, 113), generator=torch.Generator().manual_seed(25))
    return _grads(ops.embedding(idx, w, padding_idx=3), [w])


def batch_norm():  # planar (NCHW), channels-last and [N, C] (interleaved)
    x, w, b = _inputs(26, (16, 24, 19, 21), (24,), (24,))
    (x2,) = _inputs(27, (2047, 96))
    w2, b2 = _inputs(28, (96,), (96,))
    xc = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    return (_grads(ops.batch_norm(x, None, None, w, b, True), [x, w, b])
            + _grads(ops.batch_norm(xc, None, None, w, b, True), [xc, w, b])
            + _grads(ops.batch_norm(x2, None, None, w2, b2, True), [x2, w2, b2]))


def llama_ops():  # rms_norm / add_rms_norm, rotary_embedding, swiglu (fp32 and bf16)
    x, r, w = _inputs(29, (301, 257), (301, 257), (257,))
    out = _grads(ops.add_rms_norm(x, r, w), [x, r, w]) + _grads(ops.rms_norm(x, w), [x, w])
    qp, kp = _inputs(30, (4, 64, 6 * 64), (4, 64, 2 * 64))
    pos = torch.arange(64, dtype=torch.float32)[:, None] / (100.0 ** (torch.arange(32) / 32))
    cos, sin = torch.cat((pos, pos), -1).cos(), torch.cat((pos, pos), -1).sin()
    q, k = qp.view(4, 64, 6, 64).transpose(1, 2), kp.view(4, 64, 2, 64).transpose(1, 2)
    out += _grads(ops.rotary_embedding(q, k, cos, sin), [qp, kp])
    (h,) = _inputs(31, (257, 2 * 1031))
    out += _grads(ops.swiglu(*h.chunk(2, -1)), [h])
    hb = h.detach().bfloat16().requires_grad_()
    xb, wb = x.detach().bfloat16().requires_grad_(), w.detach().bfloat16().requires_grad_()
    return (out + _grads(ops.swiglu(*hb.chunk(2, -1)), [hb]) + _grads(ops.rms_norm(xb, wb), [xb, wb])
            + list(ops.rotary_embedding(q.detach().bfloat16(), k.detach().bfloat16(), cos.bfloat16(),
                                        sin.bfloat16())))


CASES = {f.__name__: f for f in (
    linear, linear_small_m, linear_bf16, matmul_bf16, matmul, conv_padded, conv_first_layer, conv_strided, conv_pointwise, conv_thin, max_pool,
    attention_one_head, attention_causal_heads, attention_dropout, layer_norm, add_layer_norm,
    activations, norm_bf16, activations_bf16, attention_bf16, cross_entropy_bf16, optimizers_bf16, cross_entropy, linear_cross_entropy, other_losses, lstm, gru, rnn, cells,
    optimizers, dropout, embedding, batch_norm, llama_ops)}


def run(names=None):
    return {n: CASES[n]() for n in (names or CASES)}


def differences(a, b):
    """Names of the cases whose results differ in any bit, with the largest difference."""
    bad = {}
    for name in a:
        for x, y in zip(a[name], b[name]):
            if x.shape != y.shape or not torch.equal(x, y):
                bad[name] = (x.float() - y.float()).abs().max().item() if x.shape == y.shape else "shape"
                break
    return bad


if __name__ == "__main__":
    torch.save(run(sys.argv[2:] or None), sys.argv[1])
