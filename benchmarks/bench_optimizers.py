"""Sparse SGD and lazy Adam steps over gradient rows, backend × kernel × size.

float32 tables (as for logits).  Two kinds of batch:

* ``S65536xV64-N4096``, ``S4096xV50257-N64``: rows drawn with repeats from [0, S) (unsorted);
  ``order`` (the stable argsort the public wrapper computes for such rows) and the float64 scratch
  row are preallocated, so the raw kernel is what is timed.
* ``S2704xV52-U300``: the PPO trainer's policy update on the text task: 300 distinct *sorted* rows
  (``rows`` of :func:`fastlmrl.ppo_loss_tabular`), for which the wrapper passes an empty ``order``
  (no sort).  Besides the raw kernel, ``test_optimizer_public_step`` times the whole public call
  (``Adam.step`` / ``SGD.step`` with float64 gradient rows, as the trainers call it: validation,
  conversion to float32, dispatch) for the policy table and for the (S, 1) value table.

``items`` = gradient entries per call (N × V).  The reference gets fewer rows (``PY_ROWS``).

    pytest benchmarks/bench_optimizers.py --benchmark-enable --benchmark-group-by=group \
        --benchmark-columns=mean,ops
"""

import numpy as np
import pytest
from conftest import measure

import fastlmrl

# ((S, V), N rows per step) from the optimizers issue; the last one is the PPO trainer's size
CASES = [((65536, 64), 4096), ((4096, 50257), 64), ((2704, 52), 300)]
SORTED = {(2704, 52)}  # sorted distinct rows, empty order (as the wrapper passes them)
PY_ROWS = {4096: 128, 64: 2, 300: 20}
NO_ORDER = np.empty(0, dtype=np.int64)


def case_id(case):
    (s, v), n = case
    return f"S{s}xV{v}-{'U' if (s, v) in SORTED else 'N'}{n}"


def batch(size, n, seed=0):
    """(rows, grads, order, acc) as the public wrapper passes them to a kernel."""
    rng = np.random.default_rng(seed)
    if size in SORTED:
        rows = np.sort(rng.choice(size[0], n, replace=False))
        order = NO_ORDER
    else:
        rows = rng.integers(0, size[0], n)
        order = np.argsort(rows, kind="stable").astype(np.int64)
    grads = rng.standard_normal((n, size[1]), dtype=np.float32)
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
        args = (table, rows, grads, order, m, v, np.int64(10), 1e-3, 0.9, 0.999, 1e-8, False, acc)
    status = measure(
        benchmark,
        getattr(module, kernel),
        *args,
        items=n * size[1],
        group=f"{kernel} {case_id(case)}",
    )
    assert status == 0


@pytest.mark.parametrize("table_kind", ["policy", "value"])
@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_optimizer_public_step(benchmark, kernels, table_kind, optimizer):
    """``opt.step(rows, grads)`` at the PPO trainer's size: S = 2704 contexts, 300 sorted distinct
    rows, float64 gradient rows; the policy table is (S, 52) float32, the value table (S, 1)."""
    name, _ = kernels
    s, n = 2704, (20 if name == "python" else 300)
    n_cols = 52 if table_kind == "policy" else 1
    rng = np.random.default_rng(2)
    table = rng.standard_normal((s, n_cols), dtype=np.float32)
    rows = np.sort(rng.choice(s, n, replace=False))
    grads = rng.standard_normal((n, n_cols))
    opt = fastlmrl.Adam(table, lr=1e-3) if optimizer == "Adam" else fastlmrl.SGD(table, lr=1e-3)
    with fastlmrl.use_backend(name):
        measure(
            benchmark,
            opt.step,
            rows,
            grads,
            items=n * n_cols,
            group=f"{optimizer}.step {table_kind} S{s}xV{n_cols}-U{n}",
        )
