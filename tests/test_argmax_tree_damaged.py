"""ArgmaxTree robustness (issue 11): damaged node arrays, trees of another table width, huge block
sizes.  Every kernel (reference and compiled, called directly as a Numba/Cython user would) and
every public function must refuse what it cannot trust -- status 33 / ValueError naming the tree
-- leaving every array as it was, and never read or write outside its arrays.  The nodes a call
may read as columns are checked before anything is written (selection: the roots; refresh: the
siblings of each cell's path; updates: the leaf and siblings of each cell's path and the root of
each next state of the learner's tree)."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastlmrl
from fastlmrl import ArgmaxTree
from fastlmrl.rng import stream_key

CORRUPT_TREE = 33
BAD_TREE = 32
BAD_VALUES = (2**31 - 1, -(2**31), -1, -2)


def built(module, q, block_size):
    nodes = np.full_like(ArgmaxTree(q, block_size)._nodes, 7)
    assert module.argmax_tree_build(q, nodes, block_size) == 0
    return nodes


def all_cells(q):
    s, a = np.divmod(np.arange(q.size, dtype=np.int64), q.shape[1])
    return s, a


def call_all(module, q, nodes, block_size, s, a, s2):
    """(kernel name, status, every array it was given) for each tree kernel on the batch."""
    n = s.shape[0]
    r = np.linspace(-1.0, 1.0, n).astype(q.dtype)
    t = (np.arange(n) % 3 == 2).astype(np.uint8)  # item 0 bootstraps (reads a root)
    key, counter = np.uint64(stream_key(3)), np.uint64(5)
    q2 = q[:, ::-1].copy()
    nodes2 = built(module, q2, block_size)
    results = []
    for name, args in [
        ("argmax_tree_refresh", (q, nodes, block_size, s, a)),
        ("greedy_tree", (q, nodes, block_size, s, np.full(n, -9, np.int64))),
        ("argmax_tree_max", (q, nodes, block_size, s, np.full(n, -9.0, q.dtype))),
        (
            "epsilon_greedy_tree",
            (q, nodes, block_size, s, 0.3, key, counter, np.full(n, -9, np.int64)),
        ),
        (
            "q_learning_update_tree",
            (q, nodes, block_size, s, a, r, s2, t, 0.5, 0.9, np.full(n, -9.0, q.dtype)),
        ),
        (
            "double_q_learning_update_tree",
            (
                q,
                q2,
                nodes,
                nodes2,
                block_size,
                block_size,
                s,
                a,
                r,
                s2,
                t,
                0.5,
                0.9,
                key,
                counter,
                np.full(n, -9.0, q.dtype),
            ),
        ),
    ]:
        copies = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
        arrays = [x for x in copies if isinstance(x, np.ndarray)]
        before = [x.copy() for x in arrays]
        status = getattr(module, name)(*copies)
        results.append((name, status, before, arrays))
    return results


@pytest.mark.parametrize(
    "shape, block_size", [((3, 9), 2), ((2, 8), 4), ((2, 5), 1), ((2, 3), 32), ((2, 16), 3)]
)
def test_every_damaged_node_is_refused_or_harmless(compiled, reference, shape, block_size):
    """Damage each node in turn (several bad values, and a column of another span): every kernel
    returns 0 or 33, compiled == reference (status and every array), and 33 changes nothing."""
    q = np.random.default_rng(shape[1]).integers(-3, 4, shape).astype(np.float64)
    good = built(reference, q, block_size)
    s, a = all_cells(q)
    s2 = s[::-1].copy()
    seen_33 = 0
    for k in range(good.shape[1]):
        for bad in BAD_VALUES + (int(good[0, k]) + block_size, shape[1]):
            if bad == good[0, k]:
                continue
            nodes = good.copy()
            nodes[0, k] = bad
            got = {m: call_all(m, q, nodes, block_size, s, a, s2) for m in (reference, compiled)}
            for (name, st_ref, before, after_ref), (_, st_c, _, after_c) in zip(*got.values()):
                assert st_ref in (0, CORRUPT_TREE), (name, k, bad)
                assert st_c == st_ref, (name, k, bad)
                for x, y in zip(after_ref, after_c):
                    np.testing.assert_array_equal(x, y, err_msg=f"{name} node {k} = {bad}")
                if st_ref == CORRUPT_TREE:
                    seen_33 += 1
                    for x, y in zip(before, after_ref):
                        np.testing.assert_array_equal(x, y, err_msg=f"{name} node {k} = {bad}")
    assert seen_33 > 0


@pytest.mark.parametrize("bad", BAD_VALUES + (9,))
def test_damaged_root_is_refused_by_every_kernel(compiled, reference, bad):
    q = np.arange(18, dtype=np.float32).reshape(2, 9)
    nodes = built(reference, q, 2)
    nodes[1, 1] = bad  # the root of row 1: read by every kernel below but refresh
    one = np.array([1], np.int64)
    for module in (reference, compiled):
        for name, status, before, after in call_all(module, q, nodes, 2, one, one, one):
            if name == "argmax_tree_refresh":  # rewrites the whole path, root included: repaired
                assert status == 0 and after[1][1, 1] == 8
                continue
            if name == "double_q_learning_update_tree" and status == 0:
                continue  # the coin chose q2 (whose tree is intact) as the learner
            assert status == CORRUPT_TREE, (module.__name__, name)
            for x, y in zip(before, after):
                np.testing.assert_array_equal(x, y)


def test_tree_of_a_wider_table_is_refused(compiled, reference):
    """V = 3 and V = 4 give the same node shape at block size 2: the kernels must not read column
    3 of a 3-column table (issue 11 item 2)."""
    q4 = np.array([[0.0, 1.0, 0.0, 5.0], [2.0, 0.0, 0.0, 7.0]])
    q3 = np.ascontiguousarray(q4[:, :3])
    one = np.array([0, 1], np.int64)
    for module in (reference, compiled):
        nodes = built(module, q4, 2)
        assert nodes.shape == built(module, q3, 2).shape
        for name, status, before, after in call_all(module, q3, nodes, 2, one, one, one):
            assert status == CORRUPT_TREE, (module.__name__, name)
            for x, y in zip(before, after):
                np.testing.assert_array_equal(x, y)


def test_structural_limits_of_the_raw_kernels(compiled, reference):
    """V = 0, a negative or zero block size: BAD_TREE before anything is read."""
    e = np.zeros(0, np.int64)
    for module in (reference, compiled):
        q0 = np.zeros((2, 0))
        assert module.argmax_tree_build(q0, np.zeros((2, 2), np.int32), 1) == BAD_TREE
        assert module.greedy_tree(q0, np.zeros((2, 2), np.int32), 1, e, e.copy()) == BAD_TREE
        q = np.zeros((2, 3))
        for block_size in (0, -1, -(2**62)):
            assert module.argmax_tree_build(q, np.zeros((2, 2), np.int32), block_size) == BAD_TREE


@pytest.mark.parametrize("block_size", [2**62, 2**63 - 1])
def test_huge_block_size_is_one_block(compiled, reference, block_size):
    q = np.array([[1.0, 5.0, 2.0], [3.0, 0.0, 3.0]])
    for module in (reference, compiled):
        nodes = np.zeros((2, 2), np.int32)
        assert module.argmax_tree_build(q, nodes, block_size) == 0
        assert nodes.tolist() == [[-1, 1], [-1, 0]]
        qq, td = q.copy(), np.zeros(2)
        ids = np.array([0, 1], np.int64)
        assert (
            module.q_learning_update_tree(
                qq,
                nodes,
                block_size,
                ids,
                ids,
                np.ones(2),
                ids,
                np.zeros(2, np.uint8),
                0.5,
                0.9,
                td,
            )
            == 0
        )
        assert module.argmax_tree_refresh(qq, nodes, block_size, ids, ids) == 0


def test_public_block_size_limits():
    q = np.zeros((2, 3))
    with pytest.raises(ValueError, match="block_size"):
        ArgmaxTree(q, 2**63)
    with pytest.raises(ValueError, match="block_size"):
        ArgmaxTree(q, 2**100)
    tree = ArgmaxTree(q, 2**63 - 1)
    assert tree.nodes.shape == (2, 2) and tree.argmax([0, 1]).tolist() == [0, 0]


def test_public_tree_too_large_for_memory(monkeypatch):
    monkeypatch.setattr(fastlmrl.argmax_tree, "_physical_memory", lambda: 100)
    with pytest.raises(ValueError, match=r"block_size = 1\b.*bytes"):
        ArgmaxTree(np.zeros((4, 8)), 1)


def _damaged(q, block_size=2):
    tree = ArgmaxTree(q, block_size)
    nodes = tree.nodes
    nodes.flags.writeable = True  # read-only by flag only: a user can still do this
    return tree, nodes


def test_public_api_refuses_a_damaged_tree(backend):
    """Issue 11's repro and every public function that reads the tree: ValueError naming the
    tree, tables, nodes and the random stream unchanged."""
    calls = {
        "refresh": lambda q, q2, t, t2, rs: t.refresh([4], [0]),
        "argmax": lambda q, q2, t, t2, rs: t.argmax([4]),
        "max": lambda q, q2, t, t2, rs: t.max([4]),
        "greedy": lambda q, q2, t, t2, rs: fastlmrl.greedy(q, [4], argmax_tree=t),
        "epsilon_greedy": lambda q, q2, t, t2, rs: fastlmrl.epsilon_greedy(
            q, [4], 0.5, rs, argmax_tree=t
        ),
        "q_learning": lambda q, q2, t, t2, rs: fastlmrl.q_learning_update(
            q, [4], [0], [1.0], [4], [False], 0.5, 0.9, argmax_tree=t
        ),
        "sarsa": lambda q, q2, t, t2, rs: fastlmrl.sarsa_update(
            q, [4, 4], [0, 0], [1.0, 2.0], [4, 4], [0, 0], [False, False], 0.5, 0.9, argmax_tree=t
        ),
        "expected_sarsa": lambda q, q2, t, t2, rs: fastlmrl.expected_sarsa_update(
            q, [4, 4], [0, 0], [1.0, 2.0], [4, 4], [False, False], 0.5, 0.9, 0.1, argmax_tree=t
        ),
        "double_q": lambda q, q2, t, t2, rs: fastlmrl.double_q_learning_update(
            q,
            q2,
            [4] * 8,
            [0] * 8,
            [1.0] * 8,
            [4] * 8,
            [False] * 8,
            0.5,
            0.9,
            rs,
            argmax_trees=(t, t2),
        ),
    }
    for name, call in calls.items():
        q = np.random.default_rng(0).standard_normal((6, 9))
        q2 = q.copy()
        tree, nodes = _damaged(q)
        tree2, nodes2 = _damaged(q2)
        nodes[4, 1] = nodes2[4, 1] = 2**31 - 1  # the root: read by every call above
        nodes[4, 3] = nodes2[4, 3] = 2**31 - 1  # issue 11's node (a sibling on column 0's path)
        snapshot = [x.copy() for x in (q, q2, nodes, nodes2)]
        stream = fastlmrl.RandomStream(1, 0, 10)
        with pytest.raises(ValueError, match=r"argmax_trees? is damaged"):
            call(q, q2, tree, tree2, stream)
        for x, y in zip(snapshot, (q, q2, nodes, nodes2)):
            np.testing.assert_array_equal(x, y, err_msg=name)
        assert stream.counter == 10, name
        tree.rebuild()  # repairs
        assert tree.argmax([4]).tolist() == [int(np.argmax(q[4]))]


def test_sarsa_restores_the_table_when_the_tree_refuses(backend):
    """SARSA/expected SARSA update the table first and refresh the tree after: a refused refresh
    (damaged sibling on the path, root fine) puts every updated cell back, repeated cells
    included."""
    q = np.random.default_rng(1).standard_normal((6, 9))
    tree, nodes = _damaged(q)
    nodes[4, 3] = -5  # sibling of column 0's path only
    before_q, before_nodes = q.copy(), nodes.copy()
    with pytest.raises(ValueError, match="argmax_tree is damaged"):
        fastlmrl.sarsa_update(
            q,
            [2, 4, 4],
            [8, 0, 0],
            [1.0, 2.0, 3.0],
            [4, 4, 2],
            [0, 1, 2],
            [False, False, True],
            0.5,
            0.9,
            argmax_tree=tree,
        )
    np.testing.assert_array_equal(q, before_q)
    np.testing.assert_array_equal(nodes, before_nodes)


def test_issue_repro_in_a_subprocess():
    """The exact repro of issue 11 in a fresh interpreter per backend: no crash."""
    for name in fastlmrl.BACKENDS:
        code = textwrap.dedent(f"""
            import numpy as np, fastlmrl
            with fastlmrl.use_backend({name!r}):
                q = np.random.default_rng(0).standard_normal((6, 9))
                tree = fastlmrl.ArgmaxTree(q, 2)
                n = tree.nodes; n.flags.writeable = True; n[4, 3] = 2**31 - 1
                try:
                    tree.refresh([4], [0])
                except ValueError as e:
                    print("refused:", e)
        """)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, (name, out.returncode, out.stderr[-2000:])
        assert "refused: argmax_tree is damaged" in out.stdout, (name, out.stdout)
