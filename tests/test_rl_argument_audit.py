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
from fastlmrl import ArgmaxTree, RandomStream, Status, _backend
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
    return dict(
        q=q, q2=q2, tree=ArgmaxTree(q, 2), tree2=ArgmaxTree(q2, 2), stream=RandomStream(4, 0, 100)
    )


BATCH = dict(
    states=[0, 1], actions=[1, 2], rewards=[1.0, 0.5], next_states=[2, 0], terminated=[False, True]
)


def _calls():
    """name -> (function of (env, **overrides), the arguments to corrupt)."""

    def td(fn, extra, trees):
        def call(e, **kw):
            args = dict(q=e["q"], alpha=0.5, gamma=0.9, **BATCH, **extra)
            if fn is fastlmrl.double_q_learning_update:
                args = dict(
                    q1=e["q"],
                    q2=e["q2"],
                    seed=e["stream"],
                    **{k: v for k, v in args.items() if k != "q"},
                )
                if trees:
                    args["argmax_trees"] = (e["tree"], e["tree2"])
            elif trees:
                args["argmax_tree"] = e["tree"]
            args.update(kw)
            return fn(**args)

        return call

    calls = {}
    calls["greedy"] = (
        lambda e, **kw: fastlmrl.greedy(**{**dict(q=e["q"], states=[0, 2]), **kw}),
        ["q", "states", "argmax_tree"],
    )
    calls["epsilon_greedy"] = (
        lambda e, **kw: fastlmrl.epsilon_greedy(
            **{**dict(q=e["q"], states=[0, 2], epsilon=0.3, seed=e["stream"]), **kw}
        ),
        ["q", "states", "epsilon", "seed", "argmax_tree"],
    )
    calls["boltzmann"] = (
        lambda e, **kw: fastlmrl.boltzmann(
            **{**dict(q=e["q"], states=[0, 2], temperature=0.5, seed=e["stream"]), **kw}
        ),
        ["q", "states", "temperature", "seed"],
    )
    calls["permutation"] = (
        lambda e, **kw: fastlmrl.permutation(**{**dict(seed=e["stream"], n=5), **kw}),
        ["seed", "n"],
    )
    common = ["q", "states", "actions", "rewards", "next_states", "terminated", "alpha", "gamma"]
    for trees in (False, True):
        suffix = "_tree" if trees else ""
        tree_arg = ["argmax_tree"] if trees else []
        calls["q_learning" + suffix] = (
            td(fastlmrl.q_learning_update, {}, trees),
            common + tree_arg,
        )
        calls["sarsa" + suffix] = (
            td(fastlmrl.sarsa_update, dict(next_actions=[0, 3]), trees),
            common + ["next_actions"] + tree_arg,
        )
        calls["expected_sarsa" + suffix] = (
            td(fastlmrl.expected_sarsa_update, dict(epsilon=0.1), trees),
            common + ["epsilon"] + tree_arg,
        )
        calls["double_q" + suffix] = (
            td(fastlmrl.double_q_learning_update, {}, trees),
            ["q1", "q2"] + common[1:] + ["seed"] + (["argmax_trees"] if trees else []),
        )
    calls["ArgmaxTree"] = (
        lambda e, **kw: ArgmaxTree(**{**dict(q=e["q"], block_size=2), **kw}),
        ["q", "block_size"],
    )
    calls["tree.refresh"] = (
        lambda e, **kw: e["tree"].refresh(**{**dict(states=[0, 1], actions=[1, 3]), **kw}),
        ["states", "actions"],
    )
    calls["tree.argmax"] = (
        lambda e, **kw: e["tree"].argmax(**{**dict(states=[0, 1]), **kw}),
        ["states"],
    )
    calls["tree.max"] = (lambda e, **kw: e["tree"].max(**{**dict(states=[0, 1]), **kw}), ["states"])
    calls["uniforms"] = (
        lambda e, **kw: fastlmrl.rng.uniforms(**{**dict(seed=e["stream"], n=3), **kw}),
        ["seed", "n"],
    )
    return calls


CALLS = _calls()
# valid values among BAD: no tree; seeds are any int in [0, 2**64); any finite temperature > 0
VALID = {
    ("argmax_tree", "None"),
    ("argmax_trees", "None"),
    ("seed", "int64+1"),
    ("temperature", "huge"),
    ("temperature", "int64+1"),
}
CASES = [
    (name, arg, bad)
    for name, (_, args) in CALLS.items()
    for arg in args
    for bad in BAD
    if (arg, bad) not in VALID
]


def _snapshot(e):
    return [
        e["q"].copy(),
        e["q2"].copy(),
        e["tree"].nodes.copy(),
        e["tree2"].nodes.copy(),
        e["stream"].state(),
    ]


def _same(a, b):
    return all(
        np.array_equal(x, y, equal_nan=True) if isinstance(x, np.ndarray) else x == y
        for x, y in zip(a, b)
    )


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
    td = fastlmrl.double_q_learning_update(
        e["q"], e["q2"], empty, empty, [], empty, [], 0.5, 0.9, RandomStream(0, 0, TOP)
    )
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
            fastlmrl.double_q_learning_update(
                q1,
                q2,
                [0, 1, 2],
                [0, 1, 2],
                [5.0] * 3,
                [1, 2, 0],
                [False] * 3,
                1.0,
                0.9,
                stream,
                **kw,
            )
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
        assert (
            mod.random_permutation(
                key, np.uint64(counter), perm, np.empty(n), np.empty(n + 1, np.int64)
            )
            == 0
        )
        q1, q2, td = q.copy(), q[:, ::-1].copy(), np.empty(n)
        assert (
            mod.double_q_learning_update(
                q1,
                q2,
                states,
                states % 5,
                np.ones(n),
                states[::-1].copy(),
                np.zeros(n, np.uint8),
                0.5,
                0.9,
                key,
                np.uint64(counter),
                td,
            )
            == 0
        )
        results[name] = (eps, boltz, perm, q1, q2, td)
        np.testing.assert_array_equal(perm, want_perm)
    for name in fastlmrl.BACKENDS:
        for x, y in zip(results["python"], results[name]):
            np.testing.assert_array_equal(x, y, err_msg=name)
    if counter + n <= TOP:  # the public path: uniforms of a RandomStream near its end
        assert uniforms(RandomStream(9, 0, counter), n).tolist() == want_u


@pytest.mark.parametrize(
    "name",
    [
        "greedy",
        "epsilon_greedy",
        "boltzmann",
        "q_learning_update",
        "sarsa_update",
        "expected_sarsa_update",
        "double_q_learning_update",
        "greedy_tree",
        "q_learning_update_tree",
        "argmax_tree_refresh",
        "argmax_tree_max",
    ],
)
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
    s, a, r, s2, t = (
        np.array([0, 1]),
        np.array([1, 2]),
        np.array([1.0, 0.5]),
        np.array([2, 0]),
        np.array([False, True]),
    )
    tree = ArgmaxTree(q, 2)
    calls = {
        "greedy": lambda v: fastlmrl.greedy(v(q), v(s)),
        "epsilon_greedy": lambda v: fastlmrl.epsilon_greedy(v(q), v(s), 0.5, 1),
        "boltzmann": lambda v: fastlmrl.boltzmann(v(q), v(s), 0.5, 1),
        "q_learning_update": lambda v: fastlmrl.q_learning_update(
            q, v(s), v(a), v(r), v(s2), v(t), 0.5, 0.9
        ),
        "sarsa_update": lambda v: fastlmrl.sarsa_update(
            q, v(s), v(a), v(r), v(s2), v(a), v(t), 0.5, 0.9
        ),
        "expected_sarsa_update": lambda v: fastlmrl.expected_sarsa_update(
            q, v(s), v(a), v(r), v(s2), v(t), 0.5, 0.9, 0.1
        ),
        "double_q_learning_update": lambda v: fastlmrl.double_q_learning_update(
            q, q2, v(s), v(a), v(r), v(s2), v(t), 0.5, 0.9, 3
        ),
        "greedy_tree": lambda v: fastlmrl.greedy(q, v(s), argmax_tree=tree),
        "q_learning_update_tree": lambda v: fastlmrl.q_learning_update(
            q, v(s), v(a), v(r), v(s2), v(t), 0.5, 0.9, argmax_tree=tree
        ),
        "argmax_tree_refresh": lambda v: tree.refresh(v(s), v(a)),
        "argmax_tree_max": lambda v: tree.max(v(s)),
    }
    with fastlmrl.use_backend("numba"):
        calls[name](np.asarray)  # compiles (or loads) the writeable specialisation
        kernel = getattr(nb, name)
        count = len(kernel.signatures)
        calls[name](ro)
        assert len(kernel.signatures) == count


# ---------------------------------------------------------------------------------------------
# arrays that share memory with an array the call writes (found while auditing issue 11)


def _aliased_batch(q):
    """States/actions that are views of q's own memory (q all zeros: valid ids 0 until written)."""
    view = q.reshape(-1).view(np.int64)
    return view[:4], np.array([3, 0, 0, 1], np.int64)


def test_public_update_refuses_ids_that_alias_the_table(backend):
    """A state array that is a view of q: the first update would rewrite states[3] before its
    use (an out-of-bounds write in the compiled backends before this check)."""
    for fn in ("q", "sarsa", "esarsa", "double"):
        q = np.zeros((1000, 4))
        q2 = np.zeros((1000, 4))
        states, actions = _aliased_batch(q)
        args = (states, actions, np.full(4, 1e300), np.zeros(4, np.int64))
        before = q.copy()
        with pytest.raises(ValueError, match="states shares memory with q"):
            if fn == "q":
                fastlmrl.q_learning_update(q, *args, np.ones(4, bool), 1.0, 0.0)
            elif fn == "sarsa":
                fastlmrl.sarsa_update(q, *args, np.zeros(4, np.int64), np.ones(4, bool), 1.0, 0.0)
            elif fn == "esarsa":
                fastlmrl.expected_sarsa_update(q, *args, np.ones(4, bool), 1.0, 0.0, 0.1)
            else:
                fastlmrl.double_q_learning_update(q, q2, *args, np.ones(4, bool), 1.0, 0.0, 1)
        assert np.array_equal(q, before)
    q = np.zeros((3, 4))
    with pytest.raises(ValueError, match="rewards shares memory with q"):
        fastlmrl.q_learning_update(
            q, [0, 1, 2, 0], [0, 1, 2, 3], q[0], [0, 0, 0, 0], [False] * 4, 0.5, 0.5
        )
    q = np.zeros((8, 4))
    tree = ArgmaxTree(q, 2)
    states = tree.nodes[0, 1:3]  # int32 [0, 0]: valid ids that refresh would overwrite
    i32 = np.zeros(2, np.int32)
    with pytest.raises(ValueError, match="states shares memory with the tree's nodes"):
        tree.refresh(states, i32)
    with pytest.raises(ValueError, match=r"states shares memory with argmax_tree\.nodes"):
        fastlmrl.q_learning_update(
            q, states, i32, [1.0, 1.0], i32, [False, False], 0.5, 0.5, argmax_tree=tree
        )


def _kernel_calls(q, nodes, n=4):
    """(name, args, index of the array to alias in place of an input) for every raw kernel of
    these topics that writes an array: each call is valid as given."""
    z = np.zeros(n, np.int64)
    r, t = np.zeros(n), np.zeros(n, np.uint8)
    key, c = np.uint64(1), np.uint64(0)
    q2, nodes2 = q.copy(), nodes.copy()
    return [
        ("q_learning_update", [q, z, z, r, z, t, 0.5, 0.5, np.zeros(n)]),
        ("sarsa_update", [q, z, z, r, z, z.copy(), t, 0.5, 0.5, np.zeros(n)]),
        ("expected_sarsa_update", [q, z, z, r, z, t, 0.5, 0.5, 0.1, np.zeros(n)]),
        ("double_q_learning_update", [q, q2, z, z, r, z, t, 0.5, 0.5, key, c, np.zeros(n)]),
        ("greedy", [q, z, np.zeros(n, np.int64), 1]),
        ("epsilon_greedy", [q, z, 0.5, key, c, np.zeros(n, np.int64), 1]),
        ("boltzmann", [q, z, 0.5, key, c, np.zeros(n, np.int64), 1]),
        ("argmax_tree_refresh", [q, nodes, 2, z, z]),
        ("greedy_tree", [q, nodes, 2, z, np.zeros(n, np.int64)]),
        ("argmax_tree_max", [q, nodes, 2, z, np.zeros(n)]),
        ("epsilon_greedy_tree", [q, nodes, 2, z, 0.5, key, c, np.zeros(n, np.int64)]),
        ("q_learning_update_tree", [q, nodes, 2, z, z, r, z, t, 0.5, 0.5, np.zeros(n)]),
        (
            "double_q_learning_update_tree",
            [q, q2, nodes, nodes2, 2, 2, z, z, r, z, t, 0.5, 0.5, key, c, np.zeros(n)],
        ),
    ]


WRITTEN = {
    "q_learning_update": (0, 8),
    "sarsa_update": (0, 9),
    "expected_sarsa_update": (0, 9),
    "double_q_learning_update": (0, 1, 11),
    "greedy": (2,),
    "epsilon_greedy": (5,),
    "boltzmann": (5,),
    "argmax_tree_refresh": (1,),
    "greedy_tree": (4,),
    "argmax_tree_max": (4,),
    "epsilon_greedy_tree": (7,),
    "q_learning_update_tree": (0, 1, 10),
    "double_q_learning_update_tree": (0, 1, 2, 3, 15),
}


def _view_like(base, like):
    """An array of like's dtype and shape over base's memory (base must be large enough)."""
    flat = base.reshape(-1).view(np.uint8)
    return flat[: like.nbytes].view(like.dtype).reshape(like.shape)


@pytest.mark.parametrize("name", list(WRITTEN))
def test_raw_kernels_refuse_written_arrays_that_share_memory(compiled, reference, name):
    """Each written array in turn shares memory with each other array argument: status 8
    (OVERLAPPING_ARRAYS) in every backend, nothing written."""
    for module in (reference, compiled):
        q = np.zeros((8, 4))
        nodes = built(module, q, 2)
        calls = dict(_kernel_calls(q, nodes))
        base_args = calls[name]
        assert (
            getattr(module, name)(
                *[x.copy() if isinstance(x, np.ndarray) else x for x in base_args]
            )
            == 0
        )
        for w in WRITTEN[name]:
            for k, other in enumerate(base_args):
                if k == w or not isinstance(other, np.ndarray) or other.size == 0:
                    continue
                args = [x.copy() if isinstance(x, np.ndarray) else x for x in base_args]
                big = np.zeros(max(args[w].nbytes, other.nbytes) + 64, np.uint8)
                args[w] = _view_like(big, args[w])
                args[k] = _view_like(big, other)
                np.copyto(args[k], other)  # k's valid contents (w shares the bytes)
                before = big.copy()
                status = getattr(module, name)(*args)
                assert status == 8, (module.__name__, name, w, k)
                assert np.array_equal(big, before), (module.__name__, name, w, k)


def built(module, q, block_size):
    nodes = np.full_like(ArgmaxTree(q, block_size)._nodes, 7)
    assert module.argmax_tree_build(q, nodes, block_size) == 0
    return nodes


def test_permutation_scratch_that_shares_memory(compiled, reference):
    for module in (reference, compiled):
        buf = np.zeros(64, np.int64)
        out, starts = buf[:5], buf[4:10]  # overlap by one element
        status = module.random_permutation(np.uint64(1), np.uint64(0), out, np.empty(5), starts)
        assert status == Status.OVERLAPPING_ARRAYS
        assert (buf == 0).all()


def test_public_aliasing_repro_in_a_subprocess():
    """The crash this audit found, run as a user would, in a fresh interpreter per backend."""
    import subprocess
    import sys
    import textwrap

    for name in fastlmrl.BACKENDS:
        code = textwrap.dedent(f"""
            import numpy as np, fastlmrl
            with fastlmrl.use_backend({name!r}):
                q = np.zeros((1000, 4))
                states = q.reshape(-1).view(np.int64)[:8]
                actions = np.array([3, 0, 0, 1, 1, 1, 1, 1])
                try:
                    fastlmrl.q_learning_update(q, states, actions, np.full(8, 1e300),
                                               np.zeros(8, np.int64), np.ones(8, bool), 1.0, 0.0)
                except ValueError as e:
                    print("refused:", e)
        """)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, (name, out.returncode, out.stderr[-2000:])
        assert "refused: states shares memory with q" in out.stdout, (name, out.stdout)


# ---------------------------------------------------------------------------------------------
# scalar arguments of the raw selection kernels (fuzz findings: temperature 0 raised
# ZeroDivisionError, num_threads = 2**31 OverflowError in Cython)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_raw_boltzmann_refuses_a_bad_temperature(compiled, reference, temperature):
    q = np.zeros((2, 3))
    for module in (reference, compiled):
        out = np.full(2, -7, np.int64)
        assert (
            module.boltzmann(q, np.array([0, 1]), temperature, np.uint64(1), np.uint64(0), out, 1)
            == 11
        )
        assert (out == -7).all()


@pytest.mark.parametrize("epsilon", [-0.1, 1.5, float("nan"), float("inf")])
def test_raw_epsilon_greedy_refuses_a_bad_epsilon(compiled, reference, epsilon):
    q = np.zeros((2, 3))
    nodes = built(reference, q, 2)
    for module in (reference, compiled):
        out = np.full(2, -7, np.int64)
        assert (
            module.epsilon_greedy(q, np.array([0, 1]), epsilon, np.uint64(1), np.uint64(0), out, 1)
            == 10
        )
        assert (
            module.epsilon_greedy_tree(
                q, nodes, 2, np.array([0, 1]), epsilon, np.uint64(1), np.uint64(0), out
            )
            == 10
        )
        assert (out == -7).all()


@pytest.mark.parametrize("num_threads", [0, -5, 2**31, 2**40, 2**63, 2**70])
def test_raw_selection_accepts_any_integer_thread_count(compiled, reference, num_threads):
    """The thread count never changes results; a huge one is clamped (Cython), not an
    OverflowError or a request for billions of threads."""
    q = np.random.default_rng(0).standard_normal((4, 5))
    states = np.arange(4)
    want = np.empty(4, np.int64)
    assert reference.greedy(q, states, want, 1) == 0
    for module in (reference, compiled):
        out = np.empty(4, np.int64)
        try:
            status = module.greedy(q, states, out, num_threads)
        except (TypeError, OverflowError):  # Numba's dispatcher: no int type beyond int64
            assert module.__name__.endswith("numba") and num_threads >= 2**63
            continue
        assert status == 0 and np.array_equal(out, want)


@pytest.mark.parametrize(
    "alpha, gamma, want",
    [
        (0.0, 0.5, 12),
        (1.5, 0.5, 12),
        (float("nan"), 0.5, 12),
        (0.5, -0.1, 13),
        (0.5, float("nan"), 13),
        (0.5, 2.0, 13),
    ],
)
def test_raw_td_kernels_refuse_bad_rates(compiled, reference, alpha, gamma, want):
    """alpha in (0, 1], gamma in [0, 1] (epsilon in [0, 1] for expected SARSA), as the public
    API: a direct caller gets a status, never NaN written into the table."""
    for module in (reference, compiled):
        q = np.zeros((8, 4))
        nodes = built(module, q, 2)
        calls = dict(_kernel_calls(q, nodes))
        for name in (
            "q_learning_update",
            "sarsa_update",
            "expected_sarsa_update",
            "double_q_learning_update",
            "q_learning_update_tree",
            "double_q_learning_update_tree",
        ):
            args = [x.copy() if isinstance(x, np.ndarray) else x for x in calls[name]]
            i = next(k for k, x in enumerate(args) if isinstance(x, float) and x == 0.5)
            args[i], args[i + 1] = alpha, gamma
            before = [x.copy() for x in args if isinstance(x, np.ndarray)]
            assert getattr(module, name)(*args) == want, (module.__name__, name)
            after = [x for x in args if isinstance(x, np.ndarray)]
            assert all(np.array_equal(b, a) for b, a in zip(before, after))
        args = [
            x.copy() if isinstance(x, np.ndarray) else x for x in calls["expected_sarsa_update"]
        ]
        args[8] = 1.5  # epsilon
        # one status per meaning (issue 14): expected SARSA's bad epsilon is selection's
        assert module.expected_sarsa_update(*args) == Status.BAD_EPSILON


def test_reference_kernels_refuse_read_only_outputs_and_float_ids_before_writing(reference):
    """What the compiled signatures refuse at dispatch, the reference refuses before its first
    write (fuzz findings: a read-only td_out or float next_states left q updated)."""
    q = np.zeros((8, 4))
    nodes = built(reference, q, 2)
    for name, args in _kernel_calls(q, nodes):
        for k in WRITTEN[name]:
            bad = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
            bad[k].flags.writeable = False
            before = [x.copy() for x in bad if isinstance(x, np.ndarray)]
            with pytest.raises(ValueError, match="read-only"):
                getattr(reference, name)(*bad)
            assert all(
                np.array_equal(b, a)
                for b, a in zip(before, [x for x in bad if isinstance(x, np.ndarray)])
            )
    z, r, t = np.zeros(4, np.int64), np.zeros(4), np.zeros(4, np.uint8)
    for name, call in [
        (
            "sarsa_update",
            lambda f: reference.sarsa_update(q, z, z, r, f, z, t, 0.5, 0.5, np.zeros(4)),
        ),
        (
            "q_learning_update_tree",
            lambda f: reference.q_learning_update_tree(
                q, nodes, 2, z, z, r, f, t, 0.5, 0.5, np.zeros(4)
            ),
        ),
    ]:
        with pytest.raises(TypeError, match="next_states"):
            call(np.full(4, 1.0))
        assert (q == 0).all(), name
