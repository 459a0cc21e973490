"""Benchmarks: log-sum-exp, selective log-probs, entropy, log-softmax and d log pi / d logits.

    pytest benchmarks/bench_log_probs.py --benchmark-enable --benchmark-group-by=group \
        --benchmark-columns=mean,ops

Parametrised backend (python reference / numba / cython / numpy-vectorised / jax if installed) ×
kernel × size, float32 logits.  ``extra_info``: tokens/s (``M_items_per_s``) and the GB/s of logits
read plus outputs written, next to a streaming-copy bandwidth (``copy`` rows) measured in the
same run.  The reference runs on a few rows only (per-token rates compare).
"""

import functools
import importlib.util

import numpy as np
import pytest
from conftest import measure

import fastlmrl

SIZES = [(65536, 64), (4096, 50257), (512, 151936)]
KERNELS = ["logsumexp", "token_log_probs", "entropy", "log_softmax", "log_prob_grad"]
IMPLS = ["python", "numba", "cython", "numpy", "jax"]
REFERENCE_ROWS = {64: 256, 50257: 2, 151936: 1}
HAS_JAX = importlib.util.find_spec("jax") is not None


def size_id(size):
    return f"N{size[0]}xV{size[1]}"


@functools.lru_cache(maxsize=1)
def data(size):
    rng = np.random.default_rng(0)
    n, v = size
    x = np.empty((n, v), dtype=np.float32)
    for i in range(0, n, 256):
        x[i : i + 256] = rng.standard_normal((min(256, n - i), v), dtype=np.float32) * 2
    tokens = rng.integers(0, v, n)
    return x, tokens, np.empty_like(x)


def np_log_softmax(x):
    m = x.max(axis=1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))


NUMPY = {
    "logsumexp": lambda x, t, o: x.max(1) + np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)),
    "token_log_probs": lambda x, t, o: np_log_softmax(x)[np.arange(x.shape[0]), t],
    "entropy": lambda x, t, o: -(np.exp(ls := np_log_softmax(x)) * ls).sum(1),
    "log_softmax": lambda x, t, o: np_log_softmax(x),
    "log_prob_grad": lambda x, t, o: _np_grad(x, t, o),
}


def _np_grad(x, t, out):
    np.negative(np.exp(np_log_softmax(x)), out=out)
    out[np.arange(x.shape[0]), t] += 1.0
    return out


def _jax_fns():
    import jax
    import jax.numpy as jnp

    ls = jax.nn.log_softmax
    return {
        "logsumexp": jax.jit(lambda x, t: jax.scipy.special.logsumexp(x, axis=1)),
        "token_log_probs": jax.jit(lambda x, t: jnp.take_along_axis(ls(x), t[:, None], 1)[:, 0]),
        "entropy": jax.jit(lambda x, t: -(jnp.exp(ls(x)) * ls(x)).sum(1)),
        "log_softmax": jax.jit(lambda x, t: ls(x)),
        "log_prob_grad": jax.jit(lambda x, t: jax.nn.one_hot(t, x.shape[1]) - jax.nn.softmax(x)),
    }


def _bytes(kernel, rows, v):
    writes = rows * v * 4 if kernel in ("log_softmax", "log_prob_grad") else rows * 4
    return rows * v * 4 + writes


@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_copy_bandwidth(benchmark, size):
    """Streaming copy of the logits (read + write) -- the memory-bandwidth yardstick."""
    x, _, out = data(size)
    measure(
        benchmark, np.copyto, out, x, items=x.shape[0], group=f"log_probs {size_id(size)}", rounds=3
    )
    benchmark.extra_info["GB_per_s"] = round(2 * x.nbytes / benchmark.stats.stats.mean / 1e9, 2)


@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("impl", IMPLS)
def test_log_probs(benchmark, impl, kernel, size):
    x, tokens, out = data(size)
    n, v = size
    group = f"log_probs {kernel} {size_id(size)}"
    if impl == "jax":
        if not HAS_JAX:
            pytest.skip("jax is not installed")
        import jax.numpy as jnp

        fn = _jax_fns()[kernel]
        xj, tj = jnp.asarray(x), jnp.asarray(tokens)
        measure(benchmark, lambda: fn(xj, tj).block_until_ready(), items=n, group=group, rounds=3)
        rows = n
    elif impl == "numpy":
        if n * v > 50_000_000:  # keep NumPy's (N, V) temporaries in memory: time a slice
            rows = max(1, 50_000_000 // v)
        else:
            rows = n
        xs, ts, os_ = x[:rows], tokens[:rows], out[:rows]
        measure(benchmark, NUMPY[kernel], xs, ts, os_, items=rows, group=group, rounds=3)
    else:
        rows = REFERENCE_ROWS[v] if impl == "python" else n
        xs, ts = x[:rows], tokens[:rows]
        with fastlmrl.use_backend(impl):
            f = getattr(fastlmrl, kernel)
            if kernel == "log_prob_grad":
                args = (xs, ts, out[:rows])
            elif kernel == "log_softmax":
                args = (xs, out[:rows])
            elif kernel == "token_log_probs":
                args = (xs, ts)
            else:
                args = (xs,)
            measure(benchmark, f, *args, items=rows, group=group, rounds=3)
    benchmark.extra_info["GB_per_s"] = round(
        _bytes(kernel, rows, v) / benchmark.stats.stats.mean / 1e9, 2
    )
