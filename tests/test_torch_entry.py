"""fastlmrl._cython.torch_entry: the Cython entry points of fastlmrl.torch's eager fast paths --
ppo_loss first, then reinforce_loss, kl_penalty_loss, a2c_loss, token_log_probs, entropy and
logsumexp (sample_tokens' in test_torch_sampling.py) -- tensors read through torch's DLPack C
exchange API or their attributes, the kernel cores called on memoryviews over their data pointers.
The other ops are compared with the general path (a dispatcher bound by ``use_backend``, the
NumPy-view paths turned off).

Every call is compared bit for bit with the registered custom op (``torch.ops.fastlmrl.ppo_loss``,
which converts its arguments and calls the NumPy API's kernel wrapper): results, gradients and
errors.  Inputs the entry point must not read in place (negated views, other dtypes, layouts,
devices) must give the general path's result or error.
"""

import math

import numpy as np
import pytest

try:
    import torch
except ImportError as exc:  # a missing torch fails the run, it is never skipped
    raise ImportError(
        "the fastlmrl.torch tests need PyTorch: pip install torch==2.13.0 (CPU "
        "build), or pip install 'fastlmrl[torch]'"
    ) from exc

import fastlmrl
import fastlmrl.torch as ft
from fastlmrl.torch import _tensors as tt
from fastlmrl.torch import policy_losses as pl

F32, F64 = torch.float32, torch.float64

pytestmark = pytest.mark.skipif(
    pl._entry is None, reason="the Cython backend is not built (fastlmrl._cython.torch_entry)"
)


def data(n=5, v=7, dtype=F32, seed=0, index=torch.int64):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, v, generator=g, dtype=F64) * 2).to(dtype)
    t = torch.randint(0, v, (n,), generator=g).to(index)
    old = (torch.randn(n, generator=g, dtype=F64) * 0.5 - np.log(v)).to(dtype)
    adv = torch.randn(n, generator=g, dtype=F64).to(dtype)
    w = (torch.rand(n, generator=g, dtype=F64) / max(n, 1)).to(dtype)
    ref = (torch.randn(n, generator=g, dtype=F64) * 0.5 - np.log(v)).to(dtype)
    return x, t, old, adv, w, ref


OPTIONS = dict(clip_low=0.2, clip_high=0.28, dual_clip=3.0, kl_coef=0.1, kl_estimator="k2")


def options_for(ref):
    return OPTIONS if ref is not None else dict(OPTIONS, kl_coef=0.0)


def entry(x, t, old, adv, w, ref, grad=False, **options):
    """The entry point itself (whatever the active backend), with checked options."""
    o = {**OPTIONS, **options}
    if ref is None:
        o["kl_coef"] = 0.0  # (a KL penalty needs ref_log_probs)
    kernel_options = pl._fast_options(
        o["clip_low"],
        o["clip_high"],
        o["dual_clip"],
        "token",
        o["kl_coef"],
        o["kl_estimator"],
        ref is not None,
    )
    return pl._entry.ppo_loss_checked(
        x.requires_grad_(grad) if grad else x, t, old, adv, w, ref, kernel_options
    )


def custom_op(x, t, old, adv, w, ref, **options):
    """The registered op on contiguous resolved copies (the reference of every field)."""
    o = {**OPTIONS, **options}
    if ref is None:
        o["kl_coef"] = 0.0  # (a KL penalty needs ref_log_probs)

    def plain(a):
        return None if a is None else a.detach().resolve_neg().contiguous()

    return torch.ops.fastlmrl.ppo_loss(
        x if x.requires_grad else plain(x),  # (a leaf that requires a gradient: as it is)
        plain(t).long(),
        plain(old),
        plain(adv),
        plain(w),
        o["clip_low"],
        o["clip_high"],
        o["dual_clip"],
        "token",
        None,
        plain(ref),
        o["kl_coef"],
        o["kl_estimator"],
    )


def same_bits(a, b) -> bool:
    return a.detach().numpy().tobytes() == b.detach().numpy().tobytes()


def assert_same(result, out):
    want = [out[0], *out[2:5], *out[5].unbind()]
    assert type(result) is pl.PPOLossResult
    for name, a, b in zip(result._fields, result, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a.detach(), b.detach()), name


@pytest.fixture(params=["dlpack", "attributes"])
def reader(request):
    """Each way the entry point reads tensors: torch's DLPack C exchange API (when this torch
    has one) and the tensors' Python attributes."""
    api = getattr(torch.Tensor, "__dlpack_c_exchange_api__", None)
    if request.param == "dlpack":
        if not pl._entry.use_dlpack(api):
            pytest.skip("this torch has no DLPack C exchange API")
    else:
        pl._entry.use_dlpack(None)
    yield request.param
    pl._entry.use_dlpack(api)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("index", [torch.int64, torch.int32])
@pytest.mark.parametrize("weights", [True, False])
@pytest.mark.parametrize("with_ref", [True, False])
@pytest.mark.parametrize("n", [0, 1, 5])
def test_entry_equals_the_custom_op(reader, dtype, index, weights, with_ref, n):
    x, t, old, adv, w, ref = data(n=n, dtype=dtype, index=index, seed=n)
    w = w if weights else None
    ref = ref if with_ref else None
    before = x.clone()
    result = entry(x, t, old, adv, w, ref)
    assert_same(result, custom_op(x, t, old, adv, w, ref))
    assert torch.equal(x, before) and not result.loss.requires_grad


@pytest.mark.parametrize("dtype", [F32, F64])
def test_entry_gradient_equals_the_custom_op(reader, dtype):
    x, t, old, adv, w, ref = data(n=6, v=9, dtype=dtype, seed=3)
    result = entry(x, t, old, adv, w, ref, grad=True)
    assert type(result.loss.grad_fn).__name__ == "fastlmrl_ppo_loss_fastBackward"
    x2 = x.detach().clone().requires_grad_(True)
    out = custom_op(x2, t, old, adv, w, ref)
    assert_same(result, out)
    up = torch.tensor(0.75, dtype=dtype)
    (g,) = torch.autograd.grad(result.loss, x, up, retain_graph=True)
    (g2,) = torch.autograd.grad(out[0], x2, up, retain_graph=True)
    assert torch.equal(g, g2)
    # upstream 1 with the graph freed: the forward pass's gradient becomes .grad, no copy
    node = result.loss.grad_fn
    address = node.grad.ctypes.data
    result.loss.backward()
    assert x.grad.data_ptr() == address and node.grad is None
    assert torch.equal(x.grad, torch.autograd.grad(out[0], x2)[0])
    with pytest.raises(RuntimeError, match="second time"):
        result.loss.backward()


def test_entry_reads_views_in_place(reader):
    """Views with an offset, and dimensions of size 1 with any stride, are read in place."""
    x, t, old, adv, w, ref = data(n=9, v=7, seed=4)
    args = (x[2:6], t[1:5], old[3:7], adv[:4], w[5:9], ref[2:6])
    assert_same(entry(*args), custom_op(*args))
    row = torch.randn(7, 3).t()[1:2]  # (1, 7) with strides (1, 3): V strided -> general path
    assert entry(row, t[:1], old[:1], adv[:1], w[:1], None) is None
    one = torch.randn(7).as_strided((1, 7), (100, 1))  # a size-1 dimension: any stride
    single = (one, t[:1], old.as_strided((1,), (5,)), adv[:1], w[:1], None)
    assert_same(entry(*single), custom_op(*single))


def test_entry_leaves_other_tensors_to_the_general_path(reader):
    """None (the general path takes over) for whatever it cannot read in place."""
    x, t, old, adv, w, ref = data(n=4, v=6, seed=5)
    neg = torch._neg_view(old)  # a lazily negated view: memory holds -old
    assert neg.is_neg()
    cases = {
        "negated view": (x, t, neg, adv, w, ref),
        "negated 1-row view": (x[:1], t[:1], torch._neg_view(old[:1]), adv[:1], w[:1], None),
        "int16 tokens": (x, t.to(torch.int16), old, adv, w, ref),
        "float64 advantages": (x, t, old, adv.double(), w, ref),
        "bfloat16 logits": (x.bfloat16(), t, old, adv, w, ref),
        "transposed logits": (x.t().contiguous().t(), t, old, adv, w, ref),
        "strided weights": (x, t, old, adv, torch.randn(8)[::2], ref),
        "3-D logits, strided tokens": (x.reshape(2, 2, 6), t.reshape(2, 2).t(), old, adv, w, ref),
        "3-D logits, tokens of another shape": (
            x.reshape(2, 2, 6),
            t.reshape(1, 4),
            old,
            adv,
            w,
            ref,
        ),
        "9-D logits": (x.reshape(1, 1, 1, 1, 1, 1, 2, 2, 6), t, old, adv, w, ref),
        "2-D tokens": (x, t.reshape(4, 1), old, adv, w, ref),
        "short advantages": (x, t, old, adv[:3], w, ref),
        "parameter logits": (torch.nn.Parameter(x.clone()), t, old, adv, w, ref),
        "sparse tokens": (x, t.to_sparse(), old, adv, w, ref),
        "meta advantages": (x, t, old, adv.to("meta"), w, ref),
        "no columns": (torch.empty(4, 0), t, old, adv, w, ref),
        "a list": (x, t.tolist(), old, adv, w, ref),
    }
    for name, args in cases.items():
        assert entry(*args) is None, name
    # the public function gives the general path's result for a negated view (its values)
    assert_same(
        ft.ppo_loss(x, t, neg, adv, w, ref_log_probs=ref, **OPTIONS),
        custom_op(x, t, neg, adv, w, ref),
    )


def test_entry_under_torch_compile_and_dispatch_modes_takes_the_general_path():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Passthrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    x, t, old, adv, w, ref = data(n=3, v=4, seed=6)
    with Passthrough():
        assert entry(x, t, old, adv, w, ref) is None


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a[1].__setitem__(2, 99), "tokens"),
        (lambda a: a[1].__setitem__(0, -1), "tokens"),
        (lambda a: a[2].__setitem__(1, float("nan")), "old_log_probs"),
        (lambda a: a[3].__setitem__(0, float("inf")), "advantages"),
        (lambda a: a[4].__setitem__(3, -1.0), "weights"),
        (lambda a: a[5].__setitem__(0, float("nan")), "ref_log_probs"),
    ],
)
def test_entry_status_gives_the_numpy_api_error_and_writes_nothing(reader, change, message):
    x, t, old, adv, w, ref = data(n=4, v=6, seed=7)
    args = [x, t, old, adv, w, ref]
    change(args)
    snapshot = [a.clone() for a in args]
    status = entry(*args)
    assert type(status) is int and status > 0
    assert all(same_bits(a, b) for a, b in zip(args, snapshot))
    with pytest.raises(ValueError, match=message):
        ft.ppo_loss(x, t, old, adv, w, ref_log_probs=ref, **options_for(ref))
    with pytest.raises(ValueError, match=message):
        ft.ppo_loss(x.requires_grad_(True), t, old, adv, w, ref_log_probs=ref, **OPTIONS)
    assert x.grad is None
    assert all(same_bits(a, b) for a, b in zip(args, snapshot))


def test_large_gradient_comes_from_the_buffer_cache_and_is_handed_over():
    """An (N, V) gradient of >= 16 MiB is a buffer-cache array; the backward pass with upstream
    1 hands it to .grad, and the next step reuses it once .grad is dropped."""
    n, v = 1 << 16, 64
    x, t, old, adv, w, _ = data(n=n, v=v, seed=8)
    x.requires_grad_(True)
    res = entry(x, t, old, adv, w, None, grad=True)
    address = res.loss.grad_fn.grad.ctypes.data
    res.loss.backward()
    assert x.grad.data_ptr() == address
    want = torch.autograd.grad(custom_op(x, t, old, adv, w, None)[0], x)[0]
    assert torch.equal(x.grad, want)
    x.grad = None
    del res
    again = entry(x, t, old, adv, w, None, grad=True)
    assert again.loss.grad_fn.grad.ctypes.data == address  # the cached buffer, reused


def test_public_ppo_loss_takes_the_entry_under_the_cython_backend():
    if tt.kernels() is not pl._cython_kernels:
        pytest.skip("the Cython backend is not the active one")
    x, t, old, adv, w, ref = data(n=3, v=5, seed=9)
    calls = []
    real = pl._entry_ppo_loss

    def spy(*args):
        calls.append(1)
        return real(*args)

    pl._entry_ppo_loss = spy
    try:
        got = ft.ppo_loss(x, t, old, adv, w, ref_log_probs=ref, **options_for(ref))
        with fastlmrl.use_backend("cython"):  # a dispatcher is bound: the NumPy-view path
            ft.ppo_loss(x, t, old, adv, w, ref_log_probs=ref, **options_for(ref))
    finally:
        pl._entry_ppo_loss = real
    assert calls == [1]
    assert_same(got, custom_op(x, t, old, adv, w, ref))


@pytest.mark.parametrize("dtype", [F32, F64])
def test_scaled_loss_scales_the_gradient_in_place(dtype):
    """(loss * c).backward() with the graph freed: the forward pass's gradient, multiplied in
    place (no fresh (N, V) tensor), equal to the custom op's out-of-place product; with
    retain_graph (the gradient is read again) or create_graph it is not modified."""
    x, t, old, adv, w, ref = data(n=6, v=9, dtype=dtype, seed=10)
    x2 = x.clone().requires_grad_(True)
    want = torch.autograd.grad(custom_op(x2, t, old, adv, w, ref)[0] * 0.375, x2)[0]
    x.requires_grad_(True)
    res = ft.ppo_loss(x, t, old, adv, w, ref_log_probs=ref, **OPTIONS)
    address = res.loss.grad_fn.grad.ctypes.data
    (res.loss * 0.375).backward()
    assert x.grad.data_ptr() == address and torch.equal(x.grad, want)
    x.grad = None
    res = ft.ppo_loss(x, t, old, adv, w, ref_log_probs=ref, **OPTIONS)
    kept = res.loss.grad_fn.grad.copy()
    (g1,) = torch.autograd.grad(res.loss * 0.375, x, retain_graph=True)
    assert np.array_equal(res.loss.grad_fn.grad, kept) and torch.equal(g1, want)
    up = torch.tensor(0.375, dtype=dtype, requires_grad=True)
    (g2,) = torch.autograd.grad(res.loss, x, up, create_graph=True)
    assert torch.equal(g2, want) and g2.requires_grad
    assert np.array_equal(res.loss.grad_fn.grad, kept)


def test_missing_entry_point_warns_and_the_numpy_view_path_serves():
    """A build without (or with a stale) torch_entry: a BackendUnavailableWarning naming the
    rebuild, and ppo_loss gives the same results through the NumPy-view fast path."""
    import subprocess
    import sys

    code = (
        "import sys, warnings\n"
        "sys.modules['fastlmrl._cython.torch_entry'] = None\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        "    import torch, fastlmrl.torch as ft\n"
        "from fastlmrl.torch import policy_losses as pl\n"
        "assert pl._entry is None and pl._cython_kernels is None\n"
        "assert any('setup.py build_ext' in str(w.message) for w in seen), seen\n"
        "x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)\n"
        "t = torch.tensor([0, 4, 2])\n"
        "old = torch.full((3,), -1.5, dtype=torch.float64)\n"
        "adv = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)\n"
        "res = ft.ppo_loss(x, t, old, adv)\n"
        "assert type(res.loss.grad_fn).__name__ == 'fastlmrl_ppo_loss_fastBackward'\n"
        "res.loss.backward()\n"
        "want = torch.ops.fastlmrl.ppo_loss(x.detach(), t, old, adv, None, 0.2, None, None,"
        " 'token', None, None, 0.0, 'k3')\n"
        "assert torch.equal(res.loss, want[0]) and torch.equal(x.grad, want[1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_entry_gradient_flows_through_non_leaf_logits():
    """Logits computed by a model (a non-leaf): the gradient reaches the weights as through the
    custom op, and the no-grad / inference modes build no node."""
    g = torch.Generator().manual_seed(11)
    hidden = torch.randn(5, 4, generator=g, dtype=F64)
    weight = torch.randn(7, 4, generator=g, dtype=F64, requires_grad=True)
    _, t, old, adv, w, ref = data(n=5, v=7, dtype=F64, seed=11)
    logits = hidden @ weight.t()
    res = ft.ppo_loss(logits, t, old, adv, w, ref_log_probs=ref, **OPTIONS)
    assert type(res.loss.grad_fn).__name__ == "fastlmrl_ppo_loss_fastBackward"
    (got,) = torch.autograd.grad(res.loss, weight)
    out = custom_op(hidden @ weight.t(), t, old, adv, w, ref)
    assert torch.equal(res.loss, out[0])
    assert torch.equal(got, torch.autograd.grad(out[0], weight)[0])
    with torch.no_grad():
        assert ft.ppo_loss(hidden @ weight.t(), t, old, adv, w).loss.grad_fn is None
    with torch.inference_mode():
        assert not ft.ppo_loss(hidden @ weight.t(), t, old, adv, w).loss.requires_grad


# --- the other ops' entries (REINFORCE, KL, A2C, row ops, sampling) -----------------------------

from fastlmrl.torch import log_probs as tlp  # noqa: E402


def op_data(n=5, v=7, dtype=F32, seed=0, index=torch.int64):
    """Logits, ids and per-token reals (returns, values, ...) of one dtype."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, v, generator=g, dtype=F64) * 2).to(dtype)
    t = torch.randint(0, v, (n,), generator=g).to(index)
    per = [torch.randn(n, generator=g, dtype=F64).to(dtype) for _ in range(5)]
    w = (torch.rand(n, generator=g, dtype=F64) / max(n, 1)).to(dtype)
    return x, t, per, w


#: op -> (public function, entry attribute's module and name, call(x, t, per, w, **options)),
#: each call with the options it is parametrised over
OPS = {
    "reinforce_loss": (
        pl,
        "_entry_reinforce",
        lambda x, t, p, w, baseline=False: ft.reinforce_loss(
            x, t, p[0], w, baseline=p[1] if baseline else None
        ),
        [dict(), dict(baseline=True)],
    ),
    "kl_penalty_loss": (
        pl,
        "_entry_kl",
        lambda x, t, p, w, kl_estimator="k3": ft.kl_penalty_loss(
            x, t, p[0], w, kl_estimator=kl_estimator
        ),
        [dict(kl_estimator="k1"), dict(kl_estimator="k2"), dict(kl_estimator="k3")],
    ),
    "a2c_loss": (
        pl,
        "_entry_a2c",
        lambda x, t, p, w, clip=None, **kw: ft.a2c_loss(
            x,
            t,
            p[0],
            p[1],
            p[2],
            w,
            old_values=None if clip is None else p[3],
            value_clip=clip,
            **kw,
        ),
        [dict(), dict(clip=0.2), dict(value_coef=0.25, entropy_coef=0.0)],
    ),
    "token_log_probs": (
        tlp,
        "_entry_token_log_probs",
        lambda x, t, p, w: ft.token_log_probs(x, t),
        [dict()],
    ),
    "entropy": (tlp, "_entry_entropy", lambda x, t, p, w: ft.entropy(x), [dict()]),
    "logsumexp": (tlp, "_entry_logsumexp", lambda x, t, p, w: ft.logsumexp(x), [dict()]),
}
OP_CASES = [
    pytest.param(op, options, id=f"{op}-{i}")
    for op, spec in OPS.items()
    for i, options in enumerate(spec[3])
]
#: OPS and ppo_loss (old / reference log-probabilities from the per-token reals)
ALL_OPS = dict(
    OPS,
    ppo_loss=(
        pl,
        "_entry_ppo_loss",
        lambda x, t, p, w: ft.ppo_loss(
            x, t, p[0] - 2.0, p[1], w, ref_log_probs=p[2] - 2.0, **OPTIONS
        ),
        [dict()],
    ),
)
ALL_CASES = OP_CASES + [pytest.param("ppo_loss", {}, id="ppo_loss-0")]


@pytest.fixture(autouse=True)
def cython_backend():
    """The Cython backend active (the entry points are its), the previous one restored."""
    previous = fastlmrl.get_backend()
    fastlmrl.set_backend("cython")
    x, t, per, w = op_data(n=1, v=2)
    for op in OPS:  # (the first calls after a backend switch bind the backend's kernels)
        OPS[op][2](x, t, per, w)
    try:
        yield
    finally:
        fastlmrl.set_backend(previous)


@pytest.fixture
def spy(monkeypatch):
    """spy(op) -> the list of what the op's entry returned in the calls since (its classes)."""

    def install(op):
        module, name = ALL_OPS[op][0], ALL_OPS[op][1]
        real, seen = getattr(module, name), []

        def wrapped(*args):
            out = real(*args)
            seen.append(type(out).__name__)
            return out

        monkeypatch.setattr(module, name, wrapped)
        return seen

    return install


def same_bytes(a, b) -> bool:
    """Bit-for-bit equality of two tensors of the same dtype (bfloat16, negated views too)."""

    def raw(t):
        flat = t.detach().resolve_neg().reshape(-1).clone()
        return flat.view(torch.uint8) if flat.numel() else torch.empty(0, dtype=torch.uint8)

    return a.dtype == b.dtype and torch.equal(raw(a), raw(b))


def general(op, *args, **options):
    """The op through the general path: a dispatcher bound by use_backend (the same kernels;
    the NumPy-view paths, which it would take, turned off)."""
    paths = [
        (tlp, "_row_fast"),
        (pl, "_reinforce_fast"),
        (pl, "_kl_fast"),
        (pl, "_a2c_fast"),
        (pl, "_ppo_fast"),
    ]
    real = [getattr(module, name) for module, name in paths]
    for module, name in paths:
        setattr(module, name, lambda *args: None)
    try:
        with fastlmrl.use_backend("cython"):
            return ALL_OPS[op][2](*args, **options)
    finally:
        for (module, name), value in zip(paths, real):
            setattr(module, name, value)


def fields(result):
    return list(result) if isinstance(result, pl._LazyResult) else [result]


def assert_same_result(a, b):
    for i, (u, w) in enumerate(zip(fields(a), fields(b))):
        assert u.dtype == w.dtype and u.shape == w.shape, i
        assert same_bytes(u, w), i
    assert len(fields(a)) == len(fields(b))


def leaves_of(op, x, per, grad):
    """The tensors the op is differentiated w.r.t. (copies that require a gradient)."""
    if not grad:
        return x, per
    x = x.clone().requires_grad_(True)
    if op == "a2c_loss":
        per = [per[0], per[1].clone().requires_grad_(True), *per[2:]]
        return x, per
    return x, per


def gradients(op, result, x, per, upstream):
    out = fields(result)[0]
    inputs = (x, per[1]) if op == "a2c_loss" else (x,)
    up = torch.full_like(out, upstream)
    return torch.autograd.grad(out, inputs, up)


@pytest.mark.parametrize("op, options", OP_CASES)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("index", [torch.int64, torch.int32])
@pytest.mark.parametrize("weights", [True, False])
@pytest.mark.parametrize("n", [0, 1, 5])
def test_op_entry_equals_the_general_path(reader, spy, op, options, dtype, index, weights, n):
    x, t, per, w = op_data(n=n, dtype=dtype, index=index, seed=n)
    w = w if weights else None
    snapshot = [a.clone() for a in (x, t, *per)]
    seen = spy(op)
    got = OPS[op][2](x, t, per, w, **options)
    assert seen == [type(got).__name__] and seen[0] != "NoneType"
    assert_same_result(got, general(op, x, t, per, w, **options))
    assert not fields(got)[0].requires_grad
    assert all(same_bytes(a, b) for a, b in zip((x, t, *per), snapshot))


@pytest.mark.parametrize("op, options", OP_CASES)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("upstream", [1.0, 0.75])
def test_op_entry_gradients_equal_the_general_path(reader, op, options, dtype, upstream):
    """Gradients w.r.t. the logits (and the values for A2C) through the entry's node equal the
    general path's bit for bit, for an upstream gradient of 1 (handed over) and another one;
    a second backward through a freed graph raises autograd's error."""
    x0, t, per0, w = op_data(n=6, v=9, dtype=dtype, seed=3)
    x, per = leaves_of(op, x0, per0, True)
    got = OPS[op][2](x, t, per, w, **options)
    assert type(fields(got)[0].grad_fn).__name__ == f"fastlmrl_{op}_fastBackward"
    x2, per2 = leaves_of(op, x0, per0, True)
    want = general(op, x2, t, per2, w, **options)
    assert type(fields(want)[0].grad_fn).__name__ != f"fastlmrl_{op}_fastBackward"
    assert_same_result(got, want)
    for a, b in zip(gradients(op, got, x, per, upstream), gradients(op, want, x2, per2, upstream)):
        assert a.dtype == b.dtype and same_bytes(a, b)
    if op in ("reinforce_loss", "kl_penalty_loss", "a2c_loss"):  # (the graph was freed)
        with pytest.raises(RuntimeError, match="second time"):
            fields(got)[0].backward()


def test_a2c_entry_gradient_w_r_t_values_only_or_logits_only():
    x0, t, per0, w = op_data(n=4, v=5, dtype=F32, seed=4)
    for grad_x, grad_v in ((True, False), (False, True)):
        runs = []
        for path in ("entry", "general"):
            x = x0.clone().requires_grad_(grad_x)
            values = per0[1].clone().requires_grad_(grad_v)
            per = [per0[0], values, *per0[2:]]
            res = (
                OPS["a2c_loss"][2](x, t, per, w)
                if path == "entry"
                else general("a2c_loss", x, t, per, w)
            )
            (g,) = torch.autograd.grad(res.loss, x if grad_x else values)
            runs.append((res, g))
        assert type(runs[0][0].loss.grad_fn).__name__ == "fastlmrl_a2c_loss_fastBackward"
        assert_same_result(runs[0][0], runs[1][0])
        assert runs[0][1].dtype == runs[1][1].dtype and same_bytes(runs[0][1], runs[1][1])


def test_row_op_entry_gradient_sees_in_place_changes():
    """The row ops' nodes save their inputs as the custom ops do: a logits tensor changed in
    place after the forward pass makes backward raise autograd's error."""
    x, t, _, _ = op_data(n=3, v=4, seed=5)
    x.requires_grad_(True)
    y = x * 1.0
    out = ft.token_log_probs(y, t)
    assert type(out.grad_fn).__name__ == "fastlmrl_token_log_probs_fastBackward"
    with torch.no_grad():
        y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


@pytest.mark.parametrize("op", list(OPS))
def test_op_entry_leaves_other_tensors_to_the_general_path(reader, spy, op):
    """None (the general path takes over) for whatever the entry cannot read in place; the
    public function then gives the general path's result."""
    x, t, per, w = op_data(n=4, v=6, seed=6)
    neg = [torch._neg_view(p) for p in per]
    cases = {
        "negated logits": (torch._neg_view(x), t, per, w),
        "negated per-token": (x, t, neg, w),
        "negated weights": (x, t, per, torch._neg_view(-w)),
        "int16 tokens": (x, t.to(torch.int16), per, w),
        "float64 per-token": (x, t, [p.double() for p in per], w),
        "float64 weights": (x, t, per, w.double()),
        "bfloat16 logits": (x.bfloat16(), t, per, w),
        "transposed logits": (x.t().contiguous().t(), t, per, w),
        "expanded logits": (x[:1].expand(4, 6), t, per, w),
        "strided per-token": (x, t, [torch.randn(8)[::2] for _ in per], w),
        "strided tokens": (x, torch.randint(0, 6, (8,))[::2], per, w),
        "3-D logits, strided tokens": (x.reshape(2, 2, 6), t.reshape(2, 2).t(), per, w),
        "3-D logits, strided per-token": (
            x.reshape(2, 2, 6),
            t,
            [p.reshape(2, 2).t() for p in per],
            w,
        ),
        "9-D logits": (x.reshape(1, 1, 1, 1, 1, 1, 2, 2, 6), t, per, w),
        "parameter logits": (torch.nn.Parameter(x.clone()), t, per, w),
    }
    uses_tokens = op not in ("entropy", "logsumexp")
    uses_per = op in ("reinforce_loss", "kl_penalty_loss", "a2c_loss")
    for name, args in cases.items():
        if ("tokens" in name and not uses_tokens) or (
            ("per-token" in name or "weights" in name) and not uses_per
        ):
            continue
        seen = spy(op)
        got = OPS[op][2](*args)
        assert seen == ["NoneType"], (name, seen)
        assert_same_result(got, general(op, *args))


@pytest.mark.parametrize("op", list(OPS))
def test_op_entry_under_a_dispatch_mode_takes_the_general_path(spy, op):
    from torch.utils._python_dispatch import TorchDispatchMode

    class Passthrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    x, t, per, w = op_data(n=3, v=4, seed=7)
    seen = spy(op)
    with Passthrough():
        got = OPS[op][2](x, t, per, w)
    assert seen == ["NoneType"]
    assert_same_result(got, general(op, x, t, per, w))


def _bad(op):
    """(change, the argument the error names) cases that make op's kernel refuse its input."""
    cases = [
        (lambda x, t, p, w: t.__setitem__(2, 99), "tokens"),
        (lambda x, t, p, w: t.__setitem__(0, -1), "tokens"),
        (lambda x, t, p, w: x.__setitem__((1, 2), float("nan")), "logits"),
    ]
    if op in ("entropy", "logsumexp"):
        return cases[2:]
    if op == "token_log_probs":
        return cases
    cases.append((lambda x, t, p, w: w.__setitem__(3, -1.0), "weights"))
    if op == "a2c_loss":
        return cases + [
            (lambda x, t, p, w: p[0].__setitem__(1, float("nan")), "advantages"),
            (lambda x, t, p, w: p[1].__setitem__(0, float("inf")), "values"),
            (lambda x, t, p, w: p[2].__setitem__(2, float("nan")), "returns"),
        ]
    name = "returns" if op == "reinforce_loss" else "ref_log_probs"
    return cases + [(lambda x, t, p, w: p[0].__setitem__(1, float("nan")), name)]


@pytest.mark.parametrize(
    "op, i", [(op, i) for op in OPS for i in range(len(_bad(op)))], ids=lambda v: str(v)
)
def test_op_entry_status_gives_the_general_path_error_and_writes_nothing(reader, spy, op, i):
    change, name = _bad(op)[i]
    x, t, per, w = op_data(n=4, v=6, seed=8)
    change(x, t, per, w)
    snapshot = [a.clone() for a in (x, t, *per, w)]
    seen = spy(op)
    with pytest.raises(ValueError) as got:
        OPS[op][2](x, t, per, w)
    assert seen == ["int"]
    with pytest.raises(ValueError) as want:
        general(op, x, t, per, w)
    assert str(got.value) == str(want.value) and name in str(got.value)
    x.requires_grad_(True)
    with pytest.raises(ValueError, match=name):
        OPS[op][2](x, t, per, w)
    assert x.grad is None
    assert all(same_bytes(a, b) for a, b in zip((x, t, *per, w), snapshot))


@pytest.mark.parametrize("op", ["reinforce_loss", "kl_penalty_loss", "a2c_loss"])
def test_op_entry_per_token_inputs_that_require_a_gradient_are_constants(spy, op):
    """A per-token input that requires a gradient (advantages, returns, ...; values of A2C are
    the exception) is read as a constant, as the general path does: same loss and gradient."""
    x0, t, per0, w = op_data(n=4, v=5, dtype=F64, seed=9)
    runs = []
    for path in ("entry", "general"):
        x = x0.clone().requires_grad_(True)
        per = [p.clone() for p in per0]
        per[0].requires_grad_(True)
        seen = spy(op)
        res = OPS[op][2](x, t, per, w) if path == "entry" else general(op, x, t, per, w)
        assert seen == ([type(res).__name__] if path == "entry" else [])
        runs.append((res, torch.autograd.grad(res.loss, (x, per[0]), allow_unused=True)))
    assert_same_result(runs[0][0], runs[1][0])
    assert same_bytes(runs[0][1][0], runs[1][1][0])
    assert runs[0][1][1] is None and runs[1][1][1] is None


@pytest.mark.parametrize("op", list(OPS))
def test_op_entry_backend_switch_and_thread_counts(spy, op):
    """Under the Numba backend the general path serves (the entry is Cython's), with equal
    results; back under Cython the entry again, the same bits at one thread and at two (a
    batch large enough for the free-core thread count)."""
    x, t, per, w = op_data(n=2048, v=40, dtype=F32, seed=10)
    want = general(op, x, t, per, w)
    fastlmrl.set_backend("numba")
    try:
        seen = spy(op)
        assert_same_result(OPS[op][2](x, t, per, w), want)
        assert seen == []
    finally:
        fastlmrl.set_backend("cython")
    OPS[op][2](x, t, per, w)  # (the first call after a switch binds the backend's kernels)
    threads = fastlmrl.get_num_threads()
    try:
        for count in (1, 2):
            fastlmrl.set_num_threads(count)
            seen = spy(op)
            assert_same_result(OPS[op][2](x, t, per, w), want)
            assert seen and seen[0] != "NoneType"
    finally:
        fastlmrl.set_num_threads(threads)


@pytest.mark.parametrize("op", ["reinforce_loss", "kl_penalty_loss", "a2c_loss"])
def test_lazy_results_have_a_namedtuple_interface(op):
    """The entry's lazy record and the general path's have the same fields, by name, position,
    iteration, _asdict, _replace and repr; the other fields are built when first read."""
    x, t, per, w = op_data(n=3, v=4, dtype=F64, seed=11)
    got, want = OPS[op][2](x, t, per, w), general(op, x, t, per, w)
    assert type(got) is type(want) and got._values[1] is None and want._values[1] is not None
    assert len(got) == len(want) == len(got._fields)
    for i, name in enumerate(got._fields):
        assert same_bytes(getattr(got, name), getattr(want, name))
        assert getattr(got, name) is got[i]  # (built once)
    assert list(got._asdict()) == list(got._fields)
    first, *rest = got
    assert first is got.loss and len(rest) == len(got) - 1
    assert same_bytes(got[-1], want[-1]) and len(got[1:]) == len(got) - 1
    replaced = got._replace(loss=torch.tensor(0.0))
    assert type(replaced) is type(got) and float(replaced.loss) == 0.0
    assert repr(got).startswith(type(got).__name__ + "(loss=")
    with pytest.raises(ValueError, match="unexpected field"):
        got._replace(nope=1)


def test_a2c_and_kl_options_follow_every_call(spy):
    """Options remembered from the last call are reused only for the same objects: a changed
    option is checked again (and a bad one raises the general path's error)."""
    x, t, per, w = op_data(n=4, v=5, dtype=F64, seed=12)
    for coef in (0.5, 0.25, 0.5):
        seen = spy("a2c_loss")
        got = ft.a2c_loss(x, t, per[0], per[1], per[2], w, value_coef=coef)
        assert seen == ["A2CLossResult"]
        assert_same_result(got, general("a2c_loss", x, t, per, w, value_coef=coef))
    with pytest.raises(ValueError, match="value_coef"):
        ft.a2c_loss(x, t, per[0], per[1], per[2], w, value_coef=-1.0)
    with pytest.raises(TypeError, match="value_coef"):
        ft.a2c_loss(x, t, per[0], per[1], per[2], w, value_coef=True)
    with pytest.raises(ValueError, match="old_values"):
        ft.a2c_loss(x, t, per[0], per[1], per[2], w, value_clip=0.2)
    with pytest.raises(ValueError, match="kl_estimator"):
        ft.kl_penalty_loss(x, t, per[0], w, kl_estimator="k4")
    with pytest.raises(TypeError, match="kl_estimator"):
        ft.kl_penalty_loss(x, t, per[0], w, kl_estimator=3)
    with pytest.raises(ValueError, match="baseline"):
        ft.reinforce_loss(x, t, per[0], w, baseline="median")
    seen = spy("reinforce_loss")  # "mean": the general path's batch baseline (math.fsum)
    got = ft.reinforce_loss(x, t, per[0], w, baseline="mean")
    assert seen == ["NoneType"]
    with fastlmrl.use_backend("cython"):
        assert_same_result(got, ft.reinforce_loss(x, t, per[0], w, baseline="mean"))


def test_op_entries_under_torch_compile_give_the_eager_results():
    """A compiled function calling every op (the general path traced: the entries see
    is_compiling) gives the eager (entry) results and gradients."""
    x0, t, per, w = op_data(n=4, v=6, dtype=F32, seed=13)

    def step(x, values):
        per2 = [per[0], values, *per[2:]]
        return sum(
            OPS[op][2](x, t, per2, w)
            if op in ("token_log_probs", "entropy", "logsumexp")
            else OPS[op][2](x, t, per2, w).loss
            for op in OPS
        ).sum()

    x, v = x0.clone().requires_grad_(True), per[1].clone().requires_grad_(True)
    want = step(x, v)
    gw = torch.autograd.grad(want, (x, v))
    x2, v2 = x0.clone().requires_grad_(True), per[1].clone().requires_grad_(True)
    got = torch.compile(step, fullgraph=True)(x2, v2)
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got, (x2, v2)), gw):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("op", list(OPS))
def test_op_entry_leaves_bad_arguments_to_the_general_path_error(spy, op):
    """Arguments the general path refuses (float or gradient-requiring ids, short per-token
    tensors, short weights, ids of another batch shape, integer logits): the entry returns None
    and the public function raises the general path's error, writing nothing."""
    x, t, per, w = op_data(n=4, v=6, seed=14)
    cases = {
        "float ids requiring a gradient": (x, t.double().requires_grad_(True), per, w),
        "short ids": (x, t[:3], per, w),
        "2-D ids of another shape": (x, t.reshape(2, 2), per, w),
        "3-D logits, ids of another batch shape": (x.reshape(2, 2, 6), t.reshape(1, 4), per, w),
        "3-D logits, per-token of another batch shape": (
            x.reshape(2, 2, 6),
            t,
            [p.reshape(4, 1) for p in per],
            w,
        ),
        "3-D logits, weights of another batch shape": (x.reshape(2, 2, 6), t, per, w.reshape(1, 4)),
        "3-D logits, short flat ids": (x.reshape(2, 2, 6), t[:3], per, w),
        "short per-token": (x, t, [p[:3] for p in per], w),
        "short weights": (x, t, per, w[:3]),
        "integer logits": (x.long(), t, per, w),
    }
    uses_tokens = op not in ("entropy", "logsumexp")
    uses_per = op in ("reinforce_loss", "kl_penalty_loss", "a2c_loss")
    for name, args in cases.items():
        if ("ids" in name and not uses_tokens) or (
            ("per-token" in name or "weights" in name) and not uses_per
        ):
            continue
        snapshot = [a.detach().clone() for a in (args[0], args[1], *args[2])]
        seen = spy(op)
        with pytest.raises((TypeError, ValueError)) as got:
            OPS[op][2](*args)
        assert seen == ["NoneType"], name
        with pytest.raises(type(got.value)) as want:
            general(op, *args)
        assert str(got.value) == str(want.value), name
        after = [args[0], args[1], *args[2]]
        assert all(same_bytes(a, b) for a, b in zip(after, snapshot)), name


# --- logits with batch dimensions: (..., V) ------------------------------------------------------


def batched(x, t, per, w, shape, flat):
    """op_data's tensors (N = prod(shape[:-1]) rows) with logits of ``shape`` and the per-row
    arguments of its batch shape, or flat (N,)."""

    def rows(a):
        return a if flat or a is None else a.reshape(shape[:-1])

    return x.reshape(shape), rows(t), [rows(p) for p in per], rows(w)


BATCH_SHAPES = [(2, 3, 7), (2, 1, 2, 5), (2, 0, 7)]


@pytest.mark.parametrize("op, options", ALL_CASES)
@pytest.mark.parametrize("shape", BATCH_SHAPES, ids=str)
@pytest.mark.parametrize("flat", [False, True], ids=["batch_shaped", "flat"])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_op_entry_takes_logits_with_batch_dimensions(reader, spy, op, options, shape, flat, dtype):
    """3-D and 4-D logits (and a zero-size batch dimension), per-row arguments of the batch
    shape or flat: read in place by the entry, the general path's results bit for bit, per-row
    results in the batch shape."""
    n = math.prod(shape[:-1])
    x, t, per, w = batched(*op_data(n=n, v=shape[-1], dtype=dtype, seed=n), shape, flat)
    seen = spy(op)
    got = ALL_OPS[op][2](x, t, per, w, **options)
    assert seen == [type(got).__name__] and seen[0] not in ("NoneType", "int")
    assert_same_result(got, general(op, x, t, per, w, **options))
    assert fields(got)[1 if isinstance(got, pl._LazyResult) else 0].shape == shape[:-1]


@pytest.mark.parametrize("op, options", ALL_CASES)
@pytest.mark.parametrize("shape", BATCH_SHAPES, ids=str)
@pytest.mark.parametrize("flat", [False, True], ids=["batch_shaped", "flat"])
@pytest.mark.parametrize("upstream", [1.0, 0.75])
def test_op_entry_gradients_with_batch_dimensions(op, options, shape, flat, upstream):
    """Gradients through the entry's node with (..., V) logits: the logits' shape (the values'
    own shape for A2C), the general path's bits."""
    n = math.prod(shape[:-1])
    x0, t, per0, w = batched(*op_data(n=n, v=shape[-1], dtype=F64, seed=n + 1), shape, flat)
    x, per = leaves_of(op, x0, per0, True)
    got = ALL_OPS[op][2](x, t, per, w, **options)
    assert type(fields(got)[0].grad_fn).__name__ == f"fastlmrl_{op}_fastBackward"
    x2, per2 = leaves_of(op, x0, per0, True)
    want = general(op, x2, t, per2, w, **options)
    assert_same_result(got, want)
    got_grads = gradients(op, got, x, per, upstream)
    for a, b in zip(got_grads, gradients(op, want, x2, per2, upstream)):
        assert a.shape == b.shape and a.dtype == b.dtype and same_bytes(a, b)
    assert got_grads[0].shape == shape
    if op == "a2c_loss":
        assert got_grads[1].shape == per[1].shape


def test_ppo_entry_leaves_mismatched_batch_shapes_to_the_general_path_error(spy):
    x, t, per, w = op_data(n=6, v=5, seed=15)
    x3 = x.reshape(2, 3, 5)
    for args in (
        (x3, t.reshape(3, 2), per, w),
        (x3, t, [p.reshape(6, 1) for p in per], w),
        (x3, t, per, w.reshape(1, 2, 3)),
    ):
        seen = spy("ppo_loss")
        with pytest.raises(ValueError, match=r"must have shape \(2, 3\)") as got:
            ALL_OPS["ppo_loss"][2](*args)
        assert seen == ["NoneType"]
        with pytest.raises(ValueError) as want:
            general("ppo_loss", *args)
        assert str(got.value) == str(want.value)


# --- a scaled loss: the kept gradient scaled in place -------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [0, 1, 7, 2 * 32768 + 3, 1 << 20])
@pytest.mark.parametrize("threads", [1, 2])
def test_scale_in_place_is_numpys_product(dtype, size, threads):
    """The entry's parallel in-place scale gives NumPy's products bit for bit (the factor
    rounded to the array's dtype): every size (empty, one, odd, several chunks, large), thread
    count, magnitude (subnormal, overflowing, non-finite entries)."""
    with np.errstate(all="ignore"):  # (overflow and underflow are part of the cases)
        _assert_scale_is_numpys_product(dtype, size, threads)


def _assert_scale_is_numpys_product(dtype, size, threads):
    rng = np.random.default_rng(size)
    base = rng.standard_normal(size) * 10.0 ** rng.integers(-300, 300, size)
    base[::97] = np.nan
    base[5::101] = -np.inf
    base = base.astype(dtype)
    for value in (1 / 3, 0.1, -2.5, 1e-39, 3e38, 1.0, 0.0):
        got, want = base.copy(), base.copy()
        pl._entry.scale_in_place(got, value, threads)
        np.multiply(want, dtype(value), out=want)
        assert got.tobytes() == want.tobytes(), value
    grid = base[: size - size % 3].reshape(3, -1) if size >= 3 else base.reshape(1, -1)
    got, want = grid.copy(), grid.copy()
    pl._entry.scale_in_place(got, 0.3, threads)
    np.multiply(want, dtype(0.3), out=want)
    assert got.tobytes() == want.tobytes()


def test_scale_in_place_refuses_other_arrays():
    a = np.ones(8, dtype=np.float32)
    with pytest.raises(TypeError, match="float32 or float64"):
        pl._entry.scale_in_place(np.ones(8, dtype=np.int64), 0.5, 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        pl._entry.scale_in_place(a[::2], 0.5, 1)
    read_only = a.copy()
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        pl._entry.scale_in_place(read_only, 0.5, 1)
    with pytest.raises(ValueError, match="byte order"):
        pl._entry.scale_in_place(a.astype(">f4"), 0.5, 1)
    with pytest.raises(ValueError, match="threads"):
        pl._entry.scale_in_place(a, 0.5, 0)
    assert np.array_equal(a, np.ones(8, dtype=np.float32))


def test_scale_in_place_uses_no_more_threads_than_chunks():
    """A huge thread count is capped by the chunks of work (as the kernels cap theirs by the
    rows): no attempt to start a million threads."""
    got = np.arange(3 * 2**15 + 5, dtype=np.float32)
    want = got * np.float32(0.25)
    pl._entry.scale_in_place(got, 0.25, 10**6)
    assert got.tobytes() == want.tobytes()


SCALED_OPS = ["ppo_loss", "reinforce_loss", "kl_penalty_loss", "a2c_loss"]


@pytest.mark.parametrize("op", SCALED_OPS)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("threads", [1, 2])
def test_scaled_loss_gradients_are_unchanged(monkeypatch, op, dtype, threads):
    """``(loss / 3).backward()`` through the entry: the kept gradient scaled in place by the
    parallel loop -- over ``large_threads()`` threads for a gradient of at least
    SCALE_PARALLEL_ELEMENTS elements, one thread for a smaller one (A2C's values gradient) --
    equal bit for bit to the general path's out-of-place product."""
    real, calls = tt._parallel_scale[0], []

    def recorded(grad, value, count):
        calls.append((grad.size, count))
        real(grad, value, count)

    monkeypatch.setattr(tt, "_parallel_scale", (recorded, pl._cython_kernels))
    monkeypatch.setattr(tt, "large_threads", lambda: threads)
    n, v = 4096, 67  # (274432 elements >= SCALE_PARALLEL_ELEMENTS)
    assert n * v >= tt.SCALE_PARALLEL_ELEMENTS
    x0, t, per0, w = op_data(n=n, v=v, dtype=dtype, seed=16)
    grads = []
    for path in ("entry", "general"):
        x, per = leaves_of(op, x0, per0, True)
        res = ALL_OPS[op][2](x, t, per, w) if path == "entry" else general(op, x, t, per, w)
        (fields(res)[0] / 3).backward()
        grads.append([x.grad] + ([per[1].grad] if op == "a2c_loss" else []))
        if path == "entry":
            assert calls == [(n * v, threads)] + ([(n, 1)] if op == "a2c_loss" else [])
    assert len(calls) == len(grads[0])  # (the general path scales tensors out of place)
    for a, b in zip(*grads):
        assert a.dtype == b.dtype and same_bytes(a, b)


@pytest.mark.parametrize("op", SCALED_OPS)
def test_scaled_loss_under_another_backend_is_scaled_by_numpy(monkeypatch, op):
    """Under a backend without the Cython entry point (Numba's NumPy-view paths) the kept
    gradient is scaled by NumPy: the parallel loop is not called, the gradients are the
    general path's."""
    calls = []
    monkeypatch.setattr(tt, "_parallel_scale", (lambda *args: calls.append(1), pl._cython_kernels))
    x0, t, per0, w = op_data(n=64, v=9, dtype=F32, seed=17)
    x2, per2 = leaves_of(op, x0, per0, True)
    want = general(op, x2, t, per2, w)
    (fields(want)[0] / 3).backward()
    fastlmrl.set_backend("numba")
    try:
        ALL_OPS[op][2](x0, t, per0, w)  # (the first call after a switch binds the kernels)
        x, per = leaves_of(op, x0, per0, True)
        res = ALL_OPS[op][2](x, t, per, w)
        assert type(fields(res)[0].grad_fn).__name__ == f"fastlmrl_{op}_fastBackward"
        (fields(res)[0] / 3).backward()
    finally:
        fastlmrl.set_backend("cython")
    assert calls == []
    assert same_bytes(x.grad, x2.grad)
    if op == "a2c_loss":
        assert same_bytes(per[1].grad, per2[1].grad)
