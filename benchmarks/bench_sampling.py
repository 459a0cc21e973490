"""sample_tokens over (256, 50257) float32 logits: backend × case × threads, against NumPy and
PyTorch formulations of the same sampler in the same run.  Items are tokens (rows) per call.

Cases: ``plain`` (softmax sampling, temperature 1) and ``k50_p0.9`` (temperature 0.7, top_k = 50,
top_p = 0.9).  Baselines:

* ``numpy``: softmax, cumulative sum and one uniform per row (plain); ``argpartition`` of the 50
  largest, their sorted softmax, the nucleus mask and an inverse CDF (top-k/top-p);
* ``torch``: ``torch.multinomial(torch.softmax(x / T, -1), 1)`` (plain); the transformers
  warpers' arithmetic (``topk``, then ``sort`` + ``cumsum`` nucleus mask) then ``multinomial``
  (top-k/top-p), with ``torch.set_num_threads`` set to the same thread count.

Run: pytest benchmarks/bench_sampling.py --benchmark-enable --benchmark-group-by=group
"""

import numpy as np
import pytest
from conftest import measure

import fastlmrl
from fastlmrl.rng import stream_key

SHAPE = (256, 50257)
CASES = {
    "plain": dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0),
    "k50_p0.9": dict(temperature=0.7, top_k=50, top_p=0.9, min_p=0.0),
}
ROWS = {"python": 2, "numba": SHAPE[0], "cython": SHAPE[0]}


def _logits():
    rng = np.random.default_rng(0)
    return (rng.standard_normal(SHAPE, dtype=np.float64) * 3).astype(np.float32)


LOGITS = _logits()


def _group(case):
    return f"sample_tokens {case} N{SHAPE[0]}xV{SHAPE[1]} f32"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_sample_tokens(benchmark, kernels, case, threads):
    name, module = kernels
    if threads > 1 and name == "python":
        pytest.skip("the reference is single-threaded")
    x = np.ascontiguousarray(LOGITS[: ROWS[name]])
    n = x.shape[0]
    p = CASES[case]
    outs = (np.empty(n, np.int64), np.empty(n, np.float32), np.empty(n, np.float32))
    args = (
        x,
        p["temperature"],
        p["top_k"],
        p["top_p"],
        p["min_p"],
        np.uint64(stream_key(1)),
        np.uint64(0),
        *outs,
        threads,
    )
    fastlmrl.set_num_threads(threads)
    try:
        measure(
            benchmark,
            module.sample_tokens,
            *args,
            items=n,
            group=_group(case),
            rounds=2 if name == "python" else None,
        )
    finally:
        fastlmrl.set_num_threads(None)
    benchmark.extra_info["threads"] = threads


def _numpy_sampler(case):
    p = CASES[case]
    rng = np.random.default_rng(0)

    def plain(x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        c = np.cumsum(e, axis=1, dtype=np.float64)
        u = rng.random(x.shape[0]) * c[:, -1]
        return (c < u[:, None]).argmin(axis=1)

    def top_k_top_p(x):
        k, t = p["top_k"], p["temperature"]
        idx = np.argpartition(-x, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(x, idx, axis=1) / t
        order = np.argsort(-vals, axis=1)
        idx = np.take_along_axis(idx, order, axis=1)
        vals = np.take_along_axis(vals, order, axis=1)
        q = np.exp(vals - vals[:, :1])
        q /= q.sum(axis=1, keepdims=True)
        c = np.cumsum(q, axis=1)
        q[(c - q) >= p["top_p"]] = 0.0  # keep the head until the mass reaches top_p
        c = np.cumsum(q, axis=1)
        u = rng.random(x.shape[0]) * c[:, -1]
        pick = (c <= u[:, None]).sum(axis=1)
        return idx[np.arange(x.shape[0]), np.minimum(pick, k - 1)]

    return plain if case == "plain" else top_k_top_p


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("impl", ["numpy"])
def test_sample_tokens_numpy(benchmark, impl, case):
    measure(benchmark, _numpy_sampler(case), LOGITS, items=SHAPE[0], group=_group(case))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("impl", ["torch"])
def test_sample_tokens_torch(benchmark, impl, case, threads):
    torch = pytest.importorskip("torch")
    p = CASES[case]
    x = torch.from_numpy(LOGITS)
    gen = torch.Generator().manual_seed(0)

    def plain(x):
        return torch.multinomial(torch.softmax(x / p["temperature"], dim=-1), 1, generator=gen)

    def top_k_top_p(x):
        scores = x / p["temperature"]
        kth = torch.topk(scores, p["top_k"], dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, -float("inf"))
        sorted_scores, sorted_idx = torch.sort(scores, descending=False, dim=-1)
        cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= 1 - p["top_p"]
        remove[..., -1:] = False
        scores = scores.scatter(-1, sorted_idx, sorted_scores.masked_fill(remove, -float("inf")))
        return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=gen)

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        measure(
            benchmark,
            plain if case == "plain" else top_k_top_p,
            x,
            items=SHAPE[0],
            group=_group(case),
        )
    finally:
        torch.set_num_threads(previous)
    benchmark.extra_info["threads"] = threads


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("impl", ["fastlmrl.torch"])
def test_sample_tokens_torch_op(benchmark, impl, case):
    """fastlmrl.torch.sample_tokens on the same tensor: the op's overhead over the kernel."""
    pytest.importorskip("torch")
    import torch

    from fastlmrl.torch.sampling import sample_tokens

    x = torch.from_numpy(LOGITS)
    measure(
        benchmark, lambda: sample_tokens(x, 1, **CASES[case]), items=SHAPE[0], group=_group(case)
    )
