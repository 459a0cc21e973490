"""NGramLM (add-k, interpolated Kneser–Ney) and the k-gram context ids: hand-computed
probabilities, an independent dictionary-based implementation, normalisation, perplexity,
sampling (seeded, in every backend, chi-square), logits tables, bad input."""

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastlmrl
from fastlmrl import (
    CharTokenizer,
    NGramLM,
    RandomStream,
    WordTokenizer,
    context_id,
    context_ids,
    context_tokens,
    next_context,
    num_contexts,
)

# Tiny corpus for the hand computations: V = 5 ids (<bos>=0, <eos>=1, <unk>=2, a=3, b=4),
# sequences "ab" and "a", padded for a bigram model as [0 3 4 1] and [0 3 1].
TINY = [np.array([3, 4]), np.array([3])]
V_TINY = 5


# ----------------------------------------------------------------------------------------------
# an independent implementation: dictionaries of tuples, the formulas written out literally
# ----------------------------------------------------------------------------------------------
def naive_counts(seqs, n, bos=0, eos=1):
    grams = Counter()
    for s in seqs:
        p = [bos] * (n - 1) + [int(t) for t in s] + [eos]
        for i in range(n - 1, len(p)):
            grams[tuple(p[i - n + 1 : i + 1])] += 1
    return grams


def naive_add_k(seqs, V, n, k):
    grams = naive_counts(seqs, n)

    def prob(h, w):
        total = sum(c for g, c in grams.items() if g[:-1] == h)
        return (grams.get(h + (w,), 0) + k) / (total + k * V)

    return prob


def naive_kn(seqs, V, n, D):
    counts = {n: naive_counts(seqs, n)}
    for m in range(n - 1, 0, -1):  # continuation counts: distinct left extensions
        cm = Counter()
        for g in counts[m + 1]:
            cm[g[1:]] += 1
        counts[m] = cm

    def p(m, h, w):
        if m == 0:
            return 1.0 / V
        cm = counts[m]
        total = sum(c for g, c in cm.items() if g[:-1] == h)
        if total == 0:
            return p(m - 1, h[1:], w)
        types = sum(1 for g in cm if g[:-1] == h)
        return max(cm.get(h + (w,), 0) - D, 0) / total + D * types / total * p(m - 1, h[1:], w)

    return lambda h, w: p(n, h, w)


# ----------------------------------------------------------------------------------------------
# hand-computed cases
# ----------------------------------------------------------------------------------------------
def test_add_k_bigram_by_hand():
    # bigram counts: c(0,3)=2, c(3,4)=1, c(4,1)=1, c(3,1)=1; c(0)=2, c(3)=2, c(4)=1.
    lm = NGramLM(order=2, smoothing="add_k", k=1.0).fit(TINY, V_TINY)
    P = lambda w, h: math.exp(lm.log_prob(w, [h]))  # noqa: E731
    assert P(3, 0) == pytest.approx(3 / 7, rel=1e-15)  # (2 + 1) / (2 + 5)
    assert P(4, 3) == pytest.approx(2 / 7, rel=1e-15)  # (1 + 1) / (2 + 5)
    assert P(1, 3) == pytest.approx(2 / 7, rel=1e-15)
    assert P(0, 3) == pytest.approx(1 / 7, rel=1e-15)  # (0 + 1) / (2 + 5)
    assert P(1, 4) == pytest.approx(2 / 6, rel=1e-15)  # (1 + 1) / (1 + 5)
    assert P(3, 1) == pytest.approx(1 / 5, rel=1e-15)  # unseen history: uniform
    # the empty context is the start of a sequence: history <bos>
    assert lm.log_prob(3) == lm.log_prob(3, [0]) == lm.log_prob(3, [4, 0])
    half = NGramLM(order=2, smoothing="add_k", k=0.5).fit(TINY, V_TINY)
    assert math.exp(half.log_prob(3, [0])) == pytest.approx(2.5 / 4.5, rel=1e-15)
    # perplexity on the training data: targets 3|0 (twice), 4|3, 1|4, 1|3
    pp = math.exp(-(2 * math.log(3 / 7) + 2 * math.log(2 / 7) + math.log(1 / 3)) / 5)
    assert lm.perplexity(TINY) == pytest.approx(pp, rel=1e-13)


def test_kneser_ney_bigram_by_hand():
    # D = 0.75.  Unigram continuation counts N1+(. w) from the bigram types (0,3) (3,4) (4,1)
    # (3,1): w=3 -> 1, w=4 -> 1, w=1 -> 2; N1+(. .) = 4 types, 3 distinct w.  With the uniform
    # 1/5 at the bottom:  P1(w) = max(N1+(. w) - D, 0) / 4 + D * 3 / 4 * 1/5, D*3/4/5 = 0.1125
    #   P1(1) = 1.25/4 + 0.1125 = 0.425,  P1(3) = P1(4) = 0.25/4 + 0.1125 = 0.175,
    #   P1(0) = P1(2) = 0.1125                                  (sum 1)
    # Bigram, history 3 (c(3) = 2, two followers): P2(w|3) = max(c(3w) - D, 0)/2 + D*2/2*P1(w)
    #   P2(4|3) = 0.125 + 0.75*0.175 = 0.25625,  P2(1|3) = 0.125 + 0.75*0.425 = 0.44375,
    #   P2(3|3) = 0.75*0.175 = 0.13125,  P2(0|3) = P2(2|3) = 0.75*0.1125 = 0.084375
    # History 0 (c = 2, one follower): P2(3|0) = 1.25/2 + 0.75/2*0.175 = 0.690625
    # History 4 (c = 1, one follower): P2(1|4) = 0.25 + 0.75*0.425 = 0.56875
    # History 1 never seen: P2(w|1) = P1(w).
    lm = NGramLM(order=2, smoothing="kneser_ney", discount=0.75).fit(TINY, V_TINY)
    P = lambda w, h: math.exp(lm.log_prob(w, [h]))  # noqa: E731
    expected = {
        (4, 3): 0.25625,
        (1, 3): 0.44375,
        (3, 3): 0.13125,
        (0, 3): 0.084375,
        (2, 3): 0.084375,
        (3, 0): 0.690625,
        (1, 4): 0.56875,
        (1, 1): 0.425,
        (3, 1): 0.175,
        (4, 1): 0.175,
        (0, 1): 0.1125,
        (2, 1): 0.1125,
    }
    for (w, h), p in expected.items():
        assert P(w, h) == pytest.approx(p, rel=1e-14), (w, h)
    table = lm.logits_table()
    assert table.shape == (5, 5)
    np.testing.assert_allclose(
        np.exp(table[3]), [0.084375, 0.44375, 0.084375, 0.13125, 0.25625], rtol=1e-14
    )


def test_kneser_ney_unigram_by_hand():
    # order 1 uses the raw counts: c(3)=2, c(4)=1, c(1)=2, N=5, 3 types.
    #   P(w) = max(c(w) - D, 0)/5 + D*3/5 * 1/5 ; D*3/5/5 = 0.09
    #   P(1) = P(3) = 1.25/5 + 0.09 = 0.34, P(4) = 0.25/5 + 0.09 = 0.14, P(0) = P(2) = 0.09
    lm = NGramLM(order=1).fit(TINY, V_TINY)
    np.testing.assert_allclose(
        np.exp(lm.logits_table()[0]), [0.09, 0.34, 0.09, 0.34, 0.14], rtol=1e-14
    )
    assert lm.logits_table().shape == (1, 5)
    assert lm.log_prob(np.array([1, 4])).shape == (2,)


def test_context_id_by_hand():
    assert context_id([4, 5], 10) == 45
    assert context_id([1, 0, 2], 3) == 1 * 9 + 0 * 3 + 2
    assert context_id([], 7) == 0
    assert context_tokens(45, 2, 10).tolist() == [4, 5]
    assert next_context(45, 7, 10, 2) == 57  # (45*10 + 7) mod 100
    assert next_context(0, 3, 10, 0) == 0  # k = 0: one context
    np.testing.assert_array_equal(
        next_context(np.array([45, 99]), np.array([7, 0]), 10, 2), [57, 90]
    )
    assert context_ids([3, 4, 5], 2, 10).tolist() == [34, 45]
    assert context_ids([3, 4, 5], 2, 10, bos_id=0).tolist() == [0, 3, 34, 45]
    assert context_ids([3], 2, 10).tolist() == []
    assert num_contexts(64, 2) == 4096 and num_contexts(128, 2) == 16384


# ----------------------------------------------------------------------------------------------
# properties on random data
# ----------------------------------------------------------------------------------------------
@st.composite
def corpora(draw):
    V = draw(st.integers(3, 7))
    seqs = draw(st.lists(st.lists(st.integers(2, V - 1), max_size=8), min_size=1, max_size=6))
    n = draw(st.integers(1, 4))
    return V, [np.array(s, dtype=np.int64) for s in seqs], n


@settings(max_examples=40)
@given(corpora(), st.floats(0.05, 1.0), st.floats(0.01, 3.0))
def test_matches_independent_implementation(corpus, discount, k):
    V, seqs, n = corpus
    kn = NGramLM(n, "kneser_ney", discount=discount).fit(seqs, V)
    ak = NGramLM(n, "add_k", k=k).fit(seqs, V)
    ref_kn, ref_ak = naive_kn(seqs, V, n, discount), naive_add_k(seqs, V, n, k)
    t_kn, t_ak = kn.logits_table(), ak.logits_table()
    for c in range(V ** (n - 1)):
        h = tuple(context_tokens(c, n - 1, V).tolist())
        want_kn = [ref_kn(h, w) for w in range(V)]
        want_ak = [ref_ak(h, w) for w in range(V)]
        np.testing.assert_allclose(np.exp(t_kn[c]), want_kn, rtol=1e-12)
        np.testing.assert_allclose(np.exp(t_ak[c]), want_ak, rtol=1e-12)


@settings(max_examples=40)
@given(corpora(), st.floats(0.05, 1.0))
def test_rows_are_distributions_and_table_equals_pointwise(corpus, discount):
    V, seqs, n = corpus
    for lm in (
        NGramLM(n, "kneser_ney", discount=discount).fit(seqs, V),
        NGramLM(n, "add_k", k=discount).fit(seqs, V),
    ):
        t64 = lm.logits_table()
        assert t64.shape == (V ** (n - 1), V) and t64.dtype == np.float64
        assert np.isfinite(t64).all() and (t64 <= 0).all()
        np.testing.assert_allclose(np.exp(t64).sum(axis=1), 1.0, atol=1e-12)
        # the dense table is bit-identical to single lookups
        for c in range(0, V ** (n - 1), max(1, V ** (n - 1) // 7)):
            ctx = context_tokens(c, n - 1, V)
            np.testing.assert_array_equal(lm.log_prob(np.arange(V), ctx), t64[c])
            assert lm.log_prob(int(V - 1), ctx) == t64[c, V - 1]
        t32 = lm.logits_table(dtype=np.float32)
        assert t32.dtype == np.float32
        np.testing.assert_array_equal(t32, t64.astype(np.float32))  # rounded once
        # a longer context only repeats rows: row c reads the last n-1 tokens = c mod V**(n-1)
        longer = lm.logits_table(n)
        assert longer.shape == (V**n, V)
        np.testing.assert_array_equal(longer, t64[np.arange(V**n) % V ** (n - 1)])


@given(st.integers(1, 12), st.integers(0, 4), st.data())
def test_context_id_bijection_and_next_context(V, k, data):
    seq = data.draw(st.lists(st.integers(0, V - 1), max_size=12))
    arr = np.array(seq, dtype=np.int64)
    ids = context_ids(arr, k, V)
    assert ids.shape == (max(0, len(seq) - k + 1),)
    for i, c in enumerate(ids.tolist()):
        window = seq[i : i + k]
        assert c == context_id(window, V) == sum(t * V ** (k - 1 - j) for j, t in enumerate(window))
        assert context_tokens(c, k, V).tolist() == window
        assert 0 <= c < V**k
    padded = context_ids(np.array(seq, dtype=np.int32), k, V, bos_id=0)
    assert padded[0] == 0 and padded.shape == (len(seq) + 1,)
    for i, t in enumerate(seq):
        assert padded[i + 1] == next_context(int(padded[i]), t, V, k)
    np.testing.assert_array_equal(next_context(padded[:-1], arr, V, k), padded[1:])
    assert len({context_id(list(context_tokens(c, k, V)), V) for c in range(min(V**k, 50))}) == min(
        V**k, 50
    )


def test_int32_and_int64_inputs_agree():
    seqs = [np.array([3, 4, 4, 3]), np.array([4, 3])]
    a = NGramLM(3).fit(seqs, 5)
    b = NGramLM(3).fit([s.astype(np.int32) for s in seqs], 5)
    c = NGramLM(3).fit([s.tolist() for s in seqs], 5)
    d = NGramLM(3).fit(np.array([[3, 4], [4, 3]], dtype=np.int32), 5)
    assert np.array_equal(a.logits_table(), b.logits_table())
    assert np.array_equal(a.logits_table(), c.logits_table())
    assert d.is_fitted and a.perplexity(seqs[0]) == b.perplexity(seqs[0].astype(np.int32))
    # one flat sequence as a list of ints is one sequence
    assert NGramLM(2).fit([3, 4], 5).n_targets == 3


def test_no_padding_options():
    # without <bos> the first n-1 tokens are only history; without <eos> nothing is appended
    lm = NGramLM(2, "add_k").fit([np.array([3, 4, 3])], 5, bos_id=None, eos_id=None)
    assert lm.n_targets == 2  # (3,4) and (4,3)
    assert math.exp(lm.log_prob(4, [3])) == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="at least order - 1 = 1 tokens"):
        lm.log_prob(4, [])
    assert lm.sample(5, seed=0, prompt=[3]).shape == (5,)  # never stops: no <eos>


# ----------------------------------------------------------------------------------------------
# the default corpus
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def split():
    return fastlmrl.train_test_split(fastlmrl.default_corpus())


@pytest.fixture(scope="module")
def chars(split):
    return CharTokenizer(split[0])


def test_perplexity_kneser_ney_beats_add_one_beats_uniform(split, chars):
    train, test = split
    held = chars.encode_lines(test)
    V = chars.vocab_size
    for order in (2, 3, 4):
        kn = NGramLM(order, "kneser_ney").fit_text(train, chars).perplexity(held)
        add1 = NGramLM(order, "add_k", k=1.0).fit_text(train, chars).perplexity(held)
        assert kn < add1 < V, (order, kn, add1)
    words = WordTokenizer(train)
    held_w = words.encode_lines(test)
    kn = NGramLM(2, "kneser_ney").fit_text(train, words).perplexity(held_w)
    add1 = NGramLM(2, "add_k", k=1.0).fit_text(train, words).perplexity(held_w)
    assert kn < add1 < words.vocab_size
    # a uniform model has perplexity V: add-k with a huge k is nearly uniform
    assert NGramLM(2, "add_k", k=1e12).fit_text(train, chars).perplexity(held) == pytest.approx(
        V, rel=1e-6
    )


def test_training_perplexity_is_lower_than_held_out(split, chars):
    train, test = split
    for tok, order in ((chars, 4), (WordTokenizer(train), 2), (WordTokenizer(train), 3)):
        lm = NGramLM(order).fit_text(train, tok)
        assert lm.perplexity(tok.encode_lines(train)) < lm.perplexity(tok.encode_lines(test))


def test_logits_table_of_the_default_corpus(split, chars):
    lm = NGramLM(3).fit_text(split[0], chars)
    V = chars.vocab_size
    policy, reference = lm.policy_tables()
    assert policy.shape == (V * V, V) and policy.dtype == np.float32
    assert policy.flags.writeable and policy.flags.c_contiguous
    assert not reference.flags.writeable and not np.shares_memory(policy, reference)
    np.testing.assert_array_equal(policy, reference)
    np.testing.assert_allclose(np.exp(policy.astype(np.float64)).sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.exp(lm.logits_table()).sum(1), 1.0, atol=1e-12)
    policy[:] = 0  # training the policy does not touch the model
    assert lm.logits_table()[0, 0] != 0
    # context "Th" -> 'e' is the most likely next character
    ctx = context_id(chars.encode("Th"), V)
    assert chars.id_to_token(int(np.argmax(reference[ctx]))) == "e"
    # the start context (<bos>, <bos>) is context 0; a sentence starts with a capital
    first = chars.id_to_token(int(np.argmax(reference[0])))
    assert first.isupper()


# ----------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def char_lm(split, chars):
    return NGramLM(3).fit_text(split[0], chars)


def test_sampling_is_reproducible_in_every_backend(backend, char_lm, chars):
    with fastlmrl.use_backend("python"):
        expected = char_lm.sample(40, seed=11, n_sequences=3)
    got = char_lm.sample(40, seed=11, n_sequences=3)
    np.testing.assert_array_equal(got, expected)
    one = char_lm.sample(300, seed=5)
    assert one[-1] == chars.eos_id and (one[:-1] != chars.eos_id).all()
    assert np.array_equal(one, char_lm.sample(300, seed=5))
    assert not np.array_equal(char_lm.sample(300, seed=6)[:20], one[:20])


def test_sampling_counters(char_lm):
    V = char_lm.vocab_size
    table = char_lm.logits_table()
    B, T = 4, 6
    out = char_lm.sample(T, seed=RandomStream(9, counter=100), n_sequences=B, stop_at_eos=False)
    # step t, sequence i uses counter c + t*B + i: replay with boltzmann directly
    stream = RandomStream(9, counter=100)
    ctx = np.zeros(B, dtype=np.int64)
    for t in range(T):
        tok = fastlmrl.boltzmann(table, ctx, 1.0, stream)
        np.testing.assert_array_equal(out[:, t], tok)
        ctx = next_context(ctx, tok, V, 2)
    # a RandomStream advances by n_tokens * B even when every sequence stopped early
    s = RandomStream(1)
    seqs = char_lm.sample(1000, seed=s, n_sequences=2)
    assert s.counter == 2000
    first_eos = (seqs == 1).argmax(axis=1)
    for i in range(2):
        assert (seqs[i, first_eos[i] :] == 1).all()
    # an int seed starts at counter 0 of stream 0 each call
    assert np.array_equal(
        char_lm.sample(10, seed=9, stop_at_eos=False),
        char_lm.sample(10, seed=RandomStream(9), stop_at_eos=False),
    )
    assert char_lm.sample(0, seed=0).shape == (0,)
    assert char_lm.sample(0, seed=0, n_sequences=3).shape == (3, 0)


def test_sample_follows_the_model_distribution(char_lm, chars):
    """Chi-square goodness of fit of 20000 next characters after the prompt "th"."""
    prompt = chars.encode("Once th")
    n = 20000
    draws = char_lm.sample(1, seed=2024, prompt=prompt, n_sequences=n)[:, 0]
    p = np.exp(char_lm.log_prob(np.arange(chars.vocab_size), prompt))
    expected = n * p
    big = expected >= 5
    observed = np.bincount(draws, minlength=chars.vocab_size)
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    dof = len(obs) - 1
    # Wilson–Hilferty upper 0.1% quantile of chi-square(dof), z = 3.09
    limit = dof * (1 - 2 / (9 * dof) + 3.09 * math.sqrt(2 / (9 * dof))) ** 3
    assert chi2 < limit, (chi2, limit, dof)
    assert dof >= 3


def test_word_sampling_with_prompt(split):
    words = WordTokenizer(split[0])
    lm = NGramLM(2).fit_text(split[0], words)
    out = lm.sample(30, seed=0, prompt=words.encode("The"))
    assert out.dtype == np.int64 and ((out >= 0) & (out < words.vocab_size)).all()
    assert out.shape[0] == 30 or out[-1] == words.eos_id
    assert np.array_equal(out, lm.sample(30, seed=0, prompt=words.encode("The")))
    # the first word follows the prompt "The": it is never a capitalised sentence start
    assert not words.decode(out[:1])[0].isupper()


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------
def test_constructor_bad_input():
    for order in (0, -1):
        with pytest.raises(ValueError, match="order must be >= 1"):
            NGramLM(order)
    for order in (1.5, True, "3"):
        with pytest.raises(TypeError, match="order must be an int"):
            NGramLM(order)
    with pytest.raises(ValueError, match="smoothing must be one of"):
        NGramLM(2, "witten_bell")
    with pytest.raises(TypeError, match="smoothing must be a str"):
        NGramLM(2, None)
    for k in (0.0, -1.0):
        with pytest.raises(ValueError, match="k must be in"):
            NGramLM(2, "add_k", k=k)
    with pytest.raises(ValueError, match="k must be finite"):
        NGramLM(2, "add_k", k=math.nan)
    for d in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="discount must be in"):
            NGramLM(2, discount=d)
    with pytest.raises(ValueError, match="discount must be finite"):
        NGramLM(2, discount=math.inf)


def test_fit_bad_input_leaves_the_model_unchanged():
    lm = NGramLM(2).fit(TINY, V_TINY)
    before = lm.logits_table()
    bad_calls = [
        (
            lambda: lm.fit([np.array([3, 5])], 5),
            ValueError,
            r"sequences\[0\]\[1\] = 5 is out of range \[0, 5\)",
        ),
        (
            lambda: lm.fit([np.array([3]), np.array([-1])], 5),
            ValueError,
            r"sequences\[1\]\[0\] = -1",
        ),
        (lambda: lm.fit([np.array([3.0])], 5), TypeError, "integer ids"),
        (lambda: lm.fit([np.array([[3]])], 5), ValueError, "1-dimensional"),
        (lambda: lm.fit(["abc"], 5), TypeError, "encode text with a tokenizer"),
        (lambda: lm.fit("abc", 5), TypeError, "id array or a list"),
        (lambda: lm.fit([], 5), ValueError, "no token to predict"),
        (lambda: lm.fit([np.array([], np.int64)], 5, eos_id=None), ValueError, "no token"),
        (lambda: lm.fit(TINY, 0), ValueError, "vocab_size must be >= 1"),
        (lambda: lm.fit(TINY, 5.0), TypeError, "vocab_size must be an int"),
        (lambda: lm.fit(TINY, 5, bos_id=5), ValueError, r"bos_id = 5 is out of range"),
        (lambda: lm.fit(TINY, 5, eos_id=-1), ValueError, "eos_id = -1"),
        (lambda: lm.fit(TINY, 5, eos_id=1.0), TypeError, "eos_id must be an int"),
        (lambda: NGramLM(8).fit(TINY, 300), ValueError, "does not fit in int64"),
    ]
    for call, exc, msg in bad_calls:
        with pytest.raises(exc, match=msg):
            call()
        assert lm.vocab_size == 5 and lm.bos_id == 0 and lm.eos_id == 1
        np.testing.assert_array_equal(lm.logits_table(), before)


def test_query_bad_input():
    with pytest.raises(RuntimeError, match="not fitted"):
        NGramLM(2).log_prob(0)
    with pytest.raises(RuntimeError, match="not fitted"):
        NGramLM(2).logits_table()
    lm = NGramLM(2).fit(TINY, V_TINY)
    with pytest.raises(ValueError, match=r"token = 5 is out of range \[0, 5\)"):
        lm.log_prob(5)
    with pytest.raises(ValueError, match=r"token\[1\] = -2"):
        lm.log_prob(np.array([0, -2]))
    with pytest.raises(TypeError, match="token must be an int"):
        lm.log_prob(True)
    with pytest.raises(ValueError, match=r"context\[0\] = 9"):
        lm.log_prob(0, [9])
    with pytest.raises(ValueError, match="k must be >= order - 1"):
        NGramLM(3).fit(TINY, V_TINY).logits_table(1)
    with pytest.raises(ValueError, match=r"more than 2\*\*26"):
        NGramLM(2).fit([np.arange(3, 1000)], 1000).logits_table(2)
    with pytest.raises(ValueError, match=r"2\*\*26"):
        NGramLM(3).fit([np.arange(3, 1000)], 1000).sample(3, seed=0)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        lm.logits_table(dtype=np.int64)
    with pytest.raises(ValueError, match="no token to score"):
        NGramLM(2).fit(TINY, 5, eos_id=None).perplexity([np.array([], np.int64)])
    with pytest.raises(ValueError, match=r"sequences\[0\]\[0\] = 7"):
        lm.perplexity([np.array([7])])


def test_sample_bad_input_does_not_advance_the_stream():
    lm = NGramLM(2).fit(TINY, V_TINY)
    s = RandomStream(3, counter=7)
    bad = [
        (dict(n_tokens=-1), ValueError, "n_tokens must be >= 0"),
        (dict(n_tokens=2.0), TypeError, "n_tokens must be an int"),
        (dict(n_tokens=2, n_sequences=0), ValueError, "n_sequences must be >= 1"),
        (dict(n_tokens=2, prompt=[5]), ValueError, r"prompt\[0\] = 5 is out of range"),
        (dict(n_tokens=2, stop_at_eos=1), TypeError, "stop_at_eos must be a bool"),
    ]
    for kwargs, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            lm.sample(seed=s, **kwargs)
        assert s.counter == 7
    with pytest.raises(ValueError, match="seed must be in"):
        lm.sample(2, seed=-1)
    with pytest.raises(TypeError, match="seed must be an int"):
        lm.sample(2, seed=1.5)
    s = RandomStream(0, counter=2**64 - 2)
    with pytest.raises(ValueError, match="seed: RandomStream exhausted: the call needs 4"):
        lm.sample(4, seed=s)
    assert s.counter == 2**64 - 2


def test_context_helpers_bad_input():
    with pytest.raises(ValueError, match=r"more than 2\*\*26"):
        num_contexts(1000, 2)
    with pytest.raises(ValueError, match="k must be >= 0"):
        num_contexts(10, -1)
    with pytest.raises(ValueError, match="vocab_size must be >= 1"):
        context_ids([0], 1, 0)
    with pytest.raises(
        ValueError, match=r"ctx = 100 is out of range \[0, vocab_size\*\*k = 10\*\*2 = 100\)"
    ):
        next_context(100, 0, 10, 2)
    with pytest.raises(ValueError, match=r"token = 10 is out of range \[0, 10\)"):
        next_context(5, 10, 10, 2)
    with pytest.raises(ValueError, match=r"ctx\[1\] = -1"):
        next_context(np.array([0, -1]), 0, 10, 2)
    with pytest.raises(TypeError, match="ctx must be an int or an integer array"):
        next_context(True, 0, 10, 2)
    with pytest.raises(ValueError, match=r"tokens\[1\] = 10"):
        context_ids([1, 10], 2, 10)
    with pytest.raises(ValueError, match=r"tokens\[0\] = 3"):
        context_id([3], 3)
    with pytest.raises(ValueError, match="ctx = 9 is out of range"):
        context_tokens(9, 2, 3)
    with pytest.raises(TypeError, match="integer ids"):
        context_ids(np.array([1.5]), 1, 10)
    with pytest.raises(ValueError, match="1-dimensional"):
        context_ids(np.zeros((2, 2), np.int64), 1, 10)
    with pytest.raises(ValueError, match="does not fit in int64"):
        context_id(np.zeros(70, np.int64), 2)
