r"""Sampling the next token from logits: temperature, top-k, top-p (nucleus) and min-p.

``sample_tokens(logits, seed, ...)`` draws one token per row of an (N, V) logits array and
returns it with two log-probabilities: under the distribution it was drawn from (after
temperature and filtering, renormalised) and under the model (the temperature-1 softmax of the raw
logits, as :func:`fastlmrl.token_log_probs` computes it, bit for bit).  The second is what a PPO /
GRPO rollout stores as the behaviour policy's ``old_log_probs``; the first is the exact probability
of the draw (importance weights for a tempered or truncated sampler).

The filters follow the order of Hugging Face transformers' logits processors (temperature, then
top-k, top-p, min-p) and the definitions of transformers and vLLM:

.. math::

   w_j = \exp\bigl((z_j - m)/T\bigr),\quad m = \max_j z_j \qquad
   (q_j \propto w_j \text{ is } \operatorname{softmax}(z/T))

* top-k (Fan et al. 2018, "Hierarchical Neural Story Generation"): keep the k largest
  :math:`w_j`; tokens tied with the k-th are all kept (as transformers' ``TopKLogitsWarper``).
  ``top_k = 0`` (or ``>= V``) disables it.
* top-p (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration"): of the tokens left
  by top-k, keep the smallest set of most likely tokens whose renormalised probability mass is at
  least ``top_p`` (the most likely token is always kept; tokens tied with the last one kept are
  kept too).  ``top_p = 1`` disables it.
* min-p (Nguyen et al. 2024, "Turning Up the Heat: Min-p Sampling"): keep the tokens with
  :math:`q_j \ge \text{min\_p}\cdot\max_k q_k`, i.e. :math:`w_j \ge \text{min\_p}` (the ratio does
  not change under the renormalisations).  ``min_p = 0`` disables it.

With the kept set :math:`F`, the token is drawn from :math:`q^F_j = w_j [j\in F] / Z`,
:math:`Z = \sum_{j\in F} w_j`, and ``log_probs`` is :math:`\log q^F_a = (z_a - m)/T - \log Z`;
``model_log_probs`` is :math:`z_a - \operatorname{lse}(z)`.  ``temperature = 0`` is greedy
decoding: the lowest index of the maximum logit, ``log_probs = 0`` (the filters do not matter).

Exactness.  Each row is drawn by inverse CDF from **one** uniform of the counter-based generator
(:mod:`fastlmrl.rng`): row ``i`` uses counter ``c + i``, and a call consumes ``N`` counters of
``seed`` (an int: a fresh stream; a :class:`fastlmrl.RandomStream`: advanced by ``N`` after
success).  The arithmetic is fixed to the last rounding (``fastlmrl/_python/sampling.py``): sums in
float64 in eight lanes, the filter thresholds found from the weights' values (so the partial sort
used to find them cannot change the result), the CDF searched in blocks of 64 entries.  So the
python, numba and cython backends return the same tokens and log-probabilities bit for bit, at
every thread count.  For float32 logits the weights use the float32 polynomial exp of the other
softmax kernels (``fast_exp32``, within 1 ulp of float32 of the exact exp; see
:mod:`fastlmrl.log_probs`) of the float32 product :math:`(z_j - m)\cdot\text{float32}(1/T)`;
float64 logits use the C library's ``exp`` of :math:`(z_j - m)\cdot(1/T)` in float64.

Cost.  One max pass, one exp pass (two when :math:`T \ne 1`), a few vectorised passes per active
filter and a block search that stops at the drawn token; no row is sorted.  Top-k with k <= 128
keeps a heap of the k largest weights in one pass (blocks of 64 with nothing above its smallest are
skipped); a larger k first finds the power-of-two cutoff above which at least k weights lie
(binary search, one vectorised count per step) and selects among those.  Top-p gathers the weights
above the power-of-two cutoff whose mass reaches the target (binary search over masked sums; after
a top-k of at most 1024, the top-k set, whose index-ordered list then also serves the sums and the
CDF search) and pops them from a max-heap in descending order: work in the size of the nucleus,
not of the vocabulary.  At (256, 50257) float32 on one core of the development machine: ~36k
tokens/s for plain sampling and ~12k tokens/s with temperature 0.7, top-k 50 and top-p 0.9
(``torch.multinomial`` of the softmax: ~0.8k tokens/s; see ``benchmarks/bench_sampling.py``).
Rows are processed in parallel (``fastlmrl.set_num_threads``).

Masked logits (-inf) have probability 0 and are never drawn.  A row holding NaN or +inf or no
finite entry raises ValueError naming ``logits``; nothing is written then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from . import _backend, _free_cores
from . import _validation as check
from ._contract import Arg, Kernel, Kind, Topic
from ._contract import raise_for_status as _raise_for_status

# the statuses of sample_tokens, as plain ints (callers import them from here)
from ._status import (  # noqa: F401
    BAD_LOGITS,
    BAD_MIN_P,
    BAD_TEMPERATURE,
    BAD_TOP_K,
    BAD_TOP_P,
    NO_MEMORY,
    Status,
)
from ._validation_logits import as_logits, check_output, explain_bad_logits
from .rng import advance, check_capacity

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from ._python import sampling as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _backend.bind(__name__, "_kernels")

__all__ = ["SampledTokens", "sample_tokens"]


MIN_TEMPERATURE = 2.2250738585072014e-308  # the smallest normal double


# ----------------------------------------------------------------------------- the contract
#: The kernel of this topic, in every backend (``fastlmrl._python/_numba/_cython.sampling``);
#: tests/test_contract.py checks each implementation against it.  A kernel that cannot allocate
#: its row buffers returns ``NO_MEMORY`` (``raise_for_status``: MemoryError).
CONTRACT = Topic(
    "sampling",
    (
        Kernel(
            "sample_tokens",
            (
                Arg("logits", Kind.TABLE, status=Status.BAD_LOGITS),
                Arg(
                    "temperature",
                    Kind.REAL,
                    status=Status.BAD_TEMPERATURE,
                    domain=f"{{0}} or [{MIN_TEMPERATURE}, inf)",
                ),
                Arg(
                    "top_k",
                    Kind.SCALAR,
                    status=Status.BAD_TOP_K,
                    domain="[0, 2**63)",
                    ctype="int64_t",
                ),
                Arg("top_p", Kind.REAL, status=Status.BAD_TOP_P, domain="(0, 1]"),
                Arg("min_p", Kind.REAL, status=Status.BAD_MIN_P, domain="[0, 1]"),
                Arg("key", Kind.UINT64),
                Arg("counter", Kind.UINT64),
                Arg("tokens_out", Kind.ACTIONS, written=True),
                Arg("log_probs_out", Kind.REALS, written=True),
                Arg("model_log_probs_out", Kind.REALS, written=True),
                Arg("num_threads", Kind.THREADS),
            ),
            (Status.BAD_SHAPES, Status.OVERLAPPING_ARRAYS),
            doc="row i draws with counter + i; the scalars are checked first, then every row",
            messages={Status.BAD_LOGITS: explain_bad_logits},
        ),
    ),
)


class SampledTokens(NamedTuple):
    """What :func:`sample_tokens` returns (a tuple: ``tokens, log_probs, model_log_probs``)."""

    tokens: np.ndarray
    """(N,) int64: the sampled token ids."""
    log_probs: np.ndarray
    """(N,) log-probability of each token under the distribution sampled from (after temperature,
    top-k, top-p and min-p, renormalised); 0 for greedy rows (``temperature = 0``)."""
    model_log_probs: np.ndarray
    """(N,) log-probability of each token under the model: the temperature-1 softmax of the raw
    logits (equal to :func:`fastlmrl.token_log_probs` of the same tokens)."""


def _outputs(out, logits: np.ndarray):
    n = logits.shape[0]
    if out is None:
        return (np.empty(n, np.int64), np.empty(n, logits.dtype), np.empty(n, logits.dtype))
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise TypeError("out must be a tuple of three arrays (tokens, log_probs, model_log_probs)")
    names = ("out[0] (tokens)", "out[1] (log_probs)", "out[2] (model_log_probs)")
    dtypes = (np.dtype(np.int64), logits.dtype, logits.dtype)
    for arr, name, dtype in zip(out, names, dtypes):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray, got {type(arr).__name__}")
        check_output(arr, name, dtype, (n,), logits)
    for i in range(3):
        for j in range(i + 1, 3):
            if np.shares_memory(out[i], out[j]):
                raise ValueError(f"{names[i]} and {names[j]} must not overlap")
    return tuple(out)


def raise_for_status(status: int, logits: np.ndarray, **args) -> None:
    """Turn a ``sample_tokens`` kernel status into the exception naming the argument (no-op for 0),
    through :data:`CONTRACT`; ``args``: other arguments of the call by name (``temperature=``...)
    for a message quoting their value."""
    if status:
        _raise_for_status(status, CONTRACT["sample_tokens"], {"logits": logits, **args})


def _temperature(temperature) -> float:
    """0 (greedy) or a finite temperature whose reciprocal is finite (>= 2.2e-308)."""
    temperature = check.real(temperature, "temperature", 0.0, None)
    if 0.0 < temperature < MIN_TEMPERATURE:
        raise ValueError(
            f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE} (the "
            f"smallest normal double, so that 1 / temperature is finite), got "
            f"{temperature}"
        )
    return temperature


def sample_tokens(
    logits,
    seed,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    out=None,
) -> SampledTokens:
    r"""One token per row of ``logits``, with its log-probabilities (see the module docstring).

    Parameters
    ----------
    logits : ndarray (N, V), float32 or float64, C-contiguous
        Row i holds the next-token logits :math:`z_{i,\cdot}` at position i.  -inf masks a token.
    seed : int or :class:`fastlmrl.RandomStream`
        Row i uses counter ``c + i``; a RandomStream is advanced by N after success.
    temperature : float >= 0
        :math:`T`: sample from :math:`\operatorname{softmax}(z/T)`; 0 is greedy decoding (a
        positive temperature below 2.2e-308, whose reciprocal overflows, is refused).
    top_k : int >= 0
        Keep the ``top_k`` most likely tokens (and ties); 0 disables.
    top_p : float in (0, 1]
        Nucleus sampling: keep the smallest most-likely set with mass >= ``top_p``; 1 disables.
    min_p : float in [0, 1]
        Keep tokens with probability >= ``min_p`` times the largest; 0 disables.
    out : optional tuple of three preallocated (N,) arrays
        ``(tokens int64, log_probs, model_log_probs)`` (the log-probs of the logits' dtype).

    Returns
    -------
    :class:`SampledTokens` ``(tokens, log_probs, model_log_probs)``: int64 ids, and the
    log-probabilities (dtype of ``logits``) under the distribution sampled from and under the model.
    """
    logits = as_logits(logits)
    temperature = _temperature(temperature)
    if isinstance(top_k, (bool, np.bool_)) or not isinstance(top_k, (int, np.integer)):
        raise TypeError(f"top_k must be an int, got {type(top_k).__name__}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables top-k), got {top_k}")
    top_k = int(min(int(top_k), logits.shape[1]))  # >= V keeps everything (and fits an int64)
    top_p = check.real(top_p, "top_p", 0.0, 1.0, low_open=True)
    min_p = check.real(min_p, "min_p", 0.0, 1.0)
    n = logits.shape[0]
    key, counter = check_capacity(seed, n)
    tokens, log_probs, model_log_probs = _outputs(out, logits)
    status = _kernels.sample_tokens(
        logits,
        temperature,
        top_k,
        top_p,
        min_p,
        np.uint64(key),
        np.uint64(counter),
        tokens,
        log_probs,
        model_log_probs,
        _free_cores.threads(),
    )
    raise_for_status(status, logits)
    advance(seed, n)
    return SampledTokens(tokens, log_probs, model_log_probs)
