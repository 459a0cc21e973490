"""Case generators of the fuzz campaign.

A *public* case is (a seed spec below, one argument, one mutation): the spec builds a small valid
call from a seeded generator, the mutation replaces one argument.  A *kernel* case is (a recorded
valid kernel call, one argument, one mutation): the valid calls are recorded by running every
public spec under the python backend with the kernels wrapped (``record_kernel_calls``: the
combined backend module and every kernel attribute bound with ``fastlmrl._backend.bind``), so the
raw kernels are driven with exactly the arrays the public API gives them.

Every array handed to a target is allocated inside a guard band (``harness.Guards``).
"""

from __future__ import annotations

import copy
import inspect
import zlib

import numpy as np

BIG_ID = 2**31 - 1
NUM_COUNTERS = 2**64


# ----------------------------------------------------------------------------------- mutations
def value_kind(value) -> str:
    """The mutation family of a value."""
    from fastlmrl import RandomStream

    if isinstance(value, RandomStream):
        return "stream"
    if isinstance(value, np.ndarray):
        if value.dtype == bool:
            return "bool_array"
        if value.dtype.kind in "iu":
            return "int_array"
        if value.dtype.kind == "f":
            return "float_array"
        return "other"
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, str):
        return "str"
    if value is None:
        return "none"
    return "other"


#: mutation name -> (applies to these kinds, type_level?)  A type-level mutation changes the
#: Python/NumPy type of the argument (a raw kernel may refuse it with an exception); a value-level
#: one keeps the type and changes the content (a raw kernel must return a status).
MUTATIONS = {
    # arrays
    "none": (("int_array", "float_array", "bool_array", "int", "float", "str", "stream"), True),
    "nan": (("float_array",), False),
    "inf": (("float_array",), False),
    "neg_inf": (("float_array",), False),
    "huge_value": (("float_array",), False),
    "neg_value": (("float_array",), False),
    "id_neg": (("int_array",), False),
    "id_big": (("int_array",), False),
    "id_2_31": (("int_array",), False),
    "id_2_63": (("int_array",), False),
    "bool_2": (("bool_array",), True),
    "short0": (("int_array", "float_array", "bool_array"), False),
    "short1": (("int_array", "float_array", "bool_array"), False),
    "long0": (("int_array", "float_array", "bool_array"), False),
    "empty": (("int_array", "float_array", "bool_array"), False),
    "extra_dim": (("int_array", "float_array", "bool_array"), True),
    "zero_dim": (("int_array", "float_array", "bool_array"), True),
    "dtype_float": (("int_array", "bool_array"), True),
    "dtype_int": (("float_array",), True),
    "dtype_f16": (("float_array",), True),
    "dtype_u64": (("int_array",), True),
    "dtype_object": (("int_array", "float_array"), True),
    "noncontig": (("int_array", "float_array", "bool_array"), True),
    "readonly": (("int_array", "float_array", "bool_array"), True),
    "string": (("int_array", "float_array", "bool_array", "int", "float"), True),
    # scalars
    "s_nan": (("float",), False),
    "s_inf": (("float",), False),
    "s_neg": (("float", "int"), False),
    "s_zero": (("float", "int"), False),
    "s_huge": (("float",), False),
    "s_2_31": (("int",), False),
    "s_2_63": (("int",), True),
    "s_2_64": (("int",), True),
    "s_frac": (("int",), True),
    "s_array": (("int", "float"), True),
    "s_list": (("str",), True),
    "s_unknown": (("str",), False),
    "s_int": (("str",), True),
    # streams / seeds
    "exhausted": (("stream",), False),
    "near_end": (("stream",), False),
    "seed_neg": (("stream",), True),
    "seed_2_64": (("stream",), True),
    "seed_float": (("stream",), True),
    # uint64 counters of raw kernels
    "u_max": (("u64",), False),
}

#: Mutations that make Numba compile a new specialisation of a raw kernel (seconds each); the
#: campaign samples them for the numba backend.
NUMBA_COMPILES = {
    "extra_dim",
    "zero_dim",
    "dtype_float",
    "dtype_int",
    "dtype_f16",
    "dtype_u64",
    "noncontig",
    "readonly",
    "bool_2",
    "s_2_63",
    "s_2_64",
    "s_frac",
    "s_array",
    "s_int",
    "string",
    "s_list",
    "id_2_63",
}


#: Mutations of a length: the message may name either side of the mismatch (``states`` one
#: shorter -> "actions must have length 6, got 7" is a clean rejection).
RELATIONAL = {"short0", "short1", "long0", "empty"}


def applicable(value, kernel: bool = False) -> list:
    kind = value_kind(value)
    if kernel and isinstance(value, np.uint64):
        kind = "u64"
    names = [m for m, (kinds, _) in MUTATIONS.items() if kind in kinds]
    if isinstance(value, np.ndarray):
        if value.ndim < 2:
            names = [m for m in names if m != "short1"]
        if value.ndim == 0:
            names = [
                m for m in names if m not in ("short0", "long0", "empty", "noncontig", "zero_dim")
            ]
        for axis, m in ((0, "short0"), (1, "short1")):
            if value.ndim > axis and value.shape[axis] == 0:
                names = [n for n in names if n != m]
        if value.size == 0:
            names = [
                m
                for m in names
                if m
                not in (
                    "nan",
                    "inf",
                    "neg_inf",
                    "huge_value",
                    "neg_value",
                    "id_neg",
                    "id_big",
                    "id_2_31",
                    "id_2_63",
                    "short0",
                    "zero_dim",
                )
            ]
        if value.dtype.kind in "iu" and value.dtype.itemsize < 8:
            names = [m for m in names if m != "id_2_63"]
        if value.dtype.kind == "u":
            names = [m for m in names if m != "id_neg"]
    if kernel:
        # a kernel gets exactly the Python/NumPy scalar type it was recorded with
        names = [
            m
            for m in names
            if m not in ("none", "string", "s_array", "s_list", "s_int", "s_frac", "s_2_64")
        ]
        if isinstance(value, np.integer) and value.dtype.kind == "u":
            names = [m for m in names if m != "s_neg"]
    return names


def is_type_level(mutation: str) -> bool:
    return MUTATIONS[mutation][1]


def _pick(r, a):
    return tuple(int(r.integers(0, n)) for n in a.shape)


def mutate(value, mutation: str, r, G, kernel: bool = False):
    """The mutated value (guarded arrays through ``G``)."""
    from fastlmrl import RandomStream

    if mutation == "none":
        return None
    if isinstance(value, np.ndarray):
        a = np.array(value, copy=True)
        # content mutations edit the (guarded) array in place, so that objects built on it (an
        # ArgmaxTree on q, an optimizer on its table) still refer to it
        in_place = value if value.flags.writeable and value.dtype != object else G.g(a)
        if mutation == "neg_value":  # every entry negative (moments, counts, variances...)
            in_place[...] = -np.abs(a) - 1.0
            return in_place
        if mutation in ("nan", "inf", "neg_inf", "huge_value"):
            in_place[_pick(r, a)] = {
                "nan": np.nan,
                "inf": np.inf,
                "neg_inf": -np.inf,
                "huge_value": np.finfo(a.dtype).max,
            }[mutation]
            return in_place
        if mutation in ("id_neg", "id_big", "id_2_31", "id_2_63"):
            top = np.iinfo(a.dtype).max
            in_place[_pick(r, a)] = {
                "id_neg": -1,
                "id_big": min(1000, top),
                "id_2_31": min(2**31 - 1, top),
                "id_2_63": top,
            }[mutation]
            return in_place
        if mutation == "bool_2":
            b = a.view(np.uint8).copy()
            b[_pick(r, b)] = 2
            return G.g(b).view(bool)
        if mutation == "short0":
            return G.g(np.delete(a, -1, axis=0))
        if mutation == "short1":
            return G.g(np.delete(a, -1, axis=1))
        if mutation == "long0":
            return G.g(np.concatenate([a, a[:1]], axis=0))
        if mutation == "empty":
            return G.g(a[:0])
        if mutation == "extra_dim":
            return G.g(a[..., None])
        if mutation == "zero_dim":
            return G.g(a.reshape(-1)[0])
        if mutation == "dtype_float":
            return G.g(a.astype(np.float64) + 0.5)
        if mutation == "dtype_int":
            return G.g(a.astype(np.int64))
        if mutation == "dtype_f16":
            return G.g(a.astype(np.float16))
        if mutation == "dtype_u64":
            return G.g(a.astype(np.uint64))
        if mutation == "dtype_object":
            return a.astype(object)
        if mutation == "noncontig":
            return G.g(a, noncontiguous=True)
        if mutation == "readonly":
            return G.g(a, readonly=True)
        if mutation == "string":
            return "abc"
    if isinstance(value, RandomStream):
        if mutation == "exhausted":
            return RandomStream(value.seed, value.stream, NUM_COUNTERS - 1)
        if mutation == "near_end":
            return RandomStream(value.seed, value.stream, NUM_COUNTERS - 3)
        return {"seed_neg": -1, "seed_2_64": 2**64, "seed_float": 1.5}[mutation]
    if mutation == "u_max":
        return type(value)(2**64 - 2)
    if mutation == "string":
        return "abc"
    keep = type(value) if kernel else (lambda x: x)
    if mutation == "s_nan":
        return keep(float("nan"))
    if mutation == "s_inf":
        return keep(float("inf"))
    if mutation == "s_neg":
        return keep(-1)
    if mutation == "s_zero":
        return keep(0)
    if mutation == "s_huge":
        return keep(1e308)
    if mutation == "s_2_31":
        return keep(2**31)
    if mutation == "s_2_63":
        return 2**63
    if mutation == "s_2_64":
        return 2**64
    if mutation == "s_frac":
        return 1.5
    if mutation == "s_array":
        return np.array([value, value])
    if mutation == "s_list":
        return [value]
    if mutation == "s_unknown":
        return "nonsense"
    if mutation == "s_int":
        return 3
    raise KeyError(mutation)


# ----------------------------------------------------------------------------------- public specs
class Built:
    """A valid call: ``fn(**kwargs)``; ``extras`` are further objects whose state must not change
    on a rejected call; ``names[arg]`` the words one of which the message must contain."""

    def __init__(self, fn, kwargs, extras=(), names=None, skip=(), specials=None):
        self.fn = fn
        self.kwargs = kwargs
        self.extras = list(extras)
        self.names = names or {}
        self.skip = set(skip)
        self.specials = specials or {}

    def message_names(self, arg):
        return self.names.get(arg, [arg])


SPECS = {}  # name -> (topic, builder(r, G) -> Built)


def spec(topic, name=None):
    def deco(fn):
        SPECS[name or fn.__name__] = (topic, fn)
        return fn

    return deco


def _q(r, G, S=6, A=5, dtype=np.float64):
    return G.g(r.standard_normal((S, A)).astype(dtype))


def _transitions(r, S, A, n=7):
    return dict(
        states=r.integers(0, S, n),
        actions=r.integers(0, A, n),
        rewards=r.standard_normal(n),
        next_states=r.integers(0, S, n),
        terminated=r.random(n) < 0.3,
    )


def _gall(G, d):
    return {k: G.g(v) if isinstance(v, np.ndarray) else v for k, v in d.items()}


def _corrupt_tree(tree, r, how):
    nodes = tree.nodes
    nodes.flags.writeable = True
    i = int(r.integers(0, nodes.shape[0]))
    j = int(r.integers(0, nodes.shape[1]))
    nodes[i, j] = {"col_big": 2**31 - 1, "col_neg": -5, "col_v": tree.table.shape[1]}[how]


def _tree_specials(tree_of):
    """Special mutations that damage an ArgmaxTree through its (flag-only read-only) nodes view;
    ``tree_of(kwargs)`` gives the tree."""
    out = {}
    for how in ("col_big", "col_neg", "col_v"):
        out[f"tree_{how}"] = (
            ["argmax_tree", "tree", "nodes"],
            lambda kw, r, G, how=how: _corrupt_tree(tree_of(kw), r, how),
        )
    return out


# --- selection
@spec("selection")
def greedy(r, G):
    import fastlmrl as f

    return Built(f.greedy, dict(q=_q(r, G), states=G.g(r.integers(0, 6, 9))))


@spec("selection")
def greedy_tree(r, G):
    import fastlmrl as f

    q = _q(r, G)
    tree = f.ArgmaxTree(q, block_size=2)
    return Built(
        f.greedy,
        dict(q=q, states=G.g(r.integers(0, 6, 9)), argmax_tree=tree),
        extras=[tree],
        skip={"argmax_tree"},
        specials=_tree_specials(lambda kw: kw["argmax_tree"]),
    )


@spec("selection")
def epsilon_greedy(r, G):
    import fastlmrl as f

    return Built(
        f.epsilon_greedy,
        dict(q=_q(r, G), states=G.g(r.integers(0, 6, 9)), epsilon=0.3, seed=f.RandomStream(3)),
    )


@spec("selection")
def epsilon_greedy_batch1(r, G):
    """One state: the public call takes the single-state kernel epsilon_greedy_one."""
    import fastlmrl as f

    return Built(
        f.epsilon_greedy,
        dict(q=_q(r, G), states=G.g(r.integers(0, 6, 1)), epsilon=0.3, seed=f.RandomStream(3)),
    )


@spec("selection")
def epsilon_greedy_tree(r, G):
    import fastlmrl as f

    q = _q(r, G)
    tree = f.ArgmaxTree(q, block_size=2)
    return Built(
        f.epsilon_greedy,
        dict(
            q=q,
            states=G.g(r.integers(0, 6, 9)),
            epsilon=0.3,
            seed=f.RandomStream(3),
            argmax_tree=tree,
        ),
        extras=[tree],
        skip={"argmax_tree"},
        specials=_tree_specials(lambda kw: kw["argmax_tree"]),
    )


@spec("selection")
def boltzmann(r, G):
    import fastlmrl as f

    return Built(
        f.boltzmann,
        dict(q=_q(r, G), states=G.g(r.integers(0, 6, 9)), temperature=0.7, seed=f.RandomStream(4)),
    )


# --- td_learning
@spec("td_learning")
def q_learning_update(r, G):
    import fastlmrl as f

    return Built(
        f.q_learning_update,
        dict(q=_q(r, G), **_gall(G, _transitions(r, 6, 5)), alpha=0.5, gamma=0.9),
    )


@spec("td_learning")
def q_learning_update_batch1(r, G):
    """One transition: the public call takes the single-transition kernel q_learning_update_one."""
    import fastlmrl as f

    return Built(
        f.q_learning_update,
        dict(q=_q(r, G), **_gall(G, _transitions(r, 6, 5, n=1)), alpha=0.5, gamma=0.9),
    )


@spec("td_learning")
def q_learning_update_tree(r, G):
    import fastlmrl as f

    q = _q(r, G)
    tree = f.ArgmaxTree(q, block_size=2)
    return Built(
        f.q_learning_update,
        dict(q=q, **_gall(G, _transitions(r, 6, 5)), alpha=0.5, gamma=0.9, argmax_tree=tree),
        extras=[tree],
        skip={"argmax_tree"},
        specials=_tree_specials(lambda kw: kw["argmax_tree"]),
    )


@spec("td_learning")
def sarsa_update(r, G):
    import fastlmrl as f

    t = _transitions(r, 6, 5)
    return Built(
        f.sarsa_update,
        dict(
            q=_q(r, G), **_gall(G, t), next_actions=G.g(r.integers(0, 5, 7)), alpha=0.5, gamma=0.9
        ),
    )


@spec("td_learning")
def expected_sarsa_update(r, G):
    import fastlmrl as f

    return Built(
        f.expected_sarsa_update,
        dict(q=_q(r, G), **_gall(G, _transitions(r, 6, 5)), alpha=0.5, gamma=0.9, epsilon=0.2),
    )


@spec("td_learning")
def double_q_learning_update(r, G):
    import fastlmrl as f

    return Built(
        f.double_q_learning_update,
        dict(
            q1=_q(r, G),
            q2=_q(r, G),
            **_gall(G, _transitions(r, 6, 5)),
            alpha=0.5,
            gamma=0.9,
            seed=f.RandomStream(5),
        ),
    )


@spec("td_learning")
def double_q_learning_update_tree(r, G):
    import fastlmrl as f

    q1, q2 = _q(r, G), _q(r, G)
    trees = (f.ArgmaxTree(q1, block_size=2), f.ArgmaxTree(q2, block_size=2))
    return Built(
        f.double_q_learning_update,
        dict(
            q1=q1,
            q2=q2,
            **_gall(G, _transitions(r, 6, 5)),
            alpha=0.5,
            gamma=0.9,
            seed=f.RandomStream(5),
            argmax_trees=trees,
        ),
        extras=list(trees),
        skip={"argmax_trees"},
        specials=_tree_specials(lambda kw: kw["argmax_trees"][0]),
    )


# --- argmax_tree
@spec("argmax_tree")
def argmax_tree_init(r, G):
    import fastlmrl as f

    return Built(f.ArgmaxTree, dict(q=_q(r, G), block_size=2))


@spec("argmax_tree")
def argmax_tree_refresh(r, G):
    import fastlmrl as f

    q = _q(r, G)
    tree = f.ArgmaxTree(q, block_size=2)
    q[1, 2] = 9.0
    return Built(
        tree.refresh,
        dict(states=G.g(np.array([1, 3])), actions=G.g(np.array([2, 0]))),
        extras=[tree, q],
        specials=_tree_specials(lambda kw: tree),
    )


@spec("argmax_tree")
def argmax_tree_argmax(r, G):
    import fastlmrl as f

    tree = f.ArgmaxTree(_q(r, G, A=4), block_size=2)
    return Built(
        tree.argmax,
        dict(states=G.g(r.integers(0, 6, 5))),
        extras=[tree],
        specials=_tree_specials(lambda kw: tree),
    )


@spec("argmax_tree")
def argmax_tree_max(r, G):
    import fastlmrl as f

    tree = f.ArgmaxTree(_q(r, G, A=3), block_size=2)
    return Built(
        tree.max,
        dict(states=G.g(r.integers(0, 6, 5))),
        extras=[tree],
        specials=_tree_specials(lambda kw: tree),
    )


# --- monte_carlo
@spec("monte_carlo")
def episode_returns(r, G):
    import fastlmrl as f

    return Built(
        f.episode_returns,
        dict(
            rewards=G.g(r.standard_normal(8)),
            episode_offsets=G.g(np.array([0, 3, 8])),
            gamma=0.9,
            final_values=G.g(r.standard_normal(2)),
        ),
    )


@spec("monte_carlo")
def mc_control_update(r, G):
    import fastlmrl as f

    return Built(
        f.mc_control_update,
        dict(
            q=_q(r, G),
            states=G.g(r.integers(0, 6, 8)),
            actions=G.g(r.integers(0, 5, 8)),
            rewards=G.g(r.standard_normal(8)),
            episode_offsets=G.g(np.array([0, 3, 8])),
            gamma=0.9,
            first_visit=True,
            counts=G.g(np.ones((6, 5), dtype=np.int64)),
        ),
    )


@spec("monte_carlo")
def mc_control_update_alpha(r, G):
    import fastlmrl as f

    return Built(
        f.mc_control_update,
        dict(
            q=_q(r, G),
            states=G.g(r.integers(0, 6, 8)),
            actions=G.g(r.integers(0, 5, 8)),
            rewards=G.g(r.standard_normal(8)),
            episode_offsets=G.g(np.array([0, 5, 8])),
            gamma=0.9,
            first_visit=False,
            alpha=0.1,
        ),
    )


# --- dynamic_programming
def _dense(r, G, S=4, A=3):
    P = r.random((S, A, S))
    P /= P.sum(axis=2, keepdims=True)
    return G.g(P), G.g(r.standard_normal((S, A)))


def _token_arrays(r, G, S=5, A=3):
    ns = r.integers(0, S, (S, A))
    return G.g(ns), G.g(r.standard_normal((S, A))), G.g(np.arange(S) == S - 1)


@spec("dynamic_programming")
def dense_mdp_init(r, G):
    import fastlmrl as f

    P, R = _dense(r, G)
    return Built(f.DenseMDP, dict(P=P, R=R))


@spec("dynamic_programming")
def token_mdp_init(r, G):
    import fastlmrl as f

    ns, rw, term = _token_arrays(r, G)
    return Built(f.TokenMDP, dict(next_state=ns, reward=rw, terminal=term))


@spec("dynamic_programming")
def value_iteration(r, G):
    import fastlmrl as f

    mdp = f.DenseMDP(*_dense(r, G))
    return Built(
        f.value_iteration,
        dict(mdp=mdp, gamma=0.9, epsilon=1e-6, max_iter=200, v_init=G.g(np.zeros(4))),
        extras=[mdp],
        skip={"mdp"},
    )


@spec("dynamic_programming")
def value_iteration_token(r, G):
    import fastlmrl as f

    mdp = f.TokenMDP(*_token_arrays(r, G))
    return Built(
        f.value_iteration,
        dict(mdp=mdp, gamma=0.9, epsilon=1e-6, max_iter=200),
        extras=[mdp],
        skip={"mdp"},
    )


@spec("dynamic_programming")
def policy_iteration(r, G):
    import fastlmrl as f

    mdp = f.TokenMDP(*_token_arrays(r, G))
    return Built(
        f.policy_iteration,
        dict(mdp=mdp, gamma=0.9, max_iter=50, v_init=G.g(np.zeros(5))),
        extras=[mdp],
        skip={"mdp"},
    )


@spec("dynamic_programming")
def modified_policy_iteration(r, G):
    import fastlmrl as f

    mdp = f.DenseMDP(*_dense(r, G))
    return Built(
        f.modified_policy_iteration,
        dict(mdp=mdp, gamma=0.9, epsilon=1e-6, k=5, max_iter=100),
        extras=[mdp],
        skip={"mdp"},
    )


@spec("dynamic_programming")
def modified_policy_iteration_token(r, G):
    import fastlmrl as f

    mdp = f.TokenMDP(*_token_arrays(r, G))
    return Built(
        f.modified_policy_iteration,
        dict(mdp=mdp, gamma=0.9, epsilon=1e-6, k=3, max_iter=100),
        extras=[mdp],
        skip={"mdp"},
    )


@spec("dynamic_programming")
def evaluate_policy_undiscounted(r, G):
    import fastlmrl as f

    ns = G.g(np.array([[1, 2], [2, 3], [3, 3], [3, 3]]))
    mdp = f.TokenMDP(ns, G.g(r.standard_normal((4, 2))), G.g(np.arange(4) == 3))
    return Built(
        f.evaluate_policy,
        dict(mdp=mdp, policy=G.g(np.array([0, 1, 0, 1])), gamma=1.0),
        extras=[mdp],
        skip={"mdp"},
    )


@spec("dynamic_programming")
def evaluate_policy(r, G):
    import fastlmrl as f

    mdp = f.TokenMDP(*_token_arrays(r, G))
    return Built(
        f.evaluate_policy,
        dict(mdp=mdp, policy=G.g(r.integers(0, 3, 5)), gamma=0.9),
        extras=[mdp],
        skip={"mdp"},
    )


@spec("dynamic_programming")
def evaluate_policy_dense(r, G):
    import fastlmrl as f

    mdp = f.DenseMDP(*_dense(r, G))
    return Built(
        f.evaluate_policy,
        dict(mdp=mdp, policy=G.g(r.integers(0, 3, 4)), gamma=0.9),
        extras=[mdp],
        skip={"mdp"},
    )


@spec("dynamic_programming")
def action_values(r, G):
    import fastlmrl as f

    mdp = f.DenseMDP(*_dense(r, G))
    return Built(
        f.action_values,
        dict(mdp=mdp, values=G.g(r.standard_normal(4)), gamma=0.9),
        extras=[mdp],
        skip={"mdp"},
    )


@spec("dynamic_programming")
def action_values_token(r, G):
    import fastlmrl as f

    mdp = f.TokenMDP(*_token_arrays(r, G))
    return Built(
        f.action_values,
        dict(mdp=mdp, values=G.g(r.standard_normal(5)), gamma=0.9),
        extras=[mdp],
        skip={"mdp"},
    )


@spec("dynamic_programming")
def bellman_backup(r, G):
    import fastlmrl as f

    mdp = f.TokenMDP(*_token_arrays(r, G))
    return Built(
        f.bellman_backup,
        dict(mdp=mdp, values=G.g(r.standard_normal(5)), gamma=0.9),
        extras=[mdp],
        skip={"mdp"},
    )


# --- log_probs / policy_losses
def _logits(r, G, N=6, V=5, dtype=np.float64):
    return G.g(r.standard_normal((N, V)).astype(dtype))


@spec("log_probs")
def log_softmax(r, G):
    import fastlmrl as f

    return Built(f.log_softmax, dict(logits=_logits(r, G)))


@spec("log_probs")
def logsumexp(r, G):
    import fastlmrl as f

    return Built(f.logsumexp, dict(logits=_logits(r, G, dtype=np.float32)))


@spec("log_probs")
def entropy(r, G):
    import fastlmrl as f

    return Built(f.entropy, dict(logits=_logits(r, G)))


@spec("log_probs")
def token_log_probs(r, G):
    import fastlmrl as f

    return Built(f.token_log_probs, dict(logits=_logits(r, G), tokens=G.g(r.integers(0, 5, 6))))


@spec("log_probs")
def log_prob_grad(r, G):
    import fastlmrl as f

    return Built(
        f.log_prob_grad,
        dict(logits=_logits(r, G, dtype=np.float32), tokens=G.g(r.integers(0, 5, 6))),
    )


@spec("policy_losses")
def ppo_loss(r, G):
    import fastlmrl as f

    return Built(
        f.ppo_loss,
        dict(
            logits=_logits(r, G),
            tokens=G.g(r.integers(0, 5, 6)),
            old_log_probs=G.g(-r.random(6) - 1.0),
            advantages=G.g(r.standard_normal(6)),
            weights=G.g(np.ones(6) / 6),
            clip_low=0.2,
            clip_high=0.28,
            dual_clip=3.0,
            ref_log_probs=G.g(-r.random(6) - 1.0),
            kl_coef=0.1,
            kl_estimator="k3",
        ),
    )


@spec("policy_losses")
def ppo_loss_sequence(r, G):
    import fastlmrl as f

    return Built(
        f.ppo_loss,
        dict(
            logits=_logits(r, G),
            tokens=G.g(r.integers(0, 5, 6)),
            old_log_probs=G.g(-r.random(6) - 1.0),
            advantages=G.g(r.standard_normal(6)),
            ratio_level="sequence",
            sequence_offsets=G.g(np.array([0, 2, 6])),
        ),
    )


@spec("policy_losses")
def reinforce_loss(r, G):
    import fastlmrl as f

    return Built(
        f.reinforce_loss,
        dict(
            logits=_logits(r, G),
            tokens=G.g(r.integers(0, 5, 6)),
            returns=G.g(r.standard_normal(6)),
            baseline=G.g(r.standard_normal(6)),
        ),
    )


@spec("policy_losses")
def a2c_loss(r, G):
    import fastlmrl as f

    return Built(
        f.a2c_loss,
        dict(
            logits=_logits(r, G),
            tokens=G.g(r.integers(0, 5, 6)),
            advantages=G.g(r.standard_normal(6)),
            values=G.g(r.standard_normal(6)),
            returns=G.g(r.standard_normal(6)),
            old_values=G.g(r.standard_normal(6)),
            value_clip=0.2,
        ),
    )


@spec("policy_losses")
def kl_penalty_loss(r, G):
    import fastlmrl as f

    return Built(
        f.kl_penalty_loss,
        dict(
            logits=_logits(r, G),
            tokens=G.g(r.integers(0, 5, 6)),
            ref_log_probs=G.g(-r.random(6) - 1.0),
            estimator="k3",
        ),
    )


# --- tabular losses
def _tab(r, G):
    return dict(
        table=G.g(r.standard_normal((7, 5))),
        contexts=G.g(r.integers(0, 7, 8)),
        tokens=G.g(r.integers(0, 5, 8)),
    )


@spec("tabular_losses")
def ppo_loss_tabular(r, G):
    import fastlmrl as f

    return Built(
        f.ppo_loss_tabular,
        dict(
            **_tab(r, G),
            old_log_probs=G.g(-r.random(8) - 1.0),
            advantages=G.g(r.standard_normal(8)),
            ref_log_probs=G.g(-r.random(8) - 1.0),
            kl_coef=0.1,
            dual_clip=3.0,
        ),
    )


@spec("tabular_losses")
def ppo_loss_tabular_sequence(r, G):
    import fastlmrl as f

    return Built(
        f.ppo_loss_tabular,
        dict(
            **_tab(r, G),
            old_log_probs=G.g(-r.random(8) - 1.0),
            advantages=G.g(r.standard_normal(8)),
            ratio_level="sequence",
            sequence_offsets=G.g(np.array([0, 3, 8])),
        ),
    )


@spec("tabular_losses")
def reinforce_loss_tabular(r, G):
    import fastlmrl as f

    return Built(
        f.reinforce_loss_tabular,
        dict(**_tab(r, G), returns=G.g(r.standard_normal(8)), weights=G.g(np.ones(8))),
    )


@spec("tabular_losses")
def a2c_loss_tabular(r, G):
    import fastlmrl as f

    return Built(
        f.a2c_loss_tabular,
        dict(
            **_tab(r, G),
            advantages=G.g(r.standard_normal(8)),
            values=G.g(r.standard_normal(8)),
            returns=G.g(r.standard_normal(8)),
        ),
    )


@spec("tabular_losses")
def kl_penalty_loss_tabular(r, G):
    import fastlmrl as f

    return Built(
        f.kl_penalty_loss_tabular, dict(**_tab(r, G), ref_log_probs=G.g(-r.random(8) - 1.0))
    )


@spec("tabular_losses")
def token_log_probs_tabular(r, G):
    import fastlmrl as f

    return Built(f.token_log_probs_tabular, _tab(r, G))


# --- advantages
def _seq(r, G, B=3, T=4):
    mask = np.ones((B, T), bool)
    mask[1, 3:] = False
    term = np.array([True, False, False])
    return dict(rewards=G.g(r.standard_normal((B, T))), mask=G.g(mask), terminated=G.g(term))


@spec("advantages")
def discounted_returns(r, G):
    import fastlmrl as f

    return Built(
        f.discounted_returns,
        dict(**_seq(r, G), bootstrap_values=G.g(r.standard_normal(3)), gamma=0.9),
    )


@spec("advantages")
def gae(r, G):
    import fastlmrl as f

    d = _seq(r, G)
    return Built(
        f.gae,
        dict(
            rewards=d["rewards"],
            values=G.g(r.standard_normal((3, 4))),
            mask=d["mask"],
            terminated=d["terminated"],
            truncated=G.g(np.array([False, True, True])),
            bootstrap_values=G.g(r.standard_normal(3)),
            gamma=0.9,
            lam=0.95,
        ),
    )


@spec("advantages")
def lambda_returns(r, G):
    import fastlmrl as f

    d = _seq(r, G)
    return Built(
        f.lambda_returns,
        dict(
            rewards=d["rewards"],
            values=G.g(r.standard_normal((3, 4))),
            mask=d["mask"],
            terminated=d["terminated"],
            bootstrap_values=G.g(r.standard_normal(3)),
            gamma=0.9,
            lam=0.95,
        ),
    )


@spec("advantages")
def masked_whiten(r, G):
    import fastlmrl as f

    return Built(
        f.masked_whiten,
        dict(advantages=G.g(r.standard_normal((3, 4))), mask=_seq(r, G)["mask"], eps=1e-8),
    )


# --- group advantages
@spec("group_advantages")
def grpo_advantages(r, G):
    import fastlmrl as f

    return Built(
        f.grpo_advantages,
        dict(rewards=G.g(r.standard_normal(8)), group_size=4, scale="group", eps=1e-4, ddof=1),
    )


@spec("group_advantages")
def grpo_advantages_ids(r, G):
    import fastlmrl as f

    return Built(
        f.grpo_advantages,
        dict(rewards=G.g(r.standard_normal(8)), group_ids=G.g(np.array([0, 0, 1, 1, 1, 2, 2, 0]))),
    )


@spec("group_advantages")
def rloo_advantages(r, G):
    import fastlmrl as f

    return Built(
        f.rloo_advantages,
        dict(rewards=G.g(r.standard_normal(8)), group_ids=G.g(np.array([0, 0, 1, 1, 1, 2, 2, 0]))),
    )


@spec("group_advantages")
def loss_weights(r, G):
    import fastlmrl as f

    return Built(f.loss_weights, dict(mask=_seq(r, G)["mask"], mode="grpo", num_sequences=4))


@spec("group_advantages")
def loss_weights_dapo(r, G):
    import fastlmrl as f

    return Built(f.loss_weights, dict(mask=_seq(r, G)["mask"], mode="dapo", num_tokens=20))


@spec("group_advantages")
def loss_weights_dr(r, G):
    import fastlmrl as f

    return Built(f.loss_weights, dict(mask=_seq(r, G)["mask"], mode="dr_grpo", max_length=4))


# --- kl divergence
def _lp(r, G, B=3, T=4):
    return G.g(-r.random((B, T)) - 0.5)


#: the TRL spellings of these arguments (also accepted by fastlmrl) may name them in a message
_KL_NAMES = {
    "logp": ["logp", "log_probs"],
    "ref_logp": ["ref_logp", "ref_log_probs"],
    "old_logp": ["old_logp", "old_log_probs"],
    "beta": ["beta", "kl_coef"],
    "estimator": ["estimator", "kl_estimator"],
}


@spec("kl_divergence")
def kl_penalty(r, G):
    import fastlmrl as f

    return Built(
        f.kl_penalty,
        dict(logp=_lp(r, G), ref_logp=_lp(r, G), mask=_seq(r, G)["mask"], estimator="k3"),
        names=_KL_NAMES,
    )


@spec("kl_divergence")
def kl_penalized_rewards(r, G):
    import fastlmrl as f

    return Built(
        f.kl_penalized_rewards,
        dict(
            rewards=G.g(r.standard_normal((3, 4))),
            logp=_lp(r, G),
            ref_logp=_lp(r, G),
            mask=_seq(r, G)["mask"],
            beta=0.1,
            estimator="k1",
        ),
        names=_KL_NAMES,
    )


@spec("kl_divergence")
def sequence_importance_ratio(r, G):
    import fastlmrl as f

    return Built(
        f.sequence_importance_ratio,
        dict(logp=_lp(r, G), old_logp=_lp(r, G), mask=_seq(r, G)["mask"]),
        names=_KL_NAMES,
    )


# --- optimizers
@spec("optimizers")
def adam_step(r, G):
    import fastlmrl as f

    table = G.g(r.standard_normal((6, 4)))
    return Built(
        f.adam_step,
        dict(
            table=table,
            rows=G.g(np.array([4, 1, 4])),
            grads=G.g(r.standard_normal((3, 4))),
            m=G.g(r.standard_normal((6, 4)) * 0.1),
            v=G.g(r.random((6, 4)) * 0.1),
            step=3,
            lr=0.01,
            beta1=0.9,
            beta2=0.999,
            eps=1e-8,
        ),
    )


@spec("optimizers")
def sgd_step(r, G):
    import fastlmrl as f

    return Built(
        f.sgd_step,
        dict(
            table=G.g(r.standard_normal((6, 4))),
            rows=G.g(np.array([2, 0, 2])),
            grads=G.g(r.standard_normal((3, 4))),
            lr=0.1,
        ),
    )


@spec("optimizers")
def adam_class_step(r, G):
    import fastlmrl as f

    opt = f.Adam(G.g(r.standard_normal((6, 4))), lr=0.01)
    opt.step(np.array([1]), np.ones((1, 4)))
    return Built(
        opt.step,
        dict(rows=G.g(np.array([4, 1])), grads=G.g(r.standard_normal((2, 4)))),
        extras=[opt],
    )


@spec("optimizers")
def sgd_class_step(r, G):
    import fastlmrl as f

    opt = f.SGD(G.g(r.standard_normal((6, 4))), lr=0.1)
    return Built(
        opt.step,
        dict(rows=G.g(np.array([4, 1])), grads=G.g(r.standard_normal((2, 4)))),
        extras=[opt],
    )


# --- environments
_PROMPTS = [[2, 3], [4], [3, 2, 4]]


def _env(reward=None, max_new_tokens=4):
    import fastlmrl as f

    return f.TextGenerationEnv(
        _PROMPTS, 6, order=2, max_new_tokens=max_new_tokens, num_envs=3, reward=reward
    )


def _bad_reward(kind):
    import fastlmrl as f

    def fn(tokens, lengths, prompt_ids):
        if kind == "raises":
            raise RuntimeError("reward failed")
        B = np.shape(tokens)[0]
        if kind == "nan":
            return np.full(B, np.nan)
        if kind == "shape":
            return np.zeros(B + 1)
        if kind == "object":
            return np.array([object()] * B, dtype=object)
        return np.zeros(B)

    return f.CallableReward(fn, name="fuzz")


@spec("environments")
def text_env_init(r, G):
    import fastlmrl as f

    return Built(
        f.TextGenerationEnv,
        dict(
            prompts=[[2, 3], [4]],
            vocab_size=6,
            order=2,
            max_new_tokens=4,
            num_envs=2,
            bos_id=0,
            eos_id=1,
        ),
    )


@spec("environments")
def text_env_reset(r, G):
    env = _env()
    return Built(env.reset, dict(seed=7, prompt_ids=G.g(np.array([0, 2, 1]))), extras=[env])


@spec("environments")
def text_env_step(r, G):
    import fastlmrl as f

    env = _env(reward=_bad_reward("ok"), max_new_tokens=1)  # the step ends every episode
    env.reset(seed=f.RandomStream(8))
    specials = {}
    for kind in ("raises", "nan", "shape", "object"):

        def apply(kw, r, G, kind=kind):
            env.reward = _bad_reward(kind)

        specials[f"reward_{kind}"] = (["reward"], apply)
    return Built(env.step, dict(actions=G.g(r.integers(2, 6, 3))), extras=[env], specials=specials)


@spec("environments")
def text_env_rollout(r, G):
    import fastlmrl as f

    env = _env()
    return Built(
        env.rollout,
        dict(
            logits=G.g(r.standard_normal((36, 6))),
            seed=f.RandomStream(9),
            num_sequences=4,
            max_new_tokens=3,
            top_k=3,
            top_p=0.9,
        ),
        extras=[env],
        names={"logits": ["logits"]},
    )


@spec("environments")
def text_env_action_mask(r, G):
    env = _env()
    env.reset(seed=1)
    return Built(
        env.action_mask,
        dict(mask_logits=G.g(r.standard_normal((36, 6))), top_k=2, top_p=0.8),
        extras=[env],
    )


@spec("environments")
def context_mdp_step(r, G):
    import fastlmrl as f

    mdp = f.ContextMDP(
        next_context=G.g(r.integers(0, 4, (4, 3))),
        reward=G.g(r.standard_normal((4, 3))),
        terminal=G.g(np.array([False, False, False, True])),
        num_envs=2,
        max_steps=5,
    )
    mdp.reset(seed=2)
    return Built(mdp.step, dict(actions=G.g(r.integers(0, 3, 2))), extras=[mdp])


@spec("environments")
def context_mdp_init(r, G):
    import fastlmrl as f

    return Built(
        f.ContextMDP,
        dict(
            next_context=G.g(r.integers(0, 4, (4, 3))),
            reward=G.g(r.standard_normal((4, 3))),
            terminal=G.g(np.array([False, False, False, True])),
            num_envs=2,
            max_steps=5,
        ),
    )


def _tabular_mdp(r, num_envs=2, max_steps=5):
    import fastlmrl as f

    P = {
        s: {
            a: [(0.5, (s + a) % 4, float(a), s == 3), (0.5, (s + 1) % 4, -1.0, False)]
            for a in range(2)
        }
        for s in range(4)
    }
    return f.TabularMDP(P, np.array([0.5, 0.5, 0.0, 0.0]), num_envs=num_envs, max_steps=max_steps)


@spec("tabular_mdp")
def tabular_mdp_step(r, G):
    mdp = _tabular_mdp(r)
    mdp.reset(seed=3)
    return Built(mdp.step, dict(actions=G.g(r.integers(0, 2, 2))), extras=[mdp])


@spec("tabular_mdp")
def tabular_mdp_value_iteration(r, G):
    mdp = _tabular_mdp(r)
    return Built(mdp.value_iteration, dict(gamma=0.9, epsilon=1e-6, max_iter=500), extras=[mdp])


@spec("tabular_mdp")
def tabular_mdp_init(r, G):
    import fastlmrl as f

    P = {s: {a: [(1.0, (s + a) % 3, 1.0, s == 2)] for a in range(2)} for s in range(3)}
    return Built(
        f.TabularMDP,
        dict(
            transitions=P,
            initial_distribution=G.g(np.array([0.5, 0.5, 0.0])),
            num_envs=2,
            max_steps=4,
        ),
    )


# --- permutations / rng
@spec("permutations")
def permutation(r, G):
    import fastlmrl as f

    return Built(f.permutation, dict(seed=f.RandomStream(11), n=9))


@spec("rng")
def random_stream(r, G):
    import fastlmrl as f

    return Built(f.RandomStream, dict(seed=5, stream=2, counter=10))


@spec("rng")
def random_stream_take(r, G):
    import fastlmrl as f

    s = f.RandomStream(5, counter=2**64 - 10)
    return Built(s.take, dict(n=4), extras=[s])


# --- ngram
@spec("ngram")
def num_contexts(r, G):
    import fastlmrl as f

    return Built(f.num_contexts, dict(vocab_size=4, k=2))


@spec("ngram")
def context_ids(r, G):
    import fastlmrl as f

    return Built(f.context_ids, dict(tokens=G.g(r.integers(0, 5, 6)), k=2, vocab_size=5, bos_id=0))


@spec("ngram")
def next_context(r, G):
    import fastlmrl as f

    return Built(
        f.next_context,
        dict(ctx=G.g(r.integers(0, 25, 4)), token=G.g(r.integers(0, 5, 4)), vocab_size=5, k=2),
    )


@spec("ngram")
def context_tokens(r, G):
    import fastlmrl as f

    return Built(f.context_tokens, dict(ctx=7, k=2, vocab_size=5))


@spec("ngram")
def context_id(r, G):
    import fastlmrl as f

    return Built(f.context_id, dict(tokens=G.g(np.array([1, 4])), vocab_size=5))


def _lm():
    import fastlmrl as f

    lm = f.NGramLM(order=2)
    lm.fit([[2, 3, 4, 2], [3, 3, 5]], vocab_size=6)
    return lm


@spec("ngram")
def ngram_fit(r, G):
    import fastlmrl as f

    lm = f.NGramLM(order=2)
    return Built(
        lm.fit,
        dict(
            sequences=[G.g(np.array([2, 3, 4])), G.g(np.array([3, 5]))],
            vocab_size=6,
            bos_id=0,
            eos_id=1,
        ),
        extras=[lm],
    )


@spec("ngram")
def ngram_sample(r, G):
    import fastlmrl as f

    lm = _lm()
    return Built(
        lm.sample,
        dict(n_tokens=5, seed=f.RandomStream(12), prompt=(2,), n_sequences=3),
        extras=[lm],
    )


@spec("ngram")
def ngram_logits_table(r, G):
    lm = _lm()
    return Built(lm.logits_table, dict(k=1), extras=[lm])


# --- keyword scores
@spec("keyword_scores")
def keyword_scores(r, G):
    import fastlmrl as f

    return Built(
        f.keyword_scores,
        dict(
            tokens=G.g(r.integers(0, 6, (3, 5))),
            lengths=G.g(np.array([5, 2, 0])),
            grams=[2, [3, 4], 5],
            weights=G.g(np.array([1.0, 2.0, -0.5])),
        ),
    )


# --- sampling
@spec("sampling")
def sample_tokens(r, G):
    """Every filter on at once: temperature, top-k, top-p and min-p."""
    import fastlmrl as f
    from fastlmrl.sampling import sample_tokens

    return Built(
        sample_tokens,
        dict(
            logits=_logits(r, G, V=7),
            seed=f.RandomStream(5),
            temperature=0.8,
            top_k=4,
            top_p=0.9,
            min_p=0.05,
        ),
    )


# --- checkpoint
_TMP = []


def _tmpdir():
    import atexit
    import shutil
    import tempfile

    if not _TMP:
        _TMP.append(tempfile.mkdtemp(prefix="fastlmrl-fuzz-"))
        atexit.register(shutil.rmtree, _TMP[0], True)
    return _TMP[0]


def _damage(path, how, where):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    i = min(int(where * len(data)), len(data) - 1)
    if how == "flip":
        data[i] ^= 0xFF
    else:
        del data[i:]
    with open(path, "wb") as f:
        f.write(bytes(data))


@spec("checkpoint")
def load_checkpoint(r, G):
    import os

    from fastlmrl.checkpoint import load_checkpoint as load
    from fastlmrl.checkpoint import save_checkpoint

    path = os.path.join(_tmpdir(), "fuzz.ckpt")
    save_checkpoint(
        path, {"q": r.standard_normal((3, 4)), "counts": np.arange(6)}, {"step": 3, "algo": "fuzz"}
    )
    names = ["path", "checkpoint", path]
    specials = {}
    for k in range(40):
        specials[f"flip_{k:02d}"] = (names, lambda kw, r, G, k=k: _damage(path, "flip", k / 40))
    for k in range(10):
        specials[f"cut_{k}"] = (names, lambda kw, r, G, k=k: _damage(path, "cut", k / 10))
    return Built(load, dict(path=path), skip={"path"}, specials=specials)


# ----------------------------------------------------------------------------------- enumeration
def case_seed(*parts) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def public_cases(backends):
    """Every (spec, arg, mutation) of the public specs, for each backend (a list of dicts)."""
    from .harness import Guards

    cases = []
    for name, (topic, build) in SPECS.items():
        r = np.random.default_rng(case_seed(name))
        try:
            built = build(r, Guards())
        except Exception:  # noqa: BLE001 - an older tree without this function (--root)
            continue
        targets = []
        for arg, value in built.kwargs.items():
            if arg in built.skip:
                continue
            for m in applicable(value):
                targets.append((arg, m))
        targets += [("<special>", s) for s in built.specials]
        for arg, m in targets:
            for backend in backends:
                cases.append(
                    dict(
                        kind="api",
                        backend=backend,
                        target=name,
                        topic=topic,
                        arg=arg,
                        mutation=m,
                        seed=case_seed(name, arg, m),
                    )
                )
    return cases


# ----------------------------------------------------------------------------------- kernels
class _RecordingKernels:
    """What every bound kernel attribute of the public modules (``_kernels = _backend.bind(...)``)
    holds while :func:`record_kernel_calls` runs: the recorded backend's kernels, each wrapped by
    the recorder (any other attribute is the backend's own)."""

    def __init__(self, module, wrapped):
        self._module = module
        self._wrapped = wrapped

    def __getattr__(self, name):
        fn = self._wrapped.get(name)
        return fn if fn is not None else getattr(self._module, name)


def record_kernel_calls(per_kernel: int = 2, backend: str = "python"):
    """Run every public spec under ``backend`` with its kernels wrapped; return
    {kernel: [(topic, arg names, args), ...]} of calls that returned status 0 (a kernel that was
    called but never succeeded has an empty list).

    The recorder sees both ways a public module reaches a kernel: through the combined backend
    module (``_backend.kernels().<name>``, the dispatcher of ``use_backend``) and through the
    attributes the migrated topics bind (``_backend.bind``; every registered (module, attribute)
    holds a recording view of the backend while the specs run, and gets its value back after)."""
    import sys

    import fastlmrl
    from fastlmrl import _backend

    from .harness import Guards

    module = _backend.backend_module(backend)
    recorded = {}
    originals = {n: getattr(module, n) for n in module.__all__}

    def wrap(name, fn):
        inner = getattr(fn, "py_func", fn)  # a Numba dispatcher: the signature of its function
        try:
            params = list(inspect.signature(inner).parameters)
        except (TypeError, ValueError):  # a Cython def without an embedded signature
            params = []
        topic = fn.__module__.rsplit(".", 1)[-1]

        def recorder(*args):
            saved = copy.deepcopy(args)
            result = fn(*args)
            status = result[0] if isinstance(result, tuple) else result
            calls = recorded.setdefault(name, [])
            if status == 0 and len(calls) < per_kernel:
                calls.append((topic, params, saved))
            return result

        return recorder

    wrapped = {n: wrap(n, fn) for n, fn in originals.items()}
    view = _RecordingKernels(module, wrapped)
    bound = []  # (module, attribute, value before recording)
    for n, fn in wrapped.items():
        setattr(module, n, fn)
    try:
        with fastlmrl.use_backend(backend):
            for module_name, attrs in _backend.bindings():
                public = sys.modules.get(module_name)
                for attr in attrs if public is not None else ():
                    bound.append((public, attr, getattr(public, attr)))
                    setattr(public, attr, view)
            try:
                for name, (_, build) in SPECS.items():
                    r = np.random.default_rng(case_seed(name))
                    try:
                        built = build(r, Guards())
                        built.fn(**built.kwargs)
                    except Exception:  # noqa: BLE001 - a spec that no longer builds: test_fuzz
                        pass
            finally:
                for public, attr, value in reversed(bound):
                    setattr(public, attr, value)
    finally:
        for n, fn in originals.items():
            setattr(module, n, fn)
    return recorded


def kernel_cases(recorded, backends):
    cases = []
    for kernel in sorted(recorded):
        for variant, (topic, params, args) in enumerate(recorded[kernel]):
            for arg, value in zip(params, args):
                for m in applicable(value, kernel=True):
                    for backend in backends:
                        cases.append(
                            dict(
                                kind="kernel",
                                backend=backend,
                                target=kernel,
                                topic=topic,
                                arg=arg,
                                mutation=m,
                                variant=variant,
                                seed=case_seed(kernel, variant, arg, m),
                            )
                        )
    return cases


def kernel_output_names():
    """Kernel arguments that are outputs or scratch (they may hold anything after a rejected
    call); every other array is state or input and must be left as it was."""
    return _OUTPUTS


_OUTPUTS = {
    "out",
    "work",
    "v_tmp",
    "cdf",
    "row_stats",
    "row_built",
    "mask_table",
    "uniforms",
    "starts",
    "slot_keys",
    "slot_first",
    "token_loss",
    "log_probs",
    "entropies",
    "grad",
    "value_grad",
    "stats",
    "ratios",
    "index",
    "rows",
    "num_rows",
    "group_mean",
    "group_std",
    "group_count",
    "group_sum",
    "acc",
    "order",
}


# ----------------------------------------------------------------------------------- self-test
# Planted faults: targets that crash, hang, write out of bounds, half-apply or raise the wrong
# exception, so that a test can check the harness reports each of them (never enumerated).
PLANTED = {}


def _planted(name):
    def deco(fn):
        PLANTED[name] = ("_selftest", fn)
        return fn

    return deco


@_planted("segfault")
def _segfault(r, G):
    def fn(x):
        import ctypes

        if x is None:
            ctypes.string_at(0)
        return 0

    return Built(fn, dict(x=G.g(np.zeros(3))))


@_planted("sleeps")
def _sleeps(r, G):
    def fn(x):
        import time

        if x is None:
            time.sleep(3600)

    return Built(fn, dict(x=G.g(np.zeros(3))))


@_planted("writes_past_end")
def _writes_past_end(r, G):
    def fn(x, y):
        if y >= 0:
            return
        wide = np.lib.stride_tricks.as_strided(x, shape=(x.shape[0] + 1,), strides=x.strides)
        wide[-1] = 1.0

    return Built(fn, dict(x=G.g(np.zeros(3)), y=1.0))


@_planted("half_applies")
def _half_applies(r, G):
    table = G.g(np.zeros(4))

    def fn(rows):
        table[0] = 1.0
        if rows is None:
            raise ValueError("rows must be an array")

    return Built(fn, dict(rows=G.g(np.zeros(2))), extras=[table])


@_planted("wrong_exception")
def _wrong_exception(r, G):
    def fn(rows):
        if rows is None:
            return rows.shape  # AttributeError

    return Built(fn, dict(rows=G.g(np.zeros(2))))


@_planted("unnamed_message")
def _unnamed_message(r, G):
    def fn(rows):
        if rows is None:
            raise ValueError("not enough values to unpack")

    return Built(fn, dict(rows=G.g(np.zeros(2))))


@_planted("clean")
def _clean(r, G):
    def fn(rows):
        if rows is None:
            raise TypeError("rows must be an array, got None")

    return Built(fn, dict(rows=G.g(np.zeros(2))))
