"""fastlmrl.torch.sample_tokens: the custom op (opcheck, fake tensors), equality with the NumPy
API, batch shapes, bfloat16, non-contiguous input, RandomStream, bad input."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastlmrl  # noqa: E402
from fastlmrl import RandomStream  # noqa: E402
from fastlmrl.torch.sampling import sample_tokens  # noqa: E402

SETTINGS = [
    dict(),
    dict(temperature=0.7, top_k=20, top_p=0.9, min_p=0.02),
    dict(temperature=0.0),
    dict(top_p=0.5),
]


def _logits(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype)


@pytest.mark.parametrize("kwargs", SETTINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_the_numpy_api(backend, kwargs, dtype):
    x = _logits((6, 5, 300), dtype)
    got = sample_tokens(x, 11, **kwargs)
    expected = fastlmrl.sample_tokens(x.reshape(30, 300).numpy(), 11, **kwargs)
    assert got.tokens.shape == (6, 5) and got.tokens.dtype == torch.int64
    for g, e in zip(got, expected):
        assert g.dtype == torch.from_numpy(e).dtype
        assert g.reshape(-1).numpy().tobytes() == e.tobytes()


def test_bfloat16_is_sampled_in_float32():
    x = _logits((40, 100), torch.bfloat16)
    got = sample_tokens(x, 3, top_k=10, top_p=0.8)
    expected = fastlmrl.sample_tokens(x.float().numpy(), 3, top_k=10, top_p=0.8)
    assert got.log_probs.dtype == torch.float32 and got.model_log_probs.dtype == torch.float32
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g.numpy(), e)


def test_non_contiguous_and_expanded_inputs():
    base = _logits((8, 64))
    for x in (base.t().contiguous().t(), base[:, ::2], base[:1].expand(8, 64)):
        got = sample_tokens(x, 5, temperature=0.9)
        expected = fastlmrl.sample_tokens(np.ascontiguousarray(x.numpy()), 5, temperature=0.9)
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g.numpy(), e)


def test_logits_requiring_grad_are_accepted():
    x = _logits((4, 10)).requires_grad_()
    got = sample_tokens(x, 1)
    assert not got.log_probs.requires_grad


def test_random_stream_is_advanced_and_reproducible():
    x = _logits((2, 3, 50))
    s = RandomStream(7, stream=3, counter=2**63 + 5)  # counters above 2**63: int64 bits in the op
    a = sample_tokens(x, s)
    assert s.counter == 2**63 + 11
    b = fastlmrl.sample_tokens(
        x.reshape(6, 50).numpy(), RandomStream(7, stream=3, counter=2**63 + 5)
    )
    np.testing.assert_array_equal(a.tokens.reshape(-1).numpy(), b.tokens)
    c = sample_tokens(x, 2**64 - 1)  # an int seed above 2**63
    d = fastlmrl.sample_tokens(x.reshape(6, 50).numpy(), 2**64 - 1)
    np.testing.assert_array_equal(c.tokens.reshape(-1).numpy(), d.tokens)


def test_exhausted_stream_raises_naming_seed():
    s = RandomStream(1, counter=2**64 - 1)
    with pytest.raises(ValueError, match="seed"):
        sample_tokens(_logits((2, 5)), s)
    assert s.counter == 2**64 - 1


def test_opcheck():
    op = torch.ops.fastlmrl.sample_tokens.default
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = _logits((7, 33), dtype)
        for args in (
            (1, 0, 1.0, 0, 1.0, 0.0),
            (-3, -(2**62), 0.6, 5, 0.8, 0.1),
            (4, 9, 0.0, 0, 1.0, 0.0),
        ):
            torch.library.opcheck(op, (x, *args))


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(9, 17, dtype=torch.bfloat16)
        tokens, lp, mlp = torch.ops.fastlmrl.sample_tokens(x, 0, 0, 1.0, 0, 1.0, 0.0)
        assert tokens.shape == (9,) and tokens.dtype == torch.int64
        assert lp.dtype == torch.float32 and mlp.shape == (9,)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: sample_tokens(torch.zeros(2, 3, device="meta"), 0), ValueError, "device 'meta'"),
        (lambda: sample_tokens(np.zeros((2, 3)), 0), TypeError, "torch.Tensor"),
        (lambda: sample_tokens(torch.zeros(2, 3, dtype=torch.float16), 0), TypeError, "dtype"),
        (lambda: sample_tokens(torch.zeros(2, 0), 0), ValueError, "at least one column"),
        (lambda: sample_tokens(torch.zeros(()), 0), ValueError, "0-dimensional"),
        (lambda: sample_tokens(torch.zeros(2, 3), 0, temperature=-1.0), ValueError, "temperature"),
        (lambda: sample_tokens(torch.zeros(2, 3), 0, top_k=-2), ValueError, "top_k"),
        (lambda: sample_tokens(torch.zeros(2, 3), 0, top_p=0.0), ValueError, "top_p"),
        (lambda: sample_tokens(torch.zeros(2, 3), 0, min_p=2.0), ValueError, "min_p"),
        (lambda: sample_tokens(torch.zeros(2, 3), -1), ValueError, "seed"),
        (lambda: sample_tokens(torch.tensor([[0.0, float("nan")]]), 0), ValueError, "logits row 0"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_the_op_refuses_bad_arguments_before_writing():
    """Direct callers of torch.ops.fastlmrl.sample_tokens get the kernel's checks."""
    op = torch.ops.fastlmrl.sample_tokens
    x = _logits((3, 5))
    with pytest.raises(ValueError, match="temperature"):
        op(x, 1, 0, -1.0, 0, 1.0, 0.0)
    with pytest.raises(ValueError, match="top_k"):
        op(x, 1, 0, 1.0, -1, 1.0, 0.0)
    with pytest.raises(ValueError, match="top_p"):
        op(x, 1, 0, 1.0, 0, 0.0, 0.0)
    with pytest.raises(ValueError, match="min_p"):
        op(x, 1, 0, 1.0, 0, 1.0, 1.5)
    with pytest.raises(ValueError, match="logits row 1"):
        op(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), 1, 0, 1.0, 0, 1.0, 0.0)
    with pytest.raises(ValueError, match="logits must be an .N, V."):
        op(torch.zeros(2, 3, 4), 1, 0, 1.0, 0, 1.0, 0.0)
    with pytest.raises(ValueError, match="logits must be an .N, V."):
        op(torch.zeros(2, 3, dtype=torch.float16), 1, 0, 1.0, 0, 1.0, 0.0)


def test_import_fastlmrl_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, fastlmrl; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torch_compile_fullgraph():
    x = _logits((6, 40))
    op = torch.compile(
        lambda x: torch.ops.fastlmrl.sample_tokens(x, 1, 0, 0.7, 5, 0.9, 0.0), fullgraph=True
    )
    for a, b in zip(op(x), torch.ops.fastlmrl.sample_tokens(x, 1, 0, 0.7, 5, 0.9, 0.0)):
        assert torch.equal(a, b)
    wrapper = torch.compile(lambda x: sample_tokens(x, 1, temperature=0.7, top_k=5), fullgraph=True)
    for a, b in zip(wrapper(x), sample_tokens(x, 1, temperature=0.7, top_k=5)):
        assert torch.equal(a, b)


# --- the Cython entry point (fastlmrl._cython.torch_entry.sample_tokens) -------------------------

from fastlmrl.torch import policy_losses as _tpl  # noqa: E402
from fastlmrl.torch import sampling as _tsm  # noqa: E402

needs_entry = pytest.mark.skipif(
    _tpl._entry is None, reason="the Cython backend is not built (fastlmrl._cython.torch_entry)"
)


@pytest.fixture
def entry_calls(monkeypatch):
    """The class names of what the entry returned in the calls since (None: the general path
    took over)."""
    real, seen = _tsm._entry_sample_tokens, []

    def wrapped(*args):
        out = real(*args)
        seen.append(type(out).__name__)
        return out

    monkeypatch.setattr(_tsm, "_entry_sample_tokens", wrapped)
    previous = fastlmrl.get_backend()
    fastlmrl.set_backend("cython")
    try:
        sample_tokens(_logits((1, 3)), 0)  # (binds the backend's kernels)
        seen.clear()
        yield seen
    finally:
        fastlmrl.set_backend(previous)


def _general(*args, **kwargs):
    """The general path: a dispatcher bound by use_backend, the NumPy-view path turned off."""
    real = _tsm._sample_fast
    _tsm._sample_fast = lambda *args: None
    try:
        with fastlmrl.use_backend("cython"):
            return sample_tokens(*args, **kwargs)
    finally:
        _tsm._sample_fast = real


def _same(a, b):
    for g, e in zip(a, b):
        assert g.dtype == e.dtype and g.shape == e.shape
        assert g.numpy().tobytes() == e.numpy().tobytes()


@needs_entry
@pytest.mark.parametrize("kwargs", SETTINGS + [dict(top_k=2**70)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [0, 1, 7])
def test_entry_equals_the_general_path(entry_calls, kwargs, dtype, n):
    x = _logits((n, 50), dtype, seed=n)
    got = sample_tokens(x, 11, **kwargs)
    assert entry_calls == ["SampledTokens"] and type(got) is _tsm.SampledTokens
    _same(got, _general(x, 11, **kwargs))
    _same(sample_tokens(x, 12, **kwargs), _general(x, 12, **kwargs))  # (another int seed)


@needs_entry
@pytest.mark.parametrize("shape", [(2, 3, 50), (2, 1, 3, 7), (2, 0, 9), (0, 4, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_entry_takes_logits_with_batch_dimensions(entry_calls, shape, dtype):
    """(..., V) logits of rank > 2 are read in place as (N, V): the general path's draws, in the
    batch shape (a zero-size dimension too), a RandomStream advanced by N."""
    x = _logits(shape, dtype, seed=len(shape))
    a, b = RandomStream(4), RandomStream(4)
    got = sample_tokens(x, a, temperature=0.8, top_k=5)
    assert entry_calls == ["SampledTokens"]
    assert got.tokens.shape == shape[:-1]
    _same(got, _general(x, b, temperature=0.8, top_k=5))
    assert a.counter == b.counter == x[..., 0].numel()


@needs_entry
def test_entry_advances_a_random_stream_only_after_success(entry_calls):
    x = _logits((5, 20))
    a, b = RandomStream(7), RandomStream(7)
    _same(sample_tokens(x, a, top_p=0.9), _general(x, b, top_p=0.9))
    assert a.counter == b.counter == 5
    _same(sample_tokens(x, a), _general(x, b))
    assert a.counter == 10 and entry_calls == ["SampledTokens", "SampledTokens"]
    bad = x.clone()
    bad[3, 4] = float("nan")
    with pytest.raises(ValueError, match="row 3") as got:
        sample_tokens(bad, a)
    assert entry_calls[-1] == "int" and a.counter == 10  # (the kernel's status: nothing taken)
    with pytest.raises(ValueError) as want:
        _general(bad, b)
    assert str(got.value) == str(want.value)


@needs_entry
def test_entry_leaves_other_arguments_to_the_general_path(entry_calls):
    from torch.utils._python_dispatch import TorchDispatchMode

    class Passthrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    x = _logits((4, 30))
    cases = {
        "negated view": (torch._neg_view(x),),
        "transposed": (x.t().contiguous().t(),),
        "bfloat16": (x.bfloat16(),),
        "3-D, strided": (x.reshape(2, 2, 30).transpose(0, 1),),
        "9-D": (x.reshape(1, 1, 1, 1, 1, 1, 2, 2, 30),),  # (more dimensions than MAX_DIMS)
        "parameter": (torch.nn.Parameter(x.clone()),),
    }
    for name, (logits,) in cases.items():
        entry_calls.clear()
        got = sample_tokens(logits, 3, temperature=0.8)
        assert entry_calls == ["NoneType"], name
        _same(got, _general(logits, 3, temperature=0.8))
    entry_calls.clear()
    with Passthrough():
        got = sample_tokens(x, 3)
    assert entry_calls == ["NoneType"]
    _same(got, _general(x, 3))


@needs_entry
@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(seed=-1), ValueError),
        (dict(seed=2**64), ValueError),
        (dict(seed=1.5), TypeError),
        (dict(temperature=-1.0), ValueError),
        (dict(top_k=-1), ValueError),
        (dict(top_k=1.0), TypeError),
        (dict(top_p=0.0), ValueError),
        (dict(min_p=2.0), ValueError),
    ],
)
def test_entry_bad_arguments_raise_the_general_path_error(entry_calls, kwargs, error):
    x = _logits((3, 10))
    call = {"seed": 1, **kwargs}
    with pytest.raises(error) as got:
        sample_tokens(x, **call)
    assert entry_calls == ["NoneType"]
    with pytest.raises(error) as want:
        _general(x, **call)
    assert str(got.value) == str(want.value)


@needs_entry
def test_entry_gives_the_same_tokens_at_every_thread_count(entry_calls):
    x = _logits((2048, 40))
    want = _general(x, 5, temperature=0.7, top_p=0.9)
    threads = fastlmrl.get_num_threads()
    try:
        for count in (1, 2):
            fastlmrl.set_num_threads(count)
            _same(sample_tokens(x, 5, temperature=0.7, top_p=0.9), want)
    finally:
        fastlmrl.set_num_threads(threads)
    assert entry_calls == ["SampledTokens", "SampledTokens"]


@pytest.mark.parametrize("backend_name", ["numba", "python"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numpy_view_path_equals_the_general_path(monkeypatch, backend_name, dtype):
    """Under a backend without the Cython entry point, plain contiguous (N, V) logits take the
    kernel on NumPy views: the same draws as the general path, a RandomStream advanced only
    after success; other tensors and errors the general path."""
    real, seen = _tsm._sample_fast, []

    def spy(*args):
        out = real(*args)
        seen.append(out is not None)
        return out

    def general(*args, **kwargs):
        monkeypatch.setattr(_tsm, "_sample_fast", lambda *args: None)
        try:
            return sample_tokens(*args, **kwargs)
        finally:
            monkeypatch.setattr(_tsm, "_sample_fast", spy)

    monkeypatch.setattr(_tsm, "_sample_fast", spy)
    x = _logits((6, 40), dtype, seed=4)
    with fastlmrl.use_backend(backend_name):
        for kwargs in SETTINGS:
            a, b = RandomStream(9), RandomStream(9)
            _same(sample_tokens(x, a, **kwargs), general(x, b, **kwargs))
            assert a.counter == b.counter == 6
        _same(sample_tokens(x, 3, top_k=2**70), general(x, 3, top_k=2**70))
        assert seen == [True] * (len(SETTINGS) + 1)
        seen.clear()
        x3 = x.reshape(2, 3, 40)  # (..., V): read as (N, V), draws in the batch shape
        _same(sample_tokens(x3, 1), general(x3, 1))
        assert seen == [True]
        seen.clear()
        strided = x3.transpose(0, 1).contiguous().transpose(0, 1)
        for other in (x.t().contiguous().t(), x.bfloat16(), strided):
            _same(sample_tokens(other, 1), general(other, 1))
        assert True not in seen
        bad = x.clone()
        bad[2, 3] = float("nan")
        stream = RandomStream(9)
        with pytest.raises(ValueError, match="row 2"):
            sample_tokens(bad, stream)
        assert stream.counter == 0
        with pytest.raises(ValueError, match="seed"):
            sample_tokens(x, -1)
