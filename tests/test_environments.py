"""Token environments: kernels vs reference (hypothesis), ContextMDP toy, TextGenerationEnv step
and rollout semantics, action masks, seeds, bad input, nothing modified on error."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from shape_checks import assert_rejects_bad_shapes, status_with_short

import fastlmrl
from fastlmrl import ContextMDP, RandomStream, TextGenerationEnv
from fastlmrl._status import BAD_SHAPES, Status
from fastlmrl.rewards import TargetMatch
from fastlmrl.rng import stream_key, uniform

KERNEL_NAMES = [
    "context_mdp_step",
    "draw_ids",
    "tabular_mdp_step",
    "text_env_reset",
    "text_env_rollout",
    "text_env_step",
    "topk_topp_mask",
]


def test_kernel_names():
    import importlib

    for name in fastlmrl.BACKENDS:
        module = importlib.import_module(f"fastlmrl._{name}.environments")
        assert sorted(module.__all__) == KERNEL_NAMES


# ---------------------------------------------------------------------------------------------
# kernels: compiled == reference


def _ctx(history, V, k, bos):
    """Independent context id: last k tokens of [bos]*k + history, oldest most significant."""
    last = ([bos] * k + list(history))[-k:]
    return sum(t * V ** (k - 1 - j) for j, t in enumerate(last))


cell = st.one_of(
    st.integers(-3, 3).map(float), st.floats(-30, 30, width=32), st.sampled_from([-math.inf])
)
bad_cell = st.one_of(cell, st.sampled_from([math.nan, math.inf]))


@st.composite
def prompt_sets(draw, V, index):
    n_prompts = draw(st.integers(1, 3))
    prompts = [draw(st.lists(st.integers(0, V - 1), max_size=4)) for _ in range(n_prompts)]
    tokens = np.array([t for p in prompts for t in p], dtype=index)
    offsets = np.array([0] + list(np.cumsum([len(p) for p in prompts])), dtype=index)
    return prompts, tokens, offsets


@st.composite
def rollout_problems(draw, allow_bad=False):
    V = draw(st.integers(1, 5))
    k = draw(st.integers(1, 3 if V <= 4 else 2))
    S = V**k
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    index = draw(st.sampled_from([np.int32, np.int64]))
    elements = bad_cell if allow_bad else cell
    logits = draw(hnp.arrays(dtype, (S, V), elements=elements))
    if not allow_bad:  # a finite max per row (a -inf row is tested separately)
        logits[:, 0] = np.where(np.isfinite(logits[:, 0]), logits[:, 0], 0)
    separate = draw(st.booleans())
    mask_logits = draw(hnp.arrays(dtype, (S, V), elements=elements)) if separate else logits
    if separate and not allow_bad:
        mask_logits[:, -1] = np.where(np.isfinite(mask_logits[:, -1]), mask_logits[:, -1], 0)
    top_k = draw(st.integers(0, V))
    top_p = draw(st.one_of(st.just(1.0), st.floats(0.05, 1.0)))
    _, tokens, offsets = draw(prompt_sets(V, index))
    n = draw(st.integers(0, 6))
    ids = np.array(
        draw(st.lists(st.integers(0, len(offsets) - 2), min_size=n, max_size=n)), dtype=index
    )
    T = draw(st.integers(1, 6))
    bos = draw(st.integers(0, V - 1))
    eos = draw(st.integers(-1, V - 1))
    seed = draw(st.integers(0, 2**64 - 1))
    counter = draw(st.integers(0, 2**40))
    return (
        logits,
        mask_logits,
        top_k,
        top_p,
        tokens,
        offsets,
        ids,
        k,
        bos,
        eos,
        np.uint64(stream_key(seed)),
        np.uint64(counter),
        T,
    )


def _run_rollout(module, problem):
    logits, mask_logits, top_k, top_p, tokens, offsets, ids, k, bos, eos, key, counter, T = problem
    S, V = logits.shape
    n = ids.shape[0]
    outs = [
        np.full((n, T), -7, np.int64),
        np.full((n, T), -7, np.int64),
        np.full((n, T), -7, logits.dtype),
        np.full((n, T), 7, np.uint8),
        np.full(n, -7, np.int64),
        np.full(n, 7, np.uint8),
        np.full(n, 7, np.uint8),
        np.full(n, -7, np.int64),
    ]
    scratch = [
        np.zeros((S, V)),
        np.zeros((S, 3)),
        np.zeros(S, np.uint8),
        np.full((S, V), 9, np.uint8),
    ]
    status = module.text_env_rollout(
        logits,
        mask_logits,
        top_k,
        top_p,
        tokens,
        offsets,
        ids,
        k,
        bos,
        eos,
        key,
        counter,
        *outs,
        *scratch,
    )
    return status, outs, scratch


@given(rollout_problems())
def test_rollout_matches_reference(compiled, reference, problem):
    s_ref, out_ref, sc_ref = _run_rollout(reference, problem)
    s_got, out_got, sc_got = _run_rollout(compiled, problem)
    assert s_got == s_ref
    if s_ref == 0:
        for got, exp in zip(out_got, out_ref):
            np.testing.assert_array_equal(got, exp)
        if problem[2] > 0 or problem[3] < 1.0:
            np.testing.assert_array_equal(sc_got[3], sc_ref[3])  # the reported mask table
            np.testing.assert_array_equal(sc_got[2], sc_ref[2])  # visited rows


@settings(max_examples=30)
@given(rollout_problems(allow_bad=True))
def test_rollout_bad_rows_same_status(compiled, reference, problem):
    s_ref, out_ref, _ = _run_rollout(reference, problem)
    s_got, out_got, _ = _run_rollout(compiled, problem)
    assert s_got == s_ref
    assert s_ref in (0, Status.BAD_LOGITS, Status.BAD_MASK_LOGITS)
    if s_ref == 0:
        for got, exp in zip(out_got, out_ref):
            np.testing.assert_array_equal(got, exp)


@st.composite
def step_problems(draw):
    V = draw(st.integers(1, 5))
    k = draw(st.integers(1, 3))
    S = V**k
    n = draw(st.integers(0, 8))
    index = draw(st.sampled_from([np.int32, np.int64]))
    T = draw(st.integers(1, 5))
    actions = draw(hnp.arrays(index, n, elements=st.integers(-1, V)))
    active = draw(hnp.arrays(np.uint8, n, elements=st.integers(0, 1)))
    contexts = draw(hnp.arrays(np.int64, n, elements=st.integers(0, S - 1)))
    lengths = draw(hnp.arrays(np.int64, n, elements=st.integers(0, T - 1)))
    if n and draw(st.booleans()):  # occasionally a bad context or a full sequence
        contexts[0] = draw(st.sampled_from([-1, S]))
        lengths[-1] = draw(st.sampled_from([T, -1, 0]))
    eos = draw(st.integers(-1, V - 1))
    return V, k, eos, T, actions, active, contexts, lengths


@given(step_problems())
def test_text_env_step_matches_reference(compiled, reference, problem):
    V, k, eos, T, actions, active, contexts, lengths = problem
    results = []
    for module in (reference, compiled):
        c, l_ = contexts.copy(), lengths.copy()
        tokens = np.full((len(actions), T), -5, np.int64)
        term = np.full(len(actions), 9, np.uint8)
        trunc = np.full(len(actions), 9, np.uint8)
        status = module.text_env_step(V, k, eos, T, actions, active, c, l_, tokens, term, trunc)
        results.append((status, c, l_, tokens, term, trunc))
    assert results[0][0] == results[1][0]
    for got, exp in zip(results[1][1:], results[0][1:]):
        np.testing.assert_array_equal(got, exp)
    status, c, l_, tokens, term, trunc = results[0]
    if status:  # nothing written
        np.testing.assert_array_equal(c, contexts)
        np.testing.assert_array_equal(l_, lengths)
        assert (tokens == -5).all() and (term == 9).all()
    else:  # independent check of the arithmetic
        on = active.astype(bool)
        np.testing.assert_array_equal(c[on], (contexts[on] * V + actions[on]) % V**k)
        np.testing.assert_array_equal(l_[on], lengths[on] + 1)
        np.testing.assert_array_equal(term.astype(bool), on & (actions == eos))
        assert not (term & trunc).any()


@given(st.integers(1, 5), st.integers(1, 3), st.data())
def test_text_env_reset_matches_reference(compiled, reference, V, k, data):
    index = data.draw(st.sampled_from([np.int32, np.int64]))
    prompts, tokens, offsets = data.draw(prompt_sets(V, index))
    n = data.draw(st.integers(0, 6))
    ids = data.draw(hnp.arrays(index, n, elements=st.integers(0, len(prompts))))  # may be bad
    mask = data.draw(hnp.arrays(np.uint8, n, elements=st.integers(0, 1)))
    bos = data.draw(st.integers(0, V - 1))
    results = []
    for module in (reference, compiled):
        c = np.full(n, -3, np.int64)
        l_ = np.full(n, 4, np.int64)
        status = module.text_env_reset(tokens, offsets, V, k, bos, ids, mask, c, l_)
        results.append((status, c, l_))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][2], results[1][2])
    status, c, l_ = results[0]
    if status == 0:
        for b in range(n):
            if mask[b]:
                assert c[b] == _ctx(prompts[ids[b]], V, k, bos) and l_[b] == 0
            else:
                assert c[b] == -3 and l_[b] == 4
    else:
        assert status == 40 and (c == -3).all()


@st.composite
def mdp_problems(draw):
    S = draw(st.integers(1, 5))
    A = draw(st.integers(1, 4))
    index = draw(st.sampled_from([np.int32, np.int64]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    nxt = draw(hnp.arrays(index, (S, A), elements=st.integers(0, S - 1)))
    reward = draw(hnp.arrays(dtype, (S, A), elements=st.floats(-10, 10, width=32)))
    terminal = draw(hnp.arrays(np.uint8, S, elements=st.integers(0, 1)))
    if draw(st.booleans()):  # occasionally a bad entry
        i, j = draw(st.integers(0, S - 1)), draw(st.integers(0, A - 1))
        if draw(st.booleans()):
            nxt[i, j] = S
        else:
            reward[i, j] = np.nan
    n = draw(st.integers(0, 7))
    contexts = draw(hnp.arrays(index, n, elements=st.integers(-1, S - 1)))
    actions = draw(hnp.arrays(index, n, elements=st.integers(0, A)))
    active = draw(hnp.arrays(np.uint8, n, elements=st.integers(0, 1)))
    steps = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 4)))
    max_steps = draw(st.integers(0, 5))
    return nxt, reward, terminal, max_steps, actions, active, contexts, steps


@given(mdp_problems())
def test_context_mdp_step_matches_reference(compiled, reference, problem):
    nxt, reward, terminal, max_steps, actions, active, contexts, steps = problem
    n = contexts.shape[0]
    results = []
    for module in (reference, compiled):
        c, s = contexts.copy(), steps.copy()
        r = np.full(n, -9, reward.dtype)
        term = np.full(n, 9, np.uint8)
        trunc = np.full(n, 9, np.uint8)
        status = module.context_mdp_step(
            nxt, reward, terminal, max_steps, actions, active, c, s, r, term, trunc
        )
        results.append((status, c, s, r, term, trunc))
    assert results[0][0] == results[1][0]
    for got, exp in zip(results[1][1:], results[0][1:]):
        np.testing.assert_array_equal(got, exp)
    if results[0][0]:
        np.testing.assert_array_equal(results[0][1], contexts)
        assert (results[0][4] == 9).all()


@given(
    st.integers(1, 10**6),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**40),
    hnp.arrays(np.uint8, st.integers(0, 20), elements=st.integers(0, 1)),
)
def test_draw_ids_matches_reference(compiled, reference, bound, seed, counter, mask):
    key = np.uint64(stream_key(seed))
    exp = np.full(mask.shape[0], -1, np.int64)
    got = exp.copy()
    assert reference.draw_ids(bound, key, np.uint64(counter), mask, exp) == 0
    assert compiled.draw_ids(bound, key, np.uint64(counter), mask, got) == 0
    np.testing.assert_array_equal(got, exp)
    for i in range(mask.shape[0]):  # independent formula
        want = int(uniform(int(key), counter + i) * bound) if mask[i] else -1
        assert exp[i] == want


@given(st.integers(1, 6), st.integers(1, 5), st.data())
def test_topk_topp_mask_matches_reference(compiled, reference, S, V, data):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    table = data.draw(hnp.arrays(dtype, (S, V), elements=bad_cell))
    index = data.draw(st.sampled_from([np.int32, np.int64]))
    contexts = data.draw(hnp.arrays(index, st.integers(0, 6), elements=st.integers(0, S - 1)))
    top_k = data.draw(st.integers(0, V))
    top_p = data.draw(st.one_of(st.just(1.0), st.floats(0.01, 1.0)))
    results = []
    for module in (reference, compiled):
        out = np.full((contexts.shape[0], V), 7, np.uint8)
        results.append((module.topk_topp_mask(table, contexts, top_k, top_p, out), out))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    if results[0][0] == 0:
        for b, s in enumerate(contexts):
            np.testing.assert_array_equal(results[0][1][b], _numpy_mask(table[s], top_k, top_p))


def _numpy_mask(row, top_k, top_p):
    """Independent top-k / top-p mask (NumPy sort; ties by lowest index)."""
    V = row.shape[0]
    x = row.astype(np.float64)
    if top_k == 0 and top_p >= 1.0:
        return np.ones(V, np.uint8)
    w = np.exp(x - x.max())
    order = np.lexsort((np.arange(V), -x))
    mask = np.zeros(V, np.uint8)
    total = sum(w.tolist())  # index order, like the kernels
    kept, cum = 0, 0.0
    for a in order:
        if w[a] == 0.0 or (top_k and kept >= top_k):
            break
        mask[a] = 1
        kept += 1
        cum += w[a]
        if top_p < 1.0 and cum >= top_p * total:
            break
    return mask


def test_kernels_empty_batch(compiled, reference):
    for module in (compiled, reference):
        e64 = np.zeros(0, np.int64)
        e8 = np.zeros(0, np.uint8)
        assert module.draw_ids(3, np.uint64(1), np.uint64(0), e8, e64.copy()) == 0
        assert (
            module.text_env_step(
                4,
                2,
                1,
                3,
                e64,
                e8,
                e64.copy(),
                e64.copy(),
                np.zeros((0, 3), np.int64),
                e8.copy(),
                e8.copy(),
            )
            == 0
        )
        assert (
            module.text_env_reset(e64, np.array([0, 0]), 4, 2, 0, e64, e8, e64.copy(), e64.copy())
            == 0
        )
        logits = np.zeros((16, 4))
        status = module.text_env_rollout(
            logits,
            logits,
            0,
            1.0,
            e64,
            np.array([0, 0]),
            e64,
            2,
            0,
            1,
            np.uint64(1),
            np.uint64(0),
            np.zeros((0, 3), np.int64),
            np.zeros((0, 3), np.int64),
            np.zeros((0, 3)),
            np.zeros((0, 3), np.uint8),
            e64.copy(),
            e8.copy(),
            e8.copy(),
            e64.copy(),
            np.zeros((16, 4)),
            np.zeros((16, 3)),
            np.zeros(16, np.uint8),
            np.zeros((0, 4), np.uint8),
        )
        assert status == 0
        assert module.topk_topp_mask(logits, e64, 2, 1.0, np.zeros((0, 4), np.uint8)) == 0
        assert (
            module.context_mdp_step(
                np.zeros((2, 2), np.int64),
                np.zeros((2, 2)),
                np.zeros(2, np.uint8),
                0,
                e64,
                e8,
                e64.copy(),
                e64.copy(),
                np.zeros(0),
                e8.copy(),
                e8.copy(),
            )
            == 0
        )


def test_kernel_config_errors(compiled, reference):
    """Direct kernel users get a status, never an out-of-bounds write."""
    for module in (compiled, reference):
        a = np.array([1, 2], np.int64)
        on = np.ones(2, np.uint8)
        c = np.array([0, 1], np.int64)
        l_ = np.array([0, 0], np.int64)
        f = np.zeros(2, np.uint8)
        # buffer narrower than max_new_tokens
        assert (
            module.text_env_step(4, 2, 1, 3, a, on, c, l_, np.zeros((2, 2), np.int64), f, f.copy())
            == 44
        )
        # V**(k+1) beyond 2**62
        assert (
            module.text_env_step(
                2**31, 2, 1, 3, a, on, c, l_, np.zeros((2, 3), np.int64), f, f.copy()
            )
            == 44
        )
        assert module.draw_ids(0, np.uint64(1), np.uint64(0), on, c.copy()) == 44
        # logits rows != V**k: vocabulary mismatch
        logits = np.zeros((15, 4))
        status = module.text_env_rollout(
            logits,
            logits,
            0,
            1.0,
            a,
            np.array([0, 2]),
            np.array([0, 0]),
            2,
            0,
            1,
            np.uint64(1),
            np.uint64(0),
            np.zeros((2, 3), np.int64),
            np.zeros((2, 3), np.int64),
            np.zeros((2, 3)),
            np.zeros((2, 3), np.uint8),
            c.copy(),
            f.copy(),
            f.copy(),
            c.copy(),
            np.zeros((15, 4)),
            np.zeros((15, 3)),
            np.zeros(15, np.uint8),
            np.zeros((0, 4), np.uint8),
        )
        assert status == 44
        # bad offsets / prompt token out of vocabulary
        assert (
            module.text_env_reset(
                a, np.array([0, 3]), 4, 2, 0, np.array([0, 0]), on, c.copy(), l_.copy()
            )
            == 6
        )
        assert (
            module.text_env_reset(
                np.array([1, 9]),
                np.array([0, 2]),
                4,
                2,
                0,
                np.array([0, 0]),
                on,
                c.copy(),
                l_.copy(),
            )
            == 41
        )


# ---------------------------------------------------------------------------------------------
# ContextMDP


def test_toy_layout_and_q_star():
    mdp = ContextMDP()
    assert (mdp.num_contexts, mdp.num_actions, mdp.num_states, mdp.end_state) == (2, 2, 3, 2)
    nxt, rew, term = mdp.to_arrays()
    np.testing.assert_array_equal(nxt, [[1, 1], [2, 2], [2, 2]])
    np.testing.assert_array_equal(rew, [[1, 2], [1, 2], [0, 0]])
    np.testing.assert_array_equal(term, [False, False, True])
    # independent backward induction (the chain is acyclic): Q(s,a) = r + gamma * max Q(s', .)
    gamma = 0.9
    q = np.zeros((3, 2))
    for _ in range(3):
        v = np.where(term, 0.0, q.max(axis=1))
        q = np.where(term[:, None], 0.0, rew + gamma * v[nxt])
    np.testing.assert_allclose(q[1], [1.0, 2.0])
    np.testing.assert_allclose(q[0], [2.8, 3.8])


def test_toy_to_token_mdp_value_iteration():
    from fastlmrl import dynamic_programming as dp

    mdp = ContextMDP().to_token_mdp()
    result = dp.value_iteration(mdp, 0.9)
    np.testing.assert_allclose(np.asarray(result.q)[:2], [[2.8, 3.8], [1.0, 2.0]])


def test_toy_dynamics_by_hand(backend):
    mdp = ContextMDP(num_envs=2)
    obs, info = mdp.reset(seed=0)
    np.testing.assert_array_equal(obs, [0, 0])
    obs, r, term, trunc, _ = mdp.step([0, 1])  # x1 -> x2, rewards 1 and 2
    np.testing.assert_array_equal(obs, [1, 1])
    np.testing.assert_array_equal(r, [1.0, 2.0])
    assert not term.any() and not trunc.any()
    obs, r, term, trunc, _ = mdp.step(np.array([1, 0], np.int32))  # x2 -> END
    np.testing.assert_array_equal(obs, [2, 2])
    np.testing.assert_array_equal(r, [2.0, 1.0])
    assert term.all() and not trunc.any()
    obs, r, term, trunc, _ = mdp.step([1, 1])  # next-step autoreset: action ignored
    np.testing.assert_array_equal(obs, [0, 0])
    np.testing.assert_array_equal(r, [0.0, 0.0])
    assert not term.any() and not trunc.any()


def test_context_mdp_general_max_steps_and_starts(backend):
    # a 3-cycle with a terminal context 3 reached by action 1 from context 2
    nxt = [[1, 1], [2, 2], [0, 3], [3, 3]]
    rew = np.array([[0.5, 0], [0, 0], [0, 5], [0, 0]], np.float32)
    mdp = ContextMDP(
        nxt, rew, terminal=[False, False, False, True], start=[0, 1, 2], num_envs=4, max_steps=3
    )
    assert mdp.end_state is None and mdp.num_states == 4
    obs, _ = mdp.reset(seed=RandomStream(5))
    key = stream_key(5)
    np.testing.assert_array_equal(obs, [[0, 1, 2][int(uniform(key, b) * 3)] for b in range(4)])
    mdp.reset(seed=1)
    mdp.contexts[:] = [0, 0, 2, 2]
    obs, r, term, trunc, _ = mdp.step([0, 0, 1, 0])
    np.testing.assert_array_equal(obs, [1, 1, 3, 0])
    assert r.dtype == np.float32
    np.testing.assert_array_equal(r, [0.5, 0.5, 5, 0])
    np.testing.assert_array_equal(term, [False, False, True, False])
    mdp.step([0, 0, 0, 0])
    obs, r, term, trunc, _ = mdp.step([0, 0, 0, 0])  # third step: truncated (not terminal)
    np.testing.assert_array_equal(trunc, [True, True, False, True])
    assert not (term & trunc).any()


def test_context_mdp_bad_input():
    with pytest.raises(ValueError, match=r"next_context\[0, 1\] = 5"):
        ContextMDP([[0, 5]], [[0.0, 0.0]])
    with pytest.raises(ValueError, match="reward must have shape"):
        ContextMDP([[0, 0]], [[0.0]])
    with pytest.raises(ValueError, match=r"reward\[0, 1\] = nan"):
        ContextMDP([[0, 0]], [[0.0, np.nan]])
    with pytest.raises(TypeError, match="next_context must hold integer"):
        ContextMDP([[0.5, 0]], [[0.0, 0.0]])
    with pytest.raises(ValueError, match="start holds a terminal"):
        ContextMDP([[0, 1], [1, 1]], [[0, 0], [0, 0]], terminal=[False, True], start=1)
    with pytest.raises(ValueError, match="start holds a context id out of range"):
        ContextMDP(start=7)
    with pytest.raises(ValueError, match="num_envs"):
        ContextMDP(num_envs=0)
    mdp = ContextMDP(num_envs=2)
    with pytest.raises(RuntimeError, match="reset"):
        mdp.step([0, 0])
    mdp.reset(seed=0)
    before = (mdp.contexts.copy(), mdp.steps.copy())
    with pytest.raises(ValueError, match=r"actions\[1\] = 2 is out of range \[0, 2\)"):
        mdp.step([0, 2])
    with pytest.raises(ValueError, match="actions must have length 2"):
        mdp.step([0])
    with pytest.raises(TypeError, match="actions must hold integer"):
        mdp.step([0.0, 1.0])
    np.testing.assert_array_equal(mdp.contexts, before[0])
    np.testing.assert_array_equal(mdp.steps, before[1])


# ---------------------------------------------------------------------------------------------
# TextGenerationEnv: step API


PROMPTS = [[2, 3], [4], []]


def test_text_env_step_by_hand(backend):
    # V = 6, k = 2, bos = 0, eos = 1, T = 3
    env = TextGenerationEnv(PROMPTS, vocab_size=6, order=2, max_new_tokens=3, num_envs=3)
    obs, info = env.reset(seed=0, prompt_ids=[0, 1, 2])
    np.testing.assert_array_equal(obs, [2 * 6 + 3, 0 * 6 + 4, 0])  # (2,3) (bos,4) (bos,bos)
    np.testing.assert_array_equal(info["prompt_ids"], [0, 1, 2])
    obs, r, term, trunc, _ = env.step([5, 1, 2])
    np.testing.assert_array_equal(obs, [3 * 6 + 5, 4 * 6 + 1, 0 * 6 + 2])
    np.testing.assert_array_equal(term, [False, True, False])  # EOS -> terminated
    assert not trunc.any() and r.dtype == np.float64 and not r.any()
    obs, r, term, trunc, info = env.step([5, 3, 1])  # row 1 autoresets
    assert obs[0] == 5 * 6 + 5 and term[2] and not term[1] and not trunc[1]
    assert obs[1] == [15, 4, 0][info["prompt_ids"][1]]
    obs, r, term, trunc, _ = env.step([2, 4, 0])
    np.testing.assert_array_equal(trunc, [True, False, False])  # 3 tokens -> truncated
    np.testing.assert_array_equal(env.tokens[0], [5, 5, 2])
    np.testing.assert_array_equal(env.sequences()[0], [2, 3, 5, 5, 2])
    assert env.context_of([2, 3, 5, 5, 2]) == obs[0] == 5 * 6 + 2
    assert env.context_of([]) == 0


def test_eos_at_max_length_is_terminated_only(backend):
    env = TextGenerationEnv([[2]], vocab_size=4, order=1, max_new_tokens=2, num_envs=2)
    env.reset(seed=0)
    env.step([3, 3])
    _, _, term, trunc, _ = env.step([1, 2])
    np.testing.assert_array_equal(term, [True, False])
    np.testing.assert_array_equal(trunc, [False, True])


def test_context_convention_matches_ngram_module():
    from fastlmrl import ngram

    env = TextGenerationEnv([[3, 5, 2, 7]], vocab_size=9, order=3, max_new_tokens=4, bos_id=0)
    obs, _ = env.reset(seed=0)
    seq = [3, 5, 2, 7]
    assert obs[0] == ngram.context_ids(seq, 3, 9, bos_id=0)[-1]
    for a in (4, 8, 6):
        obs, *_ = env.step([a])
        seq.append(a)
        assert obs[0] == ngram.context_ids(seq, 3, 9, bos_id=0)[-1] == _ctx(seq, 9, 3, 0)


def test_step_rewards_terminal_and_per_token(backend):
    target = TargetMatch([2, 3], mode="fraction")
    env = TextGenerationEnv(
        [[]], vocab_size=5, order=1, max_new_tokens=3, num_envs=2, reward=target
    )
    env.reset(seed=0)
    _, r, *_ = env.step([2, 2])
    np.testing.assert_array_equal(r, [0, 0])  # terminal reward: paid at the end only
    _, r, term, *_ = env.step([3, 1])
    np.testing.assert_array_equal(term, [False, True])
    np.testing.assert_array_equal(r, [0, 0.5])  # [2, 1] vs [2, 3]: 1 of 2
    per_token = TargetMatch([2, 3], mode="fraction", per_token=True)
    env = TextGenerationEnv([[]], vocab_size=5, order=1, max_new_tokens=3, reward=per_token)
    env.reset(seed=0)
    assert env.step([2])[1][0] == 0.5
    assert env.step([4])[1][0] == 0.0


def test_text_env_step_errors_leave_state_unchanged():
    def bad_reward(tokens, lengths, prompt_ids):
        return np.full(len(lengths), np.nan)

    env = TextGenerationEnv(PROMPTS, vocab_size=6, max_new_tokens=2, num_envs=2, reward=bad_reward)
    stream = RandomStream(3)
    env.reset(seed=stream)
    counter = stream.counter
    env.step([2, 3])
    state = (env.contexts.copy(), env.lengths.copy(), env.prompt_ids.copy())
    with pytest.raises(ValueError, match=r"actions\[0\] = 6 is out of range \[0, 6\)"):
        env.step([6, 1])
    with pytest.raises(ValueError, match="actions must have length 2"):
        env.step([1, 1, 1])
    with pytest.raises(ValueError, match="non-finite reward nan"):
        env.step([1, 1])  # both end: the terminal reward is NaN
    for got, exp in zip((env.contexts, env.lengths, env.prompt_ids), state):
        np.testing.assert_array_equal(got, exp)
    assert stream.counter == counter


def test_text_env_constructor_errors():
    with pytest.raises(ValueError, match=r"prompts\[1\] holds token id 7"):
        TextGenerationEnv([[1], [7]], vocab_size=6)
    with pytest.raises(ValueError, match="bos_id = 6"):
        TextGenerationEnv(PROMPTS, vocab_size=6, bos_id=6)
    with pytest.raises(ValueError, match="eos_id = 9"):
        TextGenerationEnv(PROMPTS, vocab_size=6, eos_id=9)
    with pytest.raises(TypeError, match="prompts must be a non-empty list"):
        TextGenerationEnv([], vocab_size=6)
    with pytest.raises(TypeError, match=r"prompts\[0\] must be a 1-D"):
        TextGenerationEnv([[[1]]], vocab_size=6)
    with pytest.raises(ValueError, match="does not fit context ids"):
        TextGenerationEnv(PROMPTS, vocab_size=2**21, order=2)
    with pytest.raises(ValueError, match="vocabulary mismatch: the reward"):
        TextGenerationEnv(PROMPTS, vocab_size=6, reward=TargetMatch([1, 8]))
    env = TextGenerationEnv(PROMPTS, vocab_size=6, num_envs=2)
    with pytest.raises(ValueError, match=r"prompt_ids\[1\] = 3 is out of range \[0, 3\)"):
        env.reset(seed=0, prompt_ids=[0, 3])
    with pytest.raises(RuntimeError, match="reset"):
        env.step([0, 0])


def test_action_mask_method(backend):
    env = TextGenerationEnv([[2]], vocab_size=4, order=1, num_envs=2)
    env.reset(seed=0, prompt_ids=[0, 0])
    table = np.array([[0, 1, 2, 3], [0, 0, 0, 0], [5, 1, 4, 1], [0, 0, 0, 0]], np.float64)
    np.testing.assert_array_equal(env.action_mask(table, top_k=2), [[True, False, True, False]] * 2)
    np.testing.assert_array_equal(env.action_mask(table), np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="top_k must be <= vocab_size"):
        env.action_mask(table, top_k=5)
    with pytest.raises(ValueError, match="top_p must be in"):
        env.action_mask(table, top_p=0.0)
    table[2, 1] = np.nan
    with pytest.raises(ValueError, match="mask_logits: a visited row"):
        env.action_mask(table, top_k=1)


# ---------------------------------------------------------------------------------------------
# TextGenerationEnv: rollouts


def _env(num_envs=8, T=6, reward=None, V=7, k=2, eos=1):
    prompts = [[2, 3, 4], [5], [], [6, 6]]
    return TextGenerationEnv(
        prompts,
        vocab_size=V,
        order=k,
        max_new_tokens=T,
        num_envs=num_envs,
        eos_id=eos,
        reward=reward,
    )


def _logits(V=7, k=2, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal((V**k, V)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rollout_same_seed_same_result_in_every_backend(dtype):
    env = _env(reward=TargetMatch([3, 4]))
    logits = _logits(dtype=dtype)
    batches = []
    for name in fastlmrl.BACKENDS:
        with fastlmrl.use_backend(name):
            batches.append(env.rollout(logits, seed=11, top_p=0.9))
    for other in batches[1:]:
        for field in (
            "contexts",
            "actions",
            "logprobs",
            "rewards",
            "valid",
            "lengths",
            "terminated",
            "truncated",
            "prompt_ids",
            "final_contexts",
            "action_mask_table",
        ):
            np.testing.assert_array_equal(getattr(other, field), getattr(batches[0], field))
    b = batches[0]
    assert b.log_probs.dtype == dtype
    assert not (b.terminated & b.truncated).any() and (b.terminated | b.truncated).all()
    np.testing.assert_array_equal(b.terminated, (b.actions == 1).any(axis=1))
    np.testing.assert_array_equal(b.valid.sum(axis=1), b.lengths)


def test_rollout_structure_by_independent_formulas(backend):
    env = _env(num_envs=16, T=5)
    logits = _logits()
    b = env.rollout(logits, seed=2)
    V, k = 7, 2
    for i in range(16):
        L = b.lengths[i]
        prompt = env.prompt(int(b.prompt_ids[i])).tolist()
        hist = prompt[:]
        for t in range(L):
            assert b.contexts[i, t] == _ctx(hist, V, k, 0)
            hist.append(int(b.actions[i, t]))
        assert b.final_contexts[i] == _ctx(hist, V, k, 0)
        assert (b.actions[i, : L - 1] != 1).all()  # EOS only at the end
        assert b.terminated[i] == (b.actions[i, L - 1] == 1)
        assert b.truncated[i] == (not b.terminated[i] and L == 5)
        assert not b.valid[i, L:].any() and (b.actions[i, L:] == 0).all()
    # log-probs: an independent NumPy log-softmax
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    want = logits[b.contexts, b.actions] - lse[b.contexts]
    np.testing.assert_allclose(b.log_probs[b.valid], want[b.valid], rtol=0, atol=1e-12)
    nxt = b.next_contexts()
    np.testing.assert_array_equal(nxt[b.valid], (b.contexts * V + b.actions)[b.valid] % V**k)


def test_rollout_samples_like_boltzmann(backend):
    """One token per sequence with explicit prompts: token b uses counter c + b, like boltzmann."""
    env = _env(T=1)
    logits = _logits(dtype=np.float32)
    prompt_ids = np.arange(40) % 4
    batch = env.rollout(logits, seed=RandomStream(9, counter=3), prompt_ids=prompt_ids)
    states = batch.contexts[:, 0]
    want = fastlmrl.boltzmann(logits, states, 1.0, RandomStream(9, counter=3))
    np.testing.assert_array_equal(batch.actions[:, 0], want)


def test_rollout_counters_and_stream_advance(backend):
    env = _env(num_envs=3, T=4)
    logits = _logits()
    stream = RandomStream(4, counter=10)
    first = env.rollout(logits, seed=stream)
    assert stream.counter == 10 + 3 + 3 * 4  # B prompt draws + B*T tokens
    key = stream_key(4)
    np.testing.assert_array_equal(
        first.prompt_ids, [int(uniform(key, 10 + b) * 4) for b in range(3)]
    )
    again = env.rollout(logits, seed=RandomStream(4, counter=10))
    np.testing.assert_array_equal(first.actions, again.actions)
    stream2 = RandomStream(4)
    env.rollout(logits, seed=stream2, prompt_ids=[0, 1])
    assert stream2.counter == 2 * 4  # no prompt draws


def test_rollout_sampling_distribution(backend):
    """Empirical token frequencies from one context match the softmax (loose 5-sigma bound)."""
    V = 5
    env = TextGenerationEnv([[]], vocab_size=V, order=1, max_new_tokens=1, eos_id=None)
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.15, 0.25]] * V))
    n = 20000
    b = env.rollout(logits, seed=1, prompt_ids=np.zeros(n, np.int64))
    freq = np.bincount(b.actions[:, 0], minlength=V) / n
    p = np.array([0.1, 0.2, 0.3, 0.15, 0.25])
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n))


def test_rollout_top_k_only_k_tokens(backend):
    env = _env(num_envs=64, T=8, eos=None)
    logits = _logits(seed=3)
    b = env.rollout(logits, seed=0, top_k=2)
    top2 = np.argsort(-logits, axis=1, kind="stable")[:, :2]
    for s, a in zip(b.contexts[b.valid], b.actions[b.valid]):
        assert a in top2[s]
    masks = b.action_masks()
    assert (masks.sum(axis=2)[b.valid] == 2).all()
    # renormalised log-probs over the two kept tokens
    x = logits[b.contexts, :]
    kept = np.where(masks, x, -np.inf)
    lse = np.log(np.exp(kept - kept.max(2, keepdims=True)).sum(2)) + kept.max(2)
    want = np.take_along_axis(x, b.actions[:, :, None], 2)[:, :, 0] - lse
    np.testing.assert_allclose(b.log_probs[b.valid], want[b.valid], atol=1e-12)
    visited = np.zeros(49, bool)
    visited[b.contexts[b.valid]] = True
    assert not b.action_mask_table[~visited].any()


def test_rollout_top_p_and_separate_masking_policy(backend):
    V = 4
    env = TextGenerationEnv([[]], vocab_size=V, order=1, max_new_tokens=1, eos_id=None)
    # masking policy probabilities 0.5, 0.3, 0.15, 0.05: top_p = 0.7 keeps tokens 0 and 1
    mask = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * V))
    behaviour = np.zeros((V, V))  # uniform behaviour policy
    b = env.rollout(
        behaviour, seed=0, prompt_ids=np.zeros(400, np.int64), mask_logits=mask, top_p=0.7
    )
    assert set(b.actions[:, 0].tolist()) == {0, 1}
    np.testing.assert_allclose(b.log_probs, np.log(0.5))
    np.testing.assert_array_equal(b.action_mask_table[0], [True, True, False, False])
    # top_p = 0.9: 0.5 + 0.3 < 0.9 <= 0.5 + 0.3 + 0.15, the 0.05 token is dropped
    m = env.action_mask(mask, top_p=0.9)
    np.testing.assert_array_equal(m[0], [True, True, True, False])


def test_rollout_rewards_terminal_per_token_and_kl(backend):
    env = _env(num_envs=6, T=4, reward=TargetMatch([3, 4], mode="prefix"))
    logits = _logits()
    b = env.rollout(logits, seed=5)
    # terminal score at the last token, recomputed independently
    for i in range(6):
        L = b.lengths[i]
        y = b.actions[i, :L].tolist()
        lcp = 0
        while lcp < min(L, 2) and y[lcp] == [3, 4][lcp]:
            lcp += 1
        assert b.rewards[i, L - 1] == lcp / 2 and not b.rewards[i, : L - 1].any()
    np.testing.assert_array_equal(b.scores, b.rewards.sum(1))
    ref = _logits(seed=8)
    shaped = env.rollout(logits, seed=5, ref_logits=ref, kl_coef=0.1)
    lse = np.log(np.exp(ref - ref.max(1, keepdims=True)).sum(1)) + ref.max(1)
    ref_lp = ref[b.contexts, b.actions] - lse[b.contexts]
    want = b.rewards - 0.1 * (b.log_probs - ref_lp)
    np.testing.assert_allclose(shaped.rewards[b.valid], want[b.valid], atol=1e-12)
    assert not shaped.rewards[~b.valid].any()
    np.testing.assert_array_equal(shaped.scores, b.scores)  # the task score is unshaped
    # TRL's beta is the same argument; kl_beta (the former spelling) still works, with a warning
    trl = env.rollout(logits, seed=5, ref_logits=ref, beta=0.1)
    np.testing.assert_array_equal(trl.rewards, shaped.rewards)
    with pytest.warns(DeprecationWarning, match="kl_coef"):
        old = env.rollout(logits, seed=5, ref_logits=ref, kl_beta=0.1)
    np.testing.assert_array_equal(old.rewards, shaped.rewards)
    with pytest.raises(TypeError, match="got both 'kl_coef' and 'kl_beta'"):
        env.rollout(logits, seed=5, ref_logits=ref, kl_coef=0.1, kl_beta=0.1)
    with pytest.warns(DeprecationWarning, match="log_probs"):
        np.testing.assert_array_equal(shaped.logprobs, shaped.log_probs)
    with pytest.warns(DeprecationWarning, match="ref_log_probs"):
        assert shaped.ref_logprobs is shaped.ref_log_probs
    none = env.rollout(logits, seed=5, reward=None)
    assert not none.rewards.any()


def test_rollout_bad_input(backend):
    env = _env(num_envs=3, T=4)
    good = _logits()
    stream = RandomStream(0)
    with pytest.raises(ValueError, match="vocabulary mismatch: logits has 8 columns"):
        env.rollout(np.zeros((49, 8)), seed=stream)
    with pytest.raises(ValueError, match="logits has 48 rows but the environment has"):
        env.rollout(np.zeros((48, 7)), seed=stream)
    with pytest.raises(TypeError, match="logits must have dtype float32 or float64"):
        env.rollout(np.zeros((49, 7), np.int64), seed=stream)
    with pytest.raises(ValueError, match="logits must be C-contiguous"):
        env.rollout(np.zeros((7, 49)).T, seed=stream)
    with pytest.raises(ValueError, match="vocabulary mismatch: mask_logits"):
        env.rollout(good, seed=stream, mask_logits=np.zeros((49, 6)), top_k=1)
    with pytest.raises(ValueError, match="top_k must be <= vocab_size"):
        env.rollout(good, seed=stream, top_k=8)
    with pytest.raises(ValueError, match="top_p must be in"):
        env.rollout(good, seed=stream, top_p=1.5)
    with pytest.raises(ValueError, match=r"prompt_ids\[0\] = 4 is out of range"):
        env.rollout(good, seed=stream, prompt_ids=[4])
    with pytest.raises(ValueError, match="vocabulary mismatch: the reward"):
        env.rollout(good, seed=stream, reward=TargetMatch([9]))
    bad = good.copy()
    bad[env.context_of([]), :] = np.nan
    with pytest.raises(ValueError, match="logits: a visited row holds NaN"):
        env.rollout(bad, seed=stream, prompt_ids=[2])
    bad[env.context_of([]), :] = -np.inf
    with pytest.raises(ValueError, match="logits: a visited row"):
        env.rollout(bad, seed=stream, prompt_ids=[2])

    def wrong_shape(tokens, lengths, prompt_ids):
        return np.zeros((len(lengths), 2))

    with pytest.raises(ValueError, match=r"returned shape \(3, 2\), expected \(3,\)"):
        env.rollout(good, seed=stream, reward=wrong_shape)
    assert stream.counter == 0  # nothing consumed on error
    np.testing.assert_array_equal(good, _logits())  # inputs untouched


def test_rollout_edge_cases(backend):
    env = _env(num_envs=3, T=4)
    b = env.rollout(_logits(), seed=0, num_sequences=0)
    assert b.actions.shape == (0, 4) and b.scores.shape == (0,) and b.num_tokens == 0
    with pytest.raises(ValueError, match="seed: RandomStream exhausted: the call needs 15"):
        env.rollout(_logits(), seed=RandomStream(0, counter=2**64 - 5))
    with pytest.raises(ValueError, match="prompt_ids or num_sequences"):
        env.rollout(_logits(), seed=0, prompt_ids=[0], num_sequences=1)
    with pytest.raises(ValueError, match="seed must be in"):
        env.rollout(_logits(), seed=-1)
    with pytest.raises(ValueError, match="seed must be in"):
        env.reset(seed=-1)
    with pytest.raises(TypeError, match="seed must be an int"):
        env.reset(seed=1.5)
    longer = env.rollout(_logits(), seed=0, max_new_tokens=9, prompt_ids=[1, 2])
    assert longer.actions.shape == (2, 9)
    with pytest.raises(ValueError, match="action_mask_table|no action mask"):
        longer.action_masks()


def test_reset_is_reproducible_and_stream_continues(backend):
    env = _env(num_envs=6)
    first, _ = env.reset(seed=42)
    np.testing.assert_array_equal(env.reset(seed=42)[0], first)
    stream = RandomStream(42)
    np.testing.assert_array_equal(env.reset(seed=stream)[0], first)
    assert stream.counter == 6  # one draw per sequence
    env.reset()  # seed=None continues the same stream
    assert stream.counter == 12


# ---------------------------------------------------------------------------------------------
# array shapes (direct callers)


# tabular_mdp_step's shape checks are in tests/test_tabular_mdp.py
@pytest.mark.parametrize("kernel", [k for k in KERNEL_NAMES if k != "tabular_mdp_step"])
def test_inconsistent_array_shapes_are_rejected_first(compiled, reference, kernel):
    """Each array one entry short along each axis: the kernels' own size checks cover most arrays
    (44 inconsistent sizes, 6 prompt offsets); context_mdp_step's tables get BAD_SHAPES, checked
    first.  Nothing is written either way."""
    S = V = 3  # order 1
    n, T = 2, 3
    i64 = np.int64
    logits = np.linspace(-1.0, 1.0, S * V).reshape(S, V)
    prompts = dict(prompt_tokens=np.array([1, 2, 0], i64), prompt_offsets=np.array([0, 2, 3], i64))
    on, ids = np.ones(n, np.uint8), np.array([1, 0], i64)
    flags = dict(terminated_out=np.full(n, 7, np.uint8), truncated_out=np.full(n, 7, np.uint8))
    seed = dict(key=np.uint64(5), counter=np.uint64(0))
    args = {
        "draw_ids": dict(bound=3, **seed, mask=on, out=np.full(n, -7, i64)),
        "context_mdp_step": dict(
            next_state=np.array([[1, 2, 0], [2, 0, 1], [0, 0, 0]], i64),
            reward=logits,
            terminal=np.array([0, 0, 1], np.uint8),
            max_steps=5,
            actions=np.array([0, 2], i64),
            active=on,
            contexts=np.array([0, 1], i64),
            steps=np.array([0, 1], i64),
            rewards_out=np.full(n, -7.0),
            **flags,
        ),
        "text_env_reset": dict(
            **prompts,
            n_vocab=V,
            order=1,
            bos_id=0,
            prompt_ids=ids,
            mask=on,
            contexts=np.full(n, -7, i64),
            lengths=np.full(n, -7, i64),
        ),
        "text_env_step": dict(
            n_vocab=V,
            order=1,
            eos_id=2,
            max_new_tokens=T,
            actions=np.array([0, 2], i64),
            active=on,
            contexts=np.array([0, 1], i64),
            lengths=np.array([0, 1], i64),
            tokens=np.full((n, T), -7, i64),
            **flags,
        ),
        "topk_topp_mask": dict(
            mask_logits=logits,
            contexts=np.array([0, 2], i64),
            top_k=2,
            top_p=1.0,
            out=np.full((n, V), 7, np.uint8),
        ),
        "text_env_rollout": dict(
            logits=logits,
            mask_logits=logits,
            top_k=2,
            top_p=1.0,
            **prompts,
            prompt_ids=ids,
            order=1,
            bos_id=0,
            eos_id=2,
            **seed,
            contexts_out=np.full((n, T), -7, i64),
            actions_out=np.full((n, T), -7, i64),
            logprobs_out=np.full((n, T), -7.0),
            valid_out=np.full((n, T), 7, np.uint8),
            lengths_out=np.full(n, -7, i64),
            **flags,
            final_contexts_out=np.full(n, -7, i64),
            cdf=np.zeros((S, V)),
            row_stats=np.zeros((S, 3)),
            row_built=np.zeros(S, np.uint8),
            mask_table=np.full((S, V), 9, np.uint8),
        ),
    }[kernel]
    # topk_topp_mask's table may have any number of rows (a short one only moves the id range)
    free = {("mask_logits", 0)} if kernel == "topk_topp_mask" else set()
    sized = {
        (k, axis)
        for k, v in args.items()
        if isinstance(v, np.ndarray)
        for axis in range(v.ndim)
        if k not in ("next_state", "reward")
    } - free
    for module in (reference, compiled):
        assert_rejects_bad_shapes(module, kernel, args, skip=sized | free)
        for name, axis in sized:
            code = 6 if name.startswith("prompt_") and name != "prompt_ids" else 44
            assert status_with_short(module, kernel, args, name, axis) == code, (name, axis)


def test_bad_shapes_status_is_an_internal_error():
    # never reached through the public API (the wrappers pass consistent shapes); still mapped
    with pytest.raises(ValueError, match="internal error: array arguments of inconsistent shapes"):
        fastlmrl.environments._raise(BAD_SHAPES, {"actions": (np.zeros(1, np.int64), 1)})
