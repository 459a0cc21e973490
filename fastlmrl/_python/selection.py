"""Reference action selection: greedy, epsilon-greedy, Boltzmann (plain Python)."""

__all__ = ["boltzmann", "epsilon_greedy", "epsilon_greedy_one", "greedy"]
import math
from operator import index

# status codes: fastlmrl._status.Status (plain ints, as the Numba kernels bind them)
from .._status import (
    BAD_EPSILON,  # epsilon outside [0, 1] (or NaN)
    BAD_SHAPES,
    BAD_STATES,
    BAD_TEMPERATURE,  # temperature not a finite number > 0
    OVERLAPPING_ARRAYS,
)
from ..rng import uniform
from ._common import first_out_of_range, row_argmax, row_max
from .td_learning import kernel_types, written_overlaps


def _shapes_ok(states, out):
    """The shape check (first): one output per state."""
    return out.shape[0] == states.shape[0]


def greedy(q, states, out, num_threads):
    """out[i] = argmax_a q[states[i], a] (ties -> lowest index). Returns 1 if a state is out of
    range."""
    kernel_types((("out", out),), (("states", states),))
    if not _shapes_ok(states, out):
        return BAD_SHAPES
    if written_overlaps(out, q, states):
        return OVERLAPPING_ARRAYS
    if first_out_of_range(states.tolist(), q.shape[0]):
        return BAD_STATES
    for i, s in enumerate(states.tolist()):
        out[i] = row_argmax(q[s].tolist())
    return 0


def epsilon_greedy(q, states, epsilon, key, counter, out, num_threads):
    """Item i uses counter + 2i (explore?) and counter + 2i + 1 (which action)."""
    kernel_types((("out", out),), (("states", states),))
    if not _shapes_ok(states, out):
        return BAD_SHAPES
    if written_overlaps(out, q, states):
        return OVERLAPPING_ARRAYS
    if not 0.0 <= epsilon <= 1.0:
        return BAD_EPSILON
    key, counter = int(key), int(counter)
    if first_out_of_range(states.tolist(), q.shape[0]):
        return BAD_STATES
    n_actions = q.shape[1]
    for i, s in enumerate(states.tolist()):
        c = counter + 2 * i
        if uniform(key, c) < epsilon:
            out[i] = int(uniform(key, c + 1) * n_actions)
        else:
            out[i] = row_argmax(q[s].tolist())
    return 0


def epsilon_greedy_one(q, state, epsilon, key, counter):
    """One state: ``epsilon_greedy`` of a batch of one, with O(1) checks (epsilon, then state).

    Returns ``(status, action)`` (action 0 when the status is not 0); draws the uniforms at
    ``counter`` (explore?) and ``counter + 1`` (which action), like item 0 of the batch.
    """
    s = index(state)  # TypeError for a non-integer
    if not 0.0 <= epsilon <= 1.0:
        return BAD_EPSILON, 0
    if not 0 <= s < q.shape[0]:
        return BAD_STATES, 0
    key, counter = int(key), int(counter)
    if uniform(key, counter) < epsilon:
        return 0, int(uniform(key, counter + 1) * q.shape[1])
    return 0, row_argmax(q[s].tolist())


def boltzmann(q, states, temperature, key, counter, out, num_threads):
    """Sample a ~ exp(q[s, a] / temperature) by inverse CDF; item i uses counter + i."""
    kernel_types((("out", out),), (("states", states),))
    if not _shapes_ok(states, out):
        return BAD_SHAPES
    if written_overlaps(out, q, states):
        return OVERLAPPING_ARRAYS
    if not 0.0 < temperature < math.inf:
        return BAD_TEMPERATURE
    key, counter = int(key), int(counter)
    if first_out_of_range(states.tolist(), q.shape[0]):
        return BAD_STATES
    for i, s in enumerate(states.tolist()):
        row = q[s].tolist()
        out[i] = _sample_row(row, temperature, uniform(key, counter + i))
    return 0


def _sample_row(row, temperature, u):
    m = row_max(row)
    total = 0.0
    for v in row:
        total += math.exp((v - m) / temperature)
    target = u * total
    cumulative = 0.0
    last_positive = 0
    for a, v in enumerate(row):
        w = math.exp((v - m) / temperature)
        if w > 0.0:
            last_positive = a
        cumulative += w
        if target < cumulative:
            return a
    return last_positive
