"""Arrays a kernel writes must not share memory with another argument (status 8,
OVERLAPPING_ARRAYS): an aliased id array could be overwritten after its range check (found by
``tests/alias_probe.py``: Adam's ``order``/``rows`` viewing the scratch ``acc`` or the table
crashed the Cython kernel).  Each written array aliases each other array argument in turn, through
the raw kernels of every backend (status 8, nothing written) and the public API (ValueError naming
the array)."""
import numpy as np
import pytest

import fastlmrl
from fastlmrl import _backend
from fastlmrl._status import OVERLAPPING_ARRAYS

BACKENDS = ("python", "numba", "cython")


def _alias(args, w, r):
    """args with args[r] a view of the first bytes of args[w] (or the other way round when args[r]
    is the larger), holding args[r]'s values."""
    args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    big, small = (w, r) if args[w].nbytes >= args[r].nbytes else (r, w)
    flat = args[big].reshape(-1).view(np.uint8)
    view = flat[:args[small].nbytes].view(args[small].dtype).reshape(args[small].shape)
    view[...] = args[small]
    args[small] = view
    return args


def _optimizer_calls():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(6, 4))
    rows = np.array([3, 1, 3, 0], dtype=np.int64)
    grads = rng.normal(size=(4, 4))
    order = np.array([3, 1, 0, 2], dtype=np.int64)
    m, v = rng.normal(size=(6, 4)), rng.random((6, 4))
    acc = np.empty(4)
    adam = ("adam_step", [table, rows, grads, order, m, v, 3, 0.01, 0.9, 0.999, 1e-8, False, acc],
            (0, 4, 5, 12))
    sgd = ("sgd_step", [table, rows, grads, order, 0.1, False, acc], (0, 6))
    return [adam, sgd]


def _cases():
    for name, args, written in _optimizer_calls():
        arrays = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
        for w in written:
            for r in arrays:
                if r != w:
                    yield name, args, w, r


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,args,w,r", list(_cases()))
def test_optimizer_kernels_refuse_written_aliases(backend, name, args, w, r):
    kernel = getattr(_backend.backend_module(backend), name)
    assert kernel(*[a.copy() if isinstance(a, np.ndarray) else a for a in args]) == 0
    aliased = _alias(args, w, r)
    before = [a.copy() if isinstance(a, np.ndarray) else a for a in aliased]
    assert kernel(*aliased) == OVERLAPPING_ARRAYS
    for a, b in zip(aliased, before):
        if isinstance(a, np.ndarray) and a is not aliased[12 if name == "adam_step" else 6]:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_public_optimizers_name_the_shared_array(backend):
    with fastlmrl.use_backend(backend):
        table, m, v = np.zeros((4, 3)), np.zeros((4, 3)), np.ones((4, 3))
        rows = table.reshape(-1).view(np.int64)[:2]
        with pytest.raises(ValueError, match="rows shares memory with table"):
            fastlmrl.adam_step(table, rows, np.ones((2, 3)), m, v, 1, 0.1)
        with pytest.raises(ValueError, match="grads shares memory with v"):
            fastlmrl.adam_step(table, np.array([0, 1]), v[:2], m, v, 1, 0.1)
        with pytest.raises(ValueError, match="grads shares memory with table"):
            fastlmrl.sgd_step(table, np.array([0, 1]), table[2:], 0.1)
        assert not table.any() and not m.any() and (v == 1).all()
        fastlmrl.sgd_step(table, np.array([0, 1]), table[2:].copy(), 0.1)  # a copy is fine


def _episode_returns_cases():
    rewards = np.array([1.0, -2.0, 0.5, 3.0, 1.5])
    offsets = np.array([0, 2, 5], dtype=np.int64)
    final_values = np.array([0.25, -1.0])
    args = [rewards, offsets, 0.9, final_values, np.zeros(5)]
    return [(args, 4, r) for r in (0, 1, 3)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("args,w,r", _episode_returns_cases())
def test_episode_returns_refuses_written_aliases(backend, args, w, r):
    """returns_out over episode_offsets moved an offset the loop still had to read (wrong
    returns, or writes out of bounds in the compiled backends)."""
    kernel = _backend.backend_module(backend).episode_returns
    assert kernel(*[a.copy() if isinstance(a, np.ndarray) else a for a in args]) == 0
    aliased = _alias(args, w, r)
    before = [a.copy() if isinstance(a, np.ndarray) else a for a in aliased]
    assert kernel(*aliased) == OVERLAPPING_ARRAYS
    for a, b in zip(aliased, before):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_prob_grad_refuses_out_over_tokens_and_allows_out_over_logits(backend):
    """tokens viewing out crashed the Cython kernel (a gradient row overwrote a token id after its
    range check); out == logits is the in-place gradient the LM head relies on."""
    kernel = _backend.backend_module(backend).log_prob_grad
    logits = np.random.default_rng(1).normal(size=(3, 5))
    tokens = np.array([4, 0, 2], dtype=np.int64)
    expected = np.empty_like(logits)
    assert kernel(logits, tokens, expected, 1) == 0
    out = np.zeros((3, 5))
    view = out.reshape(-1).view(np.int64)[:3]
    view[...] = tokens
    before = out.copy()
    assert kernel(logits, view, out, 1) == OVERLAPPING_ARRAYS
    np.testing.assert_array_equal(out, before)
    inplace = logits.copy()
    assert kernel(inplace, tokens, inplace, 1) == 0
    np.testing.assert_array_equal(inplace, expected)
