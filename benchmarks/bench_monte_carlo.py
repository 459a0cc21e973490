"""Monte Carlo control (first- and every-visit) and episode returns, backend × kernel × size.

Episodes of 32 steps with random (state, action) pairs; the raw kernels are timed with the scratch
and outputs preallocated (what the public wrapper adds is O(T) NumPy validation).  ``items`` =
steps per call.  The reference runs on a smaller batch (``BATCH``).

    pytest benchmarks/bench_monte_carlo.py --benchmark-enable --benchmark-group-by=group \
        --benchmark-columns=mean,ops
"""

import numpy as np
import pytest
from conftest import BATCH, measure, random_table, size_id

SIZES = [(1024, 16), (65536, 64)]
EPISODE_LENGTH = 32


def episodes(size, n_steps, seed=0):
    rng = np.random.default_rng(seed)
    n_steps -= n_steps % EPISODE_LENGTH
    offsets = np.arange(0, n_steps + 1, EPISODE_LENGTH, dtype=np.int64)
    states = rng.integers(0, size[0], n_steps)
    actions = rng.integers(0, size[1], n_steps)
    rewards = rng.standard_normal(n_steps)
    return states, actions, rewards, offsets


@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("first_visit", [True, False], ids=["first_visit", "every_visit"])
def test_mc_control_update(benchmark, kernels, size, first_visit):
    name, module = kernels
    states, actions, rewards, offsets = episodes(size, BATCH[name])
    q = random_table(size, np.float64)
    counts = np.zeros(size, np.int64)
    h = 2
    while h < 2 * EPISODE_LENGTH:
        h *= 2
    keys, first = np.empty(h, np.int64), np.empty(h, np.int64)
    out = np.empty(states.shape[0])
    status = measure(
        benchmark,
        module.mc_control_update,
        q,
        states,
        actions,
        rewards,
        offsets,
        0.99,
        first_visit,
        0.0,
        counts,
        keys,
        first,
        out,
        items=states.shape[0],
        group=f"mc_control_update {'first' if first_visit else 'every'}-visit {size_id(size)}",
    )
    assert status == 0


def test_episode_returns(benchmark, kernels):
    name, module = kernels
    _, _, rewards, offsets = episodes((1, 1), BATCH[name])
    finals = np.zeros(offsets.shape[0] - 1)
    out = np.empty(rewards.shape[0])
    status = measure(
        benchmark,
        module.episode_returns,
        rewards,
        offsets,
        0.99,
        finals,
        out,
        items=rewards.shape[0],
        group="episode_returns",
    )
    assert status == 0
