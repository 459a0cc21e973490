"""Sparse SGD and lazy Adam steps over gradient rows, backend × kernel × size.

float32 tables (as for logits); rows drawn with repeats from [0, S); ``order`` (the stable argsort
the public wrapper computes) and the float64 scratch row are preallocated, so the raw kernel is
what is timed.  ``items`` = gradient entries per call (N × V).  The reference gets fewer rows
(``PY_ROWS``).

    pytest benchmarks/bench_optimizers.py --benchmark-enable --benchmark-group-by=group \
        --benchmark-columns=mean,ops
"""
import numpy as np
import pytest

from conftest import measure

# ((S, V), N rows per step) from the optimizers issue
CASES = [((65536, 64), 4096), ((4096, 50257), 64)]
PY_ROWS = {4096: 128, 64: 2}


def case_id(case):
    (s, v), n = case
    return f"S{s}xV{v}-N{n}"


def batch(size, n, seed=0):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, size[0], n)
    grads = rng.standard_normal((n, size[1]), dtype=np.float32)
    order = np.argsort(rows, kind="stable").astype(np.int64)
    return rows, grads, order, np.empty(size[1])


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("kernel", ["sgd_step", "adam_step"])
def test_optimizer_step(benchmark, kernels, case, kernel):
    name, module = kernels
    size, n = case
    if name == "python":
        n = PY_ROWS[n]
    table = np.random.default_rng(1).standard_normal(size, dtype=np.float32)
    rows, grads, order, acc = batch(size, n)
    if kernel == "sgd_step":
        args = (table, rows, grads, order, 1e-3, False, acc)
    else:
        m, v = np.zeros(size, np.float32), np.zeros(size, np.float32)
        args = (table, rows, grads, order, m, v, np.int64(10), 1e-3, 0.9, 0.999, 1e-8, False,
                acc)
    status = measure(benchmark, getattr(module, kernel), *args, items=n * size[1],
                     group=f"{kernel} {case_id(case)}")
    assert status == 0
