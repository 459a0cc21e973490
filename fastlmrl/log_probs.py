r"""Token log-probabilities of a softmax policy from logits: log-sum-exp, log-softmax, the log-prob of
the sampled tokens, entropy and :math:`\partial \log\pi(a)/\partial z`.

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

import numpy as np

from . import _backend, _free_cores
from . import _validation as check
from ._status import BAD_SHAPES

__all__ = [
    "OutputBuffer",
    "entropy",
    "log_prob_grad",
    "log_softmax",
    "logsumexp",
    "token_log_probs",
]

BAD_LOGITS = 20
BAD_TOKENS = 21
NO_MEMORY = 99


def as_logits(logits, name: str = "logits") -> np.ndarray:
    """A float32/float64 C-contiguous (N, V) array with V >= 1 (N may be 0), used as is."""
    if not isinstance(logits, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(logits).__name__}")
    if logits.dtype not in check.FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {logits.dtype}")
    if logits.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional (N, V), got shape {logits.shape}")
    if logits.shape[1] == 0:
        raise ValueError(f"{name} must have at least one column (V >= 1), got shape {logits.shape}")
    if not logits.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use numpy.ascontiguousarray)")
    return check.kernel_input(logits)  # read-only logits: no new Numba specialisation


class OutputBuffer:
    """An (N, V) output kept from call to call: pass it as ``out=`` to :func:`log_prob_grad`,
    :func:`log_softmax` or a loss of :mod:`fastlmrl.policy_losses` and the result is written into
    the array it holds (allocated at the first call; replaced when the shape or dtype of the
    logits changes).  The array returned *is* that buffer: the next call with the same
    ``OutputBuffer`` overwrites it, so copy what you keep.

    Why: a fresh (N, V) output is new memory each call, and the operating system zeroes each page
    at its first write -- at (4096, 50257) float32, 0.8 GB per call, which made ``ppo_loss``
    without ``out=`` run at about half the speed of one with a preallocated ``out``.  An
    ``OutputBuffer`` gives that speed without managing the array by hand (one per thread: it is
    not locked).  ``release()`` frees the array.
    """

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def get(self, logits: np.ndarray) -> np.ndarray:
        """The buffer for an output like ``logits`` (a new one when the shape or dtype differ, or
        when ``logits`` is the buffer itself, as when a previous result is passed back in)."""
        a = self.array
        if (
            a is None
            or a.shape != logits.shape
            or a.dtype != logits.dtype
            or np.may_share_memory(a, logits)
        ):
            self.array = None  # free the old one before allocating the new one
            a = self.array = np.empty_like(logits)
        return a

    def release(self) -> None:
        """Drop the array (its memory is freed once no result refers to it)."""
        self.array = None


def as_out(out, logits: np.ndarray, name: str = "out") -> np.ndarray:
    """A preallocated (N, V) output like ``logits`` (a new one when ``out`` is None, the buffer's
    array for an :class:`OutputBuffer`)."""
    if out is None:
        return np.empty_like(logits)
    if isinstance(out, OutputBuffer):
        return out.get(logits)
    if not isinstance(out, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy.ndarray or a fastlmrl.OutputBuffer, got {type(out).__name__}"
        )
    if out.dtype != logits.dtype:
        raise TypeError(f"{name} must have dtype {logits.dtype}, got {out.dtype}")
    if out.shape != logits.shape:
        raise ValueError(f"{name} must have shape {logits.shape}, got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if np.shares_memory(out, logits):
        raise ValueError(f"{name} must not overlap logits")
    return out


def refuse_shared(out: np.ndarray, inputs: dict, out_name: str = "out") -> None:
    """ValueError naming the input that shares memory with ``out``, which the call writes (the
    kernels refuse it too, status 8: a gradient row written over a token id after its range check
    would make the next row read out of bounds).  O(1): address ranges (inputs here are
    contiguous, so a shared range is shared memory)."""
    if out.size == 0:
        return
    for name, x in inputs.items():
        if x is not None and x.size and np.may_share_memory(out, x):
            raise ValueError(f"{name} shares memory with {out_name}, which this call writes")


def bad_logits_message(logits: np.ndarray) -> str:
    for i in range(logits.shape[0]):
        row = logits[i]
        if np.isnan(row).any() or np.isposinf(row).any() or not np.isfinite(row).any():
            return (
                f"logits row {i} holds NaN or +inf or no finite entry (masked logits must be "
                "-inf and each row needs one finite logit)"
            )
    return "logits hold NaN or +inf"  # pragma: no cover


def raise_for_status(status: int, logits: np.ndarray, tokens=None, extra=None) -> None:
    """Turn a kernel status into an exception naming the argument (no-op for 0).

    ``extra`` maps other status codes to ``(name, array)`` pairs whose first non-finite (or
    negative, for weights) entry is reported.
    """
    if status == 0:
        return
    if status == NO_MEMORY:
        raise MemoryError("fastlmrl: could not allocate the per-thread row buffers")
    if status == BAD_SHAPES:  # the wrappers always pass consistent shapes
        raise ValueError(
            f"internal error: array arguments of inconsistent shapes (status {BAD_SHAPES})"
        )
    if status == BAD_LOGITS:
        raise ValueError(bad_logits_message(logits))
    if status == BAD_TOKENS and tokens is not None:
        n_vocab = logits.shape[1]
        bad = np.flatnonzero((tokens < 0) | (tokens >= n_vocab))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"tokens[{i}] = {int(tokens[i])} is out of range [0, {n_vocab})")
        rows = np.arange(tokens.shape[0])
        masked = np.flatnonzero(np.isneginf(logits[rows, tokens]))
        i = int(masked[0]) if masked.size else 0
        raise ValueError(
            f"tokens[{i}] = {int(tokens[i])} selects a masked (-inf) logit: its "
            "log-probability is -inf"
        )
    if extra and status in extra:
        name, arr = extra[status]
        arr = np.asarray(arr)
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"{name}[{i}] = {arr[i]} is not finite")
        if name == "weights":
            bad = np.flatnonzero(arr < 0)
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"weights[{i}] = {arr[i]} is negative")
        raise ValueError(f"invalid {name}")
    raise ValueError(f"invalid argument (status {status})")


def as_tokens(tokens, n: int) -> np.ndarray:
    return check.ids(tokens, "tokens", n)


def logsumexp(logits) -> np.ndarray:
    r""":math:`\operatorname{lse}_i = \log\sum_j e^{z_{i,j}}` per row, dtype of ``logits``."""
    logits = as_logits(logits)
    out = np.empty(logits.shape[0], dtype=logits.dtype)
    status = _backend.kernels().logsumexp(logits, out, _free_cores.threads())
    raise_for_status(status, logits)
    return out


def log_softmax(logits, out=None) -> np.ndarray:
    r""":math:`\log\pi(j|s_i) = z_{i,j} - \operatorname{lse}_i` for every entry (an (N, V) array).

    ``out``: optional preallocated C-contiguous array of the shape and dtype of ``logits``, or an
    :class:`OutputBuffer` (reused from call to call).
    """
    logits = as_logits(logits)
    out = as_out(out, logits)
    status = _backend.kernels().log_softmax(logits, out, _free_cores.threads())
    raise_for_status(status, logits)
    return out


def token_log_probs(logits, tokens) -> np.ndarray:
    r"""Selective log-probabilities :math:`\log\pi(a_i|s_i) = z_{i,a_i} - \operatorname{lse}_i`.

    Computed from one streaming pass per row without forming the (N, V) log-softmax.  A token
    whose logit is -inf gets -inf.  Returns an (N,) array of the dtype of ``logits``.
    """
    logits = as_logits(logits)
    tokens = as_tokens(tokens, logits.shape[0])
    out = np.empty(logits.shape[0], dtype=logits.dtype)
    status = _backend.kernels().token_log_probs(logits, tokens, out, _free_cores.threads())
    raise_for_status(status, logits, tokens)
    return out


def entropy(logits) -> np.ndarray:
    r"""Policy entropy per row, :math:`H_i = -\sum_j \pi(j|s_i)\log\pi(j|s_i)` (nats).

    Terms with :math:`\pi(j|s_i) = 0` (masked or underflowed) contribute 0.  The sum is formed as
    :math:`-\sum_j p_j (z_{i,j} - \operatorname{lse}_i)` over the float64 probabilities.
    """
    logits = as_logits(logits)
    out = np.empty(logits.shape[0], dtype=logits.dtype)
    status = _backend.kernels().entropy(logits, out, _free_cores.threads())
    raise_for_status(status, logits)
    return out


def log_prob_grad(logits, tokens, out=None) -> np.ndarray:
    r""":math:`\partial\log\pi(a_i|s_i)/\partial z_{i,\cdot} = \mathrm{onehot}(a_i) - \pi(\cdot|s_i)`.

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
    status = _backend.kernels().log_prob_grad(logits, tokens, out, _free_cores.threads())
    raise_for_status(status, logits, tokens)
    return out
