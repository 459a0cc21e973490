"""Arrays a kernel writes must not share memory with another argument (status 8,
OVERLAPPING_ARRAYS): an aliased id array could be overwritten after its range check (found by
``tests/alias_probe.py``: Adam's ``order``/``rows`` viewing the scratch ``acc`` or the table
crashed the Cython kernel).  Each written array aliases each other array argument in turn, through
the raw kernels of every backend (status 8, nothing written) and the public API (ValueError naming
the array)."""

import numpy as np
import pytest

import fastlmrl
from fastlmrl import _backend
from fastlmrl._status import OVERLAPPING_ARRAYS

BACKENDS = ("python", "numba", "cython")


def _alias(args, w, r):
    """args with args[r] a view of the first bytes of args[w] (or the other way round when args[r]
    is the larger), holding args[r]'s values."""
    args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    big, small = (w, r) if args[w].nbytes >= args[r].nbytes else (r, w)
    flat = args[big].reshape(-1).view(np.uint8)
    view = flat[: args[small].nbytes].view(args[small].dtype).reshape(args[small].shape)
    view[...] = args[small]
    args[small] = view
    return args


def _optimizer_calls():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(6, 4))
    rows = np.array([3, 1, 3, 0], dtype=np.int64)
    grads = rng.normal(size=(4, 4))
    order = np.array([3, 1, 0, 2], dtype=np.int64)
    m, v = rng.normal(size=(6, 4)), rng.random((6, 4))
    acc = np.empty(4)
    adam = (
        "adam_step",
        [table, rows, grads, order, m, v, 3, 0.01, 0.9, 0.999, 1e-8, False, acc],
        (0, 4, 5, 12),
    )
    sgd = ("sgd_step", [table, rows, grads, order, 0.1, False, acc], (0, 6))
    return [adam, sgd]


def _cases():
    for name, args, written in _optimizer_calls():
        arrays = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
        for w in written:
            for r in arrays:
                if r != w:
                    yield name, args, w, r


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,args,w,r", list(_cases()))
def test_optimizer_kernels_refuse_written_aliases(backend, name, args, w, r):
    kernel = getattr(_backend.backend_module(backend), name)
    assert kernel(*[a.copy() if isinstance(a, np.ndarray) else a for a in args]) == 0
    aliased = _alias(args, w, r)
    before = [a.copy() if isinstance(a, np.ndarray) else a for a in aliased]
    assert kernel(*aliased) == OVERLAPPING_ARRAYS
    for a, b in zip(aliased, before):
        if isinstance(a, np.ndarray) and a is not aliased[12 if name == "adam_step" else 6]:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_public_optimizers_name_the_shared_array(backend):
    with fastlmrl.use_backend(backend):
        table, m, v = np.zeros((4, 3)), np.zeros((4, 3)), np.ones((4, 3))
        rows = table.reshape(-1).view(np.int64)[:2]
        with pytest.raises(ValueError, match="rows shares memory with table"):
            fastlmrl.adam_step(table, rows, np.ones((2, 3)), m, v, 1, 0.1)
        with pytest.raises(ValueError, match="grads shares memory with v"):
            fastlmrl.adam_step(table, np.array([0, 1]), v[:2], m, v, 1, 0.1)
        with pytest.raises(ValueError, match="grads shares memory with table"):
            fastlmrl.sgd_step(table, np.array([0, 1]), table[2:], 0.1)
        assert not table.any() and not m.any() and (v == 1).all()
        fastlmrl.sgd_step(table, np.array([0, 1]), table[2:].copy(), 0.1)  # a copy is fine


def _episode_returns_cases():
    rewards = np.array([1.0, -2.0, 0.5, 3.0, 1.5])
    offsets = np.array([0, 2, 5], dtype=np.int64)
    final_values = np.array([0.25, -1.0])
    args = [rewards, offsets, 0.9, final_values, np.zeros(5)]
    return [(args, 4, r) for r in (0, 1, 3)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("args,w,r", _episode_returns_cases())
def test_episode_returns_refuses_written_aliases(backend, args, w, r):
    """returns_out over episode_offsets moved an offset the loop still had to read (wrong
    returns, or writes out of bounds in the compiled backends)."""
    kernel = _backend.backend_module(backend).episode_returns
    assert kernel(*[a.copy() if isinstance(a, np.ndarray) else a for a in args]) == 0
    aliased = _alias(args, w, r)
    before = [a.copy() if isinstance(a, np.ndarray) else a for a in aliased]
    assert kernel(*aliased) == OVERLAPPING_ARRAYS
    for a, b in zip(aliased, before):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_prob_grad_refuses_out_over_tokens_and_allows_out_over_logits(backend):
    """tokens viewing out crashed the Cython kernel (a gradient row overwrote a token id after its
    range check); out == logits is the in-place gradient the LM head relies on."""
    kernel = _backend.backend_module(backend).log_prob_grad
    logits = np.random.default_rng(1).normal(size=(3, 5))
    tokens = np.array([4, 0, 2], dtype=np.int64)
    expected = np.empty_like(logits)
    assert kernel(logits, tokens, expected, 1) == 0
    out = np.zeros((3, 5))
    view = out.reshape(-1).view(np.int64)[:3]
    view[...] = tokens
    before = out.copy()
    assert kernel(logits, view, out, 1) == OVERLAPPING_ARRAYS
    np.testing.assert_array_equal(out, before)
    inplace = logits.copy()
    assert kernel(inplace, tokens, inplace, 1) == 0
    np.testing.assert_array_equal(inplace, expected)


# ---------------------------------------------------------------------------------------------
# Every writing kernel of the monte_carlo, dynamic_programming, environments, optimizers and
# argmax_tree topics, on a valid call recorded from the public API (tests/fuzz recorder): each
# written array viewing the first bytes of each other array argument (or the other way round)
# in turn is status 8 with nothing written.  The alias probe found a hang (Cython
# mc_control_update: the hash scratch over states), crashes (dense_mdp_policy_sweeps: v_tmp over
# policy) and silently different results (the other DP and environment kernels).

WRITTEN = {  # the arrays each kernel writes (its documented outputs, state and scratch)
    "episode_returns": ("returns_out",),
    "mc_control_update": ("q", "counts", "slot_keys", "slot_first", "returns_out"),
    "adam_step": ("table", "m", "v", "acc"),
    "sgd_step": ("table", "acc"),
    "token_mdp_bellman_backup": ("v_out", "policy_out"),
    "token_mdp_action_values": ("q_out",),
    "token_mdp_policy_sweeps": ("v", "v_tmp"),
    "token_mdp_policy_value": ("v_out", "work"),
    "token_mdp_find_cycle": ("found_out", "work"),
    "token_mdp_value_iteration": ("v", "v_tmp", "policy_out", "info_out"),
    "dense_mdp_bellman_backup": ("v_out", "policy_out"),
    "dense_mdp_action_values": ("q_out",),
    "dense_mdp_policy_sweeps": ("v", "v_tmp"),
    "dense_mdp_value_iteration": ("v", "v_tmp", "policy_out", "info_out"),
    "draw_ids": ("out",),
    "tabular_mdp_step": ("states", "steps", "rewards_out", "terminated_out", "truncated_out"),
    "context_mdp_step": ("contexts", "steps", "rewards_out", "terminated_out", "truncated_out"),
    "text_env_reset": ("contexts", "lengths"),
    "text_env_step": ("contexts", "lengths", "tokens", "terminated_out", "truncated_out"),
    "topk_topp_mask": ("out",),
    "text_env_rollout": (
        "contexts_out",
        "actions_out",
        "logprobs_out",
        "valid_out",
        "lengths_out",
        "terminated_out",
        "truncated_out",
        "final_contexts_out",
        "cdf",
        "row_stats",
        "row_built",
        "mask_table",
    ),
    "argmax_tree_build": ("nodes",),
    "argmax_tree_refresh": ("nodes",),
    "greedy_tree": ("out",),
    "argmax_tree_max": ("out",),
    "epsilon_greedy_tree": ("out",),
    "q_learning_update_tree": ("q", "nodes", "td_out"),
    "double_q_learning_update_tree": ("q1", "q2", "nodes1", "nodes2", "td_out"),
}


@pytest.fixture(scope="module")
def recorded_calls():
    import warnings

    from fuzz.cases import record_kernel_calls

    with warnings.catch_warnings():  # the specs also call deprecated spellings on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        return record_kernel_calls(per_kernel=1)


def _status_of(result):
    return int(result[0] if isinstance(result, tuple) else result)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(WRITTEN))
def test_writing_kernels_refuse_every_written_alias(backend, name, recorded_calls):
    _, params, args = recorded_calls[name][0]
    kernel = getattr(_backend.backend_module(backend), name)
    plain = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    assert _status_of(kernel(*plain)) == 0
    arrays = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.size]
    written = [params.index(w) for w in WRITTEN[name]]
    n_cases = 0
    for w in written:
        if not args[w].size:
            continue
        for r in arrays:
            if r == w:
                continue
            aliased = _alias(args, w, r)
            before = [a.copy() if isinstance(a, np.ndarray) else a for a in aliased]
            assert _status_of(kernel(*aliased)) == OVERLAPPING_ARRAYS, (params[w], params[r])
            for a, b in zip(aliased, before):
                if isinstance(a, np.ndarray):
                    np.testing.assert_array_equal(a, b, err_msg=f"{params[w]} <- {params[r]}")
            n_cases += 1
    assert n_cases > 0


def test_public_mc_control_names_the_shared_array():
    q = np.zeros((4, 3))
    counts = np.zeros((4, 3), dtype=np.int64)
    states = counts.reshape(-1)[:2]  # a row of counts used as the states of the batch
    with pytest.raises(ValueError, match="states shares memory with counts"):
        fastlmrl.mc_control_update(q, states, [0, 1], [1.0, 2.0], [0, 2], 0.9, counts=counts)
    rewards = q.reshape(-1)[:2]
    with pytest.raises(ValueError, match="rewards shares memory with q"):
        fastlmrl.mc_control_update(q, [0, 1], [0, 1], rewards, [0, 2], 0.9, alpha=0.5)
    with pytest.raises(ValueError, match="counts shares memory with q"):
        fastlmrl.mc_control_update(q, [0], [0], [1.0], [0, 1], 0.9, counts=q.view(np.int64))
    assert not q.any() and not counts.any()


def test_public_text_env_step_names_the_shared_state():
    """The kernel writes contexts, lengths and tokens in place: actions viewing them (the
    contexts of an order-1 model are valid token ids) are refused before anything changes."""
    env = fastlmrl.TextGenerationEnv([[1, 2]], 4, order=1, max_new_tokens=3, num_envs=3)
    env.reset(seed=0)
    state = [env.contexts.copy(), env.lengths.copy(), env.tokens.copy()]
    with pytest.raises(ValueError, match="actions shares memory with env.contexts"):
        env.step(env.contexts)
    with pytest.raises(ValueError, match="actions shares memory with env.tokens"):
        env.step(env.tokens[0])  # a row of the (B, T) tokens, B == T
    for a, b in zip(state, [env.contexts, env.lengths, env.tokens]):
        np.testing.assert_array_equal(a, b)
    env.step(env.contexts.copy())  # a copy is fine
    assert (env.lengths == 1).all()
