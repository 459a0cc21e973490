"""The NumPy-vectorised PPO / GRPO of benchmarks/numpy_trainers.py computes what fastlmrl computes.

The benchmark's ">= 10x NumPy" comparison is only honest if the NumPy twin does the same work:
same rollout (token for token, from the same random stream), same rewards, advantages, losses,
gradient rows and Adam updates, and a whole iteration that leaves the same tables behind.
Expected values of the hand cases are derived by hand in the comments.
"""

import numpy as np
import pytest
from numpy_twins import nt

import fastlmrl
from fastlmrl import adam_step, gae, masked_whiten, ppo_loss
from fastlmrl.group_advantages import grpo_advantages, loss_weights
from fastlmrl.rewards import KeywordReward
from fastlmrl.rng import RandomStream
from fastlmrl.tasks import make_text_task
from fastlmrl.trainers.grpo import GRPOConfig, GRPOTrainer
from fastlmrl.trainers.ppo import PPOConfig, PPOTrainer

B, T = 64, 24
# float32 tables: fastlmrl's loss uses a float32 polynomial exp (within 1 ulp of float32) and
# stores float32 gradients, so results agree to float32 rounding; float64 tables to ~1e-12.
RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-10}


@pytest.fixture(scope="module", params=[np.float32, np.float64], ids=["float32", "float64"])
def task(request):
    # Frequent keywords, so that most sequences score and the update is driven by the rewards.
    # (With the default lexicon a small batch often scores 0 everywhere: the advantages are then
    # round-off of the KL terms, ~1e-17, which Adam's normalisation turns into lr-sized steps in
    # both implementations alike, but with different round-off -- nothing to compare.)
    return make_text_task(
        num_envs=B,
        max_new_tokens=T,
        dtype=request.param,
        reward_per_token=False,
        lexicon=("the", "a", "in", "is", "my"),
    )  # frequent whole words


def _close(actual, expected, dtype, atol=0.0):
    np.testing.assert_allclose(actual, expected, rtol=RTOL[np.dtype(dtype)], atol=atol)


# --- the pieces -------------------------------------------------------------------------------


def test_keyword_scores_hand():
    # row 0: tokens 5 6 5 6 | padding 5 6 (length 4): (5, 6) at 0 and 2 -> 2 x 1.0; (6,) at 1, 3
    #        -> 2 x 0.5; total 3.0.  row 1: 5 6 with length 1: (5, 6) ends outside -> 0, (6,) -> 0.
    # row 2: empty -> 0.
    tokens = np.array([[5, 6, 5, 6, 5, 6], [5, 6, 0, 0, 0, 0], [6, 6, 6, 6, 6, 6]])
    lengths = np.array([4, 1, 0])
    grams = [((5, 6), 1.0), ((6,), 0.5)]
    np.testing.assert_array_equal(nt.keyword_scores(tokens, lengths, grams), [3.0, 0.0, 0.0])


def test_keyword_scores_match_fastlmrl():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 4, (200, 12))
    lengths = rng.integers(0, 13, 200)
    weights = {(1, 2): 1.0, (3,): -0.25, (0, 0, 1): 2.0}
    expected = KeywordReward(weights)(tokens, lengths)
    got = nt.keyword_scores(tokens, lengths, [(k, w) for k, w in weights.items()])
    np.testing.assert_allclose(got, expected, rtol=1e-15)


def test_gae_hand():
    # gamma = 1, lam = 1, V = 0.5 everywhere, reward 1 at the last of 3 steps, terminated:
    # returns are 1, 1, 1 and advantages 1 - 0.5.  Row 1: 2 steps, truncated, bootstrap 2,
    # rewards 0: returns 2, 2 (lam = 1), advantages 1.5; padding 0.
    rewards = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    values = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.0]])
    valid = np.array([[True, True, True], [True, True, False]])
    adv, ret = nt.gae(
        rewards, values, valid, np.array([True, False]), np.array([0.0, 2.0]), 1.0, 1.0
    )
    np.testing.assert_array_equal(adv, [[0.5, 0.5, 0.5], [1.5, 1.5, 0.0]])
    np.testing.assert_array_equal(ret, [[1.0, 1.0, 1.0], [2.0, 2.0, 0.0]])


def test_gae_and_whiten_match_fastlmrl():
    rng = np.random.default_rng(1)
    n, horizon = 50, 20
    lengths = rng.integers(1, horizon + 1, n)
    valid = np.arange(horizon)[None, :] < lengths[:, None]
    rewards = np.where(valid, rng.standard_normal((n, horizon)), 0.0)
    values = np.where(valid, rng.standard_normal((n, horizon)), 0.0)
    terminated = rng.random(n) < 0.5
    bootstrap = rng.standard_normal(n)
    adv, ret = gae(rewards, values, valid, terminated, ~terminated, bootstrap, gamma=0.99, lam=0.95)
    got_adv, got_ret = nt.gae(rewards, values, valid, terminated, bootstrap, 0.99, 0.95)
    np.testing.assert_array_equal(got_adv, adv)  # same operations in the same order
    np.testing.assert_array_equal(got_ret, ret)
    np.testing.assert_allclose(
        nt.masked_whiten(adv, valid), masked_whiten(adv, valid), rtol=1e-12, atol=1e-14
    )


def test_masked_whiten_hand():
    # valid entries 1, 2, 3: mean 2, population std sqrt(2/3); padding 0
    adv = np.array([[1.0, 2.0], [3.0, 99.0]])
    valid = np.array([[True, True], [True, False]])
    s = np.sqrt(2.0 / 3.0) + 1e-8
    np.testing.assert_allclose(
        nt.masked_whiten(adv, valid), [[-1 / s, 0.0], [1 / s, 0.0]], rtol=1e-15
    )


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_advantages_match_fastlmrl(scale):
    # hand: group (0, 1): mean 0.5, sample std sqrt(0.5) -> +-0.5 / (sqrt(0.5) + 1e-4)
    hand = nt.grpo_advantages(np.array([0.0, 1.0]), 2)
    np.testing.assert_allclose(hand, [-0.5, 0.5] / (np.sqrt(0.5) + 1e-4), rtol=1e-15)
    scores = np.random.default_rng(2).integers(0, 3, 48).astype(np.float64)
    np.testing.assert_allclose(
        nt.grpo_advantages(scores, 8, scale),
        grpo_advantages(scores, group_size=8, scale=scale),
        rtol=1e-12,
        atol=1e-15,
    )


@pytest.mark.parametrize("mode", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_loss_weights_match_fastlmrl(mode):
    lengths = np.array([3, 0, 5, 1])
    valid = np.arange(6)[None, :] < lengths[:, None]
    expected = loss_weights(valid, mode)
    got = np.where(valid, nt.loss_weights(lengths, 6, mode)[:, None], 0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-15)


@pytest.mark.parametrize("with_ref", [False, True])
def test_ppo_loss_matches_fastlmrl(float_dtype, with_ref, backend):
    rng = np.random.default_rng(3)
    n, v = 300, 17
    logits = (2.0 * rng.standard_normal((n, v))).astype(float_dtype)
    tokens = rng.integers(0, v, n)
    x = logits.astype(np.float64)
    lse = np.log(np.exp(x).sum(axis=1))
    # old log-probs near the current ones, so that some ratios leave [0.8, 1.2]
    old = x[np.arange(n), tokens] - lse + 0.3 * rng.standard_normal(n)
    adv = rng.standard_normal(n)
    w = rng.random(n) / n
    ref = old + 0.1 * rng.standard_normal(n) if with_ref else None
    kl_coef = 0.1 if with_ref else 0.0
    res = ppo_loss(
        logits,
        tokens,
        old,
        adv,
        weights=w,
        clip_low=0.2,
        clip_high=0.28,
        ref_log_probs=ref,
        kl_coef=kl_coef,
    )
    loss, grad, clip_fraction, approx_kl, kl_loss = nt.ppo_loss(
        logits, tokens, old, adv, w, 0.2, 0.28, ref, kl_coef
    )
    assert 0.05 < res.clip_fraction < 0.95
    assert grad.dtype == np.float64  # unrounded per-token rows (fastlmrl rounds to the dtype)
    rtol = RTOL[float_dtype]
    np.testing.assert_allclose(loss, res.loss, rtol=rtol)
    np.testing.assert_allclose(grad, res.grad_logits, rtol=rtol, atol=1e-12)
    # fastlmrl.ppo_loss rounds the weights to the logits dtype; the baseline keeps them float64
    np.testing.assert_allclose(clip_fraction, res.clip_fraction, rtol=rtol)
    np.testing.assert_allclose(approx_kl, res.approx_kl_k3, rtol=rtol)
    np.testing.assert_allclose(kl_loss, res.kl_loss, rtol=rtol)


@pytest.mark.parametrize("with_ref", [False, True])
def test_grouped_ppo_loss_matches_fastlmrl_tabular(float_dtype, with_ref, backend):
    rng = np.random.default_rng(13)
    s, v, n = 40, 11, 500
    table = (2.0 * rng.standard_normal((s, v))).astype(float_dtype)
    contexts = rng.integers(0, s // 2, n)
    tokens = rng.integers(0, v, n)
    x = table.astype(np.float64)
    lse = np.log(np.exp(x).sum(axis=1))
    old = x[contexts, tokens] - lse[contexts] + 0.3 * rng.standard_normal(n)
    adv = rng.standard_normal(n)
    w = rng.random(n) / n
    ref = old + 0.1 * rng.standard_normal(n) if with_ref else None
    kl_coef = 0.1 if with_ref else 0.0
    res = fastlmrl.ppo_loss_tabular(
        table,
        contexts,
        tokens,
        old,
        adv,
        weights=w,
        clip_low=0.2,
        clip_high=0.28,
        ref_log_probs=ref,
        kl_coef=kl_coef,
    )
    loss, rows, grad, clip_fraction, approx_kl, kl_loss = nt.ppo_loss_grouped(
        table, contexts, tokens, old, adv, w, 0.2, 0.28, ref, kl_coef
    )
    rtol = RTOL[float_dtype]
    np.testing.assert_array_equal(rows, res.rows)
    np.testing.assert_allclose(grad.astype(float_dtype), res.grad_rows, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(loss, res.loss, rtol=rtol)
    np.testing.assert_allclose(clip_fraction, res.clip_fraction, rtol=1e-12)
    np.testing.assert_allclose(approx_kl, res.approx_kl_k3, rtol=rtol)
    np.testing.assert_allclose(kl_loss, res.kl_loss, rtol=rtol)
    # and the dense formulation summed per context is the same gradient
    _, dense, *_ = nt.ppo_loss(table[contexts], tokens, old, adv, w, 0.2, 0.28, ref, kl_coef)
    ids, sums = nt.scatter_rows(contexts, dense)
    np.testing.assert_array_equal(ids, rows)
    np.testing.assert_allclose(sums, grad, rtol=1e-10, atol=1e-14)


def test_ppo_loss_hand():
    # one token, 2 equal logits: p = (0.5, 0.5), logp(a=0) = log 0.5.  old = log 0.5 -> rho = 1,
    # unclipped; A = 2, w = 1: loss = -2, dl/dlogp = -2, grad = -2 * (1 - 0.5, -0.5) = (-1, 1).
    loss, grad, clip_fraction, approx_kl, _ = nt.ppo_loss(
        np.zeros((1, 2)),
        np.array([0]),
        np.array([np.log(0.5)]),
        np.array([2.0]),
        np.array([1.0]),
        0.2,
        0.2,
    )
    np.testing.assert_allclose(loss, -2.0, rtol=1e-15)
    np.testing.assert_allclose(grad, [[-1.0, 1.0]], rtol=1e-15)
    assert clip_fraction == 0.0 and abs(approx_kl) < 1e-15


@pytest.mark.parametrize("scatter", ["reduceat", "add.at"])
def test_adam_step_matches_fastlmrl(float_dtype, scatter, backend):
    rng = np.random.default_rng(4)
    s, v = 30, 7
    initial = rng.standard_normal((s, v)).astype(float_dtype)
    tables = [initial.copy(), initial.copy()]
    moments = [(np.zeros((s, v), float_dtype), np.zeros((s, v), float_dtype)) for _ in range(2)]
    for step in (1, 2, 3):
        rows = rng.integers(0, s, 80)  # repeated ids accumulate
        grads = rng.standard_normal((80, v)).astype(float_dtype)
        adam_step(tables[0], rows, grads, *moments[0], step, 0.05)
        nt.adam_step(tables[1], *moments[1], step, rows, grads, 0.05, scatter=scatter)
    # np.add.at sums in index order like fastlmrl, and the float64 formula is the same: equal to
    # the last bit.  np.add.reduceat may order a run's additions differently (1 ulp of float64).
    rtol = 0.0 if scatter == "add.at" else 1e-13
    for got, expected in (
        (tables[1], tables[0]),
        (moments[1][0], moments[0][0]),
        (moments[1][1], moments[0][1]),
    ):
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=0.0)


def test_adam_step_hand():
    # t = 1, g = 2 on row 1 (two rows of 1): m = 0.2, v = 0.004, m_hat = 2, v_hat = 4,
    # step = lr * 2 / (2 + eps) = lr (to 1e-8); rows 0 untouched.
    table = np.zeros((2, 1))
    m, v = np.zeros((2, 1)), np.zeros((2, 1))
    nt.adam_step(table, m, v, 1, np.array([1, 1]), np.ones((2, 1)), 0.1)
    np.testing.assert_allclose(table, [[0.0], [-0.1]], rtol=1e-7)
    np.testing.assert_allclose(m, [[0.0], [0.2]], rtol=1e-15)
    np.testing.assert_allclose(v, [[0.0], [0.004]], rtol=1e-12)


# --- rollouts and whole iterations ------------------------------------------------------------


def test_rollout_matches_fastlmrl(task, backend):
    numpy_trainer = nt.NumpyPPO(task, PPOConfig(num_sequences=B), seed=7)
    stream = RandomStream(7)
    expected = task.env.rollout(task.initial_policy, stream, num_sequences=B)
    got = numpy_trainer.rollout(num_sequences=B)
    numpy_trainer.score(got)
    for name in (
        "contexts",
        "actions",
        "valid",
        "lengths",
        "terminated",
        "final_contexts",
        "prompt_ids",
    ):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
    assert got.log_probs.dtype == expected.log_probs.dtype
    _close(got.log_probs, expected.log_probs, task.initial_policy.dtype, atol=1e-12)
    np.testing.assert_array_equal(got.scores, expected.scores)
    np.testing.assert_array_equal(got.rewards, expected.rewards)
    assert numpy_trainer.stream == stream
    # GRPO layout: explicit prompt ids, no prompt draws
    ids = np.repeat(np.arange(8) % task.env.num_prompts, 8)
    expected = task.env.rollout(task.initial_policy, stream, prompt_ids=ids)
    got = numpy_trainer.rollout(prompt_ids=ids)
    np.testing.assert_array_equal(got.actions, expected.actions)
    np.testing.assert_array_equal(got.lengths, expected.lengths)
    assert numpy_trainer.stream == stream


def _compare_trainers(fast, slow, dtype, keys):
    m_fast, m_slow = fast.train(1)[-1], slow.train(1)[-1]
    assert m_slow["tokens"] == m_fast["tokens"]
    assert m_slow["score"] == m_fast["score"]
    assert slow.stream == fast.stream
    # diagnostics such as the KL to the reference are differences of float32-rounded
    # log-probabilities: absolute agreement ~1e-7 per token in float32
    atol = 1e-6 if dtype == np.float32 else 1e-10
    for key in keys:
        np.testing.assert_allclose(m_slow[key], m_fast[key], rtol=1e-4, atol=atol, err_msg=key)
    # the update itself: what Adam changed, and the moments.  A float32 table entry may round to
    # the neighbouring float32 when the two steps differ in their last bits (fastlmrl's float32
    # exp is within 1 ulp, NumPy's float64 one exact): up to one spacing of the table's values.
    initial = fast.task.initial_policy
    one_rounding = float(np.spacing(np.abs(fast.policy)).max()) if dtype == np.float32 else 1e-7
    _close(slow.policy - initial, fast.policy - initial, dtype, atol=one_rounding)
    _close(slow.optimizer.m, fast.optimizer.m, dtype, atol=1e-9)
    _close(slow.optimizer.v, fast.optimizer.v, dtype, atol=1e-12)
    assert slow.optimizer.t == fast.optimizer.t
    return m_fast, m_slow


@pytest.mark.parametrize("grouped", [False, True], ids=["dense", "grouped"])
def test_ppo_iteration_matches_fastlmrl(task, compiled, grouped):
    name = compiled.__name__.split("_")[-1]
    dtype = task.initial_policy.dtype
    config = PPOConfig(num_sequences=B)
    with fastlmrl.use_backend(name):
        fast = PPOTrainer(task, config, seed=3)
        slow = nt.NumpyPPO(task, config, seed=3, grouped=grouped)
        _compare_trainers(
            fast, slow, dtype, ("reward", "length", "kl", "entropy", "clip_fraction", "approx_kl")
        )
        # the advantages and returns fastlmrl computes from the same batch and values
        last = slow.last
        batch = last["batch"]
        adv, ret = gae(
            batch.rewards,
            last["values"],
            batch.valid,
            batch.terminated,
            ~batch.terminated,
            last["bootstrap"],
            gamma=config.gamma,
            lam=config.lam,
        )
        np.testing.assert_array_equal(last["advantages"], adv)
        np.testing.assert_array_equal(last["returns"], ret)
        np.testing.assert_allclose(
            last["adv"], masked_whiten(adv, batch.valid)[batch.valid], rtol=1e-12, atol=1e-14
        )
        _close(slow.values, fast.values, dtype, atol=1e-9)
        assert slow.value_optimizer.t == fast.value_optimizer.t == 16
        # a second iteration still agrees (explained variance needs a trained value table)
        m_fast, m_slow = fast.train(1)[-1], slow.train(1)[-1]
        assert m_slow["tokens"] == m_fast["tokens"]
        np.testing.assert_allclose(
            m_slow["explained_variance"], m_fast["explained_variance"], rtol=1e-3, atol=1e-6
        )


@pytest.mark.parametrize("grouped", [False, True], ids=["dense", "grouped"])
def test_grpo_iteration_matches_fastlmrl(task, compiled, grouped):
    name = compiled.__name__.split("_")[-1]
    dtype = task.initial_policy.dtype
    config = GRPOConfig(num_prompts=B // 8, group_size=8, epochs=2)
    with fastlmrl.use_backend(name):
        fast = GRPOTrainer(task, config, seed=5)
        slow = nt.NumpyGRPO(task, config, seed=5, grouped=grouped)
        _compare_trainers(
            fast,
            slow,
            dtype,
            ("reward", "length", "kl", "entropy", "clip_fraction", "approx_kl", "kl_loss"),
        )
        np.testing.assert_allclose(
            slow.last["seq_adv"],
            grpo_advantages(slow.last["batch"].scores, group_size=8),
            rtol=1e-12,
        )


def test_numpy_baseline_rejects_what_it_does_not_implement(task):
    with pytest.raises(ValueError, match="ratio_level"):
        nt.NumpyGRPO(task, GRPOConfig(ratio_level="sequence"))
