"""Token environments: env stepping and full rollouts, tokens per second, per backend.

Size from the issue: B = 1024 sequences, T = 64 tokens, V = 96 (a character vocabulary), k = 2
(S = V**2 = 9216 contexts).  Items are generated tokens per call.  The pure-Python reference runs
on a smaller batch; a NumPy-vectorised implementation (one vectorised step per token position) is
the baseline the kernels must beat.

Run: pytest benchmarks/bench_environments.py --benchmark-enable --benchmark-group-by=group
"""

import numpy as np
import pytest
from conftest import measure, random_table

import fastlmrl
from fastlmrl import TextGenerationEnv
from fastlmrl.rng import stream_key

V, K, T = 96, 2, 64
S = V**K
BATCH = {"python": 16, "numba": 1024, "cython": 1024}
PROMPTS = [list(np.random.default_rng(i).integers(2, V, 5)) for i in range(32)]


def _prompt_arrays(n):
    tokens = np.concatenate([np.asarray(p, np.int64) for p in PROMPTS])
    offsets = np.zeros(len(PROMPTS) + 1, np.int64)
    offsets[1:] = np.cumsum([len(p) for p in PROMPTS])
    ids = np.arange(n, dtype=np.int64) % len(PROMPTS)
    return tokens, offsets, ids


def test_env_step(benchmark, kernels):
    """T batch steps (one kernel call each) with given actions, EOS disabled: B*T tokens."""
    name, module = kernels
    n = BATCH[name]
    actions = np.random.default_rng(0).integers(2, V, (T, n))
    active = np.ones(n, np.uint8)
    contexts = np.zeros(n, np.int64)
    lengths = np.zeros(n, np.int64)
    tokens = np.zeros((n, T), np.int64)
    term = np.zeros(n, np.uint8)
    trunc = np.zeros(n, np.uint8)
    step = module.text_env_step

    def run():
        lengths[:] = 0
        for t in range(T):
            step(V, K, -1, T, actions[t], active, contexts, lengths, tokens, term, trunc)

    measure(benchmark, run, items=n * T, group=f"env step B{n}xT{T} V{V} k{K}")
    assert lengths.min() == T


def test_env_step_public(benchmark, kernels):
    """TextGenerationEnv.step (Gymnasium-style API, validation, no reward): B*T tokens."""
    name, _ = kernels
    n = BATCH[name]
    env = TextGenerationEnv(
        PROMPTS, vocab_size=V, order=K, max_new_tokens=T, num_envs=n, eos_id=None
    )
    actions = np.random.default_rng(0).integers(2, V, (T, n))

    def run():
        env.reset(seed=0)
        for t in range(T):
            env.step(actions[t])

    with fastlmrl.use_backend(name):
        measure(benchmark, run, items=n * T, group=f"env step B{n}xT{T} V{V} k{K}")


def test_rollout_kernel(benchmark, kernels):
    """One kernel call: B sequences x T tokens sampled from a (V**k, V) float32 logits table."""
    name, module = kernels
    n = BATCH[name]
    logits = random_table((S, V), np.float32)
    tokens, offsets, ids = _prompt_arrays(n)
    outs = [
        np.empty((n, T), np.int64),
        np.empty((n, T), np.int64),
        np.empty((n, T), np.float32),
        np.empty((n, T), np.uint8),
        np.empty(n, np.int64),
        np.empty(n, np.uint8),
        np.empty(n, np.uint8),
        np.empty(n, np.int64),
    ]
    scratch = [
        np.empty((S, V)),
        np.empty((S, 3)),
        np.empty(S, np.uint8),
        np.empty((0, V), np.uint8),
    ]
    key = np.uint64(stream_key(0))
    args = (
        logits,
        logits,
        0,
        1.0,
        tokens,
        offsets,
        ids,
        K,
        0,
        -1,
        key,
        np.uint64(0),
        *outs,
        *scratch,
    )
    measure(
        benchmark, module.text_env_rollout, *args, items=n * T, group=f"rollout B{n}xT{T} V{V} k{K}"
    )
    assert outs[4].min() == T


@pytest.mark.parametrize("masking", ["none", "top_k=8"])
def test_rollout_public(benchmark, kernels, masking):
    """TextGenerationEnv.rollout: prompt draws + kernel + a terminal reward, B*T tokens."""
    name, _ = kernels
    n = BATCH[name]
    env = TextGenerationEnv(
        PROMPTS,
        vocab_size=V,
        order=K,
        max_new_tokens=T,
        num_envs=n,
        eos_id=None,
        reward=fastlmrl.LengthPenalty(0.01),
    )
    logits = random_table((S, V), np.float32)
    top_k = 8 if masking != "none" else 0
    with fastlmrl.use_backend(name):
        measure(
            benchmark,
            lambda: env.rollout(logits, seed=0, top_k=top_k),
            items=n * T,
            group=f"rollout public {masking} B{n}xT{T} V{V} k{K}",
        )


def _numpy_rollout(logits, ctx0, us):
    """Vectorised over B, a Python loop over T: softmax rows, inverse CDF, context update."""
    n = ctx0.shape[0]
    ctx = ctx0.copy()
    actions = np.empty((n, T), np.int64)
    logprobs = np.empty((n, T))
    rows = np.arange(n)
    for t in range(T):
        x = logits[ctx].astype(np.float64)
        m = x.max(axis=1, keepdims=True)
        w = np.exp(x - m)
        cdf = np.cumsum(w, axis=1)
        a = (cdf <= (us[:, t] * cdf[:, -1])[:, None]).sum(axis=1)
        actions[:, t] = a
        logprobs[:, t] = x[rows, a] - m[:, 0] - np.log(cdf[:, -1])
        ctx = (ctx * V + a) % S
    return actions, logprobs


def test_rollout_numpy(benchmark):
    n = BATCH["numba"]
    logits = random_table((S, V), np.float32)
    ctx0 = np.random.default_rng(0).integers(0, S, n)
    us = np.random.default_rng(1).random((n, T))
    measure(
        benchmark,
        _numpy_rollout,
        logits,
        ctx0,
        us,
        items=n * T,
        group=f"rollout B{n}xT{T} V{V} k{K}",
    )


def test_env_step_numpy(benchmark):
    """The NumPy version of a batch step: append, context update, EOS / length flags."""
    n = BATCH["numba"]
    actions = np.random.default_rng(0).integers(2, V, (T, n))
    contexts = np.zeros(n, np.int64)
    lengths = np.zeros(n, np.int64)
    tokens = np.zeros((n, T), np.int64)
    rows = np.arange(n)

    def run():
        lengths[:] = 0
        for t in range(T):
            a = actions[t]
            tokens[rows, lengths] = a
            lengths[:] += 1
            contexts[:] = (contexts * V + a) % S
            term = a == 1
            _ = ~term & (lengths >= T)

    measure(benchmark, run, items=n * T, group=f"env step B{n}xT{T} V{V} k{K}")


def test_tabular_mdp_step(benchmark, kernels):
    """tabular_mdp_step on Taxi's table (500 states, 6 actions), B rows x 64 steps with random
    actions, no time limit: B*64 transitions (one uniform each)."""
    from fastlmrl.gym_adapters import tabular_mdp_from_gymnasium

    name, module = kernels
    n, steps = BATCH[name], 64
    mdp = tabular_mdp_from_gymnasium("Taxi-v4")
    actions = np.random.default_rng(0).integers(0, mdp.num_actions, (steps, n))
    active = np.ones(n, np.uint8)
    states = np.zeros(n, np.int64)
    count = np.zeros(n, np.int64)
    rewards = np.zeros(n)
    term = np.zeros(n, np.uint8)
    trunc = np.zeros(n, np.uint8)
    ends = mdp.terminated.view(np.uint8)
    key = np.uint64(stream_key(0))

    def run():
        states[:] = 0
        count[:] = 0
        for t in range(steps):
            module.tabular_mdp_step(
                mdp.offsets,
                mdp.cdf,
                mdp.next_states,
                mdp.rewards,
                ends,
                mdp.num_actions,
                0,
                key,
                np.uint64(t * n),
                actions[t],
                active,
                states,
                count,
                rewards,
                term,
                trunc,
            )

    measure(benchmark, run, items=n * steps, group=f"tabular mdp step B{n}x{steps} Taxi")
    assert count.min() == steps
