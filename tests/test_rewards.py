"""Reward functions: hand-computed values, brute-force equivalence (hypothesis), user functions
(Python and Numba), output validation, KL shaping."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numba import njit

from fastlmrl.rewards import (
    CallableReward,
    KeywordReward,
    LengthPenalty,
    RepetitionPenalty,
    RewardFunction,
    TargetMatch,
    as_reward,
    kl_shaped,
    terminal_to_per_token,
)

TOKENS = np.array([[2, 3, 4, 1, 0], [2, 5, 4, 4, 4], [3, 3, 3, 3, 0], [0, 0, 0, 0, 0]])
LENGTHS = np.array([4, 5, 4, 0])


@st.composite
def batches(draw):
    n = draw(st.integers(0, 5))
    T = draw(st.integers(0, 7))
    tokens = draw(hnp.arrays(np.int64, (n, T), elements=st.integers(0, 3)))
    lengths = draw(hnp.arrays(np.int64, n, elements=st.integers(0, T)))
    return tokens, lengths


# ---------------------------------------------------------------------------------------------
# hand cases


def test_target_match_by_hand():
    frac = TargetMatch([2, 3, 4])
    np.testing.assert_allclose(frac(TOKENS, LENGTHS), [1.0, 2 / 3, 1 / 3, 0.0])
    prefix = TargetMatch([2, 3, 4], mode="prefix")
    np.testing.assert_allclose(prefix(TOKENS, LENGTHS), [1.0, 1 / 3, 0.0, 0.0])
    exact = TargetMatch([2, 3, 4], mode="exact")
    np.testing.assert_array_equal(exact(TOKENS, LENGTHS), [0, 0, 0, 0])  # row 0 has a 4th token
    exact_eos = TargetMatch([2, 3, 4], mode="exact", eos_id=1)
    np.testing.assert_array_equal(exact_eos(TOKENS, LENGTHS), [1, 0, 0, 0])
    per_tok = TargetMatch([2, 3, 4], per_token=True)
    r = per_tok(TOKENS, LENGTHS)
    np.testing.assert_allclose(r[1], [1 / 3, 0, 1 / 3, 0, 0])
    np.testing.assert_allclose(r.sum(1), frac(TOKENS, LENGTHS))
    per_tok_prefix = TargetMatch([2, 3, 4], mode="prefix", per_token=True)
    np.testing.assert_allclose(per_tok_prefix(TOKENS, LENGTHS).sum(1), prefix(TOKENS, LENGTHS))
    # one target per prompt
    per_prompt = TargetMatch([[3, 3], [2, 5, 4, 4, 4]])
    np.testing.assert_allclose(
        per_prompt(TOKENS, LENGTHS, prompt_ids=[0, 1, 0, 1]), [0.5, 1.0, 1.0, 0.0]
    )  # row 0: [2,3,..] vs [3,3]
    with pytest.raises(ValueError, match="needs prompt_ids"):
        per_prompt(TOKENS, LENGTHS)
    with pytest.raises(ValueError, match="prompt_ids must be < 2"):
        per_prompt(TOKENS, LENGTHS, prompt_ids=[0, 1, 2, 0])
    assert per_prompt.max_token_id() == 5


def test_keyword_reward_by_hand():
    kw = KeywordReward({4: 1.0, (3, 3): 0.5, (2, 5, 4): 2.0})
    # row0: one 4 -> 1; row1: three 4s + (2,5,4) -> 3 + 2; row2: (3,3) x3 overlapping -> 1.5
    np.testing.assert_allclose(kw(TOKENS, LENGTHS), [1.0, 5.0, 1.5, 0.0])
    per_tok = KeywordReward({4: 1.0, (2, 5, 4): 2.0}, per_token=True)
    np.testing.assert_allclose(per_tok(TOKENS, LENGTHS)[1], [0, 0, 3, 1, 1])
    presence = KeywordReward([4, 3], presence=True)
    np.testing.assert_allclose(presence(TOKENS, LENGTHS), [2, 1, 1, 0])
    norm = KeywordReward([4], normalize=True)
    np.testing.assert_allclose(norm(TOKENS, LENGTHS), [1 / 4, 3 / 5, 0, 0])
    assert kw.max_token_id() == 5
    # a keyword straddling the end of the response does not count
    np.testing.assert_allclose(KeywordReward({(1, 0): 1.0})(TOKENS, LENGTHS), [0, 0, 0, 0])
    with pytest.raises(ValueError, match="must be a token id or a tuple"):
        KeywordReward({(1, -2): 1.0})
    with pytest.raises(ValueError, match="must be finite"):
        KeywordReward({1: np.nan})


def test_repetition_penalty_by_hand():
    rep = RepetitionPenalty(n=2, weight=0.5)
    # row1 bigrams 25 54 44 44: one repeat; row2 33 33 33: two repeats
    np.testing.assert_allclose(rep(TOKENS, LENGTHS), [0, -0.5, -1.0, 0])
    per_tok = RepetitionPenalty(n=1, per_token=True)
    np.testing.assert_allclose(per_tok(TOKENS, LENGTHS)[1], [0, 0, 0, -1, -1])
    np.testing.assert_allclose(RepetitionPenalty(n=6)(TOKENS, LENGTHS), 0)


def test_length_penalty_by_hand():
    np.testing.assert_allclose(LengthPenalty(0.1)(TOKENS, LENGTHS), [-0.4, -0.5, -0.4, 0])
    np.testing.assert_allclose(
        LengthPenalty(1.0, target=3, eos_id=1)(TOKENS, LENGTHS), [0, -2, -1, -3]
    )
    r = LengthPenalty(0.25, per_token=True)(TOKENS, LENGTHS)
    np.testing.assert_allclose(r[0], [-0.25] * 4 + [0])
    with pytest.raises(ValueError, match="terminal"):
        LengthPenalty(1.0, target=3, per_token=True)


def test_combinations():
    total = TargetMatch([2, 3, 4]) + 2 * LengthPenalty(0.1)
    assert not total.per_token
    np.testing.assert_allclose(total(TOKENS, LENGTHS), [0.2, 2 / 3 - 1.0, 1 / 3 - 0.8, 0])
    mixed = TargetMatch([2, 3, 4]) + RepetitionPenalty(n=1, per_token=True)
    assert mixed.per_token
    r = mixed(TOKENS, LENGTHS)
    np.testing.assert_allclose(r[0], [0, 0, 0, 1.0, 0])  # terminal at the last token
    np.testing.assert_allclose(r[2], [0, -1, -1, -1 + 1 / 3, 0])
    assert sum([LengthPenalty(1.0), LengthPenalty(2.0)])(TOKENS, LENGTHS)[0] == -12
    assert (-LengthPenalty(1.0))(TOKENS, LENGTHS)[1] == 5
    assert (TargetMatch([7]) + LengthPenalty()).max_token_id() == 7
    assert as_reward(None) is None
    with pytest.raises(TypeError, match="reward must be a RewardFunction or a callable"):
        as_reward(3)


def test_terminal_to_per_token_and_kl_shaped_by_hand():
    out = terminal_to_per_token([1.5, -2.0, 0.0], [2, 3, 0], 4)
    np.testing.assert_array_equal(out, [[0, 1.5, 0, 0], [0, 0, -2, 0], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match="sequence 0 is empty"):
        terminal_to_per_token([1.0], [0], 3)
    r = np.array([[1.0, 0.0], [0.5, 2.0]])
    lp = np.array([[-1.0, -2.0], [-0.5, -0.1]])
    ref = np.array([[-1.5, -1.0], [-0.5, -3.0]])
    valid = np.array([[True, True], [True, False]])
    np.testing.assert_allclose(
        kl_shaped(r, lp, ref, 0.2, valid), [[1.0 - 0.2 * 0.5, 0.0 + 0.2 * 1.0], [0.5, 0.0]]
    )
    with pytest.raises(ValueError, match="kl_coef must be in"):
        kl_shaped(r, lp, ref, -1.0)
    with pytest.raises(ValueError, match=r"log_probs\[1, 1\] = nan is not finite"):
        kl_shaped(r, np.where(valid, lp, np.nan), ref, 0.1)
    with pytest.raises(ValueError, match="ref_log_probs must have shape"):
        kl_shaped(r, lp, ref[:1], 0.1)
    np.testing.assert_array_equal(kl_shaped(r, lp, ref, 0.0), r)


# ---------------------------------------------------------------------------------------------
# brute force equivalence


def _brute_repeats(seq, n):
    seen, count = set(), 0
    for i in range(len(seq) - n + 1):
        g = tuple(seq[i : i + n])
        count += g in seen
        seen.add(g)
    return count


@given(batches(), st.integers(1, 3))
def test_repetition_matches_brute_force(batch, n):
    tokens, lengths = batch
    got = RepetitionPenalty(n=n)(tokens, lengths)
    want = [-_brute_repeats(tokens[b, : lengths[b]].tolist(), n) for b in range(len(lengths))]
    np.testing.assert_array_equal(got, want)


@given(
    batches(),
    st.lists(
        st.lists(st.integers(0, 3), min_size=1, max_size=3), min_size=1, max_size=3, unique_by=tuple
    ),
)
def test_keyword_matches_brute_force(batch, grams):
    tokens, lengths = batch
    weights = {tuple(g): float(i + 1) for i, g in enumerate(grams)}
    got = KeywordReward(weights)(tokens, lengths)
    for b in range(len(lengths)):
        seq = tokens[b, : lengths[b]].tolist()
        want = sum(
            w * sum(tuple(seq[i : i + len(g)]) == g for i in range(len(seq) - len(g) + 1))
            for g, w in weights.items()
        )
        assert got[b] == want


@given(batches(), st.lists(st.integers(0, 3), min_size=1, max_size=5))
def test_target_match_matches_brute_force(batch, target):
    tokens, lengths = batch
    frac = TargetMatch(target)(tokens, lengths)
    prefix = TargetMatch(target, mode="prefix")(tokens, lengths)
    exact = TargetMatch(target, mode="exact")(tokens, lengths)
    for b in range(len(lengths)):
        y = tokens[b, : lengths[b]].tolist()
        hits = [t < len(target) and y[t] == target[t] for t in range(len(y))]
        assert frac[b] == sum(hits) / len(target)
        lcp = 0
        while lcp < len(y) and lcp < len(target) and y[lcp] == target[lcp]:
            lcp += 1
        assert prefix[b] == lcp / len(target)
        assert exact[b] == float(y == target)


# ---------------------------------------------------------------------------------------------
# user functions and validation


def test_callable_batch_reward():
    # a batch function sees the padding (its business to respect lengths) ...
    fn = CallableReward(lambda tokens, lengths, prompt_ids: (tokens == 0).sum(1))
    np.testing.assert_array_equal(fn(TOKENS, LENGTHS), [1, 0, 1, 5])
    # ... but per-token outputs are zeroed on the padding
    per_token = CallableReward(lambda t, l, p: (t == 0) * 1.0, per_token=True)
    np.testing.assert_array_equal(per_token(TOKENS, LENGTHS).sum(1), [0, 0, 0, 0])
    assert isinstance(as_reward(lambda t, l, p: l * 1.0), CallableReward)


def test_callable_per_sequence_python_and_numba():
    py = CallableReward(lambda seq: float(len(set(seq.tolist()))), per_sequence=True)
    np.testing.assert_array_equal(py(TOKENS, LENGTHS), [4, 3, 1, 0])

    @njit
    def distinct(seq):
        count = 0
        for i in range(seq.shape[0]):
            new = True
            for j in range(i):
                if seq[j] == seq[i]:
                    new = False
            count += new
        return float(count)

    jitted = CallableReward(distinct, per_sequence=True)
    assert jitted.jitted
    np.testing.assert_array_equal(jitted(TOKENS, LENGTHS), [4, 3, 1, 0])

    @njit
    def position(seq):
        return np.arange(seq.shape[0]) * 1.0

    per_tok = CallableReward(position, per_token=True, per_sequence=True)
    np.testing.assert_array_equal(per_tok(TOKENS, LENGTHS)[1], [0, 1, 2, 3, 4])

    @njit
    def too_short(seq):
        return np.zeros(1)

    with pytest.raises(ValueError, match="wrong number of per-token rewards for sequence 0"):
        CallableReward(too_short, per_token=True, per_sequence=True)(TOKENS, LENGTHS)
    with pytest.raises(ValueError, match=r"returned shape \(2,\) for sequence 0"):
        CallableReward(lambda s: np.zeros(2), per_sequence=True)(TOKENS, LENGTHS)


@pytest.mark.parametrize(
    "output, exc, match",
    [
        (np.zeros(3), ValueError, r"returned shape \(3,\), expected \(4,\)"),
        (np.zeros((4, 5)), ValueError, r"returned shape \(4, 5\), expected \(4,\)"),
        (np.array([0.0, np.nan, 0, 0]), ValueError, r"non-finite reward nan at \[1\]"),
        (np.array([0.0, 0, np.inf, 0]), ValueError, r"non-finite reward inf at \[2\]"),
        (np.array(["a"] * 4), TypeError, "must return real numbers"),
        (None, TypeError, "returned None"),
    ],
)
def test_reward_output_validation(output, exc, match):
    def user(tokens, lengths, prompt_ids):
        return output

    with pytest.raises(exc, match=match):
        CallableReward(user)(TOKENS, LENGTHS)


def test_per_token_nan_in_padding_is_ignored_but_not_in_valid_region():
    out = np.zeros((4, 5))
    out[0, 4] = np.nan  # padding of row 0 (length 4)
    r = CallableReward(lambda t, l, p: out, per_token=True)(TOKENS, LENGTHS)
    assert r[0, 4] == 0.0
    out[1, 4] = np.nan
    with pytest.raises(ValueError, match=r"at \[1, 4\]"):
        CallableReward(lambda t, l, p: out, per_token=True)(TOKENS, LENGTHS)


def test_reward_input_validation():
    fn = LengthPenalty()
    with pytest.raises(TypeError, match="tokens must hold integer"):
        fn(TOKENS * 1.0, LENGTHS)
    with pytest.raises(ValueError, match="tokens must be 2-dimensional"):
        fn(TOKENS[0], LENGTHS)
    with pytest.raises(ValueError, match=r"lengths\[1\] = 6 is out of range \[0, 5\]"):
        fn(TOKENS, [1, 6, 0, 0])
    with pytest.raises(ValueError, match="lengths must have length 4"):
        fn(TOKENS, [1, 2])
    with pytest.raises(ValueError, match="prompt_ids must be non-negative"):
        fn(TOKENS, LENGTHS, [0, -1, 0, 0])
    with pytest.raises(ValueError, match="mode must be one of"):
        TargetMatch([1], mode="bleu")
    with pytest.raises(ValueError, match="targets must not be empty"):
        TargetMatch([])
    with pytest.raises(ValueError, match="terminal"):
        TargetMatch([1], mode="exact", per_token=True)
    with pytest.raises(TypeError, match="fn must be callable"):
        CallableReward(3)


def test_empty_batch():
    empty = np.zeros((0, 3), np.int64)
    for fn in (TargetMatch([1]), KeywordReward([1]), RepetitionPenalty(), LengthPenalty()):
        assert fn(empty, np.zeros(0, np.int64)).shape == (0,)
    assert isinstance(TargetMatch([1]), RewardFunction)
