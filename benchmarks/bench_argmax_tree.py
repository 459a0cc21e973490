"""ArgmaxTree benchmarks: plain full-row path vs the per-row tournament tree.

    pytest benchmarks/bench_argmax_tree.py --benchmark-enable --benchmark-group-by=group \
        --benchmark-columns=mean,ops -p no:cacheprovider

Kernels (items = transitions or states per call):

* ``q_learning_greedy``: one Q-learning batch (Sutton & Barto eq. 6.8; the max over a' is the tree
  root on the tree path) followed by one greedy call on the batch's next states -- the issue's
  "Q-learning + greedy" target;
* ``greedy``: greedy actions only;
* ``build``: building the trees (items = table cells; tree path only).

The plain path at V = 50257 costs O(V) per item, so it runs on a smaller batch (rates per item are
what compare); so does the pure-Python reference.  Updates use random states, actions and next
states over the whole table (the worst case for caches), float32, alpha = 0.1, gamma = 0.9.
"""

import numpy as np
import pytest
from conftest import measure, random_table, size_id

from fastlmrl import ArgmaxTree

SIZES = [(65536, 64), (4096, 50257)]
PATHS = ("plain", "tree")
KERNELS = ("q_learning_greedy", "greedy", "build")
BLOCK_SIZE = 32


def batch_size(backend, path, size):
    wide = size[1] > 1000
    if backend == "python":
        return 100 if (path == "plain" and wide) else 2_000
    if path == "plain" and wide:
        return 20_000
    return 1_000_000


@pytest.fixture(scope="module", params=SIZES, ids=size_id)
def table(request):
    """One float32 table (and its tree) per size, shared by the benchmarks of that size (pytest
    groups tests by this module-scoped fixture, so each large table is made once).

    Plain-path benchmarks update the table without the tree; the tree is rebuilt (untimed) before
    the next tree-path benchmark.
    """
    size = request.param
    q = random_table(size, np.float32)
    entry = {"size": size, "q": q, "tree": ArgmaxTree(q, BLOCK_SIZE), "dirty": False}
    yield entry
    entry.clear()


def transitions(size, n, seed=1):
    rng = np.random.default_rng(seed)
    n_states, n_actions = size
    return dict(
        states=rng.integers(0, n_states, n, dtype=np.int64),
        actions=rng.integers(0, n_actions, n, dtype=np.int64),
        rewards=rng.standard_normal(n, dtype=np.float32),
        next_states=rng.integers(0, n_states, n, dtype=np.int64),
        terminated=(rng.random(n) < 0.05).astype(np.uint8),
    )


CASES = [
    (path, kernel)
    for path in PATHS
    for kernel in KERNELS
    if not (path == "plain" and kernel == "build")
]


@pytest.mark.parametrize("path, kernel", CASES, ids=[f"{p}-{k}" for p, k in CASES])
def test_argmax_tree(benchmark, kernels, path, kernel, table):
    backend, module = kernels
    entry = table
    size, q, tree = entry["size"], entry["q"], entry["tree"]
    if path == "tree" and entry["dirty"]:
        tree.rebuild()
        entry["dirty"] = False
    nodes = tree._nodes
    group = f"argmax_tree-{kernel}-{size_id(size)}"
    benchmark.extra_info.update(backend=backend, path=path, block_size=BLOCK_SIZE)

    if kernel == "build":
        # the reference builds a few rows only (a row-slice of the table is a valid table)
        rows = 8 if backend == "python" else size[0]
        if backend == "python" and size[1] < 1000:
            rows = 512
        sub_q, sub_nodes = q[:rows], np.empty((rows, nodes.shape[1]), np.int32)
        measure(
            benchmark,
            module.argmax_tree_build,
            sub_q,
            sub_nodes,
            BLOCK_SIZE,
            items=rows * size[1],
            group=group,
            rounds=3,
        )
        return

    n = batch_size(backend, path, size)
    t = transitions(size, n)
    td = np.empty(n, np.float32)
    out = np.empty(n, np.int64)
    rounds = 3 if (path == "plain" and size[1] > 1000) or backend == "python" else None

    if kernel == "greedy":
        if path == "plain":
            fn = lambda: module.greedy(q, t["next_states"], out, 1)  # noqa: E731
        else:
            fn = lambda: module.greedy_tree(q, nodes, BLOCK_SIZE, t["next_states"], out)  # noqa
        measure(benchmark, fn, items=n, group=group, rounds=rounds)
        return

    args = (
        t["states"],
        t["actions"],
        t["rewards"],
        t["next_states"],
        t["terminated"],
        0.1,
        0.9,
        td,
    )
    if path == "plain":
        entry["dirty"] = True

        def fn():
            module.q_learning_update(q, *args)
            module.greedy(q, t["next_states"], out, 1)
    else:

        def fn():
            module.q_learning_update_tree(q, nodes, BLOCK_SIZE, *args)
            module.greedy_tree(q, nodes, BLOCK_SIZE, t["next_states"], out)

    measure(benchmark, fn, items=n, group=group, rounds=rounds)
