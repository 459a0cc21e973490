"""The tabular losses refuse an array they write sharing memory with another argument (status 8,
OVERLAPPING_ARRAYS, before the first write).

Found by ``tests/alias_probe.py --topics tabular_losses``: the Cython ``a2c_loss_tabular`` (27
pairs) and ``kl_penalty_loss_tabular`` (15 pairs, SIGABRT) crashed, and every kernel of every
backend gave different results when e.g. ``contexts`` viewed ``index`` (an id overwritten after
its range check, then used as an index).  Each written array (index, rows, num_rows and the
outputs) is aliased to each other array argument in turn, through the raw kernels of every
backend: status 8 and every byte of every argument unchanged.
"""

import numpy as np
import pytest

import fastlmrl
from fastlmrl import _backend, tabular_losses
from fastlmrl._status import OVERLAPPING_ARRAYS

BACKENDS = ("python", "numba", "cython")


def _calls():
    """(kernel, args, positions of the written arrays) of one valid call per kernel."""
    rng = np.random.default_rng(3)
    s, v = 5, 4
    table = rng.normal(size=(s, v))
    contexts = np.array([3, 1, 3, 0], dtype=np.int64)
    tokens = np.array([2, 0, 1, 3], dtype=np.int64)
    n = contexts.size

    def per_token():
        return rng.normal(size=n)

    weights = np.full(n, 1.0 / n)

    def work():
        return [
            np.empty(s, dtype=np.int64),
            np.empty(n, dtype=np.int64),
            np.zeros(1, dtype=np.int64),
        ]

    def outs(count):
        return [np.full(n, -7.0) for _ in range(count)]

    def grad():
        return np.full((n, v), -7.0)

    head = [table, contexts, tokens]
    calls = [
        ("token_log_probs_tabular", head + work() + outs(1) + [1], range(3, 7)),
        (
            "reinforce_loss_tabular",
            head
            + [per_token(), per_token(), weights]
            + work()
            + outs(2)
            + [grad(), np.full(1, -7.0), 1],
            range(6, 13),
        ),
        (
            "ppo_loss_tabular",
            head
            + [
                per_token(),
                per_token(),
                weights,
                per_token(),
                np.array([0, 2, 4], dtype=np.int64),
                0.2,
                0.3,
                3.0,
                0.1,
                3,
                1,
            ]
            + work()
            + outs(3)
            + [grad(), np.full(7, -7.0), 1],
            range(14, 22),
        ),
        (
            "kl_penalty_loss_tabular",
            head + [per_token(), weights, 3] + work() + outs(2) + [grad(), np.full(1, -7.0), 1],
            range(6, 13),
        ),
        (
            "a2c_loss_tabular",
            head
            + [per_token(), per_token(), per_token(), per_token(), weights, 0.2, 0.5, 0.01]
            + work()
            + outs(3)
            + [grad(), np.full(n, -7.0), np.full(4, -7.0), 1],
            range(11, 20),
        ),
    ]
    return calls


def _copy(args):
    return [a.copy() if isinstance(a, np.ndarray) else a for a in args]


def _alias(args, w, r):
    """args with the smaller of args[w], args[r] a view of the first bytes of the larger one,
    holding the smaller one's values."""
    args = _copy(args)
    big, small = (w, r) if args[w].nbytes >= args[r].nbytes else (r, w)
    flat = args[big].reshape(-1).view(np.uint8)
    view = flat[: args[small].nbytes].view(args[small].dtype).reshape(args[small].shape)
    view[...] = args[small]
    args[small] = view
    return args


def _cases():
    for name, args, written in _calls():
        arrays = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
        for w in written:
            for r in arrays:
                if r != w:
                    yield pytest.param(name, args, w, r, id=f"{name}-{w}-{r}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,args,w,r", list(_cases()))
def test_tabular_kernels_refuse_written_aliases(backend, name, args, w, r):
    kernel = getattr(_backend.backend_module(backend), name)
    assert kernel(*_copy(args)) == 0  # the call itself is valid
    aliased = _alias(args, w, r)
    before = [a.tobytes() if isinstance(a, np.ndarray) else a for a in aliased]
    assert kernel(*aliased) == OVERLAPPING_ARRAYS
    after = [a.tobytes() if isinstance(a, np.ndarray) else a for a in aliased]
    assert after == before  # nothing written


@pytest.mark.parametrize("backend", BACKENDS)
def test_separate_empty_and_unused_arrays_are_not_refused(backend):
    """Empty arrays share no byte (ref_log_probs absent; an empty batch), and the check leaves a
    valid call alone."""
    with fastlmrl.use_backend(backend):
        table = np.random.default_rng(0).normal(size=(4, 3))
        result = fastlmrl.ppo_loss_tabular(
            table, [1, 2, 1], [0, 2, 1], np.full(3, -1.0), np.ones(3)
        )
        assert result.rows.tolist() == [1, 2]
        empty = fastlmrl.ppo_loss_tabular(
            table,
            np.empty(0, dtype=np.int64),
            np.empty(0, dtype=np.int64),
            np.empty(0),
            np.empty(0),
        )
        assert empty.rows.size == 0 and empty.grad_rows.shape == (0, 3)


def test_public_error_names_both_arrays():
    """Status 8 from a kernel becomes a ValueError naming the read array and the written one
    (the wrappers allocate every array the kernels write, so only a kernel's refusal reaches
    this path)."""
    table = np.zeros((4, 3))
    index = np.zeros(4, dtype=np.int64)
    contexts = index[:2]
    with pytest.raises(ValueError, match="contexts shares memory with index"):
        tabular_losses._raise(
            OVERLAPPING_ARRAYS,
            table,
            contexts,
            contexts[:0],
            {},
            {"index": index, "rows": np.zeros(2, dtype=np.int64)},
        )
    grad = np.zeros((2, 3))
    with pytest.raises(ValueError, match="stats shares memory with grad_rows"):
        tabular_losses._raise(
            OVERLAPPING_ARRAYS,
            table,
            np.zeros(2, dtype=np.int64),
            np.zeros(2, dtype=np.int64),
            {},
            {"grad_rows": grad, "stats": grad.reshape(-1)[:1]},
        )
