r"""Batched token environments stepped by compiled kernels: :class:`ContextMDP`,
:class:`TextGenerationEnv`.

Both follow the agent–environment interface of Sutton & Barto (2018, §3.1): at time ``t`` the
agent sees state :math:`S_t` (a *context id*), takes action :math:`A_t` (a *token id*), and the
environment answers with :math:`R_{t+1}` and :math:`S_{t+1}` (S&B eq. 3.2 with deterministic
transitions).  Each environment holds ``num_envs = B`` independent sequences in contiguous arrays
and steps all of them with one kernel call (no Python per sequence or per token).

API (Gymnasium 1.x style; termination and truncation are separate, as in Pardo et al. 2018,
"Time limits in reinforcement learning"):

* ``reset(seed=None) -> (obs, info)``: ``obs`` is the (B,) int64 array of contexts :math:`S_0`.
* ``step(actions) -> (obs, rewards, terminated, truncated, info)`` with (B,) arrays: ``rewards[b]``
  is :math:`R_{t+1}`, ``terminated[b]`` says :math:`S_{t+1}` is terminal (its value is 0: do not
  bootstrap), ``truncated[b]`` says the episode was cut by the time limit (:math:`S_{t+1}` is not
  terminal: bootstrap from it).  An environment never reports both for one step (termination wins).
* **Autoreset: next step** (Gymnasium's default ``AutoresetMode.NEXT_STEP``): the step after a
  sequence terminated or was truncated ignores its action, resets it (new start / prompt), and
  returns the new :math:`S_0` with reward 0 and both flags False.

Randomness (starts, prompts, sampled tokens) comes from :mod:`fastlmrl.rng`: ``reset(seed=...)``
takes an int (a fresh stream) or a :class:`fastlmrl.RandomStream` (used and advanced); ``seed=None``
continues the environment's stream.  Same seed → same episodes in every backend.

k-gram context ids (:class:`TextGenerationEnv`; the convention of :mod:`fastlmrl.ngram`): with a
vocabulary of ``V`` tokens and order ``k`` there are ``S = V**k`` contexts; the context of a
history is its last ``k`` tokens :math:`t_0 \dots t_{k-1}` (oldest first) read as a base-``V``
number, oldest most significant, :math:`\mathrm{id} = \sum_{j} t_j V^{k-1-j}`; the history is
``[bos_id] * k + prompt + response`` (left padding with ``bos_id``), and appending token ``a`` to
context ``c`` gives :math:`(cV + a) \bmod V^k`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _backend
from . import _validation as check
from ._contract import Arg, Kernel, Kind, Topic, raise_for_status
from ._status import Status
from .rewards import as_reward, kl_shaped, terminal_to_per_token
from .rng import MASK64, RandomStream, advance, check_capacity, resolve_seed

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from ._python import environments as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _backend.bind(__name__, "_kernels")

__all__ = ["ContextMDP", "RolloutBatch", "TextGenerationEnv"]


# ---------------------------------------------------------------------------------------------
# the kernel contract


def _says(name: str, text: str):
    """The message of a status whose argument's value gives no finer one: ``name: text``."""
    return lambda args, shown: f"{shown(name)}: {text}"


def _ids_below(name: str, bound: str):
    """The message of ids ``name`` checked against the scalar argument ``bound`` (the caller
    passes 0 for the rows the kernel does not read): the first id outside [0, bound)."""

    def explain(args: Mapping[str, Any], shown: Callable[[str], str]) -> str:
        ids, n = args.get(name), args.get(bound)
        if ids is not None and n is not None:
            ids = np.asarray(ids)
            bad = np.flatnonzero((ids < 0) | (ids >= n))
            if bad.size:
                i = int(bad[0])
                return f"{shown(name)}[{i}] = {int(ids[i])} is out of range [0, {int(n)})"
        return f"{shown(name)}: an id is out of range"

    return explain


def _config(name: str):
    """BAD_CONFIG: sizes or parameters that do not fit together (never from the wrappers)."""
    return _says(name, "inconsistent sizes or parameters (array lengths, vocabulary, order, ...)")


def _int64_array(name: str, written: bool = False, status=None, dims: int = 1) -> Arg:
    ctype = "int64_t[::1]" if dims == 1 else "int64_t[:, ::1]"
    return Arg(name, Kind.ARRAY, written=written, status=status, ctype=ctype)


def _int64_scalar(name: str, status=None, domain=None) -> Arg:
    return Arg(name, Kind.SCALAR, status=status, domain=domain, ctype="int64_t")


def _flags_out(name: str) -> Arg:
    return Arg(name, Kind.FLAGS, written=True)


_KEY, _COUNTER = Arg("key", Kind.UINT64), Arg("counter", Kind.UINT64)
_ACTIVE = Arg("active", Kind.FLAGS)
_DONE = (_flags_out("terminated_out"), _flags_out("truncated_out"))
_STEPS = _int64_array("steps", written=True, status=Status.BAD_STEPS)
_PROMPTS = (
    Arg("prompt_tokens", Kind.IDS, status=Status.BAD_PROMPT_TOKENS),
    Arg("prompt_offsets", Kind.IDS, status=Status.BAD_OFFSETS),
)
_PROMPT_IDS = Arg("prompt_ids", Kind.IDS, status=Status.BAD_PROMPT_IDS)
_PROMPT_MESSAGES = {
    Status.BAD_PROMPT_TOKENS: _says(
        "prompt_tokens", "a prompt holds a token id out of the vocabulary"
    ),
    Status.BAD_OFFSETS: _says("prompt_offsets", "the prompt offsets are invalid"),
    Status.BAD_PROMPT_IDS: _says("prompt_ids", "a prompt id is out of range [0, P)"),
}
_STEP_COUNT = _says("steps", "a step count is negative or at the int64 limit")
_MASK_ROWS = _says("mask_logits", "a visited row holds NaN or +inf, or no finite entry")
_OVERLAP = (Status.OVERLAPPING_ARRAYS,)
_BATCH = (Status.BAD_SHAPES, Status.OVERLAPPING_ARRAYS)

#: The kernels of this topic, in every backend (``fastlmrl._python/_numba/_cython``
#: ``.environments``); tests/test_contract.py checks each implementation against it.
#: ``tabular_mdp_step`` serves :class:`fastlmrl.TabularMDP`.
CONTRACT = Topic(
    "environments",
    (
        Kernel(
            "context_mdp_step",
            (
                Arg(
                    "next_state",
                    Kind.ARRAY,
                    status=Status.BAD_NEXT_STATES,
                    ctype="index_t[:, ::1]",
                ),
                Arg("reward", Kind.TABLE, status=Status.BAD_REWARDS),
                Arg("terminal", Kind.FLAGS),
                _int64_scalar("max_steps", Status.BAD_CONFIG),
                Arg("actions", Kind.IDS, status=Status.BAD_ACTIONS, bound=("next_state", 1)),
                _ACTIVE,
                Arg("contexts", Kind.IDS, written=True, status=Status.BAD_STATES),
                _STEPS,
                Arg("rewards_out", Kind.REALS, written=True),
                *_DONE,
            ),
            _BATCH,
            messages={
                Status.BAD_STATES: _says("contexts", "a context id is out of range (or terminal)"),
                Status.BAD_NEXT_STATES: _says("next_state", "an id is out of range"),
                Status.BAD_REWARDS: _says("reward", "the reward table holds a non-finite value"),
                Status.BAD_STEPS: _STEP_COUNT,
                Status.BAD_CONFIG: _config("max_steps"),
            },
            doc="one step of every active row of a ContextMDP",
        ),
        Kernel(
            "draw_ids",
            (
                _int64_scalar("bound", Status.BAD_CONFIG),
                _KEY,
                _COUNTER,
                Arg("mask", Kind.FLAGS),
                _int64_array("out", written=True),
            ),
            _OVERLAP,
            messages={Status.BAD_CONFIG: _config("bound")},
            doc="out[i] = floor(u_i * bound) where mask[i] (u_i: uniform at counter + i)",
        ),
        Kernel(
            "tabular_mdp_step",
            (
                _int64_array("offsets", status=Status.BAD_OFFSETS),
                Arg("cdf", Kind.ARRAY, ctype="double[::1]"),
                _int64_array("next_states", status=Status.BAD_NEXT_STATES),
                Arg("rewards", Kind.ARRAY, status=Status.BAD_REWARDS, ctype="double[::1]"),
                Arg("ends", Kind.FLAGS),
                _int64_scalar("n_actions"),
                _int64_scalar("max_steps", Status.BAD_CONFIG, "[0, 2**63)"),
                _KEY,
                _COUNTER,
                Arg("actions", Kind.ACTIONS, status=Status.BAD_ACTIONS),
                _ACTIVE,
                _int64_array("states", written=True, status=Status.BAD_STATES),
                _STEPS,
                Arg("rewards_out", Kind.ARRAY, written=True, ctype="double[::1]"),
                *_DONE,
            ),
            _BATCH,
            messages={
                Status.BAD_STATES: _says("states", "a state id is out of range"),
                Status.BAD_ACTIONS: _ids_below("actions", "n_actions"),
                Status.BAD_OFFSETS: _says(
                    "offsets", "the outcome offsets of a (state, action) pair are invalid"
                ),
                Status.BAD_NEXT_STATES: _says("next_states", "a state id is out of range"),
                Status.BAD_STEPS: _STEP_COUNT,
            },
            doc="one step of every active row of a TabularMDP (outcomes in CSR layout)",
        ),
        Kernel(
            "text_env_reset",
            (
                *_PROMPTS,
                _int64_scalar("n_vocab", Status.BAD_CONFIG),
                _int64_scalar("order"),
                _int64_scalar("bos_id"),
                _PROMPT_IDS,
                Arg("mask", Kind.FLAGS),
                _int64_array("contexts", written=True),
                _int64_array("lengths", written=True),
            ),
            _OVERLAP,
            messages={**_PROMPT_MESSAGES, Status.BAD_CONFIG: _config("n_vocab")},
            doc="where mask: the context of the bos padding + prompt prompt_ids[b], length 0",
        ),
        Kernel(
            "text_env_rollout",
            (
                Arg("logits", Kind.TABLE, status=Status.BAD_LOGITS),
                Arg("mask_logits", Kind.TABLE, status=Status.BAD_MASK_LOGITS),
                _int64_scalar("top_k", Status.BAD_CONFIG),
                Arg("top_p", Kind.REAL),
                *_PROMPTS,
                _PROMPT_IDS,
                _int64_scalar("order"),
                _int64_scalar("bos_id"),
                _int64_scalar("eos_id"),
                _KEY,
                _COUNTER,
                _int64_array("contexts_out", written=True, dims=2),
                _int64_array("actions_out", written=True, dims=2),
                Arg("logprobs_out", Kind.TABLE, written=True),
                Arg("valid_out", Kind.ARRAY, written=True, ctype="unsigned char[:, ::1]"),
                _int64_array("lengths_out", written=True),
                *_DONE,
                _int64_array("final_contexts_out", written=True),
                Arg("cdf", Kind.ARRAY, written=True, ctype="double[:, ::1]"),
                Arg("row_stats", Kind.ARRAY, written=True, ctype="double[:, ::1]"),
                Arg("row_built", Kind.FLAGS, written=True),
                Arg("mask_table", Kind.ARRAY, written=True, ctype="unsigned char[:, ::1]"),
            ),
            _OVERLAP,
            messages={
                **_PROMPT_MESSAGES,
                Status.BAD_LOGITS: _says(
                    "logits",
                    "a visited row holds NaN or +inf, or no finite entry among the allowed tokens",
                ),
                Status.BAD_MASK_LOGITS: _MASK_ROWS,
                Status.BAD_CONFIG: _config("top_k"),
            },
            doc="len(prompt_ids) fresh episodes of at most actions_out.shape[1] tokens",
        ),
        Kernel(
            "text_env_step",
            (
                _int64_scalar("n_vocab", Status.BAD_CONFIG),
                _int64_scalar("order"),
                _int64_scalar("eos_id"),
                _int64_scalar("max_new_tokens"),
                Arg("actions", Kind.IDS, status=Status.BAD_ACTIONS),
                _ACTIVE,
                _int64_array("contexts", written=True, status=Status.BAD_STATES),
                _int64_array("lengths", written=True, status=Status.BAD_LENGTHS),
                _int64_array("tokens", written=True, dims=2),
                *_DONE,
            ),
            _OVERLAP,
            messages={
                Status.BAD_ACTIONS: _ids_below("actions", "n_vocab"),
                Status.BAD_STATES: _says("contexts", "a context id is out of range"),
                Status.BAD_LENGTHS: _says(
                    "lengths",
                    "a sequence is already at its maximum length (or a length is negative)",
                ),
                Status.BAD_CONFIG: _config("n_vocab"),
            },
            doc="append actions[b] to every active sequence",
        ),
        Kernel(
            "topk_topp_mask",
            (
                Arg("mask_logits", Kind.TABLE, status=Status.BAD_MASK_LOGITS),
                Arg("contexts", Kind.IDS, status=Status.BAD_STATES, bound=("mask_logits", 0)),
                _int64_scalar("top_k", Status.BAD_CONFIG),
                Arg("top_p", Kind.REAL),
                Arg("out", Kind.ARRAY, written=True, ctype="unsigned char[:, ::1]"),
            ),
            _OVERLAP,
            messages={Status.BAD_MASK_LOGITS: _MASK_ROWS, Status.BAD_CONFIG: _config("top_k")},
            doc="out[b] = the top-k / top-p mask of softmax(mask_logits[contexts[b]])",
        ),
    ),
)


def _finish(status: int, kernel: str, args: tuple, public=None, **shown_as) -> None:
    """The error of a kernel's status (no-op for 0), through the contract of ``kernel``;
    ``shown_as`` replaces argument values for the message (ids with the rows the kernel skips
    set to 0), ``public`` renames arguments."""
    if status:
        values = CONTRACT[kernel].bind(*args)
        values.update(shown_as)
        raise_for_status(status, CONTRACT[kernel], values, public)


def _raise(status: int, bounds: dict | None = None) -> None:
    """The error of a ``tabular_mdp_step`` status (no-op for 0), through its contract;
    ``bounds``: ``{"actions": (actions with the inactive rows 0, number of actions)}``
    (:mod:`fastlmrl.tabular_mdp` calls the kernel itself)."""
    if status == 0:
        return
    args = {}
    if bounds and "actions" in bounds:
        args["actions"], args["n_actions"] = bounds["actions"]
    raise_for_status(status, CONTRACT["tabular_mdp_step"], args)


#: Default of ``TextGenerationEnv.rollout(reward=...)``: use the environment's reward function.
ENV_REWARD = object()


def _stream(seed, current):
    """The RandomStream a reset draws from (seed: None, int or RandomStream)."""
    if seed is None:
        if current is None:
            return RandomStream(int(np.random.SeedSequence().entropy) & ((1 << 64) - 1))
        return current
    if isinstance(seed, RandomStream):
        return seed
    resolve_seed(seed)  # validates the int (TypeError / ValueError naming "seed")
    return RandomStream(int(seed))


def _draw(bound: int, stream: RandomStream, mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(floor(u * bound) for every row (u = uniform at counter c + b; 0 where not mask), counters
    used = len(mask)).  Checks that the stream has them; advances nothing (the caller commits)."""
    n = mask.shape[0]
    key, counter = check_capacity(stream, n)
    out = np.zeros(n, dtype=np.int64)
    args = (bound, np.uint64(key), np.uint64(counter), mask.view(np.uint8), out)
    _finish(_kernels.draw_ids(*args), "draw_ids", args)
    return out, n


#: The largest order k: V**(k+1) <= 2**62 needs k <= 61 for V >= 2 (the kernels refuse more).
MAX_ORDER = 62
_INT64_MAX = 2**63 - 1
# bytes of per-sequence state an environment holds (ids, lengths, flags, copies made per step)
_STATE_BYTES = 64


def _num_envs(num_envs, per_env_elements: int = 1):
    """B, refused when its state ((B,) arrays, or the (B, T) token buffer) cannot be held."""
    n = check.positive_int(num_envs, "num_envs")
    check.size(
        n * per_env_elements,
        "num_envs",
        f"num_envs = {n}"
        if per_env_elements == 1
        else f"num_envs * max_new_tokens = {n} * {per_env_elements}",
        _STATE_BYTES if per_env_elements == 1 else 16,
    )
    return n


def _int64(x, name: str, minimum: int) -> int:
    """An int in [minimum, 2**63) (what a kernel's int64 argument can hold)."""
    v = check.positive_int(x, name, minimum)
    if v > _INT64_MAX:
        raise ValueError(f"{name} = {v} does not fit in int64 (must be < 2**63)")
    return v


def _state_array(value, name: str, shape: tuple, low: int, high: int) -> np.ndarray:
    """A state array assigned by the user: integers of ``shape`` in [low, high] (int64 copy)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if arr.size and (arr.min() < low or arr.max() > high):
        i = int(np.flatnonzero(((arr < low) | (arr > high)).reshape(-1))[0])
        raise ValueError(
            f"{name} (flat index {i}) = {int(arr.reshape(-1)[i])} is out of range [{low}, {high}]"
        )
    return arr.astype(np.int64)


def _state_property(name: str, high, doc: str) -> property:
    """A state array ``self._<name>``: read in place; assigning checks the value with
    :func:`_state_array` (integers of the array's shape in [0, ``high(self)``]) and copies it."""
    attr = "_" + name

    def get(self) -> np.ndarray:
        return getattr(self, attr)

    def set_(self, value) -> None:
        arr = getattr(self, attr)
        arr[:] = _state_array(value, name, arr.shape, 0, high(self))

    return property(get, set_, doc=doc)


def _call_reward(reward, tokens, lengths, prompt_ids):
    """``reward(tokens, lengths, prompt_ids)``; an exception of the user's function becomes a
    ValueError (TypeError for a TypeError) naming the reward function, chained to the original
    (the reward checks' own errors already name it)."""
    try:
        return reward(tokens, lengths, prompt_ids)
    except Exception as exc:
        if isinstance(exc, (ValueError, TypeError)) and "reward" in str(exc):
            raise
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(
            f"reward: the reward function {reward!r} raised {type(exc).__name__}: {exc}"
        ) from exc


def _reward_output(out, reward, shape: tuple) -> np.ndarray:
    """The float64 array of a reward function's result, checked (type, shape, finite)."""
    label = f"the reward function {reward!r}"
    if not isinstance(out, np.ndarray) or out.dtype.kind not in "biuf":
        what = f"dtype {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
        raise TypeError(f"{label} must return a real numpy array, got {what}")
    if out.shape != shape:
        raise ValueError(f"{label} returned shape {out.shape}, expected {shape}")
    out = out.astype(np.float64, copy=False)
    if not np.isfinite(out).all():
        i = int(np.flatnonzero(~np.isfinite(out).reshape(-1))[0])
        raise ValueError(
            f"{label} returned a non-finite reward {out.reshape(-1)[i]} (flat index {i})"
        )
    return out


# ---------------------------------------------------------------------------------------------
# ContextMDP


class ContextMDP:
    r"""A deterministic table MDP over contexts and tokens, batched: the textbook toy and its
    generalisation (Sutton & Barto 2018, §3.1; finite MDP with :math:`p(s', r \mid s, a) \in
    \{0, 1\}`).

    Parameters
    ----------
    next_context : (S, A) integer array, default the toy ``[[1, 1], [-1, -1]]``
        ``next_context[s, a]`` is the context after token ``a`` in context ``s``; ``-1`` means the
        episode ends after that token.  **Hidden END state:** when some entry is ``-1`` an extra
        absorbing terminal state ``END = S`` is appended, so observations, :attr:`num_states`,
        :meth:`to_arrays` and the Q tables of the trainers have ``S + 1`` rows (row ``S`` is END;
        :attr:`end_state` says whether there is one).  A table whose episodes end on a
        transition without an extra row, or with stochastic transitions, is a
        :class:`fastlmrl.TabularMDP` (outcomes carry a ``terminated`` flag; S rows for S states).
    reward : (S, A) real array, default ``[[1, 2], [1, 2]]``
        ``reward[s, a]`` = :math:`R_{t+1}` for :math:`S_t = s, A_t = a`.  Must be finite.
        float32 / float64 kept, other dtypes become float64; step rewards have this dtype.
    terminal : (S,) bool, optional
        Terminal contexts: entering one ends the episode; no decision is taken there (they may
        not be start contexts).
    start : int or sequence of ints, default 0
        The start context :math:`S_0`, or several drawn uniformly at each reset (counter
        ``c + b`` for row ``b``).
    num_envs : int, default 1
        Number of sequences B stepped together.
    max_steps : int, optional
        Time limit: an episode still running after ``max_steps`` steps is truncated.

    The default is the seed toy: contexts :math:`x_1 = 0 \to x_2 = 1`, tokens :math:`v_1, v_2`
    with rewards 1 and 2 in both contexts; the episode ends after acting in :math:`x_2`.  With
    :math:`\gamma = 0.9`, :math:`Q^*(x_2, \cdot) = (1, 2)` and
    :math:`Q^*(x_1, \cdot) = (1 + 0.9 \cdot 2, 2 + 0.9 \cdot 2) = (2.8, 3.8)`.
    :meth:`to_arrays` gives the dynamic-programming layout.
    """

    def __init__(
        self, next_context=None, reward=None, terminal=None, *, start=0, num_envs=1, max_steps=None
    ):
        if next_context is None and reward is None and terminal is None:
            next_context = [[1, 1], [-1, -1]]
            reward = [[1.0, 2.0], [1.0, 2.0]]
        elif next_context is None or reward is None:
            raise ValueError("give both next_context and reward (or neither, for the toy MDP)")
        nxt = np.asarray(next_context)
        if nxt.dtype.kind not in "iu":
            raise TypeError(f"next_context must hold integer context ids, got dtype {nxt.dtype}")
        if nxt.ndim != 2 or 0 in nxt.shape:
            raise ValueError(
                f"next_context must be a non-empty (S, A) array, got shape {nxt.shape}"
            )
        n_ctx, n_act = nxt.shape
        bad = (nxt < -1) | (nxt >= n_ctx)
        if bad.any():
            s, a = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"next_context[{s}, {a}] = {int(nxt[s, a])} is out of range [-1, {n_ctx})"
            )
        rew = np.asarray(reward)
        if rew.dtype.kind not in "biuf":
            raise TypeError(f"reward must hold real numbers, got dtype {rew.dtype}")
        if rew.shape != nxt.shape:
            raise ValueError(
                f"reward must have shape {nxt.shape} (like next_context), got {rew.shape}"
            )
        if rew.dtype not in check.FLOAT_DTYPES:
            rew = rew.astype(np.float64)
        if not np.isfinite(rew).all():
            s, a = (int(i) for i in np.argwhere(~np.isfinite(rew))[0])
            raise ValueError(f"reward[{s}, {a}] = {rew[s, a]} is not finite")
        if terminal is None:
            term = np.zeros(n_ctx, dtype=bool)
        else:
            term = check.flags(terminal, "terminal", n_ctx).view(np.bool_)
        self._num_contexts = n_ctx
        self._num_actions = n_act
        ends = nxt == -1
        self._end_state = n_ctx if ends.any() else None
        n_states = n_ctx + (1 if ends.any() else 0)
        table = np.empty((n_states, n_act), dtype=np.int64)
        table[:n_ctx] = np.where(ends, n_states - 1, nxt)
        rewards = np.zeros((n_states, n_act), dtype=rew.dtype)
        rewards[:n_ctx] = rew
        terminal_all = np.zeros(n_states, dtype=bool)
        terminal_all[:n_ctx] = term
        if self._end_state is not None:
            table[n_ctx] = n_ctx  # absorbing; never read (terminal)
            terminal_all[n_ctx] = True
        self._next = table
        self._reward = rewards
        self._terminal = terminal_all
        starts = np.atleast_1d(np.asarray(start))
        if starts.dtype.kind not in "iu" or starts.ndim != 1 or starts.size == 0:
            raise TypeError("start must be a context id or a non-empty sequence of context ids")
        starts = starts.astype(np.int64)
        if ((starts < 0) | (starts >= n_ctx)).any():
            raise ValueError(f"start holds a context id out of range [0, {n_ctx})")
        if terminal_all[starts].any():
            raise ValueError("start holds a terminal context")
        self._starts = starts
        self._num_envs = _num_envs(num_envs)
        self._max_steps = 0 if max_steps is None else _int64(max_steps, "max_steps", 1)
        self._contexts = np.zeros(self._num_envs, dtype=np.int64)
        self._steps = np.zeros(self._num_envs, dtype=np.int64)
        self._needs_reset = np.ones(self._num_envs, dtype=bool)
        self._stream = None

    # --- configuration (read-only) and state ----------------------------------------------------
    num_contexts = property(
        lambda self: self._num_contexts, doc="S, the number of contexts (rows of next_context)."
    )
    num_actions = property(lambda self: self._num_actions, doc="A, the number of tokens.")
    end_state = property(
        lambda self: self._end_state,
        doc="The id of the absorbing END state (S), or None without one.",
    )
    num_envs = property(lambda self: self._num_envs, doc="B, the number of sequences.")
    max_steps = property(lambda self: self._max_steps, doc="The time limit (0: none).")

    contexts = _state_property(
        "contexts",
        lambda self: self.num_states - 1,
        "(B,) int64 current contexts (writeable in place; assigning checks and copies).",
    )
    steps = _state_property(
        "steps",
        lambda self: _INT64_MAX - 1,
        "(B,) int64 steps taken in the current episodes (assigning checks and copies).",
    )

    # --- layout -------------------------------------------------------------------------------
    @property
    def num_states(self) -> int:
        """Number of observation values: the contexts plus the END state if there is one."""
        return self._next.shape[0]

    @property
    def reward_dtype(self):
        return self._reward.dtype

    def to_arrays(self):
        """``(next_state, reward, terminal)``: (S', A) int64, (S', A) reward dtype, (S',) bool.

        The deterministic dynamic-programming layout (as taken by
        ``fastlmrl.dynamic_programming.TokenMDP``): ``S' = num_states``; the END state (if any) is
        the last one, terminal, absorbing, reward 0.  Copies.
        """
        return self._next.copy(), self._reward.copy(), self._terminal.copy()

    def to_token_mdp(self):
        """The same MDP as a :class:`fastlmrl.dynamic_programming.TokenMDP`."""
        from .dynamic_programming import TokenMDP

        return TokenMDP(*self.to_arrays())

    # --- stepping -----------------------------------------------------------------------------
    def _plan_reset(self, mask, stream):
        """(start contexts (B,), counters drawn) for the rows in ``mask``; nothing committed
        (raises, e.g. on an exhausted stream, before any write)."""
        if self._starts.size == 1:
            return np.full(mask.shape[0], self._starts[0]), 0
        ids, used = _draw(self._starts.size, stream, mask)
        return self._starts[ids], used

    def _commit_reset(self, mask, stream, plan):
        starts, used = plan
        self._contexts[mask] = starts[mask]
        self._steps[mask] = 0
        self._needs_reset[mask] = False
        advance(stream, used)

    def _check_state(self):
        """The state arrays, re-checked at use (also after a user's in-place edits)."""
        for name in ("_contexts", "_steps"):
            arr = getattr(self, name)
            if (
                not isinstance(arr, np.ndarray)
                or arr.dtype != np.int64
                or arr.shape != (self._num_envs,)
                or not arr.flags.c_contiguous
                or not arr.flags.writeable
            ):
                raise ValueError(
                    f"the environment's {name[1:]} array was replaced or damaged: "
                    "assign a (num_envs,) integer array to it, or call reset()"
                )

    def reset(self, seed=None, options=None):
        """Reset every sequence: ``(obs (B,) int64 contexts S_0, info {})``.

        Consumes B counters of the stream when there are several start contexts.  An invalid
        ``seed`` (or an exhausted stream) raises before anything changes.
        """
        self._check_state()
        stream = _stream(seed, self._stream)
        mask = np.ones(self._num_envs, dtype=bool)
        plan = self._plan_reset(mask, stream)
        self._stream = stream
        self._commit_reset(mask, stream, plan)
        return self._contexts.copy(), {}

    def step(self, actions):
        """Step every sequence: ``(obs, rewards, terminated, truncated, info)`` ((B,) arrays).

        Next-step autoreset: a sequence that terminated or was truncated at the previous step is
        reset instead (its action is ignored; reward 0, both flags False).  Bad actions (or a
        stream with too few counters left for the resets) raise a ValueError and nothing changes.
        """
        if self._stream is None:
            raise RuntimeError("call reset() before step()")
        self._check_state()
        acts = check.ids(actions, "actions", self._num_envs)
        idx_dtype = acts.dtype
        nxt = self._next.astype(idx_dtype, copy=False)
        contexts = self._contexts.astype(idx_dtype)
        steps = self._steps.copy()
        active = ~self._needs_reset
        idle = self._needs_reset.copy()
        plan = self._plan_reset(idle, self._stream) if idle.any() else None
        rewards = np.empty(self._num_envs, dtype=self._reward.dtype)
        terminated = np.empty(self._num_envs, dtype=np.uint8)
        truncated = np.empty(self._num_envs, dtype=np.uint8)
        args = (
            nxt,
            self._reward,
            self._terminal.view(np.uint8),
            self._max_steps,
            acts,
            active.view(np.uint8),
            contexts,
            steps,
            rewards,
            terminated,
            truncated,
        )
        _finish(
            _kernels.context_mdp_step(*args),
            "context_mdp_step",
            args,
            {"next_state": "next_context"},
            actions=np.where(active, acts, 0),
        )
        self._contexts[:] = contexts
        self._steps[:] = steps
        terminated = terminated.view(bool)
        truncated = truncated.view(bool)
        if plan is not None:
            self._commit_reset(idle, self._stream, plan)
        self._needs_reset = terminated | truncated
        return self._contexts.copy(), rewards, terminated, truncated, {}


# ---------------------------------------------------------------------------------------------
# TextGenerationEnv


def _deprecated_field(old: str, ours: str) -> None:
    import warnings

    warnings.warn(
        f"RolloutBatch.{old} is deprecated; use RolloutBatch.{ours}",
        DeprecationWarning,
        stacklevel=3,
    )


@dataclass
class RolloutBatch:
    """The arrays a policy-gradient trainer needs from :meth:`TextGenerationEnv.rollout`.

    Time index ``t`` = position in the response: ``contexts[b, t]`` is :math:`S_t`,
    ``actions[b, t]`` is :math:`A_t` (the token emitted), ``rewards[b, t]`` is :math:`R_{t+1}`;
    entries with ``valid[b, t] == False`` (t >= lengths[b]) are padding (0).
    """

    contexts: np.ndarray  #: (B, T) int64, S_t
    actions: np.ndarray  #: (B, T) int64, A_t
    log_probs: np.ndarray  #: (B, T) logits dtype, log mu(A_t | S_t) of the behaviour policy
    rewards: np.ndarray  #: (B, T) float64, R_{t+1} (KL-shaped when a reference was given)
    valid: np.ndarray  #: (B, T) bool
    lengths: np.ndarray  #: (B,) int64, number of tokens generated
    terminated: np.ndarray  #: (B,) bool, ended with EOS
    truncated: np.ndarray  #: (B,) bool, reached max_new_tokens without EOS
    prompt_ids: np.ndarray  #: (B,) int64
    final_contexts: np.ndarray  #: (B,) int64, S_{L_b} (context after the last token)
    scores: np.ndarray  #: (B,) float64, the task reward summed over the sequence
    vocab_size: int  #: V, the environment's number of token ids (actions)
    order: int  #: k: contexts are k-grams, ids in [0, V**k) (see :meth:`next_contexts`)
    ref_log_probs: np.ndarray | None = None  #: (B, T) float64 when a reference was given
    action_mask_table: np.ndarray | None = None  #: (V**k, V) bool when top_k / top_p masking

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def logprobs(self) -> np.ndarray:
        """Deprecated spelling of :attr:`log_probs`."""
        _deprecated_field("logprobs", "log_probs")
        return self.log_probs

    @property
    def ref_logprobs(self):
        """Deprecated spelling of :attr:`ref_log_probs`."""
        _deprecated_field("ref_logprobs", "ref_log_probs")
        return self.ref_log_probs

    def next_contexts(self) -> np.ndarray:
        """(B, T) int64: :math:`S_{t+1} = (S_t V + A_t) \\bmod V^k` (0 on padding)."""
        if not 1 <= self.order <= MAX_ORDER:
            raise ValueError(f"order = {self.order} is out of range [1, {MAX_ORDER}]")
        n_states = self.vocab_size**self.order
        out = (self.contexts * self.vocab_size + self.actions) % n_states
        out[~self.valid] = 0
        return out

    def action_masks(self) -> np.ndarray:
        """(B, T, V) bool: the tokens the sampler could choose at each step (masking only)."""
        if self.action_mask_table is None:
            raise ValueError("this rollout used no action mask (top_k=0, top_p=1)")
        return self.action_mask_table[self.contexts] & self.valid[:, :, None]


def _prompt_set(prompts):
    """(flat tokens int64, offsets int64) of a list of 1-D token sequences."""
    if isinstance(prompts, np.ndarray) and prompts.ndim == 2:
        prompts = list(prompts)
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise TypeError("prompts must be a non-empty list of token-id sequences")
    seqs = []
    for i, p in enumerate(prompts):
        arr = np.asarray(p)
        if arr.size == 0:
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iu" or arr.ndim != 1:
            raise TypeError(f"prompts[{i}] must be a 1-D sequence of integer token ids")
        seqs.append(arr.astype(np.int64))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([s.size for s in seqs])
    tokens = np.concatenate(seqs) if offsets[-1] else np.zeros(0, dtype=np.int64)
    return tokens, offsets


def _logsumexp_rows(table, rows):
    x = table[rows].astype(np.float64)
    m = x.max(axis=1)
    return m + np.log(np.exp(x - m[:, None]).sum(axis=1))


class TextGenerationEnv:
    r"""B token sequences generated at once from prompts (the token MDP of LM fine-tuning).

    Parameters
    ----------
    prompts : list of 1-D integer sequences (or a 2-D array, one prompt per row)
        The prompt set; each episode continues one prompt (drawn uniformly at reset: prompt
        ``floor(u * P)`` with ``u`` the uniform at counter ``c + b``, or given explicitly).
        Prompts may be empty.
    vocab_size : int
        ``V``, the number of token ids (``bos_id``, ``eos_id`` and every prompt token included).
    order : int, default 2
        ``k``: the state is the k-gram context of the last ``k`` tokens (module docstring), so a
        tabular policy is a (V**k, V) logits table.  ``V**(k+1) <= 2**62`` (so ``k <= 62``).
    max_new_tokens : int, default 64
        ``T``: an episode that has generated ``T`` tokens without EOS is truncated.
    num_envs : int, default 1
        ``B``.  ``B * T`` is at most 2**31 and must fit in memory (refused at once otherwise).
    bos_id : int, default 0
        Left padding of the history (ids as in :mod:`fastlmrl.tokenizers`).
    eos_id : int or None, default 1
        Emitting it terminates the episode (None: episodes only end by truncation).
    reward : RewardFunction or callable, optional
        The task reward (:mod:`fastlmrl.rewards`), computed over the generated tokens: per token
        or terminal (paid at the last token, also for a truncated episode).  None: reward 0.

    Configuration attributes (``vocab_size``, ``order``, ``num_envs``, ``prompt_tokens``, ...) are
    read-only.  State attributes: ``contexts`` (B,), ``tokens`` (B, T) generated token buffer,
    ``lengths`` (B,), ``prompt_ids`` (B,); assigning one checks its shape, dtype and range and
    copies it in, and every method re-checks the state before use (ValueError naming it).
    :meth:`sequences` gives the full token history (prompt + response).  Step semantics: action
    ``a`` in context ``c`` is appended to the buffer, the context becomes
    :math:`(cV + a) \bmod V^k`; terminated when ``a == eos_id``, else truncated when the buffer
    holds ``T`` tokens; never both.
    """

    def __init__(
        self,
        prompts,
        vocab_size,
        order=2,
        max_new_tokens=64,
        num_envs=1,
        bos_id=0,
        eos_id=1,
        reward=None,
    ):
        V = check.positive_int(vocab_size, "vocab_size")
        k = check.positive_int(order, "order")
        if k > MAX_ORDER:  # refused before any power is computed
            raise ValueError(
                f"order = {k} is too large: context ids of more than {MAX_ORDER} "
                "tokens do not fit in int64"
            )
        if V ** (k + 1) > 2**62:
            raise ValueError(
                f"vocab_size**(order + 1) = {V}**{k + 1} "
                "does not fit context ids in int64 (limit 2**62)"
            )
        self._vocab_size, self._order, self._num_contexts = V, k, V**k
        self._max_new_tokens = check.positive_int(max_new_tokens, "max_new_tokens")
        check.size(
            self._max_new_tokens, "max_new_tokens", f"max_new_tokens = {self._max_new_tokens}", 8
        )
        self._num_envs = _num_envs(num_envs, self._max_new_tokens)
        self._bos_id = check.positive_int(bos_id, "bos_id", 0)
        if self._bos_id >= V:
            raise ValueError(f"bos_id = {bos_id} is out of the vocabulary [0, {V})")
        if eos_id is None:
            self._eos_id = -1
        else:
            self._eos_id = check.positive_int(eos_id, "eos_id", 0)
            if self._eos_id >= V:
                raise ValueError(f"eos_id = {eos_id} is out of the vocabulary [0, {V})")
        tokens, offsets = _prompt_set(prompts)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= V):
            bad = np.flatnonzero((tokens < 0) | (tokens >= V))[0]
            p = int(np.searchsorted(offsets, bad, side="right") - 1)
            raise ValueError(
                f"prompts[{p}] holds token id {int(tokens[bad])}, out of the vocabulary [0, {V})"
            )
        self._prompt_tokens, self._prompt_offsets = tokens, offsets
        self._num_prompts = offsets.shape[0] - 1
        self._reward = self._check_reward(reward)
        n = self._num_envs
        self._contexts = np.zeros(n, dtype=np.int64)
        self._lengths = np.zeros(n, dtype=np.int64)
        self._tokens = np.zeros((n, self._max_new_tokens), dtype=np.int64)
        self._prompt_ids = np.zeros(n, dtype=np.int64)
        self._needs_reset = np.ones(n, dtype=bool)
        self._stream = None
        self._scratch = None

    # --- configuration (read-only) --------------------------------------------------------------
    vocab_size = property(lambda self: self._vocab_size, doc="V, the number of token ids.")
    order = property(lambda self: self._order, doc="k, the context length.")
    num_contexts = property(lambda self: self._num_contexts, doc="V**k, the number of contexts.")
    max_new_tokens = property(lambda self: self._max_new_tokens, doc="T, the time limit.")
    num_envs = property(lambda self: self._num_envs, doc="B, the number of sequences.")
    bos_id = property(lambda self: self._bos_id, doc="The left-padding token id.")
    eos_id = property(lambda self: self._eos_id, doc="The end-of-sequence id (-1: none).")
    num_prompts = property(lambda self: self._num_prompts, doc="P, the number of prompts.")

    @property
    def prompt_tokens(self) -> np.ndarray:
        """The prompts' tokens, concatenated (a read-only int64 view)."""
        view = self._prompt_tokens.view()
        view.flags.writeable = False
        return view

    @property
    def prompt_offsets(self) -> np.ndarray:
        """(P + 1,) offsets of the prompts in :attr:`prompt_tokens` (a read-only int64 view)."""
        view = self._prompt_offsets.view()
        view.flags.writeable = False
        return view

    @property
    def reward(self):
        """The task reward (a RewardFunction or None); assigning checks it against V."""
        return self._reward

    @reward.setter
    def reward(self, value):
        self._reward = self._check_reward(value)

    # --- state (writeable in place; assigning checks and copies) --------------------------------
    contexts = _state_property(
        "contexts", lambda self: self._num_contexts - 1, "(B,) int64 current contexts."
    )
    lengths = _state_property(
        "lengths", lambda self: self._max_new_tokens, "(B,) int64 numbers of tokens generated."
    )
    tokens = _state_property(
        "tokens",
        lambda self: self._vocab_size - 1,
        "(B, T) int64 generated tokens (0 after each sequence's length).",
    )
    prompt_ids = _state_property(
        "prompt_ids", lambda self: self.num_prompts - 1, "(B,) int64 prompt of each sequence."
    )

    def _check_reward(self, reward):
        reward = as_reward(reward)
        if reward is not None and reward.max_token_id() >= self._vocab_size:
            raise ValueError(
                f"vocabulary mismatch: the reward {reward!r} refers to token id "
                f"{reward.max_token_id()} but vocab_size is {self._vocab_size}"
            )
        return reward

    def _check_state(self):
        """The state arrays, re-checked at use (shapes and dtypes; the kernels check ranges)."""
        n = self._num_envs
        for name, shape in (
            ("_contexts", (n,)),
            ("_lengths", (n,)),
            ("_tokens", (n, self._max_new_tokens)),
            ("_prompt_ids", (n,)),
        ):
            arr = getattr(self, name)
            if (
                type(arr) is not np.ndarray
                or arr.dtype != np.int64
                or arr.shape != shape
                or not (arr.flags.c_contiguous and arr.flags.writeable)
            ):
                raise ValueError(
                    f"the environment's {name[1:]} array was replaced or damaged: "
                    f"assign a {shape} integer array to it, or call reset()"
                )

    def _check_prompt_ids(self):
        """The prompt ids (only the reward function and :meth:`sequences` read them)."""
        ids = self._prompt_ids
        if self._num_envs and (ids.min() < 0 or ids.max() >= self._num_prompts):
            i = int(np.flatnonzero((ids < 0) | (ids >= self._num_prompts))[0])
            raise ValueError(
                f"prompt_ids[{i}] = {int(ids[i])} is out of range [0, {self._num_prompts})"
            )

    # --- helpers ------------------------------------------------------------------------------
    def prompt(self, i: int) -> np.ndarray:
        """The tokens of prompt ``i`` (a copy)."""
        i = check.positive_int(i, "i", 0)
        if i >= self.num_prompts:
            raise ValueError(f"i must be < {self.num_prompts}")
        return self._prompt_tokens[self._prompt_offsets[i] : self._prompt_offsets[i + 1]].copy()

    def context_of(self, history) -> int:
        """Context id of the token history ``history`` (prompt + response, without the padding)."""
        hist = np.asarray(history)
        if hist.size == 0:
            hist = hist.astype(np.int64)
        if hist.dtype.kind not in "iu" or hist.ndim != 1:
            raise TypeError("history must be a 1-D sequence of integer token ids")
        if hist.size and (hist.min() < 0 or hist.max() >= self._vocab_size):
            raise ValueError(f"history holds a token id out of [0, {self._vocab_size})")
        ctx = 0
        for t in [self._bos_id] * self._order + hist[-self._order :].tolist():
            ctx = (ctx * self._vocab_size + t) % self._num_contexts
        return ctx

    def sequences(self) -> list:
        """Full token histories (prompt + generated tokens) of the B sequences, as 1-D arrays."""
        self._check_state()
        self._check_prompt_ids()
        return [
            np.concatenate([self.prompt(int(p)), self._tokens[b, : self._lengths[b]]])
            for b, p in enumerate(self._prompt_ids)
        ]

    def _prompt_ids_arg(self, prompt_ids, n):
        ids = check.ids(prompt_ids, "prompt_ids", n).astype(np.int64, copy=False)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_prompts):
            i = int(np.flatnonzero((ids < 0) | (ids >= self.num_prompts))[0])
            raise ValueError(
                f"prompt_ids[{i}] = {int(ids[i])} is out of range [0, {self.num_prompts})"
            )
        return ids

    def _plan_reset(self, mask, stream, prompt_ids=None):
        """The reset of the rows in ``mask`` computed aside: ``(prompt ids, contexts, lengths,
        counters drawn)`` (B,) each; raises before any write (exhausted stream, bad prompts)."""
        if prompt_ids is None:
            ids, used = _draw(self.num_prompts, stream, mask)
        else:
            ids, used = prompt_ids, 0
        new_ids = np.where(mask, ids, self._prompt_ids)
        contexts, lengths = self._contexts.copy(), self._lengths.copy()
        args = (
            self._prompt_tokens,
            self._prompt_offsets,
            self._vocab_size,
            self._order,
            self._bos_id,
            new_ids,
            mask.view(np.uint8),
            contexts,
            lengths,
        )
        _finish(_kernels.text_env_reset(*args), "text_env_reset", args)
        return new_ids, contexts, lengths, used

    def _commit_reset(self, mask, stream, plan):
        new_ids, contexts, lengths, used = plan
        self._prompt_ids[:] = new_ids
        self._contexts[:] = contexts
        self._lengths[:] = lengths
        self._tokens[mask] = 0
        self._needs_reset[mask] = False
        advance(stream, used)

    # --- Gymnasium-style API --------------------------------------------------------------------
    def reset(self, seed=None, options=None, prompt_ids=None):
        """Reset every sequence: ``(obs, info)`` with ``obs`` the (B,) int64 contexts.

        Prompts are drawn (B counters of the stream) unless ``prompt_ids`` (B,) is given (also
        accepted as ``options={"prompt_ids": ...}``).  ``info["prompt_ids"]``: the prompts used.
        A bad argument (or an exhausted stream) raises before anything changes.
        """
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
        if options and "prompt_ids" in options:
            if prompt_ids is not None:
                raise ValueError("give prompt_ids once (argument or options)")
            prompt_ids = options["prompt_ids"]
        if prompt_ids is not None:
            prompt_ids = self._prompt_ids_arg(prompt_ids, self._num_envs)
        self._check_state()
        stream = _stream(seed, self._stream)
        mask = np.ones(self._num_envs, dtype=bool)
        plan = self._plan_reset(mask, stream, prompt_ids)
        self._stream = stream
        self._commit_reset(mask, stream, plan)
        return self._contexts.copy(), {"prompt_ids": self._prompt_ids.copy()}

    def step(self, actions):
        """Append ``actions[b]`` to every running sequence (next-step autoreset for finished ones).

        Returns ``(obs, rewards, terminated, truncated, info)``: (B,) int64 contexts, float64
        rewards (the reward function's value for the new token; a terminal reward is paid at the
        step that ends the episode), bool flags, ``info["prompt_ids"]``.  Bad actions, a reward
        function that raises or returns a bad result (wrong type or shape, non-finite), or a
        stream with too few counters left for the resets raise and leave the environment exactly
        as it was.
        """
        if self._stream is None:
            raise RuntimeError("call reset() before step()")
        self._check_state()
        acts = check.ids(actions, "actions", self._num_envs)
        for name in ("contexts", "lengths", "tokens"):  # written in place by the kernel
            if np.may_share_memory(acts, getattr(self, "_" + name)):
                raise ValueError(
                    f"actions shares memory with env.{name}, which step writes in "
                    "place; pass a copy of actions"
                )
        active = ~self._needs_reset
        idle = self._needs_reset.copy()
        plan = self._plan_reset(idle, self._stream) if idle.any() else None
        reward = self._reward
        if reward is not None:  # the only step that can fail after the kernel's writes
            self._check_prompt_ids()
            rows = np.arange(self._num_envs)
            written = np.minimum(self._lengths, self._max_new_tokens - 1)  # where a token goes
            saved = (self._contexts.copy(), self._lengths.copy(), self._tokens[rows, written])
        terminated = np.empty(self._num_envs, dtype=np.uint8)
        truncated = np.empty(self._num_envs, dtype=np.uint8)
        args = (
            self._vocab_size,
            self._order,
            self._eos_id,
            self._max_new_tokens,
            acts,
            active.view(np.uint8),
            self._contexts,
            self._lengths,
            self._tokens,
            terminated,
            truncated,
        )
        _finish(
            _kernels.text_env_step(*args), "text_env_step", args, actions=np.where(active, acts, 0)
        )
        terminated = terminated.view(bool)
        truncated = truncated.view(bool)
        if reward is None:
            rewards = np.zeros(self._num_envs, dtype=np.float64)
        else:
            try:
                rewards = self._step_rewards(reward, active, terminated | truncated)
            except BaseException:  # the reward function failed: undo the kernel's writes
                self._contexts[:], self._lengths[:] = saved[0], saved[1]
                self._tokens[rows, written] = saved[2]
                raise
        if plan is not None:
            # the kernel left the idle rows untouched: their planned reset still applies
            new_ids, contexts, lengths, used = plan
            contexts[active] = self._contexts[active]
            lengths[active] = self._lengths[active]
            self._commit_reset(idle, self._stream, (new_ids, contexts, lengths, used))
        self._needs_reset = terminated | truncated
        return (
            self._contexts.copy(),
            rewards,
            terminated,
            truncated,
            {"prompt_ids": self._prompt_ids.copy()},
        )

    def _step_rewards(self, reward, active, done):
        rewards = np.zeros(self._num_envs, dtype=np.float64)
        if reward.per_token:
            rows = np.flatnonzero(active)
            if rows.size:
                r = _reward_output(
                    _call_reward(
                        reward, self._tokens[rows], self._lengths[rows], self._prompt_ids[rows]
                    ),
                    reward,
                    (rows.size, self._max_new_tokens),
                )
                rewards[rows] = r[np.arange(rows.size), self._lengths[rows] - 1]
        else:
            rows = np.flatnonzero(done)
            if rows.size:
                rewards[rows] = _reward_output(
                    _call_reward(
                        reward, self._tokens[rows], self._lengths[rows], self._prompt_ids[rows]
                    ),
                    reward,
                    (rows.size,),
                )
        return rewards

    def action_mask(self, mask_logits, top_k=0, top_p=1.0) -> np.ndarray:
        """(B, V) bool: the top-k / top-p tokens of the masking policy at the current contexts
        (see :meth:`rollout`)."""
        table = self._policy_table(mask_logits, "mask_logits")
        top_k, top_p = self._mask_params(top_k, top_p)
        self._check_state()
        out = np.empty((self.num_envs, self.vocab_size), dtype=np.uint8)
        args = (table, self._contexts, top_k, top_p, out)
        _finish(_kernels.topk_topp_mask(*args), "topk_topp_mask", args)
        return out.view(bool)

    # --- rollouts -------------------------------------------------------------------------------
    def _policy_table(self, logits, name):
        table = check.table(logits, name, writeable=False)
        if table.shape[1] != self.vocab_size:
            raise ValueError(
                f"vocabulary mismatch: {name} has {table.shape[1]} columns (tokens) "
                f"but the environment's vocab_size is {self.vocab_size}"
            )
        if table.shape[0] != self.num_contexts:
            raise ValueError(
                f"{name} has {table.shape[0]} rows but the environment has "
                f"vocab_size**order = {self.vocab_size}**{self.order} = "
                f"{self.num_contexts} contexts"
            )
        return table

    def _mask_params(self, top_k, top_p):
        top_k = check.positive_int(top_k, "top_k", 0)
        if top_k > self.vocab_size:
            raise ValueError(f"top_k must be <= vocab_size = {self.vocab_size}, got {top_k}")
        top_p = check.real(top_p, "top_p", 0.0, 1.0, low_open=True)
        return top_k, top_p

    def _scratch_for(self, use_mask):
        """Row-cache scratch of the rollout kernel, kept between calls (not thread-safe)."""
        n_states, n_vocab = self.num_contexts, self.vocab_size
        if self._scratch is None:
            self._scratch = (
                np.empty((n_states, n_vocab)),
                np.empty((n_states, 3)),
                np.empty(n_states, dtype=np.uint8),
                None,
            )
        cdf, stats, built, mask = self._scratch
        if use_mask and mask is None:
            mask = np.empty((n_states, n_vocab), dtype=np.uint8)
            self._scratch = (cdf, stats, built, mask)
        return cdf, stats, built, (mask if use_mask else np.empty((0, n_vocab), np.uint8))

    @check.renamed(deprecated={"kl_beta": "kl_coef"}, ecosystem={"beta": "kl_coef"})
    def rollout(
        self,
        logits,
        seed,
        *,
        prompt_ids=None,
        num_sequences=None,
        max_new_tokens=None,
        mask_logits=None,
        top_k=0,
        top_p=1.0,
        reward=ENV_REWARD,
        ref_logits=None,
        kl_coef=0.0,
    ) -> RolloutBatch:
        r"""Generate B fresh episodes with a tabular softmax policy in one kernel call.

        ``logits`` (V**k, V) float32/float64 is the behaviour policy :math:`\mu(a \mid s) \propto
        \exp(\text{logits}[s, a])`.  Token ``t`` of sequence ``b`` is drawn by inverse CDF in
        float64 exactly as :func:`fastlmrl.boltzmann` with temperature 1 (``w_a = exp(x_a - m)``,
        first ``a`` with ``u * sum w < sum_{b<=a} w``) from the uniform at counter
        ``c + B_draw + b * T + t`` (``B_draw = B`` when prompts are drawn, at counters ``c + b``,
        else 0); the call consumes ``B_draw + B * T`` counters of ``seed``.  The state of
        :meth:`reset` / :meth:`step` is not touched.

        Action masks (NLPO, Ramamurthy et al. 2023; nucleus sampling, Holtzman et al. 2020): with
        ``top_k > 0`` and/or ``top_p < 1`` only the tokens kept by the masking policy
        ``mask_logits`` (default ``logits``) are sampled, renormalised: in context ``s`` tokens
        are taken in decreasing ``mask_logits[s]`` order (ties: lowest id) until ``top_k`` are
        kept or their softmax mass reaches ``top_p`` (tokens of probability 0 never kept).
        ``log_probs`` are then under the masked behaviour policy and the batch carries
        ``action_mask_table`` (rows of unvisited contexts are all False).

        Rewards: ``reward`` (default: the environment's; None: no reward) over the generated
        tokens (:class:`RolloutBatch` ``scores`` = their sum per sequence); a terminal
        score is paid at the last token.  With ``ref_logits`` (a reference policy table) the
        per-token rewards are KL-shaped, :math:`r_t - \beta(\log\mu(a_t|s_t) -
        \log\pi_{\mathrm{ref}}(a_t|s_t))` with :math:`\beta` = ``kl_coef``
        (:func:`fastlmrl.rewards.kl_shaped`; TRL's ``beta`` is accepted, the former spelling
        ``kl_beta`` is deprecated).

        NaN or +inf in a logits row (or no finite allowed entry) raises ValueError; the row is
        checked when the rollout first visits it (a full-table pre-pass would cost O(V**k * V)).
        """
        table = self._policy_table(logits, "logits")
        top_k, top_p = self._mask_params(top_k, top_p)
        use_mask = top_k > 0 or top_p < 1.0
        if mask_logits is None:
            mask_table = table
        else:
            mask_table = self._policy_table(mask_logits, "mask_logits")
            if mask_table.dtype != table.dtype:
                mask_table = mask_table.astype(table.dtype)
        reward = self.reward if reward is ENV_REWARD else self._check_reward(reward)
        ref = None if ref_logits is None else self._policy_table(ref_logits, "ref_logits")
        kl_coef = check.real(kl_coef, "kl_coef", 0.0)
        horizon = (
            self.max_new_tokens
            if max_new_tokens is None
            else check.positive_int(max_new_tokens, "max_new_tokens")
        )
        if prompt_ids is not None:
            if num_sequences is not None:
                raise ValueError("give prompt_ids or num_sequences, not both")
            ids = self._prompt_ids_arg(prompt_ids, None)
            n = ids.shape[0]
            n_draw = 0
        else:
            n = (
                self.num_envs
                if num_sequences is None
                else check.positive_int(num_sequences, "num_sequences", 0)
            )
            n_draw = n
        check.size(horizon, "max_new_tokens", f"max_new_tokens = {horizon}", 40)
        check.size(
            n * horizon,
            "num_sequences" if prompt_ids is None else "prompt_ids",
            f"sequences * max_new_tokens = {n} * {horizon}",
            40,
        )
        key, counter = check_capacity(seed, n_draw + n * horizon)  # before any write
        if prompt_ids is None:
            ids = np.zeros(n, dtype=np.int64)
            draw = (self.num_prompts, np.uint64(key), np.uint64(counter), np.ones(n, np.uint8), ids)
            _finish(_kernels.draw_ids(*draw), "draw_ids", draw)
        contexts = np.empty((n, horizon), dtype=np.int64)
        actions = np.empty((n, horizon), dtype=np.int64)
        logprobs = np.empty((n, horizon), dtype=table.dtype)
        valid = np.empty((n, horizon), dtype=np.uint8)
        lengths = np.empty(n, dtype=np.int64)
        terminated = np.empty(n, dtype=np.uint8)
        truncated = np.empty(n, dtype=np.uint8)
        final = np.empty(n, dtype=np.int64)
        cdf, stats, built, masks = self._scratch_for(use_mask)
        args = (
            table,
            mask_table,
            top_k,
            top_p,
            self._prompt_tokens,
            self._prompt_offsets,
            ids,
            self.order,
            self.bos_id,
            self.eos_id,
            np.uint64(key),
            np.uint64((counter + n_draw) & MASK64),
            contexts,
            actions,
            logprobs,
            valid,
            lengths,
            terminated,
            truncated,
            final,
            cdf,
            stats,
            built,
            masks,
        )
        _finish(_kernels.text_env_rollout(*args), "text_env_rollout", args)
        valid = valid.view(bool)
        if reward is None:
            rewards = np.zeros((n, horizon))
        else:
            r = _reward_output(
                _call_reward(reward, actions, lengths, ids),
                reward,
                (n, horizon) if reward.per_token else (n,),
            )
            rewards = r if reward.per_token else terminal_to_per_token(r, lengths, horizon)
        scores = rewards.sum(axis=1)
        ref_lp = None
        if ref is not None:
            ref_lp = self._ref_logprobs(ref, contexts, actions, valid)
            rewards = kl_shaped(rewards, logprobs, ref_lp, kl_coef, valid)
        advance(seed, n_draw + n * horizon)
        return RolloutBatch(
            contexts=contexts,
            actions=actions,
            log_probs=logprobs,
            rewards=rewards,
            valid=valid,
            lengths=lengths,
            terminated=terminated.view(bool),
            truncated=truncated.view(bool),
            prompt_ids=ids,
            final_contexts=final,
            scores=scores,
            vocab_size=self.vocab_size,
            order=self.order,
            ref_log_probs=ref_lp,
            action_mask_table=masks.view(bool).copy() if use_mask else None,
        )

    @staticmethod
    def _ref_logprobs(ref, contexts, actions, valid):
        """log softmax(ref)[s, a] at the valid (s, a) pairs, float64 (0 on padding)."""
        rows = np.unique(contexts[valid])
        lse = np.zeros(ref.shape[0])
        if rows.size:
            sub = ref[rows]
            if (
                np.isnan(sub).any()
                or np.isposinf(sub).any()
                or not np.isfinite(sub.max(axis=1)).all()
            ):
                raise ValueError("ref_logits: a visited row holds NaN or +inf, or no finite entry")
            lse[rows] = _logsumexp_rows(ref, rows)
        out = ref[contexts, actions].astype(np.float64) - lse[contexts]
        out[~valid] = 0.0
        return out
