"""keyword_scores: compiled kernels equal the reference, bit for bit the old NumPy formula of
KeywordReward, hand-computed cases, every bad argument rejected with nothing written."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy_twins import nt

import fastlmrl
from fastlmrl import _backend
from fastlmrl.keyword_scores import (
    BAD_GRAM_OFFSETS,
    BAD_GRAM_TOKENS,
    BAD_GRAM_WEIGHTS,
    BAD_LENGTHS,
    BAD_OUT,
    _raise_for_status,
    keyword_scores,
)
from fastlmrl.rewards import KeywordReward

# ----------------------------------------------------------------------------- independent NumPy

numpy_keyword_scores = nt.keyword_scores_per_token


def flat(grams, index_dtype=np.int64):
    tokens = np.array([g for gram in grams for g in gram], dtype=index_dtype)
    offsets = np.cumsum([0] + [len(g) for g in grams]).astype(np.int64)
    return tokens, offsets


NO_WORDS = np.zeros(0, dtype=np.uint8)


def run(mod, tokens, lengths, grams, weights, presence, flags=NO_WORDS):
    gram_tokens, offsets = flat(grams, tokens.dtype)
    out = np.full(tokens.shape, np.nan)
    status = mod.keyword_scores(
        tokens,
        np.asarray(lengths, dtype=np.int64),
        gram_tokens,
        offsets,
        np.asarray(weights, dtype=np.float64),
        int(presence),
        flags,
        out,
    )
    return status, out


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


# ----------------------------------------------------------------------------- equivalence


@st.composite
def cases(draw):
    n = draw(st.integers(0, 6))
    horizon = draw(st.integers(0, 10))
    vocab = draw(st.integers(1, 4))
    tokens = np.array(
        draw(st.lists(st.integers(-2, vocab), min_size=n * horizon, max_size=n * horizon)),
        dtype=np.int64,
    ).reshape(n, horizon)
    lengths = draw(st.lists(st.integers(0, horizon) | st.just(horizon), min_size=n, max_size=n))
    grams = draw(st.lists(st.lists(st.integers(0, vocab), min_size=1, max_size=6), max_size=5))
    if n and grams:  # plant occurrences (random tokens rarely hold a long gram)
        for _ in range(draw(st.integers(0, 3 * n))):
            gram = grams[draw(st.integers(0, len(grams) - 1))]
            if len(gram) <= horizon:
                s = draw(st.integers(0, horizon - len(gram)))
                tokens[draw(st.integers(0, n - 1)), s : s + len(gram)] = gram
    weights = draw(
        st.lists(
            st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
            | st.sampled_from([0.1, 0.2, 0.3, -0.0, 1.0 / 3]),
            min_size=len(grams),
            max_size=len(grams),
        )
    )
    return tokens, lengths, grams, weights, draw(st.booleans())


@settings(max_examples=150)
@given(case=cases(), index_dtype=st.sampled_from([np.int32, np.int64]))
def test_compiled_equals_reference_and_numpy_formula(case, index_dtype):
    tokens, lengths, grams, weights, _ = case
    tokens = tokens.astype(index_dtype)
    for presence in (False, True):
        expected = numpy_keyword_scores(tokens, lengths, grams, weights, presence)
        status, ref = run(
            _backend.backend_module("python"), tokens, lengths, grams, weights, presence
        )
        assert status == 0
        np.testing.assert_array_equal(bits(ref), bits(expected))
        for name in ("numba", "cython"):
            status, got = run(
                _backend.backend_module(name), tokens, lengths, grams, weights, presence
            )
            assert status == 0, name
            np.testing.assert_array_equal(bits(got), bits(ref), err_msg=f"{name} {presence}")
            with fastlmrl.use_backend(name):
                public = keyword_scores(
                    tokens, lengths, [tuple(g) for g in grams], weights, presence
                )
            np.testing.assert_array_equal(bits(public), bits(ref), err_msg=f"{name} {presence}")


@settings(max_examples=30)
@given(case=cases(), normalize=st.booleans(), per_token=st.booleans())
def test_keyword_reward_equals_the_numpy_formula(case, normalize, per_token):
    tokens, lengths, grams, weights, presence = case
    if not grams:
        return  # KeywordReward needs at least one keyword
    grams = [tuple(g) for g in grams]
    unique = dict(zip(grams, weights))  # a dict keeps the last weight of a repeated key
    lengths = np.asarray(lengths, dtype=np.int64)
    per = numpy_keyword_scores(tokens, lengths, list(unique), list(unique.values()), presence)
    if normalize:
        per /= np.maximum(lengths, 1)[:, None]
    expected = per if per_token else per.sum(axis=1)
    reward = KeywordReward(unique, per_token=per_token, presence=presence, normalize=normalize)
    for name in fastlmrl.BACKENDS:
        with fastlmrl.use_backend(name):
            got = reward(tokens, lengths)
        np.testing.assert_array_equal(bits(got), bits(expected), err_msg=name)


def test_larger_batch_matches_numpy_bit_for_bit(compiled):
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 6, (500, 48))
    lengths = rng.integers(0, 49, 500)
    grams = [(1,), (2, 3), (3, 3, 3), (0, 1, 2, 3), (5,), (2, 3), (4, 4), (3, 3, 3, 3, 3)]
    weights = [0.1, 0.7, -0.3, 2.5, 1 / 3, 0.2, -1e-3, 0.9]
    for presence in (False, True):
        status, got = run(compiled, tokens, lengths, grams, weights, presence)
        assert status == 0
        np.testing.assert_array_equal(
            bits(got), bits(numpy_keyword_scores(tokens, lengths, grams, weights, presence))
        )


# ----------------------------------------------------------------------------- by hand


def test_overlapping_occurrences_and_presence(backend):
    tokens = np.array([[7, 7, 7, 0]])
    np.testing.assert_array_equal(keyword_scores(tokens, [3], [(7, 7)]), [[0, 1, 1, 0]])
    np.testing.assert_array_equal(
        keyword_scores(tokens, [3], [(7, 7)], presence=True), [[0, 1, 0, 0]]
    )
    np.testing.assert_array_equal(
        keyword_scores(tokens, [3], [7], [0.5], presence=True), [[0.5, 0, 0, 0]]
    )
    # each key counts once per row with presence; keys add at a shared end position
    np.testing.assert_array_equal(
        keyword_scores(tokens, [4], [(7, 7), 7, (7, 0)], [1.0, 0.25, 4.0], presence=True),
        [[0.25, 1.0, 0, 4.0]],
    )
    np.testing.assert_array_equal(keyword_scores(tokens, [4], [(7, 7), 7, (7, 0)]), [[1, 2, 2, 1]])


def test_occurrence_must_lie_inside_the_response(backend):
    tokens = np.array([[1, 2, 3, 4], [1, 2, 3, 4]])
    out = keyword_scores(tokens, [2, 3], [(2, 3), (1, 2)], [10.0, 1.0])
    np.testing.assert_array_equal(out, [[0, 1, 0, 0], [0, 1, 10, 0]])
    # padding is never read: a keyword made of padding alone does not count
    np.testing.assert_array_equal(keyword_scores(tokens, [0, 1], [4]), np.zeros((2, 4)))


def test_dict_grams_and_order_of_keys(backend):
    tokens = np.array([[5, 6, 5, 6]])
    got = keyword_scores(tokens, [4], {(5, 6): 0.1, 6: 0.2, (6,): 0.3})
    # position 1 and 3: (0.0 + 0.1) + 0.2 + 0.3 in key order
    want = ((0.0 + 0.1) + 0.2) + 0.3
    assert got[0, 1] == want and got[0, 3] == want and got[0, 0] == 0 and got[0, 2] == 0


def test_empty_batch_zero_horizon_long_gram_and_no_keys(backend):
    assert keyword_scores(np.zeros((0, 5), dtype=np.int32), [], [1]).shape == (0, 5)
    out = keyword_scores(np.zeros((3, 0), dtype=np.int64), [0, 0, 0], [(1, 2)])
    assert out.shape == (3, 0) and out.dtype == np.float64
    tokens = np.ones((2, 3), dtype=np.int64)
    np.testing.assert_array_equal(keyword_scores(tokens, [3, 2], [(1, 1, 1, 1)]), np.zeros((2, 3)))
    np.testing.assert_array_equal(keyword_scores(tokens, [3, 2], []), np.zeros((2, 3)))
    assert keyword_scores(
        np.zeros((0, 0), dtype=np.int64), np.zeros(0, dtype=np.int64), [3]
    ).shape == (0, 0)


def test_negative_tokens_never_match_and_dtypes(backend):
    tokens = np.array([[-1, 0, -1, 0]], dtype=np.int32)
    out = keyword_scores(tokens, [4], [0, (0, 0)])
    np.testing.assert_array_equal(out, [[0, 1, 0, 1]])
    # a keyword id beyond int32 with int32 tokens: never matches, no overflow
    np.testing.assert_array_equal(keyword_scores(tokens, [4], [2**40, 0]), [[0, 1, 0, 1]])
    # uint8 / int16 tokens, non-contiguous views, numpy keys, a 2-D array of grams
    t8 = np.array([[3, 9, 3, 9, 3, 9]], dtype=np.uint8)
    np.testing.assert_array_equal(keyword_scores(t8, [6], [np.int64(9)]), [[0, 1, 0, 1, 0, 1]])
    np.testing.assert_array_equal(
        keyword_scores(t8[:, ::2].astype(np.int16), [3], [3]), [[1, 1, 1]]
    )
    np.testing.assert_array_equal(
        keyword_scores(t8, np.array([6], dtype=np.uint8), np.array([[3, 9], [9, 3]])),
        [[0, 1, 1, 1, 1, 1]],
    )


def test_keyword_reward_uses_the_kernel(backend):
    tokens = np.array([[2, 3, 3, 3, 9], [3, 3, 0, 0, 0]])
    lengths = np.array([4, 2])
    kw = KeywordReward({(3, 3): 0.5, 2: 1.0}, per_token=True)
    np.testing.assert_array_equal(kw(tokens, lengths), [[1, 0, 0.5, 0.5, 0], [0, 0.5, 0, 0, 0]])
    assert kw._gram_tokens.tolist() == [3, 3, 2] and kw._gram_offsets.tolist() == [0, 2, 3]


def test_exported_from_every_backend():
    for name in fastlmrl.BACKENDS:
        assert "keyword_scores" in _backend.backend_module(name).__all__
    import sys

    topic = sys.modules["fastlmrl.keyword_scores"]  # fastlmrl.keyword_scores is the function
    assert topic.__all__ == ["keyword_scores"]
    assert fastlmrl.keyword_scores is topic.keyword_scores
    assert "keyword_scores" in fastlmrl.__all__


# ----------------------------------------------------------------------------- bad arguments

TOKENS = np.array([[1, 2, 1], [2, 2, 2]])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(tokens=np.array([[1.0, 2.0]])), TypeError, "tokens must hold integer"),
        (dict(tokens=np.array([[True, False]])), TypeError, "tokens must hold integer"),
        (dict(tokens=np.array([1, 2, 3])), ValueError, "tokens must be 2-dimensional"),
        (
            dict(tokens=np.array([[2**63 + 1]], dtype=np.uint64), lengths=[1]),
            ValueError,
            "tokens holds ids too large",
        ),
        (dict(lengths=[1, 2, 3]), ValueError, "lengths must have length 2"),
        (dict(lengths=[1, 4]), ValueError, r"lengths\[1\] = 4 is out of range \[0, 3\]"),
        (dict(lengths=[-1, 0]), ValueError, r"lengths\[0\] = -1"),
        (dict(lengths=[1.0, 2.0]), TypeError, "lengths must hold integer"),
        (dict(grams=5), TypeError, "grams must be a sequence"),
        (dict(grams="ab"), TypeError, "grams must be a sequence"),
        (dict(grams=[()]), ValueError, r"grams\[0\] must be a token id or a non-empty"),
        (dict(grams=[1, (2, -1)]), ValueError, r"grams\[1\] holds a negative token id -1"),
        (dict(grams=[-3]), ValueError, r"grams\[0\] holds a negative"),
        (dict(grams=[1.5]), TypeError, r"grams\[0\] must be a token id"),
        (dict(grams=[True]), TypeError, r"grams\[0\] must be a token id"),
        (dict(grams=[(1, 2.0)]), TypeError, r"grams\[0\] must be a token id"),
        (dict(grams=[[1, [2]]]), TypeError, r"grams\[0\] must be a token id"),
        (dict(grams=[2**64]), ValueError, r"grams\[0\] holds a token id too large"),
        (dict(weights=[1.0, 2.0]), ValueError, "weights must have length 1"),
        (dict(weights=[np.nan]), ValueError, r"weights\[0\] = nan is not finite"),
        (dict(weights=[np.inf]), ValueError, r"weights\[0\] = inf is not finite"),
        (dict(weights=["a"]), TypeError, "weights must hold real numbers"),
        (dict(grams={1: 2.0}, weights=[1.0]), ValueError, "not both"),
        (dict(presence="yes"), TypeError, "presence must be a bool"),
        (dict(presence=2), TypeError, "presence must be a bool"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = dict(tokens=TOKENS, lengths=[3, 2], grams=[(1, 2)], weights=None, presence=False)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        keyword_scores(**args)


def kernel_args(**changes):
    args = dict(
        tokens=TOKENS.copy(),
        lengths=np.array([3, 2], dtype=np.int64),
        gram_tokens=np.array([1, 2, 2], dtype=np.int64),
        gram_offsets=np.array([0, 2, 3], dtype=np.int64),
        gram_weights=np.array([1.0, 0.5]),
        presence=0,
        word_flags=NO_WORDS,
        out=np.full((2, 3), -7.0),
    )
    args.update(changes)
    return args


BAD_KERNEL_ARGS = [
    (dict(out=np.full((2, 4), -7.0)), BAD_OUT),
    (dict(out=np.full((3, 3), -7.0)), BAD_OUT),
    (dict(lengths=np.array([3], dtype=np.int64)), BAD_LENGTHS),
    (dict(lengths=np.array([3, 4], dtype=np.int64)), BAD_LENGTHS),
    (dict(lengths=np.array([-1, 2], dtype=np.int64)), BAD_LENGTHS),
    (dict(gram_offsets=np.array([], dtype=np.int64), gram_weights=np.array([])), BAD_GRAM_OFFSETS),
    (dict(gram_offsets=np.array([1, 2, 3], dtype=np.int64)), BAD_GRAM_OFFSETS),
    (dict(gram_offsets=np.array([0, 2, 2], dtype=np.int64)), BAD_GRAM_OFFSETS),  # empty gram
    (dict(gram_offsets=np.array([0, 2, 4], dtype=np.int64)), BAD_GRAM_OFFSETS),  # past the end
    (
        dict(gram_offsets=np.array([0, 1], dtype=np.int64), gram_weights=np.array([1.0])),
        BAD_GRAM_OFFSETS,
    ),  # does not end at len(gram_tokens)
    (dict(gram_offsets=np.array([0, 3, 2], dtype=np.int64)), BAD_GRAM_OFFSETS),
    (dict(gram_weights=np.array([1.0])), BAD_GRAM_WEIGHTS),
    (dict(gram_weights=np.array([1.0, np.nan])), BAD_GRAM_WEIGHTS),
    (dict(gram_weights=np.array([-np.inf, 1.0])), BAD_GRAM_WEIGHTS),
    (dict(gram_tokens=np.array([1, -2, 2], dtype=np.int64)), BAD_GRAM_TOKENS),
]


@pytest.mark.parametrize("changes, code", BAD_KERNEL_ARGS)
def test_kernels_reject_bad_arguments_before_writing(changes, code):
    for name in fastlmrl.BACKENDS:
        args = kernel_args(**changes)
        before = args["out"].copy()
        assert _backend.backend_module(name).keyword_scores(**args) == code, name
        np.testing.assert_array_equal(args["out"], before, err_msg=name)


def test_good_kernel_arguments_and_int32(compiled, reference):
    for dtype in (np.int32, np.int64):
        a = kernel_args(tokens=TOKENS.astype(dtype), gram_tokens=np.array([1, 2, 2], dtype=dtype))
        b = kernel_args(tokens=TOKENS.astype(dtype), gram_tokens=np.array([1, 2, 2], dtype=dtype))
        assert compiled.keyword_scores(**a) == 0 and reference.keyword_scores(**b) == 0
        np.testing.assert_array_equal(a["out"], [[0, 1.5, 0], [0.5, 0.5, 0]])
        np.testing.assert_array_equal(a["out"], b["out"])


@pytest.mark.parametrize(
    "code, name",
    [
        (BAD_LENGTHS, "lengths"),
        (BAD_GRAM_TOKENS, "gram_tokens"),
        (BAD_GRAM_OFFSETS, "gram_offsets"),
        (BAD_GRAM_WEIGHTS, "gram_weights"),
        (BAD_OUT, "out"),
        (69, "status 69"),
    ],
)
def test_status_names_the_argument(code, name):
    with pytest.raises(ValueError, match=name):
        _raise_for_status(code)
    _raise_for_status(0)


def test_keyword_reward_rejects_bad_lengths_from_the_kernel(backend):
    kw = KeywordReward([1])
    with pytest.raises(ValueError, match="lengths"):
        kw.compute(np.ones((2, 3), dtype=np.int64), np.array([1, 5]), None)


# ----------------------------------------------------------------------------- whole words

# A character-level example: letters are word tokens, ' ', '.' and ',' are not.
LETTERS = "abcdefghijklmnopqrstuvwxyz"
ALPHABET = LETTERS + " .,"


def encode(texts):
    width = max(len(t) for t in texts)
    tokens = np.full((len(texts), max(width, 1)), -1, dtype=np.int64)
    for b, text in enumerate(texts):
        tokens[b, : len(text)] = [ALPHABET.index(c) for c in text]
    return tokens, [len(t) for t in texts]


def words(*ws):
    return [tuple(ALPHABET.index(c) for c in w) for w in ws]


WORD_IDS = list(range(len(LETTERS)))


def test_whole_words_by_hand(backend):
    tokens, lengths = encode(["kind kindly unkind kind.", "kind", "xkind,kind", "kindkind"])
    out = keyword_scores(tokens, lengths, words("kind"), word_tokens=WORD_IDS)
    # row 0: "kind" at 0 (paid at 3), "kind|ly" paid at 8 and taken back at 9 by "l",
    # "un|kind" never (a letter before it), "kind." at 19..22 paid at 22
    expected0 = np.zeros(tokens.shape[1])
    expected0[[3, 8, 22]] = 1.0
    expected0[9] = -1.0
    np.testing.assert_array_equal(out[0], expected0)
    assert out.sum(axis=1).tolist() == [2.0, 1.0, 1.0, 0.0]  # "kindkind": no whole word
    # row 3: the first "kind" is paid at 3 (the prefix "kind" is a whole word), taken back at 4
    np.testing.assert_array_equal(out[3, :8], [0, 0, 0, 1, -1, 0, 0, 0])
    # without word tokens every substring counts (the former behaviour)
    assert keyword_scores(tokens, lengths, words("kind")).sum(axis=1).tolist() == [4, 1, 2, 2]
    # presence: at most one per row, taken back and paid again as the prefix grows
    pres = keyword_scores(tokens, lengths, words("kind"), presence=True, word_tokens=WORD_IDS)
    assert pres.sum(axis=1).tolist() == [1.0, 1.0, 1.0, 0.0]
    np.testing.assert_array_equal(pres[0, :10], [0, 0, 0, 1, 0, 0, 0, 0, 0, 0])


def test_whole_words_in_the_demo_failure_case(backend):
    # GRPO learnt 'thappy braver clevery' when n-grams inside words paid: none of them counts now
    tokens, lengths = encode(["the thappy braver clevery", "a happy, brave and clever owl."])
    lexicon = words("happy", "brave", "clever", "kind")
    assert keyword_scores(tokens, lengths, lexicon).sum(axis=1).tolist() == [3.0, 3.0]
    whole = keyword_scores(tokens, lengths, lexicon, word_tokens=WORD_IDS)
    assert whole.sum(axis=1).tolist() == [0.0, 3.0]
    reward = KeywordReward({w: 1.0 for w in lexicon}, word_tokens=WORD_IDS)
    assert reward(tokens, lengths).tolist() == [0.0, 3.0]
    per_token = KeywordReward({w: 1.0 for w in lexicon}, word_tokens=WORD_IDS, per_token=True)
    np.testing.assert_array_equal(per_token(tokens, lengths), whole)


def test_prefix_increments_sum_to_the_prefix_scores():
    # out[b, :t + 1].sum() is the score of the prefix of length t + 1 (each scored on its own)
    tokens, lengths = encode(["kindly kind kin kind", "a kind, kinder kind"])
    lex = words("kind", "kin", "d")
    full = keyword_scores(tokens, lengths, lex, word_tokens=WORD_IDS)
    for b in range(2):
        for t in range(lengths[b]):
            prefix = keyword_scores(tokens[b : b + 1, : t + 1], [t + 1], lex, word_tokens=WORD_IDS)
            assert full[b, : t + 1].sum() == prefix.sum(), (b, t)


@st.composite
def word_cases(draw):
    tokens, lengths, grams, weights, presence = draw(cases())
    vocab = int(max([tokens.max(initial=0)] + [max(g) for g in grams])) + 2
    flags = np.array(draw(st.lists(st.integers(0, 1), min_size=0, max_size=vocab)), dtype=np.uint8)
    return tokens, lengths, grams, weights, presence, flags


@settings(max_examples=150)
@given(case=word_cases(), index_dtype=st.sampled_from([np.int32, np.int64]))
def test_whole_words_compiled_equal_reference(case, index_dtype):
    tokens, lengths, grams, weights, presence, flags = case
    tokens = tokens.astype(index_dtype)
    status, ref = run(
        _backend.backend_module("python"), tokens, lengths, grams, weights, presence, flags
    )
    assert status == 0
    if not flags.any():  # no word token: exactly substring counting
        np.testing.assert_array_equal(
            bits(ref), bits(numpy_keyword_scores(tokens, lengths, grams, weights, presence))
        )
    for name in ("numba", "cython"):
        status, got = run(
            _backend.backend_module(name), tokens, lengths, grams, weights, presence, flags
        )
        assert status == 0, name
        np.testing.assert_array_equal(bits(got), bits(ref), err_msg=name)


def test_word_tokens_argument_checks():
    tokens, lengths = encode(["kind"])
    with pytest.raises(ValueError, match="word_tokens"):
        keyword_scores(tokens, lengths, words("kind"), word_tokens=[-1, 2])
    with pytest.raises(TypeError, match="word_tokens"):
        keyword_scores(tokens, lengths, words("kind"), word_tokens=[0.5])
    # ids beyond the flags and negative token ids are not word tokens
    t = np.array([[5, 1, 2, 99, -3, 1, 2]])
    np.testing.assert_array_equal(
        keyword_scores(t, [7], [(1, 2)], word_tokens=[1, 2, 5]), [[0, 0, 0, 0, 0, 0, 1]]
    )
