"""Issue 11 audit of the public functions of selection, td_learning, permutations, ArgmaxTree and
rng: every malformed argument (None, a wrong type, strings, NaN, a bool, a huge int, an empty or
read-only array) gives a ValueError or TypeError that names the argument, and changes nothing
(tables, trees, random streams).  Exhausted RandomStreams raise ValueError before any write;
counters wrap modulo 2**64 inside every backend's draws."""
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import fastlmrl
from fastlmrl import ArgmaxTree, RandomStream, _backend
from fastlmrl.rng import RandomStreamExhausted, stream_key, uniforms

TOP = 2**64
BAD = {
    "None": None,
    "str": "abc",
    "strings": ["a", "b"],
    "nan": float("nan"),
    "bool": True,
    "huge": 2**70,
    "int64+1": 2**63,
    "nested": [[0, 1]],
    "object": object(),
}


def _setup():
    q = np.arange(12, dtype=np.float64).reshape(3, 4) / 7.0
    q2 = q[:, ::-1].copy()
    return dict(q=q, q2=q2, tree=ArgmaxTree(q, 2), tree2=ArgmaxTree(q2, 2),
                stream=RandomStream(4, 0, 100))


BATCH = dict(states=[0, 1], actions=[1, 2], rewards=[1.0, 0.5], next_states=[2, 0],
             terminated=[False, True])


def _calls():
    """name -> (function of (env, **overrides), the arguments to corrupt)."""
    def td(fn, extra, trees):
        def call(e, **kw):
            args = dict(q=e["q"], alpha=0.5, gamma=0.9, **BATCH, **extra)
            if fn is fastlmrl.double_q_learning_update:
                args = dict(q1=e["q"], q2=e["q2"], seed=e["stream"], **{
                    k: v for k, v in args.items() if k != "q"})
                if trees:
                    args["argmax_trees"] = (e["tree"], e["tree2"])
            elif trees:
                args["argmax_tree"] = e["tree"]
            args.update(kw)
            return fn(**args)
        return call

    calls = {}
    calls["greedy"] = (lambda e, **kw: fastlmrl.greedy(**{**dict(q=e["q"], states=[0, 2]), **kw}),
                       ["q", "states", "argmax_tree"])
    calls["epsilon_greedy"] = (lambda e, **kw: fastlmrl.epsilon_greedy(**{**dict(
        q=e["q"], states=[0, 2], epsilon=0.3, seed=e["stream"]), **kw}),
        ["q", "states", "epsilon", "seed", "argmax_tree"])
    calls["boltzmann"] = (lambda e, **kw: fastlmrl.boltzmann(**{**dict(
        q=e["q"], states=[0, 2], temperature=0.5, seed=e["stream"]), **kw}),
        ["q", "states", "temperature", "seed"])
    calls["permutation"] = (lambda e, **kw: fastlmrl.permutation(**{**dict(
        seed=e["stream"], n=5), **kw}), ["seed", "n"])
    common = ["q", "states", "actions", "rewards", "next_states", "terminated", "alpha", "gamma"]
    for trees in (False, True):
        suffix = "_tree" if trees else ""
        tree_arg = ["argmax_tree"] if trees else []
        calls["q_learning" + suffix] = (td(fastlmrl.q_learning_update, {}, trees),
                                        common + tree_arg)
        calls["sarsa" + suffix] = (td(fastlmrl.sarsa_update, dict(next_actions=[0, 3]), trees),
                                   common + ["next_actions"] + tree_arg)
        calls["expected_sarsa" + suffix] = (
            td(fastlmrl.expected_sarsa_update, dict(epsilon=0.1), trees),
            common + ["epsilon"] + tree_arg)
        calls["double_q" + suffix] = (
            td(fastlmrl.double_q_learning_update, {}, trees),
            ["q1", "q2"] + common[1:] + ["seed"] + (["argmax_trees"] if trees else []))
    calls["ArgmaxTree"] = (lambda e, **kw: ArgmaxTree(**{**dict(q=e["q"], block_size=2), **kw}),
                           ["q", "block_size"])
    calls["tree.refresh"] = (lambda e, **kw: e["tree"].refresh(**{**dict(
        states=[0, 1], actions=[1, 3]), **kw}), ["states", "actions"])
    calls["tree.argmax"] = (lambda e, **kw: e["tree"].argmax(**{**dict(states=[0, 1]), **kw}),
                            ["states"])
    calls["tree.max"] = (lambda e, **kw: e["tree"].max(**{**dict(states=[0, 1]), **kw}),
                         ["states"])
    calls["uniforms"] = (lambda e, **kw: fastlmrl.rng.uniforms(**{**dict(
        seed=e["stream"], n=3), **kw}), ["seed", "n"])
    return calls


CALLS = _calls()
# valid values among BAD: no tree; seeds are any int in [0, 2**64); any finite temperature > 0
VALID = {("argmax_tree", "None"), ("argmax_trees", "None"), ("seed", "int64+1"),
         ("temperature", "huge"), ("temperature", "int64+1")}
CASES = [(name, arg, bad) for name, (_, args) in CALLS.items() for arg in args for bad in BAD
         if (arg, bad) not in VALID]


def _snapshot(e):
    return [e["q"].copy(), e["q2"].copy(), e["tree"].nodes.copy(), e["tree2"].nodes.copy(),
            e["stream"].state()]


def _same(a, b):
    return all(np.array_equal(x, y, equal_nan=True) if isinstance(x, np.ndarray) else x == y
               for x, y in zip(a, b))


@pytest.mark.parametrize("name, arg, bad", CASES, ids=[f"{n}-{a}-{b}" for n, a, b in CASES])
def test_bad_argument_is_named_and_changes_nothing(backend, name, arg, bad):
    call, _ = CALLS[name]
    e = _setup()
    call(e)  # the valid call works
    e = _setup()
    before = _snapshot(e)
    with pytest.raises((TypeError, ValueError)) as info:
        call(e, **{arg: BAD[bad]})
    assert arg.split("[")[0] in str(info.value), (name, arg, bad, str(info.value))
    assert _same(before, _snapshot(e)), (name, arg, bad)


@pytest.mark.parametrize("name", [n for n in CALLS if "seed" in CALLS[n][1]])
def test_exhausted_stream_is_a_value_error_before_any_write(backend, name):
    """A RandomStream without enough counters left: ValueError naming seed (not OverflowError),
    tables, trees and the stream unchanged (issue 11 items 3 and 5)."""
    call, _ = CALLS[name]
    e = _setup()
    e["stream"] = RandomStream(4, 0, TOP - 1)  # every call above needs >= 2 counters
    before = _snapshot(e)
    with pytest.raises(RandomStreamExhausted, match="^seed: RandomStream exhausted"):
        call(e)
    assert _same(before, _snapshot(e)), name
    assert not isinstance(RandomStreamExhausted("x"), OverflowError)


@pytest.mark.parametrize("name", [n for n in CALLS if "seed" in CALLS[n][1]])
def test_a_stream_ending_exactly_at_2_64_is_usable(backend, name):
    """A call that needs exactly the counters left succeeds and leaves the stream exhausted."""
    call, _ = CALLS[name]
    need = {"epsilon_greedy": 4, "boltzmann": 2, "permutation": 5, "uniforms": 3}.get(name, 2)
    e = _setup()
    e["stream"] = RandomStream(4, 0, TOP - need)
    call(e)
    assert e["stream"].counter == TOP


def test_empty_batches_are_fine(backend):
    e = _setup()
    empty = np.zeros(0, np.int64)
    assert fastlmrl.greedy(e["q"], empty).shape == (0,)
    assert fastlmrl.epsilon_greedy(e["q"], empty, 0.5, RandomStream(0, 0, TOP)).shape == (0,)
    assert fastlmrl.boltzmann(e["q"], empty, 0.5, RandomStream(0, 0, TOP)).shape == (0,)
    assert fastlmrl.permutation(RandomStream(0, 0, TOP), 0).shape == (0,)
    td = fastlmrl.double_q_learning_update(e["q"], e["q2"], empty, empty, [], empty, [], 0.5, 0.9,
                                           RandomStream(0, 0, TOP))
    assert td.shape == (0,)


def test_empty_tables_are_refused(backend):
    for q in (np.zeros((0, 3)), np.zeros((3, 0))):
        with pytest.raises(ValueError, match="q"):
            fastlmrl.greedy(q, [])
        with pytest.raises(ValueError, match="q"):
            ArgmaxTree(q)
        with pytest.raises(ValueError, match="q"):
            fastlmrl.q_learning_update(q, [], [], [], [], [], 0.5, 0.5)


def test_sarsa_next_actions_none_is_a_type_error_naming_it(backend):
    q = np.zeros((3, 4))
    with pytest.raises(TypeError, match="next_actions"):
        fastlmrl.sarsa_update(q, [0], [1], [1.0], [2], None, [False], 0.5, 0.9)
    assert (q == 0).all()


def test_double_q_with_a_stream_that_runs_out_changes_neither_table(backend):
    """Issue 11 item 3: the stream is checked before the first write."""
    for trees in (False, True):
        q1 = np.arange(12, dtype=np.float64).reshape(3, 4)
        q2 = q1[:, ::-1].copy()
        kw = dict(argmax_trees=(ArgmaxTree(q1, 2), ArgmaxTree(q2, 2))) if trees else {}
        stream = RandomStream(1, 0, TOP - 2)
        before = (q1.copy(), q2.copy())
        with pytest.raises(ValueError, match="seed"):
            fastlmrl.double_q_learning_update(q1, q2, [0, 1, 2], [0, 1, 2], [5.0] * 3, [1, 2, 0],
                                              [False] * 3, 1.0, 0.9, stream, **kw)
        assert np.array_equal(q1, before[0]) and np.array_equal(q2, before[1])
        assert stream.counter == TOP - 2


# ---------------------------------------------------------------------------------------------
# counters wrap modulo 2**64 inside the kernels (every backend the same draws)


@given(counter=st.integers(TOP - 64, TOP - 1), n=st.integers(0, 30))
@example(counter=TOP - 1, n=0)
@example(counter=TOP - 1, n=1)
@example(counter=TOP - 3, n=3)
@example(counter=TOP - 7, n=30)  # draws wrap past counter 0
def test_kernel_draws_wrap_at_the_top_of_the_counter_range(counter, n):
    """Raw kernels given a counter near 2**64 (as a Numba/Cython user may) use counters
    ``counter + i mod 2**64``: compiled == reference == the NumPy/scalar definition."""
    key = np.uint64(stream_key(9))
    q = np.random.default_rng(n).standard_normal((4, 5))
    states = (np.arange(n) % 4).astype(np.int64)
    want_u = [fastlmrl.rng.uniform(int(key), (counter + i) % TOP) for i in range(n)]
    want_perm = np.argsort(np.array(want_u), kind="stable")
    results = {}
    for name in fastlmrl.BACKENDS:
        mod = _backend.backend_module(name)
        eps, boltz = np.empty(n, np.int64), np.empty(n, np.int64)
        perm = np.empty(n, np.int64)
        assert mod.epsilon_greedy(q, states, 0.5, key, np.uint64(counter), eps, 1) == 0
        assert mod.boltzmann(q, states, 0.7, key, np.uint64(counter), boltz, 1) == 0
        assert mod.random_permutation(key, np.uint64(counter), perm, np.empty(n),
                                      np.empty(n + 1, np.int64)) == 0
        q1, q2, td = q.copy(), q[:, ::-1].copy(), np.empty(n)
        assert mod.double_q_learning_update(q1, q2, states, states % 5, np.ones(n),
                                            states[::-1].copy(), np.zeros(n, np.uint8), 0.5, 0.9,
                                            key, np.uint64(counter), td) == 0
        results[name] = (eps, boltz, perm, q1, q2, td)
        np.testing.assert_array_equal(perm, want_perm)
    for name in fastlmrl.BACKENDS:
        for x, y in zip(results["python"], results[name]):
            np.testing.assert_array_equal(x, y, err_msg=name)
    if counter + n <= TOP:  # the public path: uniforms of a RandomStream near its end
        assert uniforms(RandomStream(9, 0, counter), n).tolist() == want_u


@pytest.mark.parametrize("name", ["greedy", "epsilon_greedy", "boltzmann", "q_learning_update",
                                  "sarsa_update", "expected_sarsa_update",
                                  "double_q_learning_update", "greedy_tree",
                                  "q_learning_update_tree", "argmax_tree_refresh",
                                  "argmax_tree_max"])
def test_read_only_inputs_compile_nothing_new(name):
    """Issue 11 item 7: read-only inputs reach the Numba kernels as arrays of the types already
    compiled (no new 8-10 s specialisation)."""
    import fastlmrl._numba as nb

    def ro(x):
        x = np.array(x)
        x.flags.writeable = False
        return x

    q = np.arange(12, dtype=np.float64).reshape(3, 4)
    q2 = q[:, ::-1].copy()
    s, a, r, s2, t = (np.array([0, 1]), np.array([1, 2]), np.array([1.0, 0.5]),
                      np.array([2, 0]), np.array([False, True]))
    tree = ArgmaxTree(q, 2)
    calls = {
        "greedy": lambda v: fastlmrl.greedy(v(q), v(s)),
        "epsilon_greedy": lambda v: fastlmrl.epsilon_greedy(v(q), v(s), 0.5, 1),
        "boltzmann": lambda v: fastlmrl.boltzmann(v(q), v(s), 0.5, 1),
        "q_learning_update": lambda v: fastlmrl.q_learning_update(q, v(s), v(a), v(r), v(s2),
                                                                  v(t), 0.5, 0.9),
        "sarsa_update": lambda v: fastlmrl.sarsa_update(q, v(s), v(a), v(r), v(s2), v(a), v(t),
                                                        0.5, 0.9),
        "expected_sarsa_update": lambda v: fastlmrl.expected_sarsa_update(
            q, v(s), v(a), v(r), v(s2), v(t), 0.5, 0.9, 0.1),
        "double_q_learning_update": lambda v: fastlmrl.double_q_learning_update(
            q, q2, v(s), v(a), v(r), v(s2), v(t), 0.5, 0.9, 3),
        "greedy_tree": lambda v: fastlmrl.greedy(q, v(s), argmax_tree=tree),
        "q_learning_update_tree": lambda v: fastlmrl.q_learning_update(
            q, v(s), v(a), v(r), v(s2), v(t), 0.5, 0.9, argmax_tree=tree),
        "argmax_tree_refresh": lambda v: tree.refresh(v(s), v(a)),
        "argmax_tree_max": lambda v: tree.max(v(s)),
    }
    with fastlmrl.use_backend("numba"):
        calls[name](np.asarray)  # compiles (or loads) the writeable specialisation
        kernel = getattr(nb, name)
        count = len(kernel.signatures)
        calls[name](ro)
        assert len(kernel.signatures) == count
