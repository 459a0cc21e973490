"""Benchmarks: keyword / lexicon scores (:mod:`fastlmrl.keyword_scores`) and the KeywordReward that
uses them.

    pytest benchmarks/bench_keyword_scores.py --benchmark-enable --benchmark-group-by=group \\
        --benchmark-columns=mean,ops

Sizes: B = 256 and 1024 responses of T = 48 tokens (lengths uniform in [T/2, T]) over a vocabulary
of 52, with K = 7 keywords of 1-4 tokens (each row also holds two planted keyword occurrences), as
in the PPO / GRPO trainers on the character task.  Items = B*T token positions per call.

``keyword_scores``: the raw kernels (python reference on 16 rows, numba, cython) and ``numpy``,
the NumPy formula KeywordReward used before this topic (per key: an (B, T) match array, the valid
mask, ``out += w * hits``); all return the same (B, T) array bit for bit.

``keyword_reward``: ``KeywordReward.compute`` (terminal: per-token scores summed over t) under
numba and cython, against ``numpy`` (the former NumPy compute), and ``__call__`` (argument and
output validation included) under numba.
"""

import functools

import numpy as np
import pytest
from conftest import measure
from numpy_trainers import keyword_scores_per_token as numpy_keyword_scores

import fastlmrl
from fastlmrl.keyword_scores import _flatten_grams
from fastlmrl.rewards import KeywordReward

SIZES = [(256, 48), (1024, 48)]
VOCAB = 52
GRAMS = [(7,), (19,), (3, 11), (40, 40), (5, 6, 7), (12, 30, 12), (20, 21, 22, 23)]
WEIGHTS = [1.0, 0.5, 2.0, -1.0, 1.5, 3.0, 0.25]
PYTHON_ROWS = 16


def size_id(size):
    return f"B{size[0]}xT{size[1]}"


@functools.cache
def batch(size):
    n, horizon = size
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB, (n, horizon))
    lengths = rng.integers(horizon // 2, horizon + 1, n)
    for b in range(n):  # two planted keyword occurrences per row (inside or past the length)
        for k in rng.integers(0, len(GRAMS), 2):
            gram = GRAMS[k]
            s = rng.integers(0, horizon - len(gram) + 1)
            tokens[b, s : s + len(gram)] = gram
    return tokens, lengths


@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_keyword_scores(benchmark, kernels, size):
    name, module = kernels
    tokens, lengths = batch(size)
    if name == "python":
        tokens, lengths = tokens[:PYTHON_ROWS], lengths[:PYTHON_ROWS]
    gram_tokens, offsets = _flatten_grams(GRAMS)
    weights = np.array(WEIGHTS)
    out = np.empty(tokens.shape)
    args = (tokens, lengths, gram_tokens, offsets, weights, 0, np.zeros(0, np.uint8), out)
    assert module.keyword_scores(*args) == 0
    np.testing.assert_array_equal(out, numpy_keyword_scores(tokens, lengths, GRAMS, WEIGHTS))
    measure(
        benchmark,
        module.keyword_scores,
        *args,
        items=tokens.size,
        group=f"keyword_scores {size_id(size)} K{len(GRAMS)}",
    )


@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_keyword_scores_numpy(benchmark, size):
    tokens, lengths = batch(size)
    measure(
        benchmark,
        numpy_keyword_scores,
        tokens,
        lengths,
        GRAMS,
        WEIGHTS,
        items=tokens.size,
        group=f"keyword_scores {size_id(size)} K{len(GRAMS)}",
    )


@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("impl", ["numba", "cython", "numpy"])
def test_keyword_reward(benchmark, impl, size):
    tokens, lengths = batch(size)
    reward = KeywordReward(dict(zip(GRAMS, WEIGHTS)))
    group = f"keyword_reward {size_id(size)} K{len(GRAMS)}"
    if impl == "numpy":
        measure(
            benchmark,
            lambda: numpy_keyword_scores(tokens, lengths, GRAMS, WEIGHTS).sum(1),
            items=tokens.size,
            group=group,
        )
        return
    with fastlmrl.use_backend(impl):
        measure(benchmark, reward.compute, tokens, lengths, None, items=tokens.size, group=group)


@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_keyword_reward_call(benchmark, size):
    """KeywordReward.__call__ under numba: argument checks + kernel + output validation."""
    tokens, lengths = batch(size)
    reward = KeywordReward(dict(zip(GRAMS, WEIGHTS)))
    with fastlmrl.use_backend("numba"):
        got = measure(
            benchmark,
            reward,
            tokens,
            lengths,
            items=tokens.size,
            group=f"keyword_reward {size_id(size)} K{len(GRAMS)}",
        )
    np.testing.assert_array_equal(got, numpy_keyword_scores(tokens, lengths, GRAMS, WEIGHTS).sum(1))
