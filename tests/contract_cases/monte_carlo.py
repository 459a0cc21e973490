"""Contract cases of the monte_carlo topic (episode_returns, mc_control_update): episodes in CSR
form (``episode_offsets`` from 0 to T), one final value per episode, int64 visit counts of the
table's shape, and a first-visit hash scratch of one power-of-two length >= 2 x the longest
episode."""

import numpy as np

from fastlmrl._status import Status


def valid_args(kernel, dtype):
    rng = np.random.default_rng(0)
    common = dict(
        rewards=rng.standard_normal(4).astype(dtype),
        episode_offsets=np.array([0, 1, 4], np.int64),  # two episodes, of 1 and 3 steps
        gamma=0.9,
        returns_out=np.zeros(4, dtype),
    )
    if kernel.name == "episode_returns":
        return dict(common, final_values=np.array([0.5, -1.0]))
    return dict(
        common,
        q=rng.standard_normal((3, 2)).astype(dtype),
        states=np.array([0, 2, 1, 2], np.int64),
        actions=np.array([1, 0, 0, 0], np.int64),  # (2, 0) twice in the second episode
        first_visit=True,
        alpha=0.0,  # the sample average: needs counts
        counts=np.array([[0, 3], [1, 0], [2, 5]], np.int64),
        slot_keys=np.full(8, -7, np.int64),
        slot_first=np.full(8, -7, np.int64),
    )


def breakages(kernel, args):
    def broken(**change):
        return dict(args, **change)

    rewards = args["rewards"].copy()
    rewards[1] = np.nan
    yield "rewards", broken(rewards=rewards), Status.BAD_REWARDS
    offsets = np.array([0, 1, 5], np.int64)  # ends after the last step
    yield "episode_offsets", broken(episode_offsets=offsets), Status.BAD_OFFSETS
    yield "rewards is returns_out", broken(rewards=args["returns_out"]), Status.OVERLAPPING_ARRAYS
    if kernel.name == "episode_returns":
        final_values = args["final_values"].copy()
        final_values[1] = np.inf
        yield "final_values", broken(final_values=final_values), Status.BAD_FINAL_VALUES
        return
    states = args["states"].copy()
    states[-1] = args["q"].shape[0]
    yield "states", broken(states=states), Status.BAD_STATES
    actions = args["actions"].copy()
    actions[-1] = args["q"].shape[1]
    yield "actions", broken(actions=actions), Status.BAD_ACTIONS
    yield "counts shape", broken(counts=np.zeros((3, 3), np.int64)), Status.BAD_COUNTS
    counts = args["counts"].copy()
    counts[0, 1] = -1  # the pair (0, 1) is step 0
    yield "counts value", broken(counts=counts), Status.BAD_COUNT_VALUES
    small = np.full(4, -7, np.int64)  # < 2 x 3 (the longest episode)
    yield "slot_keys", broken(slot_keys=small, slot_first=small.copy()), Status.BAD_SCRATCH
