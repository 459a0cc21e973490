"""Pretraining a tiny transformers model: learns (held-out perplexity), is deterministic, caches."""

import math
import os
import types

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
try:  # missing packages fail the run, they are never skipped
    import torch
    import transformers  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "the fastlmrl.neural tests need PyTorch and transformers: pip install "
        "torch==2.13.0 (CPU build), then pip install 'fastlmrl[neural]'"
    ) from exc

from fastlmrl import CharTokenizer  # noqa: E402
from fastlmrl.corpus import generate_corpus  # noqa: E402
from fastlmrl.neural import pretrain, pretrained_model  # noqa: E402
from fastlmrl.neural.pretraining import held_out_perplexity  # noqa: E402

CORPUS = generate_corpus(300, seed=4)
# a tiny model and budget: a few seconds on 2 busy cores
TINY = dict(
    n_layer=1,
    n_embd=32,
    n_head=2,
    n_positions=128,
    block_size=32,
    batch_size=8,
    steps=60,
    seconds=1e9,
    task_examples=100,
    eval_problems=0,
    learning_rate=1e-2,
    warmup_steps=5,
)


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    tok = CharTokenizer(tokens=list("abc "))
    V = tok.vocab_size

    class Flat(torch.nn.Module):  # equal logits everywhere
        config = types.SimpleNamespace(n_positions=64)

        def forward(self, input_ids, attention_mask=None):
            return types.SimpleNamespace(logits=torch.zeros(*input_ids.shape, V))

    assert held_out_perplexity(Flat(), tok, "ab c\nb\n\nccc a\n") == pytest.approx(V, rel=1e-12)


def test_pretraining_lowers_held_out_perplexity_and_is_deterministic():
    a = pretrain(CORPUS, seed=3, **TINY)
    V = a.tokenizer.vocab_size
    assert a.uniform_perplexity == V and a.steps == 60 and not a.time_limited
    assert a.initial_perplexity > 0.8 * V  # random init is close to uniform ...
    assert a.perplexity < 0.5 * a.initial_perplexity  # ... training halves it at least
    assert math.isfinite(a.ngram_perplexity) and a.ngram_perplexity < V
    assert 0 < a.cpu_seconds and 0 < a.seconds
    b = pretrain(CORPUS, seed=3, **TINY)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same thread count
    assert b.perplexity == a.perplexity


def test_pretrained_model_cache_hit_returns_the_same_weights(tmp_path):
    first = pretrained_model(CORPUS, cache_dir=tmp_path, seed=1, **TINY)
    assert not first.from_cache and first.folder is not None
    assert os.path.dirname(first.folder) == str(tmp_path)
    second = pretrained_model(CORPUS, cache_dir=tmp_path, seed=1, **TINY)
    assert second.from_cache and second.folder == first.folder
    s1, s2 = first.model.state_dict(), second.model.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert second.perplexity == first.perplexity and second.steps == first.steps
    assert second.tokenizer.tokenizer == first.tokenizer.tokenizer
    # another seed is another cache entry
    third = pretrained_model(CORPUS, cache_dir=tmp_path, seed=2, **{**TINY, "steps": 2})
    assert not third.from_cache and third.folder != first.folder
    assert len(os.listdir(tmp_path)) == 2


def test_pretrain_checks_arguments():
    with pytest.raises(ValueError, match="steps"):
        pretrain(CORPUS, steps=0)
    with pytest.raises(ValueError, match="block_size"):
        pretrain(CORPUS, block_size=128, n_positions=128)
    with pytest.raises(ValueError, match="unknown task"):
        pretrain(CORPUS, tasks=["poetry"])
    with pytest.raises(TypeError, match="corpus"):
        pretrain(b"bytes")
    with pytest.raises(TypeError, match="unknown pretrain setting"):
        pretrained_model(CORPUS, lerning_rate=1.0)


def test_pretrain_command(tmp_path, monkeypatch, capsys):
    from fastlmrl.cli import main
    from fastlmrl.neural import load_model

    monkeypatch.setenv("FASTLMRL_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "model"
    argv = ["pretrain", "--steps", "2", "--eval-problems", "0", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "held-out perplexity: model" in text and "3-gram LM" in text
    assert "2 steps" in text and str(out) in text
    model, tok = load_model(out)
    assert tok.kind == "fastlmrl" and model.config.n_layer == 2
    assert len(os.listdir(tmp_path / "cache" / "models")) == 1
    assert "(cache hit)" not in text
    assert main(argv) == 0  # the second run loads the cached model
    assert "(cache hit)" in capsys.readouterr().out


def test_pretrain_command_rejects_bad_options(capsys):
    from fastlmrl.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--steps", "0"])
    assert exc.value.code == 2
    assert "--steps" in capsys.readouterr().err


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_generate_completions_batched_equals_one_by_one_greedy(architecture):
    from fastlmrl.neural import build_model, generate_completions

    tok = CharTokenizer(tokens=list("abcdefgh=+0123456789"))
    model = build_model(
        tok.vocab_size,
        architecture=architecture,
        seed=0,
        n_layer=1,
        n_embd=32,
        n_head=2,
        n_positions=64,
    )
    with torch.no_grad():  # larger weights than the init: varied, non-degenerate greedy outputs
        g = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim > 1 else 0.1))
    prompts = ["a=", "abcdef+12=", "h", "0123456789="]
    completions, terminated = generate_completions(model, tok, prompts, max_new_tokens=6)

    def greedy_alone(prompt):  # a plain loop without padding, cache or generate()
        ids = [tok.bos_id] + tok.encode(prompt).tolist()
        new = []
        with torch.no_grad():
            for _ in range(6):
                nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
                if nxt == tok.eos_id:
                    return tok.decode(new), True
                ids.append(nxt)
                new.append(nxt)
        return tok.decode(new), False

    expected = [greedy_alone(p) for p in prompts]
    assert completions == [e[0] for e in expected]
    assert terminated.tolist() == [e[1] for e in expected]
    assert len(set(completions)) > 1  # the check is not vacuous


def test_a_time_limited_cached_model_is_retrained_for_a_larger_budget(tmp_path):
    short = pretrained_model(CORPUS, cache_dir=tmp_path, seed=5, **{**TINY, "seconds": 1e-9})
    assert short.time_limited and short.steps == 0
    again = pretrained_model(CORPUS, cache_dir=tmp_path, seed=5, **{**TINY, "seconds": 1e-9})
    assert again.from_cache and again.steps == 0
    full = pretrained_model(CORPUS, cache_dir=tmp_path, seed=5, **TINY)
    assert not full.from_cache and not full.time_limited and full.steps == TINY["steps"]
    assert full.folder == short.folder
    hit = pretrained_model(CORPUS, cache_dir=tmp_path, seed=5, **{**TINY, "seconds": 1.0})
    assert hit.from_cache and hit.steps == TINY["steps"]


def test_a_damaged_cache_entry_is_retrained_with_a_warning(tmp_path):
    first = pretrained_model(CORPUS, cache_dir=tmp_path, seed=6, **{**TINY, "steps": 3})
    weights = os.path.join(first.folder, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(100)
    with pytest.warns(UserWarning, match="damaged cached model"):
        again = pretrained_model(CORPUS, cache_dir=tmp_path, seed=6, **{**TINY, "steps": 3})
    assert not again.from_cache
    s1, s2 = first.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert pretrained_model(CORPUS, cache_dir=tmp_path, seed=6, **{**TINY, "steps": 3}).from_cache


def test_pretrain_a_llama():
    import transformers

    r = pretrain(CORPUS, architecture="llama", seed=0, **{**TINY, "steps": 20})
    assert type(r.model) is transformers.LlamaForCausalLM
    assert r.steps == 20 and r.perplexity < r.initial_perplexity


def test_the_pretraining_module_is_not_shadowed_by_the_function():
    """``fastlmrl.neural.pretrain`` is the function; its module is ``fastlmrl.neural.pretraining``
    (a module named like the function it exports was hidden by it: ``import
    fastlmrl.neural.pretrain as m`` gave the function)."""
    import importlib
    import inspect

    import fastlmrl.neural as neural
    import fastlmrl.neural.pretraining as module

    assert inspect.ismodule(module) and module is importlib.import_module(
        "fastlmrl.neural.pretraining"
    )
    assert inspect.isfunction(neural.pretrain) and neural.pretrain is module.pretrain
    assert neural.pretrained_model is module.pretrained_model
    assert module.held_out_perplexity is held_out_perplexity
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("fastlmrl.neural.pretrain")


def test_pretrain_command_defaults_are_the_functions(monkeypatch, capsys):
    """``fastlmrl pretrain`` without options trains what ``pretrain()`` trains (the same cache
    entry): the settings it passes are the function's defaults."""
    import inspect

    import fastlmrl.neural.pretraining as module
    from fastlmrl.cli import main

    seen = {}

    class Result:
        def summary(self):
            return "summary"

    def fake(corpus, **kwargs):
        seen.update(kwargs, corpus=corpus)
        return Result()

    monkeypatch.setattr(module, "pretrained_model", fake)
    assert main(["pretrain", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == "summary"
    params = inspect.signature(pretrain).parameters
    assert seen["corpus"] is None and seen["cache"] is True
    passed = {k: v for k, v in seen.items() if k not in ("corpus", "cache", "log")}
    assert passed and all(v == params[k].default for k, v in passed.items()), passed
