r"""Token log-probabilities of a softmax policy from logits: log-sum-exp, log-softmax, the
log-prob of the sampled tokens, entropy and :math:`\partial \log\pi(a)/\partial z`.

``logits`` is an (N, V) array: row i holds the logits :math:`z_{i,\cdot}` of the policy at context
(state) i -- a row of a tabular logits table gathered by context id, or the output of a language
model for token position i -- and ``tokens[i]`` is the action :math:`a_i` sampled there.  The
policy is the softmax (Sutton & Barto 2018, §13.1, eq. 13.2)

.. math::  \pi(a|s_i) = \frac{e^{z_{i,a}}}{\sum_b e^{z_{i,b}}},\qquad
           \log\pi(a|s_i) = z_{i,a} - \operatorname{lse}(z_{i,\cdot}),\qquad
           \frac{\partial \log\pi(a_i|s_i)}{\partial z_{i,j}} = [j = a_i] - \pi(j|s_i)

(the eligibility vector of S&B eq. 13.9 for a softmax in action preferences).

Numerics.  Each row takes a max pass, then one pass computing :math:`e_j = \exp(z_j - m)` into a
row buffer of the logits' dtype (one per thread; no (N, V) temporary) and their sum, and -- for the
gradient -- one pass writing :math:`p_j = e_j \cdot (1/S)` from that buffer.  Sums are formed in
float64 with eight partial sums in a fixed order, and each result is rounded once when stored,
identically in the python, numba and cython backends (bit-for-bit equal; the order of operations is
written out in ``fastlmrl/_python/log_probs.py``).  For **float32** logits :math:`z_j - m` is the
float32 difference (as in a float32 NumPy softmax) and the exponentials use a vectorisable float32
polynomial exp built on fused multiply-adds (eight lanes per 256-bit vector), within 1 ulp of
float32 of the correctly rounded exp and within NumPy's own error + 1 ulp of ``np.exp`` (see
``fastlmrl/_numba/fast_math.py``); float64 logits use the C library's ``exp`` in float64.
Gradient outputs of 64 MiB and more are written with streaming (non-temporal) stores.

Masked logits (-inf) are allowed: probability 0, log-probability -inf.  A row holding NaN or +inf,
or no finite entry, raises ValueError naming ``logits``; ids outside [0, V) raise ValueError naming
``tokens``.  The finiteness check is fused into the streaming pass: the (N,) results are
written only when every row is valid, but a function that writes an (N, V) array may have written
rows before the bad one into ``out`` when you pass one (a freshly allocated output is discarded).

Rows are processed in parallel (``fastlmrl.set_num_threads``); each row is computed by the same
code whatever the thread count, so results do not depend on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import _backend, _free_cores
from ._contract import Arg, Kernel, Kind, Topic
from ._contract import raise_for_status as _raise_for_status
from ._status import Status

# The argument checks of functions of logits live in fastlmrl/_validation_logits.py (OutputBuffer
# is public: fastlmrl.OutputBuffer)
from ._validation_logits import (
    OutputBuffer,
    as_logits,
    as_out,
    as_tokens,
    explain_bad_logits,
    refuse_shared,
)

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from ._python import log_probs as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _backend.bind(__name__, "_kernels")

__all__ = [
    "OutputBuffer",
    "entropy",
    "log_prob_grad",
    "log_softmax",
    "logsumexp",
    "token_log_probs",
]


# ----------------------------------------------------------------------------- the contract
_LOGITS = Arg("logits", Kind.TABLE, status=Status.BAD_LOGITS)
_TOKENS = Arg("tokens", Kind.IDS, status=Status.BAD_TOKENS, bound=("logits", 1))
_ROW_OUT = Arg("out", Kind.REALS, written=True)  # (N,): one value per row
_TABLE_OUT = Arg("out", Kind.TABLE, written=True)  # (N, V) like the logits (may be them exactly)
_THREADS = Arg("num_threads", Kind.THREADS)
_CALL = (Status.BAD_SHAPES, Status.OVERLAPPING_ARRAYS)
_MESSAGES = {Status.BAD_LOGITS: explain_bad_logits}  # names the first invalid row

#: The kernels of this topic, in every backend (``fastlmrl._python/_numba/_cython.log_probs``);
#: tests/test_contract.py checks each implementation against it.  A kernel that cannot allocate
#: its row buffers returns ``NO_MEMORY`` (any kernel may; ``raise_for_status``: MemoryError).
CONTRACT = Topic(
    "log_probs",
    (
        Kernel("entropy", (_LOGITS, _ROW_OUT, _THREADS), _CALL, messages=_MESSAGES),
        Kernel(
            "log_prob_grad",
            (_LOGITS, _TOKENS, _TABLE_OUT, _THREADS),
            _CALL,
            doc="out may be logits exactly (written over them row by row)",
            messages=_MESSAGES,
        ),
        Kernel(
            "log_softmax",
            (_LOGITS, _TABLE_OUT, _THREADS),
            _CALL,
            doc="out may be logits exactly (written over them row by row)",
            messages=_MESSAGES,
        ),
        Kernel("logsumexp", (_LOGITS, _ROW_OUT, _THREADS), _CALL, messages=_MESSAGES),
        Kernel(
            "token_log_probs", (_LOGITS, _TOKENS, _ROW_OUT, _THREADS), _CALL, messages=_MESSAGES
        ),
    ),
)


def _check(status: int, kernel: str, logits: np.ndarray, tokens=None) -> None:
    """The error of a kernel's status (no-op for 0), through the contract of ``kernel``."""
    if status:
        _raise_for_status(status, CONTRACT[kernel], {"logits": logits, "tokens": tokens})


def logsumexp(logits) -> np.ndarray:
    r""":math:`\operatorname{lse}_i = \log\sum_j e^{z_{i,j}}` per row, dtype of ``logits``."""
    logits = as_logits(logits)
    out = np.empty(logits.shape[0], dtype=logits.dtype)
    status = _kernels.logsumexp(logits, out, _free_cores.threads())
    _check(status, "logsumexp", logits)
    return out


def log_softmax(logits, out=None) -> np.ndarray:
    r""":math:`\log\pi(j|s_i) = z_{i,j} - \operatorname{lse}_i` for every entry (an (N, V) array).

    ``out``: optional preallocated C-contiguous array of the shape and dtype of ``logits``, or an
    :class:`OutputBuffer` (reused from call to call).
    """
    logits = as_logits(logits)
    out = as_out(out, logits)
    status = _kernels.log_softmax(logits, out, _free_cores.threads())
    _check(status, "log_softmax", logits)
    return out


def token_log_probs(logits, tokens) -> np.ndarray:
    r"""Selective log-probabilities :math:`\log\pi(a_i|s_i) = z_{i,a_i} - \operatorname{lse}_i`.

    Computed from one streaming pass per row without forming the (N, V) log-softmax.  A token
    whose logit is -inf gets -inf.  Returns an (N,) array of the dtype of ``logits``.
    """
    logits = as_logits(logits)
    tokens = as_tokens(tokens, logits.shape[0])
    out = np.empty(logits.shape[0], dtype=logits.dtype)
    status = _kernels.token_log_probs(logits, tokens, out, _free_cores.threads())
    _check(status, "token_log_probs", logits, tokens)
    return out


def entropy(logits) -> np.ndarray:
    r"""Policy entropy per row, :math:`H_i = -\sum_j \pi(j|s_i)\log\pi(j|s_i)` (nats).

    Terms with :math:`\pi(j|s_i) = 0` (masked or underflowed) contribute 0.  The sum is formed as
    :math:`-\sum_j p_j (z_{i,j} - \operatorname{lse}_i)` over the float64 probabilities.
    """
    logits = as_logits(logits)
    out = np.empty(logits.shape[0], dtype=logits.dtype)
    status = _kernels.entropy(logits, out, _free_cores.threads())
    _check(status, "entropy", logits)
    return out


def log_prob_grad(logits, tokens, out=None) -> np.ndarray:
    r"""The gradient of the token log-probabilities with respect to the logits:

    .. math:: \partial\log\pi(a_i|s_i)/\partial z_{i,\cdot} = \mathrm{onehot}(a_i) - \pi(\cdot|s_i)

    Entry j of row i is :math:`-p_j`, and entry :math:`a_i` is :math:`1 - p_{a_i}` (float64, rounded
    once).  This is S&B (2018) eq. 13.9's eligibility vector for a softmax policy; multiply row i
    by your per-token coefficient to backpropagate a policy-gradient loss (or use the fused losses
    in :mod:`fastlmrl.policy_losses`).  ``out``: optional preallocated (N, V) array, or an
    :class:`OutputBuffer` (reused from call to call).
    """
    logits = as_logits(logits)
    tokens = as_tokens(tokens, logits.shape[0])
    out = as_out(out, logits)
    refuse_shared(out, {"tokens": tokens})
    status = _kernels.log_prob_grad(logits, tokens, out, _free_cores.threads())
    _check(status, "log_prob_grad", logits, tokens)
    return out
