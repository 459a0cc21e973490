"""fastlmrl._cython.torch_entry: the Cython entry point of fastlmrl.torch.ppo_loss's eager fast
path (tensors read through torch's DLPack C exchange API or their attributes, the kernel core
called on memoryviews over their data pointers).

Every call is compared bit for bit with the registered custom op (``torch.ops.fastlmrl.ppo_loss``,
which converts its arguments and calls the NumPy API's kernel wrapper): results, gradients and
errors.  Inputs the entry point must not read in place (negated views, other dtypes, layouts,
devices) must give the general path's result or error.
"""

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
        "3-D logits": (x.reshape(2, 2, 6), t.reshape(2, 2), old, adv, w, ref),
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
