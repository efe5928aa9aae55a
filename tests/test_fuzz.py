"""Fuzzing against torch: every public op of fusedops.ops, and the nn modules whose forward
adds logic of its own (MultiheadAttention, RNN/LSTM/GRU), over shapes drawn by hypothesis
(0 and 1 included, SIMD and tile tails), layouts (contiguous, transposed, strided slices,
expanded/broadcast views), dtypes (float32, float64; bfloat16 where the op takes it) and
argument values. Values and gradients (of a random upstream gradient, into the leaf tensors
under the views) follow the error-budget rule of conftest.assert_within_budget against torch
in the same dtype and float64 truth; NaN and infinity must sit where torch's truth has them.

Budgets: FUSEDOPS_FUZZ=ci (the default: a fixed, derandomized set of examples, about a minute
on 2 cores) or FUSEDOPS_FUZZ=long (`make fuzz`: random examples, 40x as many, failing ones
saved in .hypothesis/fuzz, a folder git ignores, and replayed first on the next run).
Bugs found this way are replayed as explicit tests at the end of this file.
"""
import math
import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

import fusedops
from conftest import REPO_ROOT, START_ISA, assert_within_budget
from fusedops import ops as fops

# ---- budgets ---------------------------------------------------------------------------------

PROFILE = os.environ.get("FUSEDOPS_FUZZ", "ci")
if PROFILE not in ("ci", "long"):
    raise ValueError(f"FUSEDOPS_FUZZ must be 'ci' or 'long', got {PROFILE!r}")
_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
if PROFILE == "ci":
    _BASE, _EXTRA = 40, dict(derandomize=True, database=None)
else:
    _BASE, _EXTRA = 40 * 25, dict(database=DirectoryBasedExampleDatabase(
        os.path.join(REPO_ROOT, ".hypothesis", "fuzz")))


def fuzz(weight=1.0):
    """The hypothesis settings of one fuzz test: `weight` times the profile's examples."""
    return settings(max_examples=max(1, int(_BASE * weight)), **_COMMON, **_EXTRA)


FLOATS = (torch.float32, torch.float64)
# sizes: 0 and 1, small odd ones, and the 8/16-lane SIMD and tile tails around them
SIZES = st.sampled_from([0, 1, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33])
SMALL = st.integers(1, 6)

# ---- inputs: a leaf tensor and the view of it the op receives ----------------------------------


class Spec:
    """One floating input: the logical `shape` the op sees and how its view is made from a
    leaf (the tensor gradients are taken against): contiguous, transposed (the last two dims
    stored the other way round), strided (every other element of a wider last dim) or
    expanded (the dims in `bcast` stored with size 1)."""

    def __init__(self, shape, layout="contiguous", bcast=(), scale=1.0, grad=True):
        self.shape, self.layout, self.bcast = tuple(shape), layout, tuple(bcast)
        self.scale, self.grad = scale, grad

    def leaf_shape(self):
        s = list(self.shape)
        if self.layout == "transposed":
            s[-1], s[-2] = s[-2], s[-1]
        elif self.layout == "strided":
            s[-1] = 2 * s[-1] + 1
        elif self.layout == "expanded":
            for d in self.bcast:
                s[d] = 1
        return s

    def view(self, leaf):
        if self.layout == "transposed":
            return leaf.transpose(-1, -2)
        if self.layout == "strided":
            return leaf[..., ::2][..., : self.shape[-1]]
        if self.layout == "expanded":
            return leaf.expand(self.shape)
        return leaf

    def __repr__(self):
        return f"Spec({list(self.shape)}, {self.layout}{', bcast=' + str(self.bcast) if self.bcast else ''})"


@st.composite
def spec(draw, shape, scale=1.0, grad=True, layouts=("contiguous", "transposed", "strided", "expanded")):
    """A Spec of `shape` with a layout hypothesis picks among those the shape allows."""
    shape = tuple(shape)
    allowed = [l for l in layouts if l != "transposed" or len(shape) >= 2]
    allowed = [l for l in allowed if l != "strided" or len(shape) >= 1]
    if "expanded" in allowed:
        dims = [d for d, n in enumerate(shape) if n != 1]
        if not dims:
            allowed.remove("expanded")
    layout = draw(st.sampled_from(allowed))
    bcast = ()
    if layout == "expanded":
        bcast = tuple(draw(st.lists(st.sampled_from(dims), min_size=1, unique=True)))
    return Spec(shape, layout, bcast, scale, grad)


def _fill(specs, seed):
    """float64 base values of each spec's leaf, from `seed`."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s.leaf_shape(), generator=g, dtype=torch.float64) * s.scale for s in specs]


def _run(fn, specs, bases, dtype, grad_seed, grads):
    """fn(*views) with leaves of `dtype`; returns (outputs, gradients of the leaves)."""
    leaves = [b.to(dtype).requires_grad_(grads and s.grad) for s, b in zip(specs, bases)]
    out = fn(*[s.view(l) for s, l in zip(specs, leaves)])
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    floats = [o for o in outs if o is not None and o.is_floating_point()]
    wanted = [l for l in leaves if l.requires_grad]
    gx = [None] * len(wanted)
    diff = [o for o in floats if o.requires_grad]
    if grads and wanted and diff:
        g = torch.Generator().manual_seed(grad_seed)
        ups = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in diff]
        gx = torch.autograd.grad(diff, wanted, ups, allow_unused=True)
    return [o.detach() if o is not None else None for o in outs], list(gx)


def _compare(ours, theirs, truth, what, floor_ulps, scale):
    if ours is None or truth is None:
        assert (ours is None or not ours.abs().any()) and (truth is None or not truth.abs().any()), \
            f"{what}: one side has no gradient and the other a nonzero one"
        return
    assert ours.shape == truth.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(truth.shape)}"
    if not ours.is_floating_point():  # indices: exact
        assert torch.equal(ours, truth), f"{what}: {ours} != {truth}"
        return
    # non-finite values where the truth has them (as it rounds to the dtype), the rest in budget
    t_low = truth.to(ours.dtype)
    same_nan = torch.equal(torch.isnan(ours), torch.isnan(t_low))
    assert same_nan, f"{what}: NaN at {torch.isnan(ours).nonzero()[:4].tolist()} vs truth's " \
                     f"{torch.isnan(t_low).nonzero()[:4].tolist()}"
    inf = torch.isinf(t_low)
    assert torch.equal(torch.isinf(ours), inf) and torch.equal(ours[inf], t_low[inf]), \
        f"{what}: infinities differ from the truth's"
    fin = torch.isfinite(t_low) & torch.isfinite(truth)
    z = lambda t: torch.where(fin, t, torch.zeros((), dtype=t.dtype))  # noqa: E731
    th = theirs if theirs is not None and torch.isfinite(theirs[fin]).all() else t_low
    assert_within_budget(z(ours), z(th), z(truth), what, floor_ulps, scale)


def check_op(ours_fn, torch_fn, specs, seed, dtype, what, grads=True, floor_ulps=16,
             scale_fn=None, ref_fn=None):
    """Our op against torch in `dtype` and in float64 (ref_fn, when given, is the float64
    truth instead), for outputs and the gradients of every leaf that takes one. scale_fn(views64,
    ups64) -> (output scale, gradient scale): the magnitude of the terms a result sums, where
    cancellation can make the result itself small."""
    bases = _fill(specs, seed)
    grads = grads and any(s.grad for s in specs)
    try:
        t_out, t_g = _run(torch_fn, specs, bases, dtype, seed + 1, grads)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:  # torch refuses: so must we
        with pytest.raises(Exception):
            _run(ours_fn, specs, bases, dtype, seed + 1, grads)
        return f"refused: {e}"
    o_out, o_g = _run(ours_fn, specs, bases, dtype, seed + 1, grads)
    r_out, r_g = _run(ref_fn or torch_fn, specs, bases, torch.float64, seed + 1, grads)
    if dtype == torch.float64:  # torch's own float64 is the truth: allow the summation order
        floor_ulps = max(floor_ulps, 512)
    s_out = s_grad = 0.0
    if scale_fn is not None:
        s_out, s_grad = scale_fn(specs, bases)
    assert len(o_out) == len(r_out), f"{what}: {len(o_out)} outputs, torch gives {len(r_out)}"
    for i, (o, t, r) in enumerate(zip(o_out, t_out, r_out)):
        _compare(o, t, r, f"{what} output {i}", floor_ulps, s_out)
    for i, (o, t, r) in enumerate(zip(o_g, t_g, r_g)):
        _compare(o, t, r, f"{what} grad {i}", floor_ulps, s_grad)


def abs_scale(torch_fn):
    """scale_fn for sums of products: torch_fn over |inputs| (|A| @ |B| for a product) for the
    outputs, and for the gradients the largest |input| times the largest output scale."""

    def scale(specs, bases):
        views = [s.view(b.abs()) for s, b in zip(specs, bases)]
        out = torch_fn(*views)
        out = out[0] if isinstance(out, (tuple, list)) else out
        s_out = out.abs().max().item() if out.numel() else 0.0
        s_in = max([v.abs().max().item() for v in views if v.numel()] + [1.0])
        return s_out, 4.0 * s_out * s_in
    return scale


seeds = st.integers(0, 2**31 - 1)


def dtypes(bf16=False):
    return st.sampled_from(FLOATS + ((torch.bfloat16,) if bf16 else ()))


# ---- pointwise activations and softmax -----------------------------------------------------------

POINTWISE = {
    "relu": (fops.relu, F.relu),
    "sigmoid": (fops.sigmoid, torch.sigmoid),
    "tanh": (fops.tanh, torch.tanh),
    "gelu": (fops.gelu, F.gelu),
    "gelu_tanh": (lambda x: fops.gelu(x, approximate="tanh"), lambda x: F.gelu(x, approximate="tanh")),
}


@fuzz(2)
@given(name=st.sampled_from(sorted(POINTWISE)), shape=st.lists(SIZES, max_size=3),
       scale=st.sampled_from([1e-3, 1.0, 8.0, 60.0]), dtype=dtypes(), seed=seeds, data=st.data())
def test_fuzz_pointwise(name, shape, scale, dtype, seed, data):
    x = data.draw(spec(shape, scale))
    ours, theirs = POINTWISE[name]
    # the vector erf and tanh are accurate to a few 1e-7 absolute (vec/math.h), so GELU's
    # error is bounded relative to |x|, not to its result (which is tiny for x < -4); the
    # gradients (1 - y*y, y*(1 - y), ...) cancel terms as large as the upstream gradient
    def scale_fn(specs, bases):
        xmax = bases[0].abs().max().item() if bases[0].numel() and name.startswith("gelu") else 0.0
        return xmax, max(xmax, 8.0)

    check_op(ours, theirs, [x], seed, dtype, f"{name} {x}", scale_fn=scale_fn)


@fuzz(1.5)
@given(log=st.booleans(), shape=st.lists(SIZES, min_size=1, max_size=3), dim=st.integers(-3, 2),
       scale=st.sampled_from([1e-2, 1.0, 30.0]), dtype=dtypes(), seed=seeds, data=st.data())
def test_fuzz_softmax(log, shape, dim, scale, dtype, seed, data):
    assume(-len(shape) <= dim < len(shape))
    x = data.draw(spec(shape, scale))
    ours, theirs = (fops.log_softmax, F.log_softmax) if log else (fops.softmax, F.softmax)
    # the gradient sums g*y over the row: its terms are as large as the upstream gradient
    scale_fn = lambda specs, bases: (1.0, 8.0 * (max(shape[dim], 1) ** 0.5))  # noqa: E731
    check_op(lambda t: ours(t, dim), lambda t: theirs(t, dim), [x], seed, dtype,
             f"{'log_' if log else ''}softmax dim={dim} {x}", scale_fn=scale_fn)


# ---- linear and matmul -------------------------------------------------------------------------


@fuzz(2)
@given(lead=st.lists(SIZES, max_size=2), k=SIZES, n=SIZES, bias=st.booleans(),
       activation=st.sampled_from([None, "relu", "gelu", "gelu_tanh"]), dtype=dtypes(bf16=True),
       seed=seeds, data=st.data())
def test_fuzz_linear(lead, k, n, bias, activation, dtype, seed, data):
    specs = [data.draw(spec(lead + [k])), data.draw(spec([n, k]))]
    if bias:
        specs.append(data.draw(spec([n])))

    def theirs(x, w, b=None):
        y = F.linear(x, w, b)
        return y if activation is None else (F.relu(y) if activation == "relu" else
                                             F.gelu(y, approximate="tanh" if activation == "gelu_tanh" else "none"))

    def ours(x, w, b=None):
        return fops.linear(x, w, b, activation=activation)

    check_op(ours, theirs, specs, seed, dtype, f"linear {activation} {specs}",
             scale_fn=abs_scale(theirs), floor_ulps=32)


@fuzz(1.5)
@given(m=SIZES, k=SIZES, n=SIZES, batch=st.sampled_from([None, 1, 2, 3]),
       which=st.sampled_from(["both", "left", "right"]), dtype=dtypes(bf16=True), seed=seeds,
       data=st.data())
def test_fuzz_matmul(m, k, n, batch, which, dtype, seed, data):
    a_shape, b_shape = [m, k], [k, n]
    if batch is not None:
        if which in ("both", "left"):
            a_shape = [batch] + a_shape
        if which in ("both", "right"):
            b_shape = [batch if which == "right" or batch == 1 else data.draw(st.sampled_from([1, batch]))] + b_shape
    specs = [data.draw(spec(a_shape)), data.draw(spec(b_shape))]
    check_op(fops.matmul, torch.matmul, specs, seed, dtype, f"matmul {specs}",
             scale_fn=abs_scale(torch.matmul), floor_ulps=32)


# ---- norms -------------------------------------------------------------------------------------


def _ln_scale(specs, bases, k):
    # gradients subtract row means of g*w and g*w*xhat, each as large as |g||w| * rstd
    views = [s.view(b) for s, b in zip(specs, bases)]
    x = views[0]
    dims = list(range(x.dim() - k, x.dim()))
    std = x.var(dims, unbiased=False).add(1e-5).sqrt() if x.numel() else torch.ones(1)
    wmax = max([v.abs().max().item() for v in views[1:] if v.numel()] + [1.0])
    n = max(int(torch.tensor(x.shape[x.dim() - k:]).prod()), 1)
    return 4.0 * wmax, 8.0 * wmax * (1.0 / std.min().clamp_min(1e-6).item()) * n ** 0.5


@fuzz(2)
@given(lead=st.lists(SIZES, max_size=1), norm=st.lists(SIZES.filter(bool), min_size=1, max_size=2),
       affine=st.sampled_from(["both", "weight", "none"]), eps=st.sampled_from([1e-5, 1e-2]),
       residual=st.booleans(), dtype=dtypes(), seed=seeds, data=st.data())
def test_fuzz_layer_norm(lead, norm, affine, eps, residual, dtype, seed, data):
    shape = lead + norm
    specs = [data.draw(spec(shape, scale=data.draw(st.sampled_from([1e-2, 1.0, 50.0]))))]
    if residual:
        specs.append(data.draw(spec(shape)))
    nin = len(specs)
    if affine != "none":
        specs.append(data.draw(spec(norm)))
    if affine == "both":
        specs.append(data.draw(spec(norm)))

    def split(args):
        w = args[nin] if len(args) > nin else None
        b = args[nin + 1] if len(args) > nin + 1 else None
        return w, b

    if residual:
        def ours(*a):
            return fops.add_layer_norm(a[0], a[1], norm, *split(a), eps=eps)

        def theirs(*a):
            s = a[0] + a[1]
            return F.layer_norm(s, norm, *split(a), eps=eps), s
    else:
        def ours(*a):
            return fops.layer_norm(a[0], norm, *split(a), eps=eps)

        def theirs(*a):
            return F.layer_norm(a[0], norm, *split(a), eps=eps)

    def scale_fn(sp, bases):
        if residual:  # the statistics are those of the sum
            views = [sp[0].view(bases[0]) + sp[1].view(bases[1])]
            return _ln_scale([Spec(shape)] + sp[2:], views + bases[2:], len(norm))
        return _ln_scale(sp, bases, len(norm))

    check_op(ours, theirs, specs, seed, dtype,
             f"{'add_' if residual else ''}layer_norm {norm} {affine} eps={eps} {specs}",
             scale_fn=scale_fn, floor_ulps=32)


def _rms_scale(specs, bases, k, residual):
    # as _ln_scale with the root mean square in place of the standard deviation
    views = [s.view(b) for s, b in zip(specs, bases)]
    x = views[0] + views[1] if residual else views[0]
    rest = views[2:] if residual else views[1:]
    dims = list(range(x.dim() - k, x.dim()))
    rms = x.pow(2).mean(dims).add(1e-5).sqrt() if x.numel() else torch.ones(1)
    wmax = max([v.abs().max().item() for v in rest if v.numel()] + [1.0])
    n = max(int(torch.tensor(x.shape[x.dim() - k:]).prod()), 1)
    xmax = x.abs().max().item() if x.numel() else 1.0
    inv = 1.0 / rms.min().clamp_min(1e-6).item()
    return 4.0 * wmax * xmax * inv, 8.0 * wmax * inv * n ** 0.5


@fuzz(2)
@given(lead=st.lists(SIZES, max_size=1), norm=st.lists(SIZES.filter(bool), min_size=1, max_size=2),
       affine=st.booleans(), eps=st.sampled_from([None, 1e-5, 1e-2]), residual=st.booleans(),
       dtype=dtypes(bf16=True), seed=seeds, data=st.data())
def test_fuzz_rms_norm(lead, norm, affine, eps, residual, dtype, seed, data):
    shape = lead + norm
    specs = [data.draw(spec(shape, scale=data.draw(st.sampled_from([1e-2, 1.0, 50.0]))))]
    if residual:
        specs.append(data.draw(spec(shape)))
    nin = len(specs)
    if affine:
        specs.append(data.draw(spec(norm)))

    def weight(a):
        return a[nin] if len(a) > nin else None

    # eps None is the float32 machine epsilon for float32 and bfloat16 inputs (as torch): the
    # float64 truth uses it too
    e64 = torch.finfo(torch.float32).eps if eps is None and dtype != torch.float64 else eps

    def make(fn_eps):
        if residual:
            def theirs(*a):
                s = a[0] + a[1]
                return F.rms_norm(s, norm, weight(a), fn_eps(a[0])), s
        else:
            def theirs(*a):
                return F.rms_norm(a[0], norm, weight(a), fn_eps(a[0]))
        return theirs

    if residual:
        def ours(*a):
            return fops.add_rms_norm(a[0], a[1], weight(a), eps, norm)
    else:
        def ours(*a):
            return fops.rms_norm(a[0], weight(a), eps, norm)

    check_op(ours, make(lambda x: eps), specs, seed, dtype,
             f"{'add_' if residual else ''}rms_norm {norm} affine={affine} eps={eps} {specs}",
             ref_fn=make(lambda x: e64), scale_fn=lambda sp, b: _rms_scale(sp, b, len(norm), residual),
             floor_ulps=32)


# ---- Llama-family ops: rotary embedding, SwiGLU ----------------------------------------------------


def _rope_ref(q, k, cos, sin):
    c, s = cos[:, None] if cos.dim() == 3 else cos, sin[:, None] if sin.dim() == 3 else sin
    r = c.shape[-1]

    def one(x):
        xr = x[..., :r]
        h = r // 2
        rot = torch.cat((-xr[..., h:], xr[..., :h]), -1)
        return torch.cat((xr * c + rot * s, x[..., r:]), -1)

    return one(q), one(k)


def _rope_scale(specs, bases):
    # an output sums two products of |x| and |cos| or |sin|; a leaf's gradient (an expanded q)
    # sums as many such terms as view elements share it
    views = [s.view(b) for s, b in zip(specs, bases)]
    amax = [v.abs().max().item() if v.numel() else 0.0 for v in views]
    cs = amax[2] + amax[3]
    share = max(max(math.prod(s.shape), 1) // max(math.prod(s.leaf_shape()), 1) for s in specs[:2])
    return max(amax[0], amax[1]) * cs, 4.0 * cs * max(share, 1)


@fuzz(2)
@given(b=st.integers(0, 2), hq=st.integers(1, 3), hk=st.integers(1, 2), t=SIZES, half=st.integers(1, 9),
       extra=st.sampled_from([0, 0, 2, 5]), batched=st.booleans(), dtype=dtypes(bf16=True), seed=seeds,
       data=st.data())
def test_fuzz_rotary(b, hq, hk, t, half, extra, batched, dtype, seed, data):
    r = 2 * half
    d = r + extra
    # drawn layouts of [B, H, T, D] (transposed: a strided last dimension, read through a copy)
    specs = [data.draw(spec((b, hq, t, d), layouts=("contiguous", "transposed", "strided", "expanded"))),
             data.draw(spec((b, hk, t, d), layouts=("contiguous", "transposed", "strided"))),
             Spec((b, t, r) if batched else (t, r), grad=False),
             Spec((b, t, r) if batched else (t, r), grad=False)]

    check_op(lambda q, k, c, s: fops.rotary_embedding(q, k, c, s), _rope_ref, specs, seed, dtype,
             f"rotary_embedding b={b} hq={hq} hk={hk} t={t} r={r} d={d} {specs}", scale_fn=_rope_scale)


def _swiglu_scale(specs, bases):
    # |silu(a) b| <= |a| |b|; a gradient term is at most 1.1 |g| |b| or |g| |a|, and a leaf's
    # gradient (an expanded input) sums as many terms as view elements share it
    views = [s.view(b) for s, b in zip(specs, bases)]
    amax = max([v.abs().max().item() for v in views if v.numel()] + [0.0])
    share = max(max(math.prod(s.shape), 1) // max(math.prod(s.leaf_shape()), 1) for s in specs)
    return amax * amax, 4.4 * amax * max(share, 1)


@fuzz(2)
@given(shape=st.lists(SIZES, min_size=1, max_size=3), chunked=st.booleans(), scale=st.sampled_from([1.0, 8.0]),
       dtype=dtypes(bf16=True), seed=seeds, data=st.data())
def test_fuzz_swiglu(shape, chunked, scale, dtype, seed, data):
    if chunked:  # the halves of one projection
        wide = shape[:-1] + [2 * shape[-1]]
        specs = [data.draw(spec(wide, scale=scale))]
        n = shape[-1]
        check_op(lambda x: fops.swiglu(x[..., :n], x[..., n:]), lambda x: F.silu(x[..., :n]) * x[..., n:], specs,
                 seed, dtype, f"swiglu chunked {shape} {specs}", scale_fn=_swiglu_scale)
    else:
        specs = [data.draw(spec(shape, scale=scale)), data.draw(spec(shape))]
        check_op(fops.swiglu, lambda a, b: F.silu(a) * b, specs, seed, dtype, f"swiglu {shape} {specs}",
                 scale_fn=_swiglu_scale)


# ---- convolution and pooling ---------------------------------------------------------------------


@fuzz(2)
@given(n=st.integers(0, 2), groups=st.integers(1, 3), cg=st.integers(1, 3), og=st.integers(1, 3),
       h=st.integers(1, 9), w=st.integers(1, 9), kh=st.integers(1, 4), kw=st.integers(1, 4),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       padding=st.one_of(st.tuples(st.integers(0, 2), st.integers(0, 2)), st.sampled_from(["same", "valid"])),
       bias=st.booleans(), batched=st.booleans(), dtype=dtypes(), seed=seeds, data=st.data())
def test_fuzz_conv2d(n, groups, cg, og, h, w, kh, kw, stride, dilation, padding, bias, batched,
                     dtype, seed, data):
    if padding == "same":
        stride = (1, 1)
    pads = (0, 0) if isinstance(padding, str) else padding
    assume(h + 2 * pads[0] >= dilation[0] * (kh - 1) + 1 or padding == "same")
    assume(w + 2 * pads[1] >= dilation[1] * (kw - 1) + 1 or padding == "same")
    if not batched:
        n = 1
    x_shape = ([n] if batched else []) + [groups * cg, h, w]
    specs = [data.draw(spec(x_shape)), data.draw(spec([groups * og, cg, kh, kw]))]
    if bias:
        specs.append(data.draw(spec([groups * og])))

    def theirs(x, wt, b=None):
        return F.conv2d(x, wt, b, stride, padding, dilation, groups)

    def ours(x, wt, b=None):
        return fops.conv2d(x, wt, b, stride, padding, dilation, groups)

    check_op(ours, theirs, specs, seed, dtype,
             f"conv2d s={stride} p={padding} d={dilation} g={groups} {specs}",
             scale_fn=abs_scale(theirs), floor_ulps=32)


@fuzz(1.5)
@given(n=st.integers(0, 2), c=st.integers(1, 3), h=st.integers(1, 10), w=st.integers(1, 10),
       k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       stride=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)), ceil_mode=st.booleans(),
       pad=st.tuples(st.integers(0, 2), st.integers(0, 2)), batched=st.booleans(),
       dtype=dtypes(), seed=seeds, data=st.data())
def test_fuzz_max_pool2d(n, c, h, w, k, stride, dilation, ceil_mode, pad, batched, dtype, seed, data):
    pad = tuple(min(p, kk // 2) for p, kk in zip(pad, k))  # torch's limit
    assume(h + 2 * pad[0] >= dilation[0] * (k[0] - 1) + 1)
    assume(w + 2 * pad[1] >= dilation[1] * (k[1] - 1) + 1)
    x = data.draw(spec(([n] if batched else []) + [c, h, w]))

    def theirs(t):
        return F.max_pool2d(t, k, stride, pad, dilation, ceil_mode, return_indices=True)

    def ours(t):
        return fops.max_pool2d(t, k, stride, pad, dilation, ceil_mode, return_indices=True)

    check_op(ours, theirs, [x], seed, dtype, f"max_pool2d k={k} s={stride} p={pad} d={dilation} "
             f"ceil={ceil_mode} {x}")


# ---- attention -----------------------------------------------------------------------------------


@fuzz(2)
@given(b=st.integers(0, 2), hk=st.integers(1, 2), group=st.integers(1, 2), L=SIZES, S=SIZES.filter(bool),
       e=st.sampled_from([1, 2, 3, 8, 16, 17]), ev=st.sampled_from([1, 3, 8, 16]),
       mask=st.sampled_from([None, "bool", "float", "causal"]), scale=st.sampled_from([None, 0.3, 2.0]),
       dtype=dtypes(bf16=True), seed=seeds, data=st.data())
def test_fuzz_attention(b, hk, group, L, S, e, ev, mask, scale, dtype, seed, data):
    gqa = group > 1
    h = hk * group
    specs = [data.draw(spec([b, h, L, e])), data.draw(spec([b, hk, S, e])), data.draw(spec([b, hk, S, ev]))]
    m = None
    if mask in ("bool", "float"):
        mshape = data.draw(st.sampled_from([[L, S], [b, 1, L, S], [1, h, L, S]]))
        g = torch.Generator().manual_seed(seed + 7)
        if mask == "bool":
            m = torch.rand(mshape, generator=g) > 0.4
            m[..., 0] = True  # a row with no visible key: torch gives NaN, ours zeros (documented)
        else:
            m = torch.randn(mshape, generator=g, dtype=torch.float64)

    def call(fn, q, k, v):
        mm = m if m is None or m.dtype == torch.bool else m.to(q.dtype)
        return fn(q, k, v, attn_mask=mm, is_causal=mask == "causal", scale=scale, enable_gqa=gqa)

    def scale_fn(specs, bases):
        vmax = max([bb.abs().max().item() for bb in bases if bb.numel()] + [1.0])
        return 2.0 * vmax, 16.0 * vmax ** 3 * max(S, 1) ** 0.5 * (scale or 1.0)

    check_op(lambda *a: call(fops.scaled_dot_product_attention, *a),
             lambda *a: call(F.scaled_dot_product_attention, *a), specs, seed, dtype,
             f"attention mask={mask} gqa={gqa} scale={scale} {specs}", scale_fn=scale_fn,
             # bf16 (its products on the bf16 units where the CPU has them): a floor of 4 bf16
             # eps of the scale, twice the two roundings (P, the output) the native path adds
             floor_ulps=4 if dtype == torch.bfloat16 else 32)


# ---- losses -----------------------------------------------------------------------------------------


@fuzz(2)
@given(layout=st.sampled_from(["1d", "2d", "nd"]), n=SIZES, c=SIZES.filter(bool), d=st.integers(1, 3),
       probs=st.booleans(), weight=st.booleans(), ignore=st.sampled_from([-100, 0, 2]),
       reduction=st.sampled_from(["mean", "sum", "none"]), smoothing=st.sampled_from([0.0, 0.1, 0.7]),
       scale=st.sampled_from([0.1, 1.0, 20.0]), dtype=dtypes(), seed=seeds, data=st.data())
def test_fuzz_cross_entropy(layout, n, c, d, probs, weight, ignore, reduction, smoothing, scale,
                            dtype, seed, data):
    shape = {"1d": [c], "2d": [n, c], "nd": [n, c, d]}[layout]
    specs = [data.draw(spec(shape, scale))]
    if weight:
        specs.append(data.draw(spec([c], grad=False)))
    g = torch.Generator().manual_seed(seed + 3)
    if probs:
        ignore = -100  # torch and ours refuse an ignore_index with probability targets
        target = torch.rand(shape, generator=g, dtype=torch.float64)
        target = target / target.sum(0 if layout == "1d" else 1, keepdim=True).clamp_min(1e-12)
    else:
        tshape = shape[:1] + shape[2:] if layout != "1d" else []
        target = torch.randint(0, c, tshape, generator=g)
        target[torch.rand(tshape, generator=g) < 0.2] = ignore
    # weights positive, as a class weight is in practice (a sum of weights near 0 divides)
    if weight:
        specs[1].scale = 0.5

    def args(t):
        kw = dict(ignore_index=ignore, reduction=reduction, label_smoothing=smoothing)
        tgt = target.to(t[0].dtype) if probs else target
        w = None if len(t) == 1 else t[1].abs() + 0.1
        return (t[0], tgt), dict(weight=w, **kw)

    def ours(*t):
        a, kw = args(t)
        return fops.cross_entropy(*a, **kw)

    def theirs(*t):
        a, kw = args(t)
        return F.cross_entropy(*a, **kw)

    rows = max(n * (d if layout == "nd" else 1), 1)
    scale_fn = lambda sp, bases: (8.0 * (scale + 1), 8.0 * (scale + 1) * rows)  # noqa: E731
    check_op(ours, theirs, specs, seed, dtype,
             f"cross_entropy {layout} probs={probs} w={weight} ignore={ignore} {reduction} "
             f"ls={smoothing} {specs}", scale_fn=scale_fn, floor_ulps=32)


@fuzz(1.5)
@given(lead=st.lists(SIZES, max_size=2), k=SIZES, v=SIZES.filter(bool), bias=st.booleans(),
       reduction=st.sampled_from(["mean", "sum", "none"]), smoothing=st.sampled_from([0.0, 0.2]),
       dtype=dtypes(), seed=seeds, data=st.data())
def test_fuzz_linear_cross_entropy(lead, k, v, bias, reduction, smoothing, dtype, seed, data):
    specs = [data.draw(spec(lead + [k])), data.draw(spec([v, k]))]
    if bias:
        specs.append(data.draw(spec([v])))
    g = torch.Generator().manual_seed(seed + 5)
    target = torch.randint(0, v, lead, generator=g)
    target[torch.rand(lead, generator=g) < 0.2] = -100

    def ours(x, w, b=None):
        return fops.linear_cross_entropy(x, w, target, b, reduction=reduction, label_smoothing=smoothing)

    def theirs(x, w, b=None):
        logits = F.linear(x, w, b)
        loss = F.cross_entropy(logits.reshape(-1, v), target.reshape(-1), reduction=reduction,
                               label_smoothing=smoothing)
        return loss.reshape(lead) if reduction == "none" else loss

    rows = max(int(torch.tensor(lead).prod()) if lead else 1, 1)
    scale_fn = lambda sp, bases: (16.0 * max(k, 1), 16.0 * max(k, 1) * rows * max(v, 1))  # noqa: E731
    check_op(ours, theirs, specs, seed, dtype, f"linear_cross_entropy {reduction} ls={smoothing} "
             f"{specs}", scale_fn=scale_fn, floor_ulps=32)


@fuzz(1)
@given(shape=st.lists(SIZES, max_size=3), bshape=st.data(), reduction=st.sampled_from(["mean", "sum", "none"]),
       dtype=dtypes(), seed=seeds, data=st.data())
def test_fuzz_mse_loss(shape, bshape, reduction, dtype, seed, data):
    # the target may broadcast against the input (torch warns, then broadcasts)
    tshape = [bshape.draw(st.sampled_from([s, 1])) for s in shape]
    specs = [data.draw(spec(shape)), data.draw(spec(tshape))]
    n = max(int(torch.tensor(shape).prod()) if shape else 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's and ours: sizes differ
        check_op(lambda a, b: fops.mse_loss(a, b, reduction), lambda a, b: F.mse_loss(a, b, reduction=reduction),
                 specs, seed, dtype, f"mse_loss {reduction} {specs}",
                 scale_fn=lambda sp, bases: (16.0, 16.0 * n), floor_ulps=32)


@fuzz(1)
@given(shape=st.lists(SIZES, max_size=3), weight=st.booleans(), pos=st.booleans(),
       reduction=st.sampled_from(["mean", "sum", "none"]), scale=st.sampled_from([1.0, 30.0]),
       dtype=dtypes(), seed=seeds, data=st.data())
def test_fuzz_bce_with_logits(shape, weight, pos, reduction, scale, dtype, seed, data):
    specs = [data.draw(spec(shape, scale))]
    g = torch.Generator().manual_seed(seed + 9)
    target = torch.rand(shape, generator=g, dtype=torch.float64)
    w = torch.rand([data.draw(st.sampled_from([s, 1])) for s in shape], generator=g, dtype=torch.float64) if weight else None
    pw = torch.rand(shape[-1:] or [], generator=g, dtype=torch.float64) * 3 if pos else None

    def call(fn, x):
        d = x.dtype
        return fn(x, target.to(d), None if w is None else w.to(d), reduction=reduction,
                  pos_weight=None if pw is None else pw.to(d))

    n = max(int(torch.tensor(shape).prod()) if shape else 1, 1)
    check_op(lambda x: call(fops.binary_cross_entropy_with_logits, x),
             lambda x: call(F.binary_cross_entropy_with_logits, x), specs, seed, dtype,
             f"bce_with_logits w={weight} pos={pos} {reduction} {specs}",
             scale_fn=lambda sp, bases: (4.0 * (scale + 1), 4.0 * (scale + 1) * n), floor_ulps=32)


# ---- recurrent cells -------------------------------------------------------------------------------

CELLS = {
    "rnn_tanh": (lambda x, h, c, *w: fops.rnn_cell(x, h, *w, nonlinearity="tanh"),
                 lambda x, h, c, *w: torch.rnn_tanh_cell(x, h, *w), 1),
    "rnn_relu": (lambda x, h, c, *w: fops.rnn_cell(x, h, *w, nonlinearity="relu"),
                 lambda x, h, c, *w: torch.rnn_relu_cell(x, h, *w), 1),
    "lstm": (lambda x, h, c, *w: fops.lstm_cell(x, (h, c), *w),
             lambda x, h, c, *w: torch.lstm_cell(x, (h, c), *w), 4),
    "gru": (lambda x, h, c, *w: fops.gru_cell(x, h, *w), lambda x, h, c, *w: torch.gru_cell(x, h, *w), 3),
}


@fuzz(1.5)
@given(mode=st.sampled_from(sorted(CELLS)), b=SIZES, i=SIZES, hs=st.sampled_from([1, 2, 5, 8, 17]),
       bias=st.booleans(), batched=st.booleans(), dtype=dtypes(), seed=seeds, data=st.data())
def test_fuzz_cells(mode, b, i, hs, bias, batched, dtype, seed, data):
    ours, batched_ref, gates = CELLS[mode]

    def theirs(x, h, c, *w):  # torch's cell functions take a batch only (as nn.*Cell passes them)
        if batched:
            return batched_ref(x, h, c, *w)
        out = batched_ref(x[None], h[None], c[None], *w)
        return tuple(o[0] for o in out) if isinstance(out, tuple) else out[0]

    lead = [b] if batched else []
    specs = [data.draw(spec(lead + [i])), data.draw(spec(lead + [hs])), data.draw(spec(lead + [hs])),
             data.draw(spec([gates * hs, i], 0.5)), data.draw(spec([gates * hs, hs], 0.5))]
    if bias:
        specs += [data.draw(spec([gates * hs], 0.5)), data.draw(spec([gates * hs], 0.5))]
    if mode != "lstm":
        specs[2].grad = False
    check_op(ours, theirs, specs, seed, dtype, f"{mode} cell {specs}",
             scale_fn=lambda sp, bases: (4.0 * (i + hs + 2), 64.0 * (i + hs + 2)), floor_ulps=32)


# ---- nn modules whose forward arranges more than one op ----------------------------------------------


def _module_pair(cls_ours, cls_torch, dtype, seed, *args, **kwargs):
    torch.manual_seed(seed)
    ref = cls_torch(*args, **kwargs).to(dtype)
    ours = cls_ours(*args, **kwargs).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def _check_modules(ours, ref, truth, inputs_fn, what, seed, dtype, floor_ulps=64):
    """The three modules (ours, torch's in dtype, torch's in float64) on the same inputs:
    outputs and the gradients of the inputs and every parameter."""
    results = []
    for mod, dt in ((ours, dtype), (ref, dtype), (truth, torch.float64)):
        inputs = inputs_fn(dt)
        out = mod(*inputs)
        flat = [o for o in torch.utils._pytree.tree_leaves(out) if isinstance(o, torch.Tensor)
                and o.is_floating_point()]
        g = torch.Generator().manual_seed(seed + 1)
        ups = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in flat]
        leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        params = list(mod.parameters())
        grads = torch.autograd.grad(flat, leaves + params, ups, allow_unused=True)
        results.append(([o.detach() for o in flat], list(grads)))
    (oo, og), (to, tg), (ro, rg) = results
    floor = 512 if dtype == torch.float64 else floor_ulps
    for i, (o, t, r) in enumerate(zip(oo, to, ro)):
        _compare(o, t, r, f"{what} output {i}", floor, 16.0)
    for i, (o, t, r) in enumerate(zip(og, tg, rg)):
        _compare(o, t, r, f"{what} grad {i}", floor, 256.0)


@fuzz(1.5)
@given(kind=st.sampled_from(["RNN", "LSTM", "GRU"]), layers=st.integers(1, 2), bidir=st.booleans(),
       batch_first=st.booleans(), proj=st.booleans(), T=st.integers(1, 5), B=st.integers(1, 3),
       I=st.integers(1, 5), H=st.integers(1, 6), bias=st.booleans(),
       form=st.sampled_from(["batched", "unbatched", "packed", "with_state"]),
       dtype=dtypes(), seed=seeds)
def test_fuzz_rnn_modules(kind, layers, bidir, batch_first, proj, T, B, I, H, bias, form, dtype, seed):
    from torch.nn.utils.rnn import pack_padded_sequence

    proj_size = max(H - 1, 1) if proj and kind == "LSTM" and H > 1 else 0
    # T >= 1: torch's modules refuse an empty sequence, ours return empty outputs
    kw = dict(num_layers=layers, bidirectional=bidir, batch_first=batch_first, bias=bias)
    if proj_size:
        kw["proj_size"] = proj_size
    ours_cls, torch_cls = getattr(fusedops.nn, kind), getattr(torch.nn, kind)
    ours, ref = _module_pair(ours_cls, torch_cls, dtype, seed, I, H, **kw)
    _, truth = _module_pair(ours_cls, torch_cls, torch.float64, seed, I, H, **kw)
    g = torch.Generator().manual_seed(seed)
    x64 = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    dirs = 2 if bidir else 1
    h64 = torch.randn(layers * dirs, B, proj_size or H, generator=g, dtype=torch.float64)
    c64 = torch.randn(layers * dirs, B, H, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g) if form == "packed" else None

    def inputs(dt):
        x = x64.to(dt).requires_grad_()
        if form == "unbatched":
            return (x[:, 0],)
        xb = x.transpose(0, 1) if batch_first else x
        if form == "packed":
            return (pack_padded_sequence(xb, lengths, batch_first=batch_first, enforce_sorted=False),)
        if form == "with_state":
            h = h64.to(dt).requires_grad_()
            state = (h, c64.to(dt).requires_grad_()) if kind == "LSTM" else h
            return (xb, state)
        return (xb,)

    wrapped = [_Unpack(m) for m in (ours, ref, truth)]
    _check_modules(*wrapped, inputs, f"{kind} {kw} {form} T={T} B={B}", seed, dtype)


class _Unpack(torch.nn.Module):
    """A module's output as plain tensors (PackedSequence -> its data)."""

    def __init__(self, mod):
        super().__init__()
        self.mod = mod

    def forward(self, *a):
        out, state = self.mod(*a)
        if isinstance(out, torch.nn.utils.rnn.PackedSequence):
            out = out.data
        return out, state


@fuzz(1.5)
@given(E=st.sampled_from([2, 4, 6, 8]), heads=st.sampled_from([1, 2]), L=st.integers(1, 5), S=st.integers(1, 5),
       N=st.integers(1, 3), kdim=st.booleans(), bias=st.booleans(), bias_kv=st.booleans(),
       zero_attn=st.booleans(), batch_first=st.booleans(), batched=st.booleans(),
       self_attn=st.booleans(), need_weights=st.booleans(), average=st.booleans(),
       mask=st.sampled_from([None, "bool", "float", "causal", "padding"]), dtype=dtypes(), seed=seeds)
def test_fuzz_multihead_attention(E, heads, L, S, N, kdim, bias, bias_kv, zero_attn, batch_first, batched,
                                  self_attn, need_weights, average, mask, dtype, seed):
    assume(E % heads == 0)
    if self_attn:
        S, kdim = L, False
    kw = dict(bias=bias, add_bias_kv=bias_kv, add_zero_attn=zero_attn, batch_first=batch_first)
    if kdim:
        kw.update(kdim=E + 1, vdim=E + 2)
    ours, ref = _module_pair(fusedops.nn.MultiheadAttention, torch.nn.MultiheadAttention, dtype, seed,
                             E, heads, **kw)
    _, truth = _module_pair(fusedops.nn.MultiheadAttention, torch.nn.MultiheadAttention, torch.float64,
                            seed, E, heads, **kw)
    g = torch.Generator().manual_seed(seed)
    q64 = torch.randn(N, L, E, generator=g, dtype=torch.float64)
    k64 = torch.randn(N, S, E + 1 if kdim else E, generator=g, dtype=torch.float64)
    v64 = torch.randn(N, S, E + 2 if kdim else E, generator=g, dtype=torch.float64)
    Sx = S + (1 if bias_kv else 0) + (1 if zero_attn else 0)
    attn_mask = kpm = None
    causal = mask == "causal"
    if mask == "bool":
        attn_mask = torch.rand(L, S, generator=g) > 0.5
        attn_mask[:, 0] = False  # True masks out in nn.MultiheadAttention: keep key 0 for every query
    elif mask == "float":
        attn_mask = torch.randn(L, S, generator=g, dtype=torch.float64)
    elif mask == "causal":
        attn_mask = torch.triu(torch.ones(L, S, dtype=torch.bool), 1)
    elif mask == "padding":
        kpm = torch.rand(N if batched else 1, S, generator=g) > 0.5
        kpm[:, 0] = False
    del Sx

    def inputs(dt):
        def arrange(t):
            t = t.to(dt)
            if not batched:
                return t[0].requires_grad_()
            t = t.requires_grad_()
            return t if batch_first else t.transpose(0, 1)
        q = arrange(q64)
        k, v = (q, q) if self_attn else (arrange(k64), arrange(v64))
        am = attn_mask.to(dt) if attn_mask is not None and attn_mask.is_floating_point() else attn_mask
        pm = kpm if kpm is None or batched else kpm[0]
        return q, k, v, pm, am

    class Call(torch.nn.Module):
        def __init__(self, mod):
            super().__init__()
            self.mod = mod

        def forward(self, q, k, v, pm, am):
            out, w = self.mod(q, k, v, key_padding_mask=pm, need_weights=need_weights, attn_mask=am,
                              average_attn_weights=average, is_causal=causal)
            return (out, w) if w is not None else (out,)

    _check_modules(Call(ours), Call(ref), Call(truth), inputs,
                   f"MultiheadAttention E={E} h={heads} {kw} L={L} S={S} N={N} batched={batched} "
                   f"mask={mask} weights={need_weights}", seed, dtype)


# ---- regressions: bugs the fuzzing found, replayed ------------------------------------------------


def test_attention_nan_key_gives_nan():
    """Found by the bad-input matrix: a key of NaN made its query rows look fully masked, so
    the output was 0 (torch gives NaN); a NaN score now makes the row's output NaN."""
    q = torch.randn(1, 2, 3, 4, requires_grad=True)
    k = torch.randn(1, 2, 5, 4)
    k[0, 1] = float("nan")  # every key of head 1
    v = torch.randn(1, 2, 5, 4)
    out = fops.scaled_dot_product_attention(q, k, v)
    # the math (torch's own fused CPU kernel gives 0 here for 4-D inputs, NaN for 3-D ones)
    ref = torch.softmax(q.detach() @ k.transpose(-2, -1) / 2.0, -1) @ v
    assert torch.isnan(out[0, 1]).all() and torch.isnan(ref[0, 1]).all()
    torch.testing.assert_close(out[0, 0], ref[0, 0])
    out.sum().backward()  # (the gradient of such a row is not NaN yet: 0, as for a masked row)
    assert torch.isfinite(q.grad[0, 0]).all()
    # one NaN element of a query: that row only
    q2 = torch.randn(1, 1, 3, 4)
    q2[0, 0, 1, 2] = float("nan")
    out = fops.scaled_dot_product_attention(q2, k[:, :1], v[:, :1])
    assert torch.isnan(out[0, 0, 1]).all() and torch.isfinite(out[0, 0, [0, 2]]).all()


@pytest.mark.xfail(START_ISA != "generic", strict=True, reason="known limit, found by the long fuzz run: the vector erf "
                   "is accurate to 4e-7 absolute (vec/math.h), so GELU's relative error for "
                   "x < -4 reaches several percent of a result below 1e-5 (torch's stays "
                   "under 1%); within the documented absolute accuracy")
def test_gelu_negative_tail_relative_accuracy():
    x = torch.tensor([-4.774575710296631] * 16)  # the fuzzed example, at every SIMD lane
    ours, truth = fops.gelu(x).double(), F.gelu(x.double())
    assert ((ours - truth).abs() <= 0.01 * truth.abs()).all()
