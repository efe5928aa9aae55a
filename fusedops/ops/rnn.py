"""Recurrent layers: one direction of one RNN / LSTM / GRU layer over a whole sequence
(`rnn_layer`), and the single-step cells `rnn_cell`, `lstm_cell`, `gru_cell` (the same op with
one step). Multi-layer, bidirectional and PackedSequence handling live in fusedops.nn.rnn.

The op runs the input projections of all steps as one GEMM, then per step one recurrent GEMM
and one fused gate kernel; its backward (`rnn_layer_backward`) walks the steps back with one
gate kernel and one GEMM each, then forms the input and weight gradients as single GEMMs over
all steps. The forward returns a workspace (the gate activations) that the backward reads, so
nothing is recomputed. Higher-order gradients (`create_graph=True`) differentiate
`reference_rnn_layer`, a plain torch formulation of the same layer.
"""
from typing import Optional, Tuple

import torch

from ._autograd import needs_grad
from ._registry import _AUTOCAST_KEYS, _LIB, _has_float64, _to_float32, register_fake


_ops = torch.ops.fusedops
_MODES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}
_WORKSPACE = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 5, "gru": 4}


def _rnn_layer_op(mode, input, hx, cx, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None,
                  batch_sizes=None, reverse=False, cell=False):
    """The rnn_layer op. A bfloat16 input (its state and weights bf16 or fp32) runs the fp32
    kernels through `_RnnLayerLowp`, which widens at entry and rounds the results back once:
    bf16 in, bf16 out, the gradients in each tensor's own dtype, but no faster than fp32 (the
    recurrent kernels have no bf16 storage path yet); what it saves for backward is bf16 (or
    the caller's own fp32 tensors). Under CPU autocast the results take the dtypes torch's layer
    (``cell=False``) or cell returns (`_autocast_dtypes`)."""
    if torch.is_autocast_enabled("cpu"):
        low = torch.get_autocast_dtype("cpu")
        with torch.autocast("cpu", enabled=False):  # (a context torch.compile traces)
            return _rnn_layer_autocast_impl(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr,
                                            batch_sizes, reverse, cell, low)
    if input.dtype != torch.bfloat16:
        if torch.compiler.is_compiling() or _functorch_active():
            return _ops.rnn_layer(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse)
        return _rnn_layer_eager(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse)
    bf = torch.bfloat16
    return _RnnLayerLowp.apply(mode, batch_sizes, reverse, cell, bf, bf, input, hx, cx, w_ih, w_hh, b_ih, b_hh,
                               w_hr)


_rnn_layer_default = _ops.rnn_layer.default
_rnn_layer_backward_default = _ops.rnn_layer_backward.default
_below_autograd = torch._C._AutoDispatchBelowAutograd
_functorch_active = torch._C._are_functorch_transforms_active


def _rnn_layer_eager(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse):
    """The op in eager mode, without the Python autograd kernel that torch.library registers
    (measured at ~40 us per call, twice what a small cell's own work costs): a call that
    records no graph runs the op below autograd; one that does goes through `_RnnLayerFn`,
    the same formula (`_setup` / `_backward`) in a plain autograd.Function. torch.compile and
    functorch transforms take the registered op (the caller checks)."""
    if torch.is_grad_enabled() and (
        input.requires_grad or hx.requires_grad or w_ih.requires_grad or w_hh.requires_grad
        or (cx is not None and cx.requires_grad) or (b_ih is not None and b_ih.requires_grad)
        or (b_hh is not None and b_hh.requires_grad) or (w_hr is not None and w_hr.requires_grad)
    ):
        return _RnnLayerFn.apply(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse)
    with _below_autograd():
        return _rnn_layer_default(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse)


class _RnnLayerFn(torch.autograd.Function):
    """`rnn_layer` with the autograd formula registered for it (`_setup`, `_backward`), applied
    directly in eager mode (`_rnn_layer_eager`). Gradients of unused outputs stay None (the op
    takes them as optional) rather than being materialized as zeros."""

    @staticmethod
    def forward(ctx, mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse):
        with _below_autograd():
            out, hy, cy, ws = _rnn_layer_default(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr,
                                                 batch_sizes, reverse)
        ctx.mode, ctx.reverse = mode, reverse
        ctx.set_materialize_grads(False)
        if mode == "lstm":
            ctx.mark_non_differentiable(ws)
        else:
            ctx.mark_non_differentiable(cy, ws)
        ctx.save_for_backward(input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, out, ws)
        return out, hy, cy, ws

    @staticmethod
    def backward(ctx, grad_out, grad_hy, grad_cy, grad_ws):
        if torch.is_grad_enabled():  # create_graph: the torch formulation
            return _backward(ctx, grad_out, grad_hy, grad_cy, grad_ws)
        input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, out, ws = ctx.saved_tensors
        with _below_autograd():
            grads = _rnn_layer_backward_default(
                ctx.mode, grad_out, grad_hy, grad_cy if ctx.mode == "lstm" else None, input, hx, cx, w_ih,
                w_hh, b_ih, b_hh, w_hr, batch_sizes, ctx.reverse, out, ws, ctx.needs_input_grad[1:9])
        return (None, *grads, None, None)


def _up(t):
    return t.float() if t is not None and t.is_floating_point() else t


class _RnnLayerLowp(torch.autograd.Function):
    """`rnn_layer` in the fp32 kernels for bf16 operands (and under bf16 autocast), keeping what
    it saves narrow. forward widens the floating tensors to float32 (a float32 tensor goes in
    as it is), runs the op without grad, and returns output and h_n in `d_out`, c_n in `d_c`
    and the workspace in bfloat16. It saves the caller's own input, state and weight tensors
    (bf16 ones bf16, float32 masters as given, never a widened copy), the output it returns (a
    cell: h_n, the same values) and the bf16 workspace. backward widens them and runs
    `rnn_layer_backward`; each gradient comes back in its tensor's dtype. The workspace (gate
    activations, LSTM's c, GRU's W_hn h + b_hn, the RNN pre-activation) and a bf16 output (each
    step's h, the next step's h_prev) are rounded to bf16 once, which costs the gradients bf16's
    unit roundoff per saved factor (tests/test_bf16_ops.py states the budget); the forward's
    results are those of the fp32 kernels rounded once, as before."""

    @staticmethod
    def forward(ctx, mode, batch_sizes, reverse, cell, d_out, d_c, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr):
        args = (input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr)
        out, hy, cy, ws = _ops.rnn_layer(mode, *[_up(t) for t in args], batch_sizes, reverse)
        out, hy = out.to(d_out), hy.to(d_out)
        cy = cy.to(d_c)
        ws = ws.to(torch.bfloat16)
        ctx.mode, ctx.reverse, ctx.cell = mode, reverse, cell
        ctx.mark_non_differentiable(*((ws,) if mode == "lstm" else (cy, ws)))
        # a cell (one step) returns h_n, whose values are the output's: it saves that one
        ctx.save_for_backward(*args, batch_sizes, hy if cell else out, ws)
        return out, hy, cy, ws

    @staticmethod
    def backward(ctx, grad_out, grad_hy, grad_cy, _grad_ws):
        *args, batch_sizes, out, ws = ctx.saved_tensors
        needs = needs_grad(ctx, 14)[6:14]  # input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr
        if ctx.cell:
            out = out.unsqueeze(0)
        if ctx.mode != "lstm":
            grad_cy = None
        grads = (_up(grad_out), _up(grad_hy), _up(grad_cy))
        if torch.is_grad_enabled():  # create_graph: differentiate the torch formulation in fp32
            with torch.enable_grad():
                wide = [_up(t) for t in args]
                res = reference_rnn_layer(ctx.mode, *wide, batch_sizes=batch_sizes, reverse=ctx.reverse)
                pairs = [(o, g) for o, g in zip(res, grads) if o is not None and g is not None]
                wrt = [t for t, n in zip(wide, needs) if n]
                got = iter(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs],
                                               create_graph=True, allow_unused=True))
            grads_in = [next(got) if n else None for n in needs]
        else:
            grads_in = list(_ops.rnn_layer_backward(
                ctx.mode, *grads, *[_up(t) for t in args], batch_sizes, ctx.reverse, _up(out), _up(ws), needs))
        grads_in = [g.to(t.dtype) if g is not None else None for g, t in zip(grads_in, args)]
        return (None, None, None, None, None, None, *grads_in)


def _autocast_dtypes(mode, hx, cx, w_hr, fused, low):
    """The dtypes of (output and h_n, c_n) that torch's recurrent layers and cells return under
    CPU autocast. torch's oneDNN path (``fused``: an LSTM layer over an unpacked sequence without
    projection; every RNN layer) computes in the autocast dtype throughout. Elsewhere (GRU layers,
    packed or projected LSTM layers, the cells) the gates come from linears in the autocast
    dtype and the state update promotes them with the state's dtype: an RNN's new state is
    the autocast dtype, a GRU's promote(autocast, h), an LSTM's promote(autocast, c) (its
    projection, a linear, back to the autocast dtype)."""
    if mode != "gru" and (mode != "lstm" or fused):
        return low, low
    state = torch.promote_types(low, (hx if mode == "gru" else cx).dtype)
    return (low if mode == "lstm" and w_hr is not None else state), state


def _rnn_layer_autocast_impl(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes,
                             reverse, cell, low):
    """Under CPU autocast (`low` its dtype; autocast itself off): computes in float32 (the recurrent
    kernels have no bf16 storage path) and casts the results to torch's autocast dtypes. With
    bfloat16 that is `_RnnLayerLowp`, which saves the tensors as given (a bf16 input is not
    widened for backward), the output it returns and a bf16 workspace. float64 is not
    autocast-eligible: such a call runs as it is."""
    args = (input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr)
    if _has_float64(args):
        return _rnn_layer_op(mode, *args, batch_sizes, reverse)
    fused = not cell and batch_sizes is None and w_hr is None
    d_out, d_c = _autocast_dtypes(mode, hx, cx, w_hr, fused, low)
    if low == torch.bfloat16:
        # (c_n of a non-LSTM, an empty placeholder, stays float32 as below)
        d_c = d_c if mode == "lstm" else torch.float32
        return _RnnLayerLowp.apply(mode, batch_sizes, reverse, cell, d_out, d_c, *args)
    out, hy, cy, ws = _ops.rnn_layer(mode, *_to_float32(args), batch_sizes, reverse)
    return out.to(d_out), hy.to(d_out), (cy.to(d_c) if mode == "lstm" else cy), ws


def _rnn_layer_autocast(mode, input, hx, cx, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None,
                        batch_sizes=None, reverse=False):
    low = torch.get_autocast_dtype("cpu")
    with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_KEYS):
        return _rnn_layer_autocast_impl(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr,
                                        batch_sizes, reverse, False, low)


def rnn_layer(
    mode: str,
    input: torch.Tensor,
    hx: torch.Tensor,
    cx: Optional[torch.Tensor],
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: Optional[torch.Tensor] = None,
    b_hh: Optional[torch.Tensor] = None,
    w_hr: Optional[torch.Tensor] = None,
    batch_sizes: Optional[torch.Tensor] = None,
    reverse: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """One layer, one direction: ``(output, h_n, c_n)``.

    mode: ``"rnn_tanh"``, ``"rnn_relu"``, ``"lstm"`` or ``"gru"`` (torch's gate order: LSTM
    i, f, g, o; GRU r, z, n). input: ``[T, B, I]``, or the ``data`` of a PackedSequence
    ``[N, I]`` with its ``batch_sizes``. hx: ``[B, P]`` (P = proj_size with ``w_hr``, else
    hidden_size); cx: ``[B, H]`` for LSTM, None otherwise. ``reverse`` runs the steps last to
    first (the second direction of a bidirectional layer). output: ``[T, B, P]`` or ``[N, P]``;
    c_n is None except for LSTM.
    """
    out, hy, cy, _ = _rnn_layer_op(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse)
    return out, hy, (cy if mode == "lstm" else None)


def _cell_input(input, hx, w_ih, w_hh, name, state_size):
    if input.dim() not in (1, 2):
        raise ValueError(f"fusedops.{name}: expected input to be 1-D or 2-D, got {input.dim()}-D tensor")
    batched = input.dim() == 2
    x = input if batched else input.unsqueeze(0)
    if hx is None:
        hx = x.new_zeros(x.shape[0], state_size)
    else:
        if hx.dim() != input.dim():
            raise ValueError(
                f"fusedops.{name}: expected hidden to be {input.dim()}-D for {input.dim()}-D input, "
                f"got {hx.dim()}-D tensor"
            )
        if not batched:
            hx = hx.unsqueeze(0)
    return x, hx, batched


def _cell_op(mode, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One step of the op for a cell: x ``[1, B, I]``; returns (h', c'). A float32 / float64
    call outside autocast, torch.compile and functorch goes straight to `_rnn_layer_eager`."""
    if (x.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling()
            or _functorch_active()):
        _, hy, cy, _ = _rnn_layer_op(mode, x, h, c, w_ih, w_hh, b_ih, b_hh, cell=True)
    else:
        _, hy, cy, _ = _rnn_layer_eager(mode, x, h, c, w_ih, w_hh, b_ih, b_hh, None, None, False)
    return hy, cy


def rnn_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity: str = "tanh"):
    """``torch.nn.RNNCell``'s step: ``h' = tanh|relu(x W_ih^T + b_ih + h W_hh^T + b_hh)``;
    input ``[B, I]`` or unbatched ``[I]``; hx None means zeros."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"fusedops.rnn_cell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    if hx is not None and input.dim() == 2 and hx.dim() == 2:  # batched, state given: no reshaping
        return _cell_op("rnn_" + nonlinearity, input.unsqueeze(0), hx, None, w_ih, w_hh, b_ih, b_hh)[0]
    x, h, batched = _cell_input(input, hx, w_ih, w_hh, "rnn_cell", w_hh.shape[0])
    hy, _ = _cell_op("rnn_" + nonlinearity, x.unsqueeze(0), h, None, w_ih, w_hh, b_ih, b_hh)
    return hy if batched else hy.squeeze(0)


def lstm_cell(input, hx: Optional[Tuple[torch.Tensor, torch.Tensor]], w_ih, w_hh, b_ih=None, b_hh=None):
    """``torch.nn.LSTMCell``'s step: returns ``(h', c')``; hx is ``(h, c)`` or None (zeros)."""
    if hx is None:
        h = c = None
    else:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise ValueError("fusedops.lstm_cell: hx must be a tuple (h, c) or None")
        h, c = hx
        if h is not None and c is not None and input.dim() == 2 and h.dim() == 2 and c.dim() == 2:
            return _cell_op("lstm", input.unsqueeze(0), h, c, w_ih, w_hh, b_ih, b_hh)
    x, h, batched = _cell_input(input, h, w_ih, w_hh, "lstm_cell", w_hh.shape[1])
    _, c, _ = _cell_input(input, c, w_ih, w_hh, "lstm_cell", w_hh.shape[0] // 4)
    hy, cy = _cell_op("lstm", x.unsqueeze(0), h, c, w_ih, w_hh, b_ih, b_hh)
    return (hy, cy) if batched else (hy.squeeze(0), cy.squeeze(0))


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """``torch.nn.GRUCell``'s step (torch's placement of b_hn inside ``r * (W_hn h + b_hn)``)."""
    if hx is not None and input.dim() == 2 and hx.dim() == 2:  # batched, state given: no reshaping
        return _cell_op("gru", input.unsqueeze(0), hx, None, w_ih, w_hh, b_ih, b_hh)[0]
    x, h, batched = _cell_input(input, hx, w_ih, w_hh, "gru_cell", w_hh.shape[1])
    hy, _ = _cell_op("gru", x.unsqueeze(0), h, None, w_ih, w_hh, b_ih, b_hh)
    return hy if batched else hy.squeeze(0)


# ---- the torch formulation (double backward, and an oracle for the tests) ---------------------


def _steps(input, batch_sizes):
    if batch_sizes is None:
        return [(t * input.shape[1], input.shape[1]) for t in range(input.shape[0])]
    out, off = [], 0
    for b in batch_sizes.tolist():
        out.append((off, b))
        off += b
    return out


def reference_rnn_layer(mode, input, hx, cx, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None,
                        batch_sizes=None, reverse=False):
    """`rnn_layer` written with torch's differentiable ops, one step at a time."""
    x = input if batch_sizes is not None else input.reshape(-1, input.shape[-1])
    steps = _steps(input, batch_sizes)
    order = range(len(steps) - 1, -1, -1) if reverse else range(len(steps))
    h, c = hx, cx
    rows = [None] * len(steps)
    for t in order:
        off, bs = steps[t]
        xt, hp = x[off:off + bs], h[:bs]
        gi = xt @ w_ih.t() + (b_ih if b_ih is not None else 0)
        gh = hp @ w_hh.t() + (b_hh if b_hh is not None else 0)
        if mode == "lstm":
            i, f, g, o = (gi + gh).chunk(4, 1)
            cn = torch.sigmoid(f) * c[:bs] + torch.sigmoid(i) * torch.tanh(g)
            hn = torch.sigmoid(o) * torch.tanh(cn)
            if w_hr is not None:
                hn = hn @ w_hr.t()
            c = torch.cat([cn, c[bs:]])
        elif mode == "gru":
            ir, iz, in_ = gi.chunk(3, 1)
            hr, hz, hn_ = gh.chunk(3, 1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            n = torch.tanh(in_ + r * hn_)
            hn = (1 - z) * n + z * hp
        else:
            pre = gi + gh
            hn = torch.relu(pre) if mode == "rnn_relu" else torch.tanh(pre)
        h = torch.cat([hn, h[bs:]])
        rows[t] = hn
    P = hx.shape[1]
    out = torch.cat(rows) if rows else x.new_zeros(0, P)
    if batch_sizes is None:
        out = out.reshape(input.shape[0], input.shape[1], P)
    return out, h, c


# ---- fake (meta) implementations -------------------------------------------------------------


def _rows(input, batch_sizes):
    return input.shape[0] if batch_sizes is not None else input.shape[0] * input.shape[1]


@register_fake("fusedops::rnn_layer")
def _rnn_layer_fake(mode, input, hx, cx, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, batch_sizes=None,
                    reverse=False):
    torch._check(mode in _MODES, lambda: f"fusedops.rnn_layer: unknown mode {mode!r}")
    torch._check(input.dim() == (2 if batch_sizes is not None else 3),
                 lambda: f"fusedops.rnn_layer: input has the wrong rank ({input.dim()}-D)")
    H = w_hh.shape[0] // _MODES[mode]
    P = w_hr.shape[0] if w_hr is not None else H
    out_shape = (input.shape[0], P) if batch_sizes is not None else (input.shape[0], input.shape[1], P)
    cy = cx.new_empty(cx.shape) if mode == "lstm" and cx is not None else input.new_empty(0)
    return (input.new_empty(out_shape), hx.new_empty(hx.shape), cy,
            input.new_empty(_rows(input, batch_sizes), _WORKSPACE[mode] * H))


@register_fake("fusedops::rnn_layer_backward")
def _rnn_layer_backward_fake(mode, grad_output, grad_hy, grad_cy, input, hx, cx, w_ih, w_hh, b_ih, b_hh,
                             w_hr, batch_sizes, reverse, output, workspace, output_mask):
    like = (input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr)
    return tuple(t.new_empty(t.shape) if m and t is not None else None for t, m in zip(like, output_mask))


# ---- autograd -------------------------------------------------------------------------------


def _setup(ctx, inputs, output):
    args = list(inputs) + [None, None, None, None, False][len(inputs) - 6:]
    mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse = args[:11]
    ctx.mode, ctx.reverse = mode, reverse
    # (one call: a second would replace the first's set)
    ctx.mark_non_differentiable(*((output[3],) if mode == "lstm" else (output[2], output[3])))
    ctx.save_for_backward(input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, output[0], output[3])


def _backward(ctx, grad_out, grad_hy, grad_cy, _grad_ws):
    input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, out, ws = ctx.saved_tensors
    needs = needs_grad(ctx, 9)[1:9]  # input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr
    if ctx.mode != "lstm":
        grad_cy = None
    args = (input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr)
    if torch.is_grad_enabled():
        with torch.enable_grad():
            res = reference_rnn_layer(ctx.mode, *args, batch_sizes=batch_sizes, reverse=ctx.reverse)
            outs, grads = [], []
            for o, g in zip(res, (grad_out, grad_hy, grad_cy)):
                if o is not None and g is not None:
                    outs.append(o)
                    grads.append(g)
            wrt = [t for t, n in zip(args, needs) if n]
            got = iter(torch.autograd.grad(outs, wrt, grads, create_graph=True, allow_unused=True))
        grads_in = [next(got) if n else None for n in needs]
    else:
        grads_in = list(_ops.rnn_layer_backward(
            ctx.mode, grad_out, grad_hy, grad_cy, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes,
            ctx.reverse, out, ws, needs,
        ))
    return (None, *grads_in, None, None)


# (what torch.compile, functorch and opcheck see; eager calls apply the same formula through
# `_RnnLayerFn`, without this registration's Python autograd kernel)
torch.library.register_autograd("fusedops::rnn_layer", _backward, setup_context=_setup)

# Under CPU autocast a layer returns the dtypes torch's layer returns (`_autocast_dtypes`); the
# cells (fusedops.ops.rnn_cell, lstm_cell, gru_cell) apply torch's cell rule themselves.
_LIB.impl("rnn_layer", _rnn_layer_autocast, "AutocastCPU")
