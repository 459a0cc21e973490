"""Argument checks for functions of logits, shared by the topics that take them (issue 14 item 3).

:mod:`fastlmrl.log_probs`, :mod:`fastlmrl.sampling`, :mod:`fastlmrl.policy_losses` and
:mod:`fastlmrl.tabular_losses` check their ``logits``, ``tokens`` and ``out`` arguments here, before
a kernel runs: a bad argument raises the TypeError / ValueError naming it.  The names are public
within the package (no topic imports another topic's private helpers).

* :func:`as_logits` -- an (N, V) float32/float64 C-contiguous array, V >= 1, used as is;
* :func:`as_tokens` -- (N,) int32/int64 ids (range checked by the kernels);
* :func:`as_out` / :class:`OutputBuffer` -- a preallocated (N, V) output like the logits;
* :func:`refuse_shared` -- the error naming an input that shares memory with a written output;
* :func:`bad_logits_message` -- the message naming the first invalid logits row (status
  ``BAD_LOGITS``; :func:`explain_bad_logits` gives it to a kernel contract's ``messages``).

A kernel status becomes an exception through :func:`fastlmrl._contract.raise_for_status` only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import _validation as check

__all__ = [
    "OutputBuffer",
    "as_logits",
    "as_out",
    "as_tokens",
    "bad_logits_message",
    "check_output",
    "explain_bad_logits",
    "refuse_shared",
]


def as_logits(logits: Any, name: str = "logits") -> np.ndarray:
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


def as_tokens(tokens: Any, n: int) -> np.ndarray:
    """(n,) int32/int64 token ids (their range [0, V) is checked by the kernels)."""
    return check.ids(tokens, "tokens", n)


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


def as_out(out: Any, logits: np.ndarray, name: str = "out") -> np.ndarray:
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
    check_output(out, name, logits.dtype, logits.shape, logits)
    return out


def check_output(out: np.ndarray, name: str, dtype: Any, shape: tuple, logits: np.ndarray) -> None:
    """A caller's output array ``out``: of ``dtype`` and ``shape``, C-contiguous, writeable and
    sharing no memory with ``logits`` (else the TypeError/ValueError naming it)."""
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if np.shares_memory(out, logits):
        raise ValueError(f"{name} must not overlap logits")


def refuse_shared(out: np.ndarray, inputs: Mapping[str, Any], out_name: str = "out") -> None:
    """ValueError naming the input that shares memory with ``out``, which the call writes (the
    kernels refuse it too, status 8: a gradient row written over a token id after its range check
    would make the next row read out of bounds).  O(1): address ranges (inputs here are
    contiguous, so a shared range is shared memory)."""
    if out.size == 0:
        return
    for name, x in inputs.items():
        if x is not None and x.size and np.may_share_memory(out, x):
            raise ValueError(f"{name} shares memory with {out_name}, which this call writes")


def bad_logits_message(logits: np.ndarray, name: str = "logits") -> str:
    """The message of status ``BAD_LOGITS``: the first row of ``logits`` holding NaN or +inf or
    no finite entry."""
    for i in range(logits.shape[0]):
        row = logits[i]
        if np.isnan(row).any() or np.isposinf(row).any() or not np.isfinite(row).any():
            return (
                f"{name} row {i} holds NaN or +inf or no finite entry (masked logits must be "
                "-inf and each row needs one finite logit)"
            )
    return f"{name} hold NaN or +inf"  # pragma: no cover


def explain_bad_logits(args: Mapping[str, Any], shown: Callable[[str], str]) -> str:
    """The message of ``BAD_LOGITS`` for a kernel contract (``Kernel.messages``): the first
    invalid row of the ``logits`` argument (``shown``: the name to print)."""
    logits = args.get("logits")
    if logits is None:
        return f"invalid {shown('logits')}"
    return bad_logits_message(np.asarray(logits), shown("logits"))
