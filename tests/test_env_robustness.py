"""Malformed input and faults in the token environments, the n-gram helpers, the tokenizers, the
corpus and the Gymnasium adapters (issue 11): huge sizes are refused at once, a failing reward
function or an exhausted RandomStream leaves everything exactly as it was, replaced or damaged
state is refused with the attribute's name, raw kernels check their structural arrays before the
first write, and every refusal is a ValueError/TypeError naming the argument."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastlmrl
from fastlmrl import CharTokenizer, ContextMDP, NGramLM, RandomStream, TextGenerationEnv
from fastlmrl._status import Status
from fastlmrl.corpus import generate_corpus
from fastlmrl.rewards import RewardFunction, TargetMatch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_isolated(code: str, timeout: float = 300.0) -> str:
    """Run ``code`` in a fresh interpreter; a hang (the bug these checks guard against) or a
    crash fails the test instead of blocking the suite."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not finish within {timeout} s (a size was not refused at once)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


# ---------------------------------------------------------------------------------------------
# 1. huge sizes: refused before any big computation or allocation


def test_huge_orders_and_sizes_are_refused_at_once():
    out = _run_isolated("""
        import numpy as np
        from fastlmrl import ContextMDP, NGramLM, TextGenerationEnv
        from fastlmrl.corpus import generate_corpus
        from fastlmrl.ngram import context_ids, context_tokens, next_context, num_contexts

        env = TextGenerationEnv([[2]], 6, order=1, max_new_tokens=3, num_envs=2)
        logits = np.zeros((6, 6))
        lm = NGramLM(2).fit([np.array([2, 3, 4])], 6)
        cases = [
            (lambda: TextGenerationEnv([[2]], 6, order=2**31), "order = 2147483648"),
            (lambda: TextGenerationEnv([[2]], 1, order=2**31), "order = 2147483648"),
            (lambda: num_contexts(4, 2**31), "k = 2147483648"),
            (lambda: context_ids([0], 2**31, 4), "k = 2147483648"),
            (lambda: context_ids([0], 2**31, 1, bos_id=0), "k = 2147483648"),
            (lambda: next_context(0, 0, 4, 2**31), "k = 2147483648"),
            (lambda: context_tokens(0, 2**31, 4), "k = 2147483648"),
            (lambda: NGramLM(order=2**31), "order = 2147483648"),
            (lambda: TextGenerationEnv([[2]], 6, num_envs=2**40), "1099511627776"),
            (lambda: TextGenerationEnv([[2]], 6, max_new_tokens=2**40), "1099511627776"),
            (lambda: TextGenerationEnv([[2]], 6, num_envs=2**20, max_new_tokens=2**20),
             "1048576 * 1048576"),
            (lambda: ContextMDP(num_envs=2**40), "num_envs = 1099511627776"),
            (lambda: env.rollout(logits, 0, max_new_tokens=2**40), "1099511627776"),
            (lambda: env.rollout(logits, 0, num_sequences=2**40), "1099511627776"),
            (lambda: lm.sample(2**40, seed=0), "1099511627776"),
            (lambda: lm.sample(2**20, seed=0, n_sequences=2**20), "1048576 * 1048576"),
            (lambda: generate_corpus(2**40), "n_sentences = 1099511627776"),
            # integers >= 2**63: ValueError, never OverflowError
            (lambda: TextGenerationEnv([[2]], 2**63), "9223372036854775808"),
            (lambda: TextGenerationEnv([[2]], 6, bos_id=2**64), "18446744073709551616"),
            (lambda: ContextMDP(max_steps=2**63), "max_steps"),
            (lambda: num_contexts(2**64, 1), "vocab_size"),
            (lambda: env.rollout(logits, 0, top_k=2**63), "top_k"),
        ]
        for i, (call, text) in enumerate(cases):
            try:
                call()
            except ValueError as exc:
                assert text in str(exc), (i, str(exc))
            else:
                raise AssertionError(f"case {i} was accepted")
        print("PASS", len(cases))
    """)
    assert "PASS 22" in out


def test_raw_kernels_refuse_a_huge_order_at_once():
    """V = 1 keeps V**k = 1 whatever k: a kernel that looped k times hung; now status 44 (bad
    configuration) at once, nothing written, in every backend."""
    out = _run_isolated("""
        import numpy as np
        from fastlmrl import _backend
        i64, u8 = np.int64, np.uint8
        for name in ("python", "numba", "cython"):
            kern = _backend.backend_module(name)
            for order in (2**31, 2**40, 63):
                contexts, lengths = np.full(1, -7, i64), np.full(1, -7, i64)
                tokens = np.full((1, 2), -7, i64)
                term, trunc = np.full(1, 7, u8), np.full(1, 7, u8)
                assert kern.text_env_step(1, order, -1, 2, np.zeros(1, i64), np.ones(1, u8),
                                          np.zeros(1, i64), lengths, tokens, term,
                                          trunc) == 44, name
                assert kern.text_env_reset(np.zeros(0, i64), np.zeros(2, i64), 1, order, 0,
                                           np.zeros(1, i64), np.ones(1, u8), contexts,
                                           lengths) == 44, name
                outs = [np.full((1, 2), -7, i64), np.full((1, 2), -7, i64),
                        np.full((1, 2), -7.0), np.full((1, 2), 7, u8), np.full(1, -7, i64),
                        np.full(1, 7, u8), np.full(1, 7, u8), np.full(1, -7, i64)]
                status = kern.text_env_rollout(
                    np.zeros((1, 1)), np.zeros((1, 1)), 0, 1.0, np.zeros(0, i64),
                    np.zeros(2, i64), np.zeros(1, i64), order, 0, -1, np.uint64(1),
                    np.uint64(0), *outs, np.zeros((1, 1)), np.zeros((1, 3)), np.zeros(1, u8),
                    np.zeros((1, 1), u8))
                assert status == 44, (name, status)
                assert (contexts == -7).all() and (lengths == -7).all() and (tokens == -7).all()
                assert (term == 7).all() and all((o == -7).all() or (o == 7).all() for o in outs)
        print("PASS")
    """)
    assert "PASS" in out


def test_rollout_batch_next_contexts_refuses_a_huge_order():
    batch = _text_env().rollout(np.zeros((25, 5)), seed=0)
    np.testing.assert_array_equal(
        batch.next_contexts()[batch.valid], (batch.contexts * 5 + batch.actions)[batch.valid] % 25
    )
    batch.order = 2**31
    with pytest.raises(ValueError, match="order = 2147483648 is out of range"):
        batch.next_contexts()


# ---------------------------------------------------------------------------------------------
# 2. a failing reward function leaves the environment exactly as it was


class _RawReward(RewardFunction):
    """A reward whose __call__ returns ``value`` unchecked (a subclass that bypasses the base
    class's output checks), or raises it when it is an exception."""

    def __init__(self, value, per_token):
        self.value = value
        self.per_token = per_token

    def __call__(self, tokens, lengths, prompt_ids=None):
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value(tokens.shape[0], tokens.shape[1]) if callable(self.value) else self.value


def _text_env(num_envs=3, T=3, reward=None):
    return TextGenerationEnv(
        [[2, 3], [4], []],
        vocab_size=5,
        order=2,
        max_new_tokens=T,
        num_envs=num_envs,
        eos_id=1,
        reward=reward,
    )


def _snapshot(env):
    return (
        env.contexts.copy(),
        env.lengths.copy(),
        env.tokens.copy(),
        env.prompt_ids.copy(),
        env._needs_reset.copy(),
        None if env._stream is None else env._stream.state(),
    )


def _assert_same(a, b):
    for x, y in zip(a, b):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y


BAD_OUTPUTS = [
    # the function's own exception: a ValueError (TypeError) naming it, chained to the original
    (
        RuntimeError("boom"),
        ValueError,
        r"reward: the reward function _RawReward\(\) raised "
        "RuntimeError: boom",
    ),
    (KeyError("k"), ValueError, "raised KeyError"),
    (TypeError("no"), TypeError, "reward: the reward function _RawReward.. raised TypeError: no"),
    (ZeroDivisionError("z"), ValueError, "raised ZeroDivisionError: z"),
    # NaN / inf in the expected shape of one kind of reward, a wrong shape for the other
    (lambda n, T: np.full(n, np.nan), ValueError, "non-finite reward nan|returned shape"),
    (lambda n, T: np.full((n, T), np.inf), ValueError, "non-finite reward inf|returned shape"),
    (lambda n, T: np.zeros(n + 1), ValueError, "returned shape"),
    (lambda n, T: np.zeros((n, T + 1)), ValueError, "returned shape"),
    (lambda n, T: np.array(["a"] * n, dtype=object), TypeError, "real numpy array"),
    (lambda n, T: None, TypeError, "real numpy array, got NoneType"),
    (lambda n, T: [0.0] * n, TypeError, "real numpy array, got list"),
]


@pytest.mark.parametrize("per_token", [False, True])
@pytest.mark.parametrize("bad, exc, msg", BAD_OUTPUTS)
def test_step_with_a_failing_reward_changes_nothing(backend, per_token, bad, exc, msg):
    env = _text_env()
    env.reset(seed=RandomStream(4))
    env.step([1, 3, 2])  # sequence 0 ends with EOS: the next step resets it (draws)
    env.reward = _RawReward(bad, per_token)
    before = _snapshot(env)
    with pytest.raises(exc, match=msg):
        env.step([3, 1, 4])  # sequence 1 ends: a terminal reward is computed too
    _assert_same(_snapshot(env), before)
    # the environment goes on exactly like one that never saw the failure
    twin = _text_env()
    twin.reset(seed=RandomStream(4))
    twin.step([1, 3, 2])
    env.reward = twin.reward = TargetMatch([3], per_token=per_token)
    for acts in ([3, 1, 4], [2, 2, 2], [0, 1, 3]):
        got, want = env.step(acts), twin.step(acts)
        for g, w in zip(got[:4], want[:4]):
            np.testing.assert_array_equal(g, w)
    _assert_same(_snapshot(env), _snapshot(twin))


@pytest.mark.parametrize("bad, exc, msg", BAD_OUTPUTS)
def test_rollout_with_a_failing_reward_changes_nothing(backend, bad, exc, msg):
    env = _text_env()
    env.reset(seed=1)
    before = _snapshot(env)
    stream = RandomStream(9, counter=11)
    logits = np.zeros((25, 5))
    for per_token in (False, True):
        with pytest.raises(exc, match=msg):
            env.rollout(logits, seed=stream, reward=_RawReward(bad, per_token))
        assert stream.counter == 11
        _assert_same(_snapshot(env), before)
    np.testing.assert_array_equal(logits, 0.0)


def test_the_reward_functions_own_exception_is_chained(backend):
    def failing(tokens, lengths, prompt_ids):
        raise LookupError("missing table")

    env = _text_env(reward=failing)
    env.reset(seed=2)
    before = _snapshot(env)
    with pytest.raises(ValueError, match="raised LookupError: missing table") as info:
        env.step([1, 1, 1])
    assert isinstance(info.value.__cause__, LookupError)
    _assert_same(_snapshot(env), before)


def test_a_callable_reward_is_checked_too(backend):
    env = _text_env(reward=lambda tokens, lengths, prompt_ids: np.full(tokens.shape[0], np.nan))
    env.reset(seed=2)
    before = _snapshot(env)
    with pytest.raises(ValueError, match="non-finite reward nan"):
        env.step([1, 1, 1])
    _assert_same(_snapshot(env), before)


# ---------------------------------------------------------------------------------------------
# 3. an exhausted RandomStream: ValueError naming the seed, raised before any write


def test_exhausted_stream_in_reset_step_and_rollout(backend):
    env = _text_env()
    env.reset(seed=RandomStream(0, counter=2**64 - 3))  # takes the last 3 counters
    assert env._stream.counter == 2**64
    env.step([1, 3, 2])  # sequence 0 ends
    before = _snapshot(env)
    with pytest.raises(ValueError, match="seed: RandomStream exhausted: the call needs 3"):
        env.step([3, 3, 3])  # its reset needs 3 draws
    _assert_same(_snapshot(env), before)
    with pytest.raises(ValueError, match="seed: RandomStream exhausted"):
        env.reset()  # seed=None continues the stream
    _assert_same(_snapshot(env), before)
    spent = RandomStream(5, counter=2**64 - 2)
    with pytest.raises(ValueError, match="seed: RandomStream exhausted"):
        env.reset(seed=spent)
    _assert_same(_snapshot(env), before)
    assert spent.counter == 2**64 - 2
    with pytest.raises(ValueError, match="seed: RandomStream exhausted: the call needs 12"):
        env.rollout(np.zeros((25, 5)), seed=spent)
    assert spent.counter == 2**64 - 2
    # given prompts draw nothing: an exhausted stream still resets
    env.reset(prompt_ids=[0, 1, 2])
    np.testing.assert_array_equal(env.prompt_ids, [0, 1, 2])


def test_exhausted_stream_in_context_mdp(backend):
    nxt = [[1, 2], [2, 2], [-1, -1]]
    mdp = ContextMDP(nxt, np.ones((3, 2)), start=[0, 1], num_envs=2)
    mdp.reset(seed=RandomStream(0, counter=2**64 - 2))
    mdp.step([1, 1])
    mdp.step([0, 0])  # both episodes end
    before = (mdp.contexts.copy(), mdp.steps.copy(), mdp._needs_reset.copy())
    with pytest.raises(ValueError, match="seed: RandomStream exhausted: the call needs 2"):
        mdp.step([0, 0])
    after = (mdp.contexts, mdp.steps, mdp._needs_reset)
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)
    assert mdp._stream.counter == 2**64


def test_exhausted_stream_in_ngram_sample(backend):
    lm = NGramLM(2).fit([np.array([2, 3, 4])], 5)
    s = RandomStream(0, counter=2**64 - 5)
    with pytest.raises(ValueError, match="seed: RandomStream exhausted: the call needs 6"):
        lm.sample(3, seed=s, n_sequences=2)
    assert s.counter == 2**64 - 5
    assert lm.sample(5, seed=s).shape[0] >= 1 and s.counter == 2**64


# ---------------------------------------------------------------------------------------------
# 4. replaced or damaged attributes


def test_context_mdp_attributes(backend):
    mdp = ContextMDP(num_envs=2)
    mdp.reset(seed=0)
    for name in ("num_envs", "num_contexts", "num_actions", "end_state", "max_steps"):
        with pytest.raises(AttributeError):
            setattr(mdp, name, 3)
    with pytest.raises(TypeError, match="contexts must hold integers"):
        mdp.contexts = np.zeros(2)
    with pytest.raises(ValueError, match=r"contexts must have shape \(2,\)"):
        mdp.contexts = [0]
    with pytest.raises(ValueError, match=r"contexts \(flat index 1\) = 9 is out of range"):
        mdp.contexts = [0, 9]
    with pytest.raises(ValueError, match="steps"):
        mdp.steps = [-1, 0]
    mdp.contexts = [1, 0]
    np.testing.assert_array_equal(mdp.contexts, [1, 0])
    mdp.contexts[0] = 7  # damaged in place
    before = mdp.steps.copy()
    with pytest.raises(ValueError, match="contexts: a context id is out of range"):
        mdp.step([0, 0])
    np.testing.assert_array_equal(mdp.steps, before)
    np.testing.assert_array_equal(mdp.contexts, [7, 0])
    mdp._contexts = np.zeros(2, np.float64)  # replaced behind the property
    with pytest.raises(ValueError, match="contexts array was replaced"):
        mdp.step([0, 0])


def test_text_env_attributes(backend):
    env = _text_env()
    env.reset(seed=0)
    for name in (
        "vocab_size",
        "order",
        "num_contexts",
        "max_new_tokens",
        "num_envs",
        "bos_id",
        "eos_id",
        "num_prompts",
        "prompt_tokens",
        "prompt_offsets",
    ):
        with pytest.raises(AttributeError):
            setattr(env, name, 3)
    with pytest.raises(ValueError, match="read-only"):
        env.prompt_tokens[0] = 4
    with pytest.raises(ValueError, match="read-only"):
        env.prompt_offsets[1] = 9
    with pytest.raises(TypeError, match="reward must be a RewardFunction or a callable"):
        env.reward = object()
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        env.reward = TargetMatch([9])
    for name, value, exc, msg in [
        ("contexts", [0, 0, 25], ValueError, "contexts"),
        ("lengths", [0, 0, 4], ValueError, "lengths"),
        ("tokens", np.zeros((3, 4), np.int64), ValueError, r"tokens must have shape \(3, 3\)"),
        ("tokens", np.full((3, 3), 5), ValueError, "tokens"),
        ("prompt_ids", [0, 3, 0], ValueError, "prompt_ids"),
        ("prompt_ids", np.zeros(3), TypeError, "prompt_ids must hold integers"),
    ]:
        before = _snapshot(env)
        with pytest.raises(exc, match=msg):
            setattr(env, name, value)
        _assert_same(_snapshot(env), before)
    for name, index, value, msg in [
        ("lengths", 1, 3, "lengths"),
        ("lengths", 0, -1, "lengths"),
        ("contexts", 2, 99, "contexts"),
        ("prompt_ids", 0, 7, r"prompt_ids\[0\] = 7"),
    ]:
        damaged = _text_env(reward=TargetMatch([3]))  # the reward reads the prompt ids
        damaged.reset(seed=0)
        getattr(damaged, name)[index] = value
        before = _snapshot(damaged)
        with pytest.raises(ValueError, match=msg):
            damaged.step([3, 3, 3])
        _assert_same(_snapshot(damaged), before)
    env._tokens = env.tokens.astype(np.int32)
    with pytest.raises(ValueError, match="tokens array was replaced"):
        env.step([3, 3, 3])


# ---------------------------------------------------------------------------------------------
# raw kernels: structural arrays checked before the first write (guard bands around the outputs)


def _guarded(values, dtype, fill):
    """A 1-D view of ``values`` inside a buffer with 4 guard entries on each side."""
    buf = np.full(len(values) + 8, fill, dtype=dtype)
    buf[4:-4] = values
    return buf, buf[4:-4]


@pytest.mark.parametrize("index", [np.int32, np.int64])
def test_raw_reset_checks_the_prompt_structure(compiled, reference, index):
    i64, u8 = np.int64, np.uint8
    tokens = np.array([2, 3, 4], index)
    cases = [
        (np.array([0, 3, 2, 3], index), [0, 1], 6),  # offsets decrease
        (np.array([1, 2, 3], index), [0, 1], 6),  # do not start at 0
        (np.array([0, 2, 4], index), [0, 1], 6),  # end past the tokens
        (np.array([0, 2, 2], index), [0, 1], 6),  # end before the last token
        (np.array([0], index), [0, 0], 6),  # no prompt
        (np.array([0, 2, 3], index), [0, 2], 40),  # a prompt id out of range
        (np.array([0, 2, 3], index), [-1, 0], 40),
    ]
    for module in (reference, compiled):
        for offsets, ids, code in cases:
            cbuf, contexts = _guarded([-7, -7], i64, -9)
            lbuf, lengths = _guarded([-7, -7], i64, -9)
            status = module.text_env_reset(
                tokens, offsets, 5, 2, 0, np.array(ids, index), np.ones(2, u8), contexts, lengths
            )
            assert status == code, (module.__name__, offsets, ids)
            assert (cbuf[4:-4] == -7).all() and (lbuf[4:-4] == -7).all()
            assert (cbuf[:4] == -9).all() and (cbuf[-4:] == -9).all()
        # a prompt token out of the vocabulary
        status = module.text_env_reset(
            np.array([2, 7, 4], index),
            np.array([0, 2, 3], index),
            5,
            2,
            0,
            np.array([0, 1], index),
            np.ones(2, u8),
            np.full(2, -7, i64),
            np.full(2, -7, i64),
        )
        assert status == 41


def test_raw_context_mdp_step_checks_the_tables(compiled, reference, float_dtype):
    i64, u8 = np.int64, np.uint8
    reward = np.ones((3, 2), float_dtype)
    cases = [
        (np.array([[1, 2], [2, 3], [0, 0]], i64), [1, 1], [1, 0], 3),  # next_state = 3 >= S
        (np.array([[1, 2], [2, -1], [0, 0]], i64), [1, 1], [1, 0], 3),  # negative next state
        (np.array([[1, 2], [2, 0], [0, 0]], i64), [2, 0], [0, 0], 1),  # a terminal context
        (np.array([[1, 2], [2, 0], [0, 0]], i64), [3, 0], [0, 0], 1),  # a context >= S
    ]
    terminal = np.array([0, 0, 1], u8)
    for module in (reference, compiled):
        for nxt, contexts, actions, code in cases:
            ctx = np.array(contexts, i64)
            sbuf, steps = _guarded([0, 0], i64, -9)
            rbuf, rewards = _guarded([-7.0, -7.0], float_dtype, -9.0)
            status = module.context_mdp_step(
                nxt,
                reward,
                terminal,
                0,
                np.array(actions, i64),
                np.ones(2, u8),
                ctx,
                steps,
                rewards,
                np.full(2, 7, u8),
                np.full(2, 7, u8),
            )
            assert status == code, module.__name__
            np.testing.assert_array_equal(ctx, contexts)
            assert (sbuf[4:-4] == 0).all() and (sbuf[:4] == -9).all() and (sbuf[-4:] == -9).all()
            assert (rbuf[4:-4] == -7).all() and (rbuf[:4] == -9).all() and (rbuf[-4:] == -9).all()


def test_raw_context_mdp_step_checks_the_step_counts(compiled, reference):
    """A step count at the int64 limit would overflow (status 46 before any write)."""
    i64, u8 = np.int64, np.uint8
    nxt = np.array([[1, 0], [0, 1]], i64)
    for module in (reference, compiled):
        for bad in (2**63 - 1, -1):
            ctx, steps = np.array([0, 1], i64), np.array([0, bad], i64)
            rewards = np.full(2, -7.0)
            status = module.context_mdp_step(
                nxt,
                np.ones((2, 2)),
                np.zeros(2, u8),
                0,
                np.array([1, 1], i64),
                np.ones(2, u8),
                ctx,
                steps,
                rewards,
                np.full(2, 7, u8),
                np.full(2, 7, u8),
            )
            assert status == 46
            np.testing.assert_array_equal(ctx, [0, 1])
            np.testing.assert_array_equal(steps, [0, bad])
            assert (rewards == -7).all()
    mdp = ContextMDP([[1, 0], [0, 1]], np.ones((2, 2)), num_envs=2)
    mdp.reset(seed=0)
    mdp.steps[1] = 2**63 - 1  # damaged in place
    with pytest.raises(ValueError, match="steps: a step count is negative or at the int64"):
        mdp.step([0, 0])
    np.testing.assert_array_equal(mdp.contexts, [0, 0])


def test_reference_kernels_refuse_read_only_outputs_before_writing(reference):
    """The compiled backends refuse a read-only output when the call is dispatched; the
    reference, which writes item by item, refuses it before its first write."""
    i64, u8 = np.int64, np.uint8
    ctx = np.array([0, 1], i64)
    flags = [np.zeros(2, u8), np.zeros(2, u8)]
    flags[1].flags.writeable = False
    with pytest.raises(ValueError, match="truncated_out is read-only"):
        reference.context_mdp_step(
            np.array([[1, 0], [0, 1]], i64),
            np.ones((2, 2)),
            np.zeros(2, u8),
            0,
            np.array([1, 1], i64),
            np.ones(2, u8),
            ctx,
            np.zeros(2, i64),
            np.zeros(2),
            *flags,
        )
    np.testing.assert_array_equal(ctx, [0, 1])
    tokens = np.zeros((2, 3), i64)
    tokens.flags.writeable = False
    lengths = np.zeros(2, i64)
    with pytest.raises(ValueError, match="tokens is read-only"):
        reference.text_env_step(
            5,
            2,
            1,
            3,
            np.array([2, 2], i64),
            np.ones(2, u8),
            ctx,
            lengths,
            tokens,
            np.zeros(2, u8),
            np.zeros(2, u8),
        )
    np.testing.assert_array_equal(ctx, [0, 1])
    np.testing.assert_array_equal(lengths, 0)


def test_raw_step_and_rollout_check_their_state(compiled, reference):
    i64, u8 = np.int64, np.uint8
    for module in (reference, compiled):
        for contexts, lengths, code in [
            ([0, 25], [0, 0], 1),
            ([0, -1], [0, 0], 1),
            ([0, 0], [0, 3], Status.BAD_LENGTHS),
            ([0, 0], [-1, 0], Status.BAD_LENGTHS),
        ]:
            tbuf = np.full(2 * 3 + 8, -9, i64)
            tokens = tbuf[4:-4].reshape(2, 3)
            ctx, lens = np.array(contexts, i64), np.array(lengths, i64)
            status = module.text_env_step(
                5,
                2,
                1,
                3,
                np.array([2, 2], i64),
                np.ones(2, u8),
                ctx,
                lens,
                tokens,
                np.full(2, 7, u8),
                np.full(2, 7, u8),
            )
            assert status == code
            assert (tbuf == -9).all()
            np.testing.assert_array_equal(ctx, contexts)
            np.testing.assert_array_equal(lens, lengths)
        # rollout over a broken prompt set: status 6, no output written
        outs = [
            np.full((2, 3), -7, i64),
            np.full((2, 3), -7, i64),
            np.full((2, 3), -7.0),
            np.full((2, 3), 7, u8),
            np.full(2, -7, i64),
            np.full(2, 7, u8),
            np.full(2, 7, u8),
            np.full(2, -7, i64),
        ]
        status = module.text_env_rollout(
            np.zeros((25, 5)),
            np.zeros((25, 5)),
            0,
            1.0,
            np.array([2, 3], i64),
            np.array([0, 3, 2], i64),
            np.array([0, 1], i64),
            2,
            0,
            1,
            np.uint64(1),
            np.uint64(0),
            *outs,
            np.zeros((25, 5)),
            np.zeros((25, 3)),
            np.zeros(25, u8),
            np.zeros((25, 5), u8),
        )
        assert status == 6
        assert all((o == -7).all() or (o == 7).all() for o in outs)


# ---------------------------------------------------------------------------------------------
# 6. read-only inputs run the compiled code already there (no new Numba specialisation)


def test_read_only_tables_do_not_compile_a_new_specialisation():
    from fastlmrl._numba import environments as numba_env

    env = _text_env()
    logits = np.random.default_rng(0).standard_normal((25, 5))
    frozen = logits.copy()
    frozen.flags.writeable = False
    with fastlmrl.use_backend("numba"):
        env.reset(seed=0)
        want = env.rollout(logits, seed=3, top_k=2)
        env.action_mask(logits, top_k=2)
        counts = (
            len(numba_env.text_env_rollout.signatures),
            len(numba_env.topk_topp_mask.signatures),
        )
        got = env.rollout(frozen, seed=3, top_k=2, mask_logits=frozen)
        env.action_mask(frozen, top_k=2)
        assert (
            len(numba_env.text_env_rollout.signatures),
            len(numba_env.topk_topp_mask.signatures),
        ) == counts
    np.testing.assert_array_equal(got.actions, want.actions)
    np.testing.assert_array_equal(got.log_probs, want.log_probs)


# ---------------------------------------------------------------------------------------------
# 5. tokenizers, corpus, Gymnasium adapters: odd arguments


def test_ngram_messages_name_the_arguments():
    from fastlmrl.ngram import context_tokens, next_context

    with pytest.raises(ValueError, match=r"ctx and token must broadcast together"):
        next_context(np.zeros(3, np.int64), np.zeros(4, np.int64), 5, 2)
    with pytest.raises(ValueError, match=r"\[0, vocab_size\*\*k = 5\*\*0 = 1\)"):
        context_tokens(7, 0, 5)
    with pytest.raises(ValueError, match=r"ctx\[0\] = 22 is out of range \[0, vocab_size\*\*k"):
        next_context(np.array([22]), 0, 5, 0)


def test_ngram_fit_text_arguments():
    tok = CharTokenizer("ab")
    with pytest.raises(TypeError, match="tokenizer must be a fastlmrl tokenizer"):
        NGramLM(2).fit_text("ab", None)
    with pytest.raises(TypeError, match="text must be a str"):
        NGramLM(2).fit_text(None, tok)
    assert NGramLM(2).fit_text("ab\nba", tok).vocab_size == tok.vocab_size


def test_tokenizer_and_corpus_arguments():
    tok = CharTokenizer("hello world")
    with pytest.raises(TypeError, match="add_bos must be a bool"):
        tok.encode("he", add_bos=1)
    with pytest.raises(TypeError, match="add_eos must be a bool"):
        tok.encode("he", add_eos=None)
    with pytest.raises(TypeError, match="dtype must be int32 or int64"):
        tok.encode("he", dtype="no such dtype")
    with pytest.raises(TypeError, match="skip_special must be a bool"):
        tok.decode([3], skip_special=np.nan)
    with pytest.raises(TypeError, match="token must be a str"):
        tok.token_to_id(5)
    with pytest.raises(TypeError, match="token must be a str"):
        tok.token_to_id(["h"])
    with pytest.raises(ValueError, match="min_count must be <= 2\\*\\*63 - 1"):
        CharTokenizer("ab", min_count=2**63)
    with pytest.raises(ValueError, match="max_vocab_size must be <= 2\\*\\*63 - 1"):
        CharTokenizer("ab", max_vocab_size=2**64)
    assert tok.encode("he", add_bos=np.bool_(True))[0] == tok.bos_id
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\)"):
        generate_corpus(2, seed=2**64)
    with pytest.raises(TypeError, match="seed must be an int"):
        generate_corpus(2, seed=True)
    assert generate_corpus(2, seed=2**64 - 1) == generate_corpus(2, seed=np.uint64(2**64 - 1))


def test_gym_adapter_seeds():
    pytest.importorskip("gymnasium")
    from fastlmrl.gym_adapters import TokenEnv, TokenVectorEnv

    env, venv = TokenEnv(), TokenVectorEnv(_text_env())
    for bad, exc in [
        (-1, ValueError),
        (2**64, ValueError),
        (1.5, TypeError),
        (True, TypeError),
        ("3", TypeError),
        (np.array([1]), TypeError),
    ]:
        with pytest.raises(exc, match="seed"):
            env.reset(seed=bad)
        with pytest.raises(exc, match="seed"):
            venv.reset(seed=bad)
    obs, _ = env.reset(seed=np.int64(3))
    assert obs == env.reset(seed=3)[0]
