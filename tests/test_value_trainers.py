"""Tabular value-method trainers and planners (fastlmrl.trainers.q_learning, sarsa,
expected_sarsa, double_q_learning, monte_carlo, planners).

Learning tests use fixed seeds; each threshold is stated with the reason it holds (they are not
tuned to pass).  Expected values are derived by hand in the comments, never by the code under test.
"""

import math

import numpy as np
import pytest

import fastlmrl
from fastlmrl.checkpoint import CheckpointError
from fastlmrl.environments import ContextMDP, TextGenerationEnv
from fastlmrl.rewards import KeywordReward
from fastlmrl.tasks import make_toy_task
from fastlmrl.trainers.double_q_learning import DoubleQLearningConfig, DoubleQLearningTrainer
from fastlmrl.trainers.expected_sarsa import ExpectedSarsaConfig, ExpectedSarsaTrainer
from fastlmrl.trainers.monte_carlo import MonteCarloConfig, MonteCarloTrainer
from fastlmrl.trainers.planners import (
    PolicyIterationConfig,
    PolicyIterationPlanner,
    ValueIterationConfig,
    ValueIterationPlanner,
)
from fastlmrl.trainers.q_learning import QLearningConfig, QLearningTrainer
from fastlmrl.trainers.sarsa import SarsaConfig, SarsaTrainer

TD_TRAINERS = (QLearningTrainer, SarsaTrainer, ExpectedSarsaTrainer, DoubleQLearningTrainer)
LEARNERS = TD_TRAINERS + (MonteCarloTrainer,)
PLANNERS = (ValueIterationPlanner, PolicyIterationPlanner)

# The seed toy (ContextMDP()): x1 = 0 -> x2 = 1 -> END, tokens v1, v2 paying 1 and 2 in both.
# Q*(x2, .) = (1, 2); Q*(x1, a) = r(a) + 0.9 max Q*(x2, .) = (1 + 1.8, 2 + 1.8) with gamma = 0.9.
TOY_Q_STAR = np.array([[2.8, 3.8], [1.0, 2.0]])

# A 5-context, 3-token token MDP with a known optimal path where the myopic first token is wrong.
# -1 = the episode ends after that token.
CHAIN_NEXT = [[1, 2, -1], [3, -1, 4], [4, -1, 3], [-1, -1, 4], [-1, -1, -1]]
CHAIN_REWARD = [[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.0, 3.0, 0.5], [1.0, 0.0, 2.0]]
# Backward induction by hand, gamma = 0.9:
#   ctx 4: q = (1, 0, 2)                                    v = 2    (token 2)
#   ctx 3: q = (0, 3, 0.5 + 0.9*2 = 2.3)                    v = 3    (token 1)
#   ctx 2: q = (0 + 0.9*2 = 1.8, 0, 2 + 0.9*3 = 4.7)        v = 4.7  (token 2)
#   ctx 1: q = (0 + 0.9*3 = 2.7, 1, 0 + 0.9*2 = 1.8)        v = 2.7  (token 0)
#   ctx 0: q = (1 + 0.9*2.7 = 3.43, 0 + 0.9*4.7 = 4.23, 0.5) v = 4.23 (token 1)
# Optimal path from ctx 0: token 1 (r 0) -> ctx 2, token 2 (r 2) -> ctx 3, token 1 (r 3) -> END:
# undiscounted return 5 in 3 steps (the myopic token 0, reward 1, is worse).
CHAIN_Q_STAR = np.array(
    [[3.43, 4.23, 0.5], [2.7, 1.0, 1.8], [1.8, 0.0, 4.7], [0.0, 3.0, 2.3], [1.0, 0.0, 2.0]]
)
CHAIN_V_STAR = np.array([4.23, 2.7, 4.7, 3.0, 2.0, 0.0])  # the END state (5) has value 0
CHAIN_GREEDY = np.array([1, 0, 2, 1, 2])


def chain_env(num_envs=32, start=0, dtype=np.float64):
    return ContextMDP(
        CHAIN_NEXT, np.array(CHAIN_REWARD, dtype=dtype), start=start, num_envs=num_envs
    )


def make(cls, env, seed=0, **kw):
    """A trainer of ``cls`` with gamma 0.9 and the given config fields."""
    kw.setdefault("gamma", 0.9)
    if cls is MonteCarloTrainer:
        kw.setdefault("alpha", None)
    elif cls not in PLANNERS:
        kw.setdefault("alpha", 0.5)
    return cls(env, cls.Config(**kw), seed=seed)


# ---------------------------------------------------------------------------------------------
# learning results


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_q_learning_toy_reaches_q_star(dtype):
    # Deterministic MDP and rewards: the Q-learning target of a pair is a fixed number once its
    # successor's row has converged, and each update with alpha = 0.5 halves the error.  With
    # epsilon >= 0.1 each of the 4 pairs is tried >= 64 * 0.05 = 3.2 times per iteration on
    # average, so after 200 iterations every entry has had hundreds of halvings: the error is far
    # below the 1e-3 (float32 rounding adds ~4e-7 relative).
    task = make_toy_task(num_envs=64)
    trainer = make(
        QLearningTrainer,
        task.env,
        seed=0,
        epsilon_start=1.0,
        epsilon_end=0.1,
        decay_iterations=50,
        dtype=dtype,
    )
    trainer.train(200)
    assert trainer.q.dtype == np.dtype(dtype)
    np.testing.assert_allclose(trainer.q[:2], TOY_Q_STAR, rtol=0, atol=1e-3)
    assert np.array_equal(trainer.q[2], [0.0, 0.0])  # the END state: never updated, value 0
    assert np.array_equal(trainer.greedy_policy()[:2], [1, 1])
    h = trainer.history[-1]
    assert h["tokens"] == 128 and h["episode_length"] == 2.0 and h["episodes"] == 64
    assert h["truncated"] == 0.0
    # The behaviour policy is still epsilon-greedy (epsilon = 0.1): the mean return lies below
    # the optimal 4 and above 4 - 2 * 0.05 * 1 (each of the 2 tokens is wrong with prob 0.05).
    assert abs(np.mean([m["reward"] for m in trainer.history[-50:]]) - 3.9) < 0.05


def test_q_learning_boltzmann_toy_reaches_q_star():
    # Boltzmann exploration with tau >= 0.5 keeps every token's probability >= e^{-2/0.5} / 2
    # (about 1 %), so every pair keeps being updated; same argument as above.
    trainer = make(
        QLearningTrainer,
        ContextMDP(num_envs=64),
        seed=5,
        exploration="boltzmann",
        temperature_start=2.0,
        temperature_end=0.5,
        decay_iterations=50,
        schedule="exponential",
    )
    trainer.train(200)
    np.testing.assert_allclose(trainer.q[:2], TOY_Q_STAR, rtol=0, atol=1e-3)
    assert "temperature" in trainer.history[-1] and "epsilon" not in trainer.history[-1]


def test_value_iteration_and_q_learning_choose_the_same_tokens():
    # The learning result: VI on the chain MDP and a trained Q-learning agent agree on the
    # greedy token of every context.  Q-learning converges to Q* exactly here (deterministic MDP,
    # halving per update, every context reachable from ctx 0 with epsilon >= 0.1), so we also ask
    # for the hand-computed Q* within 1e-3.
    env = chain_env(num_envs=32)
    planner = make(ValueIterationPlanner, env)
    planner.train(1)
    learner = make(
        QLearningTrainer,
        chain_env(num_envs=32),
        seed=1,
        epsilon_start=1.0,
        epsilon_end=0.1,
        decay_iterations=100,
    )
    learner.train(300)
    states = np.arange(5)
    assert np.array_equal(planner.greedy_actions(states), CHAIN_GREEDY)
    assert np.array_equal(learner.greedy_actions(states), CHAIN_GREEDY)
    np.testing.assert_allclose(learner.q[:5], CHAIN_Q_STAR, rtol=0, atol=1e-3)


@pytest.mark.parametrize("cls", PLANNERS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_planners_solve_the_chain(cls, dtype):
    planner = make(cls, chain_env(num_envs=4, dtype=dtype))
    history = planner.train(1)
    m = history[0]
    assert m["converged"] is True and m["iterations"] >= 1
    # VI stops with ||v - v*|| < epsilon / 2 = 5e-7 (Puterman Thm 6.3.1); PI's values are exact
    # up to float rounding.  float32 rewards are 0, 0.5, 1, 2, 3: all exact in float32.
    np.testing.assert_allclose(planner.values, CHAIN_V_STAR, rtol=0, atol=1e-6)
    np.testing.assert_allclose(planner.q[:5], CHAIN_Q_STAR, rtol=0, atol=1e-6)
    assert np.array_equal(planner.policy[:5], CHAIN_GREEDY)
    assert np.array_equal(planner.greedy_policy()[:5], CHAIN_GREEDY)
    # The greedy evaluation follows the optimal path: return 0 + 2 + 3 = 5 in 3 steps.
    assert m["reward"] == 5.0 and m["episode_length"] == 3.0 and m["tokens"] == 12
    assert m["value"] == pytest.approx(4.23, abs=1e-6)


def test_planners_agree_with_each_other():
    vi = make(ValueIterationPlanner, chain_env(start=[0, 1, 2, 3, 4], num_envs=8), epsilon=1e-9)
    pi = make(PolicyIterationPlanner, chain_env(start=[0, 1, 2, 3, 4], num_envs=8))
    vi.train(2)
    pi.train(2)
    assert np.array_equal(vi.policy, pi.policy)
    np.testing.assert_allclose(vi.values, pi.values, rtol=0, atol=1e-9)
    # Same seed, same starts, same (optimal) policy: the evaluation batches coincide.
    assert [h["reward"] for h in vi.history] == [h["reward"] for h in pi.history]
    toy = make(ValueIterationPlanner, ContextMDP())
    toy.train(1)
    np.testing.assert_allclose(toy.q[:2], TOY_Q_STAR, rtol=0, atol=1e-6)


def test_sarsa_toy_reaches_optimal_policy():
    # GLIE: epsilon goes linearly from 1 to 0 over 100 iterations, then 50 greedy iterations.
    # x2's transitions are terminal, so its targets are the deterministic rewards (1, 2): error
    # halves per update.  Once epsilon = 0 the greedy pair (x1, v2) has the deterministic target
    # 2 + 0.9 Q(x2, v2) = 3.8, so it converges too; (x1, v1) is no longer visited and keeps a
    # value inside the hull of its past targets 1 + 0.9 Q(x2, .) <= 2.8 (+1e-3 slack).
    trainer = make(
        SarsaTrainer,
        ContextMDP(num_envs=64),
        seed=2,
        epsilon_start=1.0,
        epsilon_end=0.0,
        decay_iterations=100,
    )
    trainer.train(150)
    assert np.array_equal(trainer.greedy_policy()[:2], [1, 1])
    np.testing.assert_allclose(trainer.q[1], [1.0, 2.0], rtol=0, atol=1e-3)
    assert abs(trainer.q[0, 1] - 3.8) < 1e-3
    assert 0.0 <= trainer.q[0, 0] <= 2.8 + 1e-3
    assert trainer.history[-1]["reward"] == 4.0  # greedy: both tokens v2


def test_expected_sarsa_fixed_epsilon_reaches_q_pi():
    # With a constant epsilon = 0.2 the expected-SARSA target is deterministic (an expectation
    # over the next token, deterministic MDP), so the table converges geometrically to the value
    # of the epsilon-greedy policy (S&B 6.6):  v(x2) = (1 - 0.2) * 2 + 0.2 * (1 + 2) / 2 = 1.9,
    # q(x1, .) = (1 + 0.9 * 1.9, 2 + 0.9 * 1.9) = (2.71, 3.71), q(x2, .) = (1, 2).
    trainer = make(
        ExpectedSarsaTrainer, ContextMDP(num_envs=64), seed=3, epsilon_start=0.2, decay_iterations=0
    )
    trainer.train(150)
    np.testing.assert_allclose(trainer.q[:2], [[2.71, 3.71], [1.0, 2.0]], rtol=0, atol=1e-3)
    assert all(h["epsilon"] == 0.2 for h in trainer.history)


def test_expected_sarsa_epsilon_to_zero_reaches_q_star_on_greedy_pairs():
    # epsilon -> 0 (linear, then held at 0): the target becomes Q-learning's; the greedy pairs
    # (visited every episode) converge to Q*.  (x1, v1) stops being visited once epsilon = 0;
    # its last targets were 1 + 0.9 (2 - eps/2) with eps -> 0, within 0.45 * eps of 2.8.
    trainer = make(
        ExpectedSarsaTrainer,
        ContextMDP(num_envs=64),
        seed=4,
        epsilon_start=1.0,
        epsilon_end=0.0,
        decay_iterations=100,
    )
    trainer.train(150)
    assert np.array_equal(trainer.greedy_policy()[:2], [1, 1])
    np.testing.assert_allclose(trainer.q[1], [1.0, 2.0], rtol=0, atol=1e-3)
    assert abs(trainer.q[0, 1] - 3.8) < 1e-3
    assert trainer.q[0, 0] <= 2.8 + 1e-3


def test_double_q_learning_toy_reaches_q_star():
    # Both tables see deterministic targets (Q_E at the learner's argmax, deterministic MDP);
    # each table is picked by a fair coin, so each entry is still updated hundreds of times in
    # 200 iterations with epsilon >= 0.1: both converge to Q* (van Hasselt 2010), and so does
    # their average.
    trainer = make(
        DoubleQLearningTrainer,
        ContextMDP(num_envs=64),
        seed=5,
        epsilon_end=0.1,
        decay_iterations=50,
    )
    trainer.train(200)
    for table in (trainer.q1, trainer.q2, trainer.q):
        np.testing.assert_allclose(table[:2], TOY_Q_STAR, rtol=0, atol=1e-3)
    assert np.array_equal(trainer.greedy_policy()[:2], [1, 1])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_double_q_average_table_is_kept_in_step(dtype):
    trainer = make(
        DoubleQLearningTrainer,
        chain_env(num_envs=8, start=[0, 1, 2]),
        seed=6,
        dtype=dtype,
        initial_q=0.25,
    )
    trainer.train(7)
    mean = (trainer.q1.astype(np.float64) + trainer.q2.astype(np.float64)) * 0.5
    assert np.array_equal(trainer.q, mean.astype(dtype))
    assert not np.array_equal(trainer.q1, trainer.q2)  # the coins split the updates


def test_monte_carlo_fixed_epsilon_estimates_q_pi():
    # On-policy first-visit MC with sample averages and constant epsilon = 0.1 (S&B 5.4).
    # x2's returns are its deterministic rewards, so Q(x2, .) = (1, 2) exactly after their first
    # samples.  From iteration 1 on x2's greedy token is v2 (both tokens of x2 were sampled in
    # iteration 0, with overwhelming probability: 64 episodes), so a return from x1 is
    # r(a) + 0.9 R2 with R2 = 1 w.p. p = eps/2 = 0.05, else 2: E = r(a) + 0.9 (2 - p) and the
    # standard error of the mean of n returns is 0.9 sqrt(p (1-p) / n).  Iteration 0's returns
    # (greedy ties -> v1) are removed using the table and counts saved after it.  Threshold:
    # 5 standard errors.
    trainer = make(
        MonteCarloTrainer, ContextMDP(num_envs=64), seed=7, epsilon_start=0.1, decay_iterations=0
    )
    trainer.train(1)
    q0, n0 = trainer.q.copy(), trainer.counts.copy()
    assert (n0[1] > 0).all()
    trainer.train(199)
    np.testing.assert_array_equal(trainer.q[1], [1.0, 2.0])
    n = trainer.counts - n0
    later = (trainer.q * trainer.counts - q0 * n0) / np.maximum(n, 1)
    p = 0.05
    for a, r in enumerate((1.0, 2.0)):
        expected = r + 0.9 * (2.0 - p)
        se = 0.9 * math.sqrt(p * (1 - p) / n[0, a])
        assert abs(later[0, a] - expected) < 5 * se, (a, later[0, a], expected, se)
    assert np.array_equal(trainer.greedy_policy()[:2], [1, 1])
    # Every episode credits 2 first visits; the counts add up to the steps taken.
    assert trainer.counts.sum() == sum(h["tokens"] for h in trainer.history) == 200 * 128


def test_monte_carlo_every_visit_and_constant_alpha():
    # A context that can loop: ctx 0 --token 0--> ctx 0 (reward 0), --token 1--> END (reward 1);
    # episodes are cut at max_steps = 4 (truncated).
    env = ContextMDP([[0, -1]], [[0.0, 1.0]], num_envs=16, max_steps=4)
    every = make(
        MonteCarloTrainer, env, seed=8, first_visit=False, epsilon_start=0.5, decay_iterations=0
    )
    every.train(1)
    # Every visit is credited: the counts add up to the steps.
    assert every.counts.sum() == every.history[0]["tokens"]
    first = make(
        MonteCarloTrainer,
        ContextMDP([[0, -1]], [[0.0, 1.0]], num_envs=16, max_steps=4),
        seed=8,
        first_visit=True,
        epsilon_start=0.5,
        decay_iterations=0,
    )
    first.train(1)
    # Same seed and same initial table: the same episodes; each pair at most once per episode.
    assert first.history[0]["tokens"] == every.history[0]["tokens"]
    assert first.counts.max() <= 16 and first.counts.sum() < every.counts.sum()
    # Constant alpha: optimal policy (end now, value 1 > 0.9 * 1) after a few iterations.
    const = make(
        MonteCarloTrainer,
        ContextMDP([[0, -1]], [[0.0, 1.0]], num_envs=16, max_steps=4),
        seed=9,
        alpha=0.2,
        epsilon_start=0.5,
        epsilon_end=0.1,
        decay_iterations=20,
    )
    const.train(40)
    assert const.greedy_policy()[0] == 1
    # (0, 1) always returns exactly 1 (terminal reward): the constant-alpha average -> 1.
    assert abs(const.q[0, 1] - 1.0) < 1e-3


def test_monte_carlo_drop_truncated():
    # Token 0 loops forever with reward 0 in a 1-context MDP; epsilon = 1 (uniform tokens), cut
    # at 3 steps: episodes that never chose token 1 are truncated and, with drop_truncated,
    # contribute nothing.
    env = ContextMDP([[0, -1]], [[0.0, 1.0]], num_envs=32, max_steps=3)
    trainer = make(
        MonteCarloTrainer, env, seed=10, epsilon_start=1.0, decay_iterations=0, drop_truncated=True
    )
    m = trainer.train(1)[0]
    n_trunc = round(m["truncated"] * 32)
    assert 0 < n_trunc < 32
    assert m["updated_episodes"] == 32 - n_trunc
    # Each kept episode terminated with token 1 exactly once: counts[0, 1] = kept episodes.
    assert trainer.counts[0, 1] == 32 - n_trunc
    # A kept episode's first visit of (0, 1) returns 1.
    assert trainer.q[0, 1] == 1.0


def test_truncation_bootstraps_on_text_env():
    # Text environment, V = 4 (bos 0, eos 1, tokens 2, 3), order 1 (state = last token), reward 1
    # per token 3 (per token), episodes cut at 4 new tokens (truncated -> bootstrap).  The values
    # are then those of the continuing task (the state has no clock): emitting 3 forever is worth
    # 1 / (1 - 0.9) = 10; EOS terminates with reward 0 -> 0; token 0 or 2 pays 0 and then 10:
    # 0.9 * 10 = 9.  Had truncation been treated as termination, the values would depend on the
    # step and could not all reach these.  Context 1 (after EOS) is never acted in: stays 0.
    # Same convergence argument as the toy (deterministic, alpha = 0.5, epsilon >= 0.2).
    env = TextGenerationEnv(
        [[2]],
        vocab_size=4,
        order=1,
        max_new_tokens=4,
        num_envs=16,
        eos_id=1,
        reward=KeywordReward({3: 1.0}, per_token=True),
    )
    trainer = make(QLearningTrainer, env, seed=11, epsilon_end=0.2, decay_iterations=50)
    trainer.train(250)
    expected = np.array([9.0, 0.0, 9.0, 10.0])
    for ctx in (0, 2, 3):
        np.testing.assert_allclose(trainer.q[ctx], expected, rtol=0, atol=1e-3)
    assert np.array_equal(trainer.q[1], np.zeros(4))
    assert trainer.history[-1]["truncated"] > 0.5


def test_sarsa_on_text_env_learns_the_rewarded_token():
    env = TextGenerationEnv(
        [[2], [3]],
        vocab_size=4,
        order=1,
        max_new_tokens=4,
        num_envs=16,
        eos_id=1,
        reward=KeywordReward({3: 1.0}, per_token=True),
    )
    trainer = make(SarsaTrainer, env, seed=12, epsilon_end=0.0, decay_iterations=60)
    trainer.train(80)
    # Greedy at the end: every episode emits token 3 four times (the optimum, return 4).
    assert np.array_equal(trainer.greedy_actions([0, 2, 3]), [3, 3, 3])
    assert trainer.history[-1]["reward"] == 4.0


def test_safety_cut_truncates_and_bootstraps():
    # One context looping on itself with reward 1, no time limit: only the trainer's
    # max_episode_steps ends episodes.  They count as truncated (bootstrap), so Q -> 1/(1-0.9).
    env = ContextMDP([[0]], [[1.0]], num_envs=4)
    trainer = make(QLearningTrainer, env, seed=13, max_episode_steps=5)
    trainer.train(60)
    h = trainer.history[-1]
    assert h["episode_length"] == 5.0 and h["truncated"] == 1.0 and h["reward"] == 5.0
    # 60 * 20 updates of a single entry with alpha = 0.5 and contraction 1 - 0.5 * 0.1 = 0.95
    # per update: error 10 * 0.95**1200 ~ 1e-26.
    assert abs(trainer.q[0, 0] - 10.0) < 1e-9


# ---------------------------------------------------------------------------------------------
# schedules, metrics, callbacks


def test_epsilon_schedule_and_metrics():
    trainer = make(
        QLearningTrainer,
        ContextMDP(num_envs=4),
        seed=0,
        epsilon_start=1.0,
        epsilon_end=0.1,
        decay_iterations=10,
    )
    trainer.train(14)
    eps = [h["epsilon"] for h in trainer.history]
    expected = [1.0 + (0.1 - 1.0) * min(k / 10, 1.0) for k in range(14)]
    assert eps == pytest.approx(expected, abs=1e-15)
    for key in (
        "reward",
        "episode_length",
        "td_error",
        "tokens",
        "tokens_per_second",
        "seconds",
        "iteration",
        "truncated",
    ):
        assert key in trainer.history[0]
    assert [h["iteration"] for h in trainer.history] == list(range(14))


def test_exponential_schedule_reaches_end():
    trainer = make(
        QLearningTrainer,
        ContextMDP(num_envs=2),
        exploration="boltzmann",
        temperature_start=4.0,
        temperature_end=0.25,
        decay_iterations=4,
        schedule="exponential",
    )
    trainer.train(7)
    taus = [h["temperature"] for h in trainer.history]
    # 4 * d**k with d = (0.25 / 4) ** (1/4) = 0.5: 4, 2, 1, 0.5, 0.25, then held at 0.25.
    assert taus == pytest.approx([4.0, 2.0, 1.0, 0.5, 0.25, 0.25, 0.25], rel=1e-12)


def test_callback_stops_training_and_same_seed_same_run():
    def stop_after_three(trainer, metrics):
        return trainer.iterations_done < 3

    a = make(QLearningTrainer, chain_env(num_envs=8, start=[0, 1, 2]), seed=21)
    a.train(10, callbacks=[stop_after_three])
    assert a.iterations_done == 3
    b = make(QLearningTrainer, chain_env(num_envs=8, start=[0, 1, 2]), seed=21)
    b.train(3)
    assert np.array_equal(a.q, b.q)
    assert [h["reward"] for h in a.history] == [h["reward"] for h in b.history]
    c = make(QLearningTrainer, chain_env(num_envs=8, start=[0, 1, 2]), seed=22)
    c.train(3)
    assert not np.array_equal(a.q, c.q)


# ---------------------------------------------------------------------------------------------
# checkpoints and backends


def _state(trainer):
    return {k: np.array(v, copy=True) for k, v in trainer.arrays().items()}


CKPT_CASES = [
    (QLearningTrainer, {}),
    (QLearningTrainer, {"exploration": "boltzmann", "temperature_end": 0.3}),
    (SarsaTrainer, {}),
    (ExpectedSarsaTrainer, {"dtype": "float32"}),
    (DoubleQLearningTrainer, {}),
    (MonteCarloTrainer, {}),
    (MonteCarloTrainer, {"alpha": 0.3, "first_visit": False}),
    (ValueIterationPlanner, {}),
    (PolicyIterationPlanner, {}),
]


@pytest.mark.parametrize("cls,kw", CKPT_CASES, ids=lambda x: getattr(x, "__name__", str(x)))
def test_resume_from_checkpoint_is_bit_identical(cls, kw, tmp_path):
    if cls not in PLANNERS:
        kw = dict(kw, decay_iterations=6)

    def env():  # several starts: the environment also draws from the trainer's stream
        return chain_env(num_envs=8, start=[0, 1, 2])

    straight = make(cls, env(), seed=31, **kw)
    straight.train(8)
    first = make(cls, env(), seed=31, **kw)
    first.train(4)
    path = tmp_path / f"{cls.algorithm}.ckpt"
    first.save(path)
    resumed = make(cls, env(), seed=999, **kw)  # the seed comes back from the checkpoint
    resumed.load(path)
    assert resumed.iterations_done == 4 and resumed.stream == first.stream
    resumed.train(4)
    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype
        assert np.array_equal(a[name], b[name]), name
    for key in ("reward", "episode_length", "tokens"):
        assert [h[key] for h in straight.history] == [h[key] for h in resumed.history]
    assert resumed.stream == straight.stream


def test_resume_on_text_env(tmp_path):
    def env():
        return TextGenerationEnv(
            [[2], [3], [2, 3]],
            vocab_size=4,
            order=2,
            max_new_tokens=5,
            num_envs=6,
            eos_id=1,
            reward=KeywordReward({(2, 3): 1.0}, per_token=True),
        )

    straight = make(SarsaTrainer, env(), seed=41, decay_iterations=5)
    straight.train(6)
    first = make(SarsaTrainer, env(), seed=41, decay_iterations=5)
    first.train(3)
    first.save(tmp_path / "t.ckpt")
    resumed = make(SarsaTrainer, env(), seed=41, decay_iterations=5).load(tmp_path / "t.ckpt")
    resumed.train(3)
    assert np.array_equal(straight.q, resumed.q)
    assert [h["reward"] for h in straight.history] == [h["reward"] for h in resumed.history]


def test_checkpoint_of_another_algorithm_or_config_is_refused(tmp_path):
    q = make(QLearningTrainer, ContextMDP(num_envs=4), seed=1)
    q.train(2)
    q.save(tmp_path / "q.ckpt")
    sarsa = make(SarsaTrainer, ContextMDP(num_envs=4), seed=1)
    before = _state(sarsa)
    with pytest.raises(CheckpointError, match="algorithm"):
        sarsa.load(tmp_path / "q.ckpt")
    assert all(np.array_equal(v, before[k]) for k, v in _state(sarsa).items())
    assert sarsa.iterations_done == 0 and sarsa.history == []
    other = make(QLearningTrainer, ContextMDP(num_envs=4), seed=1, alpha=0.25)
    with pytest.raises(CheckpointError, match="configuration"):
        other.load(tmp_path / "q.ckpt")
    bigger = make(QLearningTrainer, chain_env(num_envs=4), seed=1)
    with pytest.raises(CheckpointError, match="array"):
        bigger.load(tmp_path / "q.ckpt")
    vi = make(ValueIterationPlanner, ContextMDP())
    with pytest.raises(CheckpointError, match="algorithm"):
        vi.load(tmp_path / "q.ckpt")


@pytest.mark.parametrize("cls", LEARNERS + PLANNERS, ids=lambda c: c.algorithm)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_backend_trains_identically(cls, dtype):
    kw = {"dtype": dtype}
    if cls not in PLANNERS:
        kw["decay_iterations"] = 3
    results = {}
    for name in fastlmrl.BACKENDS:
        with fastlmrl.use_backend(name):
            trainer = make(cls, chain_env(num_envs=6, start=[0, 1, 2]), seed=51, **kw)
            trainer.train(4)
            results[name] = (
                _state(trainer),
                [(h["reward"], h.get("td_error")) for h in trainer.history],
            )
    ref_arrays, ref_hist = results["python"]
    for name, (arrays, hist) in results.items():
        assert hist == ref_hist, name
        for key in ref_arrays:
            assert np.array_equal(arrays[key], ref_arrays[key]), (name, key)


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("cls", LEARNERS, ids=lambda c: c.algorithm)
@pytest.mark.parametrize(
    "field,value,exc",
    [
        ("exploration", "softmax", ValueError),
        ("exploration", 3, TypeError),
        ("alpha", 0.0, ValueError),
        ("alpha", 1.5, ValueError),
        ("alpha", "big", TypeError),
        ("alpha", float("nan"), ValueError),
        ("gamma", 1.01, ValueError),
        ("gamma", -0.1, ValueError),
        ("epsilon_start", 1.5, ValueError),
        ("epsilon_end", -0.1, ValueError),
        ("temperature_start", 0.0, ValueError),
        ("decay_iterations", -1, ValueError),
        ("decay_iterations", 2.5, TypeError),
        ("schedule", "cosine", ValueError),
        ("dtype", "float16", ValueError),
        ("initial_q", float("inf"), ValueError),
        ("max_episode_steps", 0, ValueError),
    ],
)
def test_bad_config_is_refused(cls, field, value, exc):
    with pytest.raises(exc, match=field):
        make(cls, ContextMDP(), **{field: value})


def test_other_bad_arguments():
    env = ContextMDP()
    with pytest.raises(ValueError, match="epsilon_end"):  # exponential decay toward 0
        make(QLearningTrainer, env, schedule="exponential", epsilon_end=0.0)
    with pytest.raises(ValueError, match="epsilon_greedy"):
        make(ExpectedSarsaTrainer, env, exploration="boltzmann")
    with pytest.raises(TypeError, match="alpha"):  # sample averages exist only for MC
        make(QLearningTrainer, env, alpha=None)
    with pytest.raises(TypeError, match="first_visit"):
        make(MonteCarloTrainer, env, first_visit="yes")
    with pytest.raises(TypeError, match="drop_truncated"):
        make(MonteCarloTrainer, env, drop_truncated=1)
    with pytest.raises(TypeError, match="QLearningConfig"):
        QLearningTrainer(env, SarsaConfig())
    with pytest.raises(TypeError, match="ContextMDP or TextGenerationEnv"):
        QLearningTrainer(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="seed"):
        QLearningTrainer(env, seed=-1)
    text = TextGenerationEnv([[2]], vocab_size=4, order=1, max_new_tokens=3)
    for cls in PLANNERS:
        with pytest.raises(TypeError, match="known"):
            cls(text)
    with pytest.raises(ValueError, match="gamma"):
        make(ValueIterationPlanner, env, gamma=1.5)
    with pytest.raises(ValueError, match="epsilon"):
        make(ValueIterationPlanner, env, epsilon=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        make(PolicyIterationPlanner, env, max_iter=0)
    with pytest.raises(ValueError, match="dtype"):
        make(PolicyIterationPlanner, env, dtype="int8")
    # gamma = 1 on a cyclic MDP: the solver refuses it (values undefined), nothing is written.
    cyclic = make(ValueIterationPlanner, ContextMDP([[0, -1]], [[1.0, 0.0]]), gamma=1.0)
    with pytest.raises(ValueError):
        cyclic.train(1)
    assert cyclic.iterations_done == 0 and not cyclic.q.any()
    vi = make(ValueIterationPlanner, env)
    with pytest.raises(ValueError, match="states"):
        vi.greedy_actions([0, 3])
    q = make(QLearningTrainer, env)
    with pytest.raises(ValueError, match="states"):
        q.greedy_actions([0, 3])
    with pytest.raises(ValueError, match="iterations"):
        q.train(-1)


def test_defaults_and_algorithm_keys():
    keys = {cls.algorithm for cls in LEARNERS + PLANNERS}
    assert keys == {
        "q_learning",
        "sarsa",
        "expected_sarsa",
        "double_q_learning",
        "monte_carlo",
        "value_iteration",
        "policy_iteration",
    }
    for cls in LEARNERS + PLANNERS:
        trainer = cls(ContextMDP(num_envs=2))  # config=None -> the defaults
        assert isinstance(trainer.config, cls.Config)
        assert trainer.q.shape == (3, 2) and trainer.q.dtype == np.float64
        trainer.train(1)
    assert MonteCarloConfig().alpha is None
    assert QLearningConfig().exploration == "epsilon_greedy"
    assert ValueIterationConfig().epsilon == 1e-6 and PolicyIterationConfig().max_iter == 1000
    assert DoubleQLearningConfig().alpha == ExpectedSarsaConfig().alpha == 0.1


# ----------------------------------------------------------------------------- from the LM
# Every value method and planner, given the text task (a language model), starts from the LM
# (behaviour pi ∝ pi_ref exp(Q / kl_coef)) and raises the whole-word lexicon score of its samples
# above the reference LM's.  The reference's score is measured on the same prompts and stream
# (1024 samples: ~0.014 words per sample, standard error ~0.004).  Measured after these
# iterations (128 episodes each, the default gamma 0.9): Q-learning 0.57, SARSA 7.9, expected
# SARSA 0.09, double Q 8.0, Monte Carlo 7.0 (they maximise the task reward and nothing holds them
# near the LM once a word's value exceeds kl_coef times its log-odds: the policy then repeats a
# lexicon word), value / policy iteration on the learned model 0.06 (a reward model over
# 2-character contexts knows little about words).  Margins: about half the measured gain.  Before
# this, a zero table explored uniformly never met a word: reward 0 and TD error 0 on every
# iteration.

from fastlmrl.tasks import make_text_task  # noqa: E402

TEXT_RUNS = [
    (QLearningTrainer, 40, 0.2),
    (SarsaTrainer, 40, 1.0),
    (ExpectedSarsaTrainer, 40, 0.03),
    (DoubleQLearningTrainer, 40, 1.0),
    (MonteCarloTrainer, 40, 1.0),
    (ValueIterationPlanner, 4, 0.03),
    (PolicyIterationPlanner, 4, 0.03),
]


@pytest.fixture(scope="module")
def text_task():
    task = make_text_task(num_envs=128)
    batch = task.env.rollout(np.ascontiguousarray(task.reference), 99, num_sequences=1024)
    return task, float(batch.scores.mean())


@pytest.mark.parametrize(
    "cls, iterations, margin", TEXT_RUNS, ids=lambda x: getattr(x, "__name__", str(x))
)
def test_value_methods_start_from_the_lm_and_raise_the_score(text_task, cls, iterations, margin):
    task, reference_score = text_task
    trainer = cls(task, seed=0)
    # before training: the behaviour policy is the reference LM itself
    before = trainer.sample(1024, 99)
    assert abs(before.scores.mean() - reference_score) <= 0.01
    history = trainer.train(iterations)
    assert any(m["reward"] > 0 for m in history)  # words were found while exploring
    after = float(trainer.sample(1024, 99).scores.mean())
    assert after >= reference_score + margin and after >= 2 * reference_score, (
        cls.__name__,
        reference_score,
        after,
    )


def test_default_discount_is_the_toys_of_the_readme():
    # README quickstart: with gamma = 0.9, Q*(x1, .) = (1 + 0.9 * 2, 2 + 0.9 * 2) = (2.8, 3.8);
    # `fastlmrl train --env toy` uses the configs' defaults, so they must be that gamma.
    from fastlmrl.trainers import VALUE_ALGORITHMS

    for cls in VALUE_ALGORITHMS.values():
        assert cls.Config().gamma == 0.9, cls.__name__
    planner = ValueIterationPlanner(ContextMDP())
    planner.train(1)
    np.testing.assert_allclose(planner.q[:2], [[2.8, 3.8], [1.0, 2.0]], rtol=0, atol=1e-5)


@pytest.mark.parametrize("cls", [PolicyIterationPlanner, QLearningTrainer])
def test_resume_from_the_lm_is_bit_identical(cls, tmp_path):
    # the planner's learned reward model (model_sums, model_counts) is part of the checkpoint
    task = make_text_task(num_envs=32, max_new_tokens=16)
    straight = cls(task, seed=3)
    straight.train(3)
    first = cls(task, seed=3)
    first.train(2)
    first.save(str(tmp_path / "run.ckpt"))
    resumed = cls(task, seed=3)
    resumed.load(str(tmp_path / "run.ckpt"))
    resumed.train(1)
    assert [m["reward"] for m in resumed.history] == [m["reward"] for m in straight.history]
    assert np.array_equal(resumed.q, straight.q)
