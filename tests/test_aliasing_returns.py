"""Issue 11, aliasing: the returns / advantages, group-advantage, KL and keyword-score kernels
refuse an array they write (an output or a workspace) that shares memory with another array
argument: status 8 (OVERLAPPING_ARRAYS), nothing written, in every backend.

Found by ``tests/alias_probe.py``: with returns_out over ``mask``/``terminated``/
``bootstrap_values`` (discounted_returns, lambda_returns, gae), the GRPO/RLOO group workspaces over
``rewards`` or over each other, an output over a KL input or keyword_scores' ``out`` over the
grams, the compiled kernels wrote before they had read what they overwrote and returned other
results than on separate arrays.  None of these kernels has an in-place mode (the public functions
allocate their outputs), so every overlap is refused, an output that *is* an input too.  Inputs may
share memory with each other (only read).  Every backend, through the ``backend`` fixture of
tests/conftest.py."""

import numpy as np
import pytest

from fastlmrl import _backend
from fastlmrl._contract import raise_for_status
from fastlmrl._status import OVERLAPPING_ARRAYS


def _alias(args, w, r):
    """args with args[r] a view of the first bytes of args[w] (or the other way round when args[r]
    is the larger), holding args[r]'s values (and the larger array its own values after them)."""
    args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    big, small = (w, r) if args[w].nbytes >= args[r].nbytes else (r, w)
    flat = args[big].reshape(-1).view(np.uint8)
    view = flat[: args[small].nbytes].view(args[small].dtype).reshape(args[small].shape)
    view[...] = args[small]
    args[small] = view
    return args


def _sequences(dtype):
    rng = np.random.default_rng(3)
    r = rng.standard_normal((3, 5)).astype(dtype)
    v = rng.standard_normal((3, 5)).astype(dtype)
    m = np.ones((3, 5), dtype=np.uint8)
    m[1, 3:] = 0
    term = np.array([1, 0, 0], dtype=np.uint8)
    trunc = np.array([0, 1, 1], dtype=np.uint8)
    boot = rng.standard_normal(3).astype(dtype)
    return r, v, m, term, trunc, boot


def _calls(dtype):
    """(kernel, args, indices of the arrays it writes) for a small valid call of each kernel."""
    r, v, m, term, trunc, boot = _sequences(dtype)
    out = np.zeros((3, 5), dtype=dtype)
    rng = np.random.default_rng(4)
    rewards = rng.standard_normal(6).astype(dtype)
    ids = np.array([0, 1, 0, 1, 1, 0], dtype=np.int64)
    flat = rng.standard_normal(15).astype(dtype)
    ref = rng.standard_normal(15).astype(dtype)
    m1 = (rng.random(15) < 0.8).astype(np.uint8)
    tokens = np.array([[1, 2, 3, 1, 2], [2, 2, 1, 0, 0], [3, 1, 2, 3, 1]], dtype=np.int64)
    return [
        ("discounted_returns", [r, m, term, trunc, boot, 0.9, out, 1], (6,)),
        ("lambda_returns", [r, v, m, term, trunc, boot, 0.9, 0.8, out, 1], (8,)),
        ("gae", [r, v, m, term, trunc, boot, 0.9, 0.8, out, out.copy(), 1], (8, 9)),
        ("masked_whiten", [r, m, 1e-8, out], (3,)),
        (
            "grpo_advantages",
            [
                rewards,
                ids,
                1,
                1e-4,
                1,
                np.zeros(2),
                np.zeros(2),
                np.zeros(2, dtype=np.int64),
                np.zeros(6, dtype=dtype),
            ],
            (5, 6, 7, 8),
        ),
        (
            "rloo_advantages",
            [rewards, ids, np.zeros(2), np.zeros(2, dtype=np.int64), np.zeros(6, dtype=dtype)],
            (2, 3, 4),
        ),
        ("loss_weights", [m, 0, 3.0, 14.0, 5.0, out], (5,)),
        ("sequence_importance_ratio", [r, v, m, np.zeros(3, dtype=dtype), out], (3, 4)),
        (
            "kl_penalty",
            [flat, ref, m1, 3, np.zeros(15, dtype=dtype), np.zeros(15, dtype=dtype)],
            (4, 5),
        ),
        (
            "kl_penalized_rewards",
            [
                flat.copy(),
                flat,
                ref,
                m1,
                3,
                0.1,
                np.zeros(15, dtype=dtype),
                np.zeros(15, dtype=dtype),
            ],
            (6, 7),
        ),
        (
            "keyword_scores",
            [
                tokens,
                np.array([5, 3, 5], dtype=np.int64),
                np.array([1, 2, 3], dtype=np.int64),
                np.array([0, 2, 3]),
                np.array([1.0, 0.5]),
                0,
                np.zeros(0, dtype=np.uint8),
                np.zeros((3, 5)),
            ],
            (7,),
        ),
        (
            "keyword_scores",
            [
                tokens,
                np.array([5, 3, 5], dtype=np.int64),
                np.array([1, 2, 3], dtype=np.int64),
                np.array([0, 2, 3]),
                np.array([1.0, 0.5]),
                1,
                np.array([0, 1, 1, 1], dtype=np.uint8),
                np.zeros((3, 5)),
            ],
            (7,),
        ),
    ]


def _cases():
    for dtype in (np.float64, np.float32):
        for k, (name, args, written) in enumerate(_calls(dtype)):
            arrays = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.size]
            for w in written:
                for r in arrays:
                    if r != w:
                        yield pytest.param(
                            name, k, dtype, w, r, id=f"{name}{k}-{np.dtype(dtype).name}-{w}-{r}"
                        )


def _call(k, dtype):
    name, args, written = _calls(dtype)[k]
    return [a.copy() if isinstance(a, np.ndarray) else a for a in args]


@pytest.mark.parametrize("name,k,dtype,w,r", list(_cases()))
def test_written_array_sharing_memory_is_refused(backend, name, k, dtype, w, r):
    kernel = getattr(_backend.backend_module(backend), name)
    args = _call(k, dtype)
    assert kernel(*args) == 0  # the call itself is valid
    aliased = _alias(_call(k, dtype), w, r)
    before = [a.copy() if isinstance(a, np.ndarray) else a for a in aliased]
    assert kernel(*aliased) == OVERLAPPING_ARRAYS
    for a, b in zip(aliased, before):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)  # nothing written


def _in_place_cases():
    """(kernel, call, written index, input index) where the input has the output's shape and
    dtype, so that passing it as the output is an in-place call."""
    for k, (name, args, written) in enumerate(_calls(np.float64)):
        for w in written:
            for i, a in enumerate(args):
                if (
                    i != w
                    and isinstance(a, np.ndarray)
                    and a.shape == args[w].shape
                    and a.dtype == args[w].dtype
                    and i not in written
                ):
                    yield pytest.param(name, k, w, i, id=f"{name}{k}-{w}-{i}")


@pytest.mark.parametrize("name,k,w,i", list(_in_place_cases()))
def test_output_that_is_an_input_is_refused(backend, name, k, w, i):
    """out= exactly an input of its shape and dtype (an in-place call) is refused as well: no kernel
    here documents an in-place mode."""
    kernel = getattr(_backend.backend_module(backend), name)
    aliased = _call(k, np.float64)
    aliased[w] = aliased[i]
    before = aliased[i].copy()
    assert kernel(*aliased) == OVERLAPPING_ARRAYS
    np.testing.assert_array_equal(aliased[i], before)


def test_inputs_may_share_memory(backend):
    """Only written arrays are checked: terminated and truncated, rewards and values may be one
    array (read only)."""
    mod = _backend.backend_module(backend)
    r, v, m, term, trunc, boot = _sequences(np.float64)
    both = np.ones(3, dtype=np.uint8)
    adv, ret = np.zeros((3, 5)), np.zeros((3, 5))
    assert mod.gae(r, r, m, both, both, boot, 0.9, 0.8, adv, ret, 1) == 0
    sep_adv, sep_ret = np.zeros((3, 5)), np.zeros((3, 5))
    assert mod.gae(r, r.copy(), m, both, both.copy(), boot, 0.9, 0.8, sep_adv, sep_ret, 1) == 0
    np.testing.assert_array_equal(adv, sep_adv)
    np.testing.assert_array_equal(ret, sep_ret)


def test_public_functions_never_pass_overlapping_arrays(backend):
    """The public functions allocate every array a kernel writes, so kernel-ready inputs (passed
    through without a copy) never share memory with an output; status 8 is an internal error."""
    import importlib

    import fastlmrl

    advantages = importlib.import_module("fastlmrl.advantages")
    keyword_scores = importlib.import_module("fastlmrl.keyword_scores")

    r, v, m, term, trunc, boot = _sequences(np.float64)
    with fastlmrl.use_backend(backend):
        adv, ret = fastlmrl.gae(
            r, v, m.astype(bool), term.astype(bool), trunc.astype(bool), boot, gamma=0.9, lam=0.8
        )
        shaped, kl = fastlmrl.kl_penalized_rewards(r, v, r, kl_coef=0.1)
        grpo = fastlmrl.grpo_advantages(r.ravel(), group_size=5)
    for out in (adv, ret, shaped, kl):
        for x in (r, v, boot):
            assert not np.shares_memory(out, x)
    assert not np.shares_memory(grpo, r)
    with pytest.raises(ValueError, match="rewards shares memory with advantages_out"):
        raise_for_status(
            OVERLAPPING_ARRAYS, advantages.CONTRACT["gae"], {"rewards": r, "advantages_out": r}
        )
    with pytest.raises(ValueError, match="out shares memory"):
        keyword_scores._raise_for_status(OVERLAPPING_ARRAYS)
