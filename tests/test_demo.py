"""``fastlmrl demo`` (fastlmrl/demo.py) shows honest learning: the lexicon reward goes up by a
stated margin while the KL to the reference stays below a stated bound and the samples stay
text (the reference LM's perplexity of them stays near its perplexity of its own samples).

Bounds (150 iterations, seed 0, the default demo; measured: reference 0.014 words per sample,
PPO 1.10 and GRPO 1.12, KL 5.3 and 7.1 nats per sequence, reference perplexity 3.88 -> 3.71 and
3.77):

* score after >= 0.6 words per sample, at least 20x the reference LM's (0.014): a margin no
  sampling noise of 512 samples can give (the reference's standard error is ~0.005);
* PPO within a factor of 2 of GRPO;
* exact KL to the reference <= 10 nats per 48-token sequence (0.2 nats per token);
* reference perplexity of the samples <= 1.1 x that of the reference's own samples (3.88).
  Degenerate text that would earn the reward (lexicon words strung together or repeated) is
  above that bound (4.4-16.6), and the former reward hacking ('thappy braver clevery', likely
  under a character LM) earns nothing under whole-word matching (checked below).
"""

import io
import sys
import types

import numpy as np
import pytest

from fastlmrl import demo
from fastlmrl.tasks import make_text_task


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = io.StringIO()
    plot = tmp_path_factory.mktemp("demo") / "curve.png"
    args = types.SimpleNamespace(backend=None, iterations=150, seed=0, corpus=None, plot=str(plot))
    results = demo.cmd_demo(args, out=out)
    return results, out.getvalue(), plot


def test_demo_learns_honestly(demo_run):
    results, text, _ = demo_run
    reference = results["reference"]
    assert reference["kl"] == 0.0
    for algo in demo.DEMO_ALGORITHMS:
        after = results[algo]["after"]
        assert results[algo]["before"] == reference, algo  # same evaluation before training
        assert after["score"] >= 0.6 and after["score"] >= 20 * reference["score"], (algo, after)
        assert after["kl"] <= 10.0, (algo, after)
        assert after["ref_perplexity"] <= 1.1 * reference["ref_perplexity"], (algo, after)
    ppo, grpo = results["ppo"]["after"]["score"], results["grpo"]["after"]["score"]
    assert 0.5 <= ppo / grpo <= 2.0, (ppo, grpo)
    # the reader sees the before/after numbers
    assert "before -> after" in text and "ref ppl" in text and "KL" in text
    assert text.count("words/sample") >= 5


def reference_perplexity(task, text, prompt="The "):
    """exp(-mean log pi_ref) of ``text``'s characters after ``prompt`` (an independent loop)."""
    ids = task.tokenizer.encode(prompt + text)
    ref = task.reference.astype(np.float64)
    logp = ref - np.log(np.exp(ref).sum(axis=1, keepdims=True))
    terms = [logp[task.env.context_of(ids[:t]), ids[t]] for t in range(len(prompt), len(ids))]
    return float(np.exp(-np.mean(terms)))


def test_degenerate_text_cannot_pass_the_bounds(demo_run):
    # Text that earns the reward without being text (lexicon words strung together or repeated)
    # is far less likely under the reference than its own samples: it fails the perplexity bound.
    # Text the character LM finds likely but that is not made of words (the former reward
    # hacking: lexicon words inside other words) earns nothing under whole-word matching.
    results, _, _ = demo_run
    bound = 1.1 * results["reference"]["ref_perplexity"]
    task = make_text_task()

    def score(text):
        ids = task.tokenizer.encode(text)
        return float(task.env.reward(ids[None, :], [len(ids)]).sum())

    for text in [
        "kind kind kind kind kind kind kind kind kind",
        "happy brave kind clever happy brave kind clever",
        "brave bright clever gentle friendly happy kind",
    ]:
        assert score(text) >= 7 and reference_perplexity(task, text) > bound, text
    for text in ["thappy braver thappilt clevery thappy brande", "unkind kindly braveness"]:
        assert score(text) == 0.0, text
    assert score("a kind, happy fox.") == 2.0


def test_demo_plot_and_its_hint(demo_run, monkeypatch):
    _, text, plot = demo_run
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        assert plot.stat().st_size > 1000 and f"written to {plot}" in text
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = io.StringIO()
    demo._plot({"ppo": [{"iteration": 0, "score": 0.0, "kl": 0.0}]}, "unused.png", out)
    # a command that works from a source checkout and from an installed wheel alike
    assert "`pip install matplotlib`" in out.getvalue()
