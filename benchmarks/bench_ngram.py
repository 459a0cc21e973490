"""N-gram language model: fitting on the default corpus, building the logits table, sampling.

* ``fit``: count and smooth the n-grams of the default corpus' training split (items: target
  tokens counted per second), for characters (order 3, the (V**2, V) table of k = 2) and words
  (order 2).
* ``table``: the dense log-probability table from a fitted model (items: table entries).
* ``sample``: :meth:`fastlmrl.NGramLM.sample` under each backend (it calls
  :func:`fastlmrl.boltzmann` once per step on a batch of sequences; items: tokens drawn).  The
  reference gets a smaller batch.

Run: pytest benchmarks/bench_ngram.py --benchmark-enable --benchmark-group-by=group
"""

import numpy as np
import pytest
from conftest import BACKEND_NAMES, measure

import fastlmrl
from fastlmrl import CharTokenizer, NGramLM, WordTokenizer

_TEXT = {}


def _data(kind):
    if kind not in _TEXT:
        train, _ = fastlmrl.train_test_split(fastlmrl.default_corpus())
        tok = CharTokenizer(train) if kind == "char" else WordTokenizer(train)
        _TEXT[kind] = tok, tok.encode_lines(train)
    return _TEXT[kind]


MODELS = {"char-order3": ("char", 3), "char-order4": ("char", 4), "word-order2": ("word", 2)}


@pytest.mark.parametrize("smoothing", ["kneser_ney", "add_k"])
@pytest.mark.parametrize("model", list(MODELS))
def test_fit(benchmark, model, smoothing):
    kind, order = MODELS[model]
    tok, seqs = _data(kind)
    lm = NGramLM(order, smoothing)
    fn = lambda: lm.fit(seqs, tok.vocab_size)  # noqa: E731
    measure(
        benchmark,
        fn,
        items=NGramLM(order).fit(seqs, tok.vocab_size).n_targets,
        group=f"ngram fit {model}",
    )
    benchmark.extra_info["vocab_size"] = tok.vocab_size


@pytest.mark.parametrize("smoothing", ["kneser_ney", "add_k"])
@pytest.mark.parametrize("model", list(MODELS))
def test_logits_table(benchmark, model, smoothing):
    kind, order = MODELS[model]
    tok, seqs = _data(kind)
    lm = NGramLM(order, smoothing).fit(seqs, tok.vocab_size)

    def build():
        lm._table = None  # measure the construction, not the cache
        return lm.logits_table(dtype=np.float32)

    table = build()
    measure(benchmark, build, items=table.size, group=f"ngram logits_table {model}")
    benchmark.extra_info["shape"] = list(table.shape)


SAMPLE_BATCH = {"python": 16, "numba": 1024, "cython": 1024}


@pytest.mark.parametrize("n_sequences", [1, "batch"])
@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_sample(benchmark, backend, n_sequences):
    tok, seqs = _data("char")
    lm = NGramLM(3).fit(seqs, tok.vocab_size)
    B = SAMPLE_BATCH[backend] if n_sequences == "batch" else 1
    n_tokens = 200 if backend != "python" or B == 1 else 50
    with fastlmrl.use_backend(backend):
        fn = lambda: lm.sample(n_tokens, seed=0, n_sequences=B, stop_at_eos=False)  # noqa: E731
        measure(
            benchmark,
            fn,
            items=n_tokens * B,
            group=f"ngram sample char-order3 B={'batch' if B > 1 else 1}",
        )
    benchmark.extra_info["backend"] = backend
    benchmark.extra_info["n_sequences"] = B
