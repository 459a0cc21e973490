"""Benchmarks: fused policy-gradient losses + gradient wrt the logits (PPO, GSPO, REINFORCE, KL,
A2C).

    pytest benchmarks/bench_policy_losses.py --benchmark-enable --benchmark-group-by=group \
        --benchmark-columns=mean,ops

Parametrised implementation (python reference / numba / cython / numpy-vectorised / jax if
installed) × loss × size, float32 logits; ``extra_info``: tokens/s (``M_items_per_s``) and GB/s of
logits read + gradient written.  Compare with the ``copy`` rows of bench_log_probs.py (streaming
copy bandwidth in the same run).  Issue targets: PPO at (4096, 50257) >= 30k tokens/s and >= 10x
NumPy; at (65536, 64) >= 15 M tokens/s.
"""

import functools
import importlib.util

import numpy as np
import pytest
from conftest import measure

import fastlmrl

SIZES = [(65536, 64), (4096, 50257), (512, 151936)]
LOSSES = ["ppo", "gspo", "reinforce", "kl_penalty", "a2c"]
IMPLS = ["python", "numba", "cython", "numpy", "jax"]
REFERENCE_ROWS = {64: 256, 50257: 2, 151936: 1}
HAS_JAX = importlib.util.find_spec("jax") is not None
# Timed calls per case: a few milliseconds per call at (65536, 64) -- 20 rounds so that one
# preempted round (2 shared cores) does not decide the mean; 3 for the large vocabularies.
SMALL_ELEMENTS = 1 << 23


def rounds_for(n, v):
    return 20 if n * v <= SMALL_ELEMENTS else 3


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
    per = {k: rng.standard_normal(n).astype(np.float32) for k in ("adv", "values", "returns")}
    per["old"] = (rng.standard_normal(n) * 0.1 - 10).astype(np.float32)
    per["ref"] = (rng.standard_normal(n) * 0.1 - 10).astype(np.float32)
    per["w"] = np.full(n, 1.0 / n, dtype=np.float32)
    offsets = np.arange(0, n + 1, 256)
    if offsets[-1] != n:
        offsets = np.append(offsets, n)
    return x, tokens, per, offsets, np.empty_like(x)


def call(loss, x, t, per, offsets, out, rows):
    sl = slice(0, rows)
    p = {k: v[sl] for k, v in per.items()}
    if loss == "ppo":
        return fastlmrl.ppo_loss(
            x, t, p["old"], p["adv"], p["w"], clip_low=0.2, clip_high=0.28, out=out
        )
    if loss == "gspo":
        offs = offsets[offsets <= rows]
        if offs[-1] != rows:
            offs = np.append(offs, rows)
        return fastlmrl.ppo_loss(
            x, t, p["old"], p["adv"], p["w"], ratio_level="sequence", sequence_offsets=offs, out=out
        )
    if loss == "reinforce":
        return fastlmrl.reinforce_loss(x, t, p["returns"], p["w"], baseline="mean", out=out)
    if loss == "kl_penalty":
        return fastlmrl.kl_penalty_loss(x, t, p["ref"], p["w"], "k3", out=out)
    return fastlmrl.a2c_loss(x, t, p["adv"], p["values"], p["returns"], p["w"], out=out)


def numpy_ppo(x, t, old, adv, w, out, eps_low=0.2, eps_high=0.28):
    """The usual vectorised NumPy PPO loss + gradient (log_softmax, gather, clip, softmax grad)."""
    m = x.max(axis=1, keepdims=True)
    z = x - m
    lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
    logp = (z - lse)[np.arange(x.shape[0]), t]
    ratio = np.exp(logp - old)
    un, cl = -adv * ratio, -adv * np.clip(ratio, 1 - eps_low, 1 + eps_high)
    loss = np.sum(w * np.maximum(un, cl))
    coef = w * np.where(un >= cl, -adv * ratio, 0.0)
    np.exp(z - lse, out=out)
    out *= -coef[:, None]
    out[np.arange(x.shape[0]), t] += coef
    return loss, out


def jax_ppo():
    import jax
    import jax.numpy as jnp

    def loss_fn(x, t, old, adv, w):
        logp = jnp.take_along_axis(jax.nn.log_softmax(x), t[:, None], 1)[:, 0]
        ratio = jnp.exp(logp - old)
        return jnp.sum(w * jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, 0.8, 1.28)))

    return jax.jit(jax.value_and_grad(loss_fn))


@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("impl", IMPLS)
def test_policy_loss(benchmark, impl, loss, size):
    n, v = size
    group = f"policy_losses {loss} {size_id(size)}"
    if impl in ("numpy", "jax") and loss != "ppo":
        pytest.skip("the vectorised baselines are written for the PPO loss")
    x, tokens, per, offsets, out = data(size)
    if impl == "jax":
        if not HAS_JAX:
            pytest.skip("jax is not installed")
        import jax.numpy as jnp

        fn = jax_ppo()
        args = [jnp.asarray(a) for a in (x, tokens, per["old"], per["adv"], per["w"])]
        measure(
            benchmark,
            lambda: fn(*args)[1].block_until_ready(),
            items=n,
            group=group,
            rounds=rounds_for(n, v),
        )
        rows = n
    elif impl == "numpy":
        rows = n if n * v <= 50_000_000 else max(1, 50_000_000 // v)
        sl = slice(0, rows)
        measure(
            benchmark,
            numpy_ppo,
            x[sl],
            tokens[sl],
            per["old"][sl],
            per["adv"][sl],
            per["w"][sl],
            out[sl],
            items=rows,
            group=group,
            rounds=rounds_for(n, v),
        )
    else:
        rows = REFERENCE_ROWS[v] if impl == "python" else n
        with fastlmrl.use_backend(impl):
            measure(
                benchmark,
                call,
                loss,
                x[:rows],
                tokens[:rows],
                per,
                offsets,
                out[:rows],
                rows,
                items=rows,
                group=group,
                rounds=rounds_for(n, v),
            )
    benchmark.extra_info["GB_per_s"] = round(2 * rows * v * 4 / benchmark.stats.stats.mean / 1e9, 2)


OUTPUT_MODES = ["out=array", "out=OutputBuffer", "out=None"]


@pytest.mark.parametrize("mode", OUTPUT_MODES)
@pytest.mark.parametrize("impl", ["numba", "cython"])
def test_ppo_loss_output(benchmark, impl, mode):
    """PPO at (4096, 50257) float32 with a preallocated ``out``, an ``OutputBuffer`` reused from
    call to call, and a fresh gradient per call (0.8 GB of new pages, zeroed by the OS at their
    first write).  Issue target: ``out=None`` >= 80% of the ``out=array`` speed -- met through
    the OutputBuffer (a fresh gradient cannot avoid the page zeroing).  For the three ratios
    measured interleaved in one run: ``python benchmarks/bench_policy_losses.py``."""
    x, tokens, per, offsets, out = data((4096, 50257))
    target = {"out=array": out, "out=OutputBuffer": fastlmrl.OutputBuffer(), "out=None": None}[mode]
    with fastlmrl.use_backend(impl):
        measure(
            benchmark,
            lambda: fastlmrl.ppo_loss(x, tokens, per["old"], per["adv"], per["w"], out=target),
            items=4096,
            group=f"policy_losses ppo output N4096xV50257 {impl}",
            rounds=5,
        )


def output_ratios(rounds=5):
    """The speed of each output mode relative to ``out=array``, the modes interleaved per round
    (best of ``rounds``), per compiled backend."""
    import time

    x, tokens, per, offsets, out = data((4096, 50257))
    for impl in ("numba", "cython"):
        buf = fastlmrl.OutputBuffer()
        targets = {"out=array": out, "out=OutputBuffer": buf, "out=None": None}
        best = {}
        with fastlmrl.use_backend(impl):
            for r in range(rounds + 1):  # the first round warms up
                for mode, target in targets.items():
                    t = time.perf_counter()
                    fastlmrl.ppo_loss(x, tokens, per["old"], per["adv"], per["w"], out=target)
                    dt = time.perf_counter() - t
                    if r:
                        best[mode] = min(best.get(mode, dt), dt)
        base = best["out=array"]
        for mode in OUTPUT_MODES:
            print(
                f"ppo_loss (4096, 50257) f32 {impl:6s} {mode:17s} {4096 / best[mode]:9.0f} "
                f"tokens/s  {base / best[mode]:.2f} of out=array"
            )


if __name__ == "__main__":
    output_ratios()
