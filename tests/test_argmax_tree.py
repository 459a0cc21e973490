"""ArgmaxTree: layout against an independent NumPy oracle, exact equality of the tree path with the
plain full-row path (tables, TD errors, actions, random streams), compiled kernels against the
reference, tree invariants after updates, bad input (nothing modified on error)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from shape_checks import assert_rejects_bad_shapes, status_with_short

import fastlmrl
from fastlmrl import ArgmaxTree, RandomStream, _backend
from fastlmrl._status import BAD_SHAPES
from fastlmrl.rng import stream_key

NAN, INF = math.nan, math.inf
KERNELS = [
    "argmax_tree_build",
    "argmax_tree_max",
    "argmax_tree_refresh",
    "double_q_learning_update_tree",
    "epsilon_greedy_tree",
    "greedy_tree",
    "q_learning_update_tree",
]


# ---------------------------------------------------------------------------------------------
# independent NumPy oracles


def np_argmax(row):
    """Lowest index of the max of the non-NaN entries; 0 if all NaN."""
    ok = ~np.isnan(row)
    if not ok.any():
        return 0
    return int(np.flatnonzero(row == np.max(row[ok]))[0])


def np_max(row):
    ok = ~np.isnan(row)
    return float(np.max(row[ok])) if ok.any() else -INF


def np_tree(q, block_size):
    """The node array built span by span: node k holds the lowest column of the max of the
    non-NaN entries of its span (the span's first column if all NaN); -1 for empty spans."""
    n_states, n_actions = q.shape
    n_blocks = -(-n_actions // block_size)
    p = 1
    while p < n_blocks:
        p *= 2
    nodes = np.full((n_states, 2 * p), -1, np.int32)
    for k in range(1, 2 * p):
        width = p >> (k.bit_length() - 1)  # leaves below node k
        first_leaf = k * width - p
        lo, hi = first_leaf * block_size, min((first_leaf + width) * block_size, n_actions)
        if lo >= n_actions:
            continue
        for s in range(n_states):
            span = q[s, lo:hi]
            nodes[s, k] = lo + (np_argmax(span) if (~np.isnan(span)).any() else 0)
    return nodes


# ---------------------------------------------------------------------------------------------
# strategies

VALUES = st.sampled_from([-2.0, -1.0, -0.0, 0.0, 1.0, 2.0, 0.5, NAN, -INF, INF])


@st.composite
def cases(draw, max_states=5, max_actions=40):
    """A table (integer-valued, so ties are the norm; NaN and ±inf), a block size, a batch."""
    n_states = draw(st.integers(1, max_states))
    n_actions = draw(st.integers(1, max_actions))
    block_size = draw(st.sampled_from([1, 2, 3, 4, 7, 32]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    index = draw(st.sampled_from([np.int32, np.int64]))
    # "overwrite": alpha = 1, gamma = 0 sets Q(s, a) = r exactly, so an updated cell keeps tying
    # with the other cells of its block (ties to the left and to the right of the winner)
    mode = draw(st.sampled_from(["plain", "specials", "overwrite"]))
    small = st.integers(0, 2) if mode == "overwrite" else st.integers(-3, 3)
    elements = VALUES if mode == "specials" else small.map(float)
    q = draw(hnp.arrays(dtype, (n_states, n_actions), elements=elements))
    n = draw(st.integers(0, 40))
    ids = lambda hi: hnp.arrays(index, n, elements=st.integers(0, hi - 1))  # noqa: E731
    batch = dict(
        states=draw(ids(n_states)),
        actions=draw(ids(n_actions)),
        rewards=draw(hnp.arrays(dtype, n, elements=small.map(float))),
        next_states=draw(ids(n_states)),
        terminated=draw(hnp.arrays(np.bool_, n)).view(np.uint8),
    )
    if mode == "overwrite":
        alpha, gamma = 1.0, 0.0
    else:
        alpha = draw(st.sampled_from([0.5, 1.0, 0.25, 0.1]))
        gamma = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
    return q, block_size, batch, alpha, gamma


def same(x, y):
    return np.array_equal(x, y, equal_nan=True)


def build(module, q, block_size):
    tree = ArgmaxTree(q, block_size)  # only for the shape
    nodes = np.full_like(tree._nodes, 7)
    assert module.argmax_tree_build(q, nodes, block_size) == 0
    return nodes


def q_learning(module, q, nodes, block_size, b, alpha, gamma):
    td = np.empty(len(b["states"]), q.dtype)
    args = (
        b["states"],
        b["actions"],
        b["rewards"],
        b["next_states"],
        b["terminated"],
        alpha,
        gamma,
        td,
    )
    if nodes is None:
        assert module.q_learning_update(q, *args) == 0
    else:
        assert module.q_learning_update_tree(q, nodes, block_size, *args) == 0
    return td


def double_q(module, q1, q2, nodes1, nodes2, bs1, bs2, b, alpha, gamma, key, counter):
    td = np.empty(len(b["states"]), q1.dtype)
    args = (
        b["states"],
        b["actions"],
        b["rewards"],
        b["next_states"],
        b["terminated"],
        alpha,
        gamma,
        np.uint64(key),
        np.uint64(counter),
        td,
    )
    if nodes1 is None:
        assert module.double_q_learning_update(q1, q2, *args) == 0
    else:
        assert module.double_q_learning_update_tree(q1, q2, nodes1, nodes2, bs1, bs2, *args) == 0
    return td


# ---------------------------------------------------------------------------------------------
# names, layout, hand cases


def test_same_kernel_names():
    for name in fastlmrl.BACKENDS:
        module = __import__(f"fastlmrl._{name}.argmax_tree", fromlist=["__all__"])
        assert sorted(module.__all__) == KERNELS
        assert set(KERNELS) <= set(_backend.backend_module(name).__all__)
    assert "ArgmaxTree" in fastlmrl.__all__


def test_layout_by_hand(backend):
    # blocks of 2: [1, 3] -> 1, [3, 2] -> 2, [nan] -> 4, padding -> -1; P = 4
    # node 2 = pick(1, 2): 3 == 3, the left (lower) column wins -> 1; node 3 = 4;
    # root: nan loses -> 1
    q = np.array([[1, 3, 3, 2, NAN]], np.float32)
    tree = ArgmaxTree(q, block_size=2)
    assert tree.nodes.tolist() == [[-1, 1, 1, 4, 1, 2, 4, -1]]
    assert tree.argmax([0]).tolist() == [1] and tree.max([0]).tolist() == [3.0]
    assert tree.table is q and tree.block_size == 2 and tree.n_blocks == 3
    assert tree.nbytes == 8 * 4 and "ArgmaxTree" in repr(tree)


def test_special_rows_by_hand(backend):
    q = np.array(
        [
            [NAN, NAN, NAN],  # all NaN: action 0, max -inf
            [-INF, NAN, -INF],  # -inf beats NaN; lowest -inf -> 0
            [NAN, -INF, NAN],  # -> 1
            [0.0, -0.0, 5.0],  # -> 2
            [2.0, INF, INF],
        ]
    )  # -> 1
    for block_size in (1, 2, 32):
        tree = ArgmaxTree(q, block_size)
        assert tree.argmax(np.arange(5)).tolist() == [0, 0, 1, 2, 1]
        assert tree.max(np.arange(5)).tolist() == [-INF, -INF, -INF, 5.0, INF]
        assert fastlmrl.greedy(q, np.arange(5), argmax_tree=tree).tolist() == [0, 0, 1, 2, 1]
        assert np.array_equal(tree.nodes, np_tree(q, block_size))


def test_single_column(backend):
    q = np.array([[3.0], [NAN]], np.float32)
    tree = ArgmaxTree(q, 32)
    assert tree.nodes.tolist() == [[-1, 0], [-1, 0]]
    assert tree.argmax([0, 1, 0]).tolist() == [0, 0, 0]
    td = fastlmrl.q_learning_update(
        q, [0, 1], [0, 0], [1.0, 2.0], [1, 0], [False, False], 0.5, 1.0, argmax_tree=tree
    )
    # 1: target = 1 + max(row 1) = 1 - inf -> td = -inf, q[0,0] = -inf
    # 2: q[1,0] = nan: target = 2 + max(row 0) = -inf, td = nan, stays nan
    assert td[0] == -INF and math.isnan(td[1])
    assert q[0, 0] == -INF and math.isnan(q[1, 0])
    assert np.array_equal(tree.nodes, np_tree(q, 32))


def test_q_learning_by_hand(backend):
    q = np.array([[1, 4, 4, 0], [2, NAN, 7, -1]], np.float64)
    tree = ArgmaxTree(q, block_size=2)
    assert tree.nodes.tolist() == [[-1, 1, 1, 2], [-1, 2, 0, 2]]
    td = fastlmrl.q_learning_update(
        q,
        [0, 0],
        [3, 1],
        [1.0, 0.0],
        [1, 0],
        [False, False],
        alpha=0.5,
        gamma=0.5,
        argmax_tree=tree,
    )
    # 1: target = 1 + 0.5 * 7 = 4.5, td = 4.5, q[0,3] = 2.25
    # 2: target = 0 + 0.5 * max(1, 4, 4, 2.25) = 2, td = -2, q[0,1] = 3
    assert td.tolist() == [4.5, -2.0]
    assert q.tolist()[0] == [1, 3, 4, 2.25]
    assert tree.nodes.tolist() == [[-1, 2, 1, 2], [-1, 2, 0, 2]]
    assert fastlmrl.greedy(q, [0, 1], argmax_tree=tree).tolist() == [2, 2]


@pytest.mark.parametrize("block_size", [1, 2, 4, 32])
def test_ties_with_the_winner_by_hand(backend, block_size):
    """alpha = 1, gamma = 0, terminal: Q(s, a) <- r.  A lower column that ties the winner wins;
    a higher one does not; a winner that drops hands over to the lowest remaining max."""
    q = np.array([[0.0, 0.0, 5.0, 0.0, 5.0]])
    tree = ArgmaxTree(q, block_size)
    steps = [
        (0, 5.0, 0),
        (3, 5.0, 0),
        (0, 1.0, 2),
        (2, -1.0, 3),
        (1, 5.0, 1),
        (1, 9.0, 1),
        (1, 0.0, 3),
    ]
    for a, r, want in steps:
        fastlmrl.q_learning_update(q, [0], [a], [r], [0], [True], 1.0, 0.0, argmax_tree=tree)
        assert tree.argmax([0]).tolist() == [want], (a, r, q)
        assert np.array_equal(tree.nodes, np_tree(q, block_size))


def test_decreasing_the_max_rescans(backend):
    """Repeatedly push the current greedy cell down: the winner must move along the row."""
    q = np.arange(100, dtype=np.float32).reshape(1, 100) % 37  # maxima 36 at columns 36 and 73
    plain = q.copy()
    tree = ArgmaxTree(q, 8)
    for _ in range(120):
        a = int(tree.argmax([0])[0])
        assert a == np_argmax(plain[0])
        args = ([0], [a], [-50.0], [0], [True], 1.0, 0.9)
        fastlmrl.q_learning_update(q, *args, argmax_tree=tree)
        fastlmrl.q_learning_update(plain, *args)
        assert np.array_equal(q, plain)
    assert np.array_equal(tree.nodes, np_tree(q, 8))


# ---------------------------------------------------------------------------------------------
# hypothesis: layout oracle, reference tree == reference plain, compiled == reference


@given(cases(max_actions=70))
def test_build_matches_oracle(backend, case):
    q, block_size, _, _, _ = case
    tree = ArgmaxTree(q, block_size)
    assert np.array_equal(tree.nodes, np_tree(q, block_size))
    states = np.arange(q.shape[0])
    assert tree.argmax(states).tolist() == [np_argmax(row) for row in q]
    assert same(tree.max(states), np.array([np_max(row) for row in q], q.dtype))
    assert np.array_equal(fastlmrl.greedy(q, states, argmax_tree=tree), fastlmrl.greedy(q, states))


@given(cases())
def test_q_learning_matches_plain_and_reference(compiled, reference, case):
    q, block_size, b, alpha, gamma = case
    plain = q.copy()
    td_plain = q_learning(reference, plain, None, block_size, b, alpha, gamma)
    results = []
    for module in (reference, compiled):
        qt = q.copy()
        nodes = build(module, qt, block_size)
        td = q_learning(module, qt, nodes, block_size, b, alpha, gamma)
        assert same(qt, plain) and same(td, td_plain)
        assert np.array_equal(nodes, np_tree(qt, block_size))
        results.append((qt, nodes, td))
    # the compiled plain kernel agrees too
    compiled_plain = q.copy()
    assert same(q_learning(compiled, compiled_plain, None, block_size, b, alpha, gamma), td_plain)
    assert same(compiled_plain, plain)


@given(cases(), st.integers(0, 2**64 - 1), st.integers(0, 2**40), st.sampled_from([1, 2, 32]))
def test_double_q_matches_plain_and_reference(compiled, reference, case, key, counter, bs2):
    q1, bs1, b, alpha, gamma = case
    q2 = np.roll(q1, 1, axis=1).copy()
    p1, p2 = q1.copy(), q2.copy()
    td_plain = double_q(reference, p1, p2, None, None, 0, 0, b, alpha, gamma, key, counter)
    for module in (reference, compiled):
        t1, t2 = q1.copy(), q2.copy()
        n1, n2 = build(module, t1, bs1), build(module, t2, bs2)
        td = double_q(module, t1, t2, n1, n2, bs1, bs2, b, alpha, gamma, key, counter)
        assert same(td, td_plain) and same(t1, p1) and same(t2, p2)
        assert np.array_equal(n1, np_tree(t1, bs1)) and np.array_equal(n2, np_tree(t2, bs2))


@given(cases(), st.integers(0, 2**64 - 1), st.integers(0, 2**40), st.sampled_from([0.0, 0.3, 1.0]))
def test_selection_matches_plain_and_reference(compiled, reference, case, key, counter, epsilon):
    q, block_size, b, _, _ = case
    states = b["next_states"]
    n = len(states)
    want_greedy = np.empty(n, np.int64)
    want_eps = np.empty(n, np.int64)
    assert reference.greedy(q, states, want_greedy, 1) == 0
    assert (
        reference.epsilon_greedy(
            q, states, epsilon, np.uint64(key), np.uint64(counter), want_eps, 1
        )
        == 0
    )
    want_max = np.array([np_max(q[s]) for s in states], q.dtype)
    for module in (reference, compiled):
        nodes = build(module, q, block_size)
        out = np.full(n, -5, np.int64)
        assert module.greedy_tree(q, nodes, block_size, states, out) == 0
        assert np.array_equal(out, want_greedy)
        out = np.full(n, -5, np.int64)
        assert (
            module.epsilon_greedy_tree(
                q, nodes, block_size, states, epsilon, np.uint64(key), np.uint64(counter), out
            )
            == 0
        )
        assert np.array_equal(out, want_eps)
        vals = np.empty(n, q.dtype)
        assert module.argmax_tree_max(q, nodes, block_size, states, vals) == 0
        assert same(vals, want_max)


@given(cases(), st.data())
def test_refresh_after_direct_edits(compiled, reference, case, data):
    """Several cells of a row edited at once (any values), then one refresh: equals a fresh tree."""
    q, block_size, b, _, _ = case
    values = data.draw(hnp.arrays(q.dtype, len(b["states"]), elements=VALUES))
    for module in (reference, compiled):
        qt = q.copy()
        nodes = build(module, qt, block_size)
        qt[b["states"], b["actions"]] = values
        assert module.argmax_tree_refresh(qt, nodes, block_size, b["states"], b["actions"]) == 0
        assert np.array_equal(nodes, np_tree(qt, block_size))


@settings(max_examples=5)
@given(st.integers(0, 2**32))
def test_large_row_many_updates(compiled, reference, seed):
    """V = 3001 (not a multiple of 32), 4000 updates concentrated on the current maxima."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-20, 20, (3, 3001)).astype(np.float32)
    n = 4000
    states = rng.integers(0, 3, n).astype(np.int32)
    greedy = np.array([np_argmax(q[s]) for s in range(3)])
    actions = np.where(rng.random(n) < 0.5, greedy[states], rng.integers(0, 3001, n)).astype(
        np.int32
    )
    b = dict(
        states=states,
        actions=actions,
        rewards=rng.integers(-30, 30, n).astype(np.float32),
        next_states=rng.integers(0, 3, n).astype(np.int32),
        terminated=(rng.random(n) < 0.1).astype(np.uint8),
    )
    plain = q.copy()
    td_plain = q_learning(compiled, plain, None, 32, b, 0.5, 0.9)
    qt = q.copy()
    nodes = build(compiled, qt, 32)
    td = q_learning(compiled, qt, nodes, 32, b, 0.5, 0.9)
    assert np.array_equal(qt, plain) and np.array_equal(td, td_plain)
    assert np.array_equal(nodes, np_tree(qt, 32))


# ---------------------------------------------------------------------------------------------
# public API under each backend


@settings(max_examples=25)
@given(cases())
def test_public_td_functions_match_plain(backend, case):
    q, block_size, b, alpha, gamma = case
    args = (b["states"], b["actions"], b["rewards"], b["next_states"], b["terminated"].view(bool))
    rng = np.random.default_rng(len(b["states"]))
    next_actions = rng.integers(0, q.shape[1], len(b["states"]))
    runs = {
        "q": lambda t, **kw: fastlmrl.q_learning_update(t, *args, alpha, gamma, **kw),
        "sarsa": lambda t, **kw: fastlmrl.sarsa_update(
            t, *args[:4], next_actions, args[4], alpha, gamma, **kw
        ),
        "esarsa": lambda t, **kw: fastlmrl.expected_sarsa_update(t, *args, alpha, gamma, 0.3, **kw),
    }
    for fn in runs.values():
        plain, qt = q.copy(), q.copy()
        tree = ArgmaxTree(qt, block_size)
        td_plain = fn(plain)
        td = fn(qt, argmax_tree=tree)
        assert same(td, td_plain) and same(qt, plain)
        assert np.array_equal(tree.nodes, np_tree(qt, block_size))
    q1, q2 = q.copy(), np.flip(q, axis=1).copy()
    p1, p2 = q1.copy(), q2.copy()
    trees = (ArgmaxTree(q1, block_size), ArgmaxTree(q2, 1))
    s1, s2 = RandomStream(5, counter=3), RandomStream(5, counter=3)
    td = fastlmrl.double_q_learning_update(q1, q2, *args, alpha, gamma, s1, argmax_trees=trees)
    td_plain = fastlmrl.double_q_learning_update(p1, p2, *args, alpha, gamma, s2)
    assert same(td, td_plain) and same(q1, p1) and same(q2, p2) and s1 == s2
    assert np.array_equal(trees[0].nodes, np_tree(q1, block_size))
    assert np.array_equal(trees[1].nodes, np_tree(q2, 1))


def test_public_selection_matches_plain(backend):
    rng = np.random.default_rng(3)
    q = rng.integers(0, 4, (50, 301)).astype(np.float32)
    tree = ArgmaxTree(q, 16)
    states = rng.integers(0, 50, 500).astype(np.int32)
    assert np.array_equal(fastlmrl.greedy(q, states, argmax_tree=tree), fastlmrl.greedy(q, states))
    s1, s2 = RandomStream(9, 2, 11), RandomStream(9, 2, 11)
    a1 = fastlmrl.epsilon_greedy(q, states, 0.4, s1, argmax_tree=tree)
    a2 = fastlmrl.epsilon_greedy(q, states, 0.4, s2)
    assert np.array_equal(a1, a2) and s1 == s2 and s1.counter == 11 + 1000
    assert np.array_equal(
        fastlmrl.epsilon_greedy(q, states, 0.4, 7, argmax_tree=tree),
        fastlmrl.epsilon_greedy(q, states, 0.4, 7),
    )
    assert np.array_equal(tree.argmax(states), fastlmrl.greedy(q, states))


def test_rebuild_and_refresh_public(backend):
    q = np.zeros((3, 10), np.float64)
    tree = ArgmaxTree(q, 4)
    q[1, 7] = 5.0
    q[2, 3] = NAN
    q[2, 9] = 1.0
    tree.refresh([1, 2, 2], [7, 3, 9])
    assert np.array_equal(tree.nodes, np_tree(q, 4))
    q[:] = np.arange(30).reshape(3, 10)[:, ::-1]
    assert tree.rebuild() is tree
    assert np.array_equal(tree.nodes, np_tree(q, 4))
    assert tree.argmax([0, 1, 2]).tolist() == [0, 0, 0]
    tree.refresh(np.array([], np.int32), np.array([], np.int32))


def test_empty_batches(backend):
    q = np.ones((2, 5), np.float32)
    tree = ArgmaxTree(q, 2)
    e = np.array([], np.int64)
    assert fastlmrl.greedy(q, e, argmax_tree=tree).shape == (0,)
    assert fastlmrl.epsilon_greedy(q, e, 0.5, 1, argmax_tree=tree).shape == (0,)
    assert tree.max(e).shape == (0,) and tree.argmax(e).shape == (0,)
    td = fastlmrl.q_learning_update(q, e, e, [], e, [], 0.5, 0.5, argmax_tree=tree)
    assert td.shape == (0,) and td.dtype == np.float32
    q2 = np.ones((2, 5), np.float32)
    td = fastlmrl.double_q_learning_update(
        q, q2, e, e, [], e, [], 0.5, 0.5, 0, argmax_trees=(tree, ArgmaxTree(q2))
    )
    assert td.shape == (0,)
    assert (q == 1).all()


def test_read_only_table():
    q = np.arange(12, dtype=np.float64).reshape(3, 4)
    q.flags.writeable = False
    tree = ArgmaxTree(q, 2)
    assert tree.argmax([0, 2]).tolist() == [3, 3]
    with pytest.raises(ValueError, match="read-only"):
        fastlmrl.q_learning_update(q, [0], [0], [1.0], [0], [False], 0.5, 0.5, argmax_tree=tree)


# ---------------------------------------------------------------------------------------------
# bad input: errors name the argument, nothing is modified


def _state(q, *trees):
    return q.copy(), [t.nodes.copy() for t in trees]


def _unchanged(snapshot, q, *trees):
    q0, nodes0 = snapshot
    return same(q, q0) and all(np.array_equal(t.nodes, n) for t, n in zip(trees, nodes0))


def test_constructor_bad_input():
    q = np.zeros((2, 3))
    with pytest.raises(TypeError, match="q"):
        ArgmaxTree([[1.0, 2.0]])
    with pytest.raises(TypeError, match="q"):
        ArgmaxTree(np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="q"):
        ArgmaxTree(np.zeros(3))
    with pytest.raises(ValueError, match="q"):
        ArgmaxTree(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="C-contiguous"):
        ArgmaxTree(np.zeros((3, 4))[:, ::2])
    with pytest.raises(ValueError, match="block_size"):
        ArgmaxTree(q, 0)
    with pytest.raises(TypeError, match="block_size"):
        ArgmaxTree(q, 2.0)
    with pytest.raises(TypeError, match="block_size"):
        ArgmaxTree(q, True)


def test_wrong_tree_arguments(backend):
    q = np.zeros((3, 6))
    other = np.zeros((3, 6))
    tree, other_tree = ArgmaxTree(q, 2), ArgmaxTree(other, 2)
    args = ([0], [1], [1.0], [2], [False], 0.5, 0.9)
    snap = _state(q, tree)
    with pytest.raises(TypeError, match="argmax_tree"):
        fastlmrl.greedy(q, [0], argmax_tree="tree")
    with pytest.raises(ValueError, match="argmax_tree"):
        fastlmrl.greedy(q, [0], argmax_tree=other_tree)
    with pytest.raises(ValueError, match="argmax_tree"):
        fastlmrl.greedy(q.view(), [0], argmax_tree=tree)  # another object, same memory
    with pytest.raises(ValueError, match="argmax_tree"):
        fastlmrl.epsilon_greedy(q, [0], 0.1, 0, argmax_tree=other_tree)
    with pytest.raises(ValueError, match="argmax_tree"):
        fastlmrl.q_learning_update(q, *args, argmax_tree=other_tree)
    with pytest.raises(ValueError, match="argmax_tree"):
        fastlmrl.sarsa_update(q, *args[:4], [0], *args[4:], argmax_tree=other_tree)
    with pytest.raises(ValueError, match="argmax_tree"):
        fastlmrl.expected_sarsa_update(q, *args, 0.1, argmax_tree=other_tree)
    with pytest.raises(TypeError, match="argmax_trees"):
        fastlmrl.double_q_learning_update(q, other, *args, 0, argmax_trees=tree)
    with pytest.raises(ValueError, match=r"argmax_trees\[0\]"):
        fastlmrl.double_q_learning_update(q, other, *args, 0, argmax_trees=(other_tree, tree))
    with pytest.raises(TypeError, match=r"argmax_trees\[1\]"):
        fastlmrl.double_q_learning_update(q, other, *args, 0, argmax_trees=(tree, None))
    assert _unchanged(snap, q, tree)
    q.shape = (6, 3)  # the table was reshaped in place: the tree no longer fits
    with pytest.raises(ValueError, match="no longer fits"):
        fastlmrl.greedy(q, [0], argmax_tree=tree)
    with pytest.raises(ValueError, match="no longer fits"):
        tree.argmax([0])


@pytest.mark.parametrize("which", ["q", "sarsa", "esarsa", "double"])
def test_bad_batches_modify_nothing(backend, which):
    q = np.arange(24, dtype=np.float32).reshape(4, 6)
    q2 = q[:, ::-1].copy()
    tree, tree2 = ArgmaxTree(q, 4), ArgmaxTree(q2, 2)
    snap, snap2 = _state(q, tree), _state(q2, tree2)
    good = dict(
        states=[0, 1],
        actions=[1, 2],
        rewards=[1.0, 2.0],
        next_states=[2, 3],
        terminated=[False, True],
    )

    def call(**bad):
        b = dict(good, **bad)
        args = (b["states"], b["actions"], b["rewards"], b["next_states"])
        if which == "q":
            fastlmrl.q_learning_update(q, *args, b["terminated"], 0.5, 0.9, argmax_tree=tree)
        elif which == "sarsa":
            fastlmrl.sarsa_update(
                q, *args, b.get("next_actions", [0, 5]), b["terminated"], 0.5, 0.9, argmax_tree=tree
            )
        elif which == "esarsa":
            fastlmrl.expected_sarsa_update(
                q, *args, b["terminated"], 0.5, 0.9, 0.1, argmax_tree=tree
            )
        else:
            fastlmrl.double_q_learning_update(
                q, q2, *args, b["terminated"], 0.5, 0.9, 3, argmax_trees=(tree, tree2)
            )

    for bad, match in [
        (dict(states=[0, 4]), "states"),
        (dict(states=[-1, 0]), "states"),
        (dict(actions=[6, 0]), "actions"),
        (dict(next_states=[0, 9]), "next_states"),
        (dict(rewards=[1.0, NAN]), "rewards"),
        (dict(rewards=[INF, 0.0]), "rewards"),
        (dict(states=[0.5, 1.0]), "states"),
        (dict(actions=[[1, 2]]), "actions"),
        (dict(terminated=[0.5, 1.0]), "terminated"),
        (dict(rewards=[1.0]), "rewards"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            call(**bad)
        assert _unchanged(snap, q, tree) and _unchanged(snap2, q2, tree2)
    if which == "sarsa":
        with pytest.raises(ValueError, match="next_actions"):
            call(next_actions=[0, 6])
        assert _unchanged(snap, q, tree)


def test_bad_selection_and_tree_methods(backend):
    q = np.arange(12, dtype=np.float64).reshape(3, 4)
    tree = ArgmaxTree(q, 2)
    snap = _state(q, tree)
    for fn in (
        lambda s: fastlmrl.greedy(q, s, argmax_tree=tree),
        lambda s: fastlmrl.epsilon_greedy(q, s, 0.5, 0, argmax_tree=tree),
        tree.argmax,
        tree.max,
    ):
        with pytest.raises(ValueError, match="states"):
            fn([0, 3])
        with pytest.raises(TypeError, match="states"):
            fn([0.0])
        with pytest.raises(ValueError, match="states"):
            fn([[0]])
    with pytest.raises(ValueError, match="epsilon"):
        fastlmrl.epsilon_greedy(q, [0], 1.5, 0, argmax_tree=tree)
    with pytest.raises(ValueError, match="actions"):
        tree.refresh([0, 1], [0, 4])
    with pytest.raises(ValueError, match="states"):
        tree.refresh([3], [0])
    with pytest.raises(ValueError, match="actions"):
        tree.refresh([0, 1], [0])
    assert _unchanged(snap, q, tree)
    q[0, 0] = NAN  # a direct edit is not seen until refresh: the tree is stale, not corrupted
    tree.refresh([0], [0])
    assert np.array_equal(tree.nodes, np_tree(q, 2))


def test_kernels_reject_mismatched_nodes(compiled, reference):
    """Raw kernels check the node array's shape against q and block_size before writing."""
    q = np.arange(20, dtype=np.float64).reshape(2, 10)
    e = np.zeros(1, np.int64)
    r, t, td = np.zeros(1), np.zeros(1, np.uint8), np.zeros(1)
    for module in (reference, compiled):
        for nodes, block_size in [
            (np.zeros((2, 8), np.int32), 4),  # P = 4 -> needs 8: ok
            (np.zeros((2, 6), np.int32), 4),
            (np.zeros((3, 8), np.int32), 4),
            (np.zeros((2, 8), np.int32), 1),
            (np.zeros((2, 8), np.int32), 0),
        ]:
            ok = nodes.shape == (2, 8) and block_size == 4
            before, qb = nodes.copy(), q.copy()
            codes = [
                module.argmax_tree_build(q, nodes, block_size),
                module.argmax_tree_refresh(q, nodes, block_size, e, e),
                module.greedy_tree(q, nodes, block_size, e, np.zeros(1, np.int64)),
                module.argmax_tree_max(q, nodes, block_size, e, np.zeros(1)),
                module.epsilon_greedy_tree(
                    q, nodes, block_size, e, 0.5, np.uint64(1), np.uint64(0), np.zeros(1, np.int64)
                ),
                module.q_learning_update_tree(q, nodes, block_size, e, e, r, e, t, 0.5, 0.5, td),
                module.double_q_learning_update_tree(
                    q,
                    q.copy(),
                    nodes,
                    nodes.copy(),
                    block_size,
                    block_size,
                    e,
                    e,
                    r,
                    e,
                    t,
                    0.5,
                    0.5,
                    np.uint64(1),
                    np.uint64(0),
                    td,
                ),
            ]
            if ok:
                assert codes == [0] * 7
            else:
                assert codes == [32] * 7
                assert np.array_equal(nodes, before) and np.array_equal(q, qb)


def test_kernels_status_codes(compiled, reference):
    q = np.zeros((2, 3), np.float32)
    for module in (reference, compiled):
        nodes = build(module, q, 2)
        before = nodes.copy()
        z = np.zeros(1, np.int32)
        bad = np.array([5], np.int32)
        r, t, td = np.zeros(1, np.float32), np.zeros(1, np.uint8), np.zeros(1, np.float32)
        assert module.q_learning_update_tree(q, nodes, 2, bad, z, r, z, t, 0.5, 0.5, td) == 1
        assert module.q_learning_update_tree(q, nodes, 2, z, bad, r, z, t, 0.5, 0.5, td) == 2
        assert module.q_learning_update_tree(q, nodes, 2, z, z, r, bad, t, 0.5, 0.5, td) == 3
        nan_r = np.array([NAN], np.float32)
        assert module.q_learning_update_tree(q, nodes, 2, z, z, nan_r, z, t, 0.5, 0.5, td) == 5
        assert module.argmax_tree_refresh(q, nodes, 2, bad, z) == 1
        assert module.argmax_tree_refresh(q, nodes, 2, z, bad) == 2
        assert module.greedy_tree(q, nodes, 2, bad, np.zeros(1, np.int64)) == 1
        assert np.array_equal(nodes, before) and (q == 0).all()


def test_public_double_q_key_matches_stream_key(backend):
    """An int seed means stream 0 of that seed, counter 0 (as in the plain path)."""
    q1 = np.arange(12, dtype=np.float64).reshape(3, 4)
    q2 = q1[:, ::-1].copy()
    trees = (ArgmaxTree(q1, 1), ArgmaxTree(q2, 1))
    td = fastlmrl.double_q_learning_update(
        q1, q2, [0, 1], [0, 1], [1.0, 1.0], [1, 2], [False, False], 1.0, 1.0, 42, argmax_trees=trees
    )
    want = np.empty(2)
    p1 = np.arange(12, dtype=np.float64).reshape(3, 4)
    p2 = p1[:, ::-1].copy()
    _backend.backend_module("python").double_q_learning_update(
        p1,
        p2,
        np.array([0, 1]),
        np.array([0, 1]),
        np.array([1.0, 1.0]),
        np.array([1, 2]),
        np.zeros(2, np.uint8),
        1.0,
        1.0,
        np.uint64(stream_key(42)),
        np.uint64(0),
        want,
    )
    assert np.array_equal(td, want) and np.array_equal(q1, p1) and np.array_equal(q2, p2)


# ---------------------------------------------------------------------------------------------
# array shapes (direct callers)


@pytest.mark.parametrize("kernel", KERNELS)
def test_inconsistent_array_shapes_are_rejected_first(compiled, reference, kernel):
    """Per-item arrays of another length than ``states``: BAD_SHAPES (checked first); ``q`` and
    ``nodes`` (and the second table / tree) are sized by the tree check: BAD_TREE."""
    q = np.linspace(-1.0, 1.0, 15).reshape(3, 5)  # block 2: P = 4 (V = 4 would give P = 2)
    nodes = build(reference, q, 2)
    states = np.array([0, 2, 1], np.int64)
    batch = dict(
        states=states,
        actions=np.array([1, 4, 0], np.int64),
        rewards=np.array([1.0, -0.5, 0.25]),
        next_states=np.array([2, 0, 1], np.int64),
        terminated=np.array([0, 1, 0], np.uint8),
        alpha=0.5,
        gamma=0.9,
    )
    seed = dict(key=np.uint64(5), counter=np.uint64(0))
    tree = dict(q=q, nodes=nodes, block_size=2)
    args = {
        "argmax_tree_build": dict(q=q, nodes=np.full_like(nodes, -7), block_size=2),
        "argmax_tree_refresh": dict(**tree, states=states, actions=batch["actions"]),
        "greedy_tree": dict(**tree, states=states, out=np.full(3, -7, np.int64)),
        "argmax_tree_max": dict(**tree, states=states, out=np.full(3, -7.0)),
        "epsilon_greedy_tree": dict(
            **tree, states=states, epsilon=0.5, **seed, out=np.full(3, -7, np.int64)
        ),
        "q_learning_update_tree": dict(**tree, **batch, td_out=np.full(3, -7.0)),
        "double_q_learning_update_tree": dict(
            q1=q,
            q2=-q,
            nodes1=nodes,
            nodes2=build(reference, -q, 2),
            block_size1=2,
            block_size2=2,
            **batch,
            **seed,
            td_out=np.full(3, -7.0),
        ),
    }[kernel]
    tables = {
        (k, axis)
        for k in ("q", "nodes", "q1", "q2", "nodes1", "nodes2")
        if k in args
        for axis in (0, 1)
    }
    for module in (reference, compiled):
        assert_rejects_bad_shapes(module, kernel, args, skip=tables)
        for name, axis in tables:
            assert status_with_short(module, kernel, args, name, axis) == 32, (name, axis)


def test_bad_shapes_status_is_an_internal_error():
    # never reached through the public API (the wrappers pass consistent shapes); still mapped
    with pytest.raises(ValueError, match="internal error: array arguments of inconsistent shapes"):
        fastlmrl.argmax_tree.raise_for_tree_status(BAD_SHAPES, {})
