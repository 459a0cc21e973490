"""Pretrain a small causal LM from scratch on the built-in corpus, and cache it on disk.

:func:`pretrain` builds a ``transformers`` GPT-2 (default: 2 layers, 96 wide, 4 heads, 0.25 M
parameters with the character vocabulary) with random weights and trains it with AdamW on

* the training lines of the corpus (:func:`fastlmrl.corpus.train_test_split`; default: the
  built-in corpus), and
* ``task_examples`` solved problems of each verifiable task (``prompt + answer`` lines of the
  tasks' *training* split, :mod:`fastlmrl.verifiable_tasks`), so that the model can produce
  answers at all -- imperfectly, which is what RL then improves;

tokenised by a :class:`~fastlmrl.CharTokenizer` fitted on that text.  Every line is one sequence
``<bos> line <eos>``; the sequences are concatenated into one stream and the model is trained on
``batch_size`` windows of ``block_size`` tokens at random offsets (next-token cross-entropy; the
target after an ``<eos>`` -- the next line's ``<bos>`` -- is not scored).  The learning rate warms
up linearly for ``warmup_steps`` and then follows a cosine to 10 % over ``steps``.

**Evaluation.**  Held-out perplexity :math:`\\exp(-\\frac1N\\sum\\log p(w_i \\mid w_{<i}))` over
the held-out corpus lines, each scored from its ``<bos>``, every character and the final
``<eos>`` counted (N targets) -- the same targets as :meth:`fastlmrl.NGramLM.perplexity`, so the
number is directly comparable with the n-gram LM (order ``ngram_order``, Kneser-Ney) fitted on
the same training lines.  A uniform model has perplexity V.  Success rates per task: greedy
decoding (and sampling at temperature 1, the RL starting point) on held-out problems.

**Budget.**  Training stops after ``steps`` optimizer steps or when ``seconds`` of training have
passed, whichever comes first.  From the 6th step on, the steps that fit in the time left at the
mean pace so far are estimated; when fewer than ``steps`` fit, the learning-rate schedule is
planned over that smaller number (so that it still decays to its end) and
``result.time_limited`` is set.

**Default budget** (``fastlmrl pretrain``, ``python benchmarks/bench_pretrain.py`` times it):
:data:`DEFAULT_STEPS` = 1200 optimizer steps of 16 windows x 64 tokens (1.2 M tokens; 30 warmup
steps, then a cosine to 10 % of ``learning_rate`` = 6e-3) of a 96-wide model, with
:data:`DEFAULT_SECONDS` = 48 s as the time limit of the training loop, so that the whole call
(imports, data, n-gram LM, perplexities and success rates: ~5-8 s more) stays within 60 s on 2
cores.  Measured on a shared 2-core machine (load average 13-18, process time, one torch
thread): 43 ms of CPU per step (51.7 s for the 1200 steps; the 128-wide model of earlier
versions took 63 ms per step in the same run), held-out perplexity 2.15 against the 3-gram LM's
4.35 (untrained model 69.7, uniform 67), held-out success on sort 57 % greedy / 33 % sampled
(the 128-wide model after 800 steps, what fits the same time: perplexity 2.29, sort 22 % / 8 %,
too weak for the GRPO demo to improve).  Tried and not kept: learning rate 1e-2 / 4e-3 (128
wide, 800 steps: perplexity 2.52 / 2.33 vs 2.31 at 6e-3); twice the task examples (128 wide, 800
steps: perplexity 2.55, sort 36 % / 12 %); ``torch.compile`` (compiling on CPU costs more than it
would save in a 45 s run); the fused LM head (V = 67: the output layer is ~2 % of a step);
PyTorch's fused ``gelu_pytorch_tanh`` instead of GPT-2's ``gelu_new`` (the same function to
5e-7 and ~10 % faster per step, but it changed the trajectory of the learning test's chaotic
tiny pretraining -- success 0.34 -> 0.18 before GRPO -- so the model keeps GPT-2's own).
**Threads**: one by default: the result is then bit-reproducible, and on a busy 2-core machine
a second thread made steps ~10x slower (OpenMP threads waiting for a core); ``threads=2`` may be
faster on two idle cores.  **Determinism**: the
weights (``torch.manual_seed(seed)``) and the batch offsets (a ``torch.Generator`` seeded with
``seed``) depend only on ``seed``; a run that completes its ``steps`` gives bit-identical weights
for the same seed, torch version and *thread count* (PyTorch's CPU reductions split their work by
thread, so another ``torch.get_num_threads()`` can change the last bits).  A run that the time
limit shortened (``time_limited``) depends on the machine's speed.

**Cache.**  :func:`pretrained_model` returns the model from ``model_cache_dir()/<key>``
(``$FASTLMRL_CACHE_DIR/models``, else ``$XDG_CACHE_HOME/fastlmrl/models``, default
``~/.cache/fastlmrl/models``) when present, else pretrains and saves it there atomically
(:func:`fastlmrl.neural.model.save_model`).  The key is a SHA-256 of the corpus text, every
setting but ``seconds``, the seed, :data:`RECIPE` and the fastlmrl / torch / transformers
versions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import time
import warnings
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from ..corpus import load_corpus, train_test_split
from ..ngram import NGramLM
from ..tokenizers import CharTokenizer
from ..verifiable_tasks import VerifiableTask, get_task
from .model import build_model, load_model, read_metadata, require_transformers, save_model
from .tokenizer import TokenizerAdapter, as_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "DEFAULT_SECONDS",
    "DEFAULT_STEPS",
    "DEFAULT_TASKS",
    "PretrainResult",
    "generate_completions",
    "held_out_perplexity",
    "model_cache_dir",
    "pretrain",
    "pretrained_model",
    "task_success_rate",
]

#: Verifiable tasks mixed into the default pretraining text.
DEFAULT_TASKS = ("arithmetic", "reverse", "sort")
#: Version of the training recipe and model definition (part of the cache key): bumped when a
#: change outside the settings (e.g. the GPT-2 activation, the schedule) changes the model.
RECIPE = 1
#: The default budget: optimizer steps, and the training time limit in seconds.
DEFAULT_STEPS = 1200
DEFAULT_SECONDS = 48.0


@dataclasses.dataclass
class PretrainResult:
    """What :func:`pretrain` / :func:`pretrained_model` return."""

    model: PreTrainedModel  #: the trained ``transformers`` model (eval mode)
    tokenizer: TokenizerAdapter  #: its tokenizer (``tokenizer.tokenizer`` is the CharTokenizer)
    perplexity: float  #: held-out perplexity of the model
    ngram_perplexity: float  #: held-out perplexity of the n-gram LM (same training lines)
    uniform_perplexity: float  #: V: the perplexity of the uniform model
    initial_perplexity: float  #: held-out perplexity of the untrained model
    steps: int  #: optimizer steps done
    tokens: int  #: training tokens processed (steps x batch x block)
    seconds: float  #: training time (s, wall clock)
    tokens_per_second: float  #: ``tokens / seconds`` (training throughput, wall clock)
    time_limited: bool  #: True when ``seconds`` stopped training before ``steps``
    task_success: dict  #: {task: greedy success rate on held-out problems}
    task_success_sampled: dict  #: {task: success rate sampling at temperature 1}
    n_parameters: int  #: number of scalar parameters of the model (shared ones once)
    config: dict  #: every setting (JSON values), the cache key's input
    folder: str | None = None  #: where the model is saved (the cache folder), if anywhere
    from_cache: bool = False  #: True: loaded from the cache (numbers of the run that made it)
    cpu_seconds: float = math.nan  #: CPU time of the training loop (process time, all threads)

    def summary(self) -> str:
        """A few lines for people."""
        lines = [
            f"model: {self.config['architecture']} {self.n_parameters:,} parameters, "
            f"{self.steps} steps, {self.tokens:,} tokens in {self.seconds:.1f} s "
            f"(CPU {self.cpu_seconds:.1f} s; {self.steps / max(self.seconds, 1e-9):.1f} "
            f"steps/s, {self.tokens_per_second:,.0f} tokens/s)"
            + (" [stopped by the time limit]" if self.time_limited else ""),
            f"held-out perplexity: model {self.perplexity:.3f}, "
            f"{self.config['ngram_order']}-gram LM {self.ngram_perplexity:.3f}, "
            f"untrained model {self.initial_perplexity:.2f}, uniform "
            f"{self.uniform_perplexity:.0f}",
        ]
        for name, rate in self.task_success.items():
            lines.append(
                f"task {name}: held-out success greedy {rate:.1%}, sampled (T=1) "
                f"{self.task_success_sampled.get(name, float('nan')):.1%}"
            )
        if self.folder:
            lines.append(f"saved in {self.folder}" + (" (cache hit)" if self.from_cache else ""))
        return "\n".join(lines)

    def metrics(self) -> dict:
        """The numbers (JSON values), as stored beside a cached model."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("model", "tokenizer", "folder", "from_cache")
        }


def model_cache_dir() -> str:
    """The folder under which :func:`pretrained_model` caches models (see the module docstring)."""
    own = os.environ.get("FASTLMRL_CACHE_DIR", "").strip()
    if own:
        return os.path.join(own, "models")
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "fastlmrl", "models")


# -- argument checks ------------------------------------------------------------------------------
def _int(x, name: str, lo: int, hi: int = 2**31 - 1) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if not lo <= int(x) <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {x}")
    return int(x)


def _float(x, name: str, lo: float, hi: float = math.inf, lo_open: bool = True) -> float:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(x).__name__}")
    x = float(x)
    if not math.isfinite(x) and not (hi == math.inf and x == math.inf):
        raise ValueError(f"{name} must be finite, got {x}")
    if (x <= lo if lo_open else x < lo) or x > hi:
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}], got {x}")
    return x


def _tasks(tasks) -> list:
    if tasks is None:
        return []
    if isinstance(tasks, (str, VerifiableTask)):
        tasks = [tasks]
    out = []
    for i, t in enumerate(tasks):
        if isinstance(t, str):
            t = get_task(t)
        if not isinstance(t, VerifiableTask):
            raise TypeError(
                f"tasks[{i}] must be a task name or a VerifiableTask, got {type(t).__name__}"
            )
        out.append(t)
    if len({t.name for t in out}) != len(out):
        raise ValueError("tasks must not repeat a task")
    return out


# -- data -----------------------------------------------------------------------------------------
def _training_lines(corpus_train: str, tasks: list, task_examples: int, seed: int) -> list:
    """Corpus lines and task example lines, interleaved deterministically."""
    from ..rng import permutation

    lines = [ln.strip() for ln in corpus_train.splitlines() if ln.strip()]
    for j, task in enumerate(tasks):
        lines.extend(task.examples(task_examples, seed=seed + 1000 * (j + 1), split="train"))
    order = permutation(seed, len(lines))
    return [lines[i] for i in order.tolist()]


def _stream(lines: list, tokenizer: CharTokenizer):
    import torch

    parts = []
    for ln in lines:
        parts.append(tokenizer.encode(ln, add_bos=True, add_eos=True))
    return torch.from_numpy(np.concatenate(parts).astype(np.int64))


def _padded_batch(seqs: list, pad: int):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def held_out_perplexity(
    model, tokenizer: CharTokenizer, text: str, *, batch_size: int = 64
) -> float:
    """Perplexity of ``model`` on the non-blank lines of ``text``, each ``<bos> line <eos>``
    scored from ``<bos>`` (targets: every token and ``<eos>``; the n-gram LM's convention)."""
    import torch

    seqs = [
        np.concatenate([[tokenizer.bos_id], s, [tokenizer.eos_id]])
        for s in tokenizer.encode_lines(text)
    ]
    if not seqs:
        raise ValueError("text holds no line to score")
    n_pos = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    too_long = [i for i, s in enumerate(seqs) if len(s) > n_pos]
    if too_long:
        raise ValueError(
            f"held-out line {too_long[0]} has {len(seqs[too_long[0]])} tokens, more "
            f"than the model's {n_pos} positions"
        )
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(seqs), batch_size):
            ids, mask = _padded_batch(seqs[start : start + batch_size], tokenizer.eos_id)
            logits = model(input_ids=ids, attention_mask=mask).logits.double()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            target = ids[:, 1:]
            valid = mask[:, 1:].bool()
            lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            total += float(lp[valid].double().sum())
            count += int(valid.sum())
    return math.exp(-total / count)


# -- generation for the success rates ------------------------------------------------------------
def generate_completions(
    model,
    tokenizer,
    prompts,
    *,
    max_new_tokens: int = 16,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
):
    """Complete ``prompts`` with ``model.generate`` (KV cache; greedy, or sampling at
    ``temperature`` with ``torch.manual_seed(seed)`` inside ``fork_rng``).

    Returns ``(completions, terminated)``: the text after each prompt, cut before the first
    end-of-sequence token, special tokens removed; and a bool array, True where the model emitted
    end-of-sequence within ``max_new_tokens``.  An evaluation helper (``transformers``'
    generation); the RL rollouts have their own sampler.
    """
    import torch

    tok = as_tokenizer(tokenizer)
    prompts = list(prompts)
    max_new_tokens = _int(max_new_tokens, "max_new_tokens", 1, 1 << 16)
    batch_size = _int(batch_size, "batch_size", 1)
    completions, terminated = [], []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            ids, mask = tok.encode_prompts(prompts[start : start + batch_size])
            kwargs = (
                dict(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0)
                if do_sample
                else dict(do_sample=False)
            )
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
                **kwargs,
            )
            for row in out[:, ids.shape[1] :].tolist():
                if tok.eos_token_id in row:
                    row = row[: row.index(tok.eos_token_id)]
                    terminated.append(True)
                else:
                    terminated.append(False)
                completions.append(tok.decode(row))
    return completions, np.array(terminated, dtype=bool)


def task_success_rate(
    model,
    tokenizer,
    task,
    *,
    n: int = 200,
    seed: int = 0,
    split: str = "test",
    do_sample: bool = False,
    max_new_tokens: int = 16,
) -> float:
    """Success rate of ``model`` on ``n`` problems of ``task`` (name or
    :class:`~fastlmrl.verifiable_tasks.VerifiableTask`) from ``split`` (default: held out)."""
    task = _tasks([task])[0]
    prompts = task.prompts(n, seed, split=split)
    completions, terminated = generate_completions(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, do_sample=do_sample, seed=seed
    )
    return task.success(prompts, completions, terminated)


# -- training -----------------------------------------------------------------------------------
def _versions() -> dict:
    import torch
    import transformers

    return {
        "fastlmrl": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _settings(
    corpus,
    *,
    seconds,
    steps,
    seed,
    tasks,
    task_examples,
    architecture,
    n_layer,
    n_embd,
    n_head,
    n_positions,
    block_size,
    batch_size,
    learning_rate,
    weight_decay,
    warmup_steps,
    grad_clip,
    test_fraction,
    ngram_order,
    eval_problems,
    threads,
):
    text = load_corpus(None) if corpus is None else corpus
    if not isinstance(text, str):
        raise TypeError(f"corpus must be a str (the text) or None, got {type(corpus).__name__}")
    if not text.strip():
        raise ValueError("corpus holds only whitespace: no text to train on")
    task_list = _tasks(tasks)
    config = {
        "recipe": RECIPE,
        "corpus_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "seconds": _float(seconds, "seconds", 0.0),
        "steps": _int(steps, "steps", 1, 10**9),
        "seed": _int(seed, "seed", 0, 2**63 - 1),
        "tasks": [t.config() for t in task_list],
        "task_examples": _int(task_examples, "task_examples", 0, 10**7),
        "architecture": architecture,
        "n_layer": _int(n_layer, "n_layer", 1, 64),
        "n_embd": _int(n_embd, "n_embd", 1, 1 << 16),
        "n_head": _int(n_head, "n_head", 1, 1024),
        "n_positions": _int(n_positions, "n_positions", 2, 1 << 16),
        "block_size": _int(block_size, "block_size", 1, 1 << 16),
        "batch_size": _int(batch_size, "batch_size", 1, 1 << 16),
        "learning_rate": _float(learning_rate, "learning_rate", 0.0, 10.0),
        "weight_decay": _float(weight_decay, "weight_decay", 0.0, 10.0, lo_open=False),
        "warmup_steps": _int(warmup_steps, "warmup_steps", 0, 10**9),
        "grad_clip": _float(grad_clip, "grad_clip", 0.0),
        "test_fraction": _float(test_fraction, "test_fraction", 0.0, 0.5),
        "ngram_order": _int(ngram_order, "ngram_order", 1, 8),
        "eval_problems": _int(eval_problems, "eval_problems", 0, 10**6),
        "threads": None if threads is None else _int(threads, "threads", 1, 4096),
    }
    if config["block_size"] >= config["n_positions"]:
        raise ValueError(f"block_size = {block_size} must be < n_positions = {n_positions}")
    return text, task_list, config


def _cosine_lr(step: int, *, base: float, warmup: int, total: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))


def pretrain(
    corpus: str | None = None,
    *,
    seconds: float = DEFAULT_SECONDS,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    tasks=DEFAULT_TASKS,
    task_examples: int = 3000,
    architecture: str = "gpt2",
    n_layer: int = 2,
    n_embd: int = 96,
    n_head: int = 4,
    n_positions: int = 256,
    block_size: int = 64,
    batch_size: int = 16,
    learning_rate: float = 6e-3,
    weight_decay: float = 0.01,
    warmup_steps: int = 30,
    grad_clip: float = 1.0,
    test_fraction: float = 0.1,
    ngram_order: int = 3,
    eval_problems: int = 200,
    threads: int | None = 1,
    log=None,
) -> PretrainResult:
    """Pretrain a small ``transformers`` causal LM from scratch (see the module docstring).

    ``corpus``: the text (default: the built-in corpus); ``tasks``: verifiable task names or
    objects whose ``task_examples`` solved training problems are mixed in (``()`` for none);
    ``steps`` / ``seconds``: the budget (the first reached stops training); ``eval_problems``:
    held-out problems per task for the success rates (0 skips them); ``threads``: torch's
    intra-op threads while this call runs (restored afterwards; None keeps the current setting).
    The default 1 makes the result independent of the machine's core count, and on a busy
    machine two threads can be much slower than one (they wait for each other: measured 10x
    on a loaded 2-core machine).  ``log``: optional callable
    receiving a progress line now and then.  Returns a :class:`PretrainResult` (not saved:
    :func:`pretrained_model` caches, :func:`fastlmrl.neural.save_model` saves).
    """
    require_transformers()
    import torch

    text, task_list, config = _settings(
        corpus,
        seconds=seconds,
        steps=steps,
        seed=seed,
        tasks=tasks,
        task_examples=task_examples,
        architecture=architecture,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=n_positions,
        block_size=block_size,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        grad_clip=grad_clip,
        test_fraction=test_fraction,
        ngram_order=ngram_order,
        eval_problems=eval_problems,
        threads=threads,
    )
    if log is not None and not callable(log):
        raise TypeError(f"log must be callable or None, got {type(log).__name__}")
    saved_threads = torch.get_num_threads()
    if config["threads"] is not None:
        torch.set_num_threads(config["threads"])
    try:
        return _pretrain(text, task_list, config, architecture, log)
    finally:
        torch.set_num_threads(saved_threads)


def _pretrain(text: str, task_list: list, config: dict, architecture: str, log):
    import torch

    train_text, test_text = train_test_split(text, config["test_fraction"])
    lines = _training_lines(train_text, task_list, config["task_examples"], config["seed"])
    tokenizer = CharTokenizer("\n".join(lines) + "\n" + "".join(t.alphabet for t in task_list))
    stream = _stream(lines, tokenizer)
    if stream.numel() <= config["block_size"] + 1:
        raise ValueError(
            f"the training text has {stream.numel()} tokens: fewer than "
            f"block_size + 2 = {config['block_size'] + 2}"
        )
    V = tokenizer.vocab_size

    ngram = NGramLM(order=config["ngram_order"]).fit(
        [tokenizer.encode(ln) for ln in lines], V, tokenizer.bos_id, tokenizer.eos_id
    )
    ngram_ppl = ngram.perplexity(tokenizer.encode_lines(test_text))

    model = build_model(
        V,
        architecture=architecture,
        n_layer=config["n_layer"],
        n_embd=config["n_embd"],
        n_head=config["n_head"],
        n_positions=config["n_positions"],
        seed=config["seed"],
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
    )
    initial_ppl = held_out_perplexity(model, tokenizer, test_text)
    n_params = sum(p.numel() for p in model.parameters())

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config["learning_rate"],
        betas=(0.9, 0.99),
    )
    gen = torch.Generator().manual_seed(config["seed"])
    B, T = config["batch_size"], config["block_size"]
    offsets_arange = torch.arange(T + 1)
    model.train()
    t0, cpu0 = time.perf_counter(), time.process_time()
    step = 0
    planned = config["steps"]  # lowered when the time limit would stop training earlier
    time_limited = False
    last_log = t0
    while step < planned:
        elapsed = time.perf_counter() - t0
        if elapsed >= config["seconds"]:
            time_limited = True
            break
        if step >= 5:  # re-plan: the steps that fit in the time left at the mean pace so far
            fit = step + int((config["seconds"] - elapsed) / (elapsed / step))
            if fit < planned:
                planned, time_limited = max(step + 1, fit), True
        lr = _cosine_lr(
            step, base=config["learning_rate"], warmup=config["warmup_steps"], total=planned
        )
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, stream.numel() - T, (B,), generator=gen)
        window = stream[starts.unsqueeze(1) + offsets_arange]
        x, y = window[:, :-1], window[:, 1:].clone()
        y[y == tokenizer.bos_id] = -100  # the <bos> after an <eos> is not a prediction
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, V).float(), y.reshape(-1), ignore_index=-100
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
        opt.step()
        step += 1
        now = time.perf_counter()
        if log is not None and (now - last_log >= 10.0 or step == planned):
            log(f"step {step}/{planned}  loss {loss.item():.3f}  lr {lr:.2e}  {now - t0:.0f} s")
            last_log = now
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    model.eval()
    ppl = held_out_perplexity(model, tokenizer, test_text)
    adapter = TokenizerAdapter(tokenizer)
    greedy, sampled = {}, {}
    if config["eval_problems"]:
        max_new = max(
            8,
            max(
                (len(t.answer(p)) for t in task_list for p in t.prompts(50, 0, split="test")),
                default=8,
            )
            + 4,
        )
        for t in task_list:
            greedy[t.name] = task_success_rate(
                model,
                adapter,
                t,
                n=config["eval_problems"],
                seed=config["seed"],
                max_new_tokens=max_new,
            )
            sampled[t.name] = task_success_rate(
                model,
                adapter,
                t,
                n=config["eval_problems"],
                seed=config["seed"],
                do_sample=True,
                max_new_tokens=max_new,
            )
    config = {**config, "versions": _versions(), "torch_threads": torch.get_num_threads()}
    tokens = step * B * T
    return PretrainResult(
        model=model,
        tokenizer=adapter,
        perplexity=ppl,
        ngram_perplexity=ngram_ppl,
        uniform_perplexity=float(V),
        initial_perplexity=initial_ppl,
        steps=step,
        tokens=tokens,
        seconds=elapsed,
        tokens_per_second=tokens / elapsed if elapsed > 0 else 0.0,
        time_limited=time_limited,
        task_success=greedy,
        task_success_sampled=sampled,
        n_parameters=n_params,
        config=config,
        cpu_seconds=cpu,
    )


def _cache_key(config: dict) -> str:
    keyed = {k: v for k, v in config.items() if k not in ("seconds", "torch_threads")}
    keyed["versions"] = _versions()
    blob = json.dumps(keyed, sort_keys=True).encode("utf-8")
    return "pretrain-" + hashlib.sha256(blob).hexdigest()[:20]


def pretrained_model(
    corpus: str | None = None, *, cache: bool = True, cache_dir=None, **settings
) -> PretrainResult:
    """:func:`pretrain` with a disk cache: load ``<cache_dir>/<key>`` when it exists, else
    pretrain and save it there (atomically).  ``settings``: :func:`pretrain`'s keywords.

    The key covers the corpus text, every setting except ``seconds``, :data:`RECIPE` and the
    fastlmrl / torch / transformers versions.  A cached model that the time limit stopped before
    ``steps`` is reused by calls with the same or a smaller ``seconds`` (``result.time_limited``
    and ``result.steps`` tell), and trained again (replacing it) by a call with a larger
    ``seconds``.  ``cache=False`` always trains and saves nothing.  A cache folder that cannot be
    written gives a warning, not an error.
    """
    require_transformers()
    log = settings.get("log")
    kwargs = {k: v for k, v in settings.items() if k != "log"}
    defaults = {p: v.default for p, v in _signature_defaults().items()}
    merged = {**defaults, **kwargs}
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise TypeError(f"unknown pretrain setting(s): {', '.join(unknown)}")
    _, _, config = _settings(corpus, **merged)
    if not cache:
        return pretrain(corpus, log=log, **kwargs)
    root = model_cache_dir() if cache_dir is None else os.fspath(cache_dir)
    folder = os.path.join(root, _cache_key(config))
    if os.path.isdir(folder):
        try:
            model, tok = load_model(folder)
            meta = read_metadata(folder)
            fields = {f.name for f in dataclasses.fields(PretrainResult)}
            numbers_ = {k: v for k, v in meta.get("result", {}).items() if k in fields}
            cached_seconds = numbers_.get("config", {}).get("seconds", math.inf)
            if not (numbers_.get("time_limited") and config["seconds"] > cached_seconds):
                return PretrainResult(
                    model=model, tokenizer=tok, folder=folder, from_cache=True, **numbers_
                )
            # the cached model was cut short by a smaller time limit: train again, replace it
        except Exception as exc:  # noqa: BLE001 - any damage (e.g. a truncated safetensors file)
            warnings.warn(
                f"fastlmrl: ignoring the damaged cached model {folder!r} ({exc}); "
                f"pretraining again",
                stacklevel=2,
            )
    result = pretrain(corpus, log=log, **kwargs)
    try:
        save_model(result.model, result.tokenizer, folder, metadata={"result": result.metrics()})
        result.folder = folder
    except OSError as exc:
        warnings.warn(
            f"fastlmrl: could not cache the pretrained model in {folder!r}: {exc}", stacklevel=2
        )
    return result


def _signature_defaults():
    import inspect

    params = inspect.signature(pretrain).parameters
    return {
        k: v for k, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY and k != "log"
    }
