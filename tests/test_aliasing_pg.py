"""Overlapping arrays in the kernels over logits (log_probs, policy_losses, sampling): every array a
kernel writes must not share memory with another argument (status 8, OVERLAPPING_ARRAYS, nothing
written), found by ``tests/alias_probe.py``: the gradient over ``tokens`` crashed the loss kernels
(a gradient row overwrote a token id after its range check), outputs over inputs or over each
other gave results that differ from separate arrays.  The one overlap allowed is by design: a
gradient (or log-softmax) written exactly over its logits, row by row (the fused LM head); a
partial overlap of the two is refused, and so is any for ``a2c_loss`` (its entropy gradient reads
the row after writing it).  The public API refuses first, naming both arguments."""

import numpy as np
import pytest

import fastlmrl
from fastlmrl import _backend
from fastlmrl._status import OVERLAPPING_ARRAYS

BACKENDS = ("python", "numba", "cython")
N, V = 6, 5


def _alias(args, w, r):
    """args with args[r] and args[w] sharing memory: the smaller a view of the first bytes of the
    larger, holding its own values."""
    args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    big, small = (w, r) if args[w].nbytes >= args[r].nbytes else (r, w)
    flat = args[big].reshape(-1).view(np.uint8)
    view = flat[: args[small].nbytes].view(args[small].dtype).reshape(args[small].shape)
    view[...] = args[small]
    args[small] = view
    return args


def _inputs():
    rng = np.random.default_rng(3)
    return dict(
        logits=rng.normal(size=(N, V)),
        tokens=np.array([4, 0, 2, 1, 3, 2], dtype=np.int64),
        a=rng.normal(size=N),
        b=rng.normal(size=N) - 1.5,
        c=rng.normal(size=N) - 1.5,
        w=np.full(N, 1.0 / N),
    )


def _calls():
    """(kernel, args, written indices, index of the gradient that may be exactly the logits or
    None)."""
    x = _inputs()
    lg, tk, a, b, c, w = (x[k] for k in ("logits", "tokens", "a", "b", "c", "w"))
    e = np.empty
    return [
        ("logsumexp", [lg, e(N), 1], (1,), None),
        ("token_log_probs", [lg, tk, e(N), 1], (2,), None),
        ("entropy", [lg, e(N), 1], (1,), None),
        ("log_softmax", [lg, e((N, V)), 1], (1,), 1),
        ("log_prob_grad", [lg, tk, e((N, V)), 1], (2,), 2),
        (
            "reinforce_loss",
            [lg, tk, a, b, w, e(N), e(N), e((N, V)), np.zeros(7), 1],
            (5, 6, 7, 8),
            7,
        ),
        (
            "ppo_loss",
            [
                lg,
                tk,
                b,
                a,
                w,
                c,
                np.zeros(1, dtype=np.int64),
                0.2,
                0.2,
                0.0,
                0.1,
                3,
                0,
                e(N),
                e(N),
                e(N),
                e((N, V)),
                np.zeros(7),
                1,
            ],
            (13, 14, 15, 16, 17),
            16,
        ),
        (
            "kl_penalty_loss",
            [lg, tk, c, w, 3, e(N), e(N), e((N, V)), np.zeros(7), 1],
            (5, 6, 7, 8),
            7,
        ),
        (
            "a2c_loss",
            [
                lg,
                tk,
                a,
                b,
                c,
                b + 0.1,
                w,
                0.2,
                0.5,
                0.01,
                e(N),
                e(N),
                e(N),
                e((N, V)),
                e(N),
                np.zeros(7),
                1,
            ],
            (10, 11, 12, 13, 14, 15),
            None,
        ),
        (
            "sample_tokens",
            [lg, 1.0, 0, 1.0, 0.0, np.uint64(5), np.uint64(9), e(N, dtype=np.int64), e(N), e(N), 1],
            (7, 8, 9),
            None,
        ),
    ]


def _cases():
    for name, args, written, in_place in _calls():
        arrays = [i for i, x in enumerate(args) if isinstance(x, np.ndarray) and x.size > 0]
        for w in written:
            for r in arrays:
                if r != w and not (in_place == w and r == 0):
                    yield pytest.param(name, args, w, r, id=f"{name}-{w}-{r}")


def _copies(args):
    return [x.copy() if isinstance(x, np.ndarray) else x for x in args]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,args,w,r", list(_cases()))
def test_kernels_refuse_a_written_array_sharing_memory(backend, name, args, w, r):
    kernel = getattr(_backend.backend_module(backend), name)
    assert kernel(*_copies(args)) == 0
    aliased = _alias(args, w, r)
    before = _copies(aliased)
    assert kernel(*aliased) == OVERLAPPING_ARRAYS
    for got, want in zip(aliased, before):
        if isinstance(got, np.ndarray):
            np.testing.assert_array_equal(got, want)  # nothing written


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name,args,written,grad",
    [c for c in _calls() if c[3] is not None],
    ids=lambda c: c if isinstance(c, str) else "",
)
def test_gradient_exactly_over_the_logits_is_allowed_partial_overlap_is_not(
    backend, name, args, written, grad
):
    kernel = getattr(_backend.backend_module(backend), name)
    separate = _copies(args)
    assert kernel(*separate) == 0
    in_place = _copies(args)
    in_place[grad] = in_place[0]
    assert kernel(*in_place) == 0
    assert in_place[0].tobytes() == separate[grad].tobytes()
    for i in written:
        if i != grad:
            assert in_place[i].tobytes() == separate[i].tobytes()
    # the gradient one row further on than the logits: row i's gradient would overwrite row i + 1
    buf = np.concatenate([args[0], args[0][:1]])
    shifted = _copies(args)
    shifted[0], shifted[grad] = buf[:N], buf[1:]
    before = buf.copy()
    assert kernel(*shifted) == OVERLAPPING_ARRAYS
    np.testing.assert_array_equal(buf, before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a2c_gradient_over_its_logits_is_refused(backend):
    name, args, written, _ = [c for c in _calls() if c[0] == "a2c_loss"][0]
    kernel = getattr(_backend.backend_module(backend), name)
    args = _copies(args)
    args[13] = args[0]
    before = args[0].copy()
    assert kernel(*args) == OVERLAPPING_ARRAYS
    np.testing.assert_array_equal(args[0], before)


def _view_of(out, like):
    """A view of the first bytes of ``out`` holding ``like``'s values."""
    view = out.reshape(-1).view(np.uint8)[: like.nbytes].view(like.dtype).reshape(like.shape)
    view[...] = like
    return view


@pytest.mark.parametrize("backend", BACKENDS)
def test_public_losses_name_the_argument_sharing_memory_with_out(backend):
    x = _inputs()
    lg, tk, a, b, c = (x[k] for k in ("logits", "tokens", "a", "b", "c"))
    with fastlmrl.use_backend(backend):
        out = np.zeros((N, V))
        cases = [
            ("tokens", lambda t: fastlmrl.log_prob_grad(lg, t, out=out), tk),
            ("old_log_probs", lambda o: fastlmrl.ppo_loss(lg, tk, o, a, out=out), b),
            ("advantages", lambda v: fastlmrl.ppo_loss(lg, tk, b, v, out=out), a),
            (
                "ref_log_probs",
                lambda r: fastlmrl.ppo_loss(lg, tk, b, a, ref_log_probs=r, kl_coef=0.1, out=out),
                c,
            ),
            ("tokens", lambda t: fastlmrl.ppo_loss(lg, t, b, a, out=out), tk),
            ("returns", lambda v: fastlmrl.reinforce_loss(lg, tk, v, out=out), a),
            ("baseline", lambda v: fastlmrl.reinforce_loss(lg, tk, a, baseline=v, out=out), b),
            (
                "weights",
                lambda v: fastlmrl.reinforce_loss(lg, tk, a, weights=v, out=out),
                np.full(N, 0.5),
            ),
            ("ref_log_probs", lambda r: fastlmrl.kl_penalty_loss(lg, tk, r, out=out), c),
            ("values", lambda v: fastlmrl.a2c_loss(lg, tk, a, v, c, out=out), b),
            ("returns", lambda v: fastlmrl.a2c_loss(lg, tk, a, b, v, out=out), c),
        ]
        for name, call, like in cases:
            out[...] = 0.0
            view = _view_of(out, like)
            before = out.copy()
            with pytest.raises(ValueError, match=f"{name} shares memory with out"):
                call(view)
            np.testing.assert_array_equal(out, before)
            call(like.copy())  # a copy is fine
        with pytest.raises(ValueError, match="out must not overlap logits"):
            fastlmrl.ppo_loss(out, tk, b, a, out=out)
